"""Evaluating an exported ONNX file with detectron2's test loader and evaluators, exactly as
train_net.py --eval-only evaluates the PyTorch model (same images, same test-time resize, same
PQ / AP / mIoU code), so the two sets of metrics can be compared.

`ExportedAsModel` makes the file look like a detectron2 model to `inference_on_dataset`:
inputs as the test mapper gives them, outputs as MaskFormer / GeneralizedRCNN return them.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import Boxes, Instances

from ..data.loaders import build_test_loader
from ..evaluation.evaluator_factory import build_evaluator
from .deploy.runtime import ExportedModel, results_of


def _instances(found: dict, size: tuple[int, int]) -> Instances:
    instances = Instances(size)
    instances.pred_masks = torch.from_numpy(found["masks"])
    instances.pred_boxes = Boxes(torch.from_numpy(found["boxes"]))
    instances.scores = torch.from_numpy(found["scores"])
    instances.pred_classes = torch.from_numpy(found["classes"])
    return instances


class ExportedAsModel:
    """An exported ONNX file called like a detectron2 model in inference: a list of
    {"image" (C, h, w) resized pixels, "height", "width"} -> a list of {"sem_seg" (K, H, W),
    "panoptic_seg" (seg, segments), "instances" Instances}, as the file outputs them."""

    def __init__(self, path: str, threads: int = 0) -> None:
        self.model = ExportedModel(path, threads=threads)

    def __call__(self, batched_inputs: list[dict]) -> list[dict]:
        outputs = []
        for item in batched_inputs:
            pixels = item["image"].numpy().astype(np.float32)
            size = (
                int(item.get("height", pixels.shape[1])),
                int(item.get("width", pixels.shape[2])),
            )
            found = results_of(self.model, pixels, output_size=size)
            result: dict = {}
            if "sem_seg" in found:
                result["sem_seg"] = torch.from_numpy(found["sem_seg"])
            if "panoptic_seg" in found:
                seg, segments = found["panoptic_seg"]
                result["panoptic_seg"] = (torch.from_numpy(seg), segments)
            if "instances" in found:
                result["instances"] = _instances(found["instances"], size)
            outputs.append(result)
        return outputs


def evaluate(cfg, model, output_folder: str | None = None) -> OrderedDict:
    """{dataset: {task: {metric: value}}} of `model` (a PyTorch model or an ExportedAsModel)
    on cfg.DATASETS.TEST, with the evaluators train_net.py uses."""
    results = OrderedDict()
    for name in cfg.DATASETS.TEST:
        loader = build_test_loader(cfg, name)
        evaluator = build_evaluator(cfg, name, output_folder)
        with torch.no_grad():
            results[name] = inference_on_dataset(model, loader, evaluator)
    return results


__all__ = ["ExportedAsModel", "evaluate"]
