"""make demo's training speed of this checkout against an earlier commit, alternating runs.

Issue 22 asks for `make demo`'s training to be faster than it was when filed; the training
benchmark (dinat_m2f.benchmarks.training) emulates the code of then inside today's. This tool
measures the old code itself: it checks COMMIT out as a git worktree, builds its CPU
extension (FORCE_CUDA=0), writes the built-in dataset with that commit's own generator, and
then runs train_net.py of the old and of this checkout in turn, ROUNDS times, for ITERS
iterations each (no checkpoints, no evaluation), reading detectron2's "Overall training speed".
Each round's ratio compares neighbouring runs, since these machines change speed from minute to
minute; the summary is the median of the per-round ratios.

    python tools/train_speed_vs_commit.py c5d36be --rounds 3 --iters 100
    python tools/train_speed_vs_commit.py c5d36be \
        SOLVER.AMP.ENABLED True SOLVER.AMP.PRECISION bfloat16

KEY VALUE opts apply to this checkout's runs only, as `make demo DEMO_OPTS="..."` does: the
second line compares the old code's recipe with this one's in mixed precision.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/builtin/maskformer2_dinat_mini_builtin_shapes.yaml"
SPEED = re.compile(r"Overall training speed: (\d+) iterations in \S+ \(([0-9.]+) s / it\)")


def seconds_per_iteration(log: str) -> float:
    """detectron2's final "Overall training speed" of a train_net log, in s / it."""
    found = SPEED.findall(log)
    if not found:
        raise ValueError("no 'Overall training speed' line in the train_net output")
    return float(found[-1][1])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commit", help="the earlier commit (anything git rev-parse accepts)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=100, help="iterations per run")
    parser.add_argument("--worktree", default=None, help="where to check COMMIT out")
    parser.add_argument("opts", nargs="*", help="train_net KEY VALUE opts for this checkout's runs")
    # intermixed: options may follow the KEY VALUE opts, as in the examples above
    args = parser.parse_intermixed_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.iters < 10:  # detectron2 leaves the first iterations out of its average
        parser.error(f"--iters must be at least 10, got {args.iters}")
    if len(args.opts) % 2:
        parser.error(f"opts come in KEY VALUE pairs, got {args.opts}")
    return args


def _run(cmd, cwd, env=None) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def resolve(commit: str) -> str:
    """The full id of `commit`."""
    return _run(["git", "rev-parse", "--verify", f"{commit}^{{commit}}"], REPO).strip()


def checkout(full: str, worktree: str) -> None:
    """`worktree` at commit `full`: added if absent; an existing one must be at that commit
    (a checkout of something else would be measured in its place)."""
    if not os.path.isdir(worktree):
        _run(["git", "worktree", "add", "--detach", worktree, full], REPO)
        return
    there = _run(["git", "rev-parse", "HEAD"], worktree).strip()
    if there != full:
        raise SystemExit(f"--worktree {worktree} is at {there}, not at the commit {full}")


def prepare(full: str, worktree: str) -> None:
    """The old checkout, built, with its dataset."""
    checkout(full, worktree)
    env = dict(os.environ, FORCE_CUDA="0")
    _run([sys.executable, "setup.py", "build_ext", "--inplace"], worktree, env)
    root = os.path.join(worktree, "datasets")
    _run([sys.executable, "-m", "dinat_m2f.data.generate_builtin", "--root", root], worktree)


def train(checkout: str, iters: int, out: str, opts: list[str] = ()) -> float:
    env = dict(os.environ, DETECTRON2_DATASETS=os.path.join(checkout, "datasets"))
    env.pop("PYTHONPATH", None)  # each checkout imports its own dinat_m2f
    cmd = [
        sys.executable, "train_net.py", "--config-file", CONFIG,
        "SOLVER.MAX_ITER", str(iters), "SOLVER.CHECKPOINT_PERIOD", "1000000",
        "DATASETS.TEST", "()", "OUTPUT_DIR", out, *opts,
    ]  # fmt: skip
    return seconds_per_iteration(_run(cmd, checkout, env))


def main(argv=None) -> int:
    args = parse_args(argv)
    full = resolve(args.commit)
    worktree = args.worktree or os.path.join(tempfile.gettempdir(), f"dinat_m2f_{full[:12]}")
    prepare(full, worktree)
    head = resolve("HEAD")
    _run([sys.executable, "-m", "dinat_m2f.data.generate_builtin", "--root", "datasets"], REPO)
    print(f"# make demo's training, {args.iters} iterations per run: {full[:7]} vs {head[:7]}")
    if args.opts:
        print(f"# opts of {head[:7]}'s runs: {' '.join(args.opts)}")
    print("| round | old s/it | new s/it | old / new |")
    print("|---|---|---|---|")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(1, args.rounds + 1):
            old = train(worktree, args.iters, os.path.join(tmp, f"old{r}"))
            new = train(REPO, args.iters, os.path.join(tmp, f"new{r}"), args.opts)
            ratios.append(old / new)
            print(f"| {r} | {old:.4f} | {new:.4f} | {old / new:.2f}x |", flush=True)
    print(f"# median of the rounds' ratios: {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
