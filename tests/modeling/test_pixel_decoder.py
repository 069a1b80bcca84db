"""MSDeformAttnPixelDecoder on its own: output shapes and strides for several input sizes and
encoder settings, gradients reaching every parameter, which inputs each output depends on, the
FPN step recomputed from its parts, images of a batch kept apart, and bad settings."""

import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec

import dinat_m2f.modeling.pixel_decoder.ms_deform_attn_pixel_decoder as pixel_decoder_module
from dinat_m2f.modeling.pixel_decoder import MSDeformAttnPixelDecoder
from dinat_m2f.modeling.pixel_decoder.ms_deform_attn_pixel_decoder import canonical_strides

CHANNELS = {"res2": 16, "res3": 24, "res4": 40, "res5": 48}
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
CONV_DIM, MASK_DIM = 32, 16


def build(in_features=("res3", "res4", "res5"), common_stride=4, **overrides):
    torch.manual_seed(0)
    kwargs = dict(
        input_shape={k: ShapeSpec(channels=CHANNELS[k], stride=STRIDES[k]) for k in CHANNELS},
        transformer_dropout=0.0,
        transformer_nheads=4,
        transformer_dim_feedforward=64,
        transformer_enc_layers=2,
        conv_dim=CONV_DIM,
        mask_dim=MASK_DIM,
        norm="GN",
        transformer_in_features=list(in_features),
        common_stride=common_stride,
        transformer_enc_n_points=2,
    )
    kwargs.update(overrides)
    return MSDeformAttnPixelDecoder(**kwargs)


def backbone_features(height, width, batch=2, requires_grad=False):
    """Maps of an image of height x width at strides 4..32 (sizes rounded up, as a backbone's
    padded convolutions give them)."""
    torch.manual_seed(1)
    return {
        name: torch.randn(
            batch, CHANNELS[name], math.ceil(height / s), math.ceil(width / s),
            requires_grad=requires_grad,
        )
        for name, s in STRIDES.items()
    }  # fmt: skip


def size_at(features, name):
    return tuple(features[name].shape[-2:])


@pytest.mark.parametrize("height, width", [(64, 64), (96, 160), (100, 72), (33, 200)])
def test_output_shapes_and_strides(height, width):
    decoder = build().eval()
    features = backbone_features(height, width)
    with torch.no_grad():
        mask_features, encoder_out, multi_scale = decoder.forward_features(features)
    # mask features at the common stride (the res2 map), the encoder's coarsest output at 1/32
    assert mask_features.shape == (2, MASK_DIM, *size_at(features, "res2"))
    assert encoder_out.shape == (2, CONV_DIM, *size_at(features, "res5"))
    # three maps for the transformer decoder, coarse to fine: res5, res4, res3
    assert [tuple(m.shape) for m in multi_scale] == [
        (2, CONV_DIM, *size_at(features, name)) for name in ("res5", "res4", "res3")
    ]
    assert torch.equal(multi_scale[0], encoder_out)
    assert all(torch.isfinite(t).all() for t in (mask_features, *multi_scale))


def test_common_stride_8_stops_the_fpn_at_res3():
    decoder = build(common_stride=8).eval()
    assert decoder.num_fpn_levels == 0
    features = backbone_features(96, 128)
    mask_features, _, multi_scale = decoder.forward_features(features)
    assert mask_features.shape == (2, MASK_DIM, *size_at(features, "res3"))
    assert [m.shape[-2:] for m in multi_scale] == [
        features[name].shape[-2:] for name in ("res5", "res4", "res3")
    ]


def test_two_encoder_levels_take_two_fpn_levels():
    decoder = build(in_features=("res4", "res5")).eval()
    assert decoder.num_fpn_levels == 2
    features = backbone_features(128, 96)
    mask_features, encoder_out, multi_scale = decoder.forward_features(features)
    assert mask_features.shape == (2, MASK_DIM, *size_at(features, "res2"))
    assert encoder_out.shape[-2:] == features["res5"].shape[-2:]
    assert [m.shape[-2:] for m in multi_scale] == [
        features[name].shape[-2:] for name in ("res5", "res4", "res3")
    ]


def _random_projection_loss(decoder, features):
    mask_features, encoder_out, multi_scale = decoder.forward_features(features)
    # random weights: a plain sum of a LayerNorm / GroupNorm output has no gradient
    generator = torch.Generator().manual_seed(2)
    return sum(
        (t * torch.randn(t.shape, generator=generator)).sum()
        for t in (mask_features, encoder_out, *multi_scale)
    )


