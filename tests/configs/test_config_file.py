"""Config files are read as data (dinat_m2f/engine/config_file.py): every released and
project YAML reads exactly as detectron2's own (unsafe) reader reads it, and a file that would
run code, through any tag, expression or _BASE_, is refused by load_cfg, train_net.py and
demo/demo.py with the file named, while the marker file it would create never appears. Each
such file is first shown to run its code under yaml.unsafe_load (what detectron2 falls back
to), in a child process: there the marker does appear."""

import subprocess
import sys
from pathlib import Path

import pytest
from fvcore.common.config import CfgNode as FvcoreCfgNode

from dinat_m2f.engine.config_file import (
    MAX_EXPRESSION,
    MAX_ITEMS,
    ConfigFileError,
    evaluate,
    read_config_file,
)
from dinat_m2f.engine.setup import load_cfg
from tests.plain_loaders import assert_plain_loader_runs_it

from .helpers import FIXTURES, REPO

YAMLS = sorted((REPO / "configs").rglob("*.yaml")) + sorted(FIXTURES.rglob("*.yaml"))


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_every_config_reads_as_detectron2_reads_it(path):
    # the reference: fvcore's reader, which detectron2 uses (with yaml.unsafe_load)
    expected = FvcoreCfgNode.load_yaml_with_base(str(path), allow_unsafe=True)
    assert read_config_file(str(path)) == expected


def test_the_released_sizes_expression_and_other_data_expressions():
    sizes = "[int(x * 0.1 * 640) for x in range(5, 21)]"
    assert evaluate(sizes) == [int(x * 0.1 * 640) for x in range(5, 21)]
    assert evaluate("[x * 2 for x in range(7) if x % 2 == 0]") == [0, 4, 8, 12]
    assert evaluate("[(a, b) for a in range(2) for b in (5, 6)]") == [
        (0, 5),
        (0, 6),
        (1, 5),
        (1, 6),
    ]
    assert evaluate("(round(-2.5 / 2, 1), min(3, 4), max([1, 9]), abs(-3), len(range(4)))") == (
        -1.2,
        3,
        9,
        3,
        4,
    )


# Expressions that run code: under yaml.unsafe_load (what detectron2 falls back to) each one
# creates the marker file, which the positive control checks before our reader refuses it.
CODE_EXPRESSIONS = [
    "__import__('os').system('touch {marker}')",
    "open('{marker}', 'w')",
    "[open('{marker}', 'w') for x in range(1)]",
    "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'catch_warnings'][0]()"
    "._module.__builtins__['open']('{marker}', 'w')",
    "(lambda: open('{marker}', 'w'))()",
    "exec(\"open('{marker}', 'w')\")",
]
# Expressions that run no code but are not the data a config holds, or more work than a
# config needs: refused by the evaluator's bounds (tested at their edges below).
UNSUPPORTED_EXPRESSIONS = [
    f"[x for x in range({MAX_ITEMS + 1})]",
    "[[x for x in range(1000)] for y in range(1000)]",
    "'a' * 10",
    "list('abc')",
    "range(1, 2, 0)",
    # bounded work: visits filtered out count, so do the items calls walk over
    "[1 for r in [range(3000)] for i in r for j in r if 0]",
    "[list(r) for r in [range(50000)] for i in r]",
    # no huge numbers: ints within 64 bits, finite floats, round() within 20 digits
    "round(1, -4000000)",
    "[0 for a in [2 ** 3] for b in [a]]",
    "[0 for a in [int(1e18)] for b in [a * a]]",
    "int(1e308)",
    "float('inf')",
    "1e308 * 10",
    "+".join(["1"] * 600),  # longer than an expression may be
]
# Python tags: each one runs code under yaml.unsafe_load (the marker appears).
HOSTILE_TAGS = [
    '!!python/object/apply:os.system ["touch {marker}"]',
    '!!python/object/apply:subprocess.call [["touch", "{marker}"]]',
    # (!!python/object/new:subprocess.Popen would only call Popen.__new__: nothing runs, as
    # this test's positive control showed)
    '!!python/object/apply:subprocess.Popen [["touch", "{marker}"]]',
    # naming anything in a module imports it, which runs the module's code
    "!!python/name:hostile_module.anything",
    "!!python/module:hostile_module",
    "!!python/object/apply:eval [\"__import__('os').system('touch {marker}')\"]",
    "!!python/object/apply:eval [\"open('{marker}', 'w')\", {{}}]",
]


def eval_tag(expression: str) -> str:
    return '!!python/object/apply:eval ["' + expression.replace('"', '\\"') + '"]'


def hostile_yaml(tmp_path: Path, value: str) -> tuple[Path, Path]:
    """hostile.yaml holding `value` ({marker} filled in), the marker path, and beside them
    hostile_module.py, a module that creates the marker when imported."""
    marker = tmp_path / "marker"
    (tmp_path / "hostile_module.py").write_text(f"open({str(marker)!r}, 'w')\n")
    path = tmp_path / "hostile.yaml"
    path.write_text(
        f"MODEL:\n  DEVICE: cpu\nINPUT:\n  MIN_SIZE_TRAIN: {value.format(marker=marker)}\n"
    )
    return path, marker


