#!/usr/bin/env python
"""Web demo (Gradio): an image or a short video in, the model's panoptic / instance / semantic
prediction drawn with detectron2's Visualizer, the segment list and the inference time.

    make app                                    # the built-in model of `make demo`
    python demo/app.py                          # the same, on http://127.0.0.1:7860
    python demo/app.py --model CONFIG WEIGHTS [--model CONFIG2 WEIGHTS2 ...] \\
        [--device cpu|cuda] [--host 0.0.0.0] [--port 7860] [--opts KEY VALUE ...]

Models are chosen by whoever starts the app (`--model`, repeatable; the page offers them in a
list), never by a page visitor: a visitor uploads images and videos only. Configs and
checkpoints are read as data (dinat_m2f.engine.config_file, dinat_m2f.checkpoint). The default
is the built-in model that `make demo` trains (output/builtin_shapes/model_final.pth); until
it exists the page says how to train it.

Uploads are not trusted: files over --max-upload-mb are refused by Gradio before they reach
the model, images over --max-megapixels and files that do not decode are refused with a
message (never a stack trace), videos are cut at --max-video-frames. Requests wait in one
queue (--queue-size) and --concurrency of them run the model at a time (default 1: one model
run at a time on the CPU). Drawings are made with numpy's random generator seeded to 0
(detectron2's Visualizer jitters colours with it), so the same image gives the same picture
as `demo/demo.py` would draw under that seed.
"""

from __future__ import annotations

import argparse
import atexit
import html
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

_DEMO_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _DEMO_DIR.parent
for _path in (str(_REPO_ROOT), str(_DEMO_DIR)):  # the package, and predictor.py beside this file
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a demo server

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data.catalog import Metadata  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from PIL import Image  # noqa: E402
from predictor import predictions_to_cpu  # noqa: E402
from visualization import (  # noqa: E402
    ShowModeError,
    VisualizationDemo,
    available_modes,
    choose_mode,
)

import dinat_m2f.data  # noqa: E402,F401  (registers the datasets: the metadata for drawing)
import dinat_m2f.modeling  # noqa: E402,F401  (registers the model)
from dinat_m2f.checkpoint import WeightsError  # noqa: E402
from dinat_m2f.data.datasets.layout import datasets_root  # noqa: E402
from dinat_m2f.engine.setup import load_cfg  # noqa: E402

logger = logging.getLogger("dinat_m2f.app")

TASKS = ("panoptic", "instance", "semantic")
BUILTIN_CONFIG = "configs/builtin/maskformer2_dinat_mini_builtin_shapes.yaml"
BUILTIN_WEIGHTS = "output/builtin_shapes/model_final.pth"
SEGMENT_COLUMNS = ["segment", "class", "score", "area (px)", "area (%)"]
IMAGE_HEIGHT = 360  # pixels on the page; the images keep their size
DRAWING_SEED = 0  # numpy's global seed while drawing (the Visualizer's colour jitter)
VIDEO_SUFFIX, VIDEO_FOURCC = ".webm", "VP80"  # VP8 in WebM: OpenCV writes it, browsers play it
OUTPUT_LIFETIME_S = 3600  # drawn images and videos are kept this long (Gradio's cache, ours)


class Refusal(Exception):
    """A request the app turns down; the message is shown on the page as it is."""


@dataclass(frozen=True)
class ModelSpec:
    """A model offered on the page: its label, config file and weights file."""

    label: str
    config_file: str
    weights: str

    @property
    def is_builtin(self) -> bool:
        return Path(self.config_file).resolve() == (_REPO_ROOT / BUILTIN_CONFIG).resolve()


@dataclass(frozen=True)
class Limits:
    """What an upload may be: bytes, pixels per image or frame, frames of a video."""

    max_upload_mb: float = 10.0
    max_megapixels: float = 16.0
    max_video_frames: int = 60


