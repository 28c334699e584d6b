"""`genvis-hf` command line: one sub-command per job, each defined next to the code it drives.

Only the chosen sub-command's module is imported, so `genvis-hf score` does not pay for torch.

A bad option is one line (`genvis-hf COMMAND: error: argument --top-k: ...`, exit code 2). SIGTERM (what
`timeout`, `kill` and `docker stop` send) stops a command as Ctrl-C does: its cleanup runs (no temporary or
partial file is left) and it exits with code 143.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

# name -> ("module:function", one-line help); the function fills the sub-parser and returns the handler.
_COMMANDS = {
    "convert": ("genvis_hf.conversion.commands:add_convert_command", "convert an original GenVIS checkpoint"),
    "score": ("genvis_hf.evaluation.commands:add_score_command", "score a YouTube-VIS results file"),
    "segment": ("genvis_hf.segment_command:add_segment_command", "segment and track the objects of videos"),
    "train": ("genvis_hf.training.train:add_train_command", "train or fine-tune GenVIS on YouTube-VIS-format data"),
    "evaluate": ("genvis_hf.training.evaluate:add_evaluate_command", "run a model on a data set and report video AP"),
    "demo": ("genvis_hf.demo.command:add_demo_command", "serve a web demo that segments uploaded videos (Gradio)"),
    "make-synthetic": (
        "genvis_hf.data.synthetic:add_make_synthetic_command",
        "write a synthetic YouTube-VIS-format data set of moving shapes",
    ),
}


# Commands beyond the core install (segment, convert, score) and the extra that brings what they need.
_COMMAND_EXTRAS = {"train": "train", "make-synthetic": "train", "evaluate": "eval"}


class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block): `PROG: error: MESSAGE`, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM: unwinds like KeyboardInterrupt, so cleanup code runs."""


def _raise_terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during the cleanup ends the process at once
    raise Terminated(128 + signum)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; when `command` is given, that sub-command's arguments are loaded."""
    parser = _OneLineErrorParser(prog="genvis-hf", description="GenVIS video instance segmentation")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (target, help_text) in _COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text)
        if name == command:
            module_name, function_name = target.split(":")
            add_command = getattr(importlib.import_module(module_name), function_name)
            subparser.set_defaults(handler=add_command(subparser))
    return parser


def main(argv: list[str] | None = None) -> int:
    from .utils.cpu import tune_memory_allocator
    from .utils.extras import (
        EXTRA_OF_MODULE,
        MissingExtraError,
        missing_extra_message,
        require_extra,
    )

    tune_memory_allocator()  # an application, not a library import: see its docstring
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    in_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        if command in _COMMAND_EXTRAS and "-h" not in argv and "--help" not in argv:
            require_extra(_COMMAND_EXTRAS[command], f"genvis-hf {command}")
        args = build_parser(command if command in _COMMANDS else None).parse_args(argv)
        return int(args.handler(args) or 0)
    except Terminated as stop:
        print(f"genvis-hf {command}: stopped by SIGTERM", file=sys.stderr)
        return int(stop.code)
    except MissingExtraError as error:  # a feature of an extra that is not installed: one line, its pip install
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in EXTRA_OF_MODULE:
            raise
        print(f"error: {missing_extra_message(f'genvis-hf {command}', error.name)}", file=sys.stderr)
        return 1
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
