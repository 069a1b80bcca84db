"""Training-step speed of a train_net config on the CPU with and without this project's CPU
speed-ups, interleaved in one process (default: `make demo`'s built-in config).

Variants, each with its own optimizer over the one model, fed by the config's train loader
(with torch's DataLoader defaults, or with this project's sample transfer from the workers,
data/loaders.py: samples_in_flight, share_by_filename):

    as filed                  NA backend "unfused" (qk, softmax, av), the per-parameter
                              optimizer loop, torch's loader defaults
    fused NA                  NA backend "auto" (the fused CPU NA kernels), the loop
    fused NA + step           "auto" and the fused optimizer step
    fused NA + step + loader  and the tuned loader: what train_net.py runs
    ... + AMP bfloat16        the same with SOLVER.AMP.PRECISION bfloat16 (mixed precision,
                              engine/amp.py): a change of recipe, not of implementation, so
                              shown beside the float32 rows; fast on CPUs with bfloat16 units
                              (the header says whether this one has them)
    NA skipped (bound)        as train_net.py, but each NA layer's attention replaced by its
                              value (out = v, no NA work forward or backward): not a model,
                              the time the step would take if NA cost nothing, so its speed-up
                              bounds what any NA kernel can buy; left out, with a note
                              saying why, where NA layers use attention dropout

Each round runs every variant in turn, one untimed iteration and then --block timed ones, so
that all of them see the same machine state (these shared machines change speed from minute
to minute); the table gives the median seconds per iteration and the speed-up over "as
filed". The config's own data sampling varies the image sizes, so use enough rounds.

    python -m dinat_m2f.benchmarks.training                       # 4 rounds of 5 iterations
    python -m dinat_m2f.benchmarks.training --rounds 2 --block 3 --config-file CONFIG K V ...

Datasets are found under $DETECTRON2_DATASETS (default ./datasets), as for train_net.py.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from dinat_m2f.benchmarks.timing import (
    cpu_bfloat16_units,
    device_description,
    load_average,
    markdown_header,
    markdown_row,
)

DEMO_CONFIG = "configs/builtin/maskformer2_dinat_mini_builtin_shapes.yaml"
AS_FILED = "as filed"
SKIPPED = "skipped"  # not a backend: the attention replaced by its value (na_skipped)
# name -> (NA backend, fused optimizer step, tuned loader transfer, autocast dtype)
VARIANTS = {
    AS_FILED: ("unfused", False, False, None),
    "fused NA": ("auto", False, False, None),
    "fused NA + step": ("auto", True, False, None),
    "fused NA + step + loader": ("auto", True, True, None),
    "NA skipped (bound)": (SKIPPED, True, True, None),
    "fused NA + step + loader + AMP bfloat16": ("auto", True, True, torch.bfloat16),
}


@contextlib.contextmanager
def na_skipped():
    """Inside the block every na1d / na2d call returns its value (a fresh contiguous copy, as
    the real op returns a fresh output): the model's NA work removed, all else unchanged."""
    from dinat_m2f.layers import na

    real = na._attention_op

    def value_only(op, query, key, value, rpb, kernel, dilation, scale, backend):
        return value.clone(memory_format=torch.contiguous_format)

    na._attention_op = value_only
    try:
        yield
    finally:
        na._attention_op = real