class Segment(NamedTuple):
    """One row of the segment list."""

    segment: int
    name: str
    score: float | None  # None: the output has no per-segment score (panoptic, semantic)
    area: int
    percent: float


# --- the models ----------------------------------------------------------------------------
class ModelStore:
    """The models of the page, each loaded on first use and kept (one VisualizationDemo per
    model; the task is chosen per request when drawing)."""

    def __init__(
        self, specs: list[ModelSpec], device: str, opts: list[str], confidence: float
    ) -> None:
        self.specs = {spec.label: spec for spec in specs}
        self.device, self.opts, self.confidence = device, list(opts), confidence
        self._loaded: dict[str, VisualizationDemo] = {}
        self._lock = threading.Lock()

    def missing_weights_message(self, spec: ModelSpec) -> str | None:
        """Why `spec` cannot be loaded yet because its weights file is absent, else None."""
        if os.path.isfile(spec.weights):
            return None
        if spec.is_builtin:
            return (
                f"The built-in model is not trained yet: {spec.weights} does not exist. Run "
                "`make demo` (it trains DiNAT-Mini + Mask2Former on the built-in shapes, about "
                "5 minutes on a 2-core CPU), then ask again; or start the app with "
                "`--model CONFIG WEIGHTS`."
            )
        return f"Model {spec.label!r}: weights file {spec.weights} not found."

    def get(self, label: str) -> VisualizationDemo:
        """The loaded model `label`; Refusal when it cannot be loaded (with the reason)."""
        spec = self.specs.get(label)
        if spec is None:
            raise Refusal(f"unknown model {label!r}; this app offers {sorted(self.specs)}")
        with self._lock:
            if label in self._loaded:
                return self._loaded[label]
            message = self.missing_weights_message(spec)
            if message:
                raise Refusal(message)
            opts = self.opts + ["MODEL.WEIGHTS", spec.weights, "MODEL.DEVICE", self.device]
            try:
                cfg = load_cfg(spec.config_file, opts)
                cfg.freeze()
                demo = VisualizationDemo(cfg, confidence_threshold=self.confidence)
            except (WeightsError, ValueError) as e:  # ConfigFileError is a ValueError
                raise Refusal(f"model {label!r} cannot be loaded: {e}") from e
            self._loaded[label] = demo
            return demo


# --- inputs --------------------------------------------------------------------------------
def check_file_size(path: str, limits: Limits, what: str) -> None:
    size = os.path.getsize(path)
    if size > limits.max_upload_mb * 2**20:
        raise Refusal(
            f"the {what} is {size / 2**20:.1f} MB; this app takes at most "
            f"{limits.max_upload_mb:g} MB"
        )


def check_pixels(height: int, width: int, limits: Limits, what: str) -> None:
    if height * width > limits.max_megapixels * 1e6:
        raise Refusal(
            f"the {what} is {width}x{height} ({height * width / 1e6:.1f} megapixels); this app "
            f"takes at most {limits.max_megapixels:g} megapixels"
        )


def load_image(path: str, limits: Limits) -> np.ndarray:
    """The uploaded image at `path` as (H, W, 3) uint8 BGR, read as demo/demo.py reads it
    (detectron2's read_image: EXIF orientation applied); Refusal for files that are too big,
    too many pixels or not a decodable image."""
    check_file_size(path, limits, "image")
    try:
        with Image.open(path) as probe:  # the header only: refuse huge images before decoding
            width, height = probe.size
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise Refusal(f"the upload is not an image this app can read ({type(e).__name__})") from e
    check_pixels(height, width, limits, "image")
    try:
        image = read_image(path, format="BGR")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise Refusal(f"the image cannot be decoded; the file is damaged ({e})") from e
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise Refusal(f"the image has an unusable shape {image.shape}")
    return np.ascontiguousarray(image)


