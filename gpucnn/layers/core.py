"""Dense, reshaping, dropout, activations, merge layers and ``Input`` / ``InputLayer``.

Layers whose result depends on the element order (``Flatten``, ``Reshape``) or on an axis
(``Softmax``, ``Concatenate``), and the per-channel ones (``SpatialDropout2D``, ``PReLU``),
take ``data_format``: with ``"channels_last"`` they act as on NHWC tensors (``Flatten``
flattens in (H, W, C) order, ``Softmax(axis=-1)`` is over channels) although the tensors
inside a model are NCHW.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import gpucnn.functional as F
from gpucnn import initializers as _init
from gpucnn._checks import check_int, check_number
from gpucnn.layers.base import (
    Layer,
    as_tensor_list,
    shape_str,
    shape_to_nchw,
    to_nchw,
    to_nhwc,
)
from gpucnn.module import register_module
from gpucnn.tensor import Tensor

__all__ = [
    "Dense",
    "Flatten",
    "Reshape",
    "Dropout",
    "SpatialDropout2D",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Softmax",
    "Add",
    "Concatenate",
    "InputLayer",
    "Input",
]

# NHWC axis -> NCHW axis of a 4-D tensor
_NHWC_TO_NCHW_AXIS = (0, 2, 3, 1)


def _native_axis(axis: int, ndim: int, channels_last: bool) -> int:
    """The axis of the NCHW tensor for ``axis`` of the layer's layout (4-D, channels-last)."""
    if not channels_last or ndim != 4:
        return axis
    return _NHWC_TO_NCHW_AXIS[axis % 4]


def _act_name(act: Any) -> Any:
    if act is None or isinstance(act, str):
        return act
    return getattr(act, "__name__", repr(act))


def _act_flops(act: Any, n: int) -> int:
    return 0 if act is None or act == "linear" else n


@register_module
class Dense(Layer):
    """Fully connected: ``y = activation(x @ W.T + b)``; x (N, in) → (N, units).

    Weight (units, in) (PyTorch layout), bias (units,). Default initialisers: Glorot uniform
    kernel, zero bias (Keras).
    """

    def __init__(
        self,
        units: int,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        if not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"Dense: units must be a positive int, got {units!r}")
        self.units = check_int(type(self).__name__, "units", units, 1)
        self.activation = activation
        self._act = F.get_activation(activation)
        self._fused = F.fusable_activation(activation)  # (kind, slope): inside the linear op
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.in_features: int | None = None

    def check_input_shape(self, shape: Any) -> None:
        shape = tuple(shape)
        want = f"(None, {self.in_features})" if self.in_features else "(None, features)"
        if len(shape) != 1:
            raise self._shape_error(want, shape, "Dense takes 2-D (N, features) inputs; add a "
                                    "Flatten layer before it")
        if self.in_features is not None and shape[0] != self.in_features:
            raise self._shape_error(want, shape)

    def _create(self, input_shape: Any, backend: str) -> None:
        self.in_features = int(input_shape[0])
        self.add_weight("weight", (self.units, self.in_features), self.kernel_initializer,
                        backend)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer, backend)
        else:
            self.bias = None  # type: ignore[assignment]

    def forward(self, x: Tensor) -> Tensor:
        b = self.bias if self.use_bias else None
        if self._fused is not None:  # one op: bias + activation in the GEMM's epilogue
            kind, slope = self._fused
            return F.linear(x, self.weight, b, activation=kind, negative_slope=slope)
        return self._act(F.linear(x, self.weight, b))

    def output_shape(self, input_shape: Any) -> tuple:
        return (self.units,)

    def flops(self, input_shape: Any) -> int:
        n_in = int(input_shape[0])
        return 2 * n_in * self.units + (self.units if self.use_bias else 0) + _act_flops(
            self.activation, self.units)

    def get_config(self) -> dict:
        return {
            "units": self.units,
            "activation": _act_name(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": _init.serialize(self.kernel_initializer),
            "bias_initializer": _init.serialize(self.bias_initializer),
            **self._base_config(),
        }

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.units}, activation={_act_name(self.activation)}"


@register_module
class Flatten(Layer):
    """(N, d1, d2, ...) → (N, d1*d2*...). Channels-first flattens (C, H, W) in that order
    (PyTorch); channels-last in (H, W, C) order, as flattening the NHWC array would."""

    def __init__(self, input_shape: Sequence[int] | None = None, name: str | None = None,
                 data_format: str | None = None) -> None:
        super().__init__(input_shape=input_shape, name=name, data_format=data_format)

    def forward(self, x: Tensor) -> Tensor:
        return F.flatten(to_nhwc(x) if self.channels_last else x, 1)

    def output_shape(self, input_shape: Any) -> tuple:
        return (int(np.prod(input_shape)),)


