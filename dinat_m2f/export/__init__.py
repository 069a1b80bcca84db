"""Export to ONNX and torch.export (exporter.py), the graphs per model family (wrappers.py),
the ONNX forms of the native ops (onnx_ops.py), and deploy/: running the ONNX file with ONNX
Runtime and numpy alone. docs/export.md describes the files and their inputs and outputs."""

from .exporter import FORMATS, ExportResult, export_model
from .sizes import SizeRange
from .wrappers import NotExportableError, graph_of

__all__ = ["FORMATS", "ExportResult", "NotExportableError", "SizeRange", "export_model", "graph_of"]