def test_gradients_reach_every_parameter():
    decoder = build().train()
    features = backbone_features(64, 96)
    _random_projection_loss(decoder, features).backward()
    names = [name for name, _ in decoder.named_parameters()]
    assert any("sampling_offsets" in n for n in names) and "transformer.level_embed" in names
    for name, p in decoder.named_parameters():
        assert p.grad is not None, name
        # Deformable DETR's initialisation: the sampling offsets and attention weights do not
        # depend on the query yet (zero weights), so the level embedding (added to the query
        # only) gets no gradient before the first step; everything else does
        if name != "transformer.level_embed":
            assert p.grad.abs().sum() > 0, name
    zero_init = [
        p for n, p in decoder.named_parameters()
        if n.endswith(("sampling_offsets.weight", "attention_weights.weight"))
    ]  # fmt: skip
    assert zero_init and all(not p.any() for p in zero_init)
    assert not decoder.transformer.level_embed.grad.any()

    # after one optimizer step every parameter, the level embedding included, gets a gradient
    torch.optim.SGD(decoder.parameters(), lr=1e-2).step()
    decoder.zero_grad()
    _random_projection_loss(decoder, features).backward()
    for name, p in decoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_each_output_depends_on_the_inputs_it_should():
    decoder = build().eval()
    features = backbone_features(64, 64, requires_grad=True)
    mask_features, encoder_out, multi_scale = decoder.forward_features(features)

    def grads(output):
        torch.manual_seed(3)
        weights = torch.randn_like(output)
        return torch.autograd.grad(
            (output * weights).sum(), list(features.values()), retain_graph=True, allow_unused=True
        )

    # the encoder mixes res3..res5 (deformable attention across levels) but never sees res2
    for name, g in zip(features, grads(encoder_out)):
        if name == "res2":
            assert g is None or not g.any(), name
        else:
            assert g is not None and g.abs().sum() > 0, name
    # the mask features add res2 through the FPN: every input reaches them
    for name, g in zip(features, grads(mask_features)):
        assert g is not None and g.abs().sum() > 0, name


def test_mask_features_are_the_fpn_step_on_res2():
    """The finest FPN level (checkpoint names adapter_1 / layer_1) adds the projected res2 map to
    the res3-level output upsampled bilinearly; mask_features is a 1x1 conv of the result."""
    decoder = build().eval()
    features = backbone_features(80, 48)
    with torch.no_grad():
        mask_features, _, multi_scale = decoder.forward_features(features)
        lateral = decoder.adapter_1(features["res2"])
        up = F.interpolate(
            multi_scale[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
        )
        expected = decoder.mask_features(decoder.layer_1(lateral + up))
    torch.testing.assert_close(mask_features, expected)


def test_images_of_a_batch_do_not_mix():
    decoder = build().eval()
    features = backbone_features(64, 96, batch=3)
    with torch.no_grad():
        batched = decoder.forward_features(features)
        for i in range(3):
            single = decoder.forward_features({k: v[i : i + 1] for k, v in features.items()})
            torch.testing.assert_close(single[0], batched[0][i : i + 1], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(single[1], batched[1][i : i + 1], rtol=1e-4, atol=1e-5)
            for a, b in zip(single[2], batched[2]):
                torch.testing.assert_close(a, b[i : i + 1], rtol=1e-4, atol=1e-5)


def test_bad_settings_name_the_config_key():
    unknown = r"DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES names \['res6'\]"
    with pytest.raises(ValueError, match=unknown):
        build(in_features=("res5", "res6"))
    not_dividing = "COMMON_STRIDE=16 must divide the finest encoder stride 8"
    with pytest.raises(ValueError, match=not_dividing):
        build(common_stride=16)


def test_one_images_upsampling_keeps_its_bits_without_a_layout_round_trip(monkeypatch):
    """With one image the finest encoder map is handed to the FPN upsampling with canonical
    channels-last strides: the upsampled map comes out channels-last (no conversion), and
    every output is bit-equal to the run that upsamples the map as the encoder leaves it."""
    decoder = build().eval()
    features = backbone_features(96, 160, batch=1)
    upsampled = []
    real_interpolate = F.interpolate

    def recording(*args, **kwargs):
        out = real_interpolate(*args, **kwargs)
        upsampled.append(out)
        return out

    monkeypatch.setattr(F, "interpolate", recording)
    with torch.no_grad():
        outputs = decoder.forward_features(features)
        (up,) = upsampled
        assert up.is_contiguous(memory_format=torch.channels_last)
        monkeypatch.setattr(pixel_decoder_module, "canonical_strides", lambda x: x)
        as_left = decoder.forward_features(features)
    assert not upsampled[1].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(outputs[0], as_left[0])
    for a, b in zip(outputs[2], as_left[2]):
        assert torch.equal(a, b)


def test_canonical_strides_only_restrides_one_channels_last_image():
    tokens = torch.randn(2, 6 * 4, 8)
    for batch in (1, 2):
        # (N, H*W, C) tokens as the encoder leaves them: a channels-last (N, C, H, W) view
        x = tokens[:batch].transpose(1, 2).reshape(batch, 8, 6, 4)
        y = canonical_strides(x)
        assert torch.equal(y, x) and y.data_ptr() == x.data_ptr()
        assert y.is_contiguous(memory_format=torch.channels_last)
    nchw = torch.randn(1, 8, 6, 4)
    assert canonical_strides(nchw) is nchw
