"""``Layer``: a :class:`~gpucnn.Module` that creates its parameters on first use.

Shapes handed to ``build``, ``output_shape``, ``flops`` and ``check_input_shape`` are PER
SAMPLE (no batch dim): ``(C, H, W)`` for images, ``(features,)`` after ``Flatten``; lists of
shapes for multi-input layers (``Add``, ``Concatenate``).

Data formats: per-sample shapes handed to these methods are always the NATIVE layout
(``(C, H, W)``), and inside a model the layers always receive NCHW tensors. An image layer's
``data_format`` (``"channels_first"``, ``"channels_last"``, ``None``: the global default of
:mod:`gpucnn.config`, read at construction) decides how its ``input_shape=`` argument is read
(``(H, W, C)`` for channels-last) and what a channels-last layer called on its own takes: a
4-D NHWC tensor, transposed to NCHW on the way in and back on the way out (the autograd
transpose, so gradients flow). A channels-last :class:`~gpucnn.Sequential` transposes once at
its input and output instead (:func:`native_layout` marks the inside of a model or a layer).

FLOPs are forward-pass floating-point operations per sample: a multiply-add counts 2, a bias
add, an activation, a comparison or an addition 1 each (inference-mode batch norm 2 per
element: scale and shift).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn import initializers as _init
from gpucnn.config import normalize_data_format
from gpucnn.module import Module
from gpucnn.tensor import Parameter, Tensor

__all__ = [
    "Layer",
    "shape_str",
    "weight_budget",
    "native_layout",
    "in_native_layout",
    "to_nchw",
    "to_nhwc",
    "shape_to_nchw",
    "shape_to_nhwc",
    "layout_hint",
]

_NO_FORMAT: Any = object()  # Layer.__init__: not an image layer (no data_format)

# Bytes the layers built in this context may still allocate for weights, and what sets it.
_BUDGET: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "gpucnn_weight_budget", default=None
)


# True while tensors flow in the native NCHW layout (inside a model or a layer's forward).
_NATIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("gpucnn_native", default=False)


@contextlib.contextmanager
def native_layout() -> Iterator[None]:
    """Inside: tensors and per-sample shapes are NCHW whatever a layer's ``data_format``
    (models and layers set it around their layers, so only the outermost one transposes)."""
    token = _NATIVE.set(True)
    try:
        yield
    finally:
        _NATIVE.reset(token)


def in_native_layout() -> bool:
    """Whether the caller runs inside :func:`native_layout`."""
    return _NATIVE.get()


def to_nchw(x: Any) -> Any:
    """A 4-D NHWC Tensor (or a list of them) as NCHW; anything else unchanged."""
    if isinstance(x, (list, tuple)):
        return type(x)(to_nchw(t) for t in x)
    if isinstance(x, Tensor) and x.ndim == 4:
        return x.transpose(0, 3, 1, 2)
    return x


def to_nhwc(x: Any) -> Any:
    """A 4-D NCHW Tensor (or a list of them) as NHWC; anything else unchanged."""
    if isinstance(x, (list, tuple)):
        return type(x)(to_nhwc(t) for t in x)
    if isinstance(x, Tensor) and x.ndim == 4:
        return x.transpose(0, 2, 3, 1)
    return x


def shape_to_nchw(shape: Any) -> Any:
    """Per-sample ``(H, W, C)`` -> ``(C, H, W)`` (lists element-wise; other ranks as given)."""
    if _is_multi(shape):
        return [shape_to_nchw(s) for s in shape]
    shape = tuple(shape)
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape


def shape_to_nhwc(shape: Any) -> Any:
    """Per-sample ``(C, H, W)`` -> ``(H, W, C)`` (lists element-wise; other ranks as given)."""
    if _is_multi(shape):
        return [shape_to_nhwc(s) for s in shape]
    shape = tuple(shape)
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape


def layout_hint(shape: Any, channels: int | None = None, data_format: str = "channels_first",
                expected: Any = None) -> str:
    """Why a per-sample ``shape`` probably failed and what to write instead ("" when nothing
    looks wrong): a channels-last image reaching an NCHW layer (or the reverse), or a batch
    or channel dimension missing (``expected``: the per-sample shape wanted, when known)."""
    shape = tuple(shape)
    if expected is not None:
        expected = tuple(expected)
        if len(shape) == len(expected) - 1:
            one = "(1, " + ", ".join(map(str, expected)) + ")"
            msg = (f"is the batch dimension missing? one sample of shape {expected} must be "
                   f"passed as x[None] (shape {one})")
            if len(expected) == 3:
                msg += (", a batch without its channel axis as x[:, None] (NCHW) or "
                        "x[..., None] (NHWC)")
            return msg
        if len(shape) == 3 and len(expected) == 3 and shape != expected:
            if data_format == "channels_first" and shape_to_nchw(shape) == expected:
                return ("the input looks channels-last (N, H, W, C) but the model is "
                        "channels-first (N, C, H, W); pass x.transpose(0, 3, 1, 2), or build the "
                        "model with data_format='channels_last'")
            if data_format == "channels_last" and shape_to_nhwc(shape) == expected:
                return ("the input looks channels-first (N, C, H, W) but the model is "
                        "channels-last (N, H, W, C); pass x.transpose(0, 2, 3, 1), or build the "
                        "model with data_format='channels_first'")
        return ""
    if len(shape) == 2:
        return ("images are 4-D: is the batch dimension missing (one sample: x[None]) or the "
                "channel dimension (x[:, None])?")
    if len(shape) != 3 or data_format != "channels_first":
        return ""
    c, _, w = shape
    last_is_c = w == channels if channels is not None else (w in (1, 3, 4) and c > 4)
    first_is_c = channels is not None and c == channels
    if last_is_c and not first_is_c:
        return ("the input looks channels-last (N, H, W, C); pass data_format='channels_last' "
                "(or gpucnn.config.set_image_data_format('channels_last')), or feed "
                "x.transpose(0, 3, 1, 2)")
    return ""


@contextlib.contextmanager
def weight_budget(nbytes: int, source: str) -> Iterator[None]:
    """Layers built inside may allocate at most ``nbytes`` of weights in all; more raises
    ``ValueError`` naming the layer, the weight and ``source`` BEFORE anything is allocated
    (``load_model`` sets it to what the checkpoint holds, so a tampered architecture cannot
    make it allocate more)."""
    token = _BUDGET.set([int(nbytes), source])
    try:
        yield
    finally:
        _BUDGET.reset(token)


def shape_str(shape: Any) -> str:
    """``(None, 3, 32, 32)`` style rendering of a per-sample shape (or list of them)."""
    if isinstance(shape, list):
        return "[" + ", ".join(shape_str(s) for s in shape) + "]"
    return "(None" + "".join(f", {s}" for s in shape) + ")"


class Layer(Module):
    """Base of the built-in layers: lazy ``build``, shape inference, FLOPs and config.

    Args:
        input_shape: per-sample input shape; on the first layer of a ``Sequential`` it makes
            the model build at once (so ``summary()`` works before any data).
        name: display name (default: snake_case class name with a counter).
    """

    def __init__(self, input_shape: Sequence[int] | None = None, name: str | None = None,
                 data_format: Any = _NO_FORMAT) -> None:
        super().__init__(name=name)
        object.__setattr__(self, "_built", False)
        object.__setattr__(
            self, "_input_shape_arg", None if input_shape is None else tuple(input_shape)
        )
        if data_format is not _NO_FORMAT:  # an image layer
            self.data_format = normalize_data_format(data_format, type(self).__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call in the native layout; a channels-last layer called on its own (not inside a
        model or layer) transposes 4-D NHWC inputs to NCHW and a 4-D output back."""
        if in_native_layout():
            return super().__call__(*args, **kwargs)
        with native_layout():
            if self.__dict__.get("data_format") == "channels_last" and args:
                out = super().__call__(to_nchw(args[0]), *args[1:], **kwargs)
                return to_nhwc(out)
            return super().__call__(*args, **kwargs)

    @property
    def channels_last(self) -> bool:
        """Whether this layer's ``data_format`` is ``"channels_last"``."""
        return self.__dict__.get("data_format") == "channels_last"

    # ------------------------------------------------------------------ build
    def build(self, input_shape: Any, backend: str | None = None) -> None:
        """Create the parameters for per-sample ``input_shape`` on ``backend``."""
        if self._built:
            return
        self.check_input_shape(input_shape)
        be = backend or self._backend_name or _backend.current()
        shape = [tuple(s) for s in input_shape] if _is_multi(input_shape) else tuple(input_shape)
        self._create(shape, be)
        object.__setattr__(self, "_built", True)
        object.__setattr__(self, "_build_input_shape", shape)

    def _create(self, input_shape: Any, backend: str) -> None:
        """Create parameters / sub-layers (override); parameter-free layers do nothing."""

    def add_weight(
        self,
        name: str,
        shape: Sequence[int],
        initializer: Any,
        backend: str,
        trainable: bool = True,
    ) -> Parameter:
        """Create, register and return a Parameter drawn from ``initializer`` (float32)."""
        budget = _BUDGET.get()
        if budget is not None:
            need = math.prod(int(d) for d in shape) * 4
            if need > budget[0]:
                raise ValueError(
                    f"{self._in_desc()}: weight {name!r} of shape {tuple(shape)} needs {need} "
                    f"bytes, more than {budget[1]} holds ({budget[0]} bytes left)"
                )
            budget[0] -= need
        fn = _init.get(initializer)
        p = Parameter(fn(tuple(shape), dtype=np.float32, backend=backend),
                      requires_grad=trainable)
        setattr(self, name, p)
        return p

    def _in_desc(self) -> str:
        return f"{type(self).__name__} layer {self.name!r}"

    def _shape_error(self, expected: str, received: Any, extra: str = "",
                     channels: int | None = None) -> ValueError:
        hint = "" if isinstance(received, str) or _is_multi(received) else layout_hint(
            received, channels, self.__dict__.get("data_format", "channels_first"))
        extra = "; ".join(e for e in (extra, hint) if e)
        return ValueError(
            f"{self._in_desc()}: expected input shape {expected}, received "
            f"{shape_str(received) if not isinstance(received, str) else received}"
            + (f" ({extra})" if extra else "")
        )

    # ------------------------------------------------------------------ shapes
    def output_shape(self, input_shape: Any) -> Any:
        """Per-sample output shape (identity by default)."""
        return tuple(input_shape)

    def flops(self, input_shape: Any) -> int:
        """Forward FLOPs per sample (see the module doc)."""
        return 0

    def check_input_shape(self, shape: Any) -> None:
        """Raise ``ValueError`` naming the layer, expected and received shapes."""

    # ------------------------------------------------------------------ config
    def _base_config(self) -> dict:
        cfg: dict[str, Any] = {"name": self.name}
        if self._input_shape_arg is not None:
            cfg["input_shape"] = list(self._input_shape_arg)
        if "data_format" in self.__dict__:
            cfg["data_format"] = self.data_format
        return cfg

    def get_config(self) -> dict:
        return self._base_config()

    @property
    def output_activation(self) -> str | None:
        """``"softmax"``/``"sigmoid"`` when this layer ends in one (for loss detection)."""
        act = self.__dict__.get("activation")
        if isinstance(act, str) and act.lower() in ("softmax", "sigmoid"):
            return act.lower()
        return None


def _is_multi(shape: Any) -> bool:
    return isinstance(shape, (list, tuple)) and bool(shape) and isinstance(shape[0], (list, tuple))


def as_tensor_list(inputs: Any, layer: str) -> list[Tensor]:
    if not isinstance(inputs, (list, tuple)) or not inputs:
        raise TypeError(f"{layer}: expects a non-empty list of tensors")
    return list(inputs)
