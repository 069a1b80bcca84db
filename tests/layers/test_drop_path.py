"""DropPath drops whole samples in training, rescales the kept ones, and is the identity in eval."""

import pytest
import torch

from dinat_m2f.layers import DropPath


def test_drops_whole_samples_and_rescales_the_rest():
    torch.manual_seed(0)
    layer = DropPath(0.25).train()
    x = torch.ones(4000, 3, 5)
    out = layer(x)
    per_sample = out.flatten(1)
    kept = (per_sample != 0).all(1)
    assert ((per_sample == 0).all(1) | kept).all()  # all or nothing per sample
    assert torch.allclose(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.75))
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    assert torch.equal(layer.eval()(x), x)


def test_rejects_bad_rates():
    with pytest.raises(ValueError, match=r"DropPath: drop_prob must be in \[0, 1\), got 1.0"):
        DropPath(1.0)
