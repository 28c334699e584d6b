"""Run by tests/test_hub.py with `python -I -S` (no site-packages processing: the editable install of
genvis_hf is not on the path; a regular install is blocked) in a subprocess where genvis_hf cannot be imported: load an exported model with
`trust_remote_code=True` from its directory and by its installed name (HF_HUB_OFFLINE=1), run it, save the
outputs for the parent test to compare with the package's, and run the card's trust_remote_code snippet.

    python -I -S hub_remote_code.py SITE_PACKAGES_JSON MODEL_DIR NAME VIDEO_NPY OUT_SAFETENSORS REPORT_JSON CARD
"""

import importlib.util
import json
import sys
from pathlib import Path

site_packages, model_dir, name, video_path, outputs_path, report_path, card_path = sys.argv[1:8]
sys.path.extend(json.loads(site_packages))
report = {}
if importlib.util.find_spec("genvis_hf") is not None:
    # a regular (non-editable) install sits in site-packages itself: hide it from every import
    class _HideGenvis:
        def find_spec(self, fullname, path=None, target=None):
            if fullname == "genvis_hf" or fullname.startswith("genvis_hf."):
                raise ModuleNotFoundError(f"No module named {fullname!r}")
            return None

    sys.meta_path.insert(0, _HideGenvis())
    report["hidden_by"] = "meta path blocker"
else:
    report["hidden_by"] = "not on sys.path (no .pth processing: the editable install is not active)"
try:
    import genvis_hf  # noqa: F401

    report["genvis_hf_importable"] = True
except ModuleNotFoundError:
    report["genvis_hf_importable"] = False

import contextlib  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402
import traceback  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoConfig, AutoModel, AutoVideoProcessor  # noqa: E402

video = np.load(video_path)
tensors = {}
for key, source in (("dir", model_dir), ("name", name)):
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=True)
        model = AutoModel.from_pretrained(source, trust_remote_code=True).eval()
        processor = AutoVideoProcessor.from_pretrained(source, trust_remote_code=True)
        report[key] = {"classes": [type(o).__module__ + "." + type(o).__name__ for o in (config, model, processor)]}
        inputs = processor(videos=[video], return_tensors="pt")
        with torch.no_grad():
            outputs = model(**inputs)
        result = processor.post_process_video_instance_segmentation(outputs, target_sizes=[video.shape[1:3]])[0]
        if key == "name":  # the streaming segmentation, exported with the code
            from transformers.dynamic_module_utils import get_class_from_dynamic_module

            segment_video = get_class_from_dynamic_module("inference.segment_video", source)
            streamed = segment_video(model, processor, video, progress=False)
            tensors["name.streamed_scores"] = streamed.scores
        tensors.update({
            f"{key}.pixel_values": inputs["pixel_values"],
            f"{key}.class_queries_logits": outputs.class_queries_logits,
            f"{key}.mask_embeddings": outputs.mask_embeddings,
            f"{key}.mask_features": outputs.mask_features,
            f"{key}.frame_queries": outputs.frame_queries,
            f"{key}.scores": result["scores"],
            f"{key}.labels": result["labels"],
            f"{key}.masks": result["masks"].to(torch.uint8),
        })  # fmt: skip
    except Exception:
        report[key] = {"error": traceback.format_exc()}
save_file({k: v.contiguous() for k, v in tensors.items()}, outputs_path)

try:
    text = Path(card_path).read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
              if "trust_remote_code=True" in b]  # fmt: skip
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        for block in blocks:
            exec(compile(block, "<model card>", "exec"), {"__name__": "__main__"})
    report["card_snippet"] = {"blocks": len(blocks), "stdout": stdout.getvalue()}
except Exception:
    report["card_snippet"] = {"error": traceback.format_exc()}
with open(report_path, "w", encoding="utf-8") as handle:
    json.dump(report, handle, indent=1)
