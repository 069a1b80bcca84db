"""The complete DiNAT-Mini + Mask2Former model built from a config: shapes, train and eval
steps, optimisation on one batch, and Mask2Former's checkpoint names."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Instances

import dinat_m2f.modeling  # noqa: F401  (registers the model)
from dinat_m2f.layers import MSDeformAttn

from .mask2former_tiny import NUM_CLASSES, tiny_mask2former_cfg


def _batch(generator, sizes=((64, 96), (80, 64))):
    """Images with two thing rectangles (classes 0, 1) on a stuff background (class 2)."""
    batch = []
    for h, w in sizes:
        image = torch.randint(0, 256, (3, h, w), generator=generator, dtype=torch.uint8)
        masks = torch.zeros(3, h, w, dtype=torch.bool)
        masks[0, 5:30, 5:40] = True
        masks[1, 35:60, 30:60] = True
        masks[2] = ~(masks[0] | masks[1])
        image[:, masks[0]] = 220
        image[:, masks[1]] = 30
        instances = Instances((h, w))
        instances.gt_classes = torch.tensor([0, 1, 2])
        instances.gt_masks = masks
        batch.append({"image": image, "instances": instances, "height": h, "width": w})
    return batch


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_mask2former_cfg())


def test_head_and_pixel_decoder_output_shapes(model):
    images = torch.randn(2, 3, 64, 96)
    features = model.backbone(images)
    pixel_decoder = model.sem_seg_head.pixel_decoder
    mask_features, coarsest, multi_scale = pixel_decoder.forward_features(features)
    assert mask_features.shape == (2, 32, 16, 24)
    assert coarsest.shape == (2, 32, 2, 3)
    assert [tuple(x.shape) for x in multi_scale] == [(2, 32, 2, 3), (2, 32, 4, 6), (2, 32, 8, 12)]
    outputs = model.sem_seg_head(features)
    assert outputs["pred_logits"].shape == (2, 6, NUM_CLASSES + 1)
    assert outputs["pred_masks"].shape == (2, 6, 16, 24)
    # DEC_LAYERS 3: one prediction from the initial queries + one per decoder layer
    assert len(outputs["aux_outputs"]) == 2
    for aux in outputs["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, 6, NUM_CLASSES + 1)
        assert aux["pred_masks"].shape == (2, 6, 16, 24)
    encoder_attention = [m for m in pixel_decoder.modules() if isinstance(m, MSDeformAttn)]
    assert len(encoder_attention) == 1 and encoder_attention[0].n_levels == 3


def test_train_step_gives_finite_weighted_losses_and_gradients(model):
    model.train()
    losses = model(_batch(torch.Generator().manual_seed(0)))
    # 3 losses for the final prediction and for each of the 2 intermediate ones
    assert len(losses) == 9 and {"loss_ce", "loss_mask", "loss_dice", "loss_dice_1"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    model.zero_grad()
    sum(losses.values()).backward()
    without_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert without_grad == []


def test_eval_step_returns_semantic_panoptic_and_instances_at_input_size(model):
    model.eval()
    batch = _batch(torch.Generator().manual_seed(1))
    batch[0]["height"], batch[0]["width"] = 128, 192  # results are resized to these
    with torch.no_grad():
        results = model([{k: v for k, v in x.items() if k != "instances"} for x in batch])
    assert results[0]["sem_seg"].shape == (NUM_CLASSES, 128, 192)
    assert results[1]["sem_seg"].shape == (NUM_CLASSES, 80, 64)
    seg, segments = results[0]["panoptic_seg"]
    assert seg.shape == (128, 192)
    assert set(torch.unique(seg).tolist()) <= {0} | {s["id"] for s in segments}
    instances = results[1]["instances"]
    assert instances.image_size == (80, 64) and len(instances) <= 5
    assert set(instances.pred_classes.tolist()) <= {0, 1}  # panoptic model: things only
    assert instances.pred_masks.shape[1:] == (80, 64)


def test_training_on_one_batch_reduces_the_loss():
    torch.manual_seed(0)
    model = build_model(tiny_mask2former_cfg())
    model.train()
    batch = _batch(torch.Generator().manual_seed(2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(25):
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert sum(history[-3:]) / 3 < 0.6 * sum(history[:3]) / 3, history


def test_bad_inputs_are_reported():
    model = build_model(tiny_mask2former_cfg())
    model.eval()
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        model([{"image": torch.zeros(1, 32, 32, dtype=torch.uint8)}])
    model.train()
    with pytest.raises(ValueError, match="instances"):
        model([{"image": torch.zeros(3, 32, 32, dtype=torch.uint8)}])


def test_state_dict_names_match_mask2former():
    """The head's parameter names of a Mask2Former checkpoint for this config (one encoder
    layer, two decoder layers, three encoder levels, one FPN level)."""
    model = build_model(tiny_mask2former_cfg())
    names = {k for k in model.state_dict() if not k.startswith("backbone.")}
    wb = ("weight", "bias")
    attention = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    pd, pr = "sem_seg_head.pixel_decoder.", "sem_seg_head.predictor."
    expected = {"criterion.empty_weight", f"{pd}transformer.level_embed"}
    expected |= {f"{pd}input_proj.{i}.{j}.{p}" for i in range(3) for j in (0, 1) for p in wb}
    layer = f"{pd}transformer.encoder.layers.0."
    expected |= {
        f"{layer}self_attn.{m}.{p}"
        for m in ("sampling_offsets", "attention_weights", "value_proj", "output_proj")
        for p in wb
    }
    expected |= {f"{layer}{m}.{p}" for m in ("norm1", "linear1", "linear2", "norm2") for p in wb}
    expected |= {f"{pd}mask_features.{p}" for p in wb}
    expected |= {f"{pd}adapter_1.weight", f"{pd}layer_1.weight"}
    expected |= {f"{pd}{m}.norm.{p}" for m in ("adapter_1", "layer_1") for p in wb}
    for i in range(2):
        expected |= {f"{pr}transformer_self_attention_layers.{i}.self_attn.{a}" for a in attention}
        expected |= {
            f"{pr}transformer_cross_attention_layers.{i}.multihead_attn.{a}" for a in attention
        }
        for kind in ("self_attention", "cross_attention"):
            expected |= {f"{pr}transformer_{kind}_layers.{i}.norm.{p}" for p in wb}
        expected |= {
            f"{pr}transformer_ffn_layers.{i}.{m}.{p}"
            for m in ("linear1", "linear2", "norm")
            for p in wb
        }
    expected |= {f"{pr}decoder_norm.{p}" for p in wb}
    expected |= {f"{pr}{m}.weight" for m in ("query_feat", "query_embed", "level_embed")}
    expected |= {f"{pr}class_embed.{p}" for p in wb}
    expected |= {f"{pr}mask_embed.layers.{i}.{p}" for i in range(3) for p in wb}
    assert names == expected, (sorted(names - expected), sorted(expected - names))
    assert "pixel_mean" not in model.state_dict()  # like Mask2Former: not saved


def test_enforce_input_project_adds_projection_convs():
    cfg = tiny_mask2former_cfg()
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = True
    names = set(build_model(cfg).state_dict())
    for i in range(3):
        assert f"sem_seg_head.predictor.input_proj.{i}.weight" in names


def test_instance_only_model_needs_no_thing_id_mapping():
    """Cityscapes' instance metadata has thing_classes but no thing_dataset_id_to_contiguous_id:
    an instance-only model builds and infers; a panoptic one says what is missing."""
    from detectron2.data import MetadataCatalog

    MetadataCatalog.get("_test_instance_only").set(thing_classes=["a", "b", "c"])
    cfg = tiny_mask2former_cfg()
    cfg.DATASETS.TRAIN = ("_test_instance_only",)
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = False
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    model = build_model(cfg).eval()
    with torch.no_grad():
        (result,) = model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])
    assert set(result) == {"instances"} and len(result["instances"]) <= 5
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = True
    with pytest.raises(ValueError, match="thing_dataset_id_to_contiguous_id"):
        build_model(cfg)
