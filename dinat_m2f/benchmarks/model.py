"""Model-level speed of Mask2Former with DiNAT, NAT and Swin backbones, side by side.

One row per config (and per NAT twin with --nat): parameters, optional GFLOPs, inference time
of a batch and images/s, the time of one training step (forward with synthetic targets of
random masks and classes, backward, the config's optimizer step) and the peak memory of both,
each time the median and inter-quartile range of --repeats runs after --warmup runs
(synchronised on GPU). Weights are random unless MODEL.WEIGHTS is among the
opts; MODEL.TVSWIN.WEIGHTS_IMAGENET is cleared unless given (no downloads).

Peak memory is the growth above what was allocated before the call (activations,
temporaries, gradients; not the weights); timing and memory: dinat_m2f/benchmarks/timing.py.

    python -m dinat_m2f.benchmarks.model --configs A.yaml B.yaml [--nat] [--resolution 512x512]
        [--batch-size 1] [--warmup 1] [--repeats 3] [--backbone-only] [--flops]
        [--skip-train [--interleave]] [--device cpu|cuda] [--threads N] [KEY VALUE ...]
    python -m dinat_m2f.benchmarks.model --layer ...   # dinat_m2f/benchmarks/layer.py
    (tools/benchmark_model.py is the same command.)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from dinat_m2f.benchmarks.plots import add_plot_argument, check_plot_argument, model_bars, save_plot
from dinat_m2f.benchmarks.timing import (
    add_run_arguments,
    check_run_args,
    device_description,
    format_ms,
    intra_op_threads,
    load_average,
    markdown_header,
    markdown_row,
    median_iqr,
    memory_note,
    parse_resolution,
    peak_memory_mb,
    time_runs,
)

DINAT_BACKBONES = ("D2DiNAT", "D2DiNATs")


def model_opts(opts: list[str], device: str) -> list[str]:
    """The user's opts with the device, and no weights or AMP-on-CPU unless asked for."""
    keys = set(opts[::2])
    extra = ["MODEL.DEVICE", device]
    if "MODEL.WEIGHTS" not in keys:
        extra += ["MODEL.WEIGHTS", ""]
    if "MODEL.TVSWIN.WEIGHTS_IMAGENET" not in keys:
        extra += ["MODEL.TVSWIN.WEIGHTS_IMAGENET", ""]
    if device == "cpu" and "SOLVER.AMP.ENABLED" not in keys:
        extra += ["SOLVER.AMP.ENABLED", "False"]  # the configs' float16 AMP is for GPUs
    return list(opts) + extra


def load_config(config_file: str, opts: list[str], device: str, nat: bool):
    from dinat_m2f.engine.setup import load_cfg

    cfg = load_cfg(config_file, model_opts(opts, device))
    if nat:
        if cfg.MODEL.BACKBONE.NAME not in DINAT_BACKBONES:
            raise ValueError(
                f"--nat: {config_file} has MODEL.BACKBONE.NAME "
                f"{cfg.MODEL.BACKBONE.NAME}, not one of {DINAT_BACKBONES}"
            )
        cfg.MODEL.DINAT.DILATIONS = [[1] * depth for depth in cfg.MODEL.DINAT.DEPTHS]
    return cfg


def backbone_label(cfg) -> str:
    name = cfg.MODEL.BACKBONE.NAME
    if name in DINAT_BACKBONES:
        from dinat_m2f.modeling.backbone.dinat import VARIANTS

        c = cfg.MODEL.DINAT
        size = next(
            (
                v
                for v, variant in VARIANTS.items()
                if variant.embed_dim == c.EMBED_DIM and list(variant.depths) == list(c.DEPTHS)
            ),
            f"C{c.EMBED_DIM}",
        )
        # DILATIONS None (the official default) is NAT: every dilation 1
        top = max((d for level in c.DILATIONS or [] for d in level), default=1)
        if top == 1:
            return f"NAT-{size} k{c.KERNEL_SIZE}"
        return f"DiNAT-{size} k{c.KERNEL_SIZE} (d <= {top})"
    if name == "D2TorchvisionSwin":
        from dinat_m2f.modeling.backbone.torchvision_swin import SWIN_VARIANTS

        c = cfg.MODEL.TVSWIN
        return f"Swin {c.VARIANT} w{c.WINDOW_SIZE or SWIN_VARIANTS[c.VARIANT].window_size}"
    return name


