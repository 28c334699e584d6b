"""The web demo's page (Gradio Blocks): a video in, the overlay, the table of instances and the results JSON out.

The page's first event, and so the first API endpoint (`/segment`), is the Segment button: it takes the video
(the settings have defaults) and returns the overlay video, the table and the JSON file, so
`gradio_client.Client(url).predict(handle_file("video.mp4"), api_name="/segment")` calls it.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from .segmenter import TABLE_HEADERS, DemoSegmenter

DESCRIPTION = """# GenVIS: video instance segmentation
Upload a video (or pick the bundled one below), then **Segment**: every object is found, tracked and drawn in
one colour across the video. The table lists the instances; the JSON is the YouTube-VIS results file
(`genvis-hf segment` writes the same)."""


def error_line(error: BaseException, video: str | os.PathLike | None = None) -> str:
    """The `segment` command's line for `error` (`error: MESSAGE`), with the server's upload folder left out of
    the file's name (the user knows the file by its name) and escaped: Gradio shows it as HTML."""
    message = f"error: {error}"
    if video:
        message = message.replace(str(Path(video).parent) + os.sep, "")
    return html.escape(message, quote=False)


def _styled_table(rows: list[list]):
    """The instances as a table whose colour column is painted in each instance's overlay colour."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=TABLE_HEADERS)
    return (
        frame.style.apply(lambda column: [f"background-color: {color}" for color in column], subset=["colour"])
        .format("{:.3f}", subset=["score"])
        .format("{:.0f}", subset=["first frame", "last frame"], na_rep="-")
    )


def build_demo(segmenter: DemoSegmenter, bundled_video: Path, top_k: int, clip_length: int, model_label: str):
    """The Blocks app. `top_k` / `clip_length`: the default model's defaults; `model_label`: what the model box
    shows when empty."""
    import gradio as gr

    from ..segment_command import input_errors

    # Gradio finds its progress tracker by this default value (and follows segment_video's tqdm bar with it).
    def segment(video, model, threshold, top_k, clip_length, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        if not video:
            raise gr.Error("error: give a video (upload one or pick the bundled demo video)", print_exception=False)
        progress(0, desc="loading the model")
        try:
            run = segmenter.run(video, model, threshold=threshold, top_k=top_k, clip_length=clip_length)
        except input_errors() as error:
            raise gr.Error(error_line(error, video), print_exception=False) from None
        return str(run.overlay), _styled_table(run.rows), str(run.results)

    with gr.Blocks(title="GenVIS video instance segmentation", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:  # fmt: skip
        gr.Markdown(DESCRIPTION)
        overlay = gr.Video(label="Overlay", render=False, elem_id="overlay", interactive=False)
        table = gr.Dataframe(headers=TABLE_HEADERS, label="Instances", render=False, elem_id="instances",
                             interactive=False)  # fmt: skip
        results = gr.File(label="YouTube-VIS results (JSON)", render=False, elem_id="results", interactive=False)
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Video", sources=["upload"], format=None, include_audio=True, elem_id="video")
                model_box = gr.Textbox("", label="Model (directory or installed name)", placeholder=model_label)
                threshold_slider = gr.Slider(0, 1, value=0.5, step=0.05, label="Score threshold")
                top_k_slider = gr.Slider(1, 100, value=top_k, step=1, label="Top-k instances")
                clip_slider = gr.Slider(1, 8, value=clip_length, step=1, label="Clip length (1 online, 3 semi-online)")
                button = gr.Button("Segment", variant="primary", elem_id="segment")
                # Registered first: the page's first endpoint.
                button.click(segment, inputs=[video, model_box, threshold_slider, top_k_slider, clip_slider],
                             outputs=[overlay, table, results], api_name="segment")  # fmt: skip
                gr.Examples([[str(bundled_video)]], inputs=[video], label="Bundled demo video (synthetic shapes)")
            with gr.Column():
                overlay.render()
                table.render()
                results.render()
    return demo


__all__ = ["build_demo", "error_line"]
