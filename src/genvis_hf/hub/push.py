"""Upload a model directory to the Hugging Face Hub as one commit.

`check_push_possible` says, before any work is done, whether a push can start (not offline, a token is
available): the converter and training call it first so a long run does not end in a predictable failure.
`push_to_hub` then creates the repo if needed and uploads the whole folder with ONE `upload_folder` commit:
the Hub applies a commit entirely or not at all, and success is reported only after the call returned the
commit. Every failure is a `HubPushError` whose message is one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..utils.messages import one_line


class HubPushError(RuntimeError):
    """The push did not happen (or did not complete); the message says why in one line."""


@dataclass
class PushResult:
    repo_id: str
    commit_url: str
    commit_oid: str


def _offline() -> bool:
    import os

    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(f and f.upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def check_push_possible(repo_id: str, token: str | None = None) -> str:
    """The token to push with; raises `HubPushError` (one line) when offline, unauthenticated or the repo id is
    invalid. Makes no network call."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubPushError(f"cannot push: invalid repo id {repo_id!r} ({str(error).splitlines()[0]})") from None
    if _offline():
        raise HubPushError(f"cannot push {repo_id}: offline mode is on (HF_HUB_OFFLINE=1); nothing was uploaded")
    token = token or get_token()
    if not token:
        raise HubPushError(
            f"cannot push {repo_id}: not logged in to the Hub (run `hf auth login` or set HF_TOKEN); nothing was uploaded"
        )
    return token


def push_to_hub(
    model_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    exclude: list[str] | None = None,
) -> PushResult:
    """Create `repo_id` (if it does not exist) and upload every file of `model_dir` (but those matching the glob
    patterns of `exclude`, e.g. a training run's `checkpoints/*`) in one commit.

    Returns the commit only once the Hub has accepted it; raises `HubPushError` (one line) otherwise, in
    which case nothing of this call is on the Hub (a commit is applied entirely or not at all)."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise HubPushError(f"cannot push {model_dir}: not a model directory (no config.json)")
    token = check_push_possible(repo_id, token)

    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        # a bare name is created in the token owner's namespace: upload to the id the Hub returns
        repo_id = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True).repo_id
        commit = api.upload_folder(
            folder_path=str(model_dir),
            repo_id=repo_id,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload {model_dir.name} (genvis_hf)",
            ignore_patterns=[".*", "__pycache__/*", "*.pyc", *(exclude or [])],
        )
    except Exception as error:  # network, authentication, permission, quota: all mean "not pushed"
        raise HubPushError(f"push to {repo_id} failed, nothing was committed: {one_line(error)}") from error
    return PushResult(repo_id=repo_id, commit_url=str(commit.commit_url), commit_oid=str(commit.oid))
