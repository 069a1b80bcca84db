"""Running an exported ONNX file with ONNX Runtime and numpy alone (no torch, no detectron2).

`ExportedModel` opens the file, reads the metadata the exporter stored in it (classes,
thresholds, normalisation, the input sizes the graph accepts) and checks every input before
ONNX Runtime sees it: a wrong dtype, rank, channel count or size is an `InputError` naming
the expected and the given values, not an error deep inside the graph. `Predictor` goes from
an image (H, W, 3) uint8 to results at the image's size: resize (shortest edge, as
detectron2's test resize; numpy bilinear, which differs slightly from detectron2's PIL
resize), normalise, zero-pad to the size divisibility, run, post-process (postprocess.py);
`results_of` does the steps after the resize (what evaluation on detectron2's test loader
uses).
"""

from __future__ import annotations

import json
import math

import numpy as np

from .postprocess import detector_results, mask_former_results, resize_bilinear

METADATA_KEY = "dinat_m2f"


class InputError(ValueError):
    """An input the exported graph does not accept; the message says what it accepts."""


def _sizes_text(sizes: dict, fixed_reason: str | None = None) -> str:
    div = sizes["divisibility"]
    if sizes["min_height"] == sizes["max_height"] and sizes["min_width"] == sizes["max_width"]:
        why = f": {fixed_reason}" if fixed_reason else ""
        return (
            f"exactly {sizes['min_height']}x{sizes['min_width']} (height x width; fixed size{why})"
        )
    return (
        f"height in {sizes['min_height']}..{sizes['max_height']} and width in "
        f"{sizes['min_width']}..{sizes['max_width']}, multiples of {div}"
    )


class ExportedModel:
    """An exported ONNX file in an ONNX Runtime session.

    Args:
        path: the .onnx file written by tools/deploy/export_model.py.
        providers: ONNX Runtime execution providers (default: CPU).
        threads: intra-op threads (0: ONNX Runtime's default).
    """

    def __init__(self, path: str, providers: list[str] | None = None, threads: int = 0) -> None:
        import onnxruntime  # imported here: the post-processing needs numpy only

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            path, options, providers=providers or ["CPUExecutionProvider"]
        )
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ValueError(
                f"{path}: no '{METADATA_KEY}' metadata; export it with tools/deploy/export_model.py"
            )
        self.info = json.loads(meta[METADATA_KEY])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def check_input(self, image: np.ndarray) -> None:
        """InputError unless `image` is a float32 (1, C, H, W) array of an accepted size."""
        channels = len(self.info["pixel_mean"])
        sizes = self.info["sizes"]
        if not isinstance(image, np.ndarray):
            raise InputError(f"image must be a numpy array, got {type(image).__name__}")
        if image.dtype != np.float32:
            raise InputError(f"image must be float32 (normalised pixels), got {image.dtype}")
        if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != channels:
            raise InputError(
                f"image must have shape (1, {channels}, height, width), got {image.shape}"
            )
        height, width = image.shape[2:]
        div = sizes["divisibility"]
        ok = (
            height % div == 0
            and width % div == 0
            and sizes["min_height"] <= height <= sizes["max_height"]
            and sizes["min_width"] <= width <= sizes["max_width"]
        )
        if not ok:
            raise InputError(
                f"image size {height}x{width} is not accepted by this file: it takes "
                f"{_sizes_text(sizes, self.info.get('fixed_reason'))} (pad the image, or export "
                "again with a sample of this size)"
            )

    def __call__(
        self, image: np.ndarray, image_size: tuple[int, int] | None = None
    ) -> dict[str, np.ndarray]:
        """The graph's raw outputs by name (see dinat_m2f/export/wrappers.py). image_size
        (detectors only): height and width of the image inside the padding (default: all of
        `image`); detections are clipped to it."""
        self.check_input(image)
        feed = {"image": image}
        if "image_size" in self.input_names:
            height, width = image.shape[2:]
            size = (height, width) if image_size is None else tuple(int(v) for v in image_size)
            if len(size) != 2 or not (1 <= size[0] <= height and 1 <= size[1] <= width):
                raise InputError(
                    f"image_size must be (height, width) within the padded image {height}x"
                    f"{width}, got {image_size}"
                )
            feed["image_size"] = np.asarray(size, dtype=np.int64)
        elif image_size is not None:
            raise InputError("image_size is an input of exported detectors only")
        outputs = self.session.run(None, feed)
        return dict(zip(self.output_names, outputs))


