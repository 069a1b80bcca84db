"""Command line: panoptic quality of saved COCO-panoptic predictions.

    python -m dinat_m2f.evaluation.panoptic --gt-json G.json --gt-folder G/ \\
        --pred-json P.json --pred-folder P/ [--per-class] [--output results.json] [--workers N]

Prints PQ / SQ / RQ in percent and the number of categories for All, Things and Stuff (and
each category with --per-class); exits with status 1 and a one-line message on bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .cli_output import write_output_json
from .panoptic_quality import pq_compute
from .panoptic_tables import per_class_table, summary_table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dinat_m2f.evaluation.panoptic",
        description="Panoptic quality (panopticapi's definition) of COCO-panoptic predictions.",
    )
    parser.add_argument("--gt-json", required=True, help="ground-truth COCO panoptic json")
    parser.add_argument("--gt-folder", required=True, help="folder of ground-truth PNGs")
    parser.add_argument("--pred-json", required=True, help="prediction json (annotations)")
    parser.add_argument("--pred-folder", required=True, help="folder of predicted PNGs")
    parser.add_argument("--per-class", action="store_true", help="also print each category")
    parser.add_argument("--output", help="write all results (fractions, not percent) as json")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; returns the exit status (0 ok, 1 bad input)."""
    args = _parser().parse_args(argv)
    try:
        result = pq_compute(
            args.gt_json,
            args.pred_json,
            args.gt_folder,
            args.pred_folder,
            workers=args.workers,
            progress=not args.no_progress,
        )
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary_table(result))
    if args.per_class:
        print()
        print(per_class_table(result))
    if args.output:
        return write_output_json(args.output, result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
