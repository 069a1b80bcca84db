"""Config files read as data. detectron2 falls back to `yaml.unsafe_load` when a file has a
Python tag, so a downloaded YAML could run any code; Mask2Former's and DiNAT's released
configs need exactly one such tag, an expression for the multi-scale training sizes:

    MIN_SIZE_TRAIN: !!python/object/apply:eval ["[int(x * 0.1 * 640) for x in range(5, 21)]"]

Here files are read with YAML's safe loader plus that one tag, whose expression is computed by
a small evaluator of numbers, lists, tuples, arithmetic, comparisons, list comprehensions and
the calls range / int / float / round / min / max / abs / len / list / tuple. Its work is
bounded: at most MAX_ITEMS values made or visited per expression, integers within 64 bits,
finite floats, expressions of at most MAX_EXPRESSION characters. YAML aliases (which can
multiply a small file into a huge one) are not read. Any other tag or expression is a
ConfigFileError naming the file and line; nothing in a config file can run code. `_BASE_`
chains are followed like detectron2 does (a cycle is an error).
"""

from __future__ import annotations

import ast
import math
import operator
import os

import yaml
from detectron2.config import CfgNode

BASE_KEY = "_BASE_"
EVAL_TAG = "tag:yaml.org,2002:python/object/apply:eval"
MAX_ITEMS = 100_000  # values a config expression may make or visit
MAX_EXPRESSION = 1_000  # characters of one expression
MAX_INT_BITS = 64


class ConfigFileError(ValueError):
    """A config file that is not plain data, or whose _BASE_ chain does not merge."""


def merge_config_file(cfg: CfgNode, path: str) -> None:
    """cfg.merge_from_file(path) with the file (and its _BASE_ chain) read as data."""
    from detectron2.utils.file_io import PathManager

    if not PathManager.isfile(path):
        raise ConfigFileError(f"config file {path} does not exist")
    loaded = type(cfg)(read_config_file(path))
    version = loaded.get("VERSION", None)
    if version is None:
        from detectron2.config.compat import guess_version

        version = guess_version(loaded, path)
    if type(version) is not int:
        raise ConfigFileError(f"{path}: VERSION must be an int, got {version!r}")
    if version == cfg.VERSION:
        cfg.merge_from_other_cfg(loaded)
        return
    if version > cfg.VERSION:
        raise ConfigFileError(f"{path}: VERSION {version} is newer than detectron2's {cfg.VERSION}")
    from detectron2.config.compat import downgrade_config, upgrade_config

    old = downgrade_config(cfg, to_version=version)  # as detectron2 merges older files
    old.merge_from_other_cfg(loaded)
    cfg.clear()
    cfg.update(upgrade_config(old))


def read_config_file(path: str, _chain: tuple[str, ...] = ()) -> dict:
    """The file's mapping with its _BASE_ files merged underneath (bases relative to the file,
    a list of bases merged in order), like detectron2's load_yaml_with_base."""
    if path in _chain:
        raise ConfigFileError(f"_BASE_ cycle: {' -> '.join([*_chain, path])}")
    with CfgNode._open_cfg(path) as f:
        try:
            data = yaml.load(f, Loader=_ConfigLoader)
        except ConfigFileError:
            raise
        except yaml.YAMLError as error:
            raise ConfigFileError(
                f"config file {path} is not plain YAML data: {error}. Config files are read as "
                "data: the only Python tag read is !!python/object/apply:eval of an arithmetic "
                "list expression, as in Mask2Former's configs"
            ) from error
        except RecursionError:
            raise ConfigFileError(f"config file {path} is nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"config file {path} holds a {type(data).__name__}, not a mapping")
    if BASE_KEY not in data:
        return data
    bases = data.pop(BASE_KEY)
    merged: dict = {}
    for base in bases if isinstance(bases, list) else [bases]:
        if not isinstance(base, str):
            raise ConfigFileError(f"{path}: _BASE_ must name files, got {base!r}")
        base = os.path.expanduser(base)
        if not base.startswith(("/", "https://", "http://")):
            base = os.path.join(os.path.dirname(path), base)
        _merge_into(read_config_file(base, (*_chain, path)), merged, path)
    _merge_into(data, merged, path)
    return merged


def _merge_into(a: dict, b: dict, path: str) -> None:
    for key, value in a.items():
        if isinstance(value, dict) and key in b:
            if not isinstance(b[key], dict):
                raise ConfigFileError(f"{path}: key {key} is a mapping here but not in its _BASE_")
            _merge_into(value, b[key], path)
        else:
            b[key] = value


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader plus the eval tag of Mask2Former's configs, without aliases."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigFileError(
                f"{self.name}, line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) "
                "are not read in config files (a few of them can multiply a file's size)"
            )
        return super().compose_node(parent, index)


def _construct_eval(loader: _ConfigLoader, node: yaml.Node):
    where = f"{loader.name}, line {node.start_mark.line + 1}"
    args = loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else None
    if not args or len(args) != 1 or not isinstance(args[0], str):
        raise ConfigFileError(f"{where}: !!python/object/apply:eval takes one expression string")
    return evaluate(args[0], where)