def resized_size(height: int, width: int, short: int, longest: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge output size for a short side `short`, long side at most
    `longest`."""
    scale = short / min(height, width)
    new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
    if max(new_h, new_w) > longest:
        factor = longest / max(new_h, new_w)
        new_h, new_w = new_h * factor, new_w * factor
    return int(new_h + 0.5), int(new_w + 0.5)


def normalise_and_pad(pixels: np.ndarray, info: dict) -> np.ndarray:
    """(C, h, w) pixels in the model's channel order -> the graph's input (1, C, H, W): minus
    the mean, over the std, zero-padded at the bottom / right to multiples of the size
    divisibility and at least the file's smallest accepted size (as detectron2's ImageList)."""
    mean = np.asarray(info["pixel_mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(info["pixel_std"], dtype=np.float32)[:, None, None]
    sizes = info["sizes"]
    div = sizes["divisibility"]
    height, width = pixels.shape[1:]
    padded_h = max(math.ceil(height / div) * div, sizes["min_height"])
    padded_w = max(math.ceil(width / div) * div, sizes["min_width"])
    padded = np.zeros((1, pixels.shape[0], padded_h, padded_w), dtype=np.float32)
    padded[0, :, :height, :width] = (pixels.astype(np.float32) - mean) / std
    return padded


def results_of(
    model: ExportedModel,
    pixels: np.ndarray,
    output_size: tuple[int, int] | None = None,
) -> dict:
    """One image's results from (C, h, w) pixels (already resized as at test time, in the
    model's channel order) at output_size (default (h, w)): mask_former_results or
    detector_results, as the file's kind."""
    image_size = tuple(pixels.shape[1:])
    output_size = tuple(output_size or image_size)
    padded = normalise_and_pad(pixels, model.info)
    if model.info["kind"] == "rcnn":
        outputs = model(padded, image_size=image_size)
        return detector_results(outputs, image_size, output_size, model.info["mask_threshold"])
    outputs = model(padded)
    return mask_former_results(
        outputs["class_logits"][0], outputs["mask_logits"][0], model.info, image_size, output_size
    )


class Predictor:
    """Image (H, W, 3) uint8 in `input_format` ("BGR", as OpenCV reads) -> results at (H, W):
    Mask2Former: {"sem_seg", "panoptic_seg", "instances"} as enabled in the exported model
    (postprocess.mask_former_results); detectors: {"instances"} (postprocess.detector_results).
    """

    def __init__(self, path: str, input_format: str = "BGR", **session_options) -> None:
        self.model = ExportedModel(path, **session_options)
        self.info = self.model.info
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be 'RGB' or 'BGR', got {input_format!r}")
        self.input_format = input_format

    def resize(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, h, w) float32 pixels in the model's channel order, resized as
        at test time (shortest edge INPUT.MIN_SIZE_TEST, longest at most MAX_SIZE_TEST)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"image must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
        if self.input_format != self.info["input_format"]:
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        new_h, new_w = resized_size(
            height, width, self.info["min_size_test"], self.info["max_size_test"]
        )
        chw = image.transpose(2, 0, 1).astype(np.float32)
        if (new_h, new_w) != (height, width):
            chw = np.clip(np.round(resize_bilinear(chw, new_h, new_w)), 0, 255)
        return chw

    def __call__(self, image: np.ndarray) -> dict:
        return results_of(self.model, self.resize(image), output_size=image.shape[:2])
