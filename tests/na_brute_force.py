"""A brute-force neighborhood-attention oracle, independent of the package's implementations.

Windows are enumerated with plain Python loops straight from the semantics (a token's
dilation group is the list range(g, L, d); its window is k consecutive members of that list,
shifted inward at the borders), one axis at a time; a token's neighbourhood is the product of
its per-axis windows, row-major. Each query's logits and output are then plain dot products
with its gathered neighbours (in chunks of queries, so that large maps stay within memory), and
gradients come from autograd through those gathers and products.
"""

import torch

CHUNK = 512  # queries per gather: bounds the (chunk, K, dim) temporaries


def axis_windows(length, kernel, dilation):
    """Per token: (neighbor indices, bias indices) on one axis."""
    windows = []
    for i in range(length):
        members = list(range(i % dilation, length, dilation))
        pos = members.index(i)
        start = min(max(pos - kernel // 2, 0), len(members) - kernel)
        neighbors = [members[start + j] for j in range(kernel)]
        bias = [start + j - pos + kernel - 1 for j in range(kernel)]
        windows.append((neighbors, bias))
    return windows


def windows(spatial, kernel, dilation):
    """(tokens, K) flat neighbor indices and (tokens, K, rank) per-axis bias indices, tokens
    and window positions both row-major."""
    rank = len(spatial)
    neighbors = torch.zeros((1,) * (2 * rank), dtype=torch.int64)
    bias = []
    for a, (length, k, d) in enumerate(zip(spatial, kernel, dilation)):
        per_axis = axis_windows(length, k, d)
        shape = [1] * (2 * rank)
        shape[a], shape[rank + a] = length, k  # token axis a, window axis a
        index = torch.tensor([n for n, _ in per_axis]).reshape(shape)
        neighbors = neighbors * length + index
        bias.append(torch.tensor([b for _, b in per_axis]).reshape(shape))
    full = (*spatial, *kernel)
    tokens, size = torch.Size(spatial).numel(), torch.Size(kernel).numel()
    neighbors = neighbors.expand(full).reshape(tokens, size)
    bias = torch.stack([b.expand(full).reshape(tokens, size) for b in bias], dim=-1)
    return neighbors, bias


def _flat(x):
    """(B, *spatial, heads, D) -> (B, heads, tokens, D)."""
    return x.reshape(x.shape[0], -1, x.shape[-2], x.shape[-1]).transpose(1, 2)


def qk(query, key, kernel, dilation, rpb=None):
    spatial = tuple(query.shape[1:-2])
    size = torch.Size(kernel).numel()
    if query.numel() == 0:
        return query.new_zeros(*query.shape[:-1], size)
    neighbors, bias = windows(spatial, kernel, dilation)
    q, k = _flat(query), _flat(key)  # (B, heads, T, D)
    chunks = []
    for start in range(0, neighbors.shape[0], CHUNK):
        rows = neighbors[start : start + CHUNK]  # (t, K)
        keys = k[:, :, rows]  # (B, heads, t, K, D)
        chunks.append((q[:, :, start : start + CHUNK, None, :] * keys).sum(-1))
    logits = torch.cat(chunks, dim=2)  # (B, heads, T, K)
    if rpb is not None:
        index = (slice(None),) + tuple(bias[..., a] for a in range(len(kernel)))
        logits = logits + rpb[index]  # rpb[:, i, j] -> (heads, T, K)
    return logits.permute(0, 2, 1, 3).reshape(*query.shape[:-1], size)


def av(attn, value, kernel, dilation):
    spatial = tuple(value.shape[1:-2])
    if value.numel() == 0 or attn.numel() == 0:
        return value.new_zeros(value.shape)
    neighbors, _ = windows(spatial, kernel, dilation)
    weights, v = _flat(attn), _flat(value)  # (B, heads, T, K), (B, heads, T, D)
    chunks = []
    for start in range(0, neighbors.shape[0], CHUNK):
        rows = neighbors[start : start + CHUNK]
        values = v[:, :, rows]  # (B, heads, t, K, D)
        chunks.append((weights[:, :, start : start + CHUNK, :, None] * values).sum(-2))
    out = torch.cat(chunks, dim=2)
    return out.transpose(1, 2).reshape(value.shape)


def na(query, key, value, kernel, dilation, rpb=None, scale=None):
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    attn = qk(query * scale, key, kernel, dilation, rpb).softmax(-1)
    return av(attn, value, kernel, dilation)
