"""Exporting a built model: to a `torch.export` program (our ops kept as the custom ops
`dinat_m2f::*`, with their fake kernels) or to ONNX (those ops replaced by their standard-ONNX
forms, onnx_ops.py), with the metadata the numpy post-processing needs.

Input sizes: the graph takes a padded image whose height and width are multiples of the size
divisibility. They are dynamic over the range where the model's code takes the same branches
as for the sample size: a neighbourhood-attention layer pads maps smaller than kernel *
dilation, so the range stops at every such threshold (stride * kernel * dilation pixels). When
torch.export cannot keep the size dynamic (e.g. Swin's window padding), the export falls back
to the sample's fixed size and says so. The range is stored in the file and checked at run
time (deploy/runtime.py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
from detectron2.data import MetadataCatalog
from torch import nn

from ..layers import NeighborhoodAttention2D
from ..ops.na.dispatch import BACKEND_ENV, default_backend
from .deploy.runtime import METADATA_KEY
from .onnx_ops import OPSET, translations
from .wrappers import NotExportableError, graph_of

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "exported-program")
MAX_SIDE = 4096  # the largest height / width a dynamic graph accepts


@dataclass
class SizeRange:
    """Heights and widths the graph accepts: multiples of `divisibility` in [min, max] per
    axis (min == max: a fixed size)."""

    divisibility: int
    min_height: int
    max_height: int
    min_width: int
    max_width: int

    @property
    def fixed(self) -> bool:
        return self.min_height == self.max_height and self.min_width == self.max_width


@dataclass
class ExportResult:
    path: str
    format: str
    sizes: SizeRange
    seconds: float
    bytes: int


def check_exportable(cfg) -> None:
    """Options that cannot be exported, named (NotExportableError)."""
    if cfg.MODEL.DEVICE != "cpu":
        raise NotExportableError(
            f"MODEL.DEVICE={cfg.MODEL.DEVICE!r}: export on the CPU (MODEL.DEVICE cpu); the "
            "exported file runs on any device"
        )
    if cfg.TEST.AUG.ENABLED:
        raise NotExportableError(
            "TEST.AUG.ENABLED=True: test-time augmentation runs several images through the "
            "model and is not part of the exported graph; export with TEST.AUG.ENABLED False"
        )
    backend = default_backend()
    if backend not in ("auto", "unfused"):
        raise NotExportableError(
            f"{BACKEND_ENV}={backend!r}: only the native unfused NA ops export (unset it or "
            "use 'unfused')"
        )


def divisibility_of(model: nn.Module) -> int:
    """The multiple the graph's input height and width must be."""
    size_div = getattr(model, "size_divisibility", None)
    if size_div is None or size_div <= 0:
        size_div = model.backbone.size_divisibility
    return max(int(size_div), 1)


