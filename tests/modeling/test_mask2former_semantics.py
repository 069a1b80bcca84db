"""Config semantics that are Mask2Former's (where this project used to differ):
MASK_FORMER.SIZE_DIVISIBILITY 0 pads nothing (only negative values take the backbone's), the
deformable encoder's heads are MASK_FORMER.NHEADS, and the transformer decoder has no dropout
whatever MASK_FORMER.DROPOUT says (that key is the pixel decoder's)."""

import pytest
import torch
from detectron2.modeling import build_model
from torch import nn

import dinat_m2f.modeling  # noqa: F401

from .mask2former_tiny import tiny_mask2former_cfg


def backbone_input_shape(size_divisibility: int, height: int = 70, width: int = 90):
    cfg = tiny_mask2former_cfg()
    cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = size_divisibility
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    with torch.no_grad():
        (result,) = model([{"image": image}])
    assert result["sem_seg"].shape[-2:] == (height, width)
    return model.size_divisibility, tuple(seen[0][-2:])


@pytest.mark.parametrize(
    "setting,expected",
    [
        (0, (0, (70, 90))),  # Mask2Former: 0 is used as is (no padding)
        (-1, (32, (96, 96))),  # negative: the backbone's size_divisibility (DiNAT: 32)
        (64, (64, (128, 128))),
    ],
)
def test_size_divisibility_zero_pads_nothing(setting, expected):
    assert backbone_input_shape(setting) == expected


def test_the_deformable_encoder_takes_mask_former_nheads():
    cfg = tiny_mask2former_cfg()
    cfg.MODEL.MASK_FORMER.NHEADS = 2
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8  # unread, as in Mask2Former
    model = build_model(cfg)
    attn = model.sem_seg_head.pixel_decoder.transformer.encoder.layers[0].self_attn
    levels, points = 3, cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS
    assert attn.n_heads == 2
    assert attn.sampling_offsets.out_features == 2 * levels * points * 2
    assert model.sem_seg_head.predictor.num_heads == 2


def test_the_transformer_decoder_has_no_dropout():
    cfg = tiny_mask2former_cfg()
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.3
    model = build_model(cfg)
    decoder = model.sem_seg_head.predictor
    dropouts = [m.p for m in decoder.modules() if isinstance(m, nn.Dropout)]
    attentions = [m.dropout for m in decoder.modules() if isinstance(m, nn.MultiheadAttention)]
    assert dropouts and set(dropouts) == {0.0}
    assert attentions and set(attentions) == {0.0}
    encoder = model.sem_seg_head.pixel_decoder.transformer
    assert {m.p for m in encoder.modules() if isinstance(m, nn.Dropout)} == {0.3}
