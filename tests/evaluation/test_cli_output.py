"""The evaluation command lines' --output file: written as json, or a clear error and status 1."""

import json

from dinat_m2f.evaluation.cli_output import write_output_json


def test_output_is_written_as_json(tmp_path):
    path = tmp_path / "results.json"
    assert write_output_json(str(path), {"PQ": 0.5, "IoU-cat": None}) == 0
    assert json.loads(path.read_text()) == {"PQ": 0.5, "IoU-cat": None}


def test_unwritable_output_is_status_1_naming_the_path(tmp_path, capsys):
    path = tmp_path / "no-such-dir" / "results.json"
    assert write_output_json(str(path), {"PQ": 0.5}) == 1
    assert f"cannot write --output {path}" in capsys.readouterr().err
