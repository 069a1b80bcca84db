"""Reading the benchmarks' printed output: markdown table rows, the device line."""

import torch

from dinat_m2f.benchmarks.timing import device_description

# two short timed runs on one CPU thread: on a shared 2-core machine two OpenMP threads stall
# behind other processes
ONE_THREAD_RUNS = ["--warmup", "1", "--repeats", "2", "--device", "cpu", "--threads", "1"]


def cpu_name_with_one_thread() -> str:
    """device_description's "<CPU model>, <n> threads" as the tool prints it with --threads 1."""
    return device_description(torch.device("cpu")).rsplit(", ", 1)[0] + ", 1 threads"


def table_rows(out: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("| ") and "---" not in line
    ]
