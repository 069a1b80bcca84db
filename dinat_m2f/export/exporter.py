"""Exporting a built model: to a `torch.export` program (our ops kept as the custom ops
`dinat_m2f::*`, with their fake kernels) or to ONNX (those ops replaced by their standard-ONNX
forms, onnx_ops.py), with the metadata the numpy post-processing needs.

Input size: the graph takes the padded sample's height and width (multiples of the size
divisibility), fixed. A dynamic-size export (torch.export Dims) traced, but its ONNX file kept
reshapes at the traced size inside the backbone, so other sizes failed in ONNX Runtime; until
that is solved each size is its own export. The size is stored in the file and checked at run
time (deploy/runtime.py) with a message naming it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass

import torch
from detectron2.data import MetadataCatalog
from torch import nn

from ..ops.na.dispatch import BACKEND_ENV, default_backend
from .deploy.runtime import METADATA_KEY
from .onnx_ops import OPSET, translations
from .wrappers import NotExportableError, graph_of

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "exported-program")


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


def trace(graph: nn.Module, sample: torch.Tensor) -> torch.export.ExportedProgram:
    """torch.export of `graph` at the sample's size."""
    graph.eval()
    with torch.no_grad():
        return torch.export.export(graph, (sample,))


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
    height, width = sample.shape[2], sample.shape[3]
    sizes = SizeRange(div, height, height, width, width)
    logger.info("export: the graph takes the fixed size %dx%d (height x width)", height, width)
    program = trace(graph, sample)
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
