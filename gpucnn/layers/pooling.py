"""Pooling layers (NCHW kernels; ``data_format="channels_last"`` accepted): max/average,
global, adaptive."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

import gpucnn.functional as F
from gpucnn.backend.geometry import pair
from gpucnn.layers.base import Layer
from gpucnn.layers.conv import resolve_padding
from gpucnn.module import register_module
from gpucnn.tensor import Tensor

__all__ = [
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "AdaptiveAveragePooling2D",
    "AdaptiveMaxPooling2D",
]


class _Pool2D(Layer):
    _kind = "max"

    def __init__(self, pool_size: Any = 2, strides: Any = None, padding: Any = "valid",
                 input_shape: Sequence[int] | None = None, name: str | None = None,
                 data_format: str | None = None) -> None:
        super().__init__(input_shape=input_shape, name=name, data_format=data_format)
        cls = type(self).__name__
        self.pool_size = pair(pool_size, "pool_size", cls)
        self.strides = self.pool_size if strides is None else pair(strides, "strides", cls)
        resolve_padding(padding, 8, 8, self.pool_size, self.strides, (1, 1), cls)
        if isinstance(padding, str):
            self.padding: Any = padding
        else:
            ph, pw = pair(padding, "padding", cls, minimum=0)
            if ph > self.pool_size[0] // 2 or pw > self.pool_size[1] // 2:
                raise ValueError(f"{cls}: padding {padding!r} must be at most half the "
                                 f"pool size {self.pool_size}")
            self.padding = ph if ph == pw else [ph, pw]

    def _pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        return resolve_padding(self.padding, h, w, self.pool_size, self.strides, (1, 1),
                               self._in_desc())

    def output_shape(self, input_shape: Any) -> tuple:
        c, h, w = (int(s) for s in input_shape)
        pt, pb, pl, pr = self._pads(h, w)
        (kh, kw), (sh, sw) = self.pool_size, self.strides
        return (c, (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1)

    def check_input_shape(self, shape: Any) -> None:
        shape = tuple(shape)
        if len(shape) != 3:
            raise self._shape_error("(None, C, H, W)", shape, "pooling takes 4-D NCHW inputs")
        _, oh, ow = self.output_shape(shape)
        if oh < 1 or ow < 1:
            raise self._shape_error(f"spatial size of at least the pool size {self.pool_size}",
                                    shape, f"output would be {oh}x{ow}")

    def flops(self, input_shape: Any) -> int:
        return int(np.prod(self.output_shape(input_shape))) * self.pool_size[0] * \
            self.pool_size[1]

    def get_config(self) -> dict:
        return {"pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding, **self._base_config()}

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}, strides={self.strides}, padding={self.padding!r}"


@register_module
class MaxPooling2D(_Pool2D):
    """Max over ``pool_size`` windows (default stride = pool_size). ``padding="same"`` gives
    ``ceil(H/stride)`` outputs, padding with -inf (padding never wins), as Keras."""

    def forward(self, x: Tensor) -> Tensor:
        pt, pb, pl, pr = self._pads(x.shape[2], x.shape[3])
        if pt == pb and pl == pr:
            return F.max_pool2d(x, self.pool_size, self.strides, (pt, pl))
        x = F.pad(x, (pl, pr, pt, pb), value=-np.inf)
        return F.max_pool2d(x, self.pool_size, self.strides, 0)


@register_module
class AveragePooling2D(_Pool2D):
    """Mean over ``pool_size`` windows. With ``padding="same"`` the padded positions are not
    counted (Keras); with an int padding they are (PyTorch's default)."""

    def forward(self, x: Tensor) -> Tensor:
        pt, pb, pl, pr = self._pads(x.shape[2], x.shape[3])
        if isinstance(self.padding, str) and (pt or pb or pl or pr):
            xp = x.xp
            ones = Tensor(xp.ones((1, 1, x.shape[2], x.shape[3]), dtype=x.dtype))
            num = F.avg_pool2d(F.pad(x, (pl, pr, pt, pb)), self.pool_size, self.strides, 0)
            den = F.avg_pool2d(F.pad(ones, (pl, pr, pt, pb)), self.pool_size, self.strides, 0)
            return num / den
        return F.avg_pool2d(x, self.pool_size, self.strides, (pt, pl))


class _GlobalPool(Layer):
    def __init__(self, keepdims: bool = False, input_shape: Sequence[int] | None = None,
                 name: str | None = None,
                 data_format: str | None = None) -> None:
        super().__init__(input_shape=input_shape, name=name, data_format=data_format)
        self.keepdims = bool(keepdims)

    def check_input_shape(self, shape: Any) -> None:
        if len(tuple(shape)) != 3:
            raise self._shape_error("(None, C, H, W)", tuple(shape))

    def output_shape(self, input_shape: Any) -> tuple:
        c = int(input_shape[0])
        return (c, 1, 1) if self.keepdims else (c,)

    def flops(self, input_shape: Any) -> int:
        return int(np.prod(input_shape))

    def get_config(self) -> dict:
        return {"keepdims": self.keepdims, **self._base_config()}


@register_module
class GlobalAveragePooling2D(_GlobalPool):
    """(N, C, H, W) → (N, C) means (``keepdims=True``: (N, C, 1, 1))."""

    def forward(self, x: Tensor) -> Tensor:
        return F.global_avg_pool2d(x, keepdims=self.keepdims)


@register_module
class GlobalMaxPooling2D(_GlobalPool):
    """(N, C, H, W) → (N, C) maxima (``keepdims=True``: (N, C, 1, 1)); the first maximum of
    each plane gets the gradient."""

    def forward(self, x: Tensor) -> Tensor:
        return F.global_max_pool2d(x, keepdims=self.keepdims)


class _Adaptive(Layer):
    _fn = "adaptive_avg_pool2d"

    def __init__(self, output_size: Any, input_shape: Sequence[int] | None = None,
                 name: str | None = None,
                 data_format: str | None = None) -> None:
        super().__init__(input_shape=input_shape, name=name, data_format=data_format)
        self.output_size = pair(output_size, "output_size", type(self).__name__)

    def check_input_shape(self, shape: Any) -> None:
        if len(tuple(shape)) != 3:
            raise self._shape_error("(None, C, H, W)", tuple(shape))

    def output_shape(self, input_shape: Any) -> tuple:
        return (int(input_shape[0]), *self.output_size)

    def forward(self, x: Tensor) -> Tensor:
        return getattr(F, self._fn)(x, self.output_size)

    def flops(self, input_shape: Any) -> int:
        c, h, w = (int(s) for s in input_shape)
        oh, ow = self.output_size
        return c * oh * ow * math.ceil(h / oh) * math.ceil(w / ow)

    def get_config(self) -> dict:
        return {"output_size": list(self.output_size), **self._base_config()}


@register_module
class AdaptiveAveragePooling2D(_Adaptive):
    """Average pooling to a fixed ``output_size`` (PyTorch's adaptive window rule)."""


@register_module
class AdaptiveMaxPooling2D(_Adaptive):
    """Max pooling to a fixed ``output_size`` (PyTorch's adaptive window rule)."""

    _fn = "adaptive_max_pool2d"
