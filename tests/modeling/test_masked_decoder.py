"""The masked transformer decoder's cross-attention masks: a query whose mask blocks every key
at a scale attends to all of them instead (Mask2Former's), other queries keep their masks; one
image's mask is shared by the heads, several images get one per (image, head)."""

import torch

from dinat_m2f.modeling.transformer_decoder.mask2former_transformer_decoder import (
    MultiScaleMaskedTransformerDecoder,
)

QUERIES, HEADS = 4, 2


def small_decoder(dec_layers=1):
    torch.manual_seed(0)
    return MultiScaleMaskedTransformerDecoder(
        in_channels=8,
        num_classes=3,
        hidden_dim=8,
        num_queries=QUERIES,
        nheads=HEADS,
        dim_feedforward=16,
        dec_layers=dec_layers,
        pre_norm=False,
        mask_dim=8,
        enforce_input_project=False,
    ).eval()


def masks_seen(decoder):
    """The memory_mask of every cross-attention call, in order."""
    seen = []
    for layer in decoder.transformer_cross_attention_layers:
        layer.register_forward_pre_hook(
            lambda module, args, kwargs: seen.append(kwargs["memory_mask"].clone()),
            with_kwargs=True,
        )
    return seen


def test_a_query_blocked_everywhere_attends_everywhere():
    decoder = small_decoder()
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
    seen = masks_seen(decoder)
    with torch.no_grad():
        decoder(maps, torch.randn(1, 8, 4, 4))
    (mask,) = seen
    assert not mask[:, 0].any()  # blocked everywhere -> nowhere
    assert torch.equal(mask[:, 1:], blocked[:, 1:])  # the others unchanged


def pyramid(batch, seed):
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randn(batch, 8, side, side, generator=g) for side in (2, 3, 4)]
    return maps, torch.randn(batch, 8, 6, 6, generator=g) * 3


def test_one_image_shares_its_mask_across_heads_with_the_per_head_results():
    decoder = small_decoder(dec_layers=4)
    seen = masks_seen(decoder)
    maps, mask_features = pyramid(1, seed=1)
    with torch.no_grad():
        shared = decoder(maps, mask_features)
    assert [tuple(m.shape) for m in seen] == [(QUERIES, n) for n in (4, 9, 16, 4)]
    assert any(m.any() and not m.all() for m in seen)  # masks that block some keys

    # the same decoder given the per-head copies (N * heads, Q, h * w) of each mask
    real_heads = decoder.forward_prediction_heads

    def per_head(output, features, size):
        outputs_class, outputs_mask, attn_mask = real_heads(output, features, size)
        return outputs_class, outputs_mask, attn_mask.expand(HEADS, -1, -1).clone()

    decoder.forward_prediction_heads = per_head
    with torch.no_grad():
        repeated = decoder(maps, mask_features)
    assert all(m.dim() == 3 for m in seen[4:])
    assert torch.equal(shared["pred_logits"], repeated["pred_logits"])
    assert torch.equal(shared["pred_masks"], repeated["pred_masks"])


def test_several_images_get_one_mask_per_image_and_head():
    decoder = small_decoder(dec_layers=2)
    seen = masks_seen(decoder)
    maps, mask_features = pyramid(2, seed=2)
    with torch.no_grad():
        decoder(maps, mask_features)
        for image in range(2):
            decoder([m[image : image + 1] for m in maps], mask_features[image : image + 1])
    batched, alone = seen[:2], [seen[2:4], seen[4:6]]
    for layer, mask in enumerate(batched):
        assert mask.shape[0] == 2 * HEADS
        for image in range(2):
            for head in range(HEADS):
                # image-major: row image * heads + head
                assert torch.equal(mask[image * HEADS + head], alone[image][layer])
    assert not torch.equal(alone[0][1], alone[1][1])  # the images' masks differ
