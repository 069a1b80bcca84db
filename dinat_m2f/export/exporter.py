"""Exporting a built model: to a `torch.export` program (our ops kept as the custom ops
`dinat_m2f::*`, with their fake kernels) or to ONNX (those ops replaced by their standard-ONNX
forms, onnx_ops.py), with the metadata the numpy post-processing needs.

Input size: the graph is traced with symbolic height and width over the range of sizes that
share the sample's graph (sizes.py), or at the sample's size only (`dynamic=False`). The range
is stored in the file and checked at run time (deploy/runtime.py) with a message naming it.
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

from ..ops.na.dispatch import BACKEND_ENV, backend_env, default_backend
from .deploy.runtime import METADATA_KEY
from .onnx_ops import OPSET, translations
from .rcnn import RCNNGraph
from .sizes import DEFAULT_MAX_SIZE, SizeRange, size_range
from .wrappers import NotExportableError, graph_of

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "exported-program")


@dataclass
class ExportResult:
    path: str
    format: str
    sizes: SizeRange
    seconds: float
    bytes: int
    fixed_reason: str | None = None  # why the file takes one size only


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


def sample_inputs(graph: nn.Module, sample: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The graph's inputs for the sample image: (image,), or (image, image_size) for detectors
    (the whole sample is image)."""
    if "image_size" in graph.input_names:
        return sample, torch.tensor(sample.shape[2:], dtype=torch.int64)
    return (sample,)


def trace(graph: nn.Module, sample: torch.Tensor, sizes: SizeRange) -> torch.export.ExportedProgram:
    """torch.export of `graph` over the image sizes `sizes` (the sample's must be one)."""
    graph.eval()
    inputs = sample_inputs(graph, sample)
    dynamic = (sizes.dims(),) + (None,) * (len(inputs) - 1)
    # NA traced as the unfused native ops (na_qk, softmax, na_av), the ones with ONNX forms:
    # "auto" would pick the fused CPU kernel (dinat_m2f::na_fused), which has none.
    with torch.no_grad(), backend_env("unfused"):
        return torch.export.export(graph, inputs, dynamic_shapes=dynamic)


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
        "inputs": list(graph.input_names),
        "outputs": list(graph.output_names),
        "thing_classes": list(getattr(names, "thing_classes", []) or []),
        "stuff_classes": list(getattr(names, "stuff_classes", []) or []),
        "thing_colors": [list(c) for c in getattr(names, "thing_colors", []) or []],
        "stuff_colors": [list(c) for c in getattr(names, "stuff_colors", []) or []],
    }
    if isinstance(graph, RCNNGraph):
        info.update(
            kind="rcnn",
            num_classes=int(model.roi_heads.num_classes),
            mask_threshold=0.5,  # detector_postprocess's default
            score_threshold=graph.score_thresh,
            nms_threshold=graph.nms_thresh,
            detections_per_image=graph.detections,
        )
        return info
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


def _to_onnx(program: torch.export.ExportedProgram, info: dict):
    """The ONNX model of `program` (our ops in their standard-ONNX forms)."""
    onnx_program = torch.onnx.export(
        program,
        dynamo=True,
        custom_translation_table=translations(),
        opset_version=OPSET,
        input_names=list(info["inputs"]),
        output_names=list(info["outputs"]),
        # onnxscript's optimizer takes 4x the translation's time; ONNX Runtime folds and fuses
        # the graph itself when it loads it
        optimize=False,
    )
    return onnx_program.model_proto


def _fixed_axes(model, sizes: SizeRange) -> list[str]:
    """The axes meant to be dynamic that the ONNX model's image input has fixed (the
    conversion re-traces the program and pins a symbol whose guard it cannot decide)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [
        name
        for axis, name in ((2, "height"), (3, "width"))
        if axis in sizes.dims()
        and not (dims[axis].HasField("dim_param") and not dims[axis].dim_param.isdigit())
    ]


def _save_onnx(model, path: str, info: dict) -> None:
    # shapes recorded at trace time are not needed: ONNX Runtime infers them from each input
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


def _export(graph, sample, sizes: SizeRange, fmt: str, names: dict):
    """(program, ONNX model or None) over `sizes`; ValueError if the ONNX model came out
    with a dynamic axis fixed."""
    program = trace(graph, sample, sizes)
    if fmt != "onnx":
        return program, None
    model = _to_onnx(program, names)
    fixed = _fixed_axes(model, sizes)
    if fixed:
        raise ValueError(f"the ONNX conversion fixed the {' and '.join(fixed)} of the input")
    return program, model


def export_model(
    cfg,
    model: nn.Module,
    sample: torch.Tensor,
    output: str,
    fmt: str = "onnx",
    dynamic: bool = True,
    max_size: int = DEFAULT_MAX_SIZE,
) -> ExportResult:
    """Exports `model` (built from `cfg`, weights loaded) to `output` as `fmt` ("onnx" or
    "exported-program"), tracing with `sample`, a normalised padded image (1, 3, H, W) float32.
    dynamic: the file takes every size that shares the sample's graph, up to max_size per
    axis (sizes.size_range); False: the sample's size only.
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
    fixed = SizeRange(div, height, height, width, width)
    sizes = size_range(graph, sample_inputs(graph, sample), div, max_size) if dynamic else fixed
    names = {"inputs": list(graph.input_names), "outputs": list(graph.output_names)}
    fixed_reason = None if dynamic else "exported with --fixed-size"
    try:
        program, onnx_model = _export(graph, sample, sizes, fmt, names)
    except Exception as error:  # torch.export's shape errors have many types
        if sizes.fixed:
            raise
        # a size-dependent branch the range does not settle: the sample's size only
        fixed_reason = f"a dynamic-size export failed ({type(error).__name__}: " + (
            f"{str(error).strip().splitlines()[0][:300]})"
        )
        logger.warning("export: %s; exporting at the fixed size %dx%d", fixed_reason, height, width)
        sizes = fixed
        program, onnx_model = _export(graph, sample, sizes, fmt, names)
    logger.info("export: input sizes %s", sizes)
    info = metadata(cfg, model, graph, sizes)
    info["fixed_reason"] = fixed_reason if sizes.fixed else None
    if fmt == "onnx":
        _save_onnx(onnx_model, output, info)
    else:
        torch.export.save(program, output, extra_files={METADATA_KEY: json.dumps(info)})
    seconds = time.perf_counter() - start
    size = os.path.getsize(output)
    if os.path.exists(output + ".data"):
        size += os.path.getsize(output + ".data")
    return ExportResult(output, fmt, sizes, seconds, size, info["fixed_reason"])


__all__ = [
    "FORMATS",
    "ExportResult",
    "NotExportableError",
    "SizeRange",
    "check_exportable",
    "export_model",
]
