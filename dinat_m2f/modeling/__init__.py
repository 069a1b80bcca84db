"""Models registered in detectron2 (importing this module registers them)."""

from . import backbone  # noqa: F401
