"""THE training step and THE evaluation step, as functions of the model.

:func:`train_step` (``fit``, ``train_on_batch``): forward, loss, backward, optimizer step, the
batch added to the running sums. :func:`eval_step` (``evaluate``, validation, ``predict``): the
forward without gradients and, given running sums, the loss and metrics. :func:`eval_pass`:
one :func:`eval_step` pass over some data, read in one host transfer. Neither step reads the
host (see :mod:`gpucnn.train.accumulate`).

Mixed precision (``compile(mixed_precision=...)``): the forward and the loss run under
:class:`gpucnn.amp.autocast` (the loss ops stay float32), the backward and the optimizer step
outside it; with a ``model.loss_scaler`` the loss is scaled and the step goes through it.

Per-sample weights (``fit(sample_weight=..., class_weight=...)``): a batch's weights ``w``
(an array ``(N,)``) or a ``class_weights`` table (see :mod:`gpucnn.train.checks`) make the
batch loss :meth:`Loss.weighted <gpucnn.train.losses.Loss.weighted>` (Keras semantics).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn.tensor import Tensor, no_grad
from gpucnn.train.accumulate import Running, scalar
from gpucnn.train.checks import check_sample_weight, class_weights_for
from gpucnn.train.data import ArrayData, close_batches, is_arraylike, iter_batches
from gpucnn.train.losses import Loss, check_targets, host_or, loss_ops

__all__ = ["eval_pass", "eval_step", "forward_loss", "prepare_x", "prepare_y", "train_step"]


def prepare_x(model: Any, xb: Any) -> Tensor:
    """An input batch as a Tensor on ``model``'s backend and dtype (cast, never scaled)."""
    be = model.backend
    dt = model.dtype
    if isinstance(xb, Tensor):
        t = xb.to(be) if xb.backend != be else xb
        return t if t.dtype == dt else Tensor(t.data.astype(dt))
    arr = _backend.get_backend(be).xp.asarray(xb)
    if arr.dtype != dt:
        arr = arr.astype(dt)
    return Tensor(arr)


def prepare_y(model: Any, yb: Any, loss: Loss) -> Any:
    """A target batch as an array on ``model``'s backend: int64 class ids (N,) for the sparse
    cross-entropy (their integer check on the host copy when there is one), else the model's
    dtype."""
    be = model.backend
    arr = yb.data if isinstance(yb, Tensor) else yb
    if loss.sparse and not is_arraylike(arr):
        arr = np.asarray(arr)
    if loss.sparse:  # on the host copy when there is one (free), else on the device
        loss_ops().check_integer_targets("loss 'sparse_categorical_crossentropy'", arr)
    arr = _backend.to_backend(arr, be) if is_arraylike(arr) else \
        _backend.get_backend(be).xp.asarray(arr)
    if loss.sparse:
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr.reshape(-1)
        return arr.astype(np.int64) if arr.dtype != np.int64 else arr
    if arr.dtype != model.dtype:
        arr = arr.astype(model.dtype)
    return arr


def prepare_w(model: Any, wb: Any, n: int, where: str) -> Any:
    """A batch's sample weights as a float array ``(n,)`` on ``model``'s backend."""
    w = check_sample_weight(where, wb, n)
    arr = _backend.to_backend(w, model.backend) if is_arraylike(w) else \
        _backend.get_backend(model.backend).xp.asarray(w)
    return arr if arr.dtype.kind == "f" else arr.astype(model.dtype)


