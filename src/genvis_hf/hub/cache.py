"""Install a model directory into the Hugging Face hub cache, laid out exactly as a download leaves it.

    $HF_HUB_CACHE (default $HF_HOME/hub)/
      models--{org}--{name}/            (`models--{name}` for a repo id without an org)
        blobs/{etag}                    file contents: sha256 for LFS files, git blob sha1 for the others
        snapshots/{commit}/{file}       relative symlinks ../../blobs/{etag} (copies where symlinks are unsupported)
        refs/main                       {commit} (no newline)
        trees/{commit}.json             the tree listing `snapshot_download` caches (offline completeness check)
        .no_exist/{commit}/{file}       empty markers: optional files transformers asks for that the repo lacks

`{commit}` is the git tree id of the installed files (deterministic: installing the same files twice is a
no-op); it names a local revision, not a commit that exists on the Hub.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..utils.files import file_mode, write_text_atomic

# What the Hub's default .gitattributes stores with LFS (the extensions a model repo can hold here), and the
# size above which the Hub refuses non-LFS files.
_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".pkl", ".npz", ".npy",
                 ".zip", ".gz", ".tar", ".model", ".tflite", ".ot", ".pb", ".joblib", ".arrow", ".parquet")  # fmt: skip
_LFS_MIN_SIZE = 10 * 1024 * 1024

# Files transformers (5.x) asks the repo for when loading a GenVIS model by name that a GenVIS repo does not
# have: `AutoVideoProcessor` and the pipeline look for `processor_config.json` and `preprocessor_config.json`
# (also with trust_remote_code); `pipeline()` looks for `adapter_config.json` when peft is installed. A
# download records each 404 as an empty `.no_exist/{commit}/{file}`; so does the install, so that these
# lookups are answered "not found" from the cache, as after a download (tests/test_hub.py checks that every
# lookup of these loads is answered from the cache).
OPTIONAL_MISSING_FILES = ("processor_config.json", "preprocessor_config.json", "adapter_config.json")


class CacheInstallError(RuntimeError):
    """The model directory cannot be installed (bad repo id, missing files, unwritable cache)."""


@dataclass
class CacheEntry:
    """One installed file: its name in the repo, size, blob id and (for LFS files) sha256."""

    path: str
    size: int
    blob_id: str  # git blob sha1 (of the LFS pointer, for LFS files)
    lfs_sha256: str | None

    @property
    def etag(self) -> str:
        """The name of its blob: what the Hub's ETag header is for this file."""
        return self.lfs_sha256 or self.blob_id


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _file_entry(path: Path, name: str) -> CacheEntry:
    size = path.stat().st_size
    if name.endswith(_LFS_SUFFIXES) or size > _LFS_MIN_SIZE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        sha256 = digest.hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
        return CacheEntry(name, size, git_blob_sha1(pointer), sha256)
    return CacheEntry(name, size, git_blob_sha1(path.read_bytes()), None)


def _tree_id(entries: list[CacheEntry]) -> str:
    """Git tree id of the files (subdirectories as nested trees), as `git write-tree` would compute it."""

    def tree(items: dict) -> str:
        body = b""
        # git sorts tree entries by name, a directory's name compared as if it ended in "/"
        for name in sorted(items, key=lambda n: n + "/" if isinstance(items[n], dict) else n):
            value = items[name]
            if isinstance(value, dict):
                body += b"40000 " + name.encode() + b"\0" + bytes.fromhex(tree(value))
            else:
                body += b"100644 " + name.encode() + b"\0" + bytes.fromhex(value)
        return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()

    root: dict = {}
    for entry in entries:
        *dirs, name = entry.path.split("/")
        node = root
        for directory in dirs:
            node = node.setdefault(directory, {})
        node[name] = entry.blob_id
    return tree(root)


def hub_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The hub cache `from_pretrained` reads: `cache_dir`, else what huggingface_hub derives from the
    environment, read at call time: `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `HF_HOME/hub`,
    `XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    default_home = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(os.path.expandvars(os.environ.get("HF_HOME") or default_home)).expanduser() / "hub"


