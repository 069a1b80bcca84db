"""The layout rules of docs (README "Layout"): no import cycle between the package's modules,
the ops layer below everything else, and every native op schema declared once."""

import ast
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import requires_emulated_device, requires_native

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dinat_m2f"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (at any depth of its code), resolving
    relative imports; `from pkg import name` counts as importing pkg.name when that is a
    module, else pkg."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_finds_imports_and_cycles():
    graph = import_graph()
    assert "dinat_m2f.ops.library" in graph["dinat_m2f.ops.na.dispatch"]
    assert "dinat_m2f.ops.na.checks" in graph["dinat_m2f.layers.na"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(import_graph()) == []


def test_ops_layer_imports_nothing_above_it():
    graph = import_graph()
    upward = {
        (module, target)
        for module, targets in graph.items()
        if module.startswith("dinat_m2f.ops")
        for target in targets
        if not target.startswith("dinat_m2f.ops")
    }
    assert upward == set()


BACKBONE = "dinat_m2f.modeling.backbone"
# shared parts of every backbone, and the file that composes the models into FPN backbones
BACKBONE_SHARED = {f"{BACKBONE}.blocks", f"{BACKBONE}.adapter"}
BACKBONE_COMPOSITES = {BACKBONE, f"{BACKBONE}.fpn"}


def test_each_backbone_model_file_imports_only_shared_parts():
    """A model file holds only its model: blocks and the detectron2 adapter come from the
    shared modules, never from another model's file; the shared modules import no model."""
    graph = import_graph()
    files = {m for m in graph if m.startswith(BACKBONE)}
    models = files - BACKBONE_SHARED - BACKBONE_COMPOSITES
    assert {f"{BACKBONE}.{name}" for name in ("dinat", "swin", "torchvision_swin")} <= models
    crossing = {(m, t) for m in models | BACKBONE_SHARED for t in graph[m] if t in models}
    assert crossing == set()


def native_sources() -> dict[Path, str]:
    return {
        p: p.read_text()
        for p in (ROOT / "native").rglob("*")
        if p.suffix in (".cpp", ".cu", ".h", ".cuh")
    }


# where schemas are written: the ops users call, and the test extension's own ops
USER_SCHEMAS = Path("op_schemas.h")
TESTING_LIBRARY = Path("testing") / "library.cpp"
LIBRARY_FILES = {Path("library.cpp"), TESTING_LIBRARY}


def test_every_schema_is_declared_once_in_its_library_file():
    declared = {}
    for path, text in native_sources().items():
        relative = path.relative_to(ROOT / "native")
        assert "TORCH_LIBRARY_FRAGMENT" not in text, path
        if re.search(r"\bTORCH_LIBRARY\(", text):
            assert relative in LIBRARY_FILES, f"{path} declares a library"
        # a schema is a string literal "name(Tensor ..." (or "name(" + a first argument)
        for name in re.findall(r'"(\w+)\((?:Tensor|int|float|bool)', text):
            declared.setdefault(name, []).append(relative)
    assert declared, "no schema found"
    assert {n: files for n, files in declared.items() if len(files) != 1} == {}
    assert {files[0] for files in declared.values()} == {USER_SCHEMAS, TESTING_LIBRARY}


def test_the_user_extension_holds_no_test_code():
    """Only native/testing/ (the test extension) declares or implements the dinat_m2f_testing
    library, and the package's Python never names the test extension."""
    testing = ROOT / "native" / "testing"
    for path, text in native_sources().items():
        if testing not in path.parents:
            assert not re.search(r"TORCH_LIBRARY\w*\(\s*dinat_m2f_testing", text), path
    for path in PACKAGE.rglob("*.py"):
        assert "_C_testing" not in path.read_text(), f"{path} names the test extension"


def test_devices_register_their_own_kernels_without_device_branches():
    for path, text in native_sources().items():
        assert "is_cuda()" not in text, f"{path} branches on the device instead of registering"
        impls = re.findall(r"TORCH_LIBRARY_IMPL\(\w+, (\w+), m\)", text)
        if path.suffix == ".cu":
            assert set(impls) <= {"CUDA"}, (path, impls)
        elif impls:
            assert "CUDA" not in impls, (path, impls)


def run_fresh(program: str) -> subprocess.CompletedProcess:
    """`program` in a fresh interpreter, with the repository on the path."""
    return subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=str(ROOT),
        timeout=300,
    )


