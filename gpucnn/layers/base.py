"""``Layer``: a :class:`~gpucnn.Module` that creates its parameters on first use.

Shapes handed to ``build``, ``output_shape``, ``flops`` and ``check_input_shape`` are PER
SAMPLE (no batch dim): ``(C, H, W)`` for images, ``(features,)`` after ``Flatten``; lists of
shapes for multi-input layers (``Add``, ``Concatenate``).

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
from gpucnn.module import Module
from gpucnn.tensor import Parameter, Tensor

__all__ = ["Layer", "shape_str", "weight_budget"]

# Bytes the layers built in this context may still allocate for weights, and what sets it.
_BUDGET: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "gpucnn_weight_budget", default=None
)


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

    def __init__(self, input_shape: Sequence[int] | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        object.__setattr__(self, "_built", False)
        object.__setattr__(
            self, "_input_shape_arg", None if input_shape is None else tuple(input_shape)
        )

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

    def _shape_error(self, expected: str, received: Any, extra: str = "") -> ValueError:
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
