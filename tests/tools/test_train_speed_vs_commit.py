"""tools/train_speed_vs_commit.py: reads the speed detectron2's train_net prints, names bad
arguments, refuses a worktree at another commit. (A full run builds an old commit and trains
it: docs/benchmarks.md.)"""

from __future__ import annotations

import subprocess

import pytest

from tools import train_speed_vs_commit as tool

# the two lines detectron2's hooks print at the end of training (format of detectron2 0.7.2)
LOG = (
    "[12/03 12:14:36 d2.engine.hooks]: Overall training speed: 98 iterations in 0:02:08 "
    "(1.3141 s / it)\n"
    "[12/03 12:14:36 d2.engine.hooks]: Total training time: 0:02:10 (0:00:01 on hooks)\n"
)


def test_speed_is_read_from_the_overall_training_speed_line():
    assert tool.seconds_per_iteration("noise\n" + LOG) == 1.3141


def test_a_log_without_the_speed_line_is_an_error():
    with pytest.raises(ValueError, match="Overall training speed"):
        tool.seconds_per_iteration("Total training time: 0:00:04\n")


@pytest.mark.parametrize(
    "argv,named",
    [
        (["c5d36be", "--rounds", "0"], "--rounds must be at least 1, got 0"),
        (["c5d36be", "--iters", "5"], "--iters must be at least 10, got 5"),
        (["c5d36be", "SOLVER.AMP.ENABLED"], "KEY VALUE pairs, got ['SOLVER.AMP.ENABLED']"),
    ],
)
def test_bad_arguments_are_named(argv, named, capsys):
    with pytest.raises(SystemExit) as stop:
        tool.parse_args(argv)
    assert stop.value.code == 2
    assert named in capsys.readouterr().err


def test_opts_reach_only_the_runs_of_this_checkout(monkeypatch):
    """KEY VALUE opts are for this checkout's train_net (as make demo's DEMO_OPTS), after
    the tool's own, so that they win; the old commit trains as it was."""
    args = tool.parse_args(["c5d36be", "--rounds", "2", "SOLVER.AMP.PRECISION", "bfloat16"])
    assert (args.rounds, args.opts) == (2, ["SOLVER.AMP.PRECISION", "bfloat16"])
    commands = []

    def fake_run(cmd, cwd, env=None):
        commands.append(cmd)
        return LOG

    monkeypatch.setattr(tool, "_run", fake_run)
    assert tool.train("old", 20, "out-old") == 1.3141
    assert tool.train(tool.REPO, 20, "out-new", args.opts) == 1.3141
    old, new = commands
    assert "SOLVER.AMP.PRECISION" not in old
    assert new[-2:] == ["SOLVER.AMP.PRECISION", "bfloat16"]
    assert new[:-2] == [a if a != "out-old" else "out-new" for a in old]


def test_main_passes_the_opts_to_this_checkouts_runs(monkeypatch, capsys):
    trained = []
    monkeypatch.setattr(tool, "prepare", lambda full, worktree: None)
    monkeypatch.setattr(tool, "_run", lambda cmd, cwd, env=None: "")
    monkeypatch.setattr(
        tool, "train", lambda where, iters, out, opts=(): trained.append((where, list(opts))) or 1.0
    )
    assert tool.main(["HEAD", "--rounds", "1", "--worktree", "old", "K", "V"]) == 0
    assert trained == [("old", []), (tool.REPO, ["K", "V"])]
    assert "opts of" in capsys.readouterr().out


def test_a_worktree_at_another_commit_is_refused(tmp_path):
    """An existing --worktree is reused only when it is at the commit asked for (needs no
    history beyond HEAD: CI's clone may be shallow)."""
    worktree = str(tmp_path / "old")
    head, other = tool.resolve("HEAD"), "0" * 40
    tool.checkout(head, worktree)
    try:
        tool.checkout(head, worktree)  # at that commit: reused
        with pytest.raises(SystemExit, match=f"is at {head}, not at the commit {other}"):
            tool.checkout(other, worktree)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", worktree], cwd=tool.REPO)