@register_module
class Reshape(Layer):
    """Reshape each sample to ``target_shape`` (one entry may be -1). Channels-last: the
    sample is read and ``target_shape`` written in (H, W, C) order."""

    def __init__(self, target_shape: Sequence[int], input_shape: Sequence[int] | None = None,
                 name: str | None = None, data_format: str | None = None) -> None:
        super().__init__(input_shape=input_shape, name=name, data_format=data_format)
        self.target_shape = tuple(int(s) for s in target_shape)

    def output_shape(self, input_shape: Any) -> tuple:
        out = self._target(input_shape)
        return shape_to_nchw(out) if self.channels_last else out

    def _target(self, input_shape: Any) -> tuple:
        """The per-sample target shape in the layer's layout."""
        n = int(np.prod(input_shape))
        t = list(self.target_shape)
        if -1 in t:
            known = int(np.prod([s for s in t if s != -1]))
            if known == 0 or n % known:
                raise self._shape_error(f"a size divisible by {known}", tuple(input_shape))
            t[t.index(-1)] = n // known
        if int(np.prod(t)) != n:
            raise self._shape_error(f"{int(np.prod(t))} elements per sample", tuple(input_shape))
        return tuple(t)

    def check_input_shape(self, shape: Any) -> None:
        self.output_shape(shape)

    def forward(self, x: Tensor) -> Tensor:
        if not self.channels_last:
            return F.reshape(x, (x.shape[0], *self.output_shape(x.shape[1:])))
        y = F.reshape(to_nhwc(x), (x.shape[0], *self._target(x.shape[1:])))
        return to_nchw(y)

    def get_config(self) -> dict:
        return {"target_shape": list(self.target_shape), **self._base_config()}


@register_module
class Dropout(Layer):
    """Zero each element with probability ``rate`` in training, scaling the rest by
    1/(1-rate) (inverted dropout); identity in eval mode. Masks come from gpucnn.random."""

    def __init__(self, rate: float, input_shape: Sequence[int] | None = None,
                 name: str | None = None) -> None:
        super().__init__(input_shape=input_shape, name=name)
        self.rate = check_number(type(self).__name__, "rate", rate, 0.0, 1.0, max_open=True)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        return F.dropout(x, self.rate, True)

    def get_config(self) -> dict:
        return {"rate": self.rate, **self._base_config()}

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


@register_module
class SpatialDropout2D(Dropout):
    """Dropout of whole channels of (N, C, H, W) inputs (NHWC with channels-last)."""

    def __init__(self, rate: float, input_shape: Sequence[int] | None = None,
                 name: str | None = None, data_format: str | None = None) -> None:
        super().__init__(rate, input_shape=input_shape, name=name)
        self.data_format = _fmt(data_format, "SpatialDropout2D")  # (Dropout takes none)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        return F.dropout2d(x, self.rate, True)


@register_module
class Activation(Layer):
    """An element-wise activation by name (``"relu"``, ``"sigmoid"``, ``"softmax"``...)."""

    def __init__(self, activation: Any, input_shape: Sequence[int] | None = None,
                 name: str | None = None) -> None:
        super().__init__(input_shape=input_shape, name=name)
        self.activation = activation
        self._act = F.get_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self._act(x)

    def flops(self, input_shape: Any) -> int:
        return _act_flops(self.activation, int(np.prod(input_shape)))

    def get_config(self) -> dict:
        return {"activation": _act_name(self.activation), **self._base_config()}

    def extra_repr(self) -> str:
        return repr(_act_name(self.activation))


