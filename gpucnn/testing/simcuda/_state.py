"""The simulated device's bookkeeping: event counters with call sites, memory pool, capture.

It is process-global, as a CUDA context is, and thread-safe: one re-entrant lock guards the
pool, the counters and the capture state; what CuPy keeps per thread (the current stream
stack and device) is thread-local here too (:data:`TLS`).

* Counters: every event is attributed to the thread it happened on and to the stream it was
  issued on (the thread's current stream, or the ``stream=`` argument), so a test can count
  one thread's work while another thread (a DataLoader's prefetch worker) uploads on its own
  stream: :func:`counters` with ``thread=``/``stream=``.
* Memory pool: as CuPy's, an arena of free blocks per stream. A request is served from the
  arena of the current stream; a block goes back, when freed (by whichever thread drops it),
  to the arena of the stream it was allocated on. Blocks freed on a side stream are never
  handed to the main stream's allocations.
* Capture: a capture belongs to its stream and to the thread that began it. Work of that
  thread, and work any thread issues on the capturing stream, is recorded and refused as
  CUDA and CuPy refuse it; other threads on other streams run as usual (CUDA's
  ``cudaStreamCaptureModeThreadLocal``).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

LOCK = threading.RLock()
TLS = threading.local()  # per thread: ``stream`` (None: the null stream), ``stack``, ``device``
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


# --------------------------------------------------------------------------- streams

_STREAM_KEYS = itertools.count(1)  # 0 is the null stream


def new_stream_key() -> int:
    """A key no other stream has had (arenas and counters are kept by it; ids get reused)."""
    return next(_STREAM_KEYS)


def current_stream() -> Any:
    """The calling thread's current stream object (``None``: the null stream)."""
    return getattr(TLS, "stream", None)


def stream_key(stream: Any) -> int:
    """The key of ``stream`` (0 for ``None`` and the null stream)."""
    return 0 if stream is None else stream._key


# --------------------------------------------------------------------------- counters


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
        with LOCK:
            d: dict[str, Any] = {k: getattr(self, k) for k in KINDS}
            d["batched_gemms"] = self.batched_gemms
            d["sites"] = {k: dict(v) for k, v in self.sites.items()}
            d["kernels"] = dict(self.kernels)
        return d

    def _add(self, kind: str, n: int, site: str | None, name: str | None) -> None:
        setattr(self, kind, getattr(self, kind) + n)
        if site is not None:
            self.sites[kind][site] += n
        if name is not None:
            self.kernels[name] += n


class _Book:
    """The counters since the last reset: all threads, and per thread, stream, (thread, stream)."""

    def __init__(self) -> None:
        self.all = Counters()
        self.threads: dict[threading.Thread, Counters] = {}
        self.streams: dict[int, Counters] = {}
        self.pairs: dict[tuple[threading.Thread, int], Counters] = {}

    def get(self, thread: threading.Thread | None, key: int | None) -> Counters:
        if thread is None and key is None:
            return self.all
        if key is None:
            table, k = self.threads, thread
        elif thread is None:
            table, k = self.streams, key
        else:
            table, k = self.pairs, (thread, key)
        c = table.get(k)  # type: ignore[call-overload]
        if c is None:
            c = table[k] = Counters()  # type: ignore[index]
        return c


_BOOK = _Book()
TOTALS: collections.Counter = collections.Counter()  # since process start; never reset


def count(kind: str, n: int = 1, site: bool = True, name: str | None = None,
          stream: Any = None) -> None:
    """Add ``n`` events of ``kind`` (with the caller's site, and the kernel ``name``), for the
    calling thread and ``stream`` (default: the thread's current stream)."""
    where = call_site() if site else None
    thread = threading.current_thread()
    key = stream_key(stream if stream is not None else current_stream())
    with LOCK:
        TOTALS[kind] += n
        book = _BOOK
        for c in (book.all, book.get(thread, None), book.get(None, key), book.get(thread, key)):
            c._add(kind, n, where, name)


def reset() -> None:
    """Zero every counter (of every thread and stream)."""
    global _BOOK
    with LOCK:
        _BOOK = _Book()


def _thread_of(thread: Any) -> threading.Thread | None:
    if thread is None or thread == "all":
        return None
    if thread == "current":
        return threading.current_thread()
    if thread == "main":
        return threading.main_thread()
    if isinstance(thread, threading.Thread):
        return thread
    raise TypeError(f"thread= takes None/'all', 'current', 'main' or a threading.Thread, "
                    f"not {thread!r}")


