"""Mask2Former post-processing on hand-made predictions with known results."""

import numpy as np
import pytest
import torch
from detectron2.modeling.postprocessing import sem_seg_postprocess

from dinat_m2f.export.deploy import postprocess as numpy_postprocess
from dinat_m2f.modeling.meta_arch import mask_former_inference
from dinat_m2f.modeling.meta_arch.mask_former_inference import (
    _pixel_winners,
    instance_inference,
    panoptic_inference,
    resize_to_output,
    semantic_inference,
)

# how the CPU code walks the maps: its defaults, blocks that do not divide the maps (7 pixels
# and 5 maps: the last block partial), and every query or pixel at once as on other devices
PASSES = ["cpu defaults", "small blocks", "all at once"]


@pytest.fixture(params=PASSES)
def passes(request, monkeypatch):
    if request.param == "small blocks":
        monkeypatch.setattr(mask_former_inference, "CPU_PIXELS_PER_PASS", 7)
        monkeypatch.setattr(mask_former_inference, "CPU_MAPS_PER_PASS", 5)
    elif request.param == "all at once":
        monkeypatch.setattr(mask_former_inference, "_all_at_once", lambda tensor: True)
    return request.param


NUM_CLASSES = 3  # classes 0, 1 are things, 2 is stuff; index 3 is "no object"
THINGS = [0, 1]
ON, OFF = 10.0, -10.0


def _region(rows, cols, value=ON):
    mask = torch.full((4, 4), OFF)
    mask[rows, cols] = value
    return mask


def _logits(cls, strength):
    logits = torch.zeros(NUM_CLASSES + 1)
    logits[cls] = strength
    return logits


@pytest.fixture
def predictions():
    """Queries on a 4x4 image:
    q0 thing 0, top-left 2x2             -> segment 1
    q1 stuff 2, bottom two rows          -> segment 2
    q2 stuff 2, rows 0-1 of column 3     -> merged into segment 2 (same stuff class)
    q3 "no object"                       -> dropped
    q4 class 1 with p ~ 0.47 < 0.8       -> dropped by object_mask_threshold
    q5 thing 1, rows 0-1 of cols 0-2 at a weaker logit: it wins only column 2 (2 of its 6
       pixels, 0.33 < overlap 0.8)       -> dropped; column 2 of rows 0-1 stays void (0)
    """
    mask_cls = torch.stack(
        [
            _logits(0, 10.0),
            _logits(2, 9.0),
            _logits(2, 8.0),
            _logits(3, 10.0),
            torch.tensor([0.0, 1.0, 0.0, 0.0]),
            _logits(1, 7.0),
        ]
    )
    mask_pred = torch.stack(
        [
            _region(slice(0, 2), slice(0, 2)),
            _region(slice(2, 4), slice(0, 4)),
            _region(slice(0, 2), slice(3, 4)),
            _region(slice(0, 4), slice(0, 4)),
            torch.full((4, 4), OFF),
            _region(slice(0, 2), slice(0, 3), value=5.0),
        ]
    )
    return mask_cls, mask_pred


def test_semantic_inference_is_class_probability_times_mask(predictions):
    mask_cls, mask_pred = predictions
    scores = semantic_inference(mask_cls, mask_pred)
    assert scores.shape == (NUM_CLASSES, 4, 4)
    probs = mask_cls.softmax(-1)
    for c in range(NUM_CLASSES):
        expected = sum(probs[q, c] * mask_pred[q].sigmoid() for q in range(len(mask_cls)))
        torch.testing.assert_close(scores[c], expected)
    expected_map = torch.tensor([[0, 0, 1, 2], [0, 0, 1, 2], [2, 2, 2, 2], [2, 2, 2, 2]])
    assert torch.equal(scores.argmax(0), expected_map)


def _panoptic(mask_cls, mask_pred, overlap_threshold=0.8):
    """panoptic_inference with the test's classes and an object threshold of 0.8."""
    return panoptic_inference(
        mask_cls,
        mask_pred,
        num_classes=NUM_CLASSES,
        thing_classes=THINGS,
        object_mask_threshold=0.8,
        overlap_threshold=overlap_threshold,
    )


def test_panoptic_inference_thresholds_overlap_and_stuff_merging(predictions):
    seg, segments = _panoptic(*predictions)
    expected = torch.tensor(
        [[1, 1, 0, 2], [1, 1, 0, 2], [2, 2, 2, 2], [2, 2, 2, 2]], dtype=torch.int32
    )
    assert seg.dtype == torch.int32
    assert torch.equal(seg, expected)
    assert segments == [
        {"id": 1, "isthing": True, "category_id": 0},
        {"id": 2, "isthing": False, "category_id": 2},
    ]


