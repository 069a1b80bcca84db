#!/usr/bin/env python
"""Prints the final evaluation of a train_net.py run (the last evaluation in its metrics.json):
panoptic PQ / SQ / RQ, instance mask and box AP, semantic mIoU, and where the demo pictures are.

    python tools/builtin_results.py output/builtin_shapes
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROWS = (
    (
        "panoptic PQ (all / things / stuff)",
        ("panoptic_seg/PQ", "panoptic_seg/PQ_th", "panoptic_seg/PQ_st"),
    ),
    ("panoptic SQ / RQ", ("panoptic_seg/SQ", "panoptic_seg/RQ")),
    ("instance mask AP / AP50 / AP75", ("segm/AP", "segm/AP50", "segm/AP75")),
    ("instance box AP / AP50", ("bbox/AP", "bbox/AP50")),
    ("semantic mIoU / pixel accuracy", ("sem_seg/mIoU", "sem_seg/pACC")),
)


def last_evaluation(metrics_file: str) -> dict:
    """The last metrics.json record holding evaluation results."""
    if not os.path.isfile(metrics_file):
        raise FileNotFoundError(f"{metrics_file} not found: is this a train_net.py OUTPUT_DIR?")
    found = None
    with open(metrics_file) as f:
        for line in f:
            record = json.loads(line)
            if any(key.startswith(("panoptic_seg/", "segm/", "sem_seg/")) for key in record):
                found = record
    if found is None:
        raise ValueError(f"{metrics_file} has no evaluation results (did training reach its end?)")
    return found


def format_results(record: dict) -> str:
    lines = [f"evaluation after iteration {record.get('iteration', '?')}:"]
    for label, keys in ROWS:
        values = [record.get(k) for k in keys]
        if all(v is None for v in values):
            continue
        text = " / ".join("-" if v is None else f"{v:.1f}" for v in values)
        lines.append(f"  {label:<36} {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output_dir", help="OUTPUT_DIR of the run")
    args = parser.parse_args(argv)
    try:
        record = last_evaluation(os.path.join(args.output_dir, "metrics.json"))
    except (FileNotFoundError, ValueError) as error:
        print(f"builtin_results: {error}", file=sys.stderr)
        return 1
    print(format_results(record))
    pictures = os.path.join(args.output_dir, "demo")
    if os.path.isdir(pictures):
        print(
            f"  predictions drawn on the held-out images: {pictures}/ "
            f"({len(os.listdir(pictures))} files)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
