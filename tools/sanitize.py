#!/usr/bin/env python
"""Builds the emulated device's standalone driver (native/testing/sanitizer/driver.cpp) with
ThreadSanitizer and with AddressSanitizer (+ UndefinedBehaviorSanitizer), and runs it:

    kernels and the SIMT layer's self-test   must run clean under both sanitizers;
    the planted bugs (planted_bugs.cuh)      must each be reported: a removed __syncthreads
                                             (TSan), a write past the dynamic shared memory
                                             and a read past an input (ASan).

Binaries are cached in build/sanitizers/ under a hash of the sources, flags and compiler, so
only a change to native/ rebuilds them (about 20 s each on 2 cores).

    python tools/sanitize.py        # build if needed, run every check, print the results
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
DRIVER = NATIVE / "testing" / "sanitizer" / "driver.cpp"
CACHE = ROOT / "build" / "sanitizers"
CXX = os.environ.get("CXX", "g++")
COMMON_FLAGS = ["-std=c++20", "-O1", "-g", "-fno-omit-frame-pointer", "-pthread"]
SANITIZERS = {
    "tsan": ["-fsanitize=thread"],
    "asan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"],
}
# what each sanitizer prints when it finds something
REPORTS = {"tsan": "WARNING: ThreadSanitizer", "asan": "ERROR: AddressSanitizer"}


@dataclass(frozen=True)
class Check:
    sanitizer: str
    mode: str
    expected: str | None  # a report that must appear (planted bug), or None: must run clean

    @property
    def name(self) -> str:
        return f"{self.sanitizer} {self.mode}"


CHECKS = [
    Check("tsan", "selftest", None),
    Check("tsan", "kernels", None),
    Check("tsan", "race", "data race"),
    Check("asan", "selftest", None),
    Check("asan", "kernels", None),
    Check("asan", "shared-overflow", "heap-buffer-overflow"),
    Check("asan", "global-overflow", "heap-buffer-overflow"),
]
# the planted kernel each planted mode must be blamed on
PLANTED_KERNEL = {
    "race": "rpb_grad_without_barrier",
    "shared-overflow": "stage_rows_past_shared",
    "global-overflow": "qk_reading_past_key",
}


def _sources_digest(flags: list[str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(NATIVE.rglob("*")):
        if path.suffix in (".h", ".cuh", ".cpp") and path.is_file():
            digest.update(str(path.relative_to(NATIVE)).encode())
            digest.update(path.read_bytes())
    version = subprocess.run([CXX, "--version"], capture_output=True, text=True).stdout
    digest.update(" ".join([CXX, *flags, version]).encode())
    return digest.hexdigest()[:16]


def build(sanitizer: str) -> Path:
    """The driver built with `sanitizer` ("tsan" or "asan"), from the cache if up to date."""
    flags = COMMON_FLAGS + SANITIZERS[sanitizer]
    binary = CACHE / f"driver-{sanitizer}-{_sources_digest(flags)}"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    for stale in CACHE.glob(f"driver-{sanitizer}-*"):
        stale.unlink()
    partial = binary.with_suffix(".partial")
    command = [CXX, *flags, f"-I{NATIVE}", str(DRIVER), "-o", str(partial)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"building the {sanitizer} driver failed:\n{' '.join(command)}\n{result.stderr[-4000:]}"
        )
    partial.rename(binary)  # only complete binaries carry the final name
    return binary


def run(binary: Path, mode: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Runs a mode; retries without address-space randomisation when ThreadSanitizer cannot
    map its shadow memory (newer kernels randomise more than older TSan runtimes expect)."""
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=0", "ASAN_OPTIONS": "detect_leaks=0"}
    result = subprocess.run(
        [str(binary), mode], capture_output=True, text=True, env=env, timeout=timeout
    )
    if "unexpected memory mapping" in result.stderr:
        arch = os.uname().machine
        result = subprocess.run(
            ["setarch", arch, "-R", str(binary), mode],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    return result


def verdict(check: Check, result: subprocess.CompletedProcess) -> str | None:
    """None when the check behaved as it must, else what went wrong."""
    output = result.stdout + result.stderr
    reported = REPORTS[check.sanitizer] in output or "runtime error:" in output
    if check.expected is None:
        if reported or result.returncode != 0 or f"PASS {check.mode}" not in result.stdout:
            return f"expected a clean run, got exit {result.returncode}:\n{output[-3000:]}"
        return None
    if result.returncode == 0 or check.expected not in output:
        return f"the planted bug was not reported ({check.expected!r}):\n{output[-3000:]}"
    if PLANTED_KERNEL[check.mode] not in output:
        return f"the report does not name {PLANTED_KERNEL[check.mode]}:\n{output[-3000:]}"
    return None


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    failed = 0
    for check in CHECKS:
        result = run(build(check.sanitizer), check.mode)
        problem = verdict(check, result)
        outcome = "reported as planted" if check.expected else "clean"
        print(f"{check.name:28s} {'ok, ' + outcome if problem is None else 'FAILED'}", flush=True)
        if problem:
            print(problem)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
