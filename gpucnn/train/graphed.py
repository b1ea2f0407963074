"""``fit(..., cuda_graph=True)``: the training step as one CUDA graph, replayed per batch.

:class:`GraphedTrainStep` is :func:`gpucnn.train.step.train_step` for full batches: it
prepares the batch (cast, target checks) eagerly, then runs forward, loss, backward and the
optimizer update through a :class:`gpucnn.cuda_graph.CapturedStep` (eager warm-up steps, one
capture, replays), and adds the batch to the running sums eagerly from the graph's outputs.
A batch of another size (the last partial one) runs the eager step on the same kernels
(:func:`gpucnn.backend.runtime.own_kernels`), so the weights are what eager training with our
kernels gives, bit for bit. Evaluation and validation stay eager.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.runtime import own_kernels
from gpucnn.cuda_graph import CapturedStep, CudaGraphError
from gpucnn.tensor import Tensor
from gpucnn.train import step as steps
from gpucnn.train.accumulate import Running
from gpucnn.train.losses import Loss, check_targets, host_or, loss_ops

__all__ = ["GraphedTrainStep", "check_graph_fit"]


def check_graph_fit(model: Any, ddp: Any, sample_weight: Any, class_weight: Any) -> None:
    """Raise :class:`CudaGraphError` (naming ``cuda_graph=True``) for what a graphed fit
    cannot do."""
    if model.backend != "cuda":
        raise CudaGraphError(
            f"fit: cuda_graph=True needs the cuda backend; the model is on {model.backend!r} "
            "(move it with model.to('cuda'))"
        )
    if ddp is not None:
        raise CudaGraphError("fit: cuda_graph=True is not supported with distributed training")
    if sample_weight is not None or class_weight is not None:
        raise CudaGraphError(
            "fit: cuda_graph=True does not support sample_weight or class_weight; train "
            "without cuda_graph to weight samples"
        )
    scaler = getattr(model, "loss_scaler", None)
    if scaler is not None and getattr(scaler, "is_enabled", lambda: False)():
        raise CudaGraphError(
            "fit: cuda_graph=True does not support mixed_precision='float16' (its loss scaler "
            "reads the device every step to skip overflowing ones); use 'bfloat16', which "
            "needs no scaler, or cuda_graph=False"
        )


class GraphedTrainStep:
    """Full batches of ``batch_size`` through one captured graph; others eagerly."""

    def __init__(self, model: Any, loss: Loss, warmup: int = 3) -> None:
        self.model = model
        self.loss = loss
        opt = model._ensure_optimizer()

        def captured(xt: Tensor, yt: Tensor) -> tuple[Tensor, Tensor]:
            with steps._autocast_for(model):  # compile(mixed_precision="bfloat16")
                out = model(xt)
                value = loss(out, yt)
            opt.zero_grad()
            value.backward()
            opt.step()
            return value, out

        self.graph = CapturedStep(captured, optimizer=opt, warmup=warmup,
                                  backend=model.backend)  # fmt: skip
        self.batch: int | None = None  # the batch size the graph takes

    def __call__(self, xb: Any, yb: Any, run: Running, where: str,
                 y_all: np.ndarray | None) -> tuple[int, Any]:  # fmt: skip
        """One training step of ``(xb, yb)``: ``(n, batch loss as a 0-d array)``."""
        model, loss = self.model, self.loss
        model._ensure_built_for(xb)
        n = int(xb.shape[0])
        if self.batch is None:
            self.batch = n
        if n != self.batch:  # a partial batch: eagerly, on the kernels the graph runs
            with own_kernels():
                return steps.train_step(model, xb, yb, loss, run, where, y_all)
        if yb is None:
            raise ValueError(f"{where}: the data gave batches without targets; yield (x, y)")
        if y_all is not None and loss.sparse:
            loss_ops().check_integer_targets("loss 'sparse_categorical_crossentropy'", y_all)
        xt = steps.prepare_x(model, xb)
        ya = steps.prepare_y(model, yb, loss)
        value, out = self.graph(xt, Tensor(ya))
        shape = tuple(out.shape)
        if y_all is not None:
            check_targets(loss, host_or(y_all, y_all), (len(y_all), *shape[1:]), where)
        check_targets(loss, host_or(yb, ya), shape, where)
        return n, run.add(value, n, ya, out.data)