def _key_of(stream: Any) -> int | None:
    if stream is None or (isinstance(stream, str) and stream == "all"):
        return None
    if isinstance(stream, str) and stream == "current":
        return stream_key(current_stream())
    if hasattr(stream, "_key"):
        return stream_key(stream)
    raise TypeError(f"stream= takes None/'all', 'current' or a Stream, not {stream!r}")


def counters(thread: Any = None, stream: Any = None) -> Counters:
    """The live counters: of every thread and stream by default; ``thread='current'`` (or
    ``'main'``, or a ``threading.Thread``): only events that thread caused; ``stream=`` (a
    Stream, or ``'current'``): only events issued on that stream; both: their intersection."""
    t, k = _thread_of(thread), _key_of(stream)
    with LOCK:
        return _BOOK.get(t, k)


def by_thread() -> dict[str, Counters]:
    """The live counters of every thread that caused an event since the last reset, by thread
    name (a name shared by several threads gets ``#2``, ``#3``, ...)."""
    with LOCK:
        out: dict[str, Counters] = {}
        for t, c in _BOOK.threads.items():
            name, i = t.name, 1
            while name in out:
                i += 1
                name = f"{t.name}#{i}"
            out[name] = c
        return out


# --------------------------------------------------------------------------- capture


class CaptureState:
    """One stream capture in progress: its stream, the thread that began it, the nodes."""

    def __init__(self, stream: Any, thread: threading.Thread) -> None:
        self.stream = stream
        self.thread = thread
        self.nodes: list = []


CAPTURES: dict[int, CaptureState] = {}  # stream key -> the capture of that stream


def active_capture() -> CaptureState | None:
    """The capture the calling thread's work goes into: that of its current stream, else the
    one this thread began (None when neither)."""
    if not CAPTURES:  # the fast path: nothing is being captured anywhere
        return None
    with LOCK:
        cap = CAPTURES.get(stream_key(current_stream()))
        if cap is not None:
            return cap
        me = threading.current_thread()
        for cap in CAPTURES.values():
            if cap.thread is me:
                return cap
    return None


def capturing() -> bool:
    """Whether the calling thread's work is being captured (see :func:`active_capture`)."""
    return active_capture() is not None


def stream_capturing(stream: Any) -> bool:
    """Whether ``stream`` (any thread's) is being captured."""
    return stream is not None and stream_key(stream) in CAPTURES


def refuse_in_capture(what: str, stream: Any = None, device_wide: bool = False) -> None:
    """Raise :class:`StreamCaptureError` if ``what`` is not allowed now: the calling thread is
    capturing, or ``stream`` is being captured, or (``device_wide``) any stream is."""
    busy = (capturing() or stream_capturing(stream)
            or (device_wide and bool(CAPTURES)))  # fmt: skip
    if busy:
        raise StreamCaptureError(
            f"{what} is not permitted while a stream is being captured "
            f"(cudaErrorStreamCaptureUnsupported); at {call_site()}"
        )


def record_node(fn: Any, label: str) -> None:
    """Append a replayable node ``fn()`` to the calling thread's capture."""
    cap = active_capture()
    if cap is None:
        raise StreamCaptureError(f"{label}: the capture ended while the work was being issued")
    with LOCK:
        cap.nodes.append((label, fn))


def host_sync(what: str, stream: Any = None, device_wide: bool = False) -> None:
    """A host wait on the device: refused during capture, else counted as a sync."""
    refuse_in_capture(what, stream, device_wide)
    count("syncs", stream=stream)


# --------------------------------------------------------------------------- memory pool

ROUND = 512  # CuPy's pool rounds every allocation up to 512 bytes


