"""The simulated device's bookkeeping: event counters with call sites, memory pool, capture.

Everything here is process-global and guarded by one lock, as a CUDA context is.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

LOCK = threading.RLock()
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))

KINDS = ("syncs", "allocations", "pool_reuses", "h2d", "d2h", "launches", "cupy_kernels", "cublas")


class StreamCaptureError(RuntimeError):
    """An operation that CUDA or CuPy refuses while a stream is being captured into a graph."""


class SimulatedDeviceError(RuntimeError):
    """Misuse the simulated device detects that a GPU would not report (or report later)."""


def call_site() -> str:
    """``file:line (function)`` of the innermost frame outside this package."""
    f = sys._getframe(1)
    while f is not None and os.path.dirname(os.path.abspath(f.f_code.co_filename)) == _PKG_DIR:
        f = f.f_back
    if f is None:  # pragma: no cover - only from inside the package
        return "<simcuda>"
    return f"{f.f_code.co_filename}:{f.f_lineno} ({f.f_code.co_name})"


@dataclass
class Counters:
    """Counts of device events since the last :func:`reset`, with where each happened.

    ``syncs``: host waits (stream/device/event synchronisation, and every host read of device
    data: ``get``, ``item``, ``float``, ``bool``, ``repr``, data-dependent shapes).
    ``allocations``: device allocations the memory pool could not serve from freed blocks
    (``cudaMalloc`` calls). ``pool_reuses``: allocations served by the pool. ``h2d`` / ``d2h``:
    host<->device copies. ``launches``: our kernels (``RawKernel``). ``cupy_kernels``: CuPy's own
    elementwise/reduction/copy kernels. ``cublas``: GEMM-family calls (``matmul``, ``dot``, ...).
    ``sites[kind]`` counts events per call site; ``kernels`` counts launches per kernel name.
    """

    syncs: int = 0
    allocations: int = 0
    pool_reuses: int = 0
    h2d: int = 0
    d2h: int = 0
    launches: int = 0
    cupy_kernels: int = 0
    cublas: int = 0
    sites: dict = field(default_factory=lambda: collections.defaultdict(collections.Counter))
    kernels: collections.Counter = field(default_factory=collections.Counter)
    batched_gemms: int = 0

    def snapshot(self) -> dict:
        """The counts as a plain dict (``sites`` as ``{kind: {site: n}}``)."""
        d: dict[str, Any] = {k: getattr(self, k) for k in KINDS}
        d["batched_gemms"] = self.batched_gemms
        d["sites"] = {k: dict(v) for k, v in self.sites.items()}
        d["kernels"] = dict(self.kernels)
        return d


COUNTERS = Counters()
TOTALS: collections.Counter = collections.Counter()  # since process start; never reset


def count(kind: str, n: int = 1, site: bool = True, name: str | None = None) -> None:
    """Add ``n`` events of ``kind`` (with the caller's site, and the kernel ``name``)."""
    with LOCK:
        TOTALS[kind] += n
        setattr(COUNTERS, kind, getattr(COUNTERS, kind) + n)
        if site:
            COUNTERS.sites[kind][call_site()] += n
        if name is not None:
            COUNTERS.kernels[name] += n


def reset() -> None:
    """Zero every counter."""
    global COUNTERS
    with LOCK:
        COUNTERS = Counters()


def counters() -> Counters:
    """The live counters."""
    return COUNTERS


# --------------------------------------------------------------------------- capture


class CaptureState:
    """The stream being captured (None when not capturing) and the nodes recorded so far."""

    def __init__(self) -> None:
        self.stream: Any = None
        self.nodes: list = []


CAPTURE = CaptureState()


def capturing() -> bool:
    """Whether a stream capture is in progress."""
    return CAPTURE.stream is not None


def refuse_in_capture(what: str) -> None:
    """Raise :class:`StreamCaptureError` if capturing: ``what`` is not allowed then."""
    if CAPTURE.stream is not None:
        raise StreamCaptureError(
            f"{what} is not permitted while a stream is being captured "
            f"(cudaErrorStreamCaptureUnsupported); at {call_site()}"
        )


def record_node(fn: Any, label: str) -> None:
    """Append a replayable node ``fn()`` to the capture in progress."""
    CAPTURE.nodes.append((label, fn))


def host_sync(what: str) -> None:
    """A host wait on the device: refused during capture, else counted as a sync."""
    refuse_in_capture(what)
    count("syncs")


# --------------------------------------------------------------------------- memory pool

ROUND = 512  # CuPy's pool rounds every allocation up to 512 bytes


class MemoryPool:
    """CuPy's device memory pool, modelled: freed blocks are kept and reused by size.

    A request takes the smallest free chunk that fits, split when larger (CuPy splits chunks
    in its arenas; it also merges freed neighbours, which this model does not).

    A request the free list cannot serve is a device allocation (``cudaMalloc``): counted in
    ``allocations`` and refused during stream capture; a served one counts in ``pool_reuses``.
    """

    def __init__(self) -> None:
        self._free: collections.Counter = collections.Counter()  # rounded size -> free blocks
        self._used = 0
        self._total = 0

    def malloc(self, nbytes: int) -> int:
        size = max(ROUND, -(-int(nbytes) // ROUND) * ROUND)
        with LOCK:
            fit = size if self._free[size] > 0 else min(
                (k for k, n in self._free.items() if n > 0 and k > size), default=None
            )
            if fit is not None:  # best fit; a larger free chunk is split, as CuPy's arena does
                self._free[fit] -= 1
                if fit > size:
                    self._free[fit - size] += 1
                count("pool_reuses", site=False)
            else:
                refuse_in_capture(f"a device allocation of {size} bytes outside the pool")
                self._total += size
                count("allocations")
            self._used += size
        return size

    def free(self, size: int) -> None:
        with LOCK:
            self._free[size] += 1
            self._used -= size

    def used_bytes(self) -> int:
        """Bytes held by live arrays."""
        return self._used

    def total_bytes(self) -> int:
        """Bytes obtained from the device (live + free blocks)."""
        return self._total

    def free_bytes(self) -> int:
        """Bytes held in free blocks."""
        return self._total - self._used

    def n_free_blocks(self) -> int:
        """Number of free blocks kept for reuse."""
        return sum(self._free.values())

    def free_all_blocks(self, stream: Any = None) -> None:
        """Return every free block to the device."""
        with LOCK:
            self._total -= sum(s * n for s, n in self._free.items())
            self._free.clear()

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        """Accepted for API compatibility; the simulation has no limit."""

    def get_limit(self) -> int:
        """0: no limit."""
        return 0


POOL = MemoryPool()


class Block:
    """One pool allocation backing an array and its views; freed when the last user dies."""

    __slots__ = ("size", "__weakref__")

    def __init__(self, nbytes: int) -> None:
        self.size = POOL.malloc(nbytes)

    def __del__(self) -> None:
        try:
            POOL.free(self.size)
        except Exception:  # interpreter shutdown
            pass


class PinnedMemoryPool:
    """The pinned host memory pool (only ``free_all_blocks`` and sizes)."""

    def free_all_blocks(self) -> None:
        """No-op: pinned buffers are plain NumPy arrays here."""

    def n_free_blocks(self) -> int:
        """0."""
        return 0


PINNED_POOL = PinnedMemoryPool()
