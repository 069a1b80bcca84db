"""A small Nsight Compute CSV log, shared by the tests of tools/ncu_table.py and of the GPU
check's profile step."""

from pathlib import Path


def ncu_sample(folder: Path) -> Path:
    """A log of `ncu --csv --page details --log-file`: its messages, then a row per (launch,
    metric); the forward profiled twice (the second launch's values are the ones to keep)."""
    head = '"ID","Process ID","Process Name","Kernel Name","Block Size","Section Name",'
    head += '"Metric Name","Metric Unit","Metric Value"'
    metrics = [
        (0, "na_forward_kernel", "GPU Speed Of Light Throughput", "Duration", "us", "9.99"),
        (0, "na_forward_kernel", "Occupancy", "Achieved Occupancy", "%", "9.9"),
        (1, "na_forward_kernel", "GPU Speed Of Light Throughput", "Duration", "us", "1.42"),
        (1, "na_forward_kernel", "Occupancy", "Achieved Occupancy", "%", "31.5"),
        (2, "na_backward_key_kernel", "GPU Speed Of Light Throughput", "Duration", "us", "2.10"),
    ]
    lines = ["==PROF== Connected to process 7 (/usr/bin/python3)", head]
    lines += [
        f'"{i}","7","python3","{k}","(128, 1, 1)","{sec}","{name}","{unit}","{value}"'
        for i, k, sec, name, unit, value in metrics
    ]
    lines.append("==PROF== Disconnected from process 7")
    path = folder / "ncu.csv"
    path.write_text("\n".join(lines) + "\n")
    return path
