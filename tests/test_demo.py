"""The web demo (`genvis-hf demo`): its segmentation (the `segment` command's code and error lines), the served
page through `gradio_client`, and a real browser: Debian's Chromium, driven by Playwright, uploads the bundled
demo video and waits for the overlay and the table. Nothing here goes past 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

from genvis_hf.assets import demo_annotations_path, demo_video_path
from genvis_hf.cli import main
from genvis_hf.demo.app import error_line
from genvis_hf.demo.segmenter import DemoSegmenter, bundled_video_file
from genvis_hf.processing.video_io import read_video
from genvis_hf.segment_command import input_errors

CHROMIUM = "/usr/bin/chromium"  # Debian's package: `apt-get install -y chromium` (.ci/run does it)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
SHAPES = sorted(c["name"] for c in json.loads(demo_annotations_path().read_text())["categories"]
                if c["id"] in {a["category_id"] for a in json.loads(demo_annotations_path().read_text())["annotations"]})  # fmt: skip


def _segment_cli_error(path: Path) -> str:
    """The `error:` line `genvis-hf segment NAME` prints, run from the file's folder."""
    completed = subprocess.run([sys.executable, "-m", "genvis_hf.cli", "segment", path.name, "--output-dir", "out",
                                "--no-progress"], check=False, capture_output=True, text=True, cwd=path.parent)  # fmt: skip
    assert completed.returncode == 1
    return next(line for line in completed.stderr.splitlines() if line.startswith("error:"))


def test_demo_segments_like_the_segment_command(tmp_path):
    """Same results file as `genvis-hf segment --threshold 0.5`, an overlay of every frame, and one table row
    per instance: the demo video's three shapes."""
    torch.set_num_threads(1)
    run = DemoSegmenter(None, tmp_path / "work").run(demo_video_path(), threshold=0.5, progress=False)
    assert sorted(row[2] for row in run.rows) == SHAPES == ["circle", "square", "triangle"]
    for number, (index, colour, _label, score, first, last) in enumerate(run.rows, start=1):
        assert index == number and len(colour) == 7 and colour.startswith("#") and score > 0.5
        assert 0 <= first <= last <= 9
    assert main(["segment", str(demo_video_path()), "--threshold", "0.5", "--output-dir", str(tmp_path / "cli"),
                 "--no-progress"]) == 0  # fmt: skip
    assert run.results.read_bytes() == (tmp_path / "cli" / "shapes.json").read_bytes()
    assert read_video(run.overlay).shape == (10, 120, 160, 3)


def test_demo_reports_a_bad_upload_with_the_segment_commands_line(tmp_path):
    upload = tmp_path / "upload" / "clip.mp4"
    upload.parent.mkdir()
    upload.write_text("not a video")
    segmenter = DemoSegmenter(None, tmp_path / "work")
    with pytest.raises(input_errors()) as caught:
        segmenter.run(upload, progress=False)
    assert error_line(caught.value, upload) == _segment_cli_error(upload)
    assert list((tmp_path / "work").iterdir()) == []  # a failed run leaves nothing
    with pytest.raises(ValueError, match="score threshold 2 is not between 0 and 1"):
        segmenter.run(demo_video_path(), threshold=2)


