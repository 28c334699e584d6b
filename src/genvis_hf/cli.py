"""`genvis-hf` command line: one sub-command per job, each defined next to the code it drives."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> "module:function"; the function receives the sub-parser to fill and returns the handler.
_COMMANDS = {
    "score": "genvis_hf.evaluation.commands:add_score_command",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genvis-hf", description="GenVIS video instance segmentation")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, target in _COMMANDS.items():
        module_name, function_name = target.split(":")
        add_command = getattr(importlib.import_module(module_name), function_name)
        handler = add_command(subparsers.add_parser(name))
        subparsers.choices[name].set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
