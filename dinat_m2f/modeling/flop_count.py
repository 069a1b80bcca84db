"""fvcore FLOP counting for the project's custom ops (one multiply-add counts as one FLOP,
fvcore's convention and the one the DiNAT paper's GFLOPs use)."""

from __future__ import annotations

import math

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape


def _na_qk_flops(inputs, outputs) -> int:
    """logits (B, *S, heads, K), each a dot product over the query's head dim."""
    return math.prod(get_shape(outputs[0])) * get_shape(inputs[0])[-1]


def _na_av_flops(inputs, outputs) -> int:
    """out (B, *S, heads, D), each a sum over the K attention weights."""
    return math.prod(get_shape(outputs[0])) * get_shape(inputs[0])[-1]


def _na_fused_flops(inputs, outputs) -> int:
    """The fused op (CPU tensors' default): qk and av in one, (B, *S, heads) queries each
    with prod(kernel_size) neighbours, over the query's and the value's head dims."""
    kernel = inputs[4].toIValue()
    if kernel is None:  # traced as a prim::ListConstruct of constants
        kernel = [item.toIValue() for item in inputs[4].node().inputs()]
    neighbours = math.prod(kernel)
    queries = math.prod(get_shape(outputs[0])[:-1])
    return queries * neighbours * (get_shape(inputs[0])[-1] + get_shape(inputs[2])[-1])


NA_FLOP_HANDLES = {
    "dinat_m2f::na_qk": _na_qk_flops,
    "dinat_m2f::na_av": _na_av_flops,
    "dinat_m2f::na_fused": _na_fused_flops,
}


def flop_count_analysis(model: torch.nn.Module, inputs) -> FlopCountAnalysis:
    """fvcore's analysis with our ops counted (and without warnings for uncounted
    elementwise ops such as softmax, which the paper does not count either)."""
    analysis = FlopCountAnalysis(model, inputs).set_op_handle(**NA_FLOP_HANDLES)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis


def detectron2_flop_count_analysis(model: torch.nn.Module, inputs: list[dict]) -> FlopCountAnalysis:
    """`flop_count_analysis` for a whole detectron2 model called with a list of dicts
    (detectron2's tracing adapter; its ignored ops, such as NMS and ROIAlign, stay ignored)."""
    from detectron2.utils.analysis import FlopCountAnalysis as Detectron2FlopCountAnalysis

    analysis = Detectron2FlopCountAnalysis(model, inputs).set_op_handle(**NA_FLOP_HANDLES)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis
