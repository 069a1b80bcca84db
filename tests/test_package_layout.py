"""The layout rules of docs (README "Layout"): no import cycle between the package's modules,
the ops layer below everything else, and every native op schema declared once."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import requires_native

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


def test_every_schema_is_declared_once_in_library_cpp():
    declared = {}
    for path, text in native_sources().items():
        assert "TORCH_LIBRARY_FRAGMENT" not in text, path
        if re.search(r"\bTORCH_LIBRARY\(", text):
            assert path.name == "library.cpp", f"{path} declares a library"
        # a schema is a string literal "name(Tensor ..." (or "name(" + a first argument)
        for name in re.findall(r'"(\w+)\((?:Tensor|int|float|bool)', text):
            declared.setdefault(name, []).append(path.name)
    assert declared, "no schema found"
    assert {name: files for name, files in declared.items() if files != ["library.cpp"]} == {}


def test_devices_register_their_own_kernels_without_device_branches():
    for path, text in native_sources().items():
        assert "is_cuda()" not in text, f"{path} branches on the device instead of registering"
        impls = re.findall(r"TORCH_LIBRARY_IMPL\(\w+, (\w+), m\)", text)
        if path.suffix == ".cu":
            assert set(impls) <= {"CUDA"}, (path, impls)
        elif impls:
            assert "CUDA" not in impls, (path, impls)


@requires_native
def test_dispatcher_routes_each_public_op_to_a_cpu_kernel():
    for op in (
        "na_qk",
        "na_av",
        "na_qk_backward",
        "na_av_backward",
        "na_rpb_backward",
        "ms_deform_attn",
        "ms_deform_attn_backward",
    ):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"dinat_m2f::{op}", "CPU"), op
    # the test-only ops live in their own namespace
    assert not hasattr(torch.ops.dinat_m2f, "na_qk_tiled")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("dinat_m2f_testing::na_qk_tiled", "CPU")


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


def test_importing_the_package_registers_everything():
    """`import dinat_m2f` alone (as `import mask2former`) registers the models and datasets
    and exposes the config functions; run in a fresh interpreter."""
    program = (
        "import dinat_m2f\n"
        "from dinat_m2f import add_deeplab_config, add_dinat_config, add_maskformer2_config\n"
        "from detectron2.data import DatasetCatalog\n"
        "from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY\n"
        "backbones = {'D2DiNAT', 'D2DiNATs', 'D2SwinTransformer', 'D2TorchvisionSwin'}\n"
        "assert backbones <= {name for name, _ in BACKBONE_REGISTRY}\n"
        "assert 'MaskFormer' in META_ARCH_REGISTRY\n"
        "assert {'MaskFormerHead', 'MSDeformAttnPixelDecoder'} <= {n for n, _ in SEM_SEG_HEADS_REGISTRY}\n"
        "names = set(DatasetCatalog.list())\n"
        "for name in ('coco_2017_train_panoptic', 'ade20k_panoptic_train', 'ade20k_full_sem_seg_val',\n"
        "             'cityscapes_fine_panoptic_train', 'mapillary_vistas_panoptic_train',\n"
        "             'mapillary_vistas_sem_seg_val', 'builtin_shapes_train_panoptic'):\n"
        "    assert name in names, name\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ROOT),
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
