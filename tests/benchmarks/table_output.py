"""Reading the benchmarks' printed output: markdown table rows, the device line."""

import torch

from dinat_m2f.benchmarks.timing import device_description


def cpu_name_with_one_thread() -> str:
    """device_description's "<CPU model>, <n> threads" as the tool prints it with --threads 1."""
    return device_description(torch.device("cpu")).rsplit(", ", 1)[0] + ", 1 threads"


def table_rows(out: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("| ") and "---" not in line
    ]
