#!/usr/bin/env python
"""Run a trained DiNAT + Mask2Former model on images, a video or the webcam and draw the results.

    python demo/demo.py --config-file CONFIG --input img1.jpg dir/ "more/*.png" --output out/ \\
        --opts MODEL.WEIGHTS model_final.pth
    python demo/demo.py --config-file CONFIG --video-input clip.mp4 --output out/clip.mp4 \\
        --opts MODEL.WEIGHTS model_final.pth
    python demo/demo.py --config-file CONFIG --webcam --output cam.avi --max-frames 300 \\
        --opts MODEL.WEIGHTS model_final.pth

On the built-in shapes (CPU):

    DETECTRON2_DATASETS=/tmp/d2data python demo/demo.py \\
        --config-file configs/builtin/maskformer2_dinat_mini_builtin_shapes.yaml \\
        --input /tmp/d2data/builtin_shapes/val --output /tmp/vis \\
        --opts MODEL.WEIGHTS output/model_final.pth MODEL.DEVICE cpu

What is drawn: the panoptic result when the model outputs one (MODEL.MASK_FORMER.TEST.
PANOPTIC_ON), else the instances with score >= --confidence-threshold (INSTANCE_ON), else the
per-pixel argmax of the semantic scores (SEMANTIC_ON). A model that outputs several shows the
panoptic one; `--show instance` / `--show semantic` picks another (an error when the config
does not enable it). Class names and colors: the metadata of DATASETS.TEST[0] (TRAIN[0]
without a test set), so the dataset must be registered (import dinat_m2f.data does that; the
files themselves are not read).

Inputs and outputs:
- `--input`: files, folders (their image files, sorted by name) and glob patterns. Images
  are drawn at their own size. `--output` is a folder (created) where each drawing is saved
  under its input's file name, in the input's format; it may be a file name (its extension
  picks the format) when a single image file is given. Without `--output` one line per image
  says how long it took and what was found.
- `--video-input` (a file OpenCV can read) and `--webcam` (camera 0): the drawn frames are
  written as a video of the source's frame rate and size, to the file `--output` names
  (.mp4/.m4v/.mov: mp4v, .avi: MJPG, .mkv: XVID) or, when `--output` is a folder, to
  `<folder>/<input stem>.mp4` (`webcam.mp4` for the camera). A progress bar shows the frame
  rate. The webcam runs until Ctrl-C or `--max-frames`.
- `--window` also shows the drawings in an OpenCV window (needs an OpenCV with GUI support;
  Esc stops).

Exit status: 0 when everything was drawn; 1 when some input images could not be read or
drawn (each one is named on stderr as it is skipped, and a summary count ends the run; the
others are drawn); 2 for errors found
before any processing: bad arguments, config, MODEL.WEIGHTS missing / unreadable / not fitting
the model (the keys are listed; `--allow-partial-weights` goes on anyway), a video or camera
that cannot be opened, `--parallel` without a GPU.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time
from pathlib import Path

_DEMO_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _DEMO_DIR.parent
for _path in (
    str(_REPO_ROOT),
    str(_DEMO_DIR),
):  # the package, and the demo's modules beside this file
    if _path not in sys.path:
        sys.path.insert(0, _path)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tqdm  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from visualization import SHOW_MODES, ShowModeError, VisualizationDemo  # noqa: E402

import dinat_m2f.data  # noqa: E402,F401  (registers the datasets: the metadata for drawing)
import dinat_m2f.modeling  # noqa: E402,F401  (registers the model)
from dinat_m2f.checkpoint import WeightsError  # noqa: E402
from dinat_m2f.engine.setup import load_cfg  # noqa: E402

DEFAULT_CONFIG = "configs/builtin/maskformer2_dinat_mini_builtin_shapes.yaml"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}
EXIT_OK, EXIT_SKIPPED, EXIT_ERROR = 0, 1, 2
WINDOW_NAME = "dinat_m2f demo"

logger = logging.getLogger("dinat_m2f.demo")


class DemoError(Exception):
    """An error found before processing: printed as one message, exit status 2."""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="DiNAT + Mask2Former demo: draw panoptic / instance / semantic predictions",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 all drawn, 1 some input images skipped, 2 error before processing.",
    )
    parser.add_argument(
        "--config-file",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"config file (default: {DEFAULT_CONFIG}, relative to the repository)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--webcam", action="store_true", help="take frames from camera 0")
    source.add_argument("--video-input", metavar="VIDEO", help="a video file OpenCV can read")
    source.add_argument(
        "--input",
        nargs="+",
        metavar="PATH",
        help="image files, folders (their images, sorted) or glob patterns ('dir/*.jpg')",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="images: a folder (created) for the drawings, or a file for a single image; "
        "video/webcam: a video file (.mp4, .avi, .mkv) or a folder for <input stem>.mp4",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="minimal score of the instances drawn (instance mode; default 0.5)",
    )
    parser.add_argument(
        "--show",
        choices=SHOW_MODES,
        default="auto",
        help="what to draw; auto: panoptic if the model outputs it, else instances, else semantic",
    )
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="run the model in one process per GPU, asynchronously (needs a CUDA GPU)",
    )
    parser.add_argument(
        "--allow-partial-weights",
        action="store_true",
        help="go on when MODEL.WEIGHTS is empty or does not fit the model (mismatched keys "
        "keep random values) instead of stopping with an error",
    )
    parser.add_argument(
        "--max-frames", type=int, metavar="N", help="video/webcam: stop after N frames"
    )
    parser.add_argument("--window", action="store_true", help="also show the drawings in a window")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides, e.g. MODEL.WEIGHTS model_final.pth MODEL.DEVICE cpu",
    )
    return parser


# --- inputs and outputs --------------------------------------------------------------------
def expand_inputs(patterns: list[str]) -> tuple[list[str], bool]:
    """The image paths of --input, in order, and whether any item named several files (a
    folder or a glob pattern). A folder gives its image files sorted by name; a pattern
    gives its matches sorted (folders among them expand likewise); a plain path is kept even
    when it does not exist (it is reported and skipped when read)."""
    paths: list[str] = []
    several = False
    for item in patterns:
        if os.path.isdir(item):
            several = True
            paths.extend(_images_in(item))
        elif glob.has_magic(item):
            several = True
            matches = sorted(glob.glob(os.path.expanduser(item)))
            if not matches:
                raise DemoError(f"--input {item!r}: no file matches the pattern")
            for match in matches:
                paths.extend(_images_in(match) if os.path.isdir(match) else [match])
        else:
            paths.append(item)
    if not paths:
        raise DemoError(
            f"--input {' '.join(patterns)}: no image files found "
            f"(image extensions: {', '.join(IMAGE_EXTENSIONS)})"
        )
    return paths, several


def _images_in(folder: str) -> list[str]:
    return sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, name))
    )


def image_output_paths(inputs: list[str], several: bool, output: str | None) -> list[str | None]:
    """Where each input's drawing goes: `output` itself for a single image file and an
    `output` with an image extension that is not a folder; else `output/<input file name>`
    (folders are created when the drawings are written). Two inputs with the same file name
    are an error."""
    if output is None:
        return [None] * len(inputs)
    single_file = (
        len(inputs) == 1
        and not several
        and not os.path.isdir(output)
        and not output.endswith(("/", os.sep))
        and output.lower().endswith(IMAGE_EXTENSIONS)
    )
    if single_file:
        return [output]
    looks_like_file = output.lower().endswith(IMAGE_EXTENSIONS) and not os.path.isdir(output)
    if looks_like_file or (os.path.exists(output) and not os.path.isdir(output)):
        raise DemoError(
            f"--output {output} is a file name, but {len(inputs)} input image(s)"
            f"{' from a folder or pattern' if several else ''} need a folder"
        )
    targets: dict[str, str] = {}
    paths = []
    for path in inputs:
        target = os.path.join(output, os.path.basename(path))
        if target in targets:
            raise DemoError(
                f"--input {targets[target]} and {path} would both be drawn to {target}; "
                "run them separately"
            )
        targets[target] = path
        paths.append(target)
    return paths


def video_output_path(output: str | None, stem: str) -> str | None:
    """The video file of --output: the path itself when it has a video extension, else
    `<output folder>/<stem>.mp4` (folders are created when the writer opens)."""
    if output is None:
        return None
    ext = os.path.splitext(output)[1].lower()
    if os.path.isdir(output) or output.endswith(("/", os.sep)) or not ext:
        return os.path.join(output, f"{stem}.mp4")
    if ext not in VIDEO_CODECS:
        raise DemoError(
            f"--output {output}: unknown video extension {ext!r}; use one of "
            f"{', '.join(VIDEO_CODECS)} or a folder"
        )
    return output


def open_video_writer(path: str, fps: float, width: int, height: int) -> cv2.VideoWriter:
    """A VideoWriter for `path` with the codec of its extension (VIDEO_CODECS)."""
    codec = VIDEO_CODECS[os.path.splitext(path)[1].lower()]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), fps, (width, height), True)
    if not writer.isOpened():
        raise DemoError(
            f"cannot write video {path} (codec {codec}, {width}x{height} at {fps:g} fps)"
        )
    return writer


def open_capture(source: str | int) -> cv2.VideoCapture:
    """An opened VideoCapture of a video file or a camera index, or DemoError naming it."""
    if isinstance(source, int):
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            capture.release()
            raise DemoError(
                f"--webcam: cannot open camera {source} (no camera on this machine, or it is "
                "in use / not permitted)"
            )
        return capture
    if not os.path.isfile(source):
        raise DemoError(f"--video-input {source}: no such file")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        capture.release()
        raise DemoError(f"--video-input {source}: OpenCV cannot read this video")
    return capture


def check_window() -> None:
    """DemoError when OpenCV cannot open windows (a headless build or no display)."""
    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
    except cv2.error as e:
        raise DemoError(
            "--window: OpenCV cannot open a window here (opencv-python-headless, or no "
            "display); use --output instead"
        ) from e


# --- runs ----------------------------------------------------------------------------------
def run_images(demo: VisualizationDemo, args, inputs: list[str], outputs: list[str | None]) -> int:
    skipped: list[str] = []
    bar = tqdm.tqdm(inputs, unit="img", disable=args.no_progress or len(inputs) < 2)
    for path, target in zip(bar, outputs):
        try:
            image = read_image(path, format="BGR")
        except Exception as e:
            reason = f"{type(e).__name__}: {e}".strip()
            tqdm.tqdm.write(f"demo: skipped {path}: cannot read image ({reason})", file=sys.stderr)
            skipped.append(path)
            continue
        start = time.perf_counter()
        try:
            predictions, vis = demo.run_on_image(image)
        except ShowModeError:
            raise  # the same for every image: an error of the run
        except Exception as e:
            reason = f"{type(e).__name__}: {e}".strip()
            tqdm.tqdm.write(f"demo: skipped {path}: inference failed ({reason})", file=sys.stderr)
            skipped.append(path)
            continue
        seconds = time.perf_counter() - start
        line = f"{path}: {seconds:.2f}s, {demo.describe(predictions)}"
        drawing = vis.get_image()[:, :, ::-1]  # RGB -> BGR
        if target is not None:
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            if not cv2.imwrite(target, np.ascontiguousarray(drawing)):
                tqdm.tqdm.write(f"demo: skipped {path}: cannot write {target}", file=sys.stderr)
                skipped.append(path)
                continue
            line += f" -> {target}"
        tqdm.tqdm.write(line)
        if args.window:
            cv2.imshow(WINDOW_NAME, drawing)
            if cv2.waitKey(0) == 27:  # Esc
                break
    bar.close()
    if skipped:
        print(
            f"demo: {len(skipped)} of {len(inputs)} input image(s) skipped (named above)",
            file=sys.stderr,
        )
        return EXIT_SKIPPED
    return EXIT_OK


def run_video(
    demo: VisualizationDemo, args, capture: cv2.VideoCapture, name: str, target: str | None
) -> int:
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not fps or not np.isfinite(fps) or fps <= 0 or fps > 1000:
        fps = 30.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not args.webcam else 0
    total = total if total > 0 else None
    if total is not None and args.max_frames is not None:
        total = min(total, args.max_frames)
    writer = open_video_writer(target, fps, width, height) if target else None
    frames = 0
    start = time.perf_counter()
    bar = tqdm.tqdm(total=total, unit="frame", desc=name, disable=args.no_progress)
    try:
        for drawing in demo.run_on_video(capture, max_frames=args.max_frames):
            if writer is not None:
                if drawing.shape[:2] != (height, width):  # a source whose header lies
                    drawing = cv2.resize(drawing, (width, height))
                writer.write(drawing)
            if args.window:
                cv2.imshow(WINDOW_NAME, drawing)
                if cv2.waitKey(1) == 27:
                    break
            frames += 1
            bar.update(1)
    except KeyboardInterrupt:
        logger.info("interrupted after %d frames", frames)
    finally:
        bar.close()
        capture.release()
        if writer is not None:
            writer.release()
    seconds = time.perf_counter() - start
    rate = frames / seconds if seconds > 0 else 0.0
    line = f"{name}: {frames} frames in {seconds:.1f}s ({rate:.2f} fps)"
    print(line + (f" -> {target}" if target else ""))
    if frames == 0:
        print(f"demo: {name}: no frame could be read", file=sys.stderr)
        return EXIT_SKIPPED
    return EXIT_OK


def setup_cfg(args):
    if not os.path.isfile(args.config_file):
        fallback = _REPO_ROOT / args.config_file  # the default is relative to the repository
        if args.config_file == DEFAULT_CONFIG and fallback.is_file():
            args.config_file = str(fallback)
        else:
            raise DemoError(f"--config-file {args.config_file}: no such file")
    try:
        cfg = load_cfg(args.config_file, args.opts)
    except Exception as e:
        raise DemoError(
            f"config {args.config_file} with --opts {args.opts}: {type(e).__name__}: {e}"
        ) from e
    cfg.freeze()
    return cfg


def main(argv: list[str] | None = None) -> int:
    """The demo; returns the exit status (0 ok, 1 inputs skipped, 2 error before processing)."""
    args = get_parser().parse_args(argv)
    logger.info("Arguments: %s", args)
    demo = None
    capture = None
    try:
        if args.confidence_threshold < 0 or args.confidence_threshold > 1:
            raise DemoError(f"--confidence-threshold {args.confidence_threshold}: use 0..1")
        if args.max_frames is not None and args.max_frames < 1:
            raise DemoError(f"--max-frames {args.max_frames}: use a positive number")
        if args.parallel and not torch.cuda.is_available():
            raise DemoError("--parallel runs one process per CUDA GPU, but no GPU is available")
        cfg = setup_cfg(args)
        # sources and outputs first: cheap to check, and no model is loaded for nothing
        if args.input:
            inputs, several = expand_inputs(args.input)
            outputs = image_output_paths(inputs, several, args.output)
        elif args.video_input:
            capture = open_capture(args.video_input)
            name = args.video_input
            target = video_output_path(args.output, Path(args.video_input).stem)
        else:
            capture = open_capture(0)
            name = "webcam"
            target = video_output_path(args.output, "webcam")
        if args.window:
            check_window()
        demo = VisualizationDemo(
            cfg,
            parallel=args.parallel,
            confidence_threshold=args.confidence_threshold,
            show=args.show,
            allow_partial_weights=args.allow_partial_weights,
        )
        if args.input:
            return run_images(demo, args, inputs, outputs)
        return run_video(demo, args, capture, name, target)
    except (DemoError, WeightsError, ValueError) as e:  # ShowModeError is a ValueError
        print(f"demo: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if capture is not None:
            capture.release()
        if demo is not None:
            demo.close()
        if args.window:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass


if __name__ == "__main__":
    setup_logger(name="fvcore", abbrev_name="fv")
    setup_logger(name="dinat_m2f", abbrev_name="m2f")
    setup_logger()
    sys.exit(main())
