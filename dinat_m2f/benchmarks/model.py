"""Model-level speed of Mask2Former with DiNAT, NAT and Swin backbones, side by side.

Model mode prints one row per config (and per NAT twin with --nat): parameters, optional
GFLOPs, inference time of a batch and images/s, the time of one training step (forward with
synthetic targets of random masks and classes, backward, the config's optimizer step) and the
peak memory of both, each time the median and inter-quartile range of --repeats runs after
--warmup runs (synchronised on GPU). Weights are random unless MODEL.WEIGHTS is among the
opts; MODEL.TVSWIN.WEIGHTS_IMAGENET is cleared unless given (no downloads).

Layer mode (--layer) times one "layer" of each kind, two blocks on the same channels-last
input: NAT (NA, NA), DiNAT (NA, dilated NA) and torchvision's Swin (window, shifted window),
at the same width, heads, kernel = window and MLP ratio, per level of --resolution.

Peak memory is the growth above what was allocated before the call (activations,
temporaries, gradients; not the weights); timing and memory: dinat_m2f/benchmarks/timing.py.

    python -m dinat_m2f.benchmarks.model --configs A.yaml B.yaml [--nat] [--resolution 512x512]
        [--batch-size 1] [--warmup 1] [--repeats 3] [--backbone-only] [--flops]
        [--skip-train] [--device cpu|cuda] [--threads N] [KEY VALUE ...]
    python -m dinat_m2f.benchmarks.model --layer [--layer-model tiny|large] [--resolution 224]
        [--kernel 7] [--batch-size 1] [--dtype float32]
    (tools/benchmark_model.py is the same command.)
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from dinat_m2f.benchmarks.plots import (
    add_plot_argument,
    check_plot_argument,
    layer_bars,
    model_bars,
    save_plot,
)
from dinat_m2f.benchmarks.timing import (
    device_description,
    format_ms,
    load_average,
    markdown_header,
    markdown_row,
    median_iqr,
    memory_note,
    peak_memory_mb,
    time_runs,
)

DINAT_BACKBONES = ("D2DiNAT", "D2DiNATs")
# (width of level 1, heads of level 1) of the layer-mode models: Swin-T / Swin-L widths (NAT /
# DiNAT blocks take the same width and heads here; head dim 32)
LAYER_MODELS = {"tiny": (96, 3), "large": (192, 6)}


# ------------------------------------------------------------------------------------------
# model mode


def parse_resolution(text: str) -> tuple[int, int]:
    """ "512x640" -> (512, 640); "512" -> (512, 512)."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes, default=0) < 1:
        raise argparse.ArgumentTypeError(
            f"--resolution must be HxW or S (positive ints), got {text!r}"
        )
    return sizes[0], sizes[-1]


def model_opts(opts: list[str], device: str) -> list[str]:
    """The user's opts with the device, and no weights or AMP-on-CPU unless asked for."""
    keys = set(opts[::2])
    extra = ["MODEL.DEVICE", device]
    if "MODEL.WEIGHTS" not in keys:
        extra += ["MODEL.WEIGHTS", ""]
    if "MODEL.TVSWIN.WEIGHTS_IMAGENET" not in keys:
        extra += ["MODEL.TVSWIN.WEIGHTS_IMAGENET", ""]
    if device == "cpu" and "SOLVER.AMP.ENABLED" not in keys:
        extra += ["SOLVER.AMP.ENABLED", "False"]  # detectron2's AMP is CUDA-only
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
                for v, (embed, depths, *_) in VARIANTS.items()
                if embed == c.EMBED_DIM and list(depths) == list(c.DEPTHS)
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
        return f"Swin {c.VARIANT} w{c.WINDOW_SIZE or SWIN_VARIANTS[c.VARIANT][3]}"
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
    amp = cfg.SOLVER.AMP
    if amp.ENABLED and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=getattr(torch, amp.PRECISION))
    return nullcontext


