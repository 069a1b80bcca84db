"""Changing detectron2's DatasetCatalog / MetadataCatalog: replacing a registration or its
metadata, and guarding detectron2's own loaders with our missing/malformed-dataset errors."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from detectron2.data import DatasetCatalog, MetadataCatalog

from .errors import run_checked
from .layout import datasets_root

__all__ = ["guard_registered", "replace_metadata", "replace_registration"]


def replace_registration(name: str, loader: Callable[[], list]) -> None:
    """Registers `loader` under `name`, replacing an existing registration of that name."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, loader)


def replace_metadata(name: str, **metadata: Any) -> None:
    """Sets the metadata of `name` to exactly `metadata` (dropping what was set before)."""
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(**metadata)


def guard_registered(name: str, family: str, required: Sequence[tuple[str, str]]) -> None:
    """Wraps an already-registered loader (e.g. detectron2's builtin COCO or ADE20K ones) so a
    missing or malformed dataset raises our errors. No-op if `name` is not registered."""
    if name not in DatasetCatalog.list():
        return
    inner = DatasetCatalog[name]
    if getattr(inner, "_dinat_m2f_guarded", False):
        return
    context = required[0][0] if required else datasets_root()
    guarded = functools.partial(run_checked, name, family, list(required), context, inner)
    guarded._dinat_m2f_guarded = True  # type: ignore[attr-defined]
    replace_registration(name, guarded)
