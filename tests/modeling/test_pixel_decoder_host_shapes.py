"""The pixel decoder's deformable encoder keeps the level layout (spatial shapes, level start
indices) on the host, so neither the MSDeformAttn op (which reads it on the host) nor the
reference points read a device tensor back: no GPU synchronisation per encoder layer.

Checked on the meta device, where any read of a tensor's values fails: the whole encoder runs
with meta activations and host shapes."""

import warnings

import torch

from dinat_m2f.modeling.pixel_decoder.ms_deform_attn_encoder import (
    MSDeformAttnTransformerEncoderOnly,
)


def encoder():
    torch.manual_seed(0)
    return MSDeformAttnTransformerEncoderOnly(
        d_model=32, nhead=4, num_encoder_layers=2, dim_feedforward=64, num_feature_levels=3
    )


def test_encoder_returns_host_level_layout():
    sizes = [(4, 6), (8, 12), (16, 24)]
    srcs = [torch.randn(2, 32, h, w) for h, w in sizes]
    pos = [torch.randn(2, 32, h, w) for h, w in sizes]
    memory, shapes, starts = encoder()(srcs, pos)
    assert memory.shape == (2, sum(h * w for h, w in sizes), 32)
    assert shapes.device.type == "cpu" and starts.device.type == "cpu"
    assert shapes.tolist() == [list(s) for s in sizes]
    assert starts.tolist() == [0, 24, 24 + 96]


def test_encoder_never_reads_device_values():
    module = encoder().to("meta")
    sizes = [(3, 5), (6, 10), (12, 20)]
    srcs = [torch.empty(1, 32, h, w, device="meta") for h, w in sizes]
    pos = [torch.empty(1, 32, h, w, device="meta") for h, w in sizes]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no native kernels for meta tensors: the twin runs
        memory, shapes, _ = module(srcs, pos)
    assert memory.device.type == "meta"
    assert memory.shape == (1, sum(h * w for h, w in sizes), 32)
    assert shapes.device.type == "cpu"
