"""Command line: semantic segmentation metrics of saved label maps.

    python -m dinat_m2f.evaluation.semantic --gt-folder G/ --pred-folder P/ --num-classes N \\
        [--ignore-label 255] [--class-names names.txt] [--output results.json]

Ground truth and predictions are single-channel PNG label maps with the same relative paths.
Prints mIoU / fwIoU / mACC / pACC and a row per class (percent, definitions in
`semantic_metrics.py`); exits with status 1 and a one-line message on bad input.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

from tabulate import tabulate

from .cli_output import write_output_json
from .semantic_metrics import evaluate_folders


def _read_class_names(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--class-names file not found: {path}")
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dinat_m2f.evaluation.semantic",
        description="mIoU / fwIoU / mACC / pACC of saved semantic label maps (detectron2's "
        "SemSegEvaluator definitions).",
    )
    parser.add_argument("--gt-folder", required=True, help="folder of ground-truth PNGs")
    parser.add_argument("--pred-folder", required=True, help="folder of predicted PNGs")
    parser.add_argument("--num-classes", type=int, required=True, help="number of classes N")
    parser.add_argument("--ignore-label", type=int, default=255, help="ignored gt label")
    parser.add_argument("--class-names", help="text file, one class name per line")
    parser.add_argument("--output", help="write the results (percent) as json")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; returns the exit status (0 ok, 1 bad input)."""
    args = _parser().parse_args(argv)
    try:
        if args.num_classes < 1:
            raise ValueError(f"--num-classes must be >= 1, got {args.num_classes}")
        names = _read_class_names(args.class_names) if args.class_names else None
        if names is not None and len(names) != args.num_classes:
            raise ValueError(
                f"--class-names {args.class_names} has {len(names)} names, "
                f"--num-classes is {args.num_classes}"
            )
        results = evaluate_folders(
            args.gt_folder,
            args.pred_folder,
            args.num_classes,
            args.ignore_label,
            names,
            progress=not args.no_progress,
        )
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    names = names or [str(i) for i in range(args.num_classes)]
    print(
        tabulate(
            [[results[k] for k in ("mIoU", "fwIoU", "mACC", "pACC")]],
            headers=["mIoU", "fwIoU", "mACC", "pACC"],
            tablefmt="pipe",
            floatfmt=".3f",
        )
    )
    print()
    print(
        tabulate(
            [[i, n, results[f"IoU-{n}"], results[f"ACC-{n}"]] for i, n in enumerate(names)],
            headers=["id", "class", "IoU", "ACC"],
            tablefmt="pipe",
            floatfmt=".3f",
        )
    )
    if args.output:
        # NaN (a class absent from gt and predictions) is not json: null
        return write_output_json(
            args.output, {k: (None if math.isnan(v) else v) for k, v in results.items()}
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
