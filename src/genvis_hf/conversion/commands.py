"""`genvis-hf convert` and `scripts/convert_checkpoint.py`: one argument parser, one handler."""

from __future__ import annotations

import argparse
import sys


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = (
        "Convert an original GenVIS (detectron2) checkpoint into a Hugging Face model directory (with a model "
        "card), optionally install it under a name in the Hugging Face cache, export its code for "
        "trust_remote_code, and push it to the Hub."
    )
    parser.add_argument("--checkpoint", required=True, help="original model_final.pth")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="resolved detectron2 YAML of the checkpoint (cfg.dump())")
    source.add_argument("--preset", help="preset name, e.g. genvis-r50-ytvis19 or genvis-swinl-ovis-semi-online")
    parser.add_argument("--output", "--output-dir", dest="output",
                        help="output directory (default: ./<preset or checkpoint name>; with --install or "
                             "--push-to-hub and no --output, no directory is kept)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--no-verify", action="store_true", help="skip reloading and running the converted model")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="on a key mismatch, list every offending key (default: counts and the first keys)",
    )
    hub = parser.add_argument_group("Hugging Face Hub")
    hub.add_argument("--install", action="store_true",
                     help="install the model in the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub) so that "
                          "from_pretrained(NAME) finds it offline")  # fmt: skip
    hub.add_argument(
        "--name",
        metavar="REPO_ID",
        help="name to install under with --install: 'name' or 'org/name' (default: the preset)",
    )
    hub.add_argument("--cache-dir", help="hub cache directory for --install (default: $HF_HUB_CACHE or $HF_HOME/hub)")
    hub.add_argument("--export-code", action="store_true",
                     help="also write the model code and auto_map, so trust_remote_code=True loads the model "
                          "without genvis_hf")  # fmt: skip
    hub.add_argument(
        "--push-to-hub", metavar="REPO_ID", help="upload the converted model to this Hub repo (one commit)"
    )
    hub.add_argument("--private", action="store_true", help="create the Hub repo as private (with --push-to-hub)")
    return parser


def _install_name(args: argparse.Namespace) -> str:
    from pathlib import Path

    if args.name:
        return args.name
    if args.preset:
        return args.preset
    if args.output:
        return Path(args.output).name
    raise ValueError("--install with --config needs --name REPO_ID (or --output DIR, whose name is used)")


def run_convert(args: argparse.Namespace) -> int:
    import shutil
    import tempfile
    from pathlib import Path

    from ..configuration.presets import preset_config_kwargs
    from ..hub.cache import CacheInstallError, validate_repo_id
    from ..hub.push import HubPushError, check_push_possible
    from ..utils.cli_checks import UsageError, check_new_output_dir
    from ..utils.files import owned_name, remove_abandoned

    # Everything that can be known to fail is checked before the (long) conversion: usage first (exit code 2)...
    keep_output = bool(args.output) or not (args.install or args.push_to_hub)
    try:
        if args.name and not args.install:
            raise UsageError("--name is the name for --install; add --install")
        if args.private and not args.push_to_hub:
            raise UsageError("--private applies to --push-to-hub")
        if args.preset:
            try:
                preset_config_kwargs(args.preset)
            except KeyError as error:
                raise UsageError(f"--preset: {error.args[0]}") from None
        name = validate_repo_id(_install_name(args)) if args.install else None
        if keep_output:
            check_new_output_dir(args.output or args.preset or Path(args.checkpoint).stem, "--output", args.overwrite)
    except (ValueError, CacheInstallError) as error:  # UsageError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    # ... then the inputs and the Hub (exit code 1)
    try:
        if not Path(args.checkpoint).is_file():
            raise ValueError(f"checkpoint not found: {args.checkpoint}")
        if args.config is not None and not Path(args.config).is_file():
            raise ValueError(f"--config {args.config}: file not found")
        token = check_push_possible(args.push_to_hub) if args.push_to_hub else None
    except (ValueError, HubPushError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    from .convert import ConversionError, convert_checkpoint
    from .original_config import OriginalConfigError

    temp_root = None if keep_output else Path(tempfile.gettempdir()) / owned_name("genvis-convert-")
    if temp_root is not None:
        remove_abandoned(temp_root.parent, "genvis-convert-")  # left by a conversion killed with SIGKILL
        temp_root.mkdir(mode=0o700)
    output = (
        Path(args.output or args.preset or Path(args.checkpoint).stem) if keep_output else temp_root / (name or "model")
    )
    try:
        try:
            report = convert_checkpoint(
                args.checkpoint, output, preset=args.preset, original_config=args.config,
                overwrite=args.overwrite, verify=not args.no_verify,
                repo_id=args.push_to_hub or name, export_code=args.export_code,
            )  # fmt: skip
        except (ConversionError, OriginalConfigError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            details = getattr(error, "details", None)
            if details and args.verbose:
                print(details, file=sys.stderr)
            return 1
        where = report.output_dir if keep_output else "a temporary directory"
        print(
            f"converted {report.num_tensors} tensors ({report.num_parameters / 1e6:.1f} M parameters) -> "
            f"{where} (dropped loss-only buffers: {', '.join(report.dropped_keys) or 'none'})"
            + (
                f"; exported {len(report.remote_code_files)} code files for trust_remote_code (they import: "
                f"{', '.join(report.remote_code_requirements)})"
                if report.remote_code_files
                else ""
            )
        )
        if args.install:
            from ..hub.cache import install_to_cache

            try:
                snapshot = install_to_cache(report.output_dir, name, cache_dir=args.cache_dir)
            except CacheInstallError as error:
                print(f"error: {error}", file=sys.stderr)
                return 1
            print(f"installed as {name!r} in {snapshot.parents[2]} (from_pretrained({name!r}) now works offline)")
        if args.push_to_hub:
            from ..hub.push import push_to_hub

            try:
                result = push_to_hub(report.output_dir, args.push_to_hub, token=token, private=args.private or None)
            except HubPushError as error:
                print(f"error: {error}", file=sys.stderr)
                if temp_root is not None:  # keep the conversion: the push can be retried without redoing it
                    temp_root = None
                    print(
                        f'the converted model is kept in {report.output_dir}; retry with: python -c "from '
                        f"genvis_hf.hub import push_to_hub; push_to_hub('{report.output_dir}', "
                        f"'{args.push_to_hub}')\"",
                        file=sys.stderr,
                    )
                return 1
            print(f"pushed to {result.repo_id}: {result.commit_url}")
        return 0
    finally:
        if temp_root is not None:
            shutil.rmtree(temp_root, ignore_errors=True)


def add_convert_command(parser: argparse.ArgumentParser):
    add_convert_arguments(parser)
    return run_convert
