"""Hub integration: model cards, installing converted models under a name (HF cache), pushing, and exporting
the model code for `trust_remote_code` loading.

    build_model_card(config, repo_id=..., preset=... | metrics=..., training=..., provenance=...) -> ModelCard
    install_to_cache(model_dir, "genvis-swinl-ytvis19")      # then from_pretrained("genvis-swinl-ytvis19")
    push_to_hub(model_dir, "org/name")                        # one commit, or HubPushError
    export_remote_code(model_dir)                             # flat code + auto_map in the directory

Imports are lazy: `genvis_hf.hub` costs nothing until a function is used.
"""

from typing import Any

_EXPORTS = {
    "build_model_card": ".model_card",
    "checkpoint_provenance": ".model_card",
    "write_model_card": ".model_card",
    "card_code_blocks": ".model_card",
    "install_to_cache": ".cache",
    "hub_cache_dir": ".cache",
    "CacheInstallError": ".cache",
    "push_to_hub": ".push",
    "check_push_possible": ".push",
    "HubPushError": ".push",
    "PushResult": ".push",
    "export_remote_code": ".remote_code",
    "validate_remote_code": ".remote_code",
    "RemoteCodeExportError": ".remote_code",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
