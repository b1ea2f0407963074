"""Composite blocks: ``ResidualBlock`` (ResNet basic block) and ``InceptionBlock`` (GoogLeNet)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gpucnn.functional as F
from gpucnn import initializers as _init
from gpucnn._checks import check_int
from gpucnn.backend.geometry import pair
from gpucnn.layers.base import Layer
from gpucnn.layers.conv import Conv2D
from gpucnn.layers.normalization import BatchNormalization
from gpucnn.layers.pooling import MaxPooling2D
from gpucnn.model import Sequential
from gpucnn.module import register_module
from gpucnn.tensor import Tensor

__all__ = ["ResidualBlock", "InceptionBlock"]

# Sub-layers work on the NCHW tensors inside the block whatever the block's data_format (which
# decides what the block takes when called on its own, see gpucnn.layers).
_NATIVE = "channels_first"


@register_module
class ResidualBlock(Layer):
    """ResNet basic block: conv(k, strides)-BN-ReLU-conv(k)-BN, plus the shortcut, then ReLU.

    The shortcut is the identity when the output has the input's shape, else a learned 1x1
    convolution (stride ``strides``) + BN projection (``projection=True/False`` forces it).
    Convolutions pad ``kernel_size // 2`` on every side (PyTorch's ResNet) and have no bias.
    BN uses Keras's momentum convention; the defaults (0.9, 1e-5) are PyTorch ResNet's
    (momentum 0.1, eps 1e-5).

    ``data_format``: see :mod:`gpucnn.layers` (the sub-layers always work NCHW).

    Sub-layers: ``conv1``, ``bn1``, ``conv2``, ``bn2`` and, with a projection, ``proj_conv``,
    ``proj_bn`` (the projection is created at build time, when the input channels are known).
    """

    def __init__(
        self,
        filters: int,
        strides: Any = 1,
        kernel_size: int = 3,
        projection: bool | None = None,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        kernel_initializer: Any = "he_normal",
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
        data_format: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name, data_format=data_format)
        if int(kernel_size) % 2 != 1:
            raise ValueError(f"ResidualBlock: kernel_size must be odd, got {kernel_size}")
        self.filters = check_int(type(self).__name__, "filters", filters, 1)
        self.strides = pair(strides, "strides", "ResidualBlock")
        self.kernel_size = int(kernel_size)
        self.projection = projection
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.kernel_initializer = kernel_initializer
        k, p, n = self.kernel_size, self.kernel_size // 2, self.name
        self.conv1 = Conv2D(filters, k, self.strides, p, use_bias=False,
                            kernel_initializer=kernel_initializer, name=f"{n}_conv1",
                            data_format=_NATIVE)
        self.bn1 = BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, name=f"{n}_bn1",
                                      data_format=_NATIVE)
        self.conv2 = Conv2D(filters, k, 1, p, use_bias=False,
                            kernel_initializer=kernel_initializer, name=f"{n}_conv2",
                            data_format=_NATIVE)
        self.bn2 = BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, name=f"{n}_bn2",
                                      data_format=_NATIVE)
        self.in_channels: int | None = None

    def _needs_projection(self, channels: int) -> bool:
        natural = self.strides != (1, 1) or channels != self.filters
        if self.projection is None:
            return natural
        if not self.projection and natural:
            raise ValueError(
                f"{self._in_desc()}: projection=False needs stride 1 and {self.filters} input "
                f"channels, got strides {self.strides} and {channels} channels"
            )
        return bool(self.projection)

    def _proj_layers(self) -> tuple[Conv2D, BatchNormalization]:
        n = self.name
        return (
            Conv2D(self.filters, 1, self.strides, 0, use_bias=False,
                   kernel_initializer=self.kernel_initializer, name=f"{n}_proj_conv",
                   data_format=_NATIVE),
            BatchNormalization(momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                               name=f"{n}_proj_bn", data_format=_NATIVE),
        )

    def check_input_shape(self, shape: Any) -> None:
        shape = tuple(shape)
        c = self.in_channels if self.in_channels is not None else "C"
        if len(shape) != 3:
            raise self._shape_error(f"(None, {c}, H, W)", shape)
        if self.in_channels is not None and shape[0] != self.in_channels:
            raise self._shape_error(f"(None, {c}, H, W)", shape)
        self.conv1.check_input_shape(shape) if not self.conv1.built else None
        self._needs_projection(int(shape[0]))

    def _create(self, input_shape: Any, backend: str) -> None:
        self.in_channels = int(input_shape[0])
        s = tuple(input_shape)
        self.conv1.build(s, backend)
        s1 = self.conv1.output_shape(s)
        self.bn1.build(s1, backend)
        self.conv2.build(s1, backend)
        self.bn2.build(self.conv2.output_shape(s1), backend)
        self.has_projection = self._needs_projection(self.in_channels)
        if self.has_projection:
            self.proj_conv, self.proj_bn = self._proj_layers()
            self.proj_conv.build(s, backend)
            self.proj_bn.build(self.proj_conv.output_shape(s), backend)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = self.proj_bn(self.proj_conv(x)) if self.has_projection else x
        return F.relu(out + sc)

    def output_shape(self, input_shape: Any) -> tuple:
        return self.conv2.output_shape(self.conv1.output_shape(tuple(input_shape)))

    def flops(self, input_shape: Any) -> int:
        s = tuple(input_shape)
        s1 = self.conv1.output_shape(s)
        n_out = 1
        for d in s1:
            n_out *= d
        total = self.conv1.flops(s) + self.bn1.flops(s1) + n_out  # + relu
        total += self.conv2.flops(s1) + self.bn2.flops(s1)
        if self._needs_projection(int(s[0])):
            pc, pb = (self.proj_conv, self.proj_bn) if self.built and self.has_projection \
                else self._proj_layers()
            total += pc.flops(s) + pb.flops(pc.output_shape(s))
        return total + 2 * n_out  # add + relu

    def get_config(self) -> dict:
        return {
            "filters": self.filters,
            "strides": list(self.strides),
            "kernel_size": self.kernel_size,
            "projection": self.projection,
            "bn_momentum": self.bn_momentum,
            "bn_epsilon": self.bn_epsilon,
            "kernel_initializer": _init.serialize(self.kernel_initializer),
            **self._base_config(),
        }

    def extra_repr(self) -> str:
        return f"filters={self.filters}, strides={self.strides}"


@register_module
class InceptionBlock(Layer):
    """GoogLeNet inception module; four branches concatenated on channels:

    1. 1x1 conv (``c1``);
    2. 1x1 conv (``c3_reduce``) → 3x3 conv pad 1 (``c3``);
    3. 1x1 conv (``c5_reduce``) → 5x5 conv pad 2 (``c5``);
    4. 3x3 max-pool stride 1 pad 1 → 1x1 conv (``pool_proj``).

    Every convolution is followed by ``activation`` (ReLU). Output channels
    ``c1 + c3 + c5 + pool_proj``, same H and W. Branches: ``branch1`` ... ``branch4``
    (Sequentials).
    """

    def __init__(
        self,
        c1: int,
        c3_reduce: int,
        c3: int,
        c5_reduce: int,
        c5: int,
        pool_proj: int,
        activation: Any = "relu",
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
        data_format: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name, data_format=data_format)
        self.sizes = tuple(int(v) for v in (c1, c3_reduce, c3, c5_reduce, c5, pool_proj))
        if min(self.sizes) < 1:
            raise ValueError(f"InceptionBlock: channel counts must be >= 1, got {self.sizes}")
        self.activation = activation
        n, a = self.name, activation
        nat = _NATIVE
        self.branch1 = Sequential(
            [Conv2D(c1, 1, activation=a, name=f"{n}_b1_1x1", data_format=nat)],
            name=f"{n}_branch1")
        self.branch2 = Sequential([
            Conv2D(c3_reduce, 1, activation=a, name=f"{n}_b2_1x1", data_format=nat),
            Conv2D(c3, 3, padding=1, activation=a, name=f"{n}_b2_3x3", data_format=nat),
        ], name=f"{n}_branch2")
        self.branch3 = Sequential([
            Conv2D(c5_reduce, 1, activation=a, name=f"{n}_b3_1x1", data_format=nat),
            Conv2D(c5, 5, padding=2, activation=a, name=f"{n}_b3_5x5", data_format=nat),
        ], name=f"{n}_branch3")
        self.branch4 = Sequential([
            MaxPooling2D(3, strides=1, padding=1, name=f"{n}_b4_pool", data_format=nat),
            Conv2D(pool_proj, 1, activation=a, name=f"{n}_b4_1x1", data_format=nat),
        ], name=f"{n}_branch4")

    def _branches(self) -> list[Sequential]:
        return [self.branch1, self.branch2, self.branch3, self.branch4]

    def check_input_shape(self, shape: Any) -> None:
        shape = tuple(shape)
        if len(shape) != 3:
            raise self._shape_error("(None, C, H, W)", shape)
        for b in self._branches():
            b.layers[0].check_input_shape(shape)

    def _create(self, input_shape: Any, backend: str) -> None:
        for b in self._branches():
            b.build(tuple(input_shape), backend)

    def forward(self, x: Tensor) -> Tensor:
        return F.concat([b(x) for b in self._branches()], axis=1)

    def output_shape(self, input_shape: Any) -> tuple:
        _, h, w = (int(s) for s in input_shape)
        c1, _, c3, _, c5, pp = self.sizes
        return (c1 + c3 + c5 + pp, h, w)

    def flops(self, input_shape: Any) -> int:
        return sum(b.flops(tuple(input_shape)) for b in self._branches())

    def get_config(self) -> dict:
        c1, c3r, c3, c5r, c5, pp = self.sizes
        return {"c1": c1, "c3_reduce": c3r, "c3": c3, "c5_reduce": c5r, "c5": c5,
                "pool_proj": pp,
                "activation": self.activation if isinstance(self.activation, str) or
                self.activation is None else getattr(self.activation, "__name__", "relu"),
                **self._base_config()}

    def extra_repr(self) -> str:
        return "sizes=" + str(self.sizes)
