"""Synchronised batch normalisation: batch statistics over every rank's batch.

In training, :func:`sync_batch_norm` reduces each channel's count, sum and sum of squares
over the ranks (one all-reduce), so every rank normalises with the statistics of the global
batch (what one process at the global batch computes), and updates the running statistics
with them; its backward reduces the per-channel sums of ``dy`` and ``dy * xhat`` (a second
all-reduce). The weight and bias gradients stay local: the data-parallel gradient average
combines them as it combines every other gradient.
"""

from __future__ import annotations

from typing import Any

from gpucnn.backend.device import array_module
from gpucnn.distributed.comm import Communicator
from gpucnn.layers.normalization import BatchNormalization
from gpucnn.module import Module, register_module
from gpucnn.tensor import Context, Function, Tensor

__all__ = ["SyncBatchNormalization", "convert_sync_batchnorm", "sync_batch_norm",
           "synchronized_forward"]


def _shape(x: Any) -> tuple:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


class _SyncBatchNorm(Function):
    @staticmethod
    def forward(ctx: Context, x: Any, *affine: Any, comm: Communicator, running_mean: Any,
                running_var: Any, momentum: float, eps: float, has_weight: bool,
                has_bias: bool) -> Any:
        xp = array_module(x)
        c = x.shape[1]
        axes = (0, *range(2, x.ndim))
        acc = xp.float64 if x.dtype == xp.float64 else xp.float32
        stats = xp.empty(2 * c + 1, dtype=acc)
        stats[:c] = x.sum(axis=axes, dtype=acc)
        stats[c:2 * c] = (x.astype(acc, copy=False) ** 2).sum(axis=axes)
        stats[2 * c] = x.size // max(c, 1)
        if x.size // max(c, 1) * comm.size <= 1:
            raise ValueError(f"SyncBatchNormalization: expected more than 1 value per channel "
                             f"over all ranks when training, got input shape {x.shape} on "
                             f"{comm.size} rank(s)")
        comm.allreduce(stats, "sum")
        m = stats[2 * c]  # the global count, kept on the device (no host read)
        mean = stats[:c] / m
        var = xp.maximum(stats[c:2 * c] / m - mean * mean, 0)
        for r, stat in ((running_mean, mean), (running_var, var * (m / (m - 1)))):
            if r is not None:
                r *= r.dtype.type(1.0 - momentum)
                r += r.dtype.type(momentum) * stat.astype(r.dtype, copy=False)
        inv = (1.0 / xp.sqrt(var + eps)).astype(x.dtype)
        xhat = (x - mean.astype(x.dtype).reshape(_shape(x))) * inv.reshape(_shape(x))
        w = affine[0] if has_weight else None
        b = affine[int(has_weight)] if has_bias else None
        ctx.xhat, ctx.inv, ctx.w, ctx.comm, ctx.m = xhat, inv, w, comm, m
        ctx.flags = (has_weight, has_bias)
        y = xhat * w.reshape(_shape(x)) if w is not None else xhat.copy()
        if b is not None:
            y += b.reshape(_shape(x))
        return y

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple:
        xp = array_module(g)
        xhat, inv, w = ctx.xhat, ctx.inv, ctx.w
        c = g.shape[1]
        axes = (0, *range(2, g.ndim))
        dbias = g.sum(axis=axes)
        dweight = (g * xhat).sum(axis=axes)
        dxhat_sum = dbias * w if w is not None else dbias
        dxhat_xhat = dweight * w if w is not None else dweight
        sums = xp.empty(2 * c, dtype=g.dtype)  # one all-reduce for both sums
        sums[:c], sums[c:] = dxhat_sum, dxhat_xhat
        ctx.comm.allreduce(sums, "sum")
        s = _shape(g)
        dxhat = g * w.reshape(s) if w is not None else g
        m = ctx.m.astype(g.dtype)
        dx = (dxhat - sums[:c].reshape(s) / m - xhat * (sums[c:].reshape(s) / m)) * inv.reshape(s)
        has_weight, has_bias = ctx.flags
        out: list = [dx]
        if has_weight:
            out.append(dweight)
        if has_bias:
            out.append(dbias)
        return tuple(out)


def sync_batch_norm(x: Tensor, running_mean: Any, running_var: Any, weight: Tensor | None,
                    bias: Tensor | None, comm: Communicator, momentum: float = 0.1,
                    eps: float = 1e-5) -> Tensor:
    """Training-mode batch normalisation of ``x`` (N, C, ...) over channel dim 1 with the
    statistics of every rank's batch (see the module docstring); ``running_mean`` /
    ``running_var`` (C,) are updated in place as :func:`gpucnn.functional.batch_norm` does
    (PyTorch's momentum convention, unbiased variance)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"sync_batch_norm: x must be a Tensor, got {type(x).__name__}")
    if x.ndim < 2 or x.dtype.kind != "f":
        raise ValueError(f"sync_batch_norm: expected a floating (N, C, ...) input, got shape "
                         f"{x.shape} dtype {x.dtype}")
    raw = [t.data if isinstance(t, Tensor) else t for t in (running_mean, running_var)]
    affine = [t for t in (weight, bias) if t is not None]
    return _SyncBatchNorm.apply(x, *affine, comm=comm, running_mean=raw[0],
                                running_var=raw[1], momentum=float(momentum), eps=float(eps),
                                has_weight=weight is not None, has_bias=bias is not None)


def synchronized_forward(layer: BatchNormalization, x: Tensor,
                         comm: Communicator | None = None) -> Tensor | None:
    """``layer``'s training-mode output with the statistics of every rank of ``comm``
    (default: the world's, :func:`~gpucnn.distributed.get_communicator`), or None when
    there is only the one rank (the plain layer then normalises): what
    ``BatchNormalization(synchronized=True)`` and :class:`SyncBatchNormalization` run."""
    if comm is None:
        from gpucnn.distributed.world import get_communicator

        comm = get_communicator()
        if comm.size == 1:
            return None
    return sync_batch_norm(x, layer.running_mean, layer.running_var,
                           layer.weight if layer.scale else None,
                           layer.bias if layer.center else None, comm,
                           momentum=1.0 - layer.momentum, eps=layer.epsilon)


@register_module
class SyncBatchNormalization(BatchNormalization):
    """:class:`gpucnn.layers.BatchNormalization` whose training statistics are those of the
    global batch of all ranks (PyTorch's ``SyncBatchNorm``; the same as
    ``BatchNormalization(synchronized=True)``); in eval mode, and in a world of one, it is
    the plain layer. Same arguments, weights and config."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            y = synchronized_forward(self, x, self.__dict__.get("communicator"))
            if y is not None:
                return y
        return super().forward(x)


def convert_sync_batchnorm(module: Module, communicator: Communicator | None = None) -> Module:
    """Turn every :class:`~gpucnn.layers.BatchNormalization` inside ``module`` (itself
    included) into a :class:`SyncBatchNormalization` in place (same weights and buffers;
    ``communicator``: use this one instead of the world's, also with one rank).
    Returns ``module``."""
    for m in module.modules():
        if isinstance(m, BatchNormalization):
            if not isinstance(m, SyncBatchNormalization):
                m.__class__ = SyncBatchNormalization
            if communicator is not None:
                object.__setattr__(m, "communicator", communicator)
    return module
