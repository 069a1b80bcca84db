"""Turning one image's query predictions into semantic, panoptic and instance results.

Inputs are a single image's class logits (Q, K + 1) (last = "no object") and mask logits
(Q, H, W) at the output size.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Boxes, Instances


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """Per-class scores (K, H, W): sum over queries of p(class) * sigmoid(mask)."""
    class_probs = F.softmax(mask_cls, dim=-1)[..., :-1]
    return torch.einsum("qc,qhw->chw", class_probs, mask_pred.sigmoid())


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    *,
    num_classes: int,
    thing_classes: Collection[int],
    object_mask_threshold: float,
    overlap_threshold: float,
) -> tuple[torch.Tensor, list[dict]]:
    """Non-overlapping segments from the queries.

    Keeps queries whose best class is not "no object" and scores above
    object_mask_threshold; each pixel goes to the kept query with the highest
    score * sigmoid(mask); a query keeps its segment only if the pixels it wins cover at least
    overlap_threshold of its own mask (sigmoid >= 0.5). Stuff segments of one class are merged
    into one segment. thing_classes: contiguous ids of the thing classes.

    Returns (H, W) int32 segment ids (0 = no segment) and per segment
    {"id", "isthing", "category_id"} (contiguous category id).
    """
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    # sigmoid of the kept queries only: the masks are (queries, H, W) at the output size
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep].sigmoid()
    height, width = mask_pred.shape[-2:]
    panoptic_seg = torch.zeros((height, width), dtype=torch.int32, device=mask_pred.device)
    segments_info: list[dict] = []
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info

    # Each pixel belongs to one query (its winner), so the per-query areas come from whole-map
    # counts, and the map from one lookup, instead of several full-map passes per query:
    # won = pixels the query wins, own = its mask (sigmoid >= 0.5), area = won and own.
    num_kept = cur_masks.shape[0]
    winner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    winner_owns = cur_masks.gather(0, winner.unsqueeze(0)).squeeze(0) >= 0.5
    won_areas = torch.bincount(winner.flatten(), minlength=num_kept).tolist()
    own_areas = (cur_masks >= 0.5).flatten(1).sum(1).tolist()
    areas = torch.bincount(winner[winner_owns], minlength=num_kept).tolist()
    segment_of_query = [0] * num_kept
    stuff_segment_of_class: dict[int, int] = {}
    thing_set = set(int(c) for c in thing_classes)
    for k, category in enumerate(cur_classes.tolist()):
        won_area, own_area, area = won_areas[k], own_areas[k], areas[k]
        if won_area == 0 or own_area == 0 or area == 0:
            continue
        if won_area / own_area < overlap_threshold:
            continue
        is_thing = category in thing_set
        if not is_thing and category in stuff_segment_of_class:
            segment_of_query[k] = stuff_segment_of_class[category]
            continue
        segment_id = len(segments_info) + 1
        if not is_thing:
            stuff_segment_of_class[category] = segment_id
        segment_of_query[k] = segment_id
        segments_info.append({"id": segment_id, "isthing": is_thing, "category_id": category})
    segments = torch.tensor(segment_of_query, dtype=torch.int32, device=mask_pred.device)
    panoptic_seg = torch.where(winner_owns, segments[winner], panoptic_seg)
    return panoptic_seg, segments_info


def instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    *,
    num_classes: int,
    topk: int,
    thing_classes: Collection[int] | None = None,
) -> Instances:
    """The topk (query, class) pairs by class probability, as instances.

    Each pair is a mask (logit > 0) of that class scored p(class) * mean sigmoid(mask) inside
    the mask; boxes are the masks' bounding boxes. thing_classes, when given (panoptic
    models), drops pairs of stuff classes.
    """
    num_queries = mask_cls.shape[0]
    image_size = tuple(mask_pred.shape[-2:])
    class_probs = F.softmax(mask_cls, dim=-1)[:, :-1]
    labels = torch.arange(num_classes, device=mask_cls.device).repeat(num_queries)
    k = min(topk, class_probs.numel())
    scores, flat_index = class_probs.flatten(0, 1).topk(k, sorted=False)
    classes = labels[flat_index]
    query_index = torch.div(flat_index, num_classes, rounding_mode="floor")
    masks = mask_pred[query_index]
    if thing_classes is not None:
        is_thing = torch.zeros(num_classes, dtype=torch.bool, device=mask_cls.device)
        is_thing[list(int(c) for c in thing_classes)] = True
        keep = is_thing[classes]
        scores, classes, masks = scores[keep], classes[keep], masks[keep]

    result = Instances(image_size)
    binary = (masks > 0).float()
    result.pred_masks = binary
    result.pred_boxes = (
        BitMasks(binary > 0).get_bounding_boxes()
        if len(binary)
        else Boxes(torch.zeros(0, 4, device=mask_pred.device))
    )
    mask_scores = (masks.sigmoid().flatten(1) * binary.flatten(1)).sum(1) / (
        binary.flatten(1).sum(1) + 1e-6
    )
    result.scores = scores * mask_scores
    result.pred_classes = classes
    return result
