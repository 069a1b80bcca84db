"""Post-processing of exported models' raw outputs, in numpy alone (no torch, no detectron2):
what a deployment runs after ONNX Runtime, and what the tests compare with PyTorch.

Mask2Former: the mask logits (Q, H/4, W/4) are resized to the padded input (bilinear,
PyTorch's align_corners=False rule), cropped to the image, resized to the output size, then
semantic, panoptic and instance inference as MaskFormer does (dinat_m2f's
mask_former_inference.py). Detectors: boxes scaled to the output size and clipped, empty
boxes dropped, and each mask's probabilities pasted into its box and thresholded at 0.5, as
detectron2's detector_postprocess / paste_masks_in_image do.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np


def _axis_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and weight of i1 per output index (align_corners=False)."""
    scale = np.float32(in_size / out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., H, W) -> (..., height, width): bilinear, half-pixel centres, no antialiasing
    (torch.nn.functional.interpolate(mode="bilinear", align_corners=False))."""
    if x.shape[-2:] == (height, width):
        return x.astype(np.float32, copy=False)
    r0, r1, ry = _axis_weights(x.shape[-2], height)
    c0, c1, cx = _axis_weights(x.shape[-1], width)
    x = x.astype(np.float32, copy=False)
    top = x[..., r0, :] * (1 - ry)[:, None] + x[..., r1, :] * ry[:, None]
    return top[..., c0] * (1 - cx) + top[..., c1] * cx


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def mask_logits_at_output(
    mask_logits: np.ndarray, image_size: tuple[int, int], output_size: tuple[int, int]
) -> np.ndarray:
    """(Q, h, w) logits at 1/4 of the padded input -> (Q, *output_size): up to the padded size
    (4 h, 4 w), cropped to image_size (the image inside the padding), resized to output_size."""
    padded = resize_bilinear(mask_logits, 4 * mask_logits.shape[-2], 4 * mask_logits.shape[-1])
    cropped = padded[:, : image_size[0], : image_size[1]]
    return resize_bilinear(cropped, *output_size)


def semantic_inference(class_logits: np.ndarray, mask_logits: np.ndarray) -> np.ndarray:
    """(Q, K + 1), (Q, H, W) -> per-class scores (K, H, W)."""
    probs = _softmax(class_logits)[:, :-1]
    return np.einsum("qc,qhw->chw", probs, _sigmoid(mask_logits)).astype(np.float32)


def panoptic_inference(
    class_logits: np.ndarray,
    mask_logits: np.ndarray,
    *,
    num_classes: int,
    thing_classes: Collection[int],
    object_mask_threshold: float,
    overlap_threshold: float,
) -> tuple[np.ndarray, list[dict]]:
    """(H, W) int32 segment ids (0: none) and per segment {"id", "isthing", "category_id"}:
    kept queries (class not "no object", score above object_mask_threshold) claim the pixels
    where score * sigmoid(mask) is highest; a query whose won pixels cover less than
    overlap_threshold of its own mask (sigmoid >= 0.5) is dropped; stuff of one class merges."""
    probs = _softmax(class_logits)
    labels = probs.argmax(-1)
    scores = probs.max(-1)
    masks = _sigmoid(mask_logits)
    keep = (labels != num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], masks[keep]
    seg = np.zeros(mask_logits.shape[-2:], dtype=np.int32)
    segments: list[dict] = []
    if len(cur_masks) == 0:
        return seg, segments
    winner = (cur_scores[:, None, None] * cur_masks).argmax(0)
    things = {int(c) for c in thing_classes}
    stuff_segment: dict[int, int] = {}
    for k, category in enumerate(int(c) for c in cur_classes):
        won = winner == k
        own = cur_masks[k] >= 0.5
        mask = won & own
        won_area, own_area, area = int(won.sum()), int(own.sum()), int(mask.sum())
        if won_area == 0 or own_area == 0 or area == 0 or won_area / own_area < overlap_threshold:
            continue
        is_thing = category in things
        if not is_thing and category in stuff_segment:
            seg[mask] = stuff_segment[category]
            continue
        segment_id = len(segments) + 1
        if not is_thing:
            stuff_segment[category] = segment_id
        seg[mask] = segment_id
        segments.append({"id": segment_id, "isthing": is_thing, "category_id": category})
    return seg, segments


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 4) float32 (x0, y0, x1 + 1, y1 + 1) of each mask; 0s if empty."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        if len(xs) and len(ys):
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


def instance_inference(
    class_logits: np.ndarray,
    mask_logits: np.ndarray,
    *,
    num_classes: int,
    topk: int,
    thing_classes: Collection[int] | None = None,
) -> dict[str, np.ndarray]:
    """The topk (query, class) pairs by class probability, highest first: {"masks" (N, H, W)
    bool (logit > 0), "boxes" (N, 4), "scores" (N,) p(class) * mean sigmoid inside the mask,
    "classes" (N,)}; pairs of stuff classes are dropped when thing_classes is given."""
    probs = _softmax(class_logits)[:, :-1].reshape(-1)
    k = min(topk, probs.size)
    flat = np.argsort(-probs, kind="stable")[:k]
    scores, classes, queries = probs[flat], flat % num_classes, flat // num_classes
    if thing_classes is not None:
        keep = np.isin(classes, np.asarray(sorted(int(c) for c in thing_classes), dtype=np.int64))
        scores, classes, queries = scores[keep], classes[keep], queries[keep]
    logits = mask_logits[queries]
    masks = logits > 0
    # explicit pixel count: no pair may be left (all stuff), and reshape cannot infer -1 then
    flat_shape = (len(masks), int(np.prod(mask_logits.shape[1:])))
    flat_masks = masks.reshape(flat_shape).astype(np.float32)
    mask_scores = (_sigmoid(logits).reshape(flat_shape) * flat_masks).sum(1) / (
        flat_masks.sum(1) + 1e-6
    )
    return {
        "masks": masks,
        "boxes": masks_to_boxes(masks),
        "scores": (scores * mask_scores).astype(np.float32),
        "classes": classes.astype(np.int64),
    }


def _bilinear_zeros(image: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """(h, w) image sampled at the separable grid (gy (Y,), gx (X,)) in [-1, 1] -> (Y, X):
    grid_sample's bilinear, zero padding, align_corners=False (its CPU kernel's arithmetic)."""
    h, w = image.shape
    f32 = np.float32
    x = (gx + f32(1)) * f32(w / 2) - f32(0.5)
    y = (gy + f32(1)) * f32(h / 2) - f32(0.5)
    x0, y0 = np.floor(x), np.floor(y)
    wx, wy = x - x0, y - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    padded = np.zeros((h + 2, w + 2), dtype=f32)  # one zero texel around: neighbours -1 and w
    padded[1:-1, 1:-1] = image
    rows0, rows1 = np.clip(y0 + 1, 0, h + 1), np.clip(y0 + 2, 0, h + 1)
    cols0, cols1 = np.clip(x0 + 1, 0, w + 1), np.clip(x0 + 2, 0, w + 1)
    top, bottom = padded[rows0][:, cols0], padded[rows1][:, cols0]
    top_r, bottom_r = padded[rows0][:, cols1], padded[rows1][:, cols1]
    north, south, west, east = (f32(1) - wy)[:, None], wy[:, None], (f32(1) - wx), wx
    return (
        top * (north * west)
        + top_r * (north * east)
        + bottom * (south * west)
        + (bottom_r * (south * east))
    )


def paste_masks(
    probs: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: float = 0.5
) -> np.ndarray:
    """(N, M, M) mask probabilities pasted into their (N, 4) boxes on a (height, width) image,
    thresholded: (N, height, width) bool, as detectron2's paste_masks_in_image (bilinear
    resampling of the mask over the box, pixel centres at + 0.5)."""
    f32 = np.float32
    out = np.zeros((len(probs), height, width), dtype=bool)
    for i, (mask, box) in enumerate(zip(probs.astype(f32), boxes.astype(f32))):
        x0, y0, x1, y1 = box
        left, top = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
        right, bottom = min(int(np.ceil(x1)) + 1, width), min(int(np.ceil(y1)) + 1, height)
        if right <= left or bottom <= top:
            continue
        gy = (np.arange(top, bottom, dtype=f32) + f32(0.5) - y0) / (y1 - y0) * f32(2) - f32(1)
        gx = (np.arange(left, right, dtype=f32) + f32(0.5) - x0) / (x1 - x0) * f32(2) - f32(1)
        out[i, top:bottom, left:right] = _bilinear_zeros(mask, gx, gy) >= threshold
    return out


def detector_results(
    outputs: dict[str, np.ndarray],
    image_size: tuple[int, int],
    output_size: tuple[int, int] | None = None,
    mask_threshold: float = 0.5,
) -> dict:
    """An exported detector's outputs (rcnn.py: boxes, scores, classes, mask_probs) -> {
    "instances": {"boxes" (N, 4), "scores" (N,), "classes" (N,), "masks" (N, H, W) bool}} at
    output_size (default image_size), as detectron2's detector_postprocess: boxes scaled from
    image_size (the network input's image) and clipped, empty boxes dropped, masks pasted."""
    f32 = np.float32
    out_h, out_w = output_size or image_size
    boxes = outputs["boxes"].astype(f32).copy()
    boxes[:, 0::2] *= f32(out_w / image_size[1])
    boxes[:, 1::2] *= f32(out_h / image_size[0])
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, out_w)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, out_h)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes = boxes[keep]
    return {
        "instances": {
            "boxes": boxes,
            "scores": outputs["scores"][keep].astype(f32),
            "classes": outputs["classes"][keep].astype(np.int64),
            "masks": paste_masks(outputs["mask_probs"][keep], boxes, out_h, out_w, mask_threshold),
        }
    }


def mask_former_results(
    class_logits: np.ndarray,
    mask_logits: np.ndarray,
    info: dict,
    image_size: tuple[int, int],
    output_size: tuple[int, int] | None = None,
) -> dict:
    """One image's results from the graph's outputs (batch dim dropped): {"sem_seg" (K, H, W),
    "panoptic_seg" (seg, segments), "instances" dict} as the model's `info` enables them."""
    output_size = tuple(output_size or image_size)
    masks = mask_logits_at_output(mask_logits, image_size, output_size)
    num_classes = info["num_classes"]
    results: dict = {}
    if info["semantic_on"]:
        results["sem_seg"] = semantic_inference(class_logits, masks)
    if info["panoptic_on"]:
        results["panoptic_seg"] = panoptic_inference(
            class_logits,
            masks,
            num_classes=num_classes,
            thing_classes=info["thing_ids"],
            object_mask_threshold=info["object_mask_threshold"],
            overlap_threshold=info["overlap_threshold"],
        )
    if info["instance_on"]:
        results["instances"] = instance_inference(
            class_logits,
            masks,
            num_classes=num_classes,
            topk=info["test_topk_per_image"],
            thing_classes=info["thing_ids"] if info["panoptic_on"] else None,
        )
    return results