def skip_blockers(model: torch.nn.Module) -> list[str]:
    """The NA layers that na_skipped() cannot skip, as "name (p=...)": those with attention
    dropout take the separate qk / av ops in training, so they would still do their NA work
    and void the bound."""
    from dinat_m2f.layers.neighborhood_attention import NeighborhoodAttention2D

    return [
        f"{name} (p={module.attn_drop.p})"
        for name, module in model.named_modules()
        if isinstance(module, NeighborhoodAttention2D) and module.attn_drop.p > 0
    ]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=DEMO_CONFIG)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--block", type=int, default=5, help="timed iterations per variant and round"
    )
    parser.add_argument("--warmup", type=int, default=6, help="untimed iterations at the start")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    args = parser.parse_args(argv)
    for name in ("rounds", "block"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if len(args.opts) % 2:
        parser.error(f"config options come in KEY VALUE pairs, got {args.opts}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import dinat_m2f.data  # noqa: F401  (registers the datasets)
    import dinat_m2f.modeling  # noqa: F401  (registers the models)
    from dinat_m2f.data.dataset_mappers import build_dataset_mapper
    from dinat_m2f.data.loaders import build_train_loader
    from dinat_m2f.engine import Trainer
    from dinat_m2f.engine.setup import load_cfg
    from dinat_m2f.ops.na.dispatch import backend_env
    from dinat_m2f.solver import build_optimizer

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = load_cfg(args.config_file, ["MODEL.DEVICE", "cpu", *args.opts])
    cfg.freeze()
    torch.manual_seed(max(cfg.SEED, 0))
    model = Trainer.build_model(cfg)
    model.train()
    # without a valid bound, leave its row out and say why; the other rows stay valid
    blockers = skip_blockers(model)
    variants = {
        name: spec for name, spec in VARIANTS.items() if not (blockers and spec[0] == SKIPPED)
    }
    optimizers = {fused: build_optimizer(cfg, model, fused=fused) for fused in (True, False)}
    mapper = build_dataset_mapper(cfg, is_train=True)
    loaders = {t: iter(build_train_loader(cfg, mapper, tuned_transfer=t)) for t in (True, False)}

    def step(optimizer, tuned: bool, amp: torch.dtype | None = None) -> None:
        # as engine/amp.py's trainer: the forward autocast, no scaler for bfloat16
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            losses = model(next(loaders[tuned]))
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    times = {name: [] for name in variants}
    start_load = load_average()
    for _ in range(args.warmup):
        for tuned in loaders:
            step(optimizers[True], tuned)
    for _ in range(args.rounds):
        for name, (backend, fused, tuned, amp) in variants.items():
            with na_skipped() if backend == SKIPPED else backend_env(backend):
                step(optimizers[fused], tuned, amp)
                for _ in range(args.block):
                    t0 = time.perf_counter()
                    step(optimizers[fused], tuned, amp)
                    times[name].append(time.perf_counter() - t0)
    print(f"# Training step: {device_description(torch.device('cpu'))}")
    print(
        f"# torch {torch.__version__}, {args.config_file}, {cfg.SOLVER.IMS_PER_BATCH} images per "
        f"step; {args.rounds} rounds of {args.block} timed iterations per variant, interleaved; "
        f"load average at start: {start_load}; bfloat16 units: {cpu_bfloat16_units()}"
    )
    columns = ["variant", "NA backend", "optimizer step", "loader", "precision", "median s/it"]
    print(markdown_header([*columns, "speed-up"]))
    # speed-ups from the medians as printed, so that every row checks out from the table alone
    medians = {name: round(statistics.median(times[name]), 3) for name in variants}
    base = medians[AS_FILED]
    for name, (backend, fused, tuned, amp) in variants.items():
        median = medians[name]
        step_kind = "fused" if fused else "per-parameter loop"
        loader = "tuned" if tuned else "torch defaults"
        precision = "float32" if amp is None else f"AMP {str(amp).removeprefix('torch.')}"
        cells = [name, backend, step_kind, loader, precision, f"{median:.3f}"]
        print(markdown_row([*cells, f"{base / median:.2f}x"]))
    if blockers:
        print(
            "# NA skipped (bound): left out, NA layers with attention dropout would still do "
            f"their NA work (set MODEL.DINAT.ATTN_DROP_RATE 0 to measure it): {', '.join(blockers)}"
        )
    else:
        print(
            "# NA skipped (bound): the step with every NA call replaced by its value; its "
            "speed-up is the most that faster NA kernels alone could give"
        )
    print(f"# load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
