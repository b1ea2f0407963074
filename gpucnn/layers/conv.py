"""Conv2D and ZeroPadding2D (NCHW kernels; ``data_format="channels_last"`` accepted)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

import gpucnn.functional as F
from gpucnn import initializers as _init
from gpucnn._checks import check_int
from gpucnn.backend.geometry import conv2d_output_size, pair
from gpucnn.backend.geometry import keras_padding as resolve_padding
from gpucnn.layers.base import Layer
from gpucnn.layers.core import _act_flops, _act_name
from gpucnn.module import register_module
from gpucnn.tensor import Tensor

__all__ = ["Conv2D", "ZeroPadding2D", "resolve_padding"]



@register_module
class Conv2D(Layer):
    """2-D convolution: (N, C, H, W) → (N, filters, OH, OW), then ``activation``.

    Args:
        filters: output channels.
        kernel_size, strides, dilation_rate: int or (h, w) pair.
        padding: ``"valid"``, ``"same"`` (Keras semantics, any stride; odd padding extra on
            the bottom/right), an int or a pair (symmetric).
        groups: grouped convolution (C and filters divisible by it).
        activation: name or callable applied to the output.
        kernel_initializer: default He normal; bias_initializer: default zeros.
        input_shape: per-sample shape, ``(C, H, W)``, or ``(H, W, C)`` when channels-last.
        data_format: ``"channels_first"``, ``"channels_last"`` or ``None`` (the global
            default, :func:`gpucnn.config.image_data_format`); see :mod:`gpucnn.layers`.

    Weight (filters, C/groups, kh, kw) (PyTorch layout), bias (filters,). The argument order
    is Keras's ``(filters, kernel_size, strides)``, not PyTorch's ``(in, out, kernel)``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: Any,
        strides: Any = 1,
        padding: Any = "valid",
        dilation_rate: Any = 1,
        groups: int = 1,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "he_normal",
        bias_initializer: Any = "zeros",
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
        data_format: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name, data_format=data_format)
        if not isinstance(filters, (int, np.integer)) or filters < 1:
            raise ValueError(f"Conv2D: filters must be a positive int, got {filters!r}")
        if not isinstance(groups, (int, np.integer)) or groups < 1 or filters % groups:
            raise ValueError(f"Conv2D: groups must be a positive divisor of filters={filters}, "
                             f"got {groups!r}")
        self.filters = check_int(type(self).__name__, "filters", filters, 1)
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2D")
        self.strides = pair(strides, "strides", "Conv2D")
        self.dilation_rate = pair(dilation_rate, "dilation_rate", "Conv2D")
        resolve_padding(padding, 8, 8, self.kernel_size, self.strides, self.dilation_rate,
                        "Conv2D")  # validate now
        self.padding = padding if isinstance(padding, str) else (
            list(padding) if isinstance(padding, (list, tuple)) else int(padding))
        self.groups = int(groups)
        self.activation = activation
        self._act = F.get_activation(activation)
        self._fused = F.fusable_activation(activation)  # (kind, slope): applied inside the conv op
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.in_channels: int | None = None
        if self._torch_order():
            warnings.warn(self._torch_hint(), UserWarning, stacklevel=2)

    def _torch_order(self) -> bool:
        """Whether the arguments look like PyTorch's ``Conv2d(in, out, kernel)`` order."""
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        return (self.filters <= 4 and kh == kw and sh == sw and sh in (3, 5, 7) and kh >= 6
                and kh > sh and self.padding in ("valid", 0, 1, 2, 3))

    def _torch_hint(self) -> str:
        k = self.kernel_size[0]
        return (f"Conv2D({self.filters}, {k}, {self.strides[0]}, ...) looks like PyTorch's "
                f"Conv2d(in_channels, out_channels, kernel_size) order; Keras's (and gpucnn's) "
                f"is Conv2D(filters, kernel_size, strides) with the input channels inferred: "
                f"write Conv2D({k}, {self.strides[0]})")

    def _pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        return resolve_padding(self.padding, h, w, self.kernel_size, self.strides,
                               self.dilation_rate, self._in_desc())

    def output_shape(self, input_shape: Any) -> tuple:
        _, h, w = (int(s) for s in input_shape)
        oh, ow = conv2d_output_size(
            h, w, self.kernel_size, self.strides, self._pads(h, w), self.dilation_rate
        )
        return (self.filters, oh, ow)

    def check_input_shape(self, shape: Any) -> None:
        shape = tuple(shape)
        c = self.in_channels if self.in_channels is not None else "C"
        want = f"(None, {c}, H, W)"
        if len(shape) != 3:
            raise self._shape_error(want, shape, "Conv2D takes 4-D NCHW inputs")
        if self.in_channels is not None and shape[0] != self.in_channels:
            raise self._shape_error(want, shape, f"{shape[0]} channels instead of {c}",
                                    channels=self.in_channels)
        if shape[0] % self.groups:
            raise self._shape_error(f"channels divisible by groups={self.groups}", shape)
        _, oh, ow = self.output_shape(shape)
        if oh < 1 or ow < 1:
            extra = f"output would be {oh}x{ow}"
            if self._torch_order():
                extra += "; " + self._torch_hint()
            raise self._shape_error(
                f"spatial size of at least the (dilated) kernel {self.kernel_size}", shape,
                extra)

    def _create(self, input_shape: Any, backend: str) -> None:
        self.in_channels = int(input_shape[0])
        kh, kw = self.kernel_size
        self.add_weight("weight", (self.filters, self.in_channels // self.groups, kh, kw),
                        self.kernel_initializer, backend)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer, backend)

    def forward(self, x: Tensor) -> Tensor:
        pt, pb, pl, pr = self._pads(x.shape[2], x.shape[3])
        pad: Any = (pt, pl) if (pt == pb and pl == pr) else (pt, pb, pl, pr)
        b = self.bias if self.use_bias else None
        if self._fused is not None:  # one op: bias + activation in the conv's epilogue
            kind, slope = self._fused
            return F.conv2d(x, self.weight, b, self.strides, pad, self.dilation_rate,
                            self.groups, activation=kind, negative_slope=slope)
        y = F.conv2d(x, self.weight, b, self.strides, pad, self.dilation_rate, self.groups)
        return self._act(y)

    def flops(self, input_shape: Any) -> int:
        c = int(input_shape[0])
        o, oh, ow = self.output_shape(input_shape)
        n_out = o * oh * ow
        per = (c // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        return 2 * n_out * per + (n_out if self.use_bias else 0) + _act_flops(
            self.activation, n_out)

    def get_config(self) -> dict:
        return {
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "dilation_rate": list(self.dilation_rate),
            "groups": self.groups,
            "activation": _act_name(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": _init.serialize(self.kernel_initializer),
            "bias_initializer": _init.serialize(self.bias_initializer),
            **self._base_config(),
        }

    def extra_repr(self) -> str:
        return (f"{self.in_channels} -> {self.filters}, kernel={self.kernel_size}, "
                f"strides={self.strides}, padding={self.padding!r}")


@register_module
class ZeroPadding2D(Layer):
    """Pad H and W with zeros: ``padding`` int, ``(ph, pw)`` or ``((top, bottom), (left,
    right))``."""

    def __init__(self, padding: Any = 1, input_shape: Sequence[int] | None = None,
                 name: str | None = None, data_format: str | None = None) -> None:
        super().__init__(input_shape=input_shape, name=name, data_format=data_format)
        if isinstance(padding, (list, tuple)) and len(padding) == 2 and all(
            isinstance(p, (list, tuple)) for p in padding
        ):
            (t, b), (left, r) = padding
        else:
            ph, pw = pair(padding, "padding", "ZeroPadding2D", minimum=0)
            t = b = ph
            left = r = pw
        self.pads = (int(t), int(b), int(left), int(r))
        if min(self.pads) < 0:
            raise ValueError(f"ZeroPadding2D: padding must be >= 0, got {padding!r}")

    def check_input_shape(self, shape: Any) -> None:
        if len(tuple(shape)) != 3:
            raise self._shape_error("(None, C, H, W)", tuple(shape))

    def forward(self, x: Tensor) -> Tensor:
        t, b, left, r = self.pads
        return F.pad(x, (left, r, t, b))

    def output_shape(self, input_shape: Any) -> tuple:
        c, h, w = (int(s) for s in input_shape)
        t, b, left, r = self.pads
        return (c, h + t + b, w + left + r)

    def get_config(self) -> dict:
        t, b, left, r = self.pads
        return {"padding": [[t, b], [left, r]], **self._base_config()}

