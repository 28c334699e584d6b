"""The web demo (`genvis-hf demo`): upload a video, get the overlay, a table of instances and the results JSON.

- `segmenter`: what is done with a video, without the web (model cache, the `segment` command's code, the table);
- `app`: the Gradio page;
- `command`: the `genvis-hf demo` command (offline: no analytics, no share link unless asked).

Gradio is imported only by `app` and `command` (the `[demo]` extra).
"""
