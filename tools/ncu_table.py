#!/usr/bin/env python
"""Nsight Compute's metrics of each profiled kernel as one markdown table, for the profile step
of tools/gpu_check.sh.

    python tools/ncu_table.py NCU_CSV

NCU_CSV is what `ncu --csv --page details --log-file NCU_CSV ...` writes: one row per
(profiled launch, metric) with the columns "ID", "Kernel Name", "Section Name", "Metric Name",
"Metric Unit" and "Metric Value" (other columns are ignored, and so are ncu's own '==PROF=='
lines around the rows). The table has a row per metric (section, name, unit) and a column per
kernel, from the last profiled launch of each kernel: earlier launches of the same name are
the same kernel on the same shape. Exits 1, saying what is missing, when the file has no such
rows. Standard library only.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

REQUIRED = ("ID", "Kernel Name", "Section Name", "Metric Name", "Metric Unit", "Metric Value")


def read_rows(path: Path) -> list[dict]:
    """The metric rows of an ncu CSV log; ValueError naming what is missing."""
    lines = path.read_text(errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID",')), None)
    if start is None:
        raise ValueError(f'{path}: no ncu CSV header (a line starting with "ID",)')
    reader = csv.DictReader(lines[start:])
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: the ncu CSV header lacks the columns {missing}")
    # '==PROF==' lines after the header parse as rows without a metric
    rows = [r for r in reader if r.get("Metric Name") and r.get("ID", "").isdigit()]
    if not rows:
        raise ValueError(f"{path}: no metric rows (did ncu profile any kernel?)")
    return rows


def table(rows: list[dict]) -> list[str]:
    last = {}  # kernel -> ID of its last profiled launch
    for r in rows:
        last[r["Kernel Name"]] = max(last.get(r["Kernel Name"], -1), int(r["ID"]))
    kernels = sorted(last, key=last.get)
    values: dict[tuple[str, str, str], dict[str, str]] = {}  # in ncu's order of metrics
    for r in rows:
        if int(r["ID"]) == last[r["Kernel Name"]]:
            key = (r["Section Name"], r["Metric Name"], r["Metric Unit"])
            values.setdefault(key, {})[r["Kernel Name"]] = r["Metric Value"]
    out = [
        f"# Nsight Compute: the last profiled launch of each of {len(kernels)} kernels "
        f"(launch IDs {', '.join(str(last[k]) for k in kernels)})",
        "| section | metric | unit | " + " | ".join(kernels) + " |",
        "|---|---|---|" + "---|" * len(kernels),
    ]
    for (section, name, unit), by_kernel in values.items():
        cells = [by_kernel.get(k, "-") for k in kernels]
        out.append(f"| {section} | {name} | {unit} | " + " | ".join(cells) + " |")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        rows = read_rows(Path(argv[0]))
    except (OSError, ValueError) as error:
        print(f"ncu_table: {error}", file=sys.stderr)
        return 1
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
