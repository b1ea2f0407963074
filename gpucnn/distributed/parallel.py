"""Data parallelism: gradients averaged over ranks in flat buckets, overlapped with backward.

:class:`Reducer` does the work for :class:`DataParallel` (PyTorch-style loops) and for
``fit`` (:mod:`gpucnn.distributed.fit`). At setup it checks that every rank holds the same
model (names, shapes and dtypes of parameters and buffers), broadcasts rank 0's parameters and
buffers, and packs the trainable parameters in REVERSE order (the order backward produces
their gradients) into flat buckets of one dtype: the first about ``first_bucket_mb`` MB, the
others about ``bucket_cap_mb`` MB (a parameter larger than a cap is a bucket of its own).

During backward a "gradient ready" hook on each parameter (called when its gradient for this
backward is final, see :func:`register_post_accumulate_grad_hook`) copies the gradient into
its bucket; when a bucket is full its averaging all-reduce is STARTED asynchronously, so
communication overlaps the rest of the backward. Buckets start strictly in bucket order (a
bucket that fills early waits for the ones before it), so every rank issues the same
collectives in the same order. When the last bucket has started, all are waited for and the
averaged gradients are written back into each ``param.grad`` (in place: a flat optimizer's
gradient views stay valid), before the optimizer step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from gpucnn._checks import check_number
from gpucnn.distributed.comm import Communicator, Handle
from gpucnn.module import Module
from gpucnn.tensor import Tensor

__all__ = ["DataParallel", "HookHandle", "Reducer", "register_post_accumulate_grad_hook"]

_HOOKS = "_post_accumulate_grad_hooks"


class _HookList(list):
    """The hooks of one tensor. Copies and pickles of the tensor do not take them (they
    belong to the running process's reducer, not to the tensor's value)."""

    def __reduce__(self) -> tuple:
        return (_HookList, ())

    def __copy__(self) -> _HookList:
        return _HookList()

    def __deepcopy__(self, memo: dict) -> _HookList:
        return _HookList()


class HookHandle:
    """Removes the hook it was returned for (:meth:`remove`, idempotent)."""

    def __init__(self, tensor: Tensor, fn: Callable) -> None:
        self._tensor, self._fn = tensor, fn

    def remove(self) -> None:
        hooks = self._tensor.__dict__.get(_HOOKS)
        if hooks is not None and self._fn in hooks:
            hooks.remove(self._fn)


def register_post_accumulate_grad_hook(tensor: Tensor, fn: Callable[[Tensor], Any],
                                       ) -> HookHandle:
    """Call ``fn(tensor)`` in every ``backward`` once ``tensor.grad`` holds that backward's
    whole gradient (as PyTorch's ``Tensor.register_post_accumulate_grad_hook``). Only leaf
    tensors that require grad (Parameters) have gradients accumulated."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"register_post_accumulate_grad_hook: expected a Tensor, got "
                        f"{type(tensor).__name__}")
    if not callable(fn):
        raise TypeError(f"register_post_accumulate_grad_hook: fn must be callable, got {fn!r}")
    hooks = tensor.__dict__.get(_HOOKS)
    if hooks is None:
        hooks = tensor.__dict__[_HOOKS] = _HookList()
    hooks.append(fn)
    return HookHandle(tensor, fn)


def _signature(module: Module) -> list[tuple[str, str, tuple, str]]:
    sig = [("parameter", n, tuple(int(s) for s in p.shape), str(p.dtype))
           for n, p in module.named_parameters()]
    sig += [("buffer", n, tuple(int(s) for s in b.shape), str(b.dtype))
            for n, b in module.named_buffers()]
    return sig


def _compare(where: str, sigs: list, layouts: list) -> None:
    ref = sigs[0]
    for r, sig in enumerate(sigs[1:], start=1):
        if sig == ref:
            continue
        if len(sig) != len(ref):
            raise ValueError(f"{where}: the model on rank {r} has {len(sig)} parameters and "
                             f"buffers, rank 0's has {len(ref)}: every rank must build the "
                             f"same model")
        for mine, theirs in zip(sig, ref):
            if mine != theirs:
                raise ValueError(
                    f"{where}: the models differ across ranks: {mine[0]} {mine[1]!r} has shape "
                    f"{mine[2]} dtype {mine[3]} on rank {r}, but {theirs[0]} {theirs[1]!r} has "
                    f"shape {theirs[2]} dtype {theirs[3]} on rank 0: every rank must build "
                    f"the same model")
    for r, lay in enumerate(layouts[1:], start=1):
        if lay != layouts[0]:
            raise ValueError(f"{where}: the gradient buckets differ on rank {r} from rank 0 "
                             f"({lay} vs {layouts[0]}): pass the same bucket_cap_mb and "
                             f"first_bucket_mb on every rank")


