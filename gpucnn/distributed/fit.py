"""``fit`` on several ranks: what :meth:`gpucnn.Model.fit` calls once :func:`init` has run
with more than one rank (:func:`fit_setup`, then :meth:`FitParallel.average_logs` per epoch).

* the model is checked and rank 0's parameters and buffers are broadcast, once per model;
  a :class:`~gpucnn.distributed.parallel.Reducer` averages the gradients during backward,
  and the optimizer's ``step`` first finishes the round (parameters without gradient);
* array data is sharded by :class:`~gpucnn.distributed.DistributedSampler` (``batch_size``
  is per rank: the global batch is ``batch_size * world_size``), its shuffle seed taken from
  rank 0 every epoch; a DataLoader passed as ``x`` must shard itself (``sampler=``);
* the epoch logs (loss, metrics, validation) are averaged over the ranks before History and
  the callbacks see them (per-batch logs stay per rank);
* only the main rank prints progress and keeps the writing callbacks (ModelCheckpoint,
  CSVLogger).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from gpucnn.distributed.comm import Communicator
from gpucnn.distributed.parallel import Reducer
from gpucnn.distributed.sampler import DistributedSampler
from gpucnn.train.data import ArrayData, IterData

__all__ = ["FitParallel", "ShardedArrayData", "fit_setup"]

_ATTR = "_gpucnn_fit_parallel"


class ShardedArrayData(ArrayData):
    """This rank's share of an :class:`~gpucnn.train.data.ArrayData` (see the module doc):
    the same arrays and loader, with a :class:`DistributedSampler` ordering each epoch."""

    def __init__(self, data: ArrayData, comm: Communicator) -> None:  # noqa: D107
        self.__dict__.update(data.__dict__)  # the same arrays (x, y, weights), no copy
        self._loader, self._key = None, None
        self.comm = comm
        self.sampler = DistributedSampler(len(data.x), comm.size, comm.rank)

    def num_batches(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def loader(self, backend: str, dtype: Any, shuffle: bool, seed: int | None) -> Any:
        ld = super().loader(backend, dtype, False, None)  # the sampler orders the epoch
        self.sampler.shuffle, self.sampler.seed = bool(shuffle), int(seed or 0)
        ld.sampler = self.sampler
        return ld

    def batches(self, backend: str, dtype: Any, epoch: int = 0, shuffle: bool = False,
                seed: int | None = None, *args: Any, **kwargs: Any) -> Any:
        seed = self.comm.broadcast_object(seed, 0)  # every rank shuffles as rank 0 does
        return super().batches(backend, dtype, epoch, shuffle, seed, *args, **kwargs)


class FitParallel:
    """The distributed state ``fit`` keeps on a model (one per model, reused by later fits)."""

    def __init__(self, model: Any, comm: Communicator) -> None:
        self.comm = comm
        self.reducer = Reducer(model, comm, where="fit")
        self._opt: Any = None

    def wrap_optimizer(self, opt: Any) -> None:
        """Make ``opt.step`` finish the gradient round first (idempotent)."""
        if opt is self._opt:
            return
        step = opt.step
        reducer = self.reducer

        def distributed_step(*args: Any, **kwargs: Any) -> Any:
            reducer.finish()
            return step(*args, **kwargs)

        opt.step = distributed_step
        self._opt = opt

    def agree_stop(self, stop: bool) -> bool:
        """Whether any rank asks to stop (``model.stop_training``), agreed by every rank, so
        a callback that stops one rank (``TerminateOnNaN`` on its own batch's loss) stops
        them all at the same step instead of leaving the others in the next all-reduce.
        One small host collective; no device synchronisation."""
        return any(bool(s) for s in self.comm.allgather_object(bool(stop)))

    def average_logs(self, logs: dict) -> dict:
        """``logs`` with every number averaged over the ranks (one all-reduce)."""
        keys = sorted(k for k, v in logs.items() if isinstance(v, (int, float, np.number)))
        if not keys:
            return logs
        theirs = self.comm.allgather_object(keys)
        if any(t != keys for t in theirs):
            raise RuntimeError(f"fit: the ranks logged different keys: {theirs}")
        vals = np.array([float(logs[k]) for k in keys], dtype=np.float64)
        self.comm.allreduce(vals, "avg")
        out = dict(logs)
        out.update({k: float(v) for k, v in zip(keys, vals)})
        return out


def fit_setup(model: Any, train: Any, callbacks: list | None, verbose: int,
              ) -> tuple[FitParallel | None, Any, list | None, int]:
    """Prepare ``fit`` for the ranks of :func:`~gpucnn.distributed.init`: returns
    ``(state, train, callbacks, verbose)``; ``state`` is None (and the rest unchanged) in a
    world of one."""
    from gpucnn.callbacks import CSVLogger, ModelCheckpoint
    from gpucnn.distributed.world import get_communicator, is_initialized

    comm = get_communicator()
    if not is_initialized() or comm.size == 1:
        return None, train, callbacks, verbose
    if not model.built:
        raise ValueError(f"fit: on {comm.size} ranks the model must be built before fit when "
                         f"x is a data loader (call model.build(input_shape) on every rank)")
    state = model.__dict__.get(_ATTR)
    if state is None or state.comm is not comm:
        state = FitParallel(model, comm)
        object.__setattr__(model, _ATTR, state)
    state.wrap_optimizer(model._ensure_optimizer())
    if isinstance(train, ArrayData) and not isinstance(train, ShardedArrayData):
        train = ShardedArrayData(train, comm)
    elif isinstance(train, IterData) and getattr(train.loader, "sampler", True) is None:
        warnings.warn(f"fit: the DataLoader given as x has no sampler, so each of the "
                      f"{comm.size} ranks trains on all of it; pass "
                      f"sampler=gpucnn.distributed.DistributedSampler(n) to shard it",
                      RuntimeWarning, stacklevel=3)
    if comm.rank != 0:
        verbose = 0
        callbacks = [c for c in callbacks or [] if not isinstance(c, (ModelCheckpoint,
                                                                      CSVLogger))]
    return state, train, callbacks, verbose