def test_demo_command_checks_the_port_and_the_model_before_serving(tmp_path, capsys, monkeypatch):
    for name in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_OFFLINE"):  # the command sets them
        monkeypatch.setenv(name, os.environ.get(name, ""))
        monkeypatch.delenv(name)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--port", str(port)]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert main(["demo", "--model", str(tmp_path / "absent"), "--port", str(_free_port())]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {tmp_path / 'absent'}: not a model folder or an installed model name"), error
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"  # set before gradio was imported


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    """`genvis-hf demo --port P` in its own process, with its temporary files under a test folder."""
    root = tmp_path_factory.mktemp("demo_server")
    (root / "tmp").mkdir()
    env = dict(os.environ, TMPDIR=str(root / "tmp"), GRADIO_TEMP_DIR=str(root / "gradio"))
    log_path = root / "demo.log"
    port = _free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "genvis_hf.cli", "demo", "--port", str(port)], stdout=log,
                                   stderr=subprocess.STDOUT, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300
    while f"genvis-hf demo: {url}" not in log_path.read_text():
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            pytest.fail(f"the demo did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    yield url, root
    process.terminate()
    assert process.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    assert [p.name for p in (root / "tmp").iterdir() if p.name.startswith("genvis-demo-")] == []  # cleaned up


def test_first_api_endpoint_answers_gradio_client(demo_server, tmp_path):
    import httpx
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, _ = demo_server
    config = httpx.get(url + "config", timeout=30).json()
    assert "video" in {component["type"] for component in config["components"]}
    client = Client(url, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert next(iter(endpoints)) == "/segment"
    assert endpoints["/segment"]["parameters"][0]["component"] == "Video"

    overlay, table, results = client.predict(handle_file(str(bundled_video_file(tmp_path))), fn_index=0)
    assert read_video(overlay).shape == (10, 120, 160, 3)
    assert table["headers"][:3] == ["instance", "colour", "label"]
    assert sorted(row[2] for row in table["data"]) == SHAPES
    assert {entry["label"] for entry in json.loads(Path(results).read_text())} == set(SHAPES)

    upload = tmp_path / "upload" / "clip.mp4"
    upload.parent.mkdir()
    upload.write_text("not a video")
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(str(upload)), api_name="/segment")
    assert str(caught.value) == _segment_cli_error(upload)


def test_browser_uploads_the_demo_video_and_sees_the_three_shapes(demo_server, tmp_path):
    """Chromium opens the page, uploads the bundled demo video, presses Segment, and finds the overlay playing
    and the table listing the three shapes; then uploads a file that is not a video and sees the `segment`
    command's error line. No request leaves 127.0.0.1. The screenshot is kept in the test's folder (and copied
    to $GENVIS_HF_DEMO_SCREENSHOT when set)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: the browser test drives Debian's Chromium; install it with "
                    "`apt-get install -y chromium` (as root; .ci/run does)")  # fmt: skip
    from playwright.sync_api import sync_playwright

    url, _ = demo_server
    outside: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            browser.on("request", lambda request: urlparse(request.url).scheme in ("http", "https", "ws", "wss")
                       and urlparse(request.url).hostname != "127.0.0.1" and outside.append(request.url))  # fmt: skip
            page = browser.new_page()
            page.goto(url, wait_until="networkidle", timeout=120_000)
            page.locator("#video input[type=file]").set_input_files(str(bundled_video_file(tmp_path)))
            page.wait_for_selector("#video video", timeout=60_000)  # the upload is shown
            page.click("#segment")
            page.wait_for_selector("#overlay video", timeout=300_000)
            page.wait_for_function(
                "names => { const table = document.querySelector('#instances');"
                " return table && names.every(name => table.innerText.includes(name)); }",
                arg=SHAPES, timeout=60_000,
            )  # fmt: skip
            table = [cell.strip() for cell in page.locator("#instances").inner_text().splitlines() if cell.strip()]
            playable = page.evaluate(
                "() => new Promise(done => { const video = document.querySelector('#overlay video');"
                " const report = () => done([video.readyState, video.duration, video.videoWidth]);"
                " if (video.readyState >= 1) report(); else video.addEventListener('loadedmetadata', report); })"
            )  # fmt: skip
            screenshot = tmp_path / "demo.png"
            page.screenshot(path=str(screenshot), full_page=True)

            upload = tmp_path / "upload" / "clip.mp4"  # then a file that is not a video
            upload.parent.mkdir()
            upload.write_text("not a video")
            page.locator("#video button[aria-label='Clear']").click()  # the input shows its upload picker again
            page.locator("#video input[type=file]").set_input_files(str(upload))
            page.wait_for_load_state("networkidle")  # uploaded
            page.click("#segment")
            shown = page.locator("text=not a readable video").first
            shown.wait_for(timeout=60_000)
            message = shown.inner_text().strip()
        finally:
            browser.close()
    assert {"colour", "label", "score", "first frame", "last frame"} <= set(table), table
    assert sorted(cell for cell in table if cell in {"circle", "square", "triangle", "cross"}) == SHAPES, table
    assert playable[0] >= 1 and playable[1] > 0 and playable[2] == 160, playable  # Chromium decodes the overlay
    assert screenshot.stat().st_size > 20_000
    assert outside == []  # offline: no analytics, fonts or scripts from elsewhere
    assert message == _segment_cli_error(upload)  # the page shows the segment command's line
    if os.environ.get("GENVIS_HF_DEMO_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["GENVIS_HF_DEMO_SCREENSHOT"])
