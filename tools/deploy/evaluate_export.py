#!/usr/bin/env python
"""Evaluate an exported ONNX file on cfg.DATASETS.TEST with the evaluators train_net.py uses,
next to the PyTorch model of the same config and weights.

    python tools/deploy/evaluate_export.py --config-file CONFIG --onnx model.onnx \
        [--no-pytorch] MODEL.WEIGHTS model_final.pth

Both run on the same test loader (same images, same test-time resize); the table lists each
headline metric (PQ, SQ, RQ, mask / box AP, mIoU, pixel accuracy) for ONNX Runtime and PyTorch
and their difference. Datasets are found under $DETECTRON2_DATASETS as for train_net.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

import dinat_m2f  # noqa: E402,F401  (registers the models and datasets)
from dinat_m2f.checkpoint import WeightsError, load_model_weights  # noqa: E402
from dinat_m2f.engine.config_file import ConfigFileError  # noqa: E402
from dinat_m2f.engine.setup import load_cfg  # noqa: E402
from dinat_m2f.export.evaluate import ExportedAsModel, evaluate  # noqa: E402

EXIT_ERROR = 2
HEADLINE = {
    "panoptic_seg": ("PQ", "SQ", "RQ"),
    "segm": ("AP", "AP50"),
    "bbox": ("AP", "AP50"),
    "sem_seg": ("mIoU", "pACC"),
}


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--onnx", required=True, help="a file written by export_model.py")
    parser.add_argument("--no-pytorch", action="store_true", help="evaluate the file only")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return parser


def table(onnx_results: dict, torch_results: dict | None) -> str:
    lines = ["| dataset | task | metric | ONNX Runtime | PyTorch | difference |", "|---" * 6 + "|"]
    for dataset, tasks in onnx_results.items():
        for task, metrics in tasks.items():
            for name in HEADLINE.get(task, ()):
                if name not in metrics:
                    continue
                ours = metrics[name]
                theirs = torch_results[dataset][task][name] if torch_results else None
                cells = [dataset, task, name, f"{ours:.3f}"]
                cells += (
                    ["-", "-"] if theirs is None else [f"{theirs:.3f}", f"{ours - theirs:+.3f}"]
                )
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if not os.path.isfile(args.onnx):
        print(f"evaluate_export: error: --onnx {args.onnx}: no such file", file=sys.stderr)
        return EXIT_ERROR
    try:
        cfg = load_cfg(args.config_file, args.opts)
        model = None
        if not args.no_pytorch:
            model = build_model(cfg).eval()
            load_model_weights(model, cfg.MODEL.WEIGHTS)
    except (WeightsError, ConfigFileError, ValueError) as error:
        print(f"evaluate_export: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    with tempfile.TemporaryDirectory() as scratch:
        onnx_results = evaluate(
            cfg, ExportedAsModel(args.onnx, threads=torch.get_num_threads()), scratch
        )
        torch_results = None if model is None else evaluate(cfg, model, scratch)
    print(table(onnx_results, torch_results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