@register_module
class ReLU(Layer):
    """``max(x, 0)``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)

    def flops(self, input_shape: Any) -> int:
        return int(np.prod(input_shape))


@register_module
class LeakyReLU(Layer):
    """``x if x > 0 else negative_slope * x``; default slope 0.3 (Keras; PyTorch uses 0.01)."""

    def __init__(self, negative_slope: float = 0.3, input_shape: Sequence[int] | None = None,
                 name: str | None = None) -> None:
        super().__init__(input_shape=input_shape, name=name)
        self.negative_slope = check_number(type(self).__name__, "negative_slope", negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def flops(self, input_shape: Any) -> int:
        return int(np.prod(input_shape))

    def get_config(self) -> dict:
        return {"negative_slope": self.negative_slope, **self._base_config()}


@register_module
class ELU(Layer):
    """``x if x > 0 else alpha * (exp(x) - 1)``."""

    def __init__(self, alpha: float = 1.0, input_shape: Sequence[int] | None = None,
                 name: str | None = None) -> None:
        super().__init__(input_shape=input_shape, name=name)
        self.alpha = check_number(type(self).__name__, "alpha", alpha)

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha)

    def flops(self, input_shape: Any) -> int:
        return int(np.prod(input_shape))

    def get_config(self) -> dict:
        return {"alpha": self.alpha, **self._base_config()}


@register_module
class PReLU(Layer):
    """``x if x > 0 else a[c] * x`` with a learned slope per channel (axis 1), initialised
    to ``alpha_init`` (0.25, as PyTorch). ``shared=True`` learns one slope for all channels."""

    def __init__(self, alpha_init: float = 0.25, shared: bool = False,
                 input_shape: Sequence[int] | None = None, name: str | None = None,
                 data_format: str | None = None) -> None:
        super().__init__(input_shape=input_shape, name=name, data_format=data_format)
        self.alpha_init = float(alpha_init)
        self.shared = bool(shared)
        self.channels: int | None = None

    def check_input_shape(self, shape: Any) -> None:
        shape = tuple(shape)
        if len(shape) < 1:
            raise self._shape_error("(None, C, ...)", shape)
        if self.channels is not None and not self.shared and shape[0] != self.channels:
            raise self._shape_error(f"(None, {self.channels}, ...)", shape)

    def _create(self, input_shape: Any, backend: str) -> None:
        self.channels = 1 if self.shared else int(input_shape[0])
        a = self.alpha_init

        def init(shape: Any, dtype: Any = np.float32, backend: str = "numpy") -> Any:
            return _init.ones(shape, dtype, backend) * dtype(a)

        self.add_weight("weight", (self.channels,), init, backend)

    def forward(self, x: Tensor) -> Tensor:
        return F.prelu(x, self.weight)

    def flops(self, input_shape: Any) -> int:
        return 2 * int(np.prod(input_shape))

    def get_config(self) -> dict:
        return {"alpha_init": self.alpha_init, "shared": self.shared, **self._base_config()}


@register_module
class Softmax(Layer):
    """Softmax over ``axis`` (of the full tensor in the layer's layout; default -1: on
    channels-last images the channels). Note: the losses expect logits and detect a final
    Softmax (see :mod:`gpucnn.model`)."""

    output_activation = "softmax"  # type: ignore[assignment]

    def __init__(self, axis: int = -1, input_shape: Sequence[int] | None = None,
                 name: str | None = None, data_format: str | None = None) -> None:
        super().__init__(input_shape=input_shape, name=name, data_format=data_format)
        self.axis = check_int(type(self).__name__, "axis", axis)

    def forward(self, x: Tensor) -> Tensor:
        if -x.ndim <= self.axis < x.ndim:
            return F.softmax(x, _native_axis(self.axis, x.ndim, self.channels_last))
        return F.softmax(x, self.axis)  # (its error names the axis)

    def flops(self, input_shape: Any) -> int:
        return 3 * int(np.prod(input_shape))

    def get_config(self) -> dict:
        return {"axis": self.axis, **self._base_config()}


@register_module
class Add(Layer):
    """Element-wise sum of a list of same-shaped tensors: ``Add()([a, b])``."""

    def check_input_shape(self, shape: Any) -> None:
        if not isinstance(shape, list) or len(shape) < 2:
            raise ValueError(f"{self._in_desc()}: expects a list of at least 2 tensors, "
                             f"received {shape_str(shape) if isinstance(shape, tuple) else shape}")
        first = tuple(shape[0])
        for s in shape[1:]:
            if tuple(s) != first:
                raise self._shape_error(f"all inputs {shape_str(first)}", shape)

    def forward(self, inputs: list[Tensor]) -> Tensor:
        xs = as_tensor_list(inputs, self._in_desc())
        out = xs[0]
        for t in xs[1:]:
            out = out + t
        return out

    def output_shape(self, input_shape: Any) -> tuple:
        return tuple(input_shape[0])

    def flops(self, input_shape: Any) -> int:
        return (len(input_shape) - 1) * int(np.prod(input_shape[0]))


@register_module
class Concatenate(Layer):
    """Join a list of tensors along ``axis`` of the full tensor in the layer's layout
    (default 1: the channels of channels-first images; Keras's -1 is the channels of
    channels-last ones)."""

    def __init__(self, axis: int = 1, input_shape: Sequence[int] | None = None,
                 name: str | None = None, data_format: str | None = None) -> None:
        super().__init__(input_shape=input_shape, name=name, data_format=data_format)
        self.axis = check_int("Concatenate", "axis", axis)
        if self.axis == 0:
            raise ValueError("Concatenate: axis 0 is the batch axis")

    def _full_axis(self, ndim: int) -> int:
        """The (non-negative) axis of the full NCHW tensor of ``ndim`` dims."""
        ax = self.axis if self.axis >= 0 else self.axis + ndim
        if not 0 < ax < ndim:
            raise ValueError(f"{self._in_desc()}: axis {self.axis} is out of range for "
                             f"{ndim}-D inputs")
        return _native_axis(ax, ndim, self.channels_last)

    def _sample_axis(self, ndim: int) -> int:
        return self._full_axis(ndim + 1) - 1

    def check_input_shape(self, shape: Any) -> None:
        if not isinstance(shape, list) or len(shape) < 1:
            raise ValueError(f"{self._in_desc()}: expects a list of tensors, received {shape}")
        first = tuple(shape[0])
        ax = self._sample_axis(len(first))
        for s in shape[1:]:
            s = tuple(s)
            if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first))
                                           if i != ax):
                raise self._shape_error(
                    f"shapes equal to {shape_str(first)} except on axis {self.axis}", shape)

    def forward(self, inputs: list[Tensor]) -> Tensor:
        xs = as_tensor_list(inputs, self._in_desc())
        return F.concat(xs, axis=self._full_axis(xs[0].ndim))

    def output_shape(self, input_shape: Any) -> tuple:
        first = list(input_shape[0])
        ax = self._sample_axis(len(first))
        first[ax] = sum(int(s[ax]) for s in input_shape)
        return tuple(first)

    def get_config(self) -> dict:
        return {"axis": self.axis, **self._base_config()}


@register_module
class InputLayer(Layer):
    """Keras's ``InputLayer``: declares the per-sample input shape of a :class:`Sequential`
    (in the model's data format: ``(H, W, C)`` for a channels-last model). As its first
    element it sets the input shape like ``input_shape=`` on the first layer; it is not one
    of the model's ``layers`` (as in Keras) and has no parameters. Called on a tensor it
    returns it unchanged.

    Args:
        shape: per-sample shape (no batch dim). ``input_shape`` is Keras 2's name for it.
        batch_size: optional fixed batch size (recorded, not enforced).
        batch_shape: ``(batch_size, *shape)`` instead of ``shape``/``batch_size``.
    """

    def __init__(self, shape: Sequence[int] | None = None, batch_size: int | None = None,
                 name: str | None = None, input_shape: Sequence[int] | None = None,
                 batch_shape: Sequence[int] | None = None) -> None:
        given = [k for k, v in (("shape", shape), ("input_shape", input_shape),
                                ("batch_shape", batch_shape)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"InputLayer: pass only one of shape, input_shape, batch_shape; "
                             f"got {', '.join(given)}")
        if batch_shape is not None:
            bs = tuple(batch_shape)
            if not bs:
                raise ValueError("InputLayer: batch_shape must include the batch dimension, "
                                 "got ()")
            batch_size, shape = bs[0], bs[1:]
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("InputLayer: shape is required (the per-sample shape, without the "
                             "batch dimension), e.g. InputLayer(shape=(28, 28, 1))")
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        if not isinstance(shape, (list, tuple)) or not shape or any(
            isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in shape
        ):
            raise ValueError(f"InputLayer: shape must be a non-empty tuple of positive ints "
                             f"(per sample, no batch dimension), got {shape!r}")
        super().__init__(input_shape=tuple(int(d) for d in shape), name=name)
        self.batch_size = check_int("InputLayer", "batch_size", batch_size, 1, allow_none=True)

    @property
    def shape(self) -> tuple:
        """The per-sample shape."""
        return tuple(self._input_shape_arg)

    def check_input_shape(self, shape: Any) -> None:
        if not isinstance(shape, list) and len(tuple(shape)) != len(self.shape):
            raise self._shape_error(shape_str(self.shape), tuple(shape))

    def forward(self, x: Any) -> Any:
        return x

    def get_config(self) -> dict:
        return {"shape": list(self.shape), "batch_size": self.batch_size, "name": self.name}

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def Input(shape: Sequence[int] | None = None, batch_size: int | None = None,  # noqa: N802
          name: str | None = None, batch_shape: Sequence[int] | None = None) -> InputLayer:
    """Keras's ``Input(shape=...)``: here an :class:`InputLayer`, to put first in a
    :class:`~gpucnn.Sequential` (gpucnn has no functional graph API: build
    ``Sequential([Input(shape=(28, 28, 1)), Conv2D(...), ...])`` or subclass ``Model``)."""
    return InputLayer(shape=shape, batch_size=batch_size, name=name, batch_shape=batch_shape)


def _fmt(data_format: Any, where: str) -> str:
    from gpucnn.config import normalize_data_format

    return normalize_data_format(data_format, where)
