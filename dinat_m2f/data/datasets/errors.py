"""The errors of a registered dataset whose files are missing or malformed.

Registration is lazy: registering a dataset only records paths. Loading it (calling
`DatasetCatalog.get(name)`) checks the files first and raises `DatasetNotFoundError` (a
`FileNotFoundError`) or `DatasetFormatError` (a `ValueError`) naming the path, the expected
layout and the section of `datasets/README.md` that explains how to get it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from .layout import layout_hint

__all__ = ["DatasetFormatError", "DatasetNotFoundError", "check_paths", "run_checked"]


class DatasetNotFoundError(FileNotFoundError):
    """A registered dataset's files are missing."""

    def __init__(self, dataset_name: str, family: str, path: str, what: str):
        self.dataset_name, self.path = dataset_name, path
        super().__init__(
            f"Dataset '{dataset_name}': {what} '{os.path.abspath(path)}' does not exist.\n"
            + layout_hint(family)
        )


class DatasetFormatError(ValueError):
    """A registered dataset's files exist but do not have the expected format."""

    def __init__(self, dataset_name: str, family: str, path: str, problem: str):
        self.dataset_name, self.path = dataset_name, path
        super().__init__(
            f"Dataset '{dataset_name}': '{os.path.abspath(path)}' is malformed: {problem}\n"
            + layout_hint(family)
        )


def check_paths(dataset_name: str, family: str, paths: Sequence[tuple[str, str]]) -> None:
    """Raises `DatasetNotFoundError` for the first missing `(path, what)`."""
    for path, what in paths:
        if not os.path.exists(path):
            raise DatasetNotFoundError(dataset_name, family, path, what)


def run_checked(
    dataset_name: str,
    family: str,
    required: Sequence[tuple[str, str]],
    context_path: str,
    fn: Callable[[], list],
) -> list:
    """Checks `required`, runs the loader, turns its low-level errors into ours."""
    check_paths(dataset_name, family, required)
    try:
        return fn()
    except (DatasetNotFoundError, DatasetFormatError):
        raise
    except FileNotFoundError as e:
        raise DatasetNotFoundError(
            dataset_name, family, e.filename or context_path, "a file it lists"
        ) from e
    except (KeyError, ValueError, TypeError, AssertionError, IndexError) as e:
        problem = f"{type(e).__name__}: {e}"
        raise DatasetFormatError(dataset_name, family, context_path, problem) from e
