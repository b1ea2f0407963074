"""CUDA graphs: a whole training step captured once and replayed per batch.

:func:`capture` wraps a step function (forward, loss, backward, optimizer update: what a
PyTorch-style loop does per batch) into a :class:`CapturedStep`::

    def train_step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    step = gpucnn.cuda_graph.capture(train_step, optimizer=opt)
    for x, y in loader:
        loss = step(x, y)          # the same Tensor object every call, its value updated

``Model.fit(..., cuda_graph=True)`` does the same for the Keras-style API. What happens:

1. The first ``warmup`` calls (more, up to 8, while a step still takes new memory from the
   device) run the step eagerly (real steps on real batches) on a side stream, with the
   inputs copied into static device buffers. This builds the model, creates the optimizer
   state and leaves the side stream's memory-pool arena holding every block a step needs
   (CuPy keeps one arena per stream, so eager work on other streams never takes these
   blocks: the arena is the graph's private pool). Just before the capture one spare block
   as large as the first step's memory is freed into that arena, so the capture is served
   even where the arena's state drifted (the graph then holds up to twice a step's memory).
2. The next call captures the step into a CUDA graph (``Stream.begin_capture``) and launches
   it. Inside the capture every op runs our own kernels (:func:`gpucnn.backend.runtime.
   own_kernels`: implicit-GEMM convolution, our GEMM for dense layers), because CuPy refuses
   cuBLAS during capture (cupy/cupy#6290); no host synchronisation, no host-to-device copy and
   no allocation outside the pool happens (the simulated device checks all three).
3. Every later call copies the batch into the static buffers and replays the graph. The
   optimizer's step-dependent scalars (learning rate, Adam's bias corrections, ...) live in a
   small device array that the host rewrites before each replay (one asynchronous copy from
   pinned memory): the optimizer's ``step()`` is run on the host with its kernels switched
   off, which advances its host state exactly as an eager step would and computes those
   scalars, so learning-rate schedules and checkpoints work as in eager training.

Eager training under :func:`gpucnn.backend.runtime.own_kernels` runs the very same kernels, so
its weights equal the graph's bit for bit (tests/test_cuda_graph.py, on the simulated device).

Limits, each a clear :class:`CudaGraphError`: the CUDA backend only; every call after the
first must have the first call's input shapes and dtypes (run other batches eagerly, as
``fit`` does with the last partial batch); random numbers (dropout, noise layers) cannot be
captured (they would repeat on every replay), nor host reads of device data (``float(loss)``,
``.item()``), nor float64 dense layers (our GEMM is float32); host-side Python inside the
step (a per-batch LR scheduler, a counter) runs only while capturing, so keep it outside.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpucnn.backend.runtime import own_kernels, use_hyper_slots
from gpucnn.tensor import Tensor

__all__ = ["CapturedStep", "CudaGraphError", "capture", "is_capturing"]

#: Extra warm-up steps allowed while a step still takes new device memory (the pool's arena
#: needs a few steps to settle: it splits free blocks best-fit and merges none).
_SETTLE = 8
_capturing = 0  # how many captures are in progress in this process (a fast check for layers)


class CudaGraphError(RuntimeError):
    """A step cannot be captured or replayed as a CUDA graph; the message says why."""


def is_capturing() -> bool:
    """Whether a :class:`CapturedStep` is capturing its graph right now."""
    return _capturing > 0


def refuse_in_capture(what: str) -> None:
    """Raise :class:`CudaGraphError` naming ``what`` when a capture is in progress."""
    if _capturing:
        raise CudaGraphError(
            f"cuda_graph: {what} cannot run inside a captured CUDA graph; run this step "
            "eagerly (without cuda_graph)"
        )


class _HyperSlots:
    """The optimizer updates' per-step scalars as one device array ``(n, 4)`` and its host
    mirror: counted during warm-up, handed out as rows during capture, rewritten before each
    replay (see :func:`gpucnn.backend.runtime.use_hyper_slots`)."""

    WIDTH = 4  # the most scalars one update reads (NAdam)

    def __init__(self) -> None:
        self.mode = "count"
        self.n = 0
        self.cursor = 0
        self.dtype: Any = None
        self.host: np.ndarray | None = None
        self.dev: Any = None

    @property
    def launch(self) -> bool:
        return self.mode != "refill"

    def take(self, values: Sequence[Any], dtype: Any) -> Any:
        if self.dtype is None:
            self.dtype = np.dtype(dtype)
        elif np.dtype(dtype) != self.dtype:
            raise CudaGraphError(
                f"cuda_graph: optimizer updates in one step must share one dtype, got "
                f"{self.dtype} and {np.dtype(dtype)}"
            )
        if self.mode == "count":
            self.n += 1
            return None
        i = self.cursor
        if self.host is None or i >= self.host.shape[0]:
            raise CudaGraphError(
                "cuda_graph: the step made more optimizer updates than during warm-up; the "
                "set of parameters with gradients must not change between steps"
            )
        self.cursor += 1
        self.host[i, : len(values)] = [float(v) for v in values]
        return None if self.mode == "refill" else self.dev[i, : len(values)]

    def allocate(self, xp: Any) -> None:
        from gpucnn.backend.device import empty_pinned, new_event

        rows = max(1, self.n)
        dt = self.dtype if self.dtype is not None else np.dtype(np.float32)
        self.host = np.zeros((rows, self.WIDTH), dtype=dt)
        self.dev = xp.zeros((rows, self.WIDTH), dtype=dt)
        # Two page-locked staging buffers, used in turn: a copy from pinned memory is
        # asynchronous (a pageable one would make the host wait for the previous replay every
        # step); the event of a buffer says when its last copy has read it.
        self._pinned = [empty_pinned((rows, self.WIDTH), dt) for _ in range(2)]
        self._events = [new_event() for _ in range(2)]
        self._used = [False, False]
        self._turn = 0

    def upload(self, stream: Any) -> None:
        """Queue the copy of the host values to the device array on ``stream``."""
        if self.dev is None or not self.n:
            return
        i = self._turn
        if self._used[i] and not self._events[i].done:
            self._events[i].synchronize()  # the device is two replays behind: wait for it
        buf = self._pinned[i]
        buf[...] = self.host
        self.dev.set(buf, stream=stream)
        self._events[i].record(stream)
        self._used[i] = True
        self._turn = i ^ 1


def _arrays(inputs: tuple) -> list[Any]:
    return [a.data if isinstance(a, Tensor) else a for a in inputs]


def _signature(arrays: list[Any]) -> list[tuple]:
    return [(tuple(a.shape), str(np.dtype(a.dtype))) for a in arrays]


class CapturedStep:
    """A step function run eagerly ``warmup`` times, then captured as a CUDA graph and
    replayed (see the module doc). Call it with the step's inputs (Tensors or arrays, host or
    device, each of the first call's shape and dtype); it returns the step's outputs (after the
    capture: the same objects every call, holding this call's values).

    Args:
        step_fn: ``step_fn(*inputs)``: forward, loss, backward, optimizer step; its inputs
            arrive as Tensors on the CUDA backend.
        optimizer: the optimizer(s) whose ``step()`` runs inside ``step_fn`` (their per-step
            scalars are refreshed before each replay); ``None`` when the step updates nothing.
        warmup: eager calls before the capture (at least 1: the optimizer state must exist).
        backend: the backend name of the step (must be ``"cuda"``).
    """

    def __init__(
        self,
        step_fn: Callable[..., Any],
        optimizer: Any = None,
        warmup: int = 3,
        backend: str = "cuda",
    ) -> None:
        from gpucnn import backend as _backend

        if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 1:
            raise ValueError(f"cuda_graph.capture: warmup must be an int >= 1, got {warmup!r}")
        be = _backend.get_backend(backend)
        if be.name != "cuda":
            raise CudaGraphError(
                f"cuda_graph.capture: CUDA graphs need the cuda backend, got {be.name!r}"
            )
        self.step_fn = step_fn
        if optimizer is None:
            self.optimizers: list[Any] = []
        elif isinstance(optimizer, (list, tuple)):
            self.optimizers = list(optimizer)
        else:
            self.optimizers = [optimizer]
        self.warmup = int(warmup)
        self._be = be
        self._xp = be.xp
        self.stream = self._xp.cuda.Stream(non_blocking=False)
        self.graph: Any = None
        self.calls = 0
        self.replays = 0
        self._static: list[Any] | None = None
        self._signature: list[tuple] | None = None
        self._outputs: Any = None
        self._slots = _HyperSlots()
        #: On the simulated device: its event counts during the capture (``cublas``,
        #: ``syncs``, ``allocations``, ``h2d``, ...); ``None`` elsewhere.
        self.capture_counts: dict[str, int] | None = None
        self._grew = True  # whether the last warm-up step took new memory from the device
        # The most memory one warm-up step took from the device (the first: an empty arena).
        # Freed into the step's arena just before the capture, as one block the pool splits
        # for any request the arena's free blocks cannot serve: a step that reached the
        # capture in another arena state than the warm-up left (fit's eager partial batch in
        # between, other threads' pool traffic hiding the "settled" signal) allocates nothing.
        self._reserve = 0

    # ------------------------------------------------------------------ inputs
    def _fill(self, inputs: tuple) -> tuple:
        arrays = _arrays(inputs)
        sig = _signature(arrays)
        if self._static is None:
            with self.stream:
                self._static = [self._xp.empty(s, dtype=d) for s, d in sig]
            self._signature = sig
        elif sig != self._signature:
            raise CudaGraphError(
                f"cuda_graph: the captured step takes inputs of (shape, dtype) {self._signature}"
                f"; got {sig}. A graph replays fixed shapes: run other batches eagerly"
            )
        with self.stream:
            for buf, a in zip(self._static, arrays):
                if isinstance(a, self._xp.ndarray):
                    buf[...] = a
                else:
                    buf.set(np.ascontiguousarray(a, dtype=buf.dtype))
        return tuple(Tensor(b) for b in self._static)

    # ------------------------------------------------------------------ calls
    def __call__(self, *inputs: Any) -> Any:
        static = self._fill(inputs)
        self.calls += 1
        if self.graph is not None:
            self._refill()
            self.graph.launch(stream=self.stream)
            self.replays += 1
            return self._outputs
        if self.calls <= self.warmup or (self._grew and self.calls <= self.warmup + _SETTLE):
            self._slots = _HyperSlots()  # count the updates of the last warm-up step
            pool = self._xp.get_default_memory_pool()
            before = pool.total_bytes()
            with self.stream, own_kernels(), use_hyper_slots(self._slots):
                out = self.step_fn(*static)
            grown = pool.total_bytes() - before
            self._grew = grown != 0
            self._reserve = max(self._reserve, grown)
            return out
        return self._capture(static)

    def _refill(self) -> None:
        """Run the optimizers' ``step()`` on the host only: their host state advances as in an
        eager step and the scalars of this step go to the device array the graph reads."""
        s = self._slots
        s.mode, s.cursor = "refill", 0
        with use_hyper_slots(s):
            for opt in self.optimizers:
                opt.step()
        if s.cursor != s.n:
            raise CudaGraphError(
                f"cuda_graph: the optimizers made {s.cursor} updates on the host, the captured "
                f"step {s.n}; the set of parameters with gradients must not change"
            )
        s.upload(self.stream)

    def _capture(self, static: tuple) -> Any:
        global _capturing
        s = self._slots
        if s.n and not self.optimizers:
            raise CudaGraphError(
                "cuda_graph.capture: the step updates parameters (an optimizer step ran inside "
                "it) but no optimizer was given; pass optimizer=... so its per-step scalars "
                "(learning rate, bias corrections) are refreshed before each replay"
            )
        s.allocate(self._xp)  # on the current stream, not from the step's arena
        with self.stream:  # headroom in the step's arena: see _reserve
            spare = self._xp.empty(self._reserve, dtype=self._xp.uint8)
            del spare
        s.mode, s.cursor = "capture", 0
        stream = self.stream
        totals = getattr(self._xp, "totals", None) if self._be.simulated else None
        before = totals() if totals else None
        with stream, own_kernels(), use_hyper_slots(s):
            stream.begin_capture()
            _capturing += 1
            try:
                out = self.step_fn(*static)
            except BaseException as e:
                _capturing -= 1
                try:
                    stream.end_capture()
                except Exception:  # the capture may already be invalidated
                    pass
                if isinstance(e, CudaGraphError):
                    raise
                raise CudaGraphError(
                    f"cuda_graph: the step cannot be captured as a CUDA graph: "
                    f"{type(e).__name__}: {e}"
                ) from e
            _capturing -= 1
            graph = stream.end_capture()
        if before is not None:
            after = totals()
            self.capture_counts = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        if s.cursor != s.n:
            raise CudaGraphError(
                f"cuda_graph: the captured step made {s.cursor} optimizer updates, the last "
                f"warm-up step {s.n}; the set of parameters with gradients must not change"
            )
        s.upload(stream)
        self.graph = graph
        self._outputs = out
        graph.launch(stream=stream)
        return out

    def synchronize(self) -> None:
        """Wait for the step's stream (the last replay) to finish."""
        self.stream.synchronize()

    def __repr__(self) -> str:
        state = "captured" if self.graph is not None else f"warm-up {self.calls}/{self.warmup}"
        return f"CapturedStep({getattr(self.step_fn, '__name__', 'step')}, {state})"


def capture(
    step_fn: Callable[..., Any] | None = None,
    *,
    optimizer: Any = None,
    warmup: int = 3,
    backend: str = "cuda",
) -> Any:
    """``step_fn`` as a :class:`CapturedStep` (usable as a decorator, with or without
    arguments): eager for ``warmup`` calls, then captured once as a CUDA graph and replayed.

    ``optimizer``: the optimizer (or list) stepped inside ``step_fn``. See the module doc for
    what can be captured.
    """
    if step_fn is None:
        return lambda fn: CapturedStep(fn, optimizer=optimizer, warmup=warmup, backend=backend)
    return CapturedStep(step_fn, optimizer=optimizer, warmup=warmup, backend=backend)