def open_video(path: str, limits: Limits) -> tuple[cv2.VideoCapture, float, int, int]:
    """(capture, fps, width, height) of an uploaded video; Refusal when it is too big or
    OpenCV cannot read a frame of it."""
    check_file_size(path, limits, "video")
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise Refusal("the upload is not a video this app can read")
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width < 1 or height < 1:
        capture.release()
        raise Refusal("the upload is not a video this app can read (no frame size)")
    check_pixels(height, width, limits, "video frame")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if 0 < fps <= 1000 else 30.0
    return capture, fps, width, height


# --- prediction and drawing ----------------------------------------------------------------
_DRAW_LOCK = threading.Lock()  # numpy's global generator: one seeded drawing at a time


@contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """numpy's global random state seeded to `seed` inside, restored after."""
    with _DRAW_LOCK:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


def timed_predictions(demo: VisualizationDemo, image: np.ndarray) -> tuple[dict, float]:
    """The model output of one BGR image (on the CPU) and the seconds the model took."""
    device = torch.device(demo.predictor.cfg.MODEL.DEVICE)
    start = time.perf_counter()
    predictions = demo.predictor(image)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return predictions_to_cpu(predictions), seconds


def draw(demo: VisualizationDemo, image: np.ndarray, predictions: dict, task: str) -> np.ndarray:
    """The drawing of `task` as (H, W, 3) uint8 RGB; Refusal when the model lacks the task."""
    try:
        choose_mode(predictions, task)
    except ShowModeError:
        offered = ", ".join(available_modes(predictions)) or "nothing drawable"
        raise Refusal(
            f"this model does not output {task} segmentation (it outputs {offered}); for a "
            f"Mask2Former config, start the app with --opts "
            f"MODEL.MASK_FORMER.TEST.{task.upper()}_ON True"
        ) from None
    with seeded_numpy(DRAWING_SEED):
        return demo.draw_image(image, predictions, task).get_image()


def segment_rows(
    predictions: dict[str, Any], task: str, metadata: Metadata, confidence: float
) -> list[Segment]:
    """The segments drawn for `task`: panoptic segments (no score in the output), instances
    with score >= confidence (mask area), or the classes of the semantic argmax."""

    def name(names: list[str], i: int) -> str:
        return names[i] if 0 <= i < len(names) else f"class {i}"

    if task == "panoptic":
        seg, segments_info = predictions["panoptic_seg"]
        total = seg.numel()
        rows = []
        for info in segments_info:
            area = int((seg == info["id"]).sum())
            category = int(info["category_id"])
            score = info.get("score")
            rows.append(
                Segment(
                    int(info["id"]),
                    name(metadata.stuff_classes, category),
                    None if score is None else float(score),
                    area,
                    100.0 * area / total,
                )
            )
        return rows
    if task == "instance":
        instances = predictions["instances"]
        kept = instances[instances.scores >= confidence]
        total = kept.image_size[0] * kept.image_size[1]
        areas = kept.pred_masks.flatten(1).sum(1).tolist() if len(kept) else []
        return [
            Segment(i + 1, name(metadata.thing_classes, int(c)), float(s), int(a), 100 * a / total)
            for i, (c, s, a) in enumerate(zip(kept.pred_classes, kept.scores, areas))
        ]
    labels = predictions["sem_seg"].argmax(dim=0)
    ids, counts = torch.unique(labels, return_counts=True)
    return [
        Segment(i + 1, name(metadata.stuff_classes, int(c)), None, int(n), 100 * n / labels.numel())
        for i, (c, n) in enumerate(zip(ids.tolist(), counts.tolist()))
    ]