def build(cfg, backbone_only: bool) -> nn.Module:
    """The model (or its backbone) of cfg on its device, weights from MODEL.WEIGHTS if set."""
    from detectron2.modeling import build_model

    import dinat_m2f.data  # noqa: F401  (dataset metadata the model reads)
    import dinat_m2f.modeling  # noqa: F401  (registers the model parts)
    from dinat_m2f.checkpoint.model_weights import load_model_weights

    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        load_model_weights(model, cfg.MODEL.WEIGHTS)
    return model.backbone if backbone_only else model


def synthetic_batch(
    cfg,
    height: int,
    width: int,
    batch: int,
    instances: int,
    device: torch.device,
    generator: torch.Generator,
) -> list[dict]:
    """Model inputs: random uint8 images with "instances" (random classes, random rectangle
    masks) for training; inference ignores the instances."""
    from detectron2.structures import Instances

    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    out = []
    for _ in range(batch):
        image = torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)
        masks = torch.zeros(instances, height, width, dtype=torch.bool)
        for m in masks:
            y0, y1 = sorted(torch.randint(0, height + 1, (2,), generator=generator).tolist())
            x0, x1 = sorted(torch.randint(0, width + 1, (2,), generator=generator).tolist())
            m[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)] = True
        target = Instances((height, width))
        target.gt_classes = torch.randint(0, num_classes, (instances,), generator=generator)
        target.gt_masks = masks
        out.append(
            {
                "image": image.to(device),
                "height": height,
                "width": width,
                "instances": target.to(device),
            }
        )
    return out


class _Traceable(nn.Module):
    """The tensor path of a model for fvcore: backbone (+ head) -> tuple of tensors."""

    def __init__(self, model: nn.Module, backbone_only: bool) -> None:
        super().__init__()
        self.model, self.backbone_only = model, backbone_only

    def forward(self, x: torch.Tensor):
        if self.backbone_only:
            return tuple(self.model(x).values())
        out = self.model.sem_seg_head(self.model.backbone(x))
        return out["pred_logits"], out["pred_masks"]


