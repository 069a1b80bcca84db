"""DiNAT / NAT checkpoints: the official ImageNet release (bare state dicts with
`levels.{i}.blocks.{j}...` names, the names of our DiNAT module) and Hugging Face's
`DinatModel` / `DinatForImageClassification` / `DinatBackbone` (separate q/k/v), converted to
the official names; relative-positional-bias resizing for another kernel size.

Files are read with `load_plain_data` (safe_load.py): plain data only, never arbitrary
pickled objects; `.pkl` files of the DiNAT release's converter (`{"model": ..., "__author__":
"third_party", "matching_heuristics": True}`) included.
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch
import torch.nn.functional as F

from .safe_load import load_plain_data

_WRAPPERS = ("model", "state_dict", "model_state")


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a .pth/.pt/.bin/.pkl checkpoint (unwrapping {"model": ...} /
    {"state_dict": ...}; numpy arrays become tensors). Raises FileNotFoundError for a missing
    file, `UnsafeCheckpointError` (a ValueError) for pickled objects, ValueError for anything
    else that is not a state dict."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    data = load_plain_data(path)
    for key in _WRAPPERS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if isinstance(data, dict):
        data = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in data.items()}
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(data).__name__}")
    return dict(data)


# Hugging Face name -> official name, applied in order on the name without its model prefix.
_HF_RULES = [
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^embeddings\.norm\.", "patch_embed.norm."),
    (r"^encoder\.levels\.(\d+)\.downsample\.", r"levels.\1.downsample."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.self\.rpb$", ".attn.rpb"),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head."),
]
_HF_QKV = re.compile(r"^(.*)\.attention\.self\.(query|key|value)\.(weight|bias)$")
_HF_OUT_NORM = re.compile(r"^hidden_states_norms\.stage(\d+)\.(weight|bias)$")


def is_hugging_face(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(
        ".layernorm_before." in k or k.startswith(("embeddings.", "dinat.embeddings."))
        for k in state_dict
    )


def convert_to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face DiNAT names -> official names (q/k/v concatenated into qkv); official
    state dicts pass through unchanged."""
    if not is_hugging_face(state_dict):
        return dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for name, tensor in state_dict.items():
        name = re.sub(r"^(dinat|model)\.", "", name)
        name = re.sub(r"^encoder\.levels\.(\d+)\.layers\.(\d+)\.", r"levels.\1.blocks.\2.", name)
        match = _HF_QKV.match(name)
        if match:
            qkv.setdefault((match.group(1), match.group(3)), {})[match.group(2)] = tensor
            continue
        match = _HF_OUT_NORM.match(name)
        if match:  # DinatBackbone: stage1..stage4 are levels 0..3
            out[f"norm{int(match.group(1)) - 1}.{match.group(2)}"] = tensor
            continue
        if name.endswith(".layer_scale_parameters"):
            out[name.replace(".layer_scale_parameters", ".gamma1")] = tensor[0]
            out[name.replace(".layer_scale_parameters", ".gamma2")] = tensor[1]
            continue
        for pattern, replacement in _HF_RULES:
            name = re.sub(pattern, replacement, name)
        out[name] = tensor
    for (prefix, kind), parts in qkv.items():
        missing = {"query", "key", "value"} - set(parts)
        if missing:
            raise ValueError(f"{prefix}: Hugging Face checkpoint lacks {sorted(missing)} {kind}")
        out[f"{prefix}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def resize_rpb(rpb: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(heads, 2k-1, 2k-1) bias resized to (heads, 2K-1, 2K-1) by bicubic interpolation."""
    size = 2 * kernel_size - 1
    if rpb.shape[-1] == size and rpb.shape[-2] == size:
        return rpb
    resized = F.interpolate(
        rpb[None].float(), size=(size, size), mode="bicubic", align_corners=False
    )
    return resized[0].to(rpb.dtype)


def official_backbone_state_dict(
    state_dict: dict[str, torch.Tensor],
    model_state: dict[str, torch.Tensor],
    report: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Official or Hugging Face weights adapted to a backbone whose state dict is
    `model_state`: classifier and final-norm keys dropped, RPBs resized to the backbone's
    kernel size. Every dropped or resized key is appended to `report`."""
    report = report if report is not None else []
    adapted = {}
    for name, tensor in convert_to_official(state_dict).items():
        if name not in model_state:
            report.append(f"dropped {name} {tuple(tensor.shape)} (not in the backbone)")
            continue
        target = model_state[name]
        if name.endswith(".rpb") and tensor.shape != target.shape:
            kernel = (target.shape[-1] + 1) // 2
            report.append(
                f"resized {name} {tuple(tensor.shape)} -> {tuple(target.shape)} (bicubic)"
            )
            tensor = resize_rpb(tensor, kernel)
        if tensor.shape != target.shape:
            raise ValueError(
                f"{name}: checkpoint shape {tuple(tensor.shape)} does not match the model's "
                f"{tuple(target.shape)}; is the config the checkpoint's variant?"
            )
        adapted[name] = tensor
    if state_dict and not adapted:
        raise ValueError(
            f"none of the checkpoint's {len(state_dict)} tensors is a weight of this backbone "
            f"(keys such as {sorted(state_dict)[:4]}); is it an official or Hugging Face "
            "DiNAT / NAT ImageNet checkpoint?"
        )
    return adapted
