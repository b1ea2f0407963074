"""ONNX export and import (``pip install "gpucnn[onnx]"``; ``onnx`` is imported lazily).

``gpucnn.onnx.export(model, "model.onnx", input_shape=(3, 32, 32))`` writes any gpucnn model
(``Sequential``, the zoo, PyTorch-style ``Module`` subclasses) as a checked ONNX graph, opset
17 to 21, NCHW, with a dynamic batch dimension by default. ``gpucnn.onnx.load("model.onnx")``
returns a gpucnn :class:`~gpucnn.Model` that runs the graph with gpucnn ops on the current
backend; its initializers are Parameters, so ``compile``/``fit`` fine-tune it.
"""

from gpucnn.onnx._common import (
    MAX_OPSET,
    MIN_OPSET,
    ExportError,
    UnsupportedOpError,
    min_ir_version,
)
from gpucnn.onnx.export import export, to_model_proto
from gpucnn.onnx.importer import SUPPORTED_OPS, OnnxModel, load

__all__ = [
    "export",
    "to_model_proto",
    "load",
    "OnnxModel",
    "ExportError",
    "UnsupportedOpError",
    "SUPPORTED_OPS",
    "MIN_OPSET",
    "MAX_OPSET",
    "min_ir_version",
]
