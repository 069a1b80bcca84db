"""Drawing for demo/demo.py: `VisualizationDemo` runs a predictor (predictor.py, or
async_predictor.py with one process per GPU) on an image or a video and draws the result
with detectron2's `Visualizer` / `VideoVisualizer` and the metadata of the config's dataset;
which output is drawn (`SHOW_MODES`, `choose_mode`) and a one-line description of it.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import torch
from async_predictor import AsyncPredictor
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.structures import Instances
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, VisImage, Visualizer
from predictor import DemoPredictor, predictions_to_cpu

__all__ = [
    "SHOW_MODES",
    "ShowModeError",
    "VisualizationDemo",
    "describe_predictions",
]

# What the demo can draw, and the model output each one needs. "auto" draws the first of
# panoptic > instance > semantic that the model outputs.
SHOW_MODES = ("auto", "panoptic", "instance", "semantic")
_OUTPUT_KEY = {"panoptic": "panoptic_seg", "instance": "instances", "semantic": "sem_seg"}
# Mask2Former's switches for those outputs (named in errors).
_TEST_FLAG = {"panoptic": "PANOPTIC_ON", "instance": "INSTANCE_ON", "semantic": "SEMANTIC_ON"}


class ShowModeError(ValueError):
    """The output asked for with `show` is not one the model produces."""


def demo_metadata(cfg: CfgNode) -> Metadata:
    """Metadata for drawing: of DATASETS.TEST[0] (else TRAIN[0], else "__unused"), made safe
    for the Visualizer.

    Panoptic and instance outputs of a panoptic model use contiguous ids over all classes,
    while `thing_classes` lists only the things; when the things are not the first contiguous
    ids (ADE20K, Cityscapes), thing names/colors are taken from the all-class
    `stuff_classes`/`stuff_colors`. Without class names, names "class <i>" are made up for
    MODEL.SEM_SEG_HEAD.NUM_CLASSES classes.
    """
    names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN) or ["__unused"]
    base = MetadataCatalog.get(names[0])
    fields = dict(base.as_dict())
    thing_ids = fields.get("thing_dataset_id_to_contiguous_id")
    stuff_classes = fields.get("stuff_classes")
    if thing_ids and stuff_classes and sorted(thing_ids.values()) != list(range(len(thing_ids))):
        fields["thing_classes"] = list(stuff_classes)
        if "stuff_colors" in fields:
            fields["thing_colors"] = list(fields["stuff_colors"])
    num_classes = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    generic = [f"class {i}" for i in range(num_classes)]
    fields.setdefault("stuff_classes", fields.get("thing_classes", generic))
    fields.setdefault("thing_classes", fields["stuff_classes"])
    fields["name"] = f"{names[0]} (demo)"
    return Metadata(**fields)


def _is_mask_former(cfg: CfgNode) -> bool:
    """Mask2Former models choose their outputs with MODEL.MASK_FORMER.TEST.*_ON; detectron2's
    R-CNN detectors (GeneralizedRCNN) always output instances."""
    return cfg.MODEL.META_ARCHITECTURE == "MaskFormer"


def available_modes(predictions: dict[str, Any]) -> list[str]:
    """The drawable outputs in `predictions`, in the order "auto" prefers them."""
    return [m for m in ("panoptic", "instance", "semantic") if _OUTPUT_KEY[m] in predictions]


def choose_mode(predictions: dict[str, Any], show: str) -> str:
    """The mode to draw: `show`, or for "auto" the first of panoptic > instance > semantic."""
    modes = available_modes(predictions)
    if show == "auto":
        if not modes:
            raise ShowModeError(
                f"the model output has none of panoptic_seg / instances / sem_seg "
                f"(keys: {sorted(predictions)})"
            )
        return modes[0]
    if show not in modes:
        raise ShowModeError(
            f"--show {show}: the model does not output {_OUTPUT_KEY[show]!r} (it outputs "
            f"{', '.join(modes) or 'nothing drawable'}); enable it with --opts "
            f"MODEL.MASK_FORMER.TEST.{_TEST_FLAG[show]} True"
        )
    return show


def _count_names(ids: list[int], class_names: list[str]) -> str:
    counts = Counter(class_names[i] if 0 <= i < len(class_names) else f"class {i}" for i in ids)
    return ", ".join(f"{n} x{c}" if c > 1 else n for n, c in sorted(counts.items()))


def describe_predictions(
    predictions: dict[str, Any], mode: str, metadata: Metadata, confidence_threshold: float
) -> str:
    """One line on what was drawn, e.g. "panoptic: 5 segments (circle x2, sky, ...)"."""
    if mode == "panoptic":
        _, segments_info = predictions["panoptic_seg"]
        ids = [int(s["category_id"]) for s in segments_info]
        names = metadata.stuff_classes
        return f"panoptic: {len(ids)} segments ({_count_names(ids, names) or 'none'})"
    if mode == "instance":
        instances = predictions["instances"]
        kept = instances[instances.scores >= confidence_threshold]
        ids = [int(c) for c in kept.pred_classes]
        return (
            f"instance: {len(kept)} of {len(instances)} instances with score >= "
            f"{confidence_threshold:g} ({_count_names(ids, metadata.thing_classes) or 'none'})"
        )
    labels = predictions["sem_seg"].argmax(dim=0)
    ids = [int(c) for c in torch.unique(labels)]
    names = ", ".join(
        metadata.stuff_classes[i] if i < len(metadata.stuff_classes) else f"class {i}" for i in ids
    )
    return f"semantic: {len(ids)} classes ({names})"


class VisualizationDemo:
    """Run the model of `cfg` on images or videos and draw what it predicts.

    Draws the panoptic result when the model outputs "panoptic_seg", else the instances with
    score >= confidence_threshold when it outputs "instances", else the argmax of "sem_seg";
    `show` ("panoptic", "instance", "semantic") picks one explicitly (ShowModeError when the
    config does not enable it). Metadata: `demo_metadata(cfg)`.

    Args:
        cfg: a config whose MODEL.WEIGHTS fits the model (see `load_model_weights`).
        instance_mode: detectron2 ColorMode of the Visualizer (IMAGE, SEGMENTATION, IMAGE_BW;
            videos support IMAGE and IMAGE_BW).
        parallel: run the model in one process per GPU (`AsyncPredictor`).
        confidence_threshold: minimal score of drawn instances.
        show: "auto" or one of panoptic / instance / semantic.
        allow_partial_weights: go on when the checkpoint does not fit the model.
    """

    def __init__(
        self,
        cfg: CfgNode,
        instance_mode: ColorMode = ColorMode.IMAGE,
        parallel: bool = False,
        *,
        confidence_threshold: float = 0.5,
        show: str = "auto",
        allow_partial_weights: bool = False,
    ) -> None:
        if show not in SHOW_MODES:
            raise ValueError(f"show={show!r}; use one of {SHOW_MODES}")
        test_cfg = cfg.MODEL.get("MASK_FORMER", {}).get("TEST") if "MODEL" in cfg else None
        if "MODEL" in cfg and not _is_mask_former(cfg):
            test_cfg = None  # the flags are Mask2Former's
        flag = f"MODEL.MASK_FORMER.TEST.{_TEST_FLAG.get(show, '')}"
        if show != "auto" and test_cfg is not None and not test_cfg.get(_TEST_FLAG[show], True):
            raise ShowModeError(
                f"--show {show}: the config disables it ({flag} False); add --opts {flag} True"
            )
        self.metadata = demo_metadata(cfg)
        self.cpu_device = torch.device("cpu")
        self.instance_mode = instance_mode
        self.confidence_threshold = confidence_threshold
        self.show = show
        self.parallel = parallel
        if parallel:
            self.predictor = AsyncPredictor(
                cfg, num_gpus=torch.cuda.device_count(), allow_partial_weights=allow_partial_weights
            )
        else:
            self.predictor = DemoPredictor(cfg, allow_partial_weights=allow_partial_weights)

    def close(self) -> None:
        """Stop the worker processes of a parallel demo (nothing to do otherwise)."""
        if isinstance(self.predictor, AsyncPredictor):
            self.predictor.shutdown()

    def mode_of(self, predictions: dict[str, Any]) -> str:
        """What is drawn for `predictions` (see `choose_mode`)."""
        return choose_mode(predictions, self.show)

    def describe(self, predictions: dict[str, Any]) -> str:
        """One line on what is drawn for `predictions`."""
        return describe_predictions(
            predictions, self.mode_of(predictions), self.metadata, self.confidence_threshold
        )

    def _kept_instances(self, predictions: dict[str, Any]) -> Instances:
        instances = predictions["instances"].to(self.cpu_device)
        return instances[instances.scores >= self.confidence_threshold]

    def run_on_image(self, image: np.ndarray) -> tuple[dict[str, Any], VisImage]:
        """Predict and draw one image.

        Args:
            image: (H, W, 3) uint8 BGR (OpenCV's order).

        Returns:
            the model's output for the image (tensors on the CPU) and the drawing, a
            detectron2 VisImage of the image's size (`.get_image()`: (H, W, 3) uint8 RGB).
        """
        predictions = predictions_to_cpu(self.predictor(image))
        return predictions, self.draw_image(image, predictions)

    def draw_image(
        self, image: np.ndarray, predictions: dict[str, Any], show: str | None = None
    ) -> VisImage:
        """Draw the model output `predictions` (tensors on the CPU) of one image.

        Args:
            image: (H, W, 3) uint8 BGR, the image the predictions are of.
            predictions: the model's output dict for it.
            show: what to draw ("auto", "panoptic", "instance", "semantic"; default: the
                demo's `show`); ShowModeError when the predictions lack it.

        Returns:
            a detectron2 VisImage of the image's size (`.get_image()`: (H, W, 3) uint8 RGB).
        """
        mode = choose_mode(predictions, self.show if show is None else show)
        visualizer = Visualizer(image[:, :, ::-1], self.metadata, instance_mode=self.instance_mode)
        if mode == "panoptic":
            seg, segments_info = predictions["panoptic_seg"]
            return visualizer.draw_panoptic_seg(seg, segments_info)
        if mode == "instance":
            return visualizer.draw_instance_predictions(self._kept_instances(predictions))
        return visualizer.draw_sem_seg(predictions["sem_seg"].argmax(dim=0))

    def _draw_frame(
        self, frame: np.ndarray, predictions: dict[str, Any], visualizer: VideoVisualizer
    ) -> np.ndarray:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        predictions = predictions_to_cpu(predictions)
        mode = self.mode_of(predictions)
        if mode == "panoptic":
            seg, segments_info = predictions["panoptic_seg"]
            vis = visualizer.draw_panoptic_seg_predictions(rgb, seg, segments_info)
        elif mode == "instance":
            vis = visualizer.draw_instance_predictions(rgb, self._kept_instances(predictions))
        else:
            vis = visualizer.draw_sem_seg(rgb, predictions["sem_seg"].argmax(dim=0))
        return cv2.cvtColor(vis.get_image(), cv2.COLOR_RGB2BGR)

    def run_on_video(
        self, video: cv2.VideoCapture, max_frames: int | None = None
    ) -> Iterator[np.ndarray]:
        """Predict and draw the frames of an opened video, one at a time.

        Args:
            video: an opened cv2.VideoCapture (file or camera).
            max_frames: stop after this many frames (None: until the video ends).

        Yields:
            the drawings, (H, W, 3) uint8 BGR frames of the input's size, in order. Frames
            are read as they are needed (a parallel demo reads a few ahead).
        """
        mode = self.instance_mode if self.instance_mode == ColorMode.IMAGE_BW else ColorMode.IMAGE
        visualizer = VideoVisualizer(self.metadata, mode)

        def frames() -> Iterator[np.ndarray]:
            count = 0
            while max_frames is None or count < max_frames:
                ok, frame = video.read()
                if not ok:
                    return
                count += 1
                yield frame

        if isinstance(self.predictor, AsyncPredictor):
            buffer: deque[np.ndarray] = deque()
            size = self.predictor.default_buffer_size
            for frame in frames():
                buffer.append(frame)
                self.predictor.put(frame)
                if len(buffer) >= size:
                    done = buffer.popleft()
                    yield self._draw_frame(done, self.predictor.get(), visualizer)
            while buffer:
                done = buffer.popleft()
                yield self._draw_frame(done, self.predictor.get(), visualizer)
        else:
            for frame in frames():
                yield self._draw_frame(frame, self.predictor(frame), visualizer)