class MemoryPool:
    """CuPy's device memory pool, modelled: freed blocks are kept and reused by size, in an
    arena per stream (``cupy/cuda/memory.pyx``: ``_arenas``, keyed by the stream).

    A request takes, in the arena of the current stream, the smallest free chunk that fits,
    split when larger (CuPy splits chunks in its arenas; it also merges freed neighbours,
    which this model does not). A freed block goes back to the arena of the stream it was
    allocated on, whichever thread frees it.

    A request the arena cannot serve is a device allocation (``cudaMalloc``): counted in
    ``allocations`` and refused during stream capture; a served one counts in ``pool_reuses``.
    """

    _arena_type: type = collections.Counter  # {size: free blocks} (tests slow it down)

    def __init__(self) -> None:
        self._arenas: dict[int, collections.Counter] = {}  # stream key -> {size: free blocks}
        self._used = 0
        self._total = 0
        self._deferred: list[tuple[int, int]] = []  # frees that arrived inside a pool section

    @contextlib.contextmanager
    def _section(self) -> Iterator[None]:
        """The lock, and no re-entrant change of the arenas meanwhile: a block the garbage
        collector frees while this thread walks the arenas is put back after (CuPy disables
        the collector in its pool for the same reason, cupy/cupy#2074)."""
        with LOCK:
            outer = getattr(TLS, "in_pool", False)
            TLS.in_pool = True
            try:
                yield
            finally:
                TLS.in_pool = outer
                if not outer:
                    while self._deferred:
                        self._put(*self._deferred.pop())

    def _put(self, size: int, key: int) -> None:
        arena = self._arenas.get(key)
        if arena is None:
            arena = self._arenas[key] = self._arena_type()
        arena[size] += 1
        self._used -= size

    def malloc(self, nbytes: int, stream: Any = None) -> tuple[int, int]:
        """Serve ``nbytes`` on ``stream`` (default: the current one): ``(size, arena key)``."""
        size = max(ROUND, -(-int(nbytes) // ROUND) * ROUND)
        key = stream_key(stream if stream is not None else current_stream())
        with LOCK:  # (self._section(), inlined: this runs for every array)
            outer = getattr(TLS, "in_pool", False)
            TLS.in_pool = True
            try:
                self._serve(size, key, stream)
            finally:
                TLS.in_pool = outer
                if not outer:
                    while self._deferred:
                        self._put(*self._deferred.pop())
        return size, key

    def _serve(self, size: int, key: int, stream: Any) -> None:
        """Take ``size`` bytes from arena ``key`` (best fit, split), else from the device."""
        arena = self._arenas.get(key)
        fit = None
        if arena:
            if arena[size] > 0:
                fit = size
            else:
                fit = min((k for k, n in arena.items() if n > 0 and k > size), default=None)
        if arena is not None and fit is not None:  # a larger chunk is split, as CuPy's is
            arena[fit] -= 1
            if arena[fit] == 0:
                del arena[fit]
            if fit > size:
                arena[fit - size] += 1
            count("pool_reuses", site=False, stream=stream)
        else:
            refuse_in_capture(f"a device allocation of {size} bytes outside the pool", stream)
            self._total += size
            count("allocations", stream=stream)
        self._used += size

    def free(self, size: int, key: int = 0) -> None:
        """Return a block to the arena ``key`` of the stream it was allocated on."""
        if getattr(TLS, "in_pool", False):  # the collector, inside this thread's pool section
            self._deferred.append((size, key))
            return
        with LOCK:
            self._put(size, key)

    def used_bytes(self) -> int:
        """Bytes held by live arrays."""
        return self._used

    def total_bytes(self) -> int:
        """Bytes obtained from the device (live + free blocks)."""
        return self._total

    def free_bytes(self) -> int:
        """Bytes held in free blocks."""
        with self._section():
            return self._total - self._used

    def n_free_blocks(self) -> int:
        """Number of free blocks kept for reuse (every arena)."""
        with self._section():
            return sum(n for a in self._arenas.values() for n in a.values())

    def free_all_blocks(self, stream: Any = None) -> None:
        """Return the free blocks of ``stream``'s arena (default: of every arena) to the
        device."""
        with self._section():
            keys = list(self._arenas) if stream is None else [stream_key(stream)]
            for k in keys:
                arena = self._arenas.pop(k, None)
                if arena:
                    self._total -= sum(s * n for s, n in arena.items())

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        """Accepted for API compatibility; the simulation has no limit."""

    def get_limit(self) -> int:
        """0: no limit."""
        return 0

    # -- for tests (not CuPy API)
    def _arena_blocks(self, stream: Any = None) -> dict[int, int]:
        """``{size: free blocks}`` of ``stream``'s arena (``None``: the null stream's)."""
        key = stream_key(stream)
        with self._section():
            return {s: n for s, n in self._arenas.get(key, {}).items() if n > 0}

    def _check(self) -> None:
        """Assert the pool's invariants (non-negative counts, sizes in 512-byte units, the
        bytes in use and free adding up to the bytes obtained)."""
        with self._section():
            free = 0
            for arena in self._arenas.values():
                for s, n in arena.items():
                    assert n >= 0 and s > 0 and s % ROUND == 0, (s, n)
                    free += s * n
            assert self._used >= 0 and self._used + free == self._total, (
                self._used, free, self._total)


POOL = MemoryPool()


class Block:
    """One pool allocation backing an array and its views; freed when the last user dies,
    back to the arena of the stream it was allocated on."""

    __slots__ = ("size", "arena", "__weakref__")

    def __init__(self, nbytes: int) -> None:
        self.size, self.arena = POOL.malloc(nbytes)

    def __del__(self) -> None:
        try:
            POOL.free(self.size, self.arena)
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
