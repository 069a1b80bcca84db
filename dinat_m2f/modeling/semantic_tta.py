"""Multi-scale + flip test-time augmentation for semantic segmentation (TEST.AUG.*): the
per-class scores of every augmented copy, mapped back to the original image, are averaged."""

from __future__ import annotations

import torch
from detectron2.data.transforms import HFlipTransform
from detectron2.modeling import DatasetMapperTTA
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class SemanticSegmentorWithTTA(nn.Module):
    """Wraps a model returning {"sem_seg": (K, height, width)} per image.

    Args:
        cfg: TEST.AUG.{MIN_SIZES, MAX_SIZE, FLIP} choose the augmented copies.
        model: the segmentation model (DDP-wrapped is fine).
        batch_size: augmented copies per forward.
    """

    def __init__(self, cfg, model: nn.Module, batch_size: int = 1) -> None:
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        self.model = model
        self.tta_mapper = DatasetMapperTTA(cfg)
        self.batch_size = batch_size

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        return [self._inference_one_image(x) for x in batched_inputs]

    def _inference_one_image(self, inputs: dict) -> dict:
        height, width = inputs.get("height"), inputs.get("width")
        if height is None or width is None:
            raise ValueError(
                "SemanticSegmentorWithTTA: inputs need 'height' and 'width' (the output size)"
            )
        augmented = self.tta_mapper(inputs)
        total, count = None, 0
        for start in range(0, len(augmented), self.batch_size):
            chunk = augmented[start : start + self.batch_size]
            with torch.no_grad():
                outputs = self.model(chunk)
            for aug_input, output in zip(chunk, outputs):
                scores = output["sem_seg"]
                if any(isinstance(t, HFlipTransform) for t in aug_input["transforms"].transforms):
                    scores = scores.flip(dims=[2])
                total = scores if total is None else total + scores
                count += 1
        return {"sem_seg": total / count}
