"""Shared helpers of the dataset preparation scripts in this folder (not a package module:
each script imports it from its own folder)."""

from __future__ import annotations

import os
import sys

# make `dinat_m2f` importable when the scripts run from a checkout without an install
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

README = "datasets/README.md"


class MissingInputError(SystemExit):
    """An input of a preparation script is missing: the script stops with this message on
    stderr (exit status 1)."""

    def __init__(self, path: str, what: str, hint: str):
        self.path = path
        super().__init__(
            f"error: {what} '{os.path.abspath(path)}' does not exist.\n{hint}\n"
            f"See {README} for the expected layout."
        )


def require(path: str, what: str, hint: str) -> str:
    """Returns `path`, or raises `MissingInputError` naming it."""
    if not os.path.exists(path):
        raise MissingInputError(path, what, hint)
    return path


def default_root() -> str:
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