def test_panoptic_inference_low_overlap_threshold_keeps_partial_segment(predictions):
    seg, segments = _panoptic(*predictions, overlap_threshold=0.3)
    # q5 now survives with the 2 pixels it wins (2/6 >= 0.3); it is a thing: its own segment
    assert segments[-1] == {"id": 3, "isthing": True, "category_id": 1}
    assert torch.equal(seg[:2, 2], torch.tensor([3, 3], dtype=torch.int32))


def test_panoptic_inference_with_nothing_kept_is_all_void(predictions):
    mask_cls, mask_pred = predictions
    seg, segments = _panoptic(mask_cls[3:5], mask_pred[3:5])
    assert segments == [] and not seg.any()


def _by_score(instances):
    order = instances.scores.argsort(descending=True)
    return instances[order]


def test_instance_inference_topk_scores_and_boxes(predictions):
    mask_cls, mask_pred = predictions
    result = _by_score(instance_inference(mask_cls, mask_pred, num_classes=NUM_CLASSES, topk=4))
    assert result.image_size == (4, 4)
    # the four confident (query, class) pairs, by class probability: q0/0, q1/2, q2/2, q5/1
    assert result.pred_classes.tolist() == [0, 2, 2, 1]
    probs = mask_cls.softmax(-1)
    for i, q in enumerate([0, 1, 2, 5]):
        binary = mask_pred[q] > 0
        assert torch.equal(result.pred_masks[i], binary.float())
        mean_inside = mask_pred[q].sigmoid()[binary].mean()
        cls = result.pred_classes[i]
        torch.testing.assert_close(
            result.scores[i], probs[q, cls] * mean_inside, rtol=1e-5, atol=1e-6
        )
    # boxes (x0, y0, x1, y1) enclosing the masks: q0 top-left 2x2, q5 rows 0-1 of cols 0-2
    assert result.pred_boxes.tensor[0].tolist() == [0.0, 0.0, 2.0, 2.0]
    assert result.pred_boxes.tensor[3].tolist() == [0.0, 0.0, 3.0, 2.0]


def test_instance_inference_drops_stuff_for_panoptic_models(predictions):
    mask_cls, mask_pred = predictions
    result = instance_inference(
        mask_cls, mask_pred, num_classes=NUM_CLASSES, topk=4, thing_classes=THINGS
    )
    assert sorted(result.pred_classes.tolist()) == [0, 1]


def _panoptic_by_query(mask_cls, mask_pred, *, num_classes, thing_classes, threshold, overlap):
    """The reference: panoptic_inference's rules applied one query at a time, with full-map
    masks for each (won, own, both)."""
    scores, labels = mask_cls.softmax(-1).max(-1)
    seg = torch.zeros(mask_pred.shape[-2:], dtype=torch.int32)
    kept = [q for q in range(len(labels)) if labels[q] != num_classes and scores[q] > threshold]
    if not kept:
        return seg, []
    masks = mask_pred[kept].sigmoid()
    winner = (scores[kept].view(-1, 1, 1) * masks).argmax(0)
    segments, stuff = [], {}
    for k, q in enumerate(kept):
        category = int(labels[q])
        won, own = winner == k, masks[k] >= 0.5
        both = won & own
        if not both.any() or own.sum() == 0 or won.sum() / own.sum() < overlap:
            continue
        if category not in thing_classes and category in stuff:
            seg[both] = stuff[category]
            continue
        segments.append(
            {"id": len(segments) + 1, "isthing": category in thing_classes, "category_id": category}
        )
        if category not in thing_classes:
            stuff[category] = len(segments)
        seg[both] = len(segments)
    return seg, segments


@pytest.mark.parametrize("seed", range(6))
def test_panoptic_inference_equals_the_query_by_query_rules(seed, passes):
    """Random predictions with many competing queries: the whole-map counts give the same map
    and segments as applying the rules query by query."""
    generator = torch.Generator().manual_seed(seed)
    num_classes, queries = 7, 16
    things = [0, 1, 2, 3]
    mask_cls = torch.randn(queries, num_classes + 1, generator=generator) * 3
    # each query a random rectangle of coarse logits (ties; some exactly 0: sigmoid 0.5)
    mask_pred = -torch.randint(1, 4, (queries, 12, 10), generator=generator).float()
    for q in range(queries):
        top, left = torch.randint(0, 9, (2,), generator=generator).tolist()
        rows, cols = torch.randint(2, 7, (2,), generator=generator).tolist()
        mask_pred[q, top : top + rows, left : left + cols] += 4
    mask_pred[torch.rand(mask_pred.shape, generator=generator) < 0.03] = 0.0
    for threshold, overlap in [(0.3, 0.8), (0.0, 0.5), (0.5, 0.2)]:
        seg, segments = panoptic_inference(
            mask_cls,
            mask_pred,
            num_classes=num_classes,
            thing_classes=things,
            object_mask_threshold=threshold,
            overlap_threshold=overlap,
        )
        ref_seg, ref_segments = _panoptic_by_query(
            mask_cls,
            mask_pred,
            num_classes=num_classes,
            thing_classes=things,
            threshold=threshold,
            overlap=overlap,
        )
        assert segments == ref_segments
        assert torch.equal(seg, ref_seg)
        assert len(segments) >= 2  # the case has real segments to get wrong


