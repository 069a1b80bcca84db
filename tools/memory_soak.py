#!/usr/bin/env python
"""Long inference holds memory: runs the demo (demo/visualization.py's VisualizationDemo: predict
and draw) over many generated images and prints the resident memory (RSS) every `--every`
images; exits with status 1 when it is not flat, 2 on a config file that is not plain data.

    python tools/memory_soak.py                       # 1000 images, built-in config, random weights
    python tools/memory_soak.py --images 1000 --every 100 --opts MODEL.WEIGHTS model_final.pth
    python tools/memory_soak.py --small-model       # a small model at 96 px: minutes on a CPU

**Flat** means: after the first `--warmup` images (caches and lazily built kernels settle;
every image size has been seen), the RSS measured every `--every` images never exceeds the
RSS at image `--warmup` by more than `--max-growth-mb` (default 4 MB): a leak of 5 KB per image
fails it over 1,000 images. Each measurement is taken after `gc.collect()` and glibc's
`malloc_trim(0)`, which hands the allocator's free pages back, so that RSS counts memory in
use; without it RSS wanders in a band of some 20 MB with the content of the last images (the
band after the warm-up is printed too, and does not drift). RSS is read from
/proc/self/statm; on a GPU the allocated CUDA memory is printed as well.

Images are rendered by the built-in dataset's generator (shapes on textures), cycling through
four sizes and aspect ratios, so that shape-keyed caches are exercised as well; with no
MODEL.WEIGHTS, random weights of the config's model are saved to a temporary file and loaded
the way the demo loads weights.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(
    _REPO_ROOT, "configs", "builtin", "maskformer2_dinat_mini_builtin_shapes.yaml"
)
# (height, width) cycled through by the generated images
SIZES = ((160, 160), (144, 208), (208, 144), (192, 192))
MB = 1024 * 1024
# --small-model: the model of the train_net tests (one block per level, 32 wide, 96-px inputs)
SMALL_MODEL = [
    "MODEL.DINAT.EMBED_DIM", "32", "MODEL.DINAT.DEPTHS", "[1, 1, 1, 1]",
    "MODEL.DINAT.NUM_HEADS", "[1, 2, 4, 8]", "MODEL.DINAT.DILATIONS", "[[2], [1], [1], [1]]",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.SEM_SEG_HEAD.MASK_DIM", "32", "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
    "MODEL.MASK_FORMER.NHEADS", "4", "MODEL.MASK_FORMER.DEC_LAYERS", "2",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8", "INPUT.MIN_SIZE_TEST", "96",
    "TEST.DETECTIONS_PER_IMAGE", "20",
]  # fmt: skip


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def release_free_heap() -> bool:
    """Returns the C heap's free pages to the system (glibc's malloc_trim), so that RSS counts
    memory in use rather than what the allocator keeps for reuse; False where unavailable."""
    from dinat_m2f.benchmarks.timing import libc

    c = libc()
    if c is None or not hasattr(c, "malloc_trim"):
        return False
    c.malloc_trim(0)
    return True


def synthetic_images(count: int, sizes=SIZES, seed: int = 0) -> Iterator[np.ndarray]:
    """`count` BGR uint8 images of the built-in dataset's kind, sizes cycling through `sizes`."""
    from dinat_m2f.data.synthetic.render import render_image

    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        rgb = render_image(rng, max(h, w))["image"][:h, :w]
        yield np.ascontiguousarray(rgb[:, :, ::-1])


@dataclass
class SoakResult:
    warmup: int
    max_growth_mb: float
    points: list[tuple[int, float]] = field(default_factory=list)  # (images done, RSS in MB)
    raw_points: list[tuple[int, float]] = field(default_factory=list)  # RSS before malloc_trim
    cuda_points: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def growth_mb(self) -> float:
        """Largest RSS after the warm-up above the RSS at the warm-up point."""
        base = dict(self.points)[self.warmup]
        return max(rss for n, rss in self.points if n >= self.warmup) - base

    @property
    def raw_band_mb(self) -> tuple[float, float]:
        """Lowest and highest RSS before malloc_trim after the warm-up (allocator noise)."""
        values = [rss for n, rss in self.raw_points if n >= self.warmup]
        return min(values), max(values)

    @property
    def flat(self) -> bool:
        return self.growth_mb <= self.max_growth_mb


