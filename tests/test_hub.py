"""Hub readiness: model cards, installed names that resolve offline, pushing, and trust_remote_code export.

One module-scoped set-up converts the r50_online fixture twice with `genvis-hf convert` (in-process):
`--install --name genvis-fix` (bare name) and `--install --name testorg/genvis-fix-rc --export-code`, into an
empty HF_HOME. Two subprocesses then load by name offline: one with genvis_hf (card snippets, Auto classes,
pipeline, `genvis-hf segment`), one where genvis_hf cannot be imported (trust_remote_code).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, shared_dir
from huggingface_hub import ModelCard, ModelCardData, scan_cache_dir, snapshot_download, try_to_load_from_cache
from huggingface_hub.repocard_data import model_index_to_eval_results
from safetensors.torch import load_file

import genvis_hf
from genvis_hf import GenVISConfig, GenVISModel, GenVISVideoProcessor, __version__
from genvis_hf.cli import main
from genvis_hf.configuration.presets import MODEL_ZOO
from genvis_hf.conversion.original_config import config_kwargs_from_original
from genvis_hf.hub import (
    HubPushError,
    build_model_card,
    card_code_blocks,
    checkpoint_provenance,
    install_to_cache,
    push_to_hub,
    remote_code,
)
from genvis_hf.hub.cache import OPTIONAL_MISSING_FILES, git_blob_sha1
from genvis_hf.processing.video_io import read_video, write_video
from genvis_hf.settings import settings_override

NAME = "genvis-fix"
ORG_NAME = "testorg/genvis-fix-rc"
FIXTURE = shared_dir() / "fixtures" / "genvis_reference" / "r50_online"
CHECKPOINT, CONFIG_YAML = FIXTURE / "model_final.pth", FIXTURE / "config.yaml"


def _convert(*args: str, config: Path = CONFIG_YAML) -> int:
    return main(["convert", "--checkpoint", str(CHECKPOINT), "--config", str(config), *args])


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    hf_home = root / "hf_home"
    # the fixture's config with a small test size (64 instead of 360): same weights, 30x less compute per frame
    config = root / "config.yaml"
    config.write_text(CONFIG_YAML.read_text().replace("MIN_SIZE_TEST: 360", "MIN_SIZE_TEST: 64"))
    # --no-verify: the converter's own check runs the "auto" deformable attention backend, whose first use in a
    # process may compile the jit kernels (tests/test_conversion.py covers the check); the exported code is
    # validated below with the torch backend, and loaded and compared in a subprocess
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(hf_home))
        patch.delenv("HF_HUB_CACHE", raising=False)
        assert _convert("--output", str(root / "plain"), "--install", "--name", NAME, "--no-verify", config=config) == 0
        assert _convert("--output", str(root / "exported"), "--install", "--name", ORG_NAME, "--export-code",
                        "--no-verify", config=config) == 0  # fmt: skip
    work = root / "work"
    work.mkdir()
    frames = read_video(shared_dir() / "data" / "videos" / "tree.avi", max_frames=2)[:, ::2, ::2]  # 2 x 120 x 160
    write_video(work / "video.mp4", frames, fps=5)
    return {"root": root, "hf_home": hf_home, "cache": hf_home / "hub", "plain": root / "plain", "config": config,
            "exported": root / "exported", "work": work, "video": read_video(work / "video.mp4")}  # fmt: skip


def _offline_env(hub, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(hub["hf_home"]), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT / "src"), **extra)
    return env


# ----------------------------------------------------------------------------------------------- model card
def test_card_metadata_round_trips_and_model_index_has_the_seed_numbers(tmp_path):
    config = GenVISConfig(**config_kwargs_from_original(CONFIG_YAML))
    provenance = checkpoint_provenance(CHECKPOINT, preset="genvis-r50-ytvis19")
    card = build_model_card(
        config, repo_id="org/genvis-r50-ytvis19", preset="genvis-r50-ytvis19", provenance=provenance
    )
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data.to_dict()
    assert data["license"] == "apache-2.0" and data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-segmentation"
    assert {"video-instance-segmentation", "genvis"} <= set(data["tags"]) and data["datasets"] == ["youtube_vis_2019"]
    assert ModelCardData(**data).to_dict() == data  # validates and round-trips
    model_name, results = model_index_to_eval_results(data["model-index"])
    assert model_name == "genvis-r50-ytvis19"
    assert {r.metric_type: r.metric_value for r in results} == MODEL_ZOO["genvis-r50-ytvis19"].metrics
    assert {(r.task_type, r.dataset_type, r.dataset_split) for r in results} == {
        ("image-segmentation", "youtube_vis_2019", "validation")
    }
    assert all(r.source_url == "https://github.com/miranheo/GenVIS#model-zoo" for r in results)
    text = loaded.content
    assert "@inproceedings{GenVIS," in text and "@inproceedings{VITA," in text
    assert hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest() in text and f"genvis_hf {__version__}" in text
    assert MODEL_ZOO["genvis-r50-ytvis19"].download_url in text
    assert all('"org/genvis-r50-ytvis19"' in block for block in card_code_blocks(loaded))


def test_card_for_a_trained_model_takes_measured_metrics_and_training_info():
    config = GenVISConfig(**config_kwargs_from_original(CONFIG_YAML))
    card = build_model_card(config, repo_id="me/genvis-mine", metrics={"AP": 41.25, "AP50": 63.0, "loss": 1.5},
                            metrics_source="genvis-hf evaluate, valid.json", dataset="ytvis21",
                            training={"steps": 1200, "learning rate": 1e-4})  # fmt: skip
    data = ModelCard(str(card)).data.to_dict()
    _, results = model_index_to_eval_results(data["model-index"])
    assert [(r.metric_type, r.metric_value) for r in results] == [("AP", 41.25), ("AP50", 63.0), ("loss", 1.5)]
    assert {r.dataset_name for r in results} == {"YouTube-VIS 2021"}
    assert (
        "Source: genvis-hf evaluate, valid.json." in card.content
        and "| steps | 1200 |" in card.content
        and "## Conversion" not in card.content
    )


def test_converter_writes_the_card_with_provenance(hub):
    card = ModelCard.load(hub["plain"] / "README.md")
    assert hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest() in card.content
    assert hashlib.sha256(hub["config"].read_bytes()).hexdigest() in card.content
    assert json.loads((hub["plain"] / "video_preprocessor_config.json").read_text())["size"]["shortest_edge"] == 64
    assert "test_min_size" not in json.loads((hub["plain"] / "config.json").read_text())
    assert f'"{NAME}"' in card.content and "trust_remote_code" not in card.content
    assert "trust_remote_code=True" in (hub["exported"] / "README.md").read_text()
    assert "custom_code" in ModelCard.load(hub["exported"] / "README.md").data.tags


# ---------------------------------------------------------------------------------------- cache layout
def test_install_writes_the_hub_cache_layout(hub):
    storage = hub["cache"] / "models--genvis-fix"
    commit = (storage / "refs" / "main").read_text()
    assert len(commit) == 40 and "\n" not in commit
    snapshot = storage / "snapshots" / commit
    files = sorted(p.name for p in hub["plain"].iterdir())
    assert sorted(p.name for p in snapshot.iterdir()) == files
    for name in files:
        pointer, content = snapshot / name, (hub["plain"] / name).read_bytes()
        assert pointer.is_symlink() and os.readlink(pointer).startswith("../../blobs/")
        expected = hashlib.sha256(content).hexdigest() if name.endswith(".safetensors") else git_blob_sha1(content)
        assert Path(os.readlink(pointer)).name == expected and pointer.read_bytes() == content
    assert sorted(p.name for p in (storage / ".no_exist" / commit).iterdir()) == sorted(OPTIONAL_MISSING_FILES)
    tree = json.loads((storage / "trees" / f"{commit}.json").read_text())
    assert tree["files"]["model.safetensors"]["lfs_sha256"] == Path(os.readlink(snapshot / "model.safetensors")).name
    # huggingface_hub reads it as its own
    assert try_to_load_from_cache(NAME, "config.json", cache_dir=hub["cache"]) == str(snapshot / "config.json")
    assert snapshot_download(NAME, cache_dir=hub["cache"], local_files_only=True) == str(snapshot)
    info = scan_cache_dir(hub["cache"])
    assert not info.warnings
    repos = {repo.repo_id: repo for repo in info.repos}
    assert set(repos) == {NAME, ORG_NAME}
    assert [sorted(r.refs) for r in repos[NAME].revisions] == [["main"]]
    # installing the same files again is a no-op; the snapshot id is the files' git tree id
    assert install_to_cache(hub["plain"], NAME, cache_dir=hub["cache"]) == snapshot
    if shutil.which("git"):
        repo = hub["root"] / "git"
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        for name in files:
            content = (hub["plain"] / name).read_bytes()
            if name.endswith(".safetensors"):
                sha = hashlib.sha256(content).hexdigest()
                content = (
                    f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(content)}\n".encode()
                )
            (repo / name).write_bytes(content)
        subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
        tree_id = subprocess.run(["git", "-C", str(repo), "write-tree"], check=True, capture_output=True, text=True)
        assert tree_id.stdout.strip() == commit


def test_install_rejects_bad_names(hub):
    from genvis_hf.hub import CacheInstallError

    for bad in ("a/b/c", "bad name", "-x-/y"):
        with pytest.raises(CacheInstallError, match="invalid repo id"):
            install_to_cache(hub["plain"], bad, cache_dir=hub["root"] / "unused")
    assert main(["convert", "--checkpoint", str(CHECKPOINT), "--config", str(CONFIG_YAML), "--install"]) == 2


# ------------------------------------------------------------------------------------- offline by name
@pytest.fixture(scope="module")
def named_loads(hub):
    report = hub["root"] / "named.json"
    card = next((hub["cache"] / "models--genvis-fix" / "snapshots").iterdir()) / "README.md"
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "hub_named_loads.py"), str(report), str(card), NAME, ORG_NAME],
        # no compiled operators (torch deformable attention, no Winograd / masked-attention operators): no compile in
        # the subprocess, and results comparable exactly with the in-process run below
        cwd=hub["work"], env=_offline_env(hub, GENVIS_HF_COMPILED_OPS="0"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(report.read_text())


def test_card_snippets_run_as_written_against_the_installed_name(named_loads):
    outputs = named_loads["card_snippets"]
    assert not isinstance(outputs, dict), outputs["error"]
    assert len(outputs) == 2
    assert outputs[0].count("(2, 120, 160)") == 10  # pipeline: 10 instances, masks [frames, H, W]
    assert "torch.Size([10, 2, 120, 160])" in outputs[1]


def test_auto_classes_and_pipeline_load_installed_names_offline(named_loads):
    for key in ("named", "org_named"):
        loaded = named_loads[key]
        assert "error" not in loaded, loaded.get("error")
        assert loaded["model"] == "GenVISModel" and loaded["model_module"].startswith("genvis_hf.")
        assert loaded["processor"] == "GenVISVideoProcessor"
        assert (loaded["pipeline"], loaded["pipeline_model"]) == (
            "VideoInstanceSegmentationPipeline",
            "GenVISForVideoInstanceSegmentation",
        )
    # every file transformers asked for was answered from the cache: a file, or a recorded absence
    assert named_loads["misses"] == []
    asked = {(repo, filename): found for repo, filename, found in named_loads["lookups"]}
    assert asked[(NAME, "config.json")] == "file" and asked[(NAME, "model.safetensors")] == "file"
    assert asked[(NAME, "processor_config.json")] == "no_exist"


def test_segment_command_accepts_installed_names_with_the_directory_models_results(named_loads, hub, monkeypatch):
    from transformers import pipeline

    assert named_loads["segment"]["code"] == 0, named_loads["segment"]
    # the subprocess ran without the compiled operators: the same computation here
    with settings_override(compiled_ops=False):
        segmenter = pipeline("video-instance-segmentation", model=str(hub["plain"]))
        segmenter.model.set_deformable_attention_backend("torch")
        expected = segmenter(str(hub["work"] / "video.mp4"))
    assert named_loads["segment"]["scores"] == [instance["score"] for instance in expected]
    unknown = named_loads["segment_unknown"]
    assert unknown["code"] == 1
    assert unknown["stderr"].count("\n") == 1 and "genvis-not-installed" in unknown["stderr"]


# ------------------------------------------------------------------------------------ trust_remote_code
def _without_imports(source: str) -> list[str]:
    """The lines of a module other than its import statements and the export's header."""
    return [line for line in source.splitlines()
            if not line.lstrip().startswith(("from ", "import ", "# Exported from "))]  # fmt: skip


