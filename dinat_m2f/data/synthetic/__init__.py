"""Generator of the built-in synthetic dataset `builtin_shapes` (its registration is
`dinat_m2f.data.datasets.builtin_shapes`): `render.py` draws one image and its annotation,
`write.py` writes the splits in COCO's formats. Command line: `python -m
dinat_m2f.data.generate_builtin --root DIR`."""

from .render import render_image
from .write import generate_builtin_shapes

__all__ = ["generate_builtin_shapes", "render_image"]
