"""Which evaluators a dataset gets, and semantic test-time augmentation."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators, SemSegEvaluator

from dinat_m2f.engine.setup import load_cfg
from dinat_m2f.evaluation.evaluator_factory import build_evaluator
from dinat_m2f.evaluation.panoptic_evaluator import COCOPanopticEvaluator
from dinat_m2f.modeling.semantic_tta import SemanticSegmentorWithTTA

from .train_net_runner import CONFIG


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from dinat_m2f.data.datasets.builtin_shapes import register_builtin_shapes
    from dinat_m2f.data.synthetic import generate_builtin_shapes

    root = str(tmp_path_factory.mktemp("datasets"))
    generate_builtin_shapes(root, num_train=2, num_val=2, size=64, seed=0)
    return register_builtin_shapes(root, prefix="factory_shapes")


def _types(evaluator):
    inner = evaluator._evaluators if isinstance(evaluator, DatasetEvaluators) else [evaluator]
    return [type(e) for e in inner]


def test_panoptic_dataset_gets_pq_ap_and_miou_as_enabled(shapes, tmp_path):
    cfg = load_cfg(CONFIG)
    name = "factory_shapes_val_panoptic_with_sem_seg"
    assert _types(build_evaluator(cfg, name, str(tmp_path))) == [
        COCOPanopticEvaluator,
        COCOEvaluator,
        SemSegEvaluator,
    ]
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    assert _types(build_evaluator(cfg, name, str(tmp_path))) == [
        COCOPanopticEvaluator,
        SemSegEvaluator,
    ]


def test_semantic_and_instance_datasets(shapes, tmp_path):
    cfg = load_cfg(CONFIG)
    assert _types(build_evaluator(cfg, "factory_shapes_val_sem_seg", str(tmp_path))) == [
        SemSegEvaluator
    ]
    assert _types(build_evaluator(cfg, "factory_shapes_val_instance", str(tmp_path))) == [
        COCOEvaluator
    ]


def test_unknown_evaluator_type_is_named(tmp_path):
    MetadataCatalog.get("_factory_odd").set(evaluator_type="lvis")
    with pytest.raises(ValueError, match="'lvis'"):
        build_evaluator(load_cfg(CONFIG), "_factory_odd", str(tmp_path))


class RampModel(torch.nn.Module):
    """'Scores' = the image's first channel resized to the output size: TTA must map every
    augmented copy back onto the original image."""

    def forward(self, inputs):
        outputs = []
        for x in inputs:
            image = x["image"][:1].float()[None]
            outputs.append(
                {
                    "sem_seg": F.interpolate(
                        image, size=(x["height"], x["width"]), mode="bilinear", align_corners=False
                    )[0]
                }
            )
        return outputs


def test_semantic_tta_undoes_flips_and_averages_scales():
    cfg = load_cfg(CONFIG)
    cfg.TEST.AUG.ENABLED = True
    cfg.TEST.AUG.MIN_SIZES = (48, 64, 96)
    cfg.TEST.AUG.MAX_SIZE = 400
    cfg.TEST.AUG.FLIP = True
    ramp = torch.linspace(0, 255, 80).round().to(torch.uint8).expand(3, 64, 80).contiguous()
    tta = SemanticSegmentorWithTTA(cfg, RampModel(), batch_size=2)
    (result,) = tta([{"image": ramp, "height": 64, "width": 80}])
    scores = result["sem_seg"]
    assert scores.shape == (1, 64, 80)
    # resampling blurs the ramp by at most a few grey levels; an un-flipped mirror copy would
    # pull every column towards 127.5 (the left edge would read ~64 instead of ~0)
    torch.testing.assert_close(scores[0], ramp[0].float(), atol=6.0, rtol=0)
    with pytest.raises(ValueError, match="height"):
        tta([{"image": ramp}])
