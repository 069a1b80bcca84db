"""The ONNX forms of the native ops (dinat_m2f/export/onnx_ops.py), run in ONNX Runtime, against
the native ops and the brute-force oracles: windows at the borders, dilation, per-axis kernels,
the relative positional bias, MSDeformAttn's bilinear sampling with zero padding, and the
detectors' class-wise NMS against a greedy oracle. One dynamic-size export per case, run at two
sizes."""

import numpy as np
import pytest
import torch
import torchvision

from dinat_m2f.layers import ms_deform_attn, na2d_av, na2d_qk
from tests import ms_deform_attn_brute_force as msda_oracle
from tests import na_brute_force as na_oracle
from tests.conftest import requires_native

pytest.importorskip("onnxruntime")
import onnxruntime  # noqa: E402

from dinat_m2f.export.nms import batched_nms  # noqa: E402
from dinat_m2f.export.onnx_ops import OPSET, translations  # noqa: E402

pytestmark = requires_native


class _NA(torch.nn.Module):
    def __init__(self, kernel, dilation, heads, with_rpb):
        super().__init__()
        self.kernel, self.dilation = kernel, dilation
        rpb = torch.randn(heads, 2 * kernel[0] - 1, 2 * kernel[1] - 1) if with_rpb else None
        self.rpb = None if rpb is None else torch.nn.Parameter(rpb)

    def forward(self, query, key, value):
        logits = na2d_qk(query, key, self.kernel, dilation=self.dilation, rpb=self.rpb)
        return logits, na2d_av(logits.softmax(-1), value, self.kernel, dilation=self.dilation)


def _session(module, args, dynamic_shapes, tmp_path):
    program = torch.onnx.export(
        module.eval(),
        args,
        dynamo=True,
        dynamic_shapes=dynamic_shapes,
        custom_translation_table=translations(),
        opset_version=OPSET,
        optimize=False,
    )
    path = str(tmp_path / "op.onnx")
    program.save(path)
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "kernel, dilation, with_rpb, sizes",
    [
        # asymmetric kernel and dilation; the second size has groups of unequal length
        ((3, 5), (2, 1), True, [(9, 7), (13, 10)]),
        ((7, 7), (3, 2), False, [(21, 14), (23, 17)]),
    ],
)
def test_na_onnx_matches_native_and_brute_force(tmp_path, kernel, dilation, with_rpb, sizes):
    torch.manual_seed(0)
    heads, dim = 2, 4
    module = _NA(kernel, dilation, heads, with_rpb)
    example = tuple(torch.randn(1, *sizes[0], heads, dim) for _ in range(3))
    height = torch.export.Dim("height", min=kernel[0] * dilation[0], max=64)
    width = torch.export.Dim("width", min=kernel[1] * dilation[1], max=64)
    session = _session(module, example, tuple({1: height, 2: width} for _ in range(3)), tmp_path)
    for size in sizes:
        q, k, v = (torch.randn(1, *size, heads, dim) for _ in range(3))
        feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), (q, k, v))}
        logits, out = session.run(None, feed)
        with torch.no_grad():
            native_logits, native_out = module(q, k, v)
            oracle_logits = na_oracle.qk(q, k, kernel, dilation, module.rpb)
            oracle_out = na_oracle.av(oracle_logits.softmax(-1), v, kernel, dilation)
        np.testing.assert_allclose(logits, native_logits.numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(out, native_out.numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(logits, oracle_logits.numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(out, oracle_out.numpy(), atol=1e-5, rtol=0)


class _MSDA(torch.nn.Module):
    def __init__(self, shapes):
        super().__init__()
        spatial = torch.tensor(shapes, dtype=torch.long)
        self.register_buffer("spatial", spatial)
        starts = torch.cat((spatial.new_zeros(1), spatial.prod(1).cumsum(0)[:-1]))
        self.register_buffer("starts", starts)

    def forward(self, value, locations, weights):
        return ms_deform_attn(value, self.spatial, self.starts, locations, weights)


def test_ms_deform_attn_onnx_matches_native_and_brute_force(tmp_path):
    torch.manual_seed(0)
    shapes = [(5, 7), (3, 2)]
    batch, heads, dim, points = 1, 2, 3, 2
    len_in = sum(h * w for h, w in shapes)
    module = _MSDA(shapes)

    def inputs(queries):
        value = torch.randn(batch, len_in, heads, dim)
        # locations beyond [0, 1] read zero padding
        locations = torch.rand(batch, queries, heads, len(shapes), points, 2) * 1.4 - 0.2
        weights = torch.rand(batch, queries, heads, len(shapes), points)
        return value, locations, weights

    queries = torch.export.Dim("queries", min=1, max=64)
    session = _session(module, inputs(4), ({}, {1: queries}, {1: queries}), tmp_path)
    for len_q in (4, 9):
        value, locations, weights = inputs(len_q)
        feed = {
            i.name: t.numpy() for i, t in zip(session.get_inputs(), (value, locations, weights))
        }
        (out,) = session.run(None, feed)
        with torch.no_grad():
            native = module(value, locations, weights)
        oracle = msda_oracle.ms_deform_attn_brute_force(
            value, module.spatial, module.starts, locations, weights
        )
        np.testing.assert_allclose(out, native.numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(out, oracle.numpy(), atol=1e-5, rtol=0)


def test_na_onnx_refuses_other_ranks():
    from dinat_m2f.export.onnx_ops import na_qk_onnx

    with pytest.raises(ValueError, match=r"2D neighbourhood attention only.*kernel_size=\[7\]"):
        na_qk_onnx(None, None, None, [7], [1])


def _nms_oracle(boxes, scores, classes, threshold):
    """Greedy class-wise NMS, one box at a time by decreasing score: kept indices."""

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union

    kept = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if all(classes[j] != classes[i] or iou(boxes[i], boxes[j]) <= threshold for j in kept):
            kept.append(i)
    return kept


class _NMS(torch.nn.Module):
    def __init__(self, num_classes, threshold):
        super().__init__()
        self.num_classes, self.threshold = num_classes, threshold

    def forward(self, boxes, scores, classes):
        return batched_nms(boxes, scores, classes, self.num_classes, self.threshold)


@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_batched_nms_onnx_matches_class_wise_greedy_nms(tmp_path, threshold):
    torch.manual_seed(0)
    classes_count = 3

    def inputs(count):
        # clusters of jittered boxes, so that many overlap above and below the threshold
        centres = torch.rand(4, 2) * 60
        xy = centres[torch.randint(0, 4, (count,))] + torch.randn(count, 2) * 4
        size = 10 + torch.rand(count, 2) * 20
        boxes = torch.cat((xy, xy + size), dim=1)
        return boxes, torch.rand(count), torch.randint(0, classes_count, (count,))

    module = _NMS(classes_count, threshold)
    count = torch.export.Dim("count", min=2, max=4096)
    session = _session(module, inputs(40), ({0: count}, {0: count}, {0: count}), tmp_path)
    for size in (60, 0):
        boxes, scores, classes = inputs(size)
        feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), (boxes, scores, classes))}
        (kept,) = session.run(None, feed)
        oracle = _nms_oracle(boxes.tolist(), scores.tolist(), classes.tolist(), threshold)
        assert kept.tolist() == oracle
        assert module(boxes, scores, classes).tolist() == oracle
        if size:
            assert 0 < len(oracle) < size  # some boxes suppressed, some kept
            # detectron2's batched_nms (torchvision's) keeps the same boxes
            reference = torchvision.ops.batched_nms(boxes, scores, classes, threshold)
            assert sorted(reference.tolist()) == sorted(oracle)