def _na_thresholds(graph: nn.Module, sample: torch.Tensor) -> tuple[set[int], set[int]]:
    """Input heights and widths at which some NA layer starts or stops padding its input."""
    seen: list[tuple[NeighborhoodAttention2D, int, int]] = []
    hooks = [
        module.register_forward_pre_hook(
            lambda m, args: seen.append((m, args[0].shape[1], args[0].shape[2]))
        )
        for module in graph.modules()
        if isinstance(module, NeighborhoodAttention2D)
    ]
    try:
        with torch.no_grad():
            graph(sample)
    finally:
        for hook in hooks:
            hook.remove()
    heights, widths = set(), set()
    for module, h, w in seen:
        heights.add(sample.shape[2] // h * module.kernel_size[0] * module.dilation[0])
        widths.add(sample.shape[3] // w * module.kernel_size[1] * module.dilation[1])
    return heights, widths


def _axis_range(size: int, thresholds: set[int], div: int) -> tuple[int, int]:
    low = max([t for t in thresholds if t <= size], default=div)
    high = min([t for t in thresholds if t > size], default=MAX_SIDE + 1) - 1
    return math.ceil(low / div) * div, high // div * div


def size_range(graph: nn.Module, sample: torch.Tensor, div: int) -> SizeRange:
    heights, widths = _na_thresholds(graph, sample)
    h0, h1 = _axis_range(sample.shape[2], heights, div)
    w0, w1 = _axis_range(sample.shape[3], widths, div)
    return SizeRange(div, h0, h1, w0, w1)


def _dynamic_shapes(sizes: SizeRange):
    div = sizes.divisibility
    height = torch.export.Dim("h", min=sizes.min_height // div, max=sizes.max_height // div)
    width = torch.export.Dim("w", min=sizes.min_width // div, max=sizes.max_width // div)
    return ({2: div * height, 3: div * width},)


def trace(
    graph: nn.Module, sample: torch.Tensor, sizes: SizeRange
) -> tuple[torch.export.ExportedProgram, SizeRange]:
    """torch.export of `graph` with dynamic height and width over `sizes`, or at the sample's
    fixed size when the model's code does not allow that (logged)."""
    graph.eval()
    if not sizes.fixed:
        try:
            with torch.no_grad():
                return torch.export.export(
                    graph, (sample,), dynamic_shapes=_dynamic_shapes(sizes)
                ), sizes
        except Exception as error:  # torch.export's guard and constraint errors vary
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            logger.warning(
                "export: height and width cannot stay dynamic for this model (%s: %s); "
                "exporting the fixed size %dx%d, which the runtime will require",
                type(error).__name__,
                first_line[:300],
                sample.shape[2],
                sample.shape[3],
            )
    h, w = sample.shape[2], sample.shape[3]
    fixed = SizeRange(sizes.divisibility, h, h, w, w)
    with torch.no_grad():
        return torch.export.export(graph, (sample,)), fixed


def metadata(cfg, model: nn.Module, graph: nn.Module, sizes: SizeRange) -> dict:
    """What the post-processing and the runtime check need, stored in the file."""
    names = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    info = {
        "format_version": 1,
        "input_format": cfg.INPUT.FORMAT,
        "pixel_mean": [float(x) for x in cfg.MODEL.PIXEL_MEAN],
        "pixel_std": [float(x) for x in cfg.MODEL.PIXEL_STD],
        "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
        "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        "sizes": asdict(sizes),
        "outputs": list(graph.output_names),
        "thing_classes": list(getattr(names, "thing_classes", []) or []),
        "stuff_classes": list(getattr(names, "stuff_classes", []) or []),
        "thing_colors": [list(c) for c in getattr(names, "thing_colors", []) or []],
        "stuff_colors": [list(c) for c in getattr(names, "stuff_colors", []) or []],
    }
    things = (
        sorted(model.metadata.thing_dataset_id_to_contiguous_id.values())
        if hasattr(model.metadata, "thing_dataset_id_to_contiguous_id")
        else []
    )
    info.update(
        kind="mask_former",
        num_classes=int(model.sem_seg_head.num_classes),
        semantic_on=bool(model.semantic_on),
        panoptic_on=bool(model.panoptic_on),
        instance_on=bool(model.instance_on),
        object_mask_threshold=float(model.object_mask_threshold),
        overlap_threshold=float(model.overlap_threshold),
        test_topk_per_image=int(model.test_topk_per_image),
        thing_ids=[int(c) for c in things],
    )
    return info


def _save_onnx(program: torch.export.ExportedProgram, path: str, info: dict) -> None:
    onnx_program = torch.onnx.export(
        program,
        dynamo=True,
        custom_translation_table=translations(),
        opset_version=OPSET,
        input_names=["image"],
        output_names=list(info["outputs"]),
        # onnxscript's optimizer takes 4x the translation's time; ONNX Runtime folds and fuses
        # the graph itself when it loads it
        optimize=False,
    )
    model = onnx_program.model_proto
    # intermediate shapes recorded at the sample's size would let ONNX Runtime's fusions bake
    # them into reshapes; without them it infers shapes from each run's input
    del model.graph.value_info[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    # weights of large models exceed protobuf's 2 GiB: onnx writes them beside the file then
    import onnx

    large = model.ByteSize() > 2**31 - 2**20
    onnx.save_model(
        model,
        path,
        save_as_external_data=large,
        location=os.path.basename(path) + ".data" if large else None,
    )


def export_model(
    cfg, model: nn.Module, sample: torch.Tensor, output: str, fmt: str = "onnx"
) -> ExportResult:
    """Exports `model` (built from `cfg`, weights loaded) to `output` as `fmt` ("onnx" or
    "exported-program"), tracing with `sample`, a normalised padded image (1, 3, H, W) float32.
    """
    if fmt not in FORMATS:
        raise NotExportableError(f"--format {fmt!r} is not one of {list(FORMATS)}")
    check_exportable(cfg)
    graph = graph_of(model)
    div = divisibility_of(model)
    if sample.dim() != 4 or sample.shape[0] != 1 or sample.dtype != torch.float32:
        raise ValueError(
            f"export: the sample must be one float32 image (1, C, H, W), got {sample.dtype} "
            f"{tuple(sample.shape)}"
        )
    if sample.shape[2] % div or sample.shape[3] % div:
        raise ValueError(
            f"export: the sample's height and width must be multiples of the size "
            f"divisibility {div}, got {tuple(sample.shape[2:])}"
        )
    start = time.perf_counter()
    sizes = size_range(graph, sample, div)
    program, sizes = trace(graph, sample, sizes)
    info = metadata(cfg, model, graph, sizes)
    if fmt == "onnx":
        _save_onnx(program, output, info)
    else:
        torch.export.save(program, output, extra_files={METADATA_KEY: json.dumps(info)})
    seconds = time.perf_counter() - start
    size = os.path.getsize(output)
    if os.path.exists(output + ".data"):
        size += os.path.getsize(output + ".data")
    return ExportResult(output, fmt, sizes, seconds, size)


__all__ = [
    "FORMATS",
    "ExportResult",
    "NotExportableError",
    "SizeRange",
    "check_exportable",
    "export_model",
]
