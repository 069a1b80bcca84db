"""The demo's synchronous predictor (demo/ is a script folder, not part of the package):
`DemoPredictor`, detectron2's `DefaultPredictor` (BGR input, resizing to
INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, INPUT.FORMAT) that loads MODEL.WEIGHTS strictly
(`dinat_m2f.checkpoint.load_model_weights`: a missing file or a checkpoint that does not fit
the model is a `WeightsError`), and `predictions_to_cpu`.

The multi-process predictor is async_predictor.py; drawing is visualization.py.
"""

from __future__ import annotations

from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.engine.defaults import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.structures import Instances

from dinat_m2f.checkpoint import load_model_weights
from dinat_m2f.data.augmentations import ResizeShortestEdge

__all__ = ["DemoPredictor", "predictions_to_cpu"]


class DemoPredictor(DefaultPredictor):
    """detectron2's DefaultPredictor (call it with one BGR image (H, W, 3) uint8; returns the
    model's output dict for that image) with strict weight loading (`load_model_weights`)."""

    def __init__(self, cfg: CfgNode, *, allow_partial_weights: bool = False) -> None:
        # DefaultPredictor.__init__ with strict loading in place of checkpointer.load
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        load_model_weights(
            self.model,
            cfg.MODEL.WEIGHTS,
            allow_partial=allow_partial_weights,
            partial_option="--allow-partial-weights",
        )
        self.aug = ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT={self.input_format!r}; the demo supports RGB or BGR")


def predictions_to_cpu(predictions: dict[str, Any]) -> dict[str, Any]:
    """The model output of one image with every tensor moved to the CPU."""
    out: dict[str, Any] = {}
    for key, value in predictions.items():
        if key == "panoptic_seg":
            seg, segments_info = value
            out[key] = (seg.cpu(), segments_info)
        elif isinstance(value, (torch.Tensor, Instances)):
            out[key] = value.to("cpu")
        else:
            out[key] = value
    return out
