#!/usr/bin/env python
"""Export a model's inference to ONNX or a torch.export program (detectron2's convention).

    python tools/deploy/export_model.py --config-file CONFIG --format onnx --output model.onnx \
        [--sample-image img.jpg | --input-size H W] [--fixed-size | --max-size N] \
        [--allow-random-weights] MODEL.WEIGHTS w.pth

The graph takes a normalised, zero-padded image (1, 3, H, W) float32 (detectors also the
image's size inside the padding) and returns the raw outputs (Mask2Former: class and mask
logits; detectors: boxes, scores, classes and mask probabilities); `dinat_m2f/export/deploy/`
post-processes them with numpy alone. The sample (the image, resized as at test time, or a
blank image of --input-size, default INPUT.MIN_SIZE_TEST square) is traced; the file accepts
every height and width that shares its graph (multiples of 32 up to --max-size; see
docs/export.md), or its size only with --fixed-size. The accepted sizes are printed and stored
in the file. Exit status 2 with a message on a model or option that cannot be exported.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

import dinat_m2f  # noqa: E402,F401  (registers the models)
from dinat_m2f.checkpoint import WeightsError, load_model_weights  # noqa: E402
from dinat_m2f.engine.config_file import ConfigFileError  # noqa: E402
from dinat_m2f.engine.setup import load_cfg  # noqa: E402
from dinat_m2f.export import FORMATS, NotExportableError, export_model  # noqa: E402
from dinat_m2f.export.exporter import check_exportable, divisibility_of  # noqa: E402
from dinat_m2f.export.sizes import DEFAULT_MAX_SIZE  # noqa: E402

EXIT_ERROR = 2


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    parser.add_argument("--output", required=True, help="the file to write")
    parser.add_argument("--sample-image", help="an image traced at its test-time size")
    parser.add_argument(
        "--input-size", type=int, nargs=2, metavar=("H", "W"), help="size of a blank sample"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--fixed-size", action="store_true", help="accept the sample's size only")
    size.add_argument(
        "--max-size",
        type=int,
        default=DEFAULT_MAX_SIZE,
        metavar="N",
        help=f"largest accepted height / width (default {DEFAULT_MAX_SIZE})",
    )
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="export without MODEL.WEIGHTS (random initialisation; for testing the export)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return parser


def sample_input(cfg, args, model) -> torch.Tensor:
    """(1, 3, H, W) normalised image padded to the size divisibility."""
    div = divisibility_of(model)
    if args.sample_image:
        import cv2

        image = cv2.imread(args.sample_image, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"--sample-image {args.sample_image}: not a readable image")
        if cfg.INPUT.FORMAT == "RGB":
            image = image[:, :, ::-1]
        resize = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        image = resize.get_transform(image).apply_image(image)
        pixels = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
    else:
        height, width = args.input_size or (cfg.INPUT.MIN_SIZE_TEST,) * 2
        if height < 1 or width < 1:
            raise ValueError(f"--input-size {height} {width}: sizes must be positive")
        pixels = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1).expand(-1, height, width)
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(-1, 1, 1)
    normalised = (pixels - mean) / std
    height, width = normalised.shape[-2:]
    padded = torch.zeros(
        1, normalised.shape[0], math.ceil(height / div) * div, math.ceil(width / div) * div
    )
    padded[0, :, :height, :width] = normalised
    return padded


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        cfg = load_cfg(args.config_file, args.opts)
        check_exportable(cfg)
        model = build_model(cfg).eval()
        load_model_weights(
            model,
            cfg.MODEL.WEIGHTS,
            allow_partial=args.allow_random_weights,
            partial_option="--allow-random-weights",
        )
        sample = sample_input(cfg, args, model)
        if args.max_size < divisibility_of(model):
            raise ValueError(f"--max-size {args.max_size}: must be at least the size divisibility")
        result = export_model(
            cfg, model, sample, args.output, args.format, not args.fixed_size, args.max_size
        )
    except (NotExportableError, WeightsError, ConfigFileError, ValueError) as error:
        print(f"export_model: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    sizes = result.sizes
    accepted = (
        f"fixed size {sizes.min_height}x{sizes.min_width} ({result.fixed_reason})"
        if sizes.fixed
        else f"height {sizes.min_height}..{sizes.max_height}, width {sizes.min_width}.."
        f"{sizes.max_width}, multiples of {sizes.divisibility}"
    )
    print(
        f"wrote {result.path} ({args.format}, {result.bytes / 2**20:.1f} MiB, "
        f"{result.seconds:.1f} s); input (1, 3, H, W) float32 normalised: {accepted}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