def segment_table(rows: list[Segment]) -> str:
    """The segment list as an HTML table (a plain table: every row in the page at once)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in SEGMENT_COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(cell))}</td>"
            for cell in (
                r.segment,
                r.name,
                "-" if r.score is None else f"{r.score:.3f}",
                r.area,
                f"{r.percent:.1f}",
            )
        )
        + "</tr>"
        for r in rows
    )
    return f'<table class="segments"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# --- the page's handlers -------------------------------------------------------------------
class DemoApp:
    """The handlers behind the page (callable without a browser)."""

    def __init__(self, store: ModelStore, limits: Limits) -> None:
        self.store, self.limits = store, limits
        # drawn videos: Gradio serves a copy from its cache; ours go after an hour or at exit
        self.video_dir = tempfile.mkdtemp(prefix="dinat_m2f_app_")
        atexit.register(shutil.rmtree, self.video_dir, ignore_errors=True)

    def _new_video_path(self) -> str:
        now = time.time()
        for old in Path(self.video_dir).glob("*" + VIDEO_SUFFIX):
            if now - old.stat().st_mtime > OUTPUT_LIFETIME_S:
                old.unlink(missing_ok=True)
        return os.path.join(self.video_dir, f"drawn_{uuid.uuid4().hex}{VIDEO_SUFFIX}")

    def predict_image(self, path: str | None, task: str, label: str):
        """(drawing RGB or None, segment table HTML, status markdown) for one uploaded image."""
        try:
            if not path:
                raise Refusal("upload an image or pick an example first")
            if task not in TASKS:
                raise Refusal(f"task {task!r}: choose one of {', '.join(TASKS)}")
            image = load_image(path, self.limits)
            demo = self.store.get(label)
            predictions, seconds = timed_predictions(demo, image)
            drawing = draw(demo, image, predictions, task)
            rows = segment_rows(predictions, task, demo.metadata, demo.confidence_threshold)
        except Refusal as e:
            return None, "", f"**Refused:** {e}"
        except Exception as e:  # never a stack trace on the page; the log has it
            logger.exception("image request failed")
            return None, "", f"**Error:** the model failed on this image ({type(e).__name__})"
        height, width = image.shape[:2]
        status = (
            f"{task}: {len(rows)} segments; inference {seconds * 1e3:.0f} ms on "
            f"{demo.predictor.cfg.MODEL.DEVICE} ({width}x{height} image, model {label})"
        )
        return drawing, segment_table(rows), status

    def predict_video(self, path: str | None, task: str, label: str):
        """(drawn video path or None, status markdown) for an uploaded video: every frame up
        to --max-video-frames predicted and drawn like an image, written as VP8 WebM."""
        capture = writer = None
        try:
            if not path:
                raise Refusal("upload a video first")
            if task not in TASKS:
                raise Refusal(f"task {task!r}: choose one of {', '.join(TASKS)}")
            capture, fps, width, height = open_video(path, self.limits)
            demo = self.store.get(label)
            target = self._new_video_path()
            writer = cv2.VideoWriter(
                target, cv2.VideoWriter_fourcc(*VIDEO_FOURCC), fps, (width, height)
            )
            if not writer.isOpened():
                raise Refusal("this server's OpenCV cannot write WebM (VP8) video")
            frames, seconds = 0, 0.0
            while frames < self.limits.max_video_frames:
                ok, frame = capture.read()
                if not ok:
                    break
                predictions, took = timed_predictions(demo, frame)
                drawing = draw(demo, frame, predictions, task)
                writer.write(cv2.cvtColor(drawing, cv2.COLOR_RGB2BGR))
                frames, seconds = frames + 1, seconds + took
            if frames == 0:
                raise Refusal("no frame of the video could be read")
            cut = capture.read()[0]  # a frame left over: the video was cut
        except Refusal as e:
            return None, f"**Refused:** {e}"
        except Exception as e:
            logger.exception("video request failed")
            return None, f"**Error:** the model failed on this video ({type(e).__name__})"
        finally:
            if capture is not None:
                capture.release()
            if writer is not None:
                writer.release()
        note = f" (cut at --max-video-frames {self.limits.max_video_frames})" if cut else ""
        status = (
            f"{task}: {frames} frames{note}; inference {seconds / frames * 1e3:.0f} ms per frame "
            f"on {demo.predictor.cfg.MODEL.DEVICE} ({width}x{height}, model {label})"
        )
        return target, status


def hand_over_upload_path(component: gr.Image) -> gr.Image:
    """Make `component` give the handler the uploaded file's path, its bytes untouched.

    Gradio's own preprocessing opens the file with PIL first, so a broken upload would fail
    there with Gradio's generic error instead of the app's message. (An override on the
    instance: subclassing a Gradio component makes Gradio write a .pyi file beside this script.)
    """
    gradio_preprocess = component.preprocess

    def preprocess(payload):
        if payload is not None and payload.path:
            return str(payload.path)
        try:
            return gradio_preprocess(payload)  # pasted data: URLs and the like
        except Exception:
            return None

    component.preprocess = preprocess
    return component


def build_page(app: DemoApp, examples: list[str], note: str | None) -> gr.Blocks:
    labels = list(app.store.specs)
    lifetime = (OUTPUT_LIFETIME_S, OUTPUT_LIFETIME_S)  # (how often, how old) in seconds
    with gr.Blocks(title="DiNAT + Mask2Former demo", delete_cache=lifetime) as page:
        gr.Markdown(
            "# DiNAT + Mask2Former\nUpload an image (or pick an example) or a short video, "
            "choose the task and the model, and press Run."
        )
        if note:
            gr.Markdown(f"**Note:** {note}", elem_id="model-note")
        with gr.Row():
            task = gr.Radio(list(TASKS), value=TASKS[0], label="task", elem_id="task")
            model = gr.Dropdown(labels, value=labels[0], label="model", elem_id="model")
        with gr.Tab("Image"):
            with gr.Row():
                image_in = hand_over_upload_path(
                    gr.Image(
                        type="filepath",
                        image_mode=None,
                        sources=["upload", "clipboard"],
                        label="image",
                        height=IMAGE_HEIGHT,
                        elem_id="input-image",
                    )
                )
                image_out = gr.Image(
                    format="png",  # lossless: the drawing's pixels reach the browser as they are
                    interactive=False,
                    label="prediction",
                    height=IMAGE_HEIGHT,
                    elem_id="output-image",
                )
            run_image = gr.Button("Run", variant="primary", elem_id="run-image")
            image_status = gr.Markdown(elem_id="image-status")
            segments = gr.HTML(label="segments", elem_id="segments")
            if examples:
                gr.Examples(examples, inputs=[image_in], label="held-out built-in images")
        with gr.Tab("Video"):
            with gr.Row():
                video_in = gr.Video(sources=["upload"], label="video", elem_id="input-video")
                video_out = gr.Video(interactive=False, label="prediction", elem_id="output-video")
            run_video = gr.Button("Run", variant="primary", elem_id="run-video")
            video_status = gr.Markdown(elem_id="video-status")
        # both buttons share one queue slot group: --concurrency model runs at a time in all
        run_image.click(
            app.predict_image,
            [image_in, task, model],
            [image_out, segments, image_status],
            concurrency_id="model",
        )
        run_video.click(
            app.predict_video,
            [video_in, task, model],
            [video_out, video_status],
            concurrency_id="model",
        )
    return page


# --- command line --------------------------------------------------------------------------
def default_examples_dir() -> str:
    return os.path.join(datasets_root(), "builtin_shapes", "val")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="DiNAT + Mask2Former web demo (Gradio)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status 2: bad arguments or a config that cannot be read.",
    )
    parser.add_argument(
        "--model",
        nargs=2,
        action="append",
        metavar=("CONFIG", "WEIGHTS"),
        help=f"a model to offer (repeatable; default: {BUILTIN_CONFIG} {BUILTIN_WEIGHTS})",
    )
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda or cuda:N (default: cuda when available)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="minimal score of the instances drawn and listed (instance task)",
    )
    parser.add_argument(
        "--examples",
        metavar="DIR",
        default=None,
        help="folder of example images (default: $DETECTRON2_DATASETS/builtin_shapes/val)",
    )
    parser.add_argument("--max-examples", type=int, default=8)
    parser.add_argument("--max-upload-mb", type=float, default=Limits.max_upload_mb)
    parser.add_argument("--max-megapixels", type=float, default=Limits.max_megapixels)
    parser.add_argument("--max-video-frames", type=int, default=Limits.max_video_frames)
    parser.add_argument(
        "--concurrency", type=int, default=1, help="model runs at a time (default 1)"
    )
    parser.add_argument(
        "--queue-size", type=int, default=16, help="requests waiting at most (default 16)"
    )
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides for every model, e.g. MODEL.MASK_FORMER.TEST.INSTANCE_ON True",
    )
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 <= args.confidence_threshold <= 1:
        parser.error(f"--confidence-threshold {args.confidence_threshold}: use 0..1")
    for name in ("max_upload_mb", "max_megapixels", "max_video_frames", "concurrency"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be positive")
    if args.queue_size < 1 or args.max_examples < 0:
        parser.error(
            f"--queue-size {args.queue_size} must be >= 1 and --max-examples "
            f"{args.max_examples} >= 0"
        )
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: use 0..65535")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device is available")


def model_specs(parser: argparse.ArgumentParser, pairs: list[list[str]] | None) -> list[ModelSpec]:
    """One ModelSpec per --model (default: the built-in model), labelled by the config's
    stem (and the weights' when two share a config); a missing config is a usage error."""
    pairs = pairs or [[str(_REPO_ROOT / BUILTIN_CONFIG), BUILTIN_WEIGHTS]]
    specs: list[ModelSpec] = []
    for config_file, weights in pairs:
        if not os.path.isfile(config_file):
            parser.error(f"--model {config_file} {weights}: no such config file")
        label = Path(config_file).stem
        if any(s.label == label for s in specs) or sum(p[0] == config_file for p in pairs) > 1:
            label = f"{label} ({Path(weights).name})"
        specs.append(ModelSpec(label, config_file, weights))
    return specs


def example_images(folder: str, count: int) -> list[str]:
    if not os.path.isdir(folder):
        return []
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".png")))
    return [os.path.join(folder, n) for n in names[:count]]


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    specs = model_specs(parser, args.model)
    for spec in specs:  # a config that cannot be read is an error now, not on the page
        try:
            load_cfg(spec.config_file, args.opts + ["MODEL.DEVICE", args.device])
        except Exception as e:  # ConfigFileError, yacs' assertions on --opts, ...
            print(
                f"app: error: --model {spec.config_file} with --opts {args.opts}: "
                f"{type(e).__name__}: {e}",
                file=sys.stderr,
            )
            return 2
    store = ModelStore(specs, args.device, args.opts, args.confidence_threshold)
    limits = Limits(args.max_upload_mb, args.max_megapixels, args.max_video_frames)
    note = store.missing_weights_message(specs[0])
    if note:
        print(f"app: {note}", file=sys.stderr)
    examples_dir = args.examples or default_examples_dir()
    examples = example_images(examples_dir, args.max_examples)
    if not examples:
        print(
            f"app: no example images in {examples_dir} (python -m dinat_m2f.data.generate_builtin "
            "writes them)",
            file=sys.stderr,
        )
    page = build_page(DemoApp(store, limits), examples, note)
    page.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency)
    page.launch(
        server_name=args.host,
        server_port=args.port,
        max_file_size=int(args.max_upload_mb * 2**20),
        allowed_paths=[os.path.abspath(examples_dir)] if examples else None,
        theme=gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"]),
        footer_links=[],
    )
    return 0


if __name__ == "__main__":
    from detectron2.utils.logger import setup_logger

    setup_logger(name="dinat_m2f", abbrev_name="m2f")
    sys.exit(main())
