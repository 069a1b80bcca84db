#!/usr/bin/env python
"""Draw an exported ONNX model's predictions, like demo/demo.py draws the PyTorch model's.

    python demo/onnx_demo.py --onnx model.onnx --input img1.jpg folder/ --output out/ \
        [--show auto|panoptic|instance|semantic] [--confidence-threshold 0.5]

Inference is ONNX Runtime plus the numpy post-processing of dinat_m2f/export/deploy (no
PyTorch model is built); class names and colours come from the file's metadata, and drawing
uses detectron2's Visualizer. Unreadable images are named and skipped (exit status 1); a
missing or foreign file is exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data.catalog import Metadata  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.visualizer import ColorMode, Visualizer  # noqa: E402

from dinat_m2f.export.deploy import Predictor  # noqa: E402

MODES = ("auto", "panoptic", "instance", "semantic")
EXIT_SKIPPED, EXIT_ERROR = 1, 2
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", required=True, help="a file written by export_model.py")
    parser.add_argument("--input", nargs="+", required=True, help="images or folders")
    parser.add_argument("--output", required=True, help="folder for the drawn images")
    parser.add_argument("--show", choices=MODES, default="auto")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    return parser


def metadata_of(info: dict) -> Metadata:
    num = info["num_classes"]
    stuff = info["stuff_classes"] or [f"class {i}" for i in range(num)]
    meta = Metadata(name="onnx", stuff_classes=stuff, thing_classes=info["thing_classes"] or stuff)
    if info["stuff_colors"]:
        meta.stuff_colors = [tuple(c) for c in info["stuff_colors"]]
    if info["thing_colors"]:
        meta.thing_colors = [tuple(c) for c in info["thing_colors"]]
    return meta


def draw(image_bgr: np.ndarray, results: dict, meta: Metadata, show: str, threshold: float):
    """The drawn RGB image and what was drawn."""
    if show == "auto":
        show = next(m for m in ("panoptic", "instance", "semantic") if _key(m) in results)
    if _key(show) not in results:
        raise ValueError(f"--show {show}: the exported model does not output it")
    visualizer = Visualizer(image_bgr[:, :, ::-1], meta, instance_mode=ColorMode.IMAGE)
    if show == "panoptic":
        seg, segments = results["panoptic_seg"]
        return visualizer.draw_panoptic_seg(torch.from_numpy(seg), segments).get_image(), show
    if show == "semantic":
        labels = torch.from_numpy(results["sem_seg"].argmax(0))
        return visualizer.draw_sem_seg(labels).get_image(), show
    found = results["instances"]
    keep = found["scores"] >= threshold
    instances = Instances(image_bgr.shape[:2])
    instances.pred_masks = torch.from_numpy(found["masks"][keep])
    instances.pred_boxes = Boxes(torch.from_numpy(found["boxes"][keep]))
    instances.scores = torch.from_numpy(found["scores"][keep])
    instances.pred_classes = torch.from_numpy(found["classes"][keep])
    return visualizer.draw_instance_predictions(instances).get_image(), show


def _key(mode: str) -> str:
    return {"panoptic": "panoptic_seg", "instance": "instances", "semantic": "sem_seg"}[mode]


def images_of(inputs: list[str]) -> list[str]:
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths += sorted(
                os.path.join(item, f)
                for f in os.listdir(item)
                if f.lower().endswith(IMAGE_SUFFIXES)
            )
        else:
            paths.append(item)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if not os.path.isfile(args.onnx):
        print(f"onnx_demo: error: --onnx {args.onnx}: no such file", file=sys.stderr)
        return EXIT_ERROR
    try:
        predictor = Predictor(args.onnx)
    except Exception as error:  # onnxruntime's load errors have several types
        print(f"onnx_demo: error: --onnx {args.onnx}: {error}", file=sys.stderr)
        return EXIT_ERROR
    meta = metadata_of(predictor.info)
    os.makedirs(args.output, exist_ok=True)
    status = 0
    for path in images_of(args.input):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            print(f"onnx_demo: skipped {path}: not a readable image", file=sys.stderr)
            status = EXIT_SKIPPED
            continue
        try:
            drawn, shown = draw(image, predictor(image), meta, args.show, args.confidence_threshold)
        except ValueError as error:
            print(f"onnx_demo: error: {error}", file=sys.stderr)
            return EXIT_ERROR
        target = os.path.join(args.output, os.path.basename(path))
        cv2.imwrite(target, drawn[:, :, ::-1])
        print(f"{path}: {shown} -> {target}")
    return status


if __name__ == "__main__":
    sys.exit(main())
