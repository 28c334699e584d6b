"""`genvis-hf demo [--model M] [--host 127.0.0.1] [--port 7860] [--share]`: the web demo (needs the `[demo]` extra).

Offline by default: Gradio's analytics and version check are off, Hugging Face Hub telemetry is off, no share
link is made unless `--share` is given (that one contacts Gradio's share server), and the page loads nothing
from outside the server. The model is loaded, and the port checked, before the server starts.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import tempfile


def add_demo_command(parser: argparse.ArgumentParser):
    parser.description = "Serve a web page that segments an uploaded video (Gradio; needs genvis_hf[demo])."
    parser.add_argument("--model", help="model directory or installed name (default: the bundled genvis-tiny)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--share", action="store_true", help="also make a public gradio.live link (goes online)")
    return run_demo


def _port_problem(host: str, port: int) -> str | None:
    if not 1 <= port <= 65535:
        return f"port {port} is not between 1 and 65535"
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return f"cannot listen on {host}:{port} ({error.strerror or error})"
    return None


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # Gradio closes its server on it; then the work folder is removed


def run_demo(args: argparse.Namespace) -> int:
    problem = _port_problem(args.host, args.port)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    # Before gradio and huggingface_hub are imported: they read these at import and when the app is built.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models are directories or installed names: no Hub look-ups
    try:
        import gradio  # noqa: F401
    except ImportError:
        print('error: the web demo needs Gradio: pip install "genvis_hf[demo]"', file=sys.stderr)
        return 1
    from ..segment_command import input_errors
    from .app import build_demo
    from .segmenter import DemoSegmenter, bundled_video_file

    with tempfile.TemporaryDirectory(prefix="genvis-demo-") as work_dir:
        segmenter = DemoSegmenter(args.model, work_dir, args.device)
        try:
            model, processor = segmenter.model()
        except input_errors() as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        demo = build_demo(segmenter, bundled_video_file(work_dir), top_k=processor.test_topk,
                          clip_length=model.config.clip_length,
                          model_label=args.model or "empty: the bundled genvis-tiny")  # fmt: skip
        signal.signal(signal.SIGTERM, _interrupt)
        demo.queue(default_concurrency_limit=1).launch(
            server_name=args.host, server_port=args.port, share=args.share, ssr_mode=False, mcp_server=False,
            allowed_paths=[work_dir], show_error=True, quiet=True, prevent_thread_lock=True,
        )  # fmt: skip
        print(f"genvis-hf demo: {demo.local_url}" + (f" and {demo.share_url}" if demo.share_url else "")
              + " (Ctrl+C stops it)", flush=True)  # fmt: skip
        demo.block_thread()
    return 0


__all__ = ["add_demo_command", "run_demo"]
