"""A brute-force neighborhood-attention oracle, independent of the package's implementations.

Windows are enumerated with plain Python loops straight from the semantics (a token's
dilation group is the list range(g, L, d); its window is k consecutive members of that list,
shifted inward at the borders), and attention is computed with dense token-by-token
matrices, so gradients come from autograd through dense matmuls.
"""

import itertools

import torch


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
    """(tokens, K) flat neighbor indices and (tokens, K, rank) per-axis bias indices."""
    axes = [axis_windows(L, k, d) for L, k, d in zip(spatial, kernel, dilation)]
    neighbors, bias = [], []
    for coords in itertools.product(*(range(L) for L in spatial)):
        per_axis = [axes[a][c] for a, c in enumerate(coords)]
        token_neighbors, token_bias = [], []
        for combo in itertools.product(*(range(k) for k in kernel)):
            flat = 0
            for a, j in enumerate(combo):
                flat = flat * spatial[a] + per_axis[a][0][j]
            token_neighbors.append(flat)
            token_bias.append([per_axis[a][1][j] for a, j in enumerate(combo)])
        neighbors.append(token_neighbors)
        bias.append(token_bias)
    return torch.tensor(neighbors), torch.tensor(bias)


def _flat(x):
    """(B, *spatial, heads, D) -> (B, heads, tokens, D)."""
    return x.reshape(x.shape[0], -1, x.shape[-2], x.shape[-1]).transpose(1, 2)


def qk(query, key, kernel, dilation, rpb=None):
    spatial = tuple(query.shape[1:-2])
    neighbors, bias = windows(spatial, kernel, dilation)
    dense = _flat(query) @ _flat(key).transpose(-1, -2)  # (B, heads, T, T)
    tokens = torch.arange(neighbors.shape[0])[:, None]
    logits = dense[:, :, tokens, neighbors]  # (B, heads, T, K)
    if rpb is not None:
        index = (slice(None),) + tuple(bias[..., a] for a in range(len(kernel)))
        logits = logits + rpb[index]  # rpb[:, i, j] -> (heads, T, K)
    return logits.permute(0, 2, 1, 3).reshape(*query.shape[:-1], neighbors.shape[1])


def av(attn, value, kernel, dilation):
    spatial = tuple(value.shape[1:-2])
    neighbors, _ = windows(spatial, kernel, dilation)
    batch, heads, tokens = value.shape[0], value.shape[-2], neighbors.shape[0]
    weights = _flat(attn)  # (B, heads, T, K)
    dense = torch.zeros(batch, heads, tokens, tokens, dtype=attn.dtype)
    rows = torch.arange(tokens)[:, None].expand_as(neighbors)
    dense[:, :, rows, neighbors] = weights  # a window never holds a key twice
    out = dense @ _flat(value)
    return out.transpose(1, 2).reshape(value.shape)


def na(query, key, value, kernel, dilation, rpb=None, scale=None):
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    attn = qk(query * scale, key, kernel, dilation, rpb).softmax(-1)
    return av(attn, value, kernel, dilation)
