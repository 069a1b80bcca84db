"""What a deployment needs besides the .onnx file: ONNX Runtime and numpy, nothing else.

This folder imports neither torch nor detectron2 (a test holds it to that): copy it next to
your application as a package of any name, e.g. `m2f_deploy/`, and

    from m2f_deploy import Predictor
    results = Predictor("model.onnx")(cv2.imread("image.jpg"))  # BGR uint8
"""

from .postprocess import detector_results, mask_former_results
from .runtime import (
    METADATA_KEY,
    ExportedModel,
    InputError,
    Predictor,
    normalise_and_pad,
    results_of,
)

__all__ = [
    "METADATA_KEY",
    "ExportedModel",
    "InputError",
    "Predictor",
    "detector_results",
    "mask_former_results",
    "normalise_and_pad",
    "results_of",
]