_ConfigLoader.add_constructor(EVAL_TAG, _construct_eval)


def evaluate(expression: str, where: str = "config expression"):
    """The value of a config expression (see the module docstring for what may be in it)."""
    if len(expression) > MAX_EXPRESSION:
        raise ConfigFileError(f"{where}: expression longer than {MAX_EXPRESSION} characters")
    evaluator = _Evaluator(expression, where)
    try:
        tree = ast.parse(expression, mode="eval")
        return evaluator.value(tree.body, {})
    except SyntaxError as error:
        raise ConfigFileError(f"{where}: {expression!r} is not an expression: {error}") from None
    except (OverflowError, RecursionError, MemoryError) as error:
        raise evaluator.refuse(f"{type(error).__name__}") from None


_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_COMPARE = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
# the functions a config expression may call (range is checked and counted on its own)
_CALLS = {
    "range": range,
    "int": int,
    "float": float,
    "round": round,
    "min": min,
    "max": max,
    "abs": abs,
    "len": len,
    "list": list,
    "tuple": tuple,
}


class _Evaluator:
    def __init__(self, expression: str, where: str):
        self.expression = expression
        self.where = where
        self.items = 0

    def refuse(self, what: str) -> ConfigFileError:
        return ConfigFileError(
            f"{self.where}: {what} in {self.expression!r}; config expressions may hold numbers, "
            f"lists, arithmetic, comparisons, list comprehensions and {'/'.join(_CALLS)}, "
            "nothing that runs code"
        )

    def count(self, n: int) -> None:
        self.items += n
        if self.items > MAX_ITEMS:
            raise self.refuse(f"more than {MAX_ITEMS} values")

    def number(self, node: ast.AST, names: dict):
        value = self.value(node, names)
        if not isinstance(value, (int, float)):
            raise self.refuse(f"arithmetic on a {type(value).__name__}")
        return value

    def bounded(self, value):
        """`value`, if a number: an int within MAX_INT_BITS bits or a finite float."""
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise self.refuse(f"an integer over {MAX_INT_BITS} bits")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.refuse(f"the float {value}")
        return value

    def value(self, node: ast.AST, names: dict):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return self.bounded(node.value)
        if isinstance(node, (ast.List, ast.Tuple)):
            self.count(len(node.elts))
            items = [self.value(e, names) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise self.refuse(f"the name {node.id!r}")
            return names[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.number(node.operand, names)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self.number(node.left, names), self.number(node.right, names)
            try:
                return self.bounded(_BINARY[type(node.op)](left, right))
            except ZeroDivisionError:
                raise self.refuse("a division by zero") from None
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
            left, right = self.number(node.left, names), self.number(node.comparators[0], names)
            return _COMPARE[type(node.ops[0])](left, right)
        if isinstance(node, ast.Call):
            return self.call(node, names)
        if isinstance(node, ast.ListComp):
            out: list = []
            self.comprehension(node.elt, node.generators, dict(names), out)
            return out
        raise self.refuse(f"a {type(node).__name__}")

    def call(self, node: ast.Call, names: dict):
        if not isinstance(node.func, ast.Name) or node.func.id not in _CALLS or node.keywords:
            raise self.refuse(f"the call {ast.unparse(node.func)}(...)")
        name = node.func.id
        args = [self.value(a, names) for a in node.args]
        if name == "range":
            if not 1 <= len(args) <= 3 or not all(type(a) is int for a in args):
                raise self.refuse("range() of other than 1 to 3 ints")
            try:
                values = range(*args)
            except ValueError as error:
                raise self.refuse(f"range() failing with {error}") from None
            self.count(len(values))
            return values
        if name in ("len", "list", "tuple", "min", "max") and any(
            not isinstance(a, (int, float, list, tuple, range)) for a in args
        ):
            raise self.refuse(f"{name}() of a string")
        if (
            name == "round"
            and len(args) == 2
            and not (type(args[1]) is int and -20 <= args[1] <= 20)
        ):
            raise self.refuse("round() to other than -20..20 digits")
        for a in args:  # the calls visit their arguments' items
            if isinstance(a, (list, tuple, range)):
                self.count(len(a))
        try:
            return self.bounded(_CALLS[name](*args))
        except (TypeError, ValueError) as error:
            raise self.refuse(f"{name}() failing with {error}") from None

    def comprehension(self, element, generators, names: dict, out: list) -> None:
        if not generators:
            self.count(1)
            out.append(self.value(element, names))
            return
        first, rest = generators[0], generators[1:]
        if not isinstance(first.target, ast.Name) or first.is_async:
            raise self.refuse("a comprehension target other than one name")
        iterable = self.value(first.iter, names)
        if not isinstance(iterable, (list, tuple, range)):
            raise self.refuse(f"iterating over a {type(iterable).__name__}")
        for item in iterable:
            self.count(1)  # every visit, kept or filtered out
            names[first.target.id] = item
            if all(self.value(condition, names) for condition in first.ifs):
                self.comprehension(element, rest, names, out)
