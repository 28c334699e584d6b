"""Run by tests/test_hub.py in a subprocess (HF_HUB_OFFLINE=1, HF_HOME seeded only by `genvis-hf convert
--install`, cwd holding video.mp4): load installed models BY NAME the ways a user does, record every Hub cache
lookup transformers makes, and write a JSON report.

    python hub_named_loads.py REPORT.json CARD_README NAME ORG_NAME
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import sys
import traceback
from pathlib import Path

report_path, card_path, name, org_name = sys.argv[1:5]
report: dict = {"lookups": [], "misses": []}


def _trace(module, function_name: str) -> None:
    original = getattr(module, function_name)

    @functools.wraps(original)
    def traced(*args, **kwargs):
        repo, filename = ([*list(args), kwargs.get("repo_id"), kwargs.get("filename")])[:2]
        try:
            result = original(*args, **kwargs)
        except Exception as error:
            report["misses"].append(f"{function_name}({repo}, {filename}) raised {type(error).__name__}")
            raise
        if function_name == "try_to_load_from_cache":
            found = "file" if isinstance(result, str) else ("no_exist" if result is not None else "miss")
            report["lookups"].append([repo, filename, found])
            if found == "miss":
                report["misses"].append(f"try_to_load_from_cache({repo}, {filename}): not in the cache")
        else:  # a download call: the cache fast path did not answer
            report["misses"].append(f"{function_name}({repo}, {filename}) was called")
        return result

    setattr(module, function_name, traced)


import transformers.dynamic_module_utils as dynamic_module_utils  # noqa: E402
import transformers.utils.hub as transformers_hub  # noqa: E402

for function in ("try_to_load_from_cache", "hf_hub_download", "snapshot_download"):
    _trace(transformers_hub, function)
_trace(dynamic_module_utils, "try_to_load_from_cache")


def step(key: str, function) -> None:
    try:
        report[key] = function()
    except Exception:
        report[key] = {"error": traceback.format_exc()}


def run_card_snippets() -> list[str]:
    text = Path(card_path).read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL) if "genvis_hf" in b]
    outputs = []
    for block in blocks:
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            exec(compile(block, "<model card>", "exec"), {"__name__": "__main__"})
        outputs.append(stdout.getvalue())
    return outputs


def load_by_name(repo: str) -> dict:
    from transformers import AutoModel, AutoVideoProcessor, pipeline

    import genvis_hf  # noqa: F401

    model = AutoModel.from_pretrained(repo)
    processor = AutoVideoProcessor.from_pretrained(repo)
    segmenter = pipeline("video-instance-segmentation", model=repo)
    return {"model": type(model).__name__, "model_module": type(model).__module__,
            "processor": type(processor).__name__, "pipeline": type(segmenter).__name__,
            "pipeline_model": type(segmenter.model).__name__}  # fmt: skip


def segment_command(repo: str) -> dict:
    from genvis_hf.cli import main

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["segment", "video.mp4", "--model", repo, "--output-dir", "segmented", "--no-progress"])
    results = json.loads(Path("segmented/video.json").read_text()) if code == 0 else None
    return {"code": code, "stderr": stderr.getvalue(), "scores": [r["score"] for r in results] if results else None}


step("card_snippets", run_card_snippets)
step("named", lambda: load_by_name(name))
step("org_named", lambda: load_by_name(org_name))
step("segment", lambda: segment_command(name))
lookups_before_unknown = len(report["misses"])
step("segment_unknown", lambda: segment_command("genvis-not-installed"))
report["misses"] = report["misses"][:lookups_before_unknown]  # the unknown name is expected to miss
with open(report_path, "w", encoding="utf-8") as handle:
    json.dump(report, handle, indent=1)
