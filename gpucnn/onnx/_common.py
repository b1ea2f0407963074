"""Shared pieces of ONNX export and import: the lazy ``onnx`` import, the opset range and the
minimum IR version of an opset."""

from __future__ import annotations

from typing import Any

__all__ = [
    "MIN_OPSET",
    "MAX_OPSET",
    "ExportError",
    "UnsupportedOpError",
    "require_onnx",
    "min_ir_version",
    "check_opset",
]

#: Export supports these ``ai.onnx`` opsets (inclusive).
MIN_OPSET = 17
MAX_OPSET = 21


class ExportError(ValueError):
    """A model (or one of its layers / ops) that has no ONNX equivalent; the message names the
    layer and why."""


class UnsupportedOpError(ValueError):
    """An ONNX graph holding an op the importer cannot run; the message names the op, its
    opset and the node."""


def require_onnx() -> Any:
    """The ``onnx`` module, or an ``ImportError`` saying how to install it."""
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "gpucnn.onnx needs the 'onnx' package: pip install \"gpucnn[onnx]\" (or pip install "
            f"onnx); importing it failed: {exc}"
        ) from exc
    return onnx


def check_opset(opset: Any, op: str = "gpucnn.onnx.export") -> int:
    """``opset`` as an int in ``MIN_OPSET..MAX_OPSET``; ``TypeError``/``ValueError`` otherwise."""
    if isinstance(opset, bool) or not hasattr(opset, "__index__"):
        raise TypeError(f"{op}: opset must be an int, got {opset!r}")
    opset = int(opset)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"{op}: opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}"
        )
    return opset


def min_ir_version(opset: int) -> int:
    """The smallest ONNX IR version whose release supports ``ai.onnx`` opset ``opset`` (from
    ``onnx.helper.VERSION_TABLE``: rows ``(release, ir, opset, ml opset, ...)``).

    ``onnx.helper.make_model`` stamps the newest IR the installed ``onnx`` knows, which an
    older ONNX Runtime may refuse; the minimum is what every reader of that opset accepts.
    """
    onnx = require_onnx()
    irs = [int(row[1]) for row in onnx.helper.VERSION_TABLE if int(row[2]) >= opset]
    if not irs:
        raise ValueError(
            f"gpucnn.onnx: the installed onnx {onnx.__version__} does not know opset {opset}"
        )
    return min(irs)