USER_OPS = (
    "na_qk",
    "na_av",
    "na_qk_backward",
    "na_av_backward",
    "na_rpb_backward",
    "ms_deform_attn",
    "ms_deform_attn_backward",
)


@requires_native
def test_dispatcher_routes_each_public_op_to_a_cpu_kernel():
    for op in USER_OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"dinat_m2f::{op}", "CPU"), op
    assert not hasattr(torch.ops.dinat_m2f, "na_qk_tiled")


@requires_emulated_device
def test_the_test_extension_mirrors_the_user_ops():
    """The tests load dinat_m2f._C_testing (conftest.py): the user ops and the test-only ones
    in their own library."""
    for op in (*USER_OPS, "na_qk_tiled", "na_av_tiled", "na_tile_plan"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"dinat_m2f_testing::{op}", "CPU")


def test_readme_layout_names_existing_folders():
    """Every folder of the README's layout tree exists (nested entries are indented by two
    spaces under their parent)."""
    block = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("```")[1]
    parents: list[str] = []
    checked = 0
    for line in block.splitlines():
        match = re.match(r"^( *)([\w.-]+/)(\s|$)", line)
        if not match:
            continue
        depth = len(match.group(1)) // 2
        parents = parents[:depth] + [match.group(2)]
        path = ROOT.joinpath(*parents)
        assert path.is_dir(), f"README layout names {''.join(parents)}, which does not exist"
        checked += 1
    assert checked >= 10


@functools.cache
def fresh_import() -> subprocess.CompletedProcess:
    """A fresh interpreter that imports the package (+ the accuracy benchmark, which names the
    emulated device's library), checks what it registered and prints "ok", then the loaded
    test-extension modules and the op libraries."""
    return run_fresh(
        "import sys, torch\n"
        "import dinat_m2f, dinat_m2f.benchmarks.accuracy\n"
        "from dinat_m2f import add_deeplab_config, add_dinat_config, add_maskformer2_config\n"
        "from detectron2.data import DatasetCatalog\n"
        "from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY\n"
        "from detectron2.modeling import SEM_SEG_HEADS_REGISTRY as HEADS\n"
        "backbones = {'D2DiNAT', 'D2DiNATs', 'D2SwinTransformer', 'D2TorchvisionSwin'}\n"
        "assert backbones <= {name for name, _ in BACKBONE_REGISTRY}\n"
        "assert 'MaskFormer' in META_ARCH_REGISTRY\n"
        "assert {'MaskFormerHead', 'MSDeformAttnPixelDecoder'} <= {n for n, _ in HEADS}\n"
        "names = set(DatasetCatalog.list())\n"
        "for name in ('coco_2017_train_panoptic', 'ade20k_panoptic_train',\n"
        "             'ade20k_full_sem_seg_val', 'cityscapes_fine_panoptic_train',\n"
        "             'mapillary_vistas_panoptic_train',\n"
        "             'mapillary_vistas_sem_seg_val', 'builtin_shapes_train_panoptic'):\n"
        "    assert name in names, name\n"
        "print('ok')\n"
        "print(sorted(m for m in sys.modules if 'testing' in m and 'dinat' in m))\n"
        "libraries = {s.name.split('::')[0] for s in torch._C._jit_get_all_schemas()}\n"
        "print(sorted(n for n in libraries if n.startswith('dinat_m2f')))\n"
    )


def test_importing_the_package_registers_everything():
    """`import dinat_m2f` alone (as `import mask2former`) registers the models and datasets
    and exposes the config functions; run in a fresh interpreter."""
    result = fresh_import()
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[0] == "ok", result.stdout


@requires_native
def test_importing_the_package_loads_no_test_code():
    """In that fresh interpreter the package loads dinat_m2f._C only: no module of the test
    extension, and no op of the dinat_m2f_testing library."""
    result = fresh_import()
    assert result.returncode == 0, result.stderr[-3000:]
    modules, libraries = result.stdout.split("\n")[1:3]
    assert modules == "[]" and "'dinat_m2f'" in libraries, result.stdout
    assert "dinat_m2f_testing" not in libraries, result.stdout