def forward_loss(model: Any, xb: Any, yb: Any, loss: Loss, where: str,
                 y_all: np.ndarray | None = None, wb: Any = None,
                 class_weights: np.ndarray | None = None) -> tuple[int, Any, Tensor, Tensor]:
    """Forward ``xb`` and the loss against ``yb``: ``(n, prepared targets, output, loss)``.
    ``y_all``: the pass's whole host targets, checked here (once) instead of per batch.
    ``wb`` (per-sample weights) or ``class_weights`` (a table by class id): the weighted
    loss."""
    if yb is None:
        raise ValueError(f"{where}: the data gave batches without targets; yield (x, y)")
    if y_all is not None and loss.sparse:
        loss_ops().check_integer_targets("loss 'sparse_categorical_crossentropy'", y_all)
    xt = prepare_x(model, xb)
    ya = prepare_y(model, yb, loss)
    out = model(xt)
    if y_all is not None:
        check_targets(loss, host_or(y_all, y_all), (len(y_all), *out.shape[1:]), where)
    check_targets(loss, host_or(yb, ya), tuple(out.shape), where)
    n = int(xt.shape[0])
    if wb is not None:
        value = loss.weighted(out, Tensor(ya), prepare_w(model, wb, n, where))
    elif class_weights is not None:
        value = loss.weighted(out, Tensor(ya), class_weights_for(class_weights, ya, loss.kind))
    else:
        value = loss(out, Tensor(ya))
    return n, ya, out, value


def _autocast_for(model: Any) -> Any:
    """The :class:`gpucnn.amp.autocast` region of ``model``'s mixed precision policy
    (``compile(mixed_precision=...)``), or a no-op."""
    dtype = getattr(model, "mixed_precision", None)
    if dtype is None:
        return contextlib.nullcontext()
    from gpucnn.amp import autocast

    return autocast(dtype)


def train_step(model: Any, xb: Any, yb: Any, loss: Loss, run: Running | None, where: str,
               y_all: np.ndarray | None = None, wb: Any = None,
               class_weights: np.ndarray | None = None) -> tuple[int, Any]:
    """THE training step (``fit``, ``train_on_batch``): forward, loss (weighted by ``wb`` or
    ``class_weights``), backward, optimizer step, and the batch added to ``run`` (when given).
    Returns ``(n, batch loss as a 0-d array)``; no host read (with ``model.loss_scaler``: one,
    the scaler's inf/NaN check)."""
    model._ensure_built_for(xb)
    opt = model._ensure_optimizer()
    with _autocast_for(model):
        n, ya, out, value = forward_loss(model, xb, yb, loss, where, y_all, wb, class_weights)
    opt.zero_grad()
    scaler = getattr(model, "loss_scaler", None)
    if scaler is None:
        value.backward()
        opt.step()
    else:  # float16 mixed precision: skipped on inf/NaN gradients (the step's one host read)
        scaler.scale(value).backward()
        scaler.step(opt)
        scaler.update()
    return n, (scalar(value) if run is None else run.add(value, n, ya, out.data))


def eval_step(model: Any, xb: Any, yb: Any, loss: Loss | None, run: Running | None,
              where: str, y_all: np.ndarray | None = None, wb: Any = None) -> Tensor:
    """THE evaluation step (``evaluate``, validation, ``predict``; the caller sets eval
    mode): the forward without gradients and, when ``run`` is given, the loss (weighted by
    ``wb`` when given) and metrics added to it. Returns the output."""
    with no_grad(), _autocast_for(model):
        model._ensure_built_for(xb)
        if run is None:
            return model(prepare_x(model, xb))
        n, ya, out, value = forward_loss(model, xb, yb, loss, where, y_all, wb)
        run.add(value, n, ya, out.data)
    return out


def eval_pass(model: Any, data: Any, loss: Loss, metric_objs: list, where: str) -> dict:
    """One pass of :func:`eval_step` over ``data`` in eval mode (the model's mode restored):
    the logs (mean loss, metrics), in one host read."""
    was = model.training
    model.eval()
    run = Running(metric_objs)
    run.reset()
    y_all = data.host_targets(model.backend) if isinstance(data, ArrayData) else None
    it: Any = None
    try:
        it = iter_batches(data, model.backend, model.dtype, triples=True)
        for xb, yb, wb in it:
            eval_step(model, xb, yb, loss, run, where, y_all, wb)
            y_all = xb = yb = wb = None  # type: ignore[assignment]
    finally:
        close_batches(it)
        model.train(was)
    if run.seen == 0:
        raise ValueError(f"{where}: the data produced no batches")
    return run.read()[0]  # the pass's one host read
