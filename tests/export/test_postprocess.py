"""The numpy post-processing of exported models (dinat_m2f/export/deploy/postprocess.py)
against the torch code it replaces, on the same raw outputs: MaskFormer's semantic, panoptic
and instance inference and PyTorch's bilinear resize; detectron2's detector_postprocess and
paste_masks_in_image for the detectors."""

import numpy as np
import torch
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from dinat_m2f.export.deploy import postprocess
from dinat_m2f.modeling.meta_arch.mask_former_inference import (
    instance_inference,
    panoptic_inference,
    semantic_inference,
)


def test_numpy_postprocess_equals_torch_inference():
    """The numpy module alone against dinat_m2f's torch inference, on the same logits."""
    rng = np.random.default_rng(0)
    queries, classes, size = 12, 5, (23, 31)
    class_logits = rng.normal(size=(queries, classes + 1)).astype(np.float32) * 3
    mask_logits = rng.normal(size=(queries, *size)).astype(np.float32) * 4
    things = [0, 2]
    cls_t, masks_t = torch.from_numpy(class_logits), torch.from_numpy(mask_logits)
    np.testing.assert_allclose(
        postprocess.semantic_inference(class_logits, mask_logits),
        semantic_inference(cls_t, masks_t).numpy(),
        atol=1e-5,
    )
    kwargs = dict(num_classes=classes, object_mask_threshold=0.1, overlap_threshold=0.5)
    seg, segments = postprocess.panoptic_inference(
        class_logits, mask_logits, thing_classes=things, **kwargs
    )
    ref_seg, ref_segments = panoptic_inference(cls_t, masks_t, thing_classes=things, **kwargs)
    assert segments == ref_segments and len(segments) >= 1
    np.testing.assert_array_equal(seg, ref_seg.numpy())
    ours = postprocess.instance_inference(
        class_logits, mask_logits, num_classes=classes, topk=7, thing_classes=things
    )
    ref = instance_inference(cls_t, masks_t, num_classes=classes, topk=7, thing_classes=things)
    order = np.argsort(-ref.scores.numpy(), kind="stable")
    np.testing.assert_array_equal(ours["classes"], ref.pred_classes.numpy()[order])
    np.testing.assert_array_equal(ours["boxes"], ref.pred_boxes.tensor.numpy()[order])
    # no thing class among the top pairs: empty results, as the torch inference gives
    none = postprocess.instance_inference(
        class_logits, mask_logits, num_classes=classes, topk=7, thing_classes=[]
    )
    ref = instance_inference(cls_t, masks_t, num_classes=classes, topk=7, thing_classes=[])
    assert none["masks"].shape == (0, *size) and len(ref) == 0
    assert none["boxes"].shape == (0, 4) and none["scores"].shape == (0,)
    # resizing: torch's bilinear rule, up and down
    x = torch.randn(3, 7, 10)
    for out in ((28, 40), (5, 3)):
        np.testing.assert_allclose(
            postprocess.resize_bilinear(x.numpy(), *out),
            torch.nn.functional.interpolate(x[None], size=out, mode="bilinear")[0].numpy(),
            atol=1e-5,
        )


def _detections(rng, count, height, width, side=28):
    """Random detector outputs on a (height, width) input: boxes partly outside it (clipped
    to empty by the post-processing) and smooth mask probabilities."""
    xy = rng.uniform(-10, [width, height], size=(count, 2))
    size = rng.uniform(0.3, 40, size=(count, 2))
    boxes = np.concatenate((xy, xy + size), axis=1).astype(np.float32)
    coarse = rng.normal(size=(count, 1, 7, 7)).astype(np.float32) * 4
    probs = torch.nn.functional.interpolate(
        torch.from_numpy(coarse), size=(side, side), mode="bilinear"
    ).sigmoid()[:, 0]
    return {
        "boxes": boxes,
        "scores": rng.uniform(size=count).astype(np.float32),
        "classes": rng.integers(0, 4, size=count),
        "mask_probs": probs.numpy(),
    }


def test_paste_masks_equals_detectron2():
    rng = np.random.default_rng(0)
    height, width = 90, 130
    found = _detections(rng, 40, height, width)
    boxes = np.clip(found["boxes"], 0, [width, height, width, height]).astype(np.float32)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.5)  # non-empty, some sub-pixel
    ours = postprocess.paste_masks(found["mask_probs"], boxes, height, width)
    ref = paste_masks_in_image(
        torch.from_numpy(found["mask_probs"]), torch.from_numpy(boxes), (height, width)
    ).numpy()
    assert ref.sum() > 1000  # masks with many pixels on
    np.testing.assert_array_equal(ours, ref)


def test_detector_results_equal_detector_postprocess():
    rng = np.random.default_rng(1)
    image_size, output_size = (96, 128), (150, 200)  # the input image was resized by 0.64
    found = _detections(rng, 30, *image_size)
    ours = postprocess.detector_results(found, image_size, output_size)["instances"]
    instances = Instances(image_size)
    instances.pred_boxes = Boxes(torch.from_numpy(found["boxes"]))
    instances.scores = torch.from_numpy(found["scores"])
    instances.pred_classes = torch.from_numpy(found["classes"])
    instances.pred_masks = torch.from_numpy(found["mask_probs"])[:, None]
    ref = detector_postprocess(instances, *output_size)
    assert 0 < len(ref) < 30  # some boxes were outside the image and are dropped
    np.testing.assert_array_equal(ours["boxes"], ref.pred_boxes.tensor.numpy())
    np.testing.assert_array_equal(ours["scores"], ref.scores.numpy())
    np.testing.assert_array_equal(ours["classes"], ref.pred_classes.numpy())
    np.testing.assert_array_equal(ours["masks"], ref.pred_masks.numpy())