def soak(
    run_one: Callable[[np.ndarray], Any],
    images: Iterable[np.ndarray],
    every: int,
    warmup: int,
    max_growth_mb: float,
    report: Callable[[str], None] = print,
) -> SoakResult:
    """Calls `run_one` on each image, measuring RSS before the first and every `every`
    images; `warmup` must be a multiple of `every`."""
    if every <= 0 or warmup < 0 or warmup % every:
        raise ValueError(f"every={every}, warmup={warmup}: warmup must be a multiple of every > 0")
    import torch

    cuda = torch.cuda.is_available()
    result = SoakResult(warmup=warmup, max_growth_mb=max_growth_mb)

    def measure(done: int) -> None:
        gc.collect()
        raw = rss_bytes() / MB
        release_free_heap()
        rss = rss_bytes() / MB
        result.points.append((done, rss))
        result.raw_points.append((done, raw))
        line = f"{done:6d} images  RSS {rss:9.1f} MB (before malloc_trim {raw:7.1f})"
        if done >= warmup and result.points[0][0] <= warmup:
            line += f"  ({rss - dict(result.points)[warmup]:+.1f} MB since image {warmup})"
        if cuda:
            allocated = torch.cuda.memory_allocated() / MB
            result.cuda_points.append((done, allocated))
            line += f"  CUDA allocated {allocated:8.1f} MB"
        report(line)

    start = time.perf_counter()
    measure(0)
    done = 0
    for image in images:
        run_one(image)
        done += 1
        if done % every == 0:
            measure(done)
    result.seconds = time.perf_counter() - start
    if warmup not in dict(result.points):
        raise ValueError(f"only {done} images: fewer than the warm-up of {warmup}")
    return result


def _save_random_weights(cfg, folder: str) -> str:
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=folder).save("random_weights")
    return os.path.join(folder, "random_weights.pth")


def build_demo(config_file: str, opts: list[str], folder: str, draw: bool):
    """(run_one, cfg): the demo's VisualizationDemo.run_on_image (predict + draw,
    `.get_image()`), or with draw=False only its predictor, for `config_file` + `opts`."""
    sys.path.insert(0, os.path.join(_REPO_ROOT, "demo"))
    from visualization import VisualizationDemo

    from dinat_m2f.engine.setup import load_cfg

    cfg = load_cfg(config_file, opts)
    if not cfg.MODEL.WEIGHTS:
        cfg.MODEL.WEIGHTS = _save_random_weights(cfg, folder)
    cfg.freeze()
    demo = VisualizationDemo(cfg)
    if draw:
        return (lambda image: demo.run_on_image(image)[1].get_image()), cfg
    return demo.predictor, cfg


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--images", type=int, default=1000, help="images to run (default 1000)")
    parser.add_argument("--every", type=int, default=100, help="print RSS every N images")
    parser.add_argument(
        "--warmup", type=int, default=200, help="images before the flatness baseline"
    )
    parser.add_argument(
        "--max-growth-mb", type=float, default=4.0, help="allowed growth after warm-up"
    )
    parser.add_argument("--no-draw", action="store_true", help="only predict, do not draw")
    parser.add_argument(
        "--small-model",
        action="store_true",
        help="the train_net tests' small model at 96 px (before --opts)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", metavar="FILE", help="also write the measurements as json")
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from dinat_m2f.engine.config_file import ConfigFileError

    with tempfile.TemporaryDirectory(prefix="memory_soak") as folder:
        opts = (SMALL_MODEL if args.small_model else []) + list(args.opts)
        try:
            run_one, cfg = build_demo(args.config_file, opts, folder, draw=not args.no_draw)
        except ConfigFileError as error:
            print(f"memory_soak: error: {error}", file=sys.stderr)
            return 2
        print(
            f"memory soak: {args.images} images, "
            f"{'predict + draw' if not args.no_draw else 'predict'}"
            f", {os.path.relpath(args.config_file)}{' --small-model' * args.small_model} "
            f"{' '.join(args.opts)}, MODEL.DEVICE "
            f"{cfg.MODEL.DEVICE}, torch threads {torch.get_num_threads()}"
        )
        with torch.no_grad():
            result = soak(
                run_one, synthetic_images(args.images), args.every, args.warmup, args.max_growth_mb
            )
    verdict = "flat" if result.flat else "NOT flat"
    low, high = result.raw_band_mb
    print(
        f"{verdict}: RSS grew {result.growth_mb:+.1f} MB after image {args.warmup} (allowed "
        f"{args.max_growth_mb} MB); before malloc_trim it stayed within {low:.1f}..{high:.1f} MB; "
        f"{result.seconds:.0f} s, {1000 * result.seconds / max(args.images, 1):.0f} ms per image"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    **asdict(result),
                    "growth_mb": result.growth_mb,
                    "flat": result.flat,
                    "raw_band_mb": result.raw_band_mb,
                },
                f,
                indent=1,
            )
    return 0 if result.flat else 1


if __name__ == "__main__":
    sys.exit(main())
