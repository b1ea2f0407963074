"""BatchNormalization."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import gpucnn.functional as F
from gpucnn import initializers as _init
from gpucnn._checks import check_bool, check_number
from gpucnn.layers.base import Layer
from gpucnn.module import register_module
from gpucnn.tensor import Tensor

__all__ = ["BatchNormalization"]


@register_module
class BatchNormalization(Layer):
    """Batch normalisation over channels (axis 1) of (N, C) or (N, C, H, W) inputs.

    ``momentum`` follows KERAS's convention: ``running = momentum * running + (1 - momentum)
    * batch_stat`` (default 0.99; PyTorch's momentum=0.1 is Keras 0.9); ``epsilon`` defaults
    to Keras's 1e-3. In training the batch statistics normalise (biased variance) and the
    running variance is updated with the unbiased one (as PyTorch, through
    :func:`gpucnn.functional.batch_norm`); in eval mode the running statistics are used.

    Parameters ``weight`` (gamma, ones) and ``bias`` (beta, zeros) are trainable; buffers
    ``running_mean`` (zeros) and ``running_var`` (ones) are state, not parameters (a model's
    ``summary()`` counts them as non-trainable params, as Keras does).

    ``axis`` is the channel axis: 1 (or -3) channels-first, -1 (or 3) channels-last; ``None``
    takes the one of ``data_format`` (``None``: the global default). On (N, features) inputs
    both mean the feature axis.

    ``synchronized`` (Keras's name): in training, with a :mod:`gpucnn.distributed` world of
    more than one rank, normalise with the statistics of every rank's batch (those of the
    global batch, :func:`gpucnn.distributed.sync_batch_norm`); with one rank, and in eval
    mode, it is the plain layer.
    """

    def __init__(
        self,
        axis: int | None = None,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
        data_format: str | None = None,
        synchronized: bool = False,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name, data_format=data_format)
        allowed = (-1, 3) if self.channels_last else (1, -3)
        if axis is None:
            axis = allowed[0]
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) \
                or axis not in allowed:
            other = "channels_first" if self.channels_last else "channels_last"
            raise ValueError(
                f"BatchNormalization: axis must be the channel axis of data_format="
                f"{self.data_format!r}, one of {allowed} (or None), got axis={axis!r}"
                + (f"; axis={axis} is the channel axis of {other} inputs: pass "
                   f"data_format={other!r}" if axis in (1, -3, -1, 3) else ""))
        self.axis = int(allowed[0])
        self.momentum = check_number(type(self).__name__, "momentum", momentum, 0.0, 1.0)
        self.epsilon = check_number(type(self).__name__, "epsilon", epsilon, 0.0, min_open=True)
        self.synchronized = check_bool(type(self).__name__, "synchronized", synchronized)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = beta_initializer
        self.gamma_initializer = gamma_initializer
        self.channels: int | None = None

    def check_input_shape(self, shape: Any) -> None:
        shape = tuple(shape)
        c = self.channels if self.channels is not None else "C"
        if len(shape) not in (1, 2, 3):
            raise self._shape_error(f"(None, {c}) or (None, {c}, H, W)", shape)
        if self.channels is not None and shape[0] != self.channels:
            raise self._shape_error(f"(None, {c}, ...)", shape,
                                    f"{shape[0]} channels instead of {c}")

    def _create(self, input_shape: Any, backend: str) -> None:
        c = self.channels = int(input_shape[0])
        if self.scale:
            self.add_weight("weight", (c,), self.gamma_initializer, backend)
        if self.center:
            self.add_weight("bias", (c,), self.beta_initializer, backend)
        self.register_buffer("running_mean", Tensor(_init.zeros((c,), np.float32, backend)))
        self.register_buffer("running_var", Tensor(_init.ones((c,), np.float32, backend)))

    def forward(self, x: Tensor) -> Tensor:
        if self.synchronized and self.training:
            # lazily: gpucnn.layers never imports gpucnn.distributed (nor mpi4py)
            from gpucnn.distributed.sync_bn import synchronized_forward

            y = synchronized_forward(self, x)
            if y is not None:
                return y
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight if self.scale else None,
            self.bias if self.center else None,
            training=self.training,
            momentum=1.0 - self.momentum,
            eps=self.epsilon,
        )

    def flops(self, input_shape: Any) -> int:
        return 2 * int(np.prod(input_shape))

    def get_config(self) -> dict:
        return {
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "synchronized": self.synchronized,
            "beta_initializer": _init.serialize(self.beta_initializer),
            "gamma_initializer": _init.serialize(self.gamma_initializer),
            **self._base_config(),
        }

    def extra_repr(self) -> str:
        sync = ", synchronized=True" if self.synchronized else ""
        return f"{self.channels}, momentum={self.momentum}, epsilon={self.epsilon}{sync}"
