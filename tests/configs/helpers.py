"""What the config tests share: where the configs are, reading one as train_net.py does, and
comparing its values with a table of expected ones.

Two comparisons, one per purpose:

- `same_value`: a value a config file sets against the value a table expects. Lists and
  tuples compare element by element (YAML has no tuples); numbers compare by value, with
  floats within `FLOAT_TOLERANCE` (relative), so a YAML decimal and a Python expression of the
  same number (`0.1111111111111111` and `1.0 / 9.0`) are equal;
- `same_default`: a default a set-up function gives against the official one: also the same
  type, since the default's type decides which YAML values merge (yacs refuses an int for a
  float key and the reverse).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from unittest import mock

from detectron2.config import CfgNode

REPO = Path(__file__).resolve().parents[2]
CONFIG_ROOT = REPO / "configs"
# the released Mask2Former / DiNAT YAML files (tests read them there, never from a copy)
FIXTURES = (REPO / ".." / "shared" / "fixtures" / "official-configs").resolve()

FLOAT_TOLERANCE = 1e-12  # relative: what distinguishes two spellings of one number


def config_ids(paths: Iterable[Path], root: Path = CONFIG_ROOT) -> list[str]:
    """Test ids: the paths relative to `root`."""
    return [p.relative_to(root).as_posix() for p in paths]


def by_id(paths: list[Path], root: Path = CONFIG_ROOT) -> dict:
    """`pytest.mark.parametrize("path", **by_id(paths))`: the paths with their ids."""
    return dict(argvalues=paths, ids=config_ids(paths, root))


def plain(value: Any) -> Any:
    """Tuples (nested too) as lists, as a config holds them after merging."""
    return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value


@functools.cache
def _load(path: str, opts: tuple[str, ...], defaults: tuple[tuple[str, Any], ...]) -> CfgNode:
    from dinat_m2f.engine import setup

    def default_cfg() -> CfgNode:
        cfg = original_default_cfg()
        for key, value in defaults:
            *parents, leaf = key.split(".")
            lookup(cfg, ".".join(parents))[leaf] = plain(value)
        return cfg

    original_default_cfg = setup.default_cfg
    with (
        mock.patch.object(setup, "default_cfg", default_cfg),
        mock.patch.object(setup, "check_cfg", lambda cfg: None),
    ):
        cfg = setup.load_cfg(path, list(opts))
    cfg.freeze()
    return cfg


def load_config(
    path: Path | str, opts: Iterable[str] = (), defaults: Iterable[tuple[str, Any]] = ()
) -> CfgNode:
    """The frozen config of a YAML file as train_net.py reads it (`load_cfg`: default_cfg(), the
    file and its _BASE_ chain read as data, then `opts`), cached. `defaults`: (key, value)
    pairs set in default_cfg() before the file merges (values hashable: tuples for lists).
    Without load_cfg's run checks (a CUDA device, float16 AMP needs a GPU): reading needs no GPU."""
    return _load(str(path), tuple(opts), tuple(defaults))


def lookup(cfg: CfgNode, key: str) -> Any:
    """cfg["A"]["B"]["C"] for "A.B.C" ("" is cfg itself)."""
    node = cfg
    for part in filter(None, key.split(".")):
        node = node[part]
    return node


def same_value(actual: Any, expected: Any) -> bool:
    """A config value against a table's (module docstring)."""
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(actual, (list, tuple))
            and len(actual) == len(expected)
            and all(same_value(a, e) for a, e in zip(actual, expected))
        )
    if isinstance(expected, float):
        return (
            isinstance(actual, (int, float))
            and not isinstance(actual, bool)
            and math.isclose(actual, expected, rel_tol=FLOAT_TOLERANCE, abs_tol=0.0)
        )
    return type(actual) is type(expected) and actual == expected


def same_default(actual: Any, expected: Any) -> bool:
    """A set-up function's default against the official one (module docstring)."""
    if isinstance(expected, (list, tuple)):
        return isinstance(actual, (list, tuple)) and plain(actual) == plain(expected)
    return type(actual) is type(expected) and actual == expected


def mismatches(cfg: CfgNode, expected: dict[str, Any]) -> list[str]:
    """One line per key of `expected` whose config value is not `same_value`."""
    return [
        f"{key} = {lookup(cfg, key)!r}, expected {value!r}"
        for key, value in expected.items()
        if not same_value(lookup(cfg, key), value)
    ]
