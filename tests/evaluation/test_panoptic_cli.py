"""`python -m dinat_m2f.evaluation.panoptic` as a subprocess: the table, --per-class,
--output, and a non-zero exit naming the missing file."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.evaluation.panoptic_files import segment, write_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "road", "isthing": 0},
    {"id": 3, "name": "sky", "isthing": 0},
]


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "dinat_m2f.evaluation.panoptic", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _files(tmp_path):
    # person perfect (PQ 1); road 6 px predicted as 4 px inside it (IoU 4/6): PQ 2/3.
    # All PQ = (1 + 2/3) / 2 = 83.333 %, Things 100 %, Stuff 66.667 %; sky absent: n = 2.
    gt = np.array([[1, 1, 2, 2, 2, 2, 2, 2]])
    prediction = np.array([[4, 4, 5, 5, 5, 5, 0, 0]])
    gt_json, gt_folder = write_dataset(
        str(tmp_path), "gt", [(7, gt, [segment(1, 1), segment(2, 2)])], CATEGORIES
    )
    pred_json, pred_folder = write_dataset(
        str(tmp_path),
        "pred",
        [(7, prediction, [{"id": 4, "category_id": 1}, {"id": 5, "category_id": 2}])],
    )
    return [
        "--gt-json",
        gt_json,
        "--gt-folder",
        gt_folder,
        "--pred-json",
        pred_json,
        "--pred-folder",
        pred_folder,
        "--no-progress",
    ]


def test_cli_prints_the_table_and_writes_json(tmp_path):
    output = tmp_path / "results.json"
    done = _run(*_files(tmp_path), "--per-class", "--output", str(output))
    assert done.returncode == 0, done.stderr
    rows = [
        [cell.strip() for cell in line.split("|")[1:-1]]
        for line in done.stdout.splitlines()
        if line.startswith("|") and not line.startswith("|:")
    ]
    summary = {row[0]: row[1:] for row in rows if len(row) == 5}
    assert summary["All"] == ["83.333", "83.333", "100.000", "2"]
    assert summary["Things"] == ["100.000", "100.000", "100.000", "1"]
    assert summary["Stuff"] == ["66.667", "66.667", "100.000", "1"]
    per_class = {row[1]: row for row in rows if len(row) == 9}
    assert per_class["road"] == ["2", "road", "stuff", "66.667", "66.667", "100.000", "1", "0", "0"]
    assert per_class["sky"][3:] == ["nan", "nan", "nan", "0", "0", "0"]
    with open(output) as f:
        saved = json.load(f)
    assert abs(saved["All"]["pq"] - 5 / 6) < 1e-12 and saved["per_class"]["3"]["pq"] is None


def test_cli_bad_input_exits_non_zero(tmp_path):
    args = _files(tmp_path)
    missing = os.path.join(args[7], "7.png")
    os.remove(missing)
    done = _run(*args)
    assert done.returncode == 1
    assert f"error: panoptic PNG not found: {missing}" in done.stderr and done.stdout == ""
