"""The `--output` file of the evaluation command lines (`panoptic`, `semantic`)."""

from __future__ import annotations

import json
import sys


def write_output_json(path: str, payload: object) -> int:
    """Writes `payload` to `path` as indented json. Returns the command's exit status: 0, or
    1 after a one-line message on stderr when the file cannot be written."""
    try:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)
    except OSError as error:
        print(f"error: cannot write --output {path}: {error}", file=sys.stderr)
        return 1
    return 0
