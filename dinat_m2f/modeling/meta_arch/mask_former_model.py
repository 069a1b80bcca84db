"""The Mask2Former meta-architecture: backbone -> MaskFormerHead -> losses or results.

Registered in detectron2's META_ARCH_REGISTRY as "MaskFormer" (Mask2Former's name, so its
configs and checkpoints work unchanged: `backbone.*`, `sem_seg_head.*`, `criterion.*`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.backbone import Backbone
from detectron2.structures import BitMasks, ImageList
from detectron2.utils.memory import retry_if_cuda_oom
from torch import nn

from ..criterion import SetCriterion
from ..matcher import HungarianMatcher
from .mask_former_inference import (
    instance_inference,
    panoptic_inference,
    resize_to_output,
    semantic_inference,
)


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Args:
    backbone / sem_seg_head / criterion: the three parts.
    num_queries: queries of the decoder.
    object_mask_threshold / overlap_threshold: panoptic inference thresholds.
    metadata: dataset metadata (panoptic inference needs thing_dataset_id_to_contiguous_id).
    size_divisibility: pad batched images to this multiple; negative: the backbone's
        (0 pads nothing, as in Mask2Former).
    sem_seg_postprocess_before_inference: resize mask logits to the image size before
        combining them (needed for panoptic and instance results).
    pixel_mean / pixel_std: input normalisation (per channel, input format order).
    semantic_on / panoptic_on / instance_on: which results inference returns (any mix).
    test_topk_per_image: instances per image.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: nn.Module,
        num_queries: int,
        object_mask_threshold: float,
        overlap_threshold: float,
        metadata,
        size_divisibility: int,
        sem_seg_postprocess_before_inference: bool,
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
        semantic_on: bool,
        panoptic_on: bool,
        instance_on: bool,
        test_topk_per_image: int,
    ) -> None:
        super().__init__()
        if not (semantic_on or panoptic_on or instance_on):
            raise ValueError(
                "MaskFormer: MODEL.MASK_FORMER.TEST.{SEMANTIC_ON, PANOPTIC_ON, INSTANCE_ON} are "
                "all False; turn on at least one"
            )
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(
                f"MODEL.PIXEL_MEAN {tuple(pixel_mean)} and MODEL.PIXEL_STD {tuple(pixel_std)} "
                "must have the same length"
            )
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_queries = num_queries
        self.overlap_threshold = overlap_threshold
        self.object_mask_threshold = object_mask_threshold
        self.metadata = metadata
        if size_divisibility < 0:
            size_divisibility = self.backbone.size_divisibility
        self.size_divisibility = size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.semantic_on = semantic_on
        self.instance_on = instance_on
        self.panoptic_on = panoptic_on
        self.test_topk_per_image = test_topk_per_image
        # only panoptic models read the thing classes (stuff merging, and which instances a
        # panoptic model keeps); instance-only datasets such as Cityscapes' need not define them
        if panoptic_on and not hasattr(metadata, "thing_dataset_id_to_contiguous_id"):
            raise ValueError(
                "MaskFormer: panoptic inference needs the metadata of DATASETS.TRAIN[0] "
                f"({getattr(metadata, 'name', '?')!r}) to define thing_dataset_id_to_contiguous_id"
            )

    @classmethod
    def from_config(cls, cfg) -> dict:
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        mf = cfg.MODEL.MASK_FORMER
        matcher = HungarianMatcher(
            cost_class=mf.CLASS_WEIGHT,
            cost_mask=mf.MASK_WEIGHT,
            cost_dice=mf.DICE_WEIGHT,
            num_points=mf.TRAIN_NUM_POINTS,
        )
        weight_dict = {
            "loss_ce": mf.CLASS_WEIGHT,
            "loss_mask": mf.MASK_WEIGHT,
            "loss_dice": mf.DICE_WEIGHT,
        }
        if mf.DEEP_SUPERVISION:
            for i in range(mf.DEC_LAYERS - 1):
                weight_dict.update({f"{k}_{i}": v for k, v in list(weight_dict.items())[:3]})
        criterion = SetCriterion(
            sem_seg_head.num_classes,
            matcher=matcher,
            weight_dict=weight_dict,
            eos_coef=mf.NO_OBJECT_WEIGHT,
            losses=["labels", "masks"],
            num_points=mf.TRAIN_NUM_POINTS,
            oversample_ratio=mf.OVERSAMPLE_RATIO,
            importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
        )
        test = mf.TEST
        if not cfg.DATASETS.TRAIN:
            raise ValueError(
                "MaskFormer: DATASETS.TRAIN is empty; its first entry gives the metadata"
            )
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": criterion,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "object_mask_threshold": test.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": test.OVERLAP_THRESHOLD,
            "metadata": MetadataCatalog.get(cfg.DATASETS.TRAIN[0]),
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": (
                test.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE or test.PANOPTIC_ON or test.INSTANCE_ON
            ),
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
            "semantic_on": test.SEMANTIC_ON,
            "instance_on": test.INSTANCE_ON,
            "panoptic_on": test.PANOPTIC_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: list[dict]):
        """batched_inputs: detectron2 dicts with "image" (C, H, W) in the input format, and for
        training "instances" (gt_classes, gt_masks); at inference optional "height"/"width" of
        the output. Training returns weighted losses; inference returns per image a dict with
        "sem_seg" (K, height, width), "panoptic_seg" (seg, segments_info), "instances", as
        enabled."""
        if self.training and any("instances" not in x for x in batched_inputs):
            raise ValueError(
                "MaskFormer: training needs 'instances' in every input dict (use a Mask2Former "
                "dataset mapper, INPUT.DATASET_MAPPER_NAME)"
            )
        images = [x["image"].to(self.device) for x in batched_inputs]
        expected_channels = self.pixel_mean.shape[0]
        for i, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != expected_channels:
                raise ValueError(
                    f"MaskFormer: batched_inputs[{i}]['image'] must be ({expected_channels}, H, "
                    f"W), got shape {tuple(image.shape)}"
                )
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        images = ImageList.from_tensors(images, self.size_divisibility)
        features = self.backbone(images.tensor)
        outputs = self.sem_seg_head(features)

        if self.training:
            targets = self.prepare_targets(
                [x["instances"].to(self.device) for x in batched_inputs], images
            )
            for target, x in zip(targets, batched_inputs):
                if "sample_seed" in x:  # the training loader's seed of the image's random points
                    target["seed"] = x["sample_seed"]
            losses = self.criterion(outputs, targets)
            weights = self.criterion.weight_dict
            # losses without a weight (e.g. aux losses when deep supervision is off) are dropped
            return {k: v * weights[k] for k, v in losses.items() if k in weights}

        mask_cls_results = outputs["pred_logits"]
        mask_pred_results = F.interpolate(
            outputs["pred_masks"],
            size=images.tensor.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )
        del outputs
        processed_results = []
        for mask_cls, mask_pred, input_per_image, image_size in zip(
            mask_cls_results, mask_pred_results, batched_inputs, images.image_sizes
        ):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            result = {}
            if self.sem_seg_postprocess_before_inference:
                mask_pred = retry_if_cuda_oom(resize_to_output)(
                    mask_pred, image_size, height, width
                )
                mask_cls = mask_cls.to(mask_pred)
            if self.semantic_on:
                sem_seg = retry_if_cuda_oom(semantic_inference)(mask_cls, mask_pred)
                if not self.sem_seg_postprocess_before_inference:
                    sem_seg = retry_if_cuda_oom(resize_to_output)(
                        sem_seg, image_size, height, width
                    )
                result["sem_seg"] = sem_seg
            if self.panoptic_on:
                result["panoptic_seg"] = retry_if_cuda_oom(panoptic_inference)(
                    mask_cls,
                    mask_pred,
                    num_classes=self.sem_seg_head.num_classes,
                    thing_classes=self._thing_classes(),
                    object_mask_threshold=self.object_mask_threshold,
                    overlap_threshold=self.overlap_threshold,
                )
            if self.instance_on:
                result["instances"] = retry_if_cuda_oom(instance_inference)(
                    mask_cls,
                    mask_pred,
                    num_classes=self.sem_seg_head.num_classes,
                    topk=self.test_topk_per_image,
                    thing_classes=self._thing_classes() if self.panoptic_on else None,
                )
            processed_results.append(result)
        return processed_results

    def _thing_classes(self) -> list[int]:
        return list(self.metadata.thing_dataset_id_to_contiguous_id.values())

    def prepare_targets(self, targets, images: ImageList) -> list[dict]:
        """Per image {"labels": (T,), "masks": (T, H_pad, W_pad)}: gt masks zero-padded to the
        batch's padded size."""
        h_pad, w_pad = images.tensor.shape[-2:]
        new_targets = []
        for target in targets:
            gt_masks = target.gt_masks
            if isinstance(gt_masks, BitMasks):
                gt_masks = gt_masks.tensor
            padded = torch.zeros(
                (gt_masks.shape[0], h_pad, w_pad), dtype=gt_masks.dtype, device=gt_masks.device
            )
            padded[:, : gt_masks.shape[1], : gt_masks.shape[2]] = gt_masks
            new_targets.append({"labels": target.gt_classes, "masks": padded})
        return new_targets
