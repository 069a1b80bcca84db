#!/usr/bin/env python
"""Converts a checkpoint of the DiNAT detection release (mmdetection Mask R-CNN / Cascade Mask
R-CNN with a NAT / DiNAT / DiNAT_s backbone) into a detectron2 checkpoint for the matching
config under configs/coco/detection/, listing every key it dropped or could not fill.

    python tools/convert_mmdet_detection.py maskrcnn_dinat_mini.pth maskrcnn_dinat_mini_d2.pth \\
        --config-file configs/coco/detection/dinat/mask_rcnn_dinat_mini_3x.yaml
    python train_net.py --config-file configs/coco/detection/dinat/mask_rcnn_dinat_mini_3x.yaml \\
        --eval-only MODEL.WEIGHTS maskrcnn_dinat_mini_d2.pth

The model is built from the config (on the CPU) only to know its keys and shapes. A
checkpoint of another architecture (Mask R-CNN vs Cascade, DiNAT vs DiNAT_s, another variant
or class count) is an error naming the keys. Inputs are read weights-only (no pickled objects).
"""

from __future__ import annotations

import argparse
import sys

import torch

from dinat_m2f.checkpoint import load_state_dict_file, save_converted_weights
from dinat_m2f.checkpoint.mmdet_detection import convert_mmdet_detection


def model_state_of(config_file: str, opts: list[str]) -> dict[str, torch.Tensor]:
    """State dict (keys and shapes) of the model the config builds, on the CPU."""
    from detectron2.modeling import build_model

    import dinat_m2f.modeling  # noqa: F401  (registers the backbones and ROI heads)
    from dinat_m2f.engine.setup import load_cfg

    cfg = load_cfg(config_file, ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", *opts])
    return build_model(cfg).state_dict()


def convert(
    source: str,
    target: str,
    config_file: str,
    opts: list[str] = (),
    allow_missing: bool = False,
    allow_unmatched: bool = False,
) -> list[str]:
    """Writes the converted checkpoint; returns the report lines."""
    state = load_state_dict_file(source)
    report: list[str] = []
    weights = convert_mmdet_detection(
        state,
        model_state_of(config_file, list(opts)),
        report,
        allow_missing=allow_missing,
        allow_unmatched=allow_unmatched,
    )
    save_converted_weights(weights, target)
    return report


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="the release's .pth (mmdetection: meta + state_dict)")
    parser.add_argument("target", help="output detectron2 checkpoint (.pth)")
    parser.add_argument(
        "--config-file",
        required=True,
        help="the matching config, e.g. configs/coco/detection/dinat/*.yaml",
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="write the checkpoint even if it leaves model keys unfilled",
    )
    parser.add_argument(
        "--allow-unmatched",
        action="store_true",
        help="drop checkpoint keys that match no model key instead of failing",
    )
    parser.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="config overrides KEY VALUE ... (last on the command line)",
    )
    args = parser.parse_args(argv)
    try:
        report = convert(
            args.source,
            args.target,
            args.config_file,
            args.opts,
            args.allow_missing,
            args.allow_unmatched,
        )
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"convert_mmdet_detection: error: {error}\n")
    for line in report:
        print(line)
    print(f"wrote {args.target}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
