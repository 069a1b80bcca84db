"""Writes the built-in synthetic dataset `builtin_shapes` (COCO panoptic / instances /
semantic formats) under a datasets root.

    python -m dinat_m2f.data.generate_builtin --root DIR [--num-train 300 --num-val 60
        --size 160 --seed 0]

DIR is the datasets root (`$DETECTRON2_DATASETS`, default ./datasets); the data goes to
DIR/builtin_shapes. Re-running with the same parameters does nothing; other parameters
regenerate it.
"""

from __future__ import annotations

import argparse
import sys

from .datasets.layout import datasets_root
from .synthetic import generate_builtin_shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dinat_m2f.data.generate_builtin", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--root",
        default=datasets_root(),
        help="datasets root; writes ROOT/builtin_shapes (default: $DETECTRON2_DATASETS or "
        "./datasets)",
    )
    parser.add_argument("--num-train", type=int, default=300, help="training images")
    parser.add_argument("--num-val", type=int, default=60, help="validation images")
    parser.add_argument("--size", type=int, default=160, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        out = generate_builtin_shapes(
            args.root, args.num_train, args.num_val, args.size, args.seed, progress=not args.quiet
        )
    except ValueError as e:
        parser.error(str(e))
    if out["skipped"]:
        print(f"{out['path']}: already generated with these parameters {out['params']}")
    else:
        print(
            f"{out['path']}: wrote {out['train']['images']} train and {out['val']['images']} "
            f"val images in {out['seconds']:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
