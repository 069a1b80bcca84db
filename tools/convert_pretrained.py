#!/usr/bin/env python
"""Converts an official DiNAT/NAT ImageNet checkpoint or a Hugging Face DiNAT state dict into
a detectron2 checkpoint for D2DiNAT (keys `backbone.*`), resizing the relative positional
biases to the target kernel size (bicubic) and reporting every key it dropped or resized.

    python tools/convert_pretrained.py dinat_large_in22k_224.pth dinat_large_k11.pth \\
        --variant dinat_large_k11
    python tools/convert_pretrained.py pytorch_model.bin out.pth --variant dinat_tiny
    # the FPN detectors (configs/coco/detection) hold the backbone as backbone.bottom_up.*
    python tools/convert_pretrained.py dinat_mini_in1k_224.pth dinat_mini_in1k_224_fpn.pth \\
        --variant dinat_mini --prefix backbone.bottom_up.

Then set MODEL.WEIGHTS to the output. The input may also be the `.pkl` that the DiNAT
release's `convert-pretrained-dinat-model-to-d2.py` writes. Inputs are read as plain data only
(`dinat_m2f.checkpoint.load_plain_data`): a file holding pickled objects is refused.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from dinat_m2f.checkpoint import load_state_dict_file, official_backbone_state_dict
from dinat_m2f.modeling.backbone import MODEL_CONSTRUCTORS


def convert(
    source: str,
    target: str,
    variant: str,
    kernel_size: int | None = None,
    prefix: str = "backbone.",
) -> list[str]:
    """Writes the converted checkpoint; returns the report lines."""
    kwargs = {"dilations": None}  # dilations shape no weight
    if kernel_size is not None:
        kwargs["kernel_size"] = kernel_size
    model_state = MODEL_CONSTRUCTORS[variant](**kwargs).state_dict()
    report: list[str] = []
    weights = official_backbone_state_dict(load_state_dict_file(source), model_state, report)
    missing = sorted(set(model_state) - set(weights))
    report += [f"not in the checkpoint (initialised by the model): {name}" for name in missing]
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    torch.save(
        {
            "model": {f"{prefix}{k}": v for k, v in weights.items()},
            "__author__": "dinat_m2f",
            "matching_heuristics": False,
        },
        target,
    )
    return report


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "source",
        help="official .pth (or the release converter's .pkl) or Hugging Face pytorch_model.bin",
    )
    parser.add_argument("target", help="output detectron2 checkpoint (.pth)")
    parser.add_argument(
        "--variant",
        required=True,
        choices=sorted(MODEL_CONSTRUCTORS),
        help="the architecture the weights are for (its kernel size sets the RPB size)",
    )
    parser.add_argument(
        "--kernel-size",
        type=int,
        default=None,
        help="resize the RPBs to this kernel size instead of the variant's",
    )
    parser.add_argument(
        "--prefix",
        default="backbone.",
        help="prefix of the keys in the output: backbone. (D2DiNAT, Mask2Former) "
        "or backbone.bottom_up. (the FPN backbones of the R-CNN detectors)",
    )
    args = parser.parse_args(argv)
    if args.kernel_size is not None and (args.kernel_size < 3 or args.kernel_size % 2 == 0):
        parser.error(f"--kernel-size must be odd and >= 3, got {args.kernel_size}")
    try:
        report = convert(args.source, args.target, args.variant, args.kernel_size, args.prefix)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"convert_pretrained: error: {error}\n")
    for line in report:
        print(line)
    print(f"wrote {args.target}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