@pytest.mark.parametrize("expression", CODE_EXPRESSIONS)
def test_expressions_that_run_code_run_under_unsafe_load_and_are_refused(tmp_path, expression):
    path, marker = hostile_yaml(tmp_path, eval_tag(expression))
    assert_plain_loader_runs_it("yaml.unsafe_load", path, marker)
    with pytest.raises(ConfigFileError, match=rf"{path}, line 4: .*nothing that runs code"):
        load_cfg(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("expression", UNSUPPORTED_EXPRESSIONS)
def test_expressions_that_are_not_data_are_refused(tmp_path, expression):
    path, marker = hostile_yaml(tmp_path, eval_tag(expression))
    with pytest.raises(
        ConfigFileError, match=rf"{path}, line 4: .*(nothing that runs code|longer)"
    ):
        load_cfg(str(path))


def test_the_bounds_accept_their_edges_and_refuse_past_them():
    """Each bound accepts values up to it and refuses past it, so a check that stopped working
    (or one that refused too much) fails here."""
    assert len(evaluate(f"[x for x in range({MAX_ITEMS // 10})]")) == MAX_ITEMS // 10
    with pytest.raises(ConfigFileError, match="nothing that runs code"):
        evaluate(f"[x for x in range({MAX_ITEMS + 1})]")
    assert evaluate("9223372036854775807 * 2 + 1") == 2**64 - 1  # 64 bits
    with pytest.raises(ConfigFileError, match="an integer over 64 bits"):
        evaluate("9223372036854775807 * 2 + 2")
    edge = "[" + ",".join(["1"] * 499) + ",]"
    assert len(edge) == MAX_EXPRESSION and evaluate(edge) == [1] * 499
    with pytest.raises(ConfigFileError, match="longer"):
        evaluate(edge[:-1] + " ]")


@pytest.mark.parametrize("tag", HOSTILE_TAGS)
def test_python_tags_run_under_unsafe_load_and_are_refused_also_through_a_base(tmp_path, tag):
    path, marker = hostile_yaml(tmp_path, tag)
    assert_plain_loader_runs_it("yaml.unsafe_load", path, marker, pythonpath=str(tmp_path))
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: hostile.yaml\nSOLVER:\n  MAX_ITER: 5\n")
    for config in (path, child):
        with pytest.raises(ConfigFileError, match=str(path)):
            load_cfg(str(config))
    assert not marker.exists()


def test_aliases_deep_nesting_and_bad_bases_are_refused_by_name(tmp_path):
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text("a: &a {x: 1}\nb: [*a, *a, *a, *a]\n")
    with pytest.raises(ConfigFileError, match=r"laughs.yaml, line 2: YAML aliases \(\*a\)"):
        read_config_file(str(laughs))
    deep = tmp_path / "deep.yaml"
    deep.write_text("MODEL: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigFileError, match="nested too deeply"):
        read_config_file(str(deep))
    (tmp_path / "x.yaml").write_text("_BASE_: y.yaml\n")
    (tmp_path / "y.yaml").write_text("_BASE_: x.yaml\n")
    with pytest.raises(ConfigFileError, match=r"_BASE_ cycle: .*x.yaml -> .*y.yaml -> .*x.yaml"):
        read_config_file(str(tmp_path / "x.yaml"))
    (tmp_path / "n.yaml").write_text("_BASE_: 5\n")
    with pytest.raises(ConfigFileError, match="_BASE_ must name files, got 5"):
        read_config_file(str(tmp_path / "n.yaml"))
    (tmp_path / "v.yaml").write_text("VERSION: two\n")
    with pytest.raises(ConfigFileError, match="VERSION must be an int, got 'two'"):
        load_cfg(str(tmp_path / "v.yaml"))


def test_train_net_and_the_demo_refuse_a_hostile_config_with_exit_status_2(tmp_path):
    path, marker = hostile_yaml(tmp_path, HOSTILE_TAGS[0])
    commands = [
        [sys.executable, "train_net.py", "--config-file", str(path)],
        [sys.executable, "demo/demo.py", "--config-file", str(path), "--input", "x.jpg"],
    ]
    for command in commands:
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr[-2000:]
        assert str(path) in result.stderr and "not plain YAML data" in result.stderr
    assert not marker.exists()


def test_the_tools_refuse_a_hostile_config_with_exit_status_2(tmp_path, capsys):
    from tools import analyze_model, memory_soak

    path, marker = hostile_yaml(tmp_path, HOSTILE_TAGS[0])
    with pytest.raises(SystemExit) as exit_info:
        analyze_model.main(["--config-file", str(path)])
    assert exit_info.value.code == 2
    assert memory_soak.main(["--config-file", str(path), "--images", "1"]) == 2
    assert capsys.readouterr().err.count(f"config file {path} is not plain YAML data") == 2
    assert not marker.exists()


def test_base_chains_merge_and_conflicts_name_the_key(tmp_path):
    (tmp_path / "a.yaml").write_text("SOLVER:\n  MAX_ITER: 5\n  BASE_LR: 0.1\n")
    (tmp_path / "b.yaml").write_text("_BASE_: [a.yaml]\nSOLVER:\n  BASE_LR: 0.2\n")
    assert read_config_file(str(tmp_path / "b.yaml")) == {"SOLVER": {"MAX_ITER": 5, "BASE_LR": 0.2}}
    (tmp_path / "c.yaml").write_text("_BASE_: a.yaml\nSOLVER: 3\n")
    assert read_config_file(str(tmp_path / "c.yaml")) == {"SOLVER": 3}  # as detectron2 does
    (tmp_path / "d.yaml").write_text("SOLVER: 3\n")
    (tmp_path / "e.yaml").write_text("_BASE_: d.yaml\nSOLVER:\n  MAX_ITER: 5\n")
    with pytest.raises(ConfigFileError, match="key SOLVER is a mapping here but not in its _BASE_"):
        read_config_file(str(tmp_path / "e.yaml"))
    with pytest.raises(ConfigFileError, match="does not exist"):
        load_cfg(str(tmp_path / "missing.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigFileError, match="holds a list, not a mapping"):
        read_config_file(str(tmp_path / "list.yaml"))
