#!/usr/bin/env python
"""Parameters and FLOPs of a DiNAT / NAT / DiNAT_s model (fvcore; our NA ops counted, one
multiply-add = one FLOP as in the paper).

    python tools/analyze_model.py --variant dinat_tiny --classifier          # the paper's table
    python tools/analyze_model.py --config-file cfg.yaml --input-size 800 1216 [KEY VALUE ...]
    # a whole detector, as the DiNAT detection release counts it (1280 x 800 input)
    python tools/analyze_model.py --full-model --input-size 1280 800 \
        --config-file configs/coco/detection/dinat/mask_rcnn_dinat_mini_3x.yaml
"""

from __future__ import annotations

import argparse
import sys

import torch
from fvcore.nn import flop_count_table

from dinat_m2f.modeling.backbone import MODEL_CONSTRUCTORS
from dinat_m2f.modeling.flop_count import detectron2_flop_count_analysis, flop_count_analysis

NA_OPS = ("na_qk", "na_av", "na_fused")


def build_from_config(config_file: str, opts: list[str]) -> torch.nn.Module:
    """The backbone of a config merged as train_net.py does (official Mask2Former / DiNAT
    YAML files included)."""
    from detectron2.modeling import build_backbone

    import dinat_m2f.modeling  # noqa: F401  (registers the backbones)
    from dinat_m2f.engine.setup import load_cfg

    defaults = ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False"]
    return build_backbone(load_cfg(config_file, defaults + list(opts)))


def build_full_model_from_config(config_file: str, opts: list[str]) -> torch.nn.Module:
    """The whole model of a config (the project's loader: train_net's keys), on the CPU. The
    ROI heads keep every detection (score threshold 0), so the mask head runs on
    TEST.DETECTIONS_PER_IMAGE boxes whatever the random weights score, as the release's count
    does (box heads on the RPN's 1000 proposals, mask heads on 100 boxes)."""
    from detectron2.modeling import build_model

    import dinat_m2f.modeling  # noqa: F401  (registers the models)
    from dinat_m2f.engine.setup import load_cfg

    defaults = [
        "MODEL.DEVICE",
        "cpu",
        "SOLVER.AMP.ENABLED",
        "False",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
    ]
    return build_model(load_cfg(config_file, defaults + list(opts)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--variant", choices=sorted(MODEL_CONSTRUCTORS), help="a named model")
    source.add_argument("--config-file", help="a detectron2 config with MODEL.BACKBONE.NAME")
    parser.add_argument(
        "--classifier",
        action="store_true",
        help="with --variant: the ImageNet model (1000-class head), as in the paper",
    )
    parser.add_argument(
        "--full-model",
        action="store_true",
        help="with --config-file: the whole model (e.g. a detector of "
        "configs/coco/detection), FLOPs of its inference on one image",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        default=[224],
        metavar="SIDE",
        help="H [W] of the input (default 224)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["parameter", "flop"],
        choices=["parameter", "flop", "structure"],
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    if len(args.input_size) > 2 or min(args.input_size) < 1:
        parser.error(f"--input-size takes H or H W >= 1, got {args.input_size}")
    height, width = args.input_size[0], args.input_size[-1]

    if args.full_model and not args.config_file:
        parser.error("--full-model goes with --config-file")
    if args.variant:
        extra = dict(num_classes=1000, out_indices=()) if args.classifier else {}
        model = MODEL_CONSTRUCTORS[args.variant](**extra)
        name = args.variant + (" (ImageNet classifier)" if args.classifier else " (backbone)")
    else:
        from dinat_m2f.engine.config_file import ConfigFileError

        build = build_full_model_from_config if args.full_model else build_from_config
        try:
            model = build(args.config_file, args.opts)
        except ConfigFileError as error:
            parser.exit(2, f"analyze_model: error: {error}\n")
        name = args.config_file + (" (whole model)" if args.full_model else "")
    model.eval()
    if args.classifier and not args.variant:
        parser.error("--classifier goes with --variant")

    results = {}
    print(f"# {name}, input 1x3x{height}x{width}")
    if "parameter" in args.tasks:
        results["params"] = sum(p.numel() for p in model.parameters())
        print(f"parameters: {results['params'] / 1e6:.2f} M")
    if "flop" in args.tasks:
        x = torch.randn(1, 3, height, width)
        with torch.no_grad():
            if args.full_model:
                image = {"image": (x[0] * 50 + 120).clamp(0, 255), "height": height, "width": width}
                analysis = detectron2_flop_count_analysis(model, [image])
            else:
                target = model if args.classifier else _FeaturesOnly(model)
                analysis = flop_count_analysis(target, x)
            results["flops"] = analysis.total()
            by_operator = analysis.by_operator()
            results["na_flops"] = sum(
                count for op, count in by_operator.items() if op.split("::")[-1] in NA_OPS
            )
        print(f"GFLOPs (multiply-adds): {results['flops'] / 1e9:.2f}")
        print(f"  of which NA ops (na_qk + na_av, or na_fused): {results['na_flops'] / 1e9:.2f}")
        print(flop_count_table(analysis, max_depth=2))
    if "structure" in args.tasks:
        print(model)
    return results


class _FeaturesOnly(torch.nn.Module):
    """Traces forward_features of a backbone (DiNAT.forward classifies)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        outs = (
            self.model.forward_features(x)
            if hasattr(self.model, "forward_features")
            else self.model(x)
        )
        return tuple(outs.values())


if __name__ == "__main__":
    main(sys.argv[1:])