def test_export_is_flat_and_carries_the_reference_model_only(hub):
    exported = hub["exported"]
    config = json.loads((exported / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_genvis.GenVISModel"
    assert config["auto_map"]["AutoConfig"] == "configuration_genvis.GenVISConfig"
    processor_config = json.loads((exported / "video_preprocessor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoVideoProcessor": "video_processing_genvis.GenVISVideoProcessor"}
    for path in exported.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1 and not (node.module or "").startswith("genvis_hf"), f"{path.name}:{node.lineno}"
                if node.level == 1 and node.module:
                    assert (exported / f"{node.module}.py").is_file(), f"{path.name} imports missing {node.module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("genvis_hf") for a in node.names), f"{path.name}:{node.lineno}"
    names = {p.name for p in exported.glob("*.py")}
    assert {"deformable_attention.py", "modeling_genvis.py", "layers.py"} <= names
    # the same reference modules as the package, byte for byte but for the rewritten imports (no override copies)
    package = Path(genvis_hf.__file__).parent / "modeling"
    for name in ("layers.py", "backbone_swin.py", "frame_decoder.py"):
        assert _without_imports((exported / name).read_text()) == _without_imports((package / name).read_text())
    # the fast path is not part of it: no compiled operators, no optimisation layer, no settings
    assert not names & {"build.py", "settings.py", "clip_loop.py", "backends.py", "registry.py"}
    assert not list(exported.glob("*.cpp")) and not list(exported.glob("*.cu"))


def test_validation_passes_on_the_export_and_catches_a_changed_file(hub, tmp_path):
    remote_code.validate_remote_code(hub["exported"])
    changed = tmp_path / "changed"
    shutil.copytree(hub["exported"], changed)
    backend = changed / "deformable_attention.py"
    backend.write_text(backend.read_text().replace('padding_mode="zeros"', 'padding_mode="border"'))
    with pytest.raises(remote_code.RemoteCodeExportError, match="differs from the package's"):
        remote_code.validate_remote_code(changed)
    (changed / "layers.py").unlink()
    with pytest.raises(remote_code.RemoteCodeExportError, match=r"needs layers\.py"):
        remote_code.validate_remote_code(changed)


def test_flat_names_keep_the_subpackage_only_where_short_names_collide():
    assert remote_code.flat_names(["genvis_hf.processing.rle", "genvis_hf.evaluation.rle", "genvis_hf.modeling.layers",
                                   "genvis_hf.modeling.deformable_attention.module", "genvis_hf.inference"]) == {
        "genvis_hf.processing.rle": "processing_rle", "genvis_hf.evaluation.rle": "evaluation_rle",
        "genvis_hf.modeling.layers": "layers", "genvis_hf.modeling.deformable_attention.module":
        "deformable_attention_module", "genvis_hf.inference": "inference"}  # fmt: skip
    with pytest.raises(remote_code.RemoteCodeExportError, match="both be exported as"):
        remote_code.flat_names(["genvis_hf.processing_rle", "genvis_hf.processing.rle", "genvis_hf.evaluation.rle"])


def test_export_reports_an_imported_name_its_module_does_not_define(monkeypatch):
    load = remote_code._load_module

    def renamed(name):
        module = load(name)
        if name == "genvis_hf.modeling.deformable_attention":
            module = remote_code._Module(name, module.source.replace("def resolve_backend(", "def _renamed("),
                                         module.is_package, module.origin)  # fmt: skip
        return module

    monkeypatch.setattr(remote_code, "_load_module", renamed)
    with pytest.raises(remote_code.RemoteCodeExportError, match="imports 'resolve_backend' from"):
        remote_code.collect_modules()


@pytest.fixture(scope="module")
def remote_loads(hub):
    video = hub["video"]
    np.save(hub["root"] / "video.npy", video)
    # the interpreter's own site-packages, without processing .pth files: an editable genvis_hf is not found
    packages = [p for p in site.getsitepackages() if Path(p).is_dir()]
    out, report = hub["root"] / "remote.safetensors", hub["root"] / "remote.json"
    card = next((hub["cache"] / "models--testorg--genvis-fix-rc" / "snapshots").iterdir()) / "README.md"
    env = _offline_env(hub)
    env.pop("PYTHONPATH")
    completed = subprocess.run(
        [sys.executable, "-I", "-S", str(REPO_ROOT / "tests" / "hub_remote_code.py"), json.dumps(packages),
         str(hub["exported"]), ORG_NAME, str(hub["root"] / "video.npy"), str(out), str(report), str(card)],
        cwd=hub["work"], env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(report.read_text()), load_file(out)


def test_trust_remote_code_outputs_are_identical_to_the_package(remote_loads, hub, monkeypatch):
    report, tensors = remote_loads
    assert report["genvis_hf_importable"] is False
    for key in ("dir", "name"):
        assert "error" not in report[key], report[key].get("error")
        assert all(c.startswith("transformers_modules.") for c in report[key]["classes"]), report[key]["classes"]
    # the package's reference path: the modules the export carries (it has no fast path), the torch backend
    model = GenVISModel.from_pretrained(hub["exported"]).eval().restore_reference()
    model.set_deformable_attention_backend("torch")
    processor = GenVISVideoProcessor.from_pretrained(hub["exported"])
    video = hub["video"]
    inputs = processor(videos=[video], return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    result = processor.post_process_video_instance_segmentation(outputs, target_sizes=[video.shape[1:3]])[0]
    expected = {"pixel_values": inputs["pixel_values"], "class_queries_logits": outputs.class_queries_logits,
                "mask_embeddings": outputs.mask_embeddings, "mask_features": outputs.mask_features,
                "frame_queries": outputs.frame_queries, "scores": result["scores"], "labels": result["labels"],
                "masks": result["masks"].to(torch.uint8)}  # fmt: skip
    for source in ("dir", "name"):
        for key, value in expected.items():
            assert torch.equal(tensors[f"{source}.{key}"], value), f"{source}: {key} differs"
    from genvis_hf.inference import segment_video

    assert torch.equal(tensors["name.streamed_scores"], segment_video(model, processor, video, progress=False).scores)


def test_card_trust_remote_code_snippet_runs_without_genvis_hf(remote_loads):
    snippet = remote_loads[0]["card_snippet"]
    assert "error" not in snippet, snippet.get("error")
    assert snippet["blocks"] == 1 and "torch.Size([10, 2," in snippet["stdout"]


# --------------------------------------------------------------------------------------------- pushing
def test_push_offline_is_a_one_line_error_before_converting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = _convert("--output", str(tmp_path / "out"), "--push-to-hub", "testorg/genvis-fix")
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert captured.err.count("\n") == 1 and "offline" in captured.err and "nothing was uploaded" in captured.err
    assert not (tmp_path / "out").exists()


def test_push_unauthenticated_is_a_one_line_error(hub, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(HubPushError, match="not logged in") as error:
        push_to_hub(hub["plain"], "testorg/genvis-fix")
    assert "\n" not in str(error.value)


def test_push_reports_success_only_after_the_single_commit_returns(hub, monkeypatch):
    import huggingface_hub
    from huggingface_hub import HfApi

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # unreachable Hub: the first request fails, nothing is claimed
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubPushError, match="nothing was committed") as error:
        push_to_hub(hub["plain"], "testorg/genvis-fix", token="hf_fake")
    assert "\n" not in str(error.value)
    calls = []

    class Repo:
        repo_id = "testorg/genvis-fix"

    class Commit:
        commit_url, oid = "https://huggingface.co/testorg/genvis-fix/commit/abc", "abc"

    def upload_folder(self, **kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise RuntimeError("connection reset\nduring upload")
        return Commit()

    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: Repo())
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    with pytest.raises(HubPushError, match="connection reset during upload") as error:
        push_to_hub(hub["plain"], "testorg/genvis-fix", token="hf_fake")
    result = push_to_hub(hub["plain"], "testorg/genvis-fix", token="hf_fake")
    assert result.commit_url.endswith("/commit/abc") and len(calls) == 2
    assert calls[1]["folder_path"] == str(hub["plain"]) and calls[1]["repo_id"] == "testorg/genvis-fix"


def test_convert_push_failure_keeps_the_conversion_and_success_is_printed_last(monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub import HfApi

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_fake")

    def refused(self, *args, **kwargs):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(HfApi, "create_repo", refused)
    assert _convert("--push-to-hub", "testorg/genvis-fix", "--no-verify") == 1
    captured = capsys.readouterr()
    assert "pushed" not in captured.out and "nothing was committed" in captured.err
    kept = Path(captured.err.split("the converted model is kept in ")[1].split(";")[0])
    assert (kept / "README.md").is_file() and (kept / "model.safetensors").is_file()
    shutil.rmtree(kept.parent)

    class Repo:
        repo_id = "testorg/genvis-fix"

    class Commit:
        commit_url, oid = "https://huggingface.co/testorg/genvis-fix/commit/abc", "abc"

    uploaded = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: Repo())
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **k: uploaded.append(sorted(os.listdir(k["folder_path"])))
                        or Commit())  # fmt: skip
    assert _convert("--push-to-hub", "testorg/genvis-fix", "--no-verify") == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "pushed to testorg/genvis-fix: " + Commit.commit_url
    assert uploaded == [["README.md", "config.json", "model.safetensors", "video_preprocessor_config.json"]]