def benchmark_config(config_file: str, args, nat: bool = False) -> dict:
    """One table row: build, (GFLOPs), inference, training step."""
    from dinat_m2f.solver.optimizer import build_optimizer

    device = torch.device(args.device)
    cfg = load_config(config_file, args.opts, args.device, nat)
    label = backbone_label(cfg)
    name = Path(config_file).stem + (" (NAT)" if nat else "")
    row = dict(
        config=name,
        backbone=label,
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
    height, width = args.resolution
    torch.manual_seed(0)
    model = build(cfg, args.backbone_only)
    row["params"] = sum(p.numel() for p in model.parameters()) / 1e6
    autocast = autocast_of(cfg, device)
    generator = torch.Generator().manual_seed(0)
    batch = synthetic_batch(cfg, height, width, args.batch_size, args.instances, device, generator)
    images = torch.randn(args.batch_size, 3, height, width, generator=generator).to(device)

    try:
        if args.flops:
            row["gflops"] = gflops(model, args.backbone_only, height, width, device)
        model.eval()

        def infer():
            with torch.no_grad(), autocast():
                if args.backbone_only:
                    return model(images)
                return model([{k: v for k, v in x.items() if k != "instances"} for x in batch])

        times = time_runs(infer, device, args.warmup, args.repeats)
        row["fwd"], row["fwd_iqr"] = median_iqr(times)
        row["imgs"] = args.batch_size / row["fwd"]
        row["fwd_mem"] = peak_memory_mb(infer, device)

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
    model = None  # free the model before the next row
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


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
    print(
        f"# torch {torch.__version__}, input {height}x{width}, batch {args.batch_size}, "
        f"median ± IQR of {args.repeats} after {args.warmup} warm-up; train step = forward "
        f"({targets}) + backward + the config's optimizer step; peak MB: {memory}; load "
        f"average at start: {load_average()}"
    )
    if args.opts:
        print(f"# opts: {' '.join(args.opts)}")
    print(markdown_header(MODEL_COLUMNS), flush=True)
    rows = []
    for config_file in args.configs:  # rows print as they finish
        rows.append(benchmark_config(config_file, args))
        print(format_model_row(rows[-1]), flush=True)
        if args.nat and rows[-1]["backbone_name"] in DINAT_BACKBONES:
            rows.append(benchmark_config(config_file, args, nat=True))
            print(format_model_row(rows[-1]), flush=True)
    print(f"# load average at end: {load_average()}")
    return rows


# ------------------------------------------------------------------------------------------
# layer mode


def layer_modules(
    dim: int, heads: int, kernel: int, dilation: int, mlp_ratio: float
) -> dict[str, tuple[str, nn.Module]]:
    """{kind: (blocks, two-block module)} for NAT, DiNAT and Swin at one width."""
    from dinat_m2f.modeling.backbone.dinat import NATBlock
    from dinat_m2f.modeling.backbone.torchvision_swin import swin_blocks

    def na(d):
        return NATBlock(dim, heads, kernel, d, mlp_ratio=mlp_ratio)

    return {
        "NAT": ("NA(d=1) + NA(d=1)", nn.Sequential(na(1), na(1))),
        "DiNAT": (f"NA(d=1) + NA(d={dilation})", nn.Sequential(na(1), na(dilation))),
        "Swin": ("W-MSA + SW-MSA", nn.Sequential(*swin_blocks(dim, heads, kernel, mlp_ratio))),
    }


LAYER_COLUMNS = (
    "level",
    "side",
    "tokens",
    "dim",
    "heads",
    "k",
    "layer",
    "blocks",
    "fwd ms (± IQR)",
    "fwd+bwd ms (± IQR)",
    "fwd / Swin",
    "fwd+bwd / Swin",
    "peak MB",
)


def run_layers(args) -> list[dict]:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    width0, heads0 = LAYER_MODELS[args.layer_model]
    height, width = args.resolution
    memory = memory_note(device)
    print(f"# Layer benchmark ({args.layer_model} widths): {device_description(device)}")
    print(
        f"# torch {torch.__version__}, dtype {args.dtype}, batch {args.batch_size}, input "
        f"{height}x{width} -> level sides /4../32, kernel = window {args.kernel}, MLP ratio "
        f"{args.mlp_ratio}, DiNAT dilation = largest with side // d >= k; median ± IQR of "
        f"{args.repeats} after {args.warmup} warm-up; peak MB (fwd+bwd): {memory}; load "
        f"average at start: {load_average()}"
    )
    print(markdown_header(LAYER_COLUMNS), flush=True)
    rows = []
    for level in args.levels:
        side_h, side_w = (-(-s // 2 ** (level + 1)) for s in (height, width))
        dim, heads = width0 * 2 ** (level - 1), heads0 * 2 ** (level - 1)
        dilation = max(1, min(side_h, side_w) // args.kernel)
        generator = torch.Generator().manual_seed(level)
        x = torch.randn(args.batch_size, side_h, side_w, dim, generator=generator).to(device, dtype)
        level_rows = []
        for kind, (blocks, module) in layer_modules(
            dim, heads, args.kernel, dilation, args.mlp_ratio
        ).items():
            torch.manual_seed(0)
            module = module.to(device, dtype)
            leaf = x.clone().requires_grad_()

            def forward(module=module, x=x):
                with torch.no_grad():
                    module(x)

            def forward_backward(module=module, leaf=leaf):
                module(leaf).sum().backward()
                module.zero_grad(set_to_none=True)
                leaf.grad = None

            module.eval()  # no dropout / drop path either way; eval for forward-only
            fwd = median_iqr(time_runs(forward, device, args.warmup, args.repeats))
            module.train()
            fwdbwd = median_iqr(time_runs(forward_backward, device, args.warmup, args.repeats))
            mem = peak_memory_mb(forward_backward, device)
            level_rows.append(
                dict(
                    level=level,
                    side=f"{side_h}x{side_w}",
                    tokens=side_h * side_w,
                    dim=dim,
                    heads=heads,
                    kernel=args.kernel,
                    kind=kind,
                    blocks=blocks,
                    fwd=fwd,
                    fwdbwd=fwdbwd,
                    mem=mem,
                )
            )
        swin = next(r for r in level_rows if r["kind"] == "Swin")
        for r in level_rows:
            r["fwd_vs_swin"] = r["fwd"][0] / swin["fwd"][0]
            r["fwdbwd_vs_swin"] = r["fwdbwd"][0] / swin["fwdbwd"][0]
            print(
                markdown_row(
                    (
                        r["level"],
                        r["side"],
                        r["tokens"],
                        r["dim"],
                        r["heads"],
                        r["kernel"],
                        r["kind"],
                        r["blocks"],
                        format_ms(*r["fwd"]),
                        format_ms(*r["fwdbwd"]),
                        f"{r['fwd_vs_swin']:.2f}",
                        f"{r['fwdbwd_vs_swin']:.2f}",
                        f"{r['mem']:.1f}",
                    )
                ),
                flush=True,
            )
        rows.extend(level_rows)
    print(
        f"# x / Swin: time of the row over Swin's at that level (below 1: faster than Swin); "
        f"load average at end: {load_average()}"
    )
    return rows


# ------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="KEY VALUE opts apply to every config, e.g. SOLVER.AMP.ENABLED False.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--configs",
        "--config-file",
        nargs="+",
        metavar="YAML",
        help="configs to compare, one table row each",
    )
    mode.add_argument(
        "--layer", action="store_true", help="layer mode: NAT vs DiNAT vs Swin blocks (no config)"
    )
    parser.add_argument(
        "--resolution",
        type=parse_resolution,
        default=None,
        metavar="HxW",
        help="input size (default 512x512; 224x224 with --layer)",
    )
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--device", default=None, help="cpu or cuda[:i] (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    model = parser.add_argument_group("model mode")
    model.add_argument(
        "--nat", action="store_true", help="also time each DiNAT config as NAT (every dilation 1)"
    )
    model.add_argument(
        "--backbone-only",
        action="store_true",
        help="time the backbone alone (training loss: mean square of the features)",
    )
    model.add_argument("--flops", action="store_true", help="add fvcore GFLOPs (one image)")
    model.add_argument("--skip-train", action="store_true", help="inference only")
    model.add_argument(
        "--instances",
        type=int,
        default=8,
        help="random masks (with random classes) per training image",
    )
    model.add_argument(
        "--keep-going",
        action="store_true",
        help="a config that fails gets a note in its row instead of stopping",
    )
    layer = parser.add_argument_group("layer mode")
    layer.add_argument(
        "--layer-model",
        default="tiny",
        choices=sorted(LAYER_MODELS),
        help="widths: tiny 96/192/384/768 (heads 3..24), large 192.. (6..48)",
    )
    layer.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    layer.add_argument("--kernel", type=int, default=7, help="NA kernel = Swin window")
    layer.add_argument("--mlp-ratio", type=float, default=4.0)
    layer.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    add_plot_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    check_plot_argument(parser, args)
    # "--configs a.yaml b.yaml KEY VALUE": the nargs="+" list swallows the opts; split them
    if args.configs:
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
    if args.layer and args.opts:
        parser.error(f"--layer takes no config opts, got {args.opts}")
    if args.resolution is None:
        args.resolution = (224, 224) if args.layer else (512, 512)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device is available")
    if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0 or args.instances < 1:
        parser.error(
            "--batch-size, --repeats and --instances must be >= 1 and --warmup >= 0, got "
            f"{args.batch_size}, {args.repeats}, {args.instances}, {args.warmup}"
        )
    if args.kernel < 3 or args.kernel % 2 == 0:
        parser.error(f"--kernel must be odd and >= 3, got {args.kernel}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows = run_layers(args) if args.layer else run_models(args)
        if args.plot:
            what = "one layer of each kind" if args.layer else "Mask2Former by config"
            device = device_description(torch.device(args.device))
            title = f"{what}, {args.resolution[0]}x{args.resolution[1]}: {device}"
            save_plot((layer_bars if args.layer else model_bars)(rows), title, args.plot)
        return rows
    finally:
        torch.set_num_threads(threads)  # in-process callers keep their setting


if __name__ == "__main__":
    main(sys.argv[1:])