class _Bucket:
    def __init__(self, index: int, params: list, dtype: Any) -> None:
        self.index, self.params, self.dtype = index, params, dtype
        self.sizes = [int(p.data.size) for p in params]
        self.offsets = [int(o) for o in np.cumsum([0, *self.sizes[:-1]])]
        self.numel = int(sum(self.sizes))
        self.buffer: Any = None
        self.handle: Handle | None = None
        self.ready: set[int] = set()

    def nbytes(self) -> int:
        return self.numel * np.dtype(self.dtype).itemsize


class Reducer:
    """The bucketed, overlapped gradient averaging of ``module``'s trainable parameters over
    ``comm`` (see the module docstring). ``where`` names the caller in errors.

    Attributes:
        buckets: the buckets in launch order; :meth:`layout` gives each one's parameter names.
        record_events: when True, :attr:`events` records ``("grad_ready", name)``,
            ``("allreduce_start", bucket)`` and ``("allreduce_wait", bucket)`` in order.
    """

    def __init__(self, module: Module, comm: Communicator, bucket_cap_mb: float = 25.0,
                 first_bucket_mb: float = 1.0, where: str = "DataParallel",
                 broadcast: bool = True) -> None:
        cap = check_number(where, "bucket_cap_mb", bucket_cap_mb, 0.0, min_open=True)
        first = check_number(where, "first_bucket_mb", first_bucket_mb, 0.0, min_open=True)
        self.comm, self.where = comm, where
        self.module = module
        self.names = {id(p): n for n, p in module.named_parameters()}
        params = [p for _, p in module.named_parameters() if p.requires_grad]
        self.buckets: list[_Bucket] = []
        cur: list = []
        limit = first * 2**20
        size = 0
        for p in reversed(params):
            nbytes = int(p.data.size) * p.data.dtype.itemsize
            if cur and (p.data.dtype != cur[0].data.dtype or size + nbytes > limit):
                self.buckets.append(_Bucket(len(self.buckets), cur, cur[0].data.dtype))
                cur, size, limit = [], 0, cap * 2**20
            cur.append(p)
            size += nbytes
        if cur:
            self.buckets.append(_Bucket(len(self.buckets), cur, cur[0].data.dtype))
        self._slot = {id(p): (b, i) for b in self.buckets for i, p in enumerate(b.params)}
        if comm.size > 1:
            got = comm.allgather_object((_signature(module), self.layout()))
            _compare(where, [g[0] for g in got], [g[1] for g in got])
            if broadcast:
                self.broadcast_state()
        self.record_events = False
        self.events: list[tuple[str, Any]] = []
        self._next = 0  # the next bucket to start
        self._active = False  # some gradient of this round arrived
        self._enabled = True
        self._handles = [register_post_accumulate_grad_hook(p, self._ready) for p in params]

    # -------------------------------------------------------------- setup
    def layout(self) -> list[list[str]]:
        """Each bucket's parameter names, in launch order (the same on every rank)."""
        return [[self.names[id(p)] for p in b.params] for b in self.buckets]

    def broadcast_state(self) -> None:
        """Overwrite every parameter and buffer with rank 0's."""
        for _, p in self.module.named_parameters():
            self.comm.broadcast(p.data, 0)
        for _, b in self.module.named_buffers():
            self.comm.broadcast(b.data, 0)

    def remove(self) -> None:
        """Remove the hooks: gradients are no longer averaged."""
        for h in self._handles:
            h.remove()
        self._handles = []

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Inside, backward only accumulates local gradients (gradient accumulation): the next
        backward outside averages the accumulated gradients."""
        was, self._enabled = self._enabled, False
        try:
            yield
        finally:
            self._enabled = was

    # -------------------------------------------------------------- the round
    def _record(self, kind: str, what: Any) -> None:
        if self.record_events:
            self.events.append((kind, what))

    def _ready(self, p: Tensor) -> None:
        if not self._enabled or self.comm.size == 1 and not self.record_events:
            return
        b, i = self._slot[id(p)]
        if i in b.ready:  # a second backward before the step: finish the first round first
            self.finish()
        self._active = True
        self._record("grad_ready", self.names[id(p)])
        self._stage(b, i, p.grad.data)
        self._launch_ready()
        if self._next == len(self.buckets):
            self._complete()

    def _stage(self, b: _Bucket, i: int, g: Any) -> None:
        if b.buffer is None or type(b.buffer) is not type(g):
            from gpucnn.backend.device import array_module

            b.buffer = array_module(g).empty(b.numel, dtype=b.dtype)
        o, n = b.offsets[i], b.sizes[i]
        b.buffer[o:o + n] = g.reshape(-1)
        b.ready.add(i)

    def _launch_ready(self) -> None:
        while self._next < len(self.buckets) and \
                len(self.buckets[self._next].ready) == len(self.buckets[self._next].params):
            b = self.buckets[self._next]
            self._record("allreduce_start", b.index)
            b.handle = self.comm.allreduce_async(b.buffer, "avg")
            self._next += 1

    def _complete(self) -> None:
        for b in self.buckets:
            assert b.handle is not None
            out = b.handle.wait()
            self._record("allreduce_wait", b.index)
            for p, o, n in zip(b.params, b.offsets, b.sizes):
                p.grad.data[...] = out[o:o + n].reshape(p.grad.data.shape)
            b.handle = None
            b.ready.clear()
        self._next = 0
        self._active = False

    @property
    def pending(self) -> bool:
        """Whether a round has begun (some gradient arrived) and not finished."""
        return self._active

    def finish(self) -> None:
        """Finish the round now: parameters that got no gradient in this backward (unused in
        the forward) contribute zeros (their ``grad`` becomes zeros where it was None), the
        remaining buckets are started and every one is waited for. A no-op when no round is
        pending. The optimizer step must come after it (``fit`` calls it for you)."""
        if not self._active:
            return
        for b in self.buckets[self._next:]:
            for i, p in enumerate(b.params):
                if i in b.ready:
                    continue
                if p.grad is None:
                    p.grad = Tensor(p.xp.zeros_like(p.data))
                self._stage(b, i, p.grad.data)
        self._launch_ready()
        self._complete()


class DataParallel(Module):
    """Data-parallel training of ``module`` in a PyTorch-style loop (one process per rank,
    each with its share of the data: see :class:`~gpucnn.distributed.DistributedSampler`).

    At wrap time (or at the first call, for a module not built yet) the ranks' models are
    checked to be the same (a ``ValueError`` names the first difference) and rank 0's
    parameters and buffers are broadcast; during every ``backward`` the gradients are averaged
    over the ranks (see :class:`Reducer`), finished when the last gradient arrives, so
    ``optimizer.step()`` right after ``loss.backward()`` sees the averaged gradients, as with
    PyTorch's DDP.

    Args:
        module: the model.
        bucket_cap_mb: the size of the gradient buckets (MB).
        first_bucket_mb: the size of the first bucket (MB; small, so communication starts
            early in the backward).
        communicator: default :func:`~gpucnn.distributed.get_communicator`.

    ``model(x)`` calls ``module(x)``; :meth:`no_sync` accumulates gradients locally;
    when some parameters get no gradient in a backward, call :meth:`finish_gradients`
    before the optimizer step. ``state_dict`` keys are prefixed ``module.`` (as PyTorch's).
    """

    def __init__(self, module: Module, bucket_cap_mb: float = 25.0,
                 first_bucket_mb: float = 1.0, communicator: Communicator | None = None,
                 ) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"DataParallel: module must be a gpucnn Module, got "
                            f"{type(module).__name__}")
        if communicator is not None and not isinstance(communicator, Communicator):
            raise TypeError(f"DataParallel: communicator must be a Communicator or None, got "
                            f"{type(communicator).__name__}")
        super().__init__()
        self.module = module
        check_number("DataParallel", "bucket_cap_mb", bucket_cap_mb, 0.0, min_open=True)
        check_number("DataParallel", "first_bucket_mb", first_bucket_mb, 0.0, min_open=True)
        object.__setattr__(self, "_ddp_args", (float(bucket_cap_mb), float(first_bucket_mb)))
        if communicator is None:
            from gpucnn.distributed.world import get_communicator

            communicator = get_communicator()
        object.__setattr__(self, "comm", communicator)
        object.__setattr__(self, "reducer", None)
        if module.built:
            self._setup()

    def _setup(self) -> None:
        cap, first = self._ddp_args
        object.__setattr__(self, "reducer", Reducer(self.module, self.comm, cap, first))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.reducer is None:
            if not self.module.built:
                self.module._build_from_inputs(args)
            self._setup()
        elif self.reducer.pending and self.training:
            raise RuntimeError(
                "DataParallel: the previous backward left gradients unaveraged (some "
                "parameters got no gradient): call finish_gradients() after backward and "
                "before optimizer.step()")
        return self.module(*args, **kwargs)

    def finish_gradients(self) -> None:
        """Average what the last backward left pending (see :meth:`Reducer.finish`)."""
        if self.reducer is not None:
            self.reducer.finish()

    def no_sync(self) -> contextlib.AbstractContextManager:
        """A context in which backward accumulates gradients without averaging them."""
        if self.reducer is None:
            return contextlib.nullcontext()
        return self.reducer.no_sync()

    def output_shape(self, input_shape: Any) -> Any:
        return self.module.output_shape(input_shape)

    def extra_repr(self) -> str:
        n = 0 if self.reducer is None else len(self.reducer.buckets)
        return f"ranks={self.comm.size}, buckets={n}"
