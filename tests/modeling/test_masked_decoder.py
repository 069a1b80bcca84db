"""The masked transformer decoder's rule for empty masks: a query whose mask blocks every key at
a scale attends to all of them instead (Mask2Former's), other queries keep their masks."""

import torch

from dinat_m2f.modeling.transformer_decoder.mask2former_transformer_decoder import (
    MultiScaleMaskedTransformerDecoder,
)

QUERIES, HEADS = 4, 2


def test_a_query_blocked_everywhere_attends_everywhere():
    torch.manual_seed(0)
    decoder = MultiScaleMaskedTransformerDecoder(
        in_channels=8,
        num_classes=3,
        hidden_dim=8,
        num_queries=QUERIES,
        nheads=HEADS,
        dim_feedforward=16,
        dec_layers=1,
        pre_norm=False,
        mask_dim=8,
        enforce_input_project=False,
    ).eval()
    maps = [torch.randn(1, 8, side, side) for side in (2, 3, 4)]
    # the first level's mask: query 0 blocked at every key, query 1 at all but one, per head
    blocked = torch.zeros(HEADS, QUERIES, 4, dtype=torch.bool)
    blocked[:, 0] = True
    blocked[:, 1, :3] = True
    real_heads = decoder.forward_prediction_heads
    calls = []

    def heads(output, mask_features, size):
        outputs_class, outputs_mask, attn_mask = real_heads(output, mask_features, size)
        calls.append(size)
        return outputs_class, outputs_mask, blocked.clone() if len(calls) == 1 else attn_mask

    decoder.forward_prediction_heads = heads
    seen = []
    decoder.transformer_cross_attention_layers[0].register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["memory_mask"].clone()), with_kwargs=True
    )
    with torch.no_grad():
        decoder(maps, torch.randn(1, 8, 4, 4))
    (mask,) = seen
    assert not mask[:, 0].any()  # blocked everywhere -> nowhere
    assert torch.equal(mask[:, 1:], blocked[:, 1:])  # the others unchanged
