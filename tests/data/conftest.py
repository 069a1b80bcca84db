import importlib.util
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(REPO, "datasets")

# the small built-in dataset every test of this folder shares
SMALL = {"num_train": 8, "num_val": 4, "size": 96, "seed": 0}
PREFIX = "test_shapes"


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    """A datasets root holding builtin_shapes (8 train / 4 val images at 96 px)."""
    from dinat_m2f.data.synthetic import generate_builtin_shapes

    root = str(tmp_path_factory.mktemp("datasets"))
    generate_builtin_shapes(root, **SMALL)
    return root


@pytest.fixture(scope="session")
def shapes(shapes_root):
    """Registers the small dataset under PREFIX; returns (root, registered names)."""
    from dinat_m2f.data.datasets.builtin_shapes import register_builtin_shapes

    return shapes_root, register_builtin_shapes(shapes_root, prefix=PREFIX)


def pytest_collection_modifyitems(config, items):
    # pycocotools 2.0.x's RLE decoding warns under numpy 2; not ours to fix
    here = os.path.dirname(os.path.abspath(__file__))
    ignore = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(ignore)


def load_script(name: str):
    """Imports datasets/<name>.py (the folder is not a package)."""
    if SCRIPTS not in sys.path:
        sys.path.insert(0, SCRIPTS)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(SCRIPTS, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so multiprocessing can pickle its functions
    spec.loader.exec_module(module)
    return module
