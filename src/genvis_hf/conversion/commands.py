"""`genvis-hf convert` and `scripts/convert_checkpoint.py`: one argument parser, one handler."""

from __future__ import annotations

import argparse
import sys


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = "Convert an original GenVIS (detectron2) checkpoint into a Hugging Face model directory."
    parser.add_argument("--checkpoint", required=True, help="original model_final.pth")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="resolved detectron2 YAML of the checkpoint (cfg.dump())")
    source.add_argument("--preset", help="preset name, e.g. genvis-r50-ytvis19 or genvis-swinl-ovis-semi-online")
    parser.add_argument("--output", "--output-dir", dest="output", help="output directory (default: ./<preset or checkpoint name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--no-verify", action="store_true", help="skip reloading and running the converted model")
    return parser


def run_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .convert import ConversionError, convert_checkpoint
    from .original_config import OriginalConfigError

    output = args.output or (args.preset or Path(args.checkpoint).stem)
    try:
        report = convert_checkpoint(
            args.checkpoint, output, preset=args.preset, original_config=args.config,
            overwrite=args.overwrite, verify=not args.no_verify,
        )  # fmt: skip
    except (ConversionError, OriginalConfigError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"converted {report.num_tensors} tensors ({report.num_parameters / 1e6:.1f} M parameters) -> "
        f"{report.output_dir} (dropped loss-only buffers: {', '.join(report.dropped_keys) or 'none'})"
    )
    return 0


def add_convert_command(parser: argparse.ArgumentParser):
    add_convert_arguments(parser)
    return run_convert