def validate_repo_id(repo_id: str) -> str:
    """`name` or `org/name` as the Hub accepts it; raises `CacheInstallError` (one line) otherwise."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hub_validate

    try:
        hub_validate(repo_id)
    except HFValidationError as error:
        raise CacheInstallError(f"invalid repo id {repo_id!r}: {str(error).splitlines()[0]}") from None
    if repo_id.count("/") > 1:
        raise CacheInstallError(f"invalid repo id {repo_id!r}: use 'name' or 'org/name'")
    return repo_id


def _link_or_copy(blob: Path, pointer: Path) -> None:
    relative = os.path.relpath(blob, pointer.parent)
    try:
        os.symlink(relative, pointer)
    except OSError:  # no symlinks (some Windows set-ups): huggingface_hub copies too
        shutil.copyfile(blob, pointer)


def install_to_cache(
    model_dir: str | Path,
    repo_id: str,
    *,
    cache_dir: str | Path | None = None,
    revision: str = "main",
    missing_files: tuple[str, ...] = OPTIONAL_MISSING_FILES,
) -> Path:
    """Place the files of `model_dir` in the hub cache as repo `repo_id` and point `refs/{revision}` at them.

    Afterwards `from_pretrained(repo_id)` (and `hf_hub_download`, `snapshot_download`, `scan_cache_dir`) find
    them with `HF_HUB_OFFLINE=1` exactly as after downloading that repo. Blobs are written under temporary names
    and renamed; the snapshot is assembled in a temporary directory and renamed; `refs/{revision}` is replaced
    last, so a reader sees the previous revision or the complete new one, never a partial one.

    Returns the snapshot directory.
    """
    model_dir = Path(model_dir)
    validate_repo_id(repo_id)
    if not (model_dir / "config.json").is_file():
        raise CacheInstallError(f"{model_dir} is not a model directory (no config.json)")
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and not any(
        part.startswith(".") or part == "__pycache__" for part in p.relative_to(model_dir).parts))  # fmt: skip
    entries = {p.relative_to(model_dir).as_posix(): _file_entry(p, p.relative_to(model_dir).as_posix()) for p in files}
    commit = _tree_id(list(entries.values()))

    from huggingface_hub.file_download import repo_folder_name

    cache = hub_cache_dir(cache_dir)
    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    try:
        (storage / "blobs").mkdir(parents=True, exist_ok=True)
        for name, entry in entries.items():
            blob = storage / "blobs" / entry.etag
            if not blob.is_file():
                fd, temp = tempfile.mkstemp(dir=blob.parent, prefix=f"{entry.etag}.", suffix=".incomplete")
                os.close(fd)
                shutil.copyfile(model_dir / name, temp)
                os.chmod(temp, file_mode())
                os.replace(temp, blob)
        snapshot = storage / "snapshots" / commit
        if not snapshot.is_dir():
            snapshot.parent.mkdir(parents=True, exist_ok=True)
            # assembled beside `snapshots/` (where scan_cache_dir does not look), at the same depth so that the
            # relative links stay valid after the rename
            temp_root = Path(tempfile.mkdtemp(prefix=".install-", dir=storage))
            staging = temp_root / commit
            try:
                staging.mkdir(mode=0o755)
                for name, entry in entries.items():
                    pointer = staging / name
                    pointer.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(storage / "blobs" / entry.etag, pointer)
                try:
                    os.replace(staging, snapshot)
                except OSError:
                    if not snapshot.is_dir():  # else: installed concurrently by another process, same content
                        raise
            finally:
                shutil.rmtree(temp_root, ignore_errors=True)
        tree = {"format_version": 1, "files": {
            name: {"size": e.size, "blob_id": e.blob_id, **({"lfs_sha256": e.lfs_sha256, "lfs_size": e.size}
                                                             if e.lfs_sha256 else {})}
            for name, e in sorted(entries.items())}}  # fmt: skip
        write_text_atomic(storage / "trees" / f"{commit}.json", json.dumps(tree, indent=1))
        for name in missing_files:
            if name not in entries:
                marker = storage / ".no_exist" / commit / name
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
        write_text_atomic(storage / "refs" / revision, commit)
    except OSError as error:
        raise CacheInstallError(f"cannot install into {cache}: {error}") from error
    return storage / "snapshots" / commit
