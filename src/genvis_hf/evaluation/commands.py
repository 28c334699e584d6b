"""``genvis-hf score``: evaluate a results file against YouTube-VIS / OVIS ground truth.

    genvis-hf score --annotations valid.json --results results.json   # or a CodaLab results .zip

prints the official-style summary, then the metrics as one JSON object on the last line of stdout. On bad
input it prints one ``genvis-hf score: error: ...`` line on stderr and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from .errors import YTVISFormatError
from .ytvis_eval import DEFAULT_MAX_DETS, format_summary, ytvis_evaluate


def add_score_command(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Fill the ``score`` sub-parser; return its handler."""
    parser.description = "Score video instance segmentation results exactly like the official YouTube-VIS evaluator."
    parser.add_argument("--annotations", required=True, type=Path, help="ground-truth JSON (YouTube-VIS/OVIS layout)")
    parser.add_argument("--results", required=True, type=Path, help="results JSON, or a CodaLab .zip holding one")
    parser.add_argument(
        "--max-dets", type=int, nargs="+", default=list(DEFAULT_MAX_DETS), help="max detections per video and class"
    )
    parser.add_argument("--output", type=Path, help="also write the metrics JSON to this file")
    parser.add_argument("--quiet", action="store_true", help="print only the JSON line")
    return run_score


def _error(message: str) -> int:
    print(f"genvis-hf score: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 1


def run_score(args: argparse.Namespace) -> int:
    """Evaluate, print summary + JSON line; 1 with a one-line error on bad input."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            metrics = ytvis_evaluate(args.annotations, args.results, max_dets=args.max_dets)
    except (YTVISFormatError, ValueError, OSError) as error:
        return _error(str(error))
    for warning in caught:
        print(f"genvis-hf score: warning: {warning.message}", file=sys.stderr)
    line = json.dumps(metrics)
    if args.output is not None:
        try:
            args.output.write_text(line + "\n", encoding="utf-8")
        except OSError as error:
            return _error(f"cannot write {args.output}: {error}")
    if not args.quiet:
        print(format_summary(metrics))
    print(line)
    return 0
