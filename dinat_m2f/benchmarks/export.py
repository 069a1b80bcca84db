"""Export benchmark: export time, file size, and the latency of ONNX Runtime against PyTorch
eager and torch.compile on the same input, for Mask2Former models (randomly initialised: speed
does not depend on the weights), one table from one run.

    python -m dinat_m2f.benchmarks.export [--cases dinat_tiny_512 dinat_large_640] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from detectron2.modeling import build_model

from ..engine.setup import load_cfg
from ..export import export_model
from ..export.deploy import ExportedModel
from ..export.wrappers import graph_of
from .timing import (
    device_description,
    format_ms,
    load_average,
    markdown_header,
    markdown_row,
    median_iqr,
    time_runs,
)

CASES = {
    "dinat_tiny_512": (
        "configs/ade20k/semantic-segmentation/dinat/maskformer2_dinat_tiny_bs16_160k_res512.yaml",
        512,
    ),
    "dinat_large_640": (
        "configs/ade20k/semantic-segmentation/dinat/"
        "maskformer2_dinat_large_in22k_bs16_160k_res640.yaml",
        640,
    ),
}


def run_case(name: str, repeats: int, out_dir: str) -> dict:
    config, side = CASES[name]
    cfg = load_cfg(
        config, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "SOLVER.AMP.ENABLED", "False"]
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    graph = graph_of(model).eval()
    image = torch.randn(1, 3, side, side)
    path = os.path.join(out_dir, f"{name}.onnx")
    result = export_model(cfg, model, image, path, "onnx")
    row = {"model": name, "export_s": result.seconds, "size_mb": result.bytes / 2**20}
    device = torch.device("cpu")
    with torch.no_grad():
        row["eager"] = median_iqr(time_runs(lambda: graph(image), device, 1, repeats))
        compiled = torch.compile(graph)
        start = time.perf_counter()
        compiled(image)
        row["compile_s"] = time.perf_counter() - start
        row["compiled"] = median_iqr(time_runs(lambda: compiled(image), device, 1, repeats))
    session = ExportedModel(path, threads=torch.get_num_threads())
    feed = image.numpy()
    row["onnxruntime"] = median_iqr(time_runs(lambda: session(feed), device, 1, repeats))
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: use 1 or more")
    print(f"device: {device_description(torch.device('cpu'))}; load average {load_average()}")
    print(
        markdown_header(
            [
                "model",
                "export (s)",
                "file (MiB)",
                "eager (ms)",
                "torch.compile (ms)",
                "compile time (s)",
                "onnxruntime (ms)",
                "eager / onnxruntime",
            ]
        )
    )
    with tempfile.TemporaryDirectory() as out_dir:
        for name in args.cases:
            row = run_case(name, args.repeats, out_dir)
            print(
                markdown_row(
                    [
                        row["model"],
                        f"{row['export_s']:.0f}",
                        f"{row['size_mb']:.0f}",
                        format_ms(*row["eager"], digits=0),
                        format_ms(*row["compiled"], digits=0),
                        f"{row['compile_s']:.0f}",
                        format_ms(*row["onnxruntime"], digits=0),
                        f"{row['eager'][0] / row['onnxruntime'][0]:.2f}x",
                    ]
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