def gflops(
    model: nn.Module, backbone_only: bool, height: int, width: int, device: torch.device
) -> float:
    """fvcore GFLOPs (one multiply-add = one FLOP, NA ops counted) of one image, backbone
    (+ pixel decoder and transformer decoder) on the input padded to 32; post-processing and
    the MSDeformAttn sampling are not counted (Mask2Former's numbers do not count it either)."""
    from dinat_m2f.modeling.flop_count import flop_count_analysis

    pad = lambda s: -(-s // 32) * 32  # noqa: E731
    x = torch.randn(1, 3, pad(height), pad(width), device=device)
    with torch.no_grad():
        return flop_count_analysis(_Traceable(model, backbone_only).eval(), (x,)).total() / 1e9


def autocast_of(cfg, device: torch.device):
    """The config's AMP as a context factory: autocast on `device` in SOLVER.AMP.PRECISION
    (on the CPU only bfloat16 gets here: load_cfg refuses float16 there), else none."""
    amp = cfg.SOLVER.AMP
    if amp.ENABLED:
        return lambda: torch.autocast(device.type, dtype=getattr(torch, amp.PRECISION))
    return nullcontext


def _empty_row(config_file: str, cfg, nat: bool) -> dict:
    return dict(
        config=Path(config_file).stem + (" (NAT)" if nat else ""),
        backbone=backbone_label(cfg),
        backbone_name=cfg.MODEL.BACKBONE.NAME,
        params=None,
        gflops=None,
        fwd=None,
        fwd_iqr=None,
        imgs=None,
        train=None,
        train_iqr=None,
        fwd_mem=None,
        train_mem=None,
        note="",
    )


class _Prepared(NamedTuple):
    """A config's row so far, its model (random weights, eval mode), inputs and inference."""

    row: dict
    cfg: object
    model: nn.Module
    batch: list[dict]
    images: torch.Tensor
    autocast: Callable
    infer: Callable[[], object]


def _prepare(config_file: str, args, nat: bool) -> _Prepared:
    device = torch.device(args.device)
    cfg = load_config(config_file, args.opts, args.device, nat)
    row = _empty_row(config_file, cfg, nat)
    height, width = args.resolution
    torch.manual_seed(0)
    model = build(cfg, args.backbone_only)
    row["params"] = sum(p.numel() for p in model.parameters()) / 1e6
    autocast = autocast_of(cfg, device)
    generator = torch.Generator().manual_seed(0)
    batch = synthetic_batch(cfg, height, width, args.batch, args.instances, device, generator)
    images = torch.randn(args.batch, 3, height, width, generator=generator).to(device)
    model.eval()

    def infer():
        with torch.no_grad(), autocast():
            if args.backbone_only:
                return model(images)
            return model([{k: v for k, v in x.items() if k != "instances"} for x in batch])

    return _Prepared(row, cfg, model, batch, images, autocast, infer)


def _record_inference(prepared: _Prepared, times: list[float], args) -> None:
    row = prepared.row
    row["fwd"], row["fwd_iqr"] = median_iqr(times)
    row["imgs"] = args.batch / row["fwd"]
    row["fwd_mem"] = peak_memory_mb(prepared.infer, torch.device(args.device))


def benchmark_config(config_file: str, args, nat: bool = False) -> dict:
    """One table row: build, (GFLOPs), inference, training step."""
    from dinat_m2f.solver.optimizer import build_optimizer

    device = torch.device(args.device)
    prepared = _prepare(config_file, args, nat)
    row, cfg, model, batch, images, autocast, infer = prepared
    height, width = args.resolution
    try:
        if args.flops:
            row["gflops"] = gflops(model, args.backbone_only, height, width, device)
        _record_inference(prepared, time_runs(infer, device, args.warmup, args.repeats), args)

        if not args.skip_train:
            model.train()
            optimizer = build_optimizer(cfg, model)
            amp = cfg.SOLVER.AMP
            float16 = device.type == "cuda" and amp.ENABLED and amp.PRECISION == "float16"
            scaler = torch.amp.GradScaler("cuda", enabled=float16)

            def train_step():
                with autocast():
                    if args.backbone_only:
                        loss = sum(v.float().square().mean() for v in model(images).values())
                    else:
                        loss = sum(model(batch).values())
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

            times = time_runs(train_step, device, args.warmup, args.repeats)
            row["train"], row["train_iqr"] = median_iqr(times)
            row["train_mem"] = peak_memory_mb(train_step, device)
    except Exception as error:  # a row that cannot run says why; the table goes on
        if not args.keep_going:
            raise
        row["note"] = f"{type(error).__name__}: {str(error).splitlines()[0][:100]}"
    prepared = model = None  # free the model before the next row
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def interleaved_rows(args) -> list[dict]:
    """--interleave: every model built first, then each of --repeats rounds times one inference
    of every model in turn, so that all of them see the same machine state (a shared
    machine's speed drifts by more than two close models differ)."""
    device = torch.device(args.device)
    height, width = args.resolution
    prepared = []
    for config_file in args.configs:
        prepared.append(_prepare(config_file, args, nat=False))
        if args.nat and prepared[-1].row["backbone_name"] in DINAT_BACKBONES:
            prepared.append(_prepare(config_file, args, nat=True))
    for entry in prepared:
        if args.flops:
            entry.row["gflops"] = gflops(entry.model, args.backbone_only, height, width, device)
        time_runs(entry.infer, device, args.warmup, 0)  # its warm-up only
    times = [[] for _ in prepared]
    for _ in range(args.repeats):
        for entry, samples in zip(prepared, times):
            samples += time_runs(entry.infer, device, 0, 1)
    for entry, samples in zip(prepared, times):
        _record_inference(entry, samples, args)
    return [entry.row for entry in prepared]


MODEL_COLUMNS = (
    "config",
    "backbone",
    "params M",
    "GFLOPs",
    "fwd ms (± IQR)",
    "imgs/s",
    "train step ms (± IQR)",
    "fwd peak MB",
    "train peak MB",
    "note",
)


def format_model_row(row: dict) -> str:
    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    return markdown_row(
        (
            row["config"],
            row["backbone"],
            num(row["params"], ".1f"),
            num(row["gflops"], ".1f"),
            format_ms(row["fwd"], row["fwd_iqr"]),
            num(row["imgs"], ".2f"),
            format_ms(row["train"], row["train_iqr"]),
            num(row["fwd_mem"], ".0f"),
            num(row["train_mem"], ".0f"),
            row["note"],
        )
    )


def run_models(args) -> list[dict]:
    device = torch.device(args.device)
    height, width = args.resolution
    what = "backbone only" if args.backbone_only else "Mask2Former (full model)"
    memory = memory_note(device)
    print(f"# Model benchmark ({what}): {device_description(device)}")
    targets = (
        "loss = mean square of the features"
        if args.backbone_only
        else f"{args.instances} random masks with random classes per image"
    )
    interleaved = "; each round one run of every config in turn" if args.interleave else ""
    print(
        f"# torch {torch.__version__}, input {height}x{width}, batch {args.batch}, "
        f"median ± IQR of {args.repeats} after {args.warmup} warm-up{interleaved}; train step "
        f"= forward ({targets}) + backward + the config's optimizer step; peak MB: {memory}; load "
        f"average at start: {load_average()}"
    )
    if args.opts:
        print(f"# opts: {' '.join(args.opts)}")
    print(markdown_header(MODEL_COLUMNS), flush=True)
    if args.interleave:
        rows = interleaved_rows(args)
        for row in rows:
            print(format_model_row(row))
        print(f"# load average at end: {load_average()}")
        return rows
    rows = []
    for config_file in args.configs:  # rows print as they finish
        rows.append(benchmark_config(config_file, args))
        print(format_model_row(rows[-1]), flush=True)
        if args.nat and rows[-1]["backbone_name"] in DINAT_BACKBONES:
            rows.append(benchmark_config(config_file, args, nat=True))
            print(format_model_row(rows[-1]), flush=True)
    print(f"# load average at end: {load_average()}")
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="KEY VALUE opts apply to every config, e.g. SOLVER.AMP.ENABLED False. --layer "
        "runs the layer benchmark (python -m dinat_m2f.benchmarks.layer --help).",
    )
    parser.add_argument(
        "--configs",
        "--config-file",
        nargs="+",
        required=True,
        metavar="YAML",
        help="configs to compare, one table row each",
    )
    parser.add_argument(
        "--resolution",
        type=parse_resolution,
        default=(512, 512),
        metavar="HxW",
        help="input size (default 512x512)",
    )
    add_run_arguments(parser, device=None, batch_flag="--batch-size", threads=True)
    parser.add_argument(
        "--nat", action="store_true", help="also time each DiNAT config as NAT (every dilation 1)"
    )
    parser.add_argument(
        "--backbone-only",
        action="store_true",
        help="time the backbone alone (training loss: mean square of the features)",
    )
    parser.add_argument("--flops", action="store_true", help="add fvcore GFLOPs (one image)")
    parser.add_argument("--skip-train", action="store_true", help="inference only")
    parser.add_argument(
        "--instances",
        type=int,
        default=8,
        help="random masks (with random classes) per training image",
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="a config that fails gets a note in its row instead of stopping",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="build every model first, then time the inferences in rounds, one run of every "
        "config per round (needs --skip-train)",
    )
    add_plot_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    check_plot_argument(parser, args)
    # "--configs a.yaml b.yaml KEY VALUE": the nargs="+" list swallows the opts; split them
    files = [c for c in args.configs if c.endswith((".yaml", ".yml"))]
    rest = [c for c in args.configs if not c.endswith((".yaml", ".yml"))]
    args.configs, args.opts = files, rest + list(args.opts)
    if not files:
        parser.error("--configs needs at least one .yaml file")
    missing = [c for c in files if not os.path.isfile(c)]
    if missing:
        parser.error(f"--configs: no such file(s) {missing}")
    if args.opts and args.opts[0] == "--":
        args.opts = args.opts[1:]
    if len(args.opts) % 2:
        parser.error(f"opts must be KEY VALUE pairs, got {args.opts}")
    check_run_args(parser, args, batch_flag="--batch-size")
    if args.instances < 1:
        parser.error(f"--instances must be >= 1, got {args.instances}")
    if args.interleave and not args.skip_train:
        parser.error("--interleave times inference only: add --skip-train")
    if args.interleave and args.keep_going:
        parser.error("--interleave builds every model first: without --keep-going")
    return args


def main(argv=None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--layer" in argv:  # the layer benchmark, kept reachable under its old flag
        from dinat_m2f.benchmarks import layer

        argv.remove("--layer")
        return layer.main(argv)
    args = parse_args(argv)
    with intra_op_threads(args.threads):
        rows = run_models(args)
    if args.plot:
        h, w = args.resolution
        title = f"Mask2Former by config, {h}x{w}: {device_description(torch.device(args.device))}"
        save_plot(model_bars(rows), title, args.plot)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
