"""Positive controls for the hostile-file tests (tests/checkpoint/test_safe_load.py,
tests/configs/test_config_file.py): a payload that our readers refuse must first be shown to
run code under the plain loader it targets, in a child process, by the marker file it creates.
Without that control a refusal test passes just as well for a payload that never did anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

# How each plain loader reads the file at sys.argv[1] (what a user's own script would do).
PLAIN_LOADERS = {
    "pickle.load": "import pickle, sys\npickle.load(open(sys.argv[1], 'rb'))",
    "torch.load(weights_only=False)": (
        "import sys, torch\ntorch.load(sys.argv[1], map_location='cpu', weights_only=False)"
    ),
    # what detectron2's CfgNode.load_yaml_with_base falls back to for a Python tag
    "yaml.unsafe_load": "import sys, yaml\nyaml.unsafe_load(open(sys.argv[1]))",
}


def assert_plain_loader_runs_it(
    loader: str, path: str | os.PathLike, marker: str | os.PathLike, pythonpath: str = ""
) -> None:
    """Loads `path` with the plain `loader` (a key of PLAIN_LOADERS) in a child process and
    asserts that the payload created `marker`; then removes the marker, so that the caller can
    check that our reader never creates it. The loader may fail after the payload ran (the
    payload's result is not what the file's reader expected): only the marker counts. A
    payload that starts a process may create the marker a moment after the loader returns.

    Args:
        pythonpath: prepended to the child's PYTHONPATH (payloads that import a module).
    """
    marker = os.fspath(marker)
    assert not os.path.exists(marker), f"{marker} exists before the control ran"
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_LOADERS[loader], os.fspath(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.exists(marker), (
        f"positive control: {loader} of {path} did not run the payload (no {marker}); "
        f"status {result.returncode}: {result.stderr[-2000:]}"
    )
    os.remove(marker)
