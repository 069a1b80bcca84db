"""Data: dataset registrations (`datasets`), dataset mappers (`dataset_mappers`) and the
built-in synthetic dataset. Importing this package registers all datasets (lazily)."""

from . import datasets  # noqa: F401  (registers the datasets)
from .dataset_mappers import DATASET_MAPPERS, build_dataset_mapper

__all__ = ["DATASET_MAPPERS", "build_dataset_mapper"]
