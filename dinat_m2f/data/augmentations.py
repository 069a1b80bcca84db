"""Augmentations on top of detectron2's: the photometric augmentation of the SSD paper
(`INPUT.COLOR_AUG_SSD`: random brightness, contrast, saturation and hue changes of the image
only), and detectron2's flip and two resizes made safe for 1-pixel sides and extreme aspect
ratios."""

from __future__ import annotations

import cv2
import numpy as np
from detectron2.data import transforms as T
from detectron2.data.transforms import (
    Augmentation,
    HFlipTransform,
    NoOpTransform,
    ResizeTransform,
    Transform,
    VFlipTransform,
)

__all__ = [
    "ColorAugSSD",
    "ColorAugSSDTransform",
    "RandomFlip",
    "ResizeScale",
    "ResizeShortestEdge",
]


class ColorAugSSDTransform(Transform):
    """Deterministic photometric distortion; `ColorAugSSD` samples its parameters.

    Order: brightness, contrast (if `contrast_first`), saturation, hue, contrast (otherwise).
    A parameter left None skips that step. Segmentations and coordinates are unchanged.

    Args:
        img_format: channel order of the images, "RGB" or "BGR".
        brightness_delta: added to every channel (0..255 scale).
        contrast_alpha: multiplies every channel.
        saturation_alpha: multiplies the HSV saturation.
        hue_delta: added to the HSV hue (OpenCV's 0..179 scale, wrapping around).
        contrast_first: apply the contrast change before the saturation and hue changes.
    """

    def __init__(
        self,
        img_format: str,
        brightness_delta: float | None = None,
        contrast_alpha: float | None = None,
        saturation_alpha: float | None = None,
        hue_delta: int | None = None,
        contrast_first: bool = True,
    ):
        super().__init__()
        if img_format not in ("RGB", "BGR"):
            raise ValueError(
                f"ColorAugSSDTransform: img_format must be RGB or BGR, got {img_format!r}"
            )
        self._set_attributes(locals())

    @staticmethod
    def _clip(img: np.ndarray) -> np.ndarray:
        return np.clip(img, 0, 255).astype(np.uint8)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"ColorAugSSDTransform: expected an (H, W, 3) uint8 image, got {img.dtype} "
                f"{img.shape}"
            )
        out = img
        if self.brightness_delta is not None:
            out = self._clip(out.astype(np.float32) + self.brightness_delta)
        if self.contrast_first and self.contrast_alpha is not None:
            out = self._clip(out.astype(np.float32) * self.contrast_alpha)
        if self.saturation_alpha is not None or self.hue_delta is not None:
            to_hsv, from_hsv = (
                (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
                if self.img_format == "RGB"
                else (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR)
            )
            hsv = cv2.cvtColor(np.ascontiguousarray(out), to_hsv).astype(np.int32)
            if self.saturation_alpha is not None:
                hsv[..., 1] = np.clip(hsv[..., 1] * self.saturation_alpha, 0, 255)
            if self.hue_delta is not None:
                hsv[..., 0] = (hsv[..., 0] + int(self.hue_delta)) % 180
            out = cv2.cvtColor(hsv.astype(np.uint8), from_hsv)
        if not self.contrast_first and self.contrast_alpha is not None:
            out = self._clip(out.astype(np.float32) * self.contrast_alpha)
        return out

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords


class ColorAugSSD(Augmentation):
    """Samples a `ColorAugSSDTransform`: each of the four changes happens with probability 1/2
    (brightness delta in [-32, 32], contrast and saturation factors in [0.5, 1.5], hue delta in
    [-18, 18]), contrast before or after the color changes with probability 1/2.

    Args:
        img_format: channel order of the images, "RGB" or "BGR".
    """

    def __init__(
        self,
        img_format: str,
        brightness_delta: int = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        def maybe(sample):
            return sample() if np.random.uniform() < 0.5 else None

        brightness = maybe(
            lambda: float(np.random.uniform(-self.brightness_delta, self.brightness_delta))
        )
        contrast = maybe(lambda: float(np.random.uniform(*self.contrast_range)))
        saturation = maybe(lambda: float(np.random.uniform(*self.saturation_range)))
        hue = maybe(lambda: int(np.random.randint(-self.hue_delta, self.hue_delta + 1)))
        contrast_first = bool(np.random.uniform() < 0.5)
        if brightness is None and contrast is None and saturation is None and hue is None:
            return NoOpTransform()
        return ColorAugSSDTransform(
            self.img_format, brightness, contrast, saturation, hue, contrast_first
        )


def _at_least_one_pixel(transform: Transform) -> Transform:
    """A resize to a side of 0 pixels made a resize to 1 pixel; anything else unchanged."""
    if isinstance(transform, ResizeTransform) and min(transform.new_h, transform.new_w) < 1:
        return ResizeTransform(
            transform.h,
            transform.w,
            max(1, transform.new_h),
            max(1, transform.new_w),
            transform.interp,
        )
    return transform


class ResizeShortestEdge(T.ResizeShortestEdge):
    """detectron2's ResizeShortestEdge (same arguments, same random draws) that never resizes a
    side to 0 pixels: detectron2 rounds the short side of an extreme aspect ratio down to 0
    (891 x 1 to a short side of 8 within a long side of 96 gives 96 x 0) and the resize then
    fails; here that side gets 1 pixel."""

    def get_transform(self, image: np.ndarray) -> Transform:
        return _at_least_one_pixel(super().get_transform(image))


class ResizeScale(T.ResizeScale):
    """detectron2's ResizeScale (large-scale jitter; same arguments and draws) that never
    resizes a side to 0 pixels (a 1 x 2048 image into a 64-pixel box would give 0 x 64)."""

    def get_transform(self, image: np.ndarray) -> Transform:
        return _at_least_one_pixel(super().get_transform(image))


class _HFlipCopy(HFlipTransform):
    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return super().apply_image(img).copy()


class _VFlipCopy(VFlipTransform):
    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return super().apply_image(img).copy()


class RandomFlip(T.RandomFlip):
    """detectron2's RandomFlip (same arguments and draws) whose flipped images and label maps
    are copies, not views with a negative stride: numpy calls the (3, 1, 1) transpose of such
    a view of a 1x1 image contiguous, so np.ascontiguousarray keeps it, and torch.as_tensor
    refuses it; the mappers (ours and detectron2's DatasetMapper) stopped on such images."""

    def get_transform(self, image: np.ndarray) -> Transform:
        transform = super().get_transform(image)
        if isinstance(transform, HFlipTransform):
            return _HFlipCopy(transform.width)
        if isinstance(transform, VFlipTransform):
            return _VFlipCopy(transform.height)
        return transform
