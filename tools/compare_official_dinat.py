#!/usr/bin/env python
"""Runs the official D2 DiNAT backbone (SHI-Labs/Neighborhood-Attention-Transformer,
`mask2former/dinat.py`) beside ours on images whose feature maps are smaller than
kernel x dilation at some level, and prints how far the outputs differ.

The official backbone builds NATTEN's `NeighborhoodAttention2D` (pad to kernel x dilation,
attend, crop: the rule this project follows). This script loads NATTEN's module file as it is
(`natten2d.py` of NATTEN 0.14, the version DiNAT was released with) and substitutes our ops for
the two low-level NATTEN calls it makes (`natten2dqkrpb`, `natten2dav`, in NATTEN's
heads-first layout), which are tested equal to NATTEN's elsewhere; if timm is not installed,
timm's DropPath and trunc_normal_ come from this project and torch. Neither file is part of
this project: give their paths.

    python tools/compare_official_dinat.py \\
        --official-dinat Neighborhood-Attention-Transformer/mask2former/dinat.py \\
        --natten2d NATTEN/src/natten/natten2d.py      # NATTEN v0.14.x

Both backbones get the same weights (ours, randomly initialised, loaded strictly into the
official one) and run in float64; exit status 1 when an output differs by more than 1e-9.
tests/modeling/test_official_dinat.py runs the same comparison when the environment variables
DINAT_M2F_OFFICIAL_DINAT and DINAT_M2F_NATTEN2D name these files.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import types

import torch

# (kernel, dilations per level): DiNAT's alternating dilations at the largest values the
# release uses, so that most maps of small images are smaller than kernel x dilation
SETTINGS = {
    "k7": (7, [[1, 8], [1, 4], [1, 2], [1, 1]]),
    "k11": (11, [[1, 14], [1, 7], [1, 3], [1, 1]]),
}
SIZES = [(1, 1), (3, 5), (17, 9), (31, 64), (16, 300), (96, 33), (130, 70)]
TOLERANCE = 1e-9


def _natten_shim() -> types.ModuleType:
    """natten.functional with NATTEN 0.14's two calls computed by our ops (heads-first)."""
    from dinat_m2f.layers import na2d_av, na2d_qk

    def natten2dqkrpb(query, key, rpb, kernel_size, dilation):
        q, k = (x.permute(0, 2, 3, 1, 4) for x in (query, key))
        logits = na2d_qk(q, k, kernel_size, dilation=dilation, rpb=rpb)
        return logits.permute(0, 3, 1, 2, 4)

    def natten2dav(attn, value, kernel_size, dilation):
        a, v = (x.permute(0, 2, 3, 1, 4) for x in (attn, value))
        return na2d_av(a, v, kernel_size, dilation=dilation).permute(0, 3, 1, 2, 4)

    functional = types.ModuleType("natten.functional")
    functional.natten2dqkrpb, functional.natten2dav = natten2dqkrpb, natten2dav
    return functional


def _timm_shim() -> None:
    """timm.models.layers.{DropPath, trunc_normal_} when timm is not installed."""
    try:
        import timm.models.layers  # noqa: F401

        return
    except ImportError:
        pass
    from dinat_m2f.layers import DropPath

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath, layers.trunc_normal_ = DropPath, torch.nn.init.trunc_normal_
    timm, models = types.ModuleType("timm"), types.ModuleType("timm.models")
    timm.models, models.layers = models, layers
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})


def _load(name: str, path: str, package: str | None = None) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if package:
        module.__package__ = package
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_official_backbone(official_dinat: str, natten2d: str) -> type:
    """The official `D2DiNAT` class, on NATTEN's module with our ops underneath. It is not
    registered in detectron2's BACKBONE_REGISTRY (ours is)."""
    import detectron2.modeling as d2_modeling
    from detectron2.utils.registry import Registry

    for path in (official_dinat, natten2d):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist")
    natten = types.ModuleType("natten")  # no `context`: the official code's pre-0.17 path
    natten.__path__ = []
    natten.functional = sys.modules["natten.functional"] = _natten_shim()
    sys.modules["natten"] = natten
    natten.NeighborhoodAttention2D = _load(
        "natten.natten2d", natten2d, "natten"
    ).NeighborhoodAttention2D
    _timm_shim()
    registry = d2_modeling.BACKBONE_REGISTRY
    d2_modeling.BACKBONE_REGISTRY = Registry("OFFICIAL_BACKBONE")  # a private one
    try:
        return _load("official_d2_dinat", official_dinat).D2DiNAT
    finally:
        d2_modeling.BACKBONE_REGISTRY = registry


def tiny_cfg(kernel: int, dilations: list[list[int]]):
    from dinat_m2f.config import default_cfg

    cfg = default_cfg()
    c = cfg.MODEL.DINAT
    c.EMBED_DIM, c.DEPTHS, c.NUM_HEADS = 32, [2, 2, 2, 2], [1, 2, 4, 8]
    c.KERNEL_SIZE, c.DILATIONS, c.DROP_PATH_RATE = kernel, dilations, 0.0
    return cfg


def compare(official_dinat: str, natten2d: str, sizes=SIZES) -> list[tuple[str, tuple, str, float]]:
    """(setting, image size, feature, max |official - ours|) for every output."""
    from detectron2.layers import ShapeSpec

    from dinat_m2f.modeling.backbone import D2DiNAT

    official_class = load_official_backbone(official_dinat, natten2d)
    rows = []
    for name, (kernel, dilations) in SETTINGS.items():
        cfg = tiny_cfg(kernel, dilations)
        torch.manual_seed(0)
        ours = D2DiNAT(cfg, ShapeSpec(channels=3)).double().eval()
        official = official_class(cfg, ShapeSpec(channels=3)).double()
        official.eval()  # (its train() returns None)
        official.load_state_dict(ours.state_dict(), strict=True)
        for size in sizes:
            image = torch.randn(1, 3, *size, dtype=torch.float64)
            with torch.no_grad():
                a, b = official(image), ours(image)
            assert a.keys() == b.keys(), (a.keys(), b.keys())
            for feature in a:
                assert a[feature].shape == b[feature].shape, (feature, a[feature].shape)
                rows.append((name, size, feature, (a[feature] - b[feature]).abs().max().item()))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-dinat", required=True, help="mask2former/dinat.py")
    parser.add_argument("--natten2d", required=True, help="natten/natten2d.py of NATTEN 0.14")
    args = parser.parse_args(argv)
    try:
        rows = compare(args.official_dinat, args.natten2d)
    except FileNotFoundError as error:
        parser.error(str(error))
    print("| setting | image | feature | map | max abs difference |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for name, size, feature, diff in rows:
        stride = 2 ** (int(feature[-1]))
        kernel, dilations = SETTINGS[name]
        level = int(feature[-1]) - 2
        side = [-(-s // stride) for s in size]  # ceil: the stride-2 convolutions with padding
        print(
            f"| {name}, dilations {dilations[level]} | {size[0]}x{size[1]} | {feature} | "
            f"{side[0]}x{side[1]} (kernel x dilation {kernel * max(dilations[level])}) "
            f"| {diff:.1e} |"
        )
        worst = max(worst, diff)
    print(f"largest difference {worst:.1e} over {len(rows)} outputs (tolerance {TOLERANCE:.0e})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
