"""An in-process world of threads: one :class:`ThreadComm` per rank, each driven by its own
thread, so the 2-rank logic of :mod:`gpucnn.distributed` runs under plain pytest too;
inside :func:`thread_world`, the world itself (what ``fit`` and
``BatchNormalization(synchronized=True)`` ask for) is each thread's communicator."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from gpucnn.backend.device import array_module
from gpucnn.distributed.comm import Communicator, DoneHandle, Handle, check_buffer, check_op

_local = threading.local()  # the ThreadComm of the run_ranks thread running


@contextlib.contextmanager
def thread_world() -> Iterator[None]:
    """Inside, :mod:`gpucnn.distributed.world`'s ``get_communicator`` and
    ``is_initialized`` answer, on a :func:`run_ranks` thread, with that thread's
    communicator (an initialised world of ``size`` ranks); elsewhere as before."""
    from gpucnn.distributed import world

    get, inited = world.get_communicator, world.is_initialized
    world.get_communicator = lambda: getattr(_local, "comm", None) or get()
    world.is_initialized = lambda: getattr(_local, "comm", None) is not None or inited()
    try:
        yield
    finally:
        world.get_communicator, world.is_initialized = get, inited


class _Shared:
    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=30)
        self.slots: list[Any] = [None] * size


class ThreadComm(Communicator):
    """Rank ``rank`` of a world of threads sharing ``shared``. Collectives are blocking and
    reduce in rank order (the same result on every rank); ``allreduce_async`` counts calls."""

    name = "threads"

    def __init__(self, shared: _Shared, rank: int) -> None:
        self.shared, self.rank, self.size = shared, rank, shared.size
        self.started = 0

    def _exchange(self, value: Any) -> list:
        s = self.shared
        s.slots[self.rank] = value
        s.barrier.wait()
        got = list(s.slots)
        s.barrier.wait()
        return got

    def allreduce_async(self, x: Any, op: str = "sum") -> Handle:
        check_op("allreduce", op)
        check_buffer("allreduce", x)
        self.started += 1
        parts = self._exchange(x.copy())
        xp = array_module(x)
        fn = {"sum": xp.add, "avg": xp.add, "max": xp.maximum, "min": xp.minimum}[op]
        out = parts[0].copy()
        for p in parts[1:]:
            out = fn(out, p)
        if op == "avg":
            out = out / self.size
        x[...] = out
        return DoneHandle(x)

    def broadcast(self, x: Any, root: int = 0) -> Any:
        x[...] = self._exchange(x.copy())[root]
        return x

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return self._exchange(obj)[root]

    def allgather_object(self, obj: Any) -> list:
        return self._exchange(obj)

    def barrier(self) -> None:
        self._exchange(None)


def run_ranks(size: int, fn: Callable[[ThreadComm], Any]) -> list:
    """``fn(comm)`` on ``size`` threads, one per rank; their results in rank order (the
    first exception re-raised)."""
    shared = _Shared(size)
    results: list[Any] = [None] * size
    errors: list[BaseException] = []

    def body(r: int) -> None:
        _local.comm = ThreadComm(shared, r)
        try:
            results[r] = fn(_local.comm)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)
            shared.barrier.abort()
        finally:
            _local.comm = None

    threads = [threading.Thread(target=body, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results