def _random_predictions(seed, queries=9, num_classes=4, size=(13, 17)):
    generator = torch.Generator().manual_seed(seed)
    mask_cls = torch.randn(queries, num_classes + 1, generator=generator) * 3
    mask_pred = torch.randn(queries, *size, generator=generator) * 4
    return mask_cls, mask_pred


@pytest.mark.parametrize("seed", range(3))
def test_semantic_inference_equals_the_formula_in_float64(seed, passes):
    """Blocks of pixels (13 x 17 = 221 = 31 blocks of 7 + 4) give the whole-map formula."""
    mask_cls, mask_pred = _random_predictions(seed)
    expected = torch.einsum(
        "qc,qhw->chw", mask_cls.double().softmax(-1)[:, :-1], mask_pred.double().sigmoid()
    )
    scores = semantic_inference(mask_cls, mask_pred)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_instance_inference_equals_the_numpy_reference(seed, passes):
    """Against the independent numpy post-processing of exported models, with an empty mask
    (zero box and score) and a one-pixel mask in a corner among the top pairs."""
    mask_cls, mask_pred = _random_predictions(seed)
    mask_cls[0] = torch.tensor([9.0, -9, -9, -9, -9])  # top pair: query 0 as class 0
    mask_pred[0] = -1.0  # ... with an empty mask
    mask_cls[1] = torch.tensor([-9.0, 8, -9, -9, -9])  # query 1 as class 1
    mask_pred[1] = -1.0
    mask_pred[1, -1, -1] = 2.0  # ... only the bottom-right pixel
    result = instance_inference(mask_cls, mask_pred, num_classes=4, topk=12)
    ref = numpy_postprocess.instance_inference(
        mask_cls.numpy(), mask_pred.numpy(), num_classes=4, topk=12
    )
    # the reference comes highest class probability first; ours in topk's order
    order = sorted(range(len(result)), key=lambda i: -float(result.scores[i]))
    ref_order = np.argsort(-ref["scores"], kind="stable")
    assert result.pred_masks.dtype == torch.float32
    np.testing.assert_array_equal(result.pred_masks[order].bool().numpy(), ref["masks"][ref_order])
    np.testing.assert_array_equal(result.pred_boxes.tensor[order].numpy(), ref["boxes"][ref_order])
    np.testing.assert_array_equal(result.pred_classes[order].numpy(), ref["classes"][ref_order])
    np.testing.assert_allclose(
        result.scores[order].numpy(), ref["scores"][ref_order], rtol=1e-5, atol=1e-7
    )
    boxes = {tuple(box) for box in result.pred_boxes.tensor.tolist()}
    assert (0.0, 0.0, 0.0, 0.0) in boxes and (16.0, 12.0, 17.0, 13.0) in boxes


@pytest.mark.parametrize("all_at_once", [False, True])
def test_pixel_winners_are_the_first_highest_query(all_at_once, monkeypatch):
    """Ties (logits rounded to halves) go to the earlier query, as argmax does."""
    monkeypatch.setattr(mask_former_inference, "_all_at_once", lambda tensor: all_at_once)
    generator = torch.Generator().manual_seed(0)
    mask_pred = (torch.randn(8, 6, 7, generator=generator) * 2).round() / 2
    keep = torch.tensor([True, False, True, True, False, True, True, True])
    scores = torch.tensor([0.5, 0.5, 0.9, 0.5, 0.25, 0.5])
    winner, winner_owns, own_areas = _pixel_winners(scores, mask_pred, keep)
    masks = mask_pred[keep].sigmoid()
    products = scores.view(-1, 1, 1) * masks
    best = products.max(0).values
    is_best = products == best
    assert (is_best.sum(0) > 1).any()  # the case has ties to break
    first = is_best.int().argmax(0)  # index of the first query at the maximum
    assert torch.equal(winner, first)
    assert torch.equal(winner_owns, masks.gather(0, first[None])[0] >= 0.5)
    assert own_areas.tolist() == [int((m >= 0.5).sum()) for m in masks]


def test_resize_to_output_equals_detectron2_sem_seg_postprocess():
    """The crop and resize of detectron2, bit for bit; at the output size already, no resize."""
    logits = torch.randn(5, 32, 40) * 4
    for image_size, output in [((32, 40), (32, 40)), ((30, 37), (30, 37)), ((30, 37), (61, 50))]:
        ours = resize_to_output(logits, image_size, *output)
        assert torch.equal(ours, sem_seg_postprocess(logits, image_size, *output))
    assert resize_to_output(logits, (32, 40), 32, 40).data_ptr() == logits.data_ptr()
