"""The DiNAT detection release's COCO checkpoints (mmdetection 2.x `MaskRCNN` / `CascadeRCNN`
with a NAT / DiNAT / DiNAT_s backbone and FPN) in this project's detectron2 models
(`build_{dinat,nat,dinat_s}_fpn_backbone` + `StandardROIHeads` / `StageMaskCascadeROIHeads`).

Names, mmdetection -> detectron2 (`{s}` is the cascade stage, absent for Mask R-CNN; FPN
index i is the i-th of MODEL.FPN.IN_FEATURES, level k = 2 + i for res2..res5):

| mmdetection | detectron2 |
|---|---|
| `backbone.*` (DiNAT_s: `backbone.layers.{i}.*`) | `backbone.bottom_up.*` (`...levels.{i}.*`) |
| `neck.lateral_convs.{i}.conv.*` | `backbone.fpn_lateral{k}.*` |
| `neck.fpn_convs.{i}.conv.*` | `backbone.fpn_output{k}.*` |
| `rpn_head.rpn_conv` | `proposal_generator.rpn_head.conv` |
| `rpn_head.rpn_cls / rpn_reg` | `proposal_generator.rpn_head.objectness_logits / anchor_deltas` |
| `roi_head.bbox_head.{s}.shared_convs.{j}.conv` | `roi_heads.box_head.{s}.conv{j+1}` |
| `roi_head.bbox_head.{s}.shared_convs.{j}.bn` | `roi_heads.box_head.{s}.conv{j+1}.norm` |
| `roi_head.bbox_head.{s}.shared_fcs.{j}` | `roi_heads.box_head.{s}.fc{j+1}` |
| `roi_head.bbox_head.{s}.fc_cls / fc_reg` | `roi_heads.box_predictor.{s}.cls_score / bbox_pred` |
| `roi_head.mask_head.{s}.convs.{j}.conv` | `roi_heads.mask_head.{s}.mask_fcn{j+1}` |
| `roi_head.mask_head.{s}.upsample / conv_logits` | `roi_heads.mask_head.{s}.deconv / predictor` |

Class order (COCO category ids ascending, background last in `fc_cls`), anchor order (one
size per level, aspect ratios 0.5 / 1 / 2 as height / width) and box-delta layout are the
same in both libraries, so tensors are copied unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

MMDET_PREFIXES = ("backbone.", "neck.", "rpn_head.", "roi_head.")
_NORM_NAMES = ("bn", "gn", "ln", "norm")  # mmcv ConvModule's norm names by norm type


def _fpn_rules(levels: list[int], inverse: bool) -> list[tuple[str, Callable]]:
    def lateral(match, kind):  # mmdet index -> detectron2 level
        index = int(match[1])
        if index >= len(levels):
            return None
        return f"backbone.fpn_{kind}{levels[index]}.{match[2]}"

    def level_index(match, kind):  # detectron2 level -> mmdet index
        level = int(match[1])
        if level not in levels:
            return None
        return f"neck.{kind}.{levels.index(level)}.conv.{match[2]}"

    if inverse:
        return [
            (r"^backbone\.fpn_lateral(\d+)\.(.+)$", lambda m: level_index(m, "lateral_convs")),
            (r"^backbone\.fpn_output(\d+)\.(.+)$", lambda m: level_index(m, "fpn_convs")),
        ]
    return [
        (r"^neck\.lateral_convs\.(\d+)\.conv\.(.+)$", lambda m: lateral(m, "lateral")),
        (r"^neck\.fpn_convs\.(\d+)\.conv\.(.+)$", lambda m: lateral(m, "output")),
    ]


def _stage(match_group: str | None) -> str:
    return match_group or ""


_NORM = "(?:" + "|".join(_NORM_NAMES) + ")"

# mmdetection -> detectron2, after the backbone and FPN rules; the first match wins
_HEAD_RULES: list[tuple[str, Callable]] = [
    (r"^rpn_head\.rpn_conv\.(.+)$", lambda m: f"proposal_generator.rpn_head.conv.{m[1]}"),
    (
        r"^rpn_head\.rpn_cls\.(.+)$",
        lambda m: f"proposal_generator.rpn_head.objectness_logits.{m[1]}",
    ),
    (r"^rpn_head\.rpn_reg\.(.+)$", lambda m: f"proposal_generator.rpn_head.anchor_deltas.{m[1]}"),
    (
        rf"^roi_head\.bbox_head\.(\d+\.)?shared_convs\.(\d+)\.{_NORM}\.(.+)$",
        lambda m: f"roi_heads.box_head.{_stage(m[1])}conv{int(m[2]) + 1}.norm.{m[3]}",
    ),
    (
        r"^roi_head\.bbox_head\.(\d+\.)?shared_convs\.(\d+)\.conv\.(.+)$",
        lambda m: f"roi_heads.box_head.{_stage(m[1])}conv{int(m[2]) + 1}.{m[3]}",
    ),
    (
        r"^roi_head\.bbox_head\.(\d+\.)?shared_fcs\.(\d+)\.(.+)$",
        lambda m: f"roi_heads.box_head.{_stage(m[1])}fc{int(m[2]) + 1}.{m[3]}",
    ),
    (
        r"^roi_head\.bbox_head\.(\d+\.)?fc_cls\.(.+)$",
        lambda m: f"roi_heads.box_predictor.{_stage(m[1])}cls_score.{m[2]}",
    ),
    (
        r"^roi_head\.bbox_head\.(\d+\.)?fc_reg\.(.+)$",
        lambda m: f"roi_heads.box_predictor.{_stage(m[1])}bbox_pred.{m[2]}",
    ),
    (
        rf"^roi_head\.mask_head\.(\d+\.)?convs\.(\d+)\.{_NORM}\.(.+)$",
        lambda m: f"roi_heads.mask_head.{_stage(m[1])}mask_fcn{int(m[2]) + 1}.norm.{m[3]}",
    ),
    (
        r"^roi_head\.mask_head\.(\d+\.)?convs\.(\d+)\.conv\.(.+)$",
        lambda m: f"roi_heads.mask_head.{_stage(m[1])}mask_fcn{int(m[2]) + 1}.{m[3]}",
    ),
    (
        r"^roi_head\.mask_head\.(\d+\.)?upsample\.(.+)$",
        lambda m: f"roi_heads.mask_head.{_stage(m[1])}deconv.{m[2]}",
    ),
    (
        r"^roi_head\.mask_head\.(\d+\.)?conv_logits\.(.+)$",
        lambda m: f"roi_heads.mask_head.{_stage(m[1])}predictor.{m[2]}",
    ),
]


def _inverse_head_rules(norm_name: str) -> list[tuple[str, Callable]]:
    """detectron2 -> mmdetection, written from the release's module names (ConvFCBBoxHead,
    Shared2FCBBoxHead, FCNMaskHead, RPNHead); `norm_name` is mmcv's name of the box head's
    norm layer ("bn" for the release's SyncBN)."""
    return [
        (r"^proposal_generator\.rpn_head\.conv\.(.+)$", lambda m: f"rpn_head.rpn_conv.{m[1]}"),
        (
            r"^proposal_generator\.rpn_head\.objectness_logits\.(.+)$",
            lambda m: f"rpn_head.rpn_cls.{m[1]}",
        ),
        (
            r"^proposal_generator\.rpn_head\.anchor_deltas\.(.+)$",
            lambda m: f"rpn_head.rpn_reg.{m[1]}",
        ),
        (
            r"^roi_heads\.box_head\.(\d+\.)?conv(\d+)\.norm\.(.+)$",
            lambda m: (
                f"roi_head.bbox_head.{_stage(m[1])}shared_convs.{int(m[2]) - 1}.{norm_name}.{m[3]}"
            ),
        ),
        (
            r"^roi_heads\.box_head\.(\d+\.)?conv(\d+)\.(.+)$",
            lambda m: f"roi_head.bbox_head.{_stage(m[1])}shared_convs.{int(m[2]) - 1}.conv.{m[3]}",
        ),
        (
            r"^roi_heads\.box_head\.(\d+\.)?fc(\d+)\.(.+)$",
            lambda m: f"roi_head.bbox_head.{_stage(m[1])}shared_fcs.{int(m[2]) - 1}.{m[3]}",
        ),
        (
            r"^roi_heads\.box_predictor\.(\d+\.)?cls_score\.(.+)$",
            lambda m: f"roi_head.bbox_head.{_stage(m[1])}fc_cls.{m[2]}",
        ),
        (
            r"^roi_heads\.box_predictor\.(\d+\.)?bbox_pred\.(.+)$",
            lambda m: f"roi_head.bbox_head.{_stage(m[1])}fc_reg.{m[2]}",
        ),
        (
            r"^roi_heads\.mask_head\.(\d+\.)?mask_fcn(\d+)\.norm\.(.+)$",
            lambda m: f"roi_head.mask_head.{_stage(m[1])}convs.{int(m[2]) - 1}.{norm_name}.{m[3]}",
        ),
        (
            r"^roi_heads\.mask_head\.(\d+\.)?mask_fcn(\d+)\.(.+)$",
            lambda m: f"roi_head.mask_head.{_stage(m[1])}convs.{int(m[2]) - 1}.conv.{m[3]}",
        ),
        (
            r"^roi_heads\.mask_head\.(\d+\.)?deconv\.(.+)$",
            lambda m: f"roi_head.mask_head.{_stage(m[1])}upsample.{m[2]}",
        ),
        (
            r"^roi_heads\.mask_head\.(\d+\.)?predictor\.(.+)$",
            lambda m: f"roi_head.mask_head.{_stage(m[1])}conv_logits.{m[2]}",
        ),
    ]


def _apply(rules, name: str) -> str | None:
    for pattern, replace in rules:
        match = re.match(pattern, name)
        if match:
            return replace(match)
    return None


def fpn_levels(model_state: dict[str, torch.Tensor]) -> list[int]:
    """The FPN levels k of a detectron2 model's `backbone.fpn_lateral{k}` convolutions."""
    return sorted(
        {int(m[1]) for k in model_state if (m := re.match(r"^backbone\.fpn_lateral(\d+)\.", k))}
    )


def mmdet_to_detectron2_name(name: str, levels: list[int]) -> str | None:
    """The detectron2 name of an mmdetection key, or None when no rule knows it."""
    if name.startswith("backbone."):
        name = re.sub(r"^backbone\.layers\.(\d+)\.", r"backbone.levels.\1.", name)  # DiNAT_s
        return "backbone.bottom_up." + name[len("backbone.") :]
    return _apply(_fpn_rules(levels, inverse=False) + _HEAD_RULES, name)


def detectron2_to_mmdet_name(
    name: str, levels: list[int], *, dinat_s: bool = False, norm_name: str = "bn"
) -> str | None:
    """The mmdetection name of a detectron2 key (the inverse of `mmdet_to_detectron2_name`),
    or None for a key the release's models do not have."""
    if name.startswith("backbone.bottom_up."):
        name = "backbone." + name[len("backbone.bottom_up.") :]
        if dinat_s:
            name = re.sub(r"^backbone\.levels\.(\d+)\.", r"backbone.layers.\1.", name)
        return name
    return _apply(_fpn_rules(levels, inverse=True) + _inverse_head_rules(norm_name), name)


def to_mmdet_layout(
    model_state: dict[str, torch.Tensor], *, dinat_s: bool = False, norm_name: str = "bn"
) -> dict[str, torch.Tensor]:
    """A detectron2 detector's state dict in the release's mmdetection layout.

    Raises:
        ValueError: a key the release's models do not have.
    """
    levels = fpn_levels(model_state)
    out = {}
    for name, tensor in model_state.items():
        target = detectron2_to_mmdet_name(name, levels, dinat_s=dinat_s, norm_name=norm_name)
        if target is None:
            raise ValueError(f"{name}: no mmdetection name for this key")
        out[target] = tensor
    return out


def architecture_mismatch(
    checkpoint_keys: list[str], model_state: dict[str, torch.Tensor]
) -> str | None:
    """Why a release checkpoint cannot be this model's (naming a checkpoint key), or None:
    Mask R-CNN vs Cascade Mask R-CNN heads, DiNAT_s vs NAT / DiNAT backbone."""
    cascade_keys = [k for k in checkpoint_keys if re.match(r"^roi_head\.bbox_head\.\d+\.", k)]
    single_keys = [k for k in checkpoint_keys if re.match(r"^roi_head\.bbox_head\.[a-z]", k)]
    model_cascade = any(k.startswith("roi_heads.box_predictor.0.") for k in model_state)
    kinds = {True: "Cascade Mask R-CNN", False: "Mask R-CNN"}
    if (cascade_keys and not model_cascade) or (single_keys and model_cascade):
        example = (cascade_keys or single_keys)[0]
        return (
            f"the checkpoint is a {kinds[not model_cascade]} ({example}), the config "
            f"builds a {kinds[model_cascade]} (MODEL.ROI_HEADS.NAME)"
        )
    # DiNAT_s merges patches with a Linear (2-D weight), NAT / DiNAT downsample with a conv
    reduction = model_state.get("backbone.bottom_up.levels.0.downsample.reduction.weight")
    model_s = reduction is not None and reduction.dim() == 2
    swin_keys = [k for k in checkpoint_keys if k.startswith("backbone.layers.")]
    nat_keys = [k for k in checkpoint_keys if k.startswith("backbone.levels.")]
    names = {
        True: "DiNAT_s (build_dinat_s_fpn_backbone)",
        False: "NAT / DiNAT (build_dinat_fpn_backbone, build_nat_fpn_backbone)",
    }
    if (swin_keys and not model_s) or (nat_keys and model_s):
        example = (swin_keys or nat_keys)[0]
        return (
            f"the checkpoint's backbone is {names[not model_s]} ({example}), the config's "
            f"is {names[model_s]} (MODEL.BACKBONE.NAME)"
        )
    return None


def convert_mmdet_detection(
    state_dict: dict[str, torch.Tensor],
    model_state: dict[str, torch.Tensor],
    report: list[str] | None = None,
    *,
    allow_missing: bool = False,
    allow_unmatched: bool = False,
) -> dict[str, torch.Tensor]:
    """The release's weights renamed for a detectron2 model whose state dict is `model_state`.

    Every checkpoint key that no rule knows or that the model lacks is reported as dropped,
    every model key the checkpoint does not fill as missing (appended to `report`). The
    release's checkpoints fill the matching config's model exactly, so by default either is an
    error (another architecture, variant or FPN layout); `allow_unmatched` / `allow_missing`
    accept them (dropped keys are ignored, missing ones keep the model's initialisation).

    Raises:
        ValueError: not an mmdetection detection checkpoint; a tensor whose shape differs from
            the model's (named); dropped or missing keys (named, with a hint when the
            checkpoint is another architecture) unless allowed.
    """
    report = report if report is not None else []
    keys = list(state_dict)
    if not any(k.startswith(MMDET_PREFIXES) for k in keys):
        raise ValueError(
            "not an mmdetection detection checkpoint: no key starts with "
            f"{', '.join(MMDET_PREFIXES)} (first keys: {keys[:5]}); a Mask2Former or "
            "detectron2 checkpoint loads with MODEL.WEIGHTS directly, an ImageNet one with "
            "tools/convert_pretrained.py"
        )
    mismatch = architecture_mismatch(keys, model_state)
    if mismatch:
        raise ValueError(f"the checkpoint does not fit the model: {mismatch}")
    levels = fpn_levels(model_state)
    converted: dict[str, torch.Tensor] = {}
    dropped = []
    for name in keys:
        target = mmdet_to_detectron2_name(name, levels)
        if target is None or target not in model_state:
            why = "no detectron2 name" if target is None else f"the model has no {target}"
            dropped.append(name)
            report.append(f"dropped {name} {tuple(state_dict[name].shape)} ({why})")
            continue
        expected = model_state[target].shape
        if state_dict[name].shape != expected:
            raise ValueError(
                f"{name} -> {target}: checkpoint shape {tuple(state_dict[name].shape)} does not "
                f"match the model's {tuple(expected)}; is the config the checkpoint's variant "
                "(MODEL.DINAT.*) and class count (MODEL.ROI_HEADS.NUM_CLASSES)?"
            )
        converted[target] = state_dict[name]
    missing = [k for k in model_state if k not in converted]
    report += [f"missing {name} (not in the checkpoint)" for name in missing]
    problems = []
    if missing and not allow_missing:
        problems.append(f"it does not fill {len(missing)} model keys: {_listed(missing)}")
    if dropped and not allow_unmatched:
        problems.append(f"{len(dropped)} of its keys match no model key: {_listed(dropped)}")
    if problems:
        raise ValueError(
            "the checkpoint does not fit the model: "
            + "; ".join(problems)
            + "; is the config the checkpoint's architecture, variant and FPN layout?"
        )
    return converted


def _listed(names: list[str], limit: int = 8) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
