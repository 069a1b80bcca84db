"""Fixtures of the train_net tests: a tiny built-in dataset (read only, shared by the
package) and the one-process reference run of the multi-process tests."""

import pytest

from .multi_process import EQUIVALENCE_OVERRIDES
from .train_net_runner import run_train_net


@pytest.fixture(scope="package")
def datasets_root(tmp_path_factory):
    """A tiny built-in dataset: 8 training and 4 validation images of 96 px."""
    from dinat_m2f.data.synthetic import generate_builtin_shapes

    root = str(tmp_path_factory.mktemp("shapes"))
    generate_builtin_shapes(root, num_train=8, num_val=4, size=96, seed=0)
    return root


@pytest.fixture(scope="package")
def one_process_run(datasets_root, tmp_path_factory):
    """OUTPUT_DIR of the reference run: one process with the whole batch (IMS_PER_BATCH 2)."""
    output = str(tmp_path_factory.mktemp("one_process"))
    result = run_train_net(datasets_root, output, overrides=EQUIVALENCE_OVERRIDES)
    assert result.returncode == 0, result.stderr[-3000:]
    return output
