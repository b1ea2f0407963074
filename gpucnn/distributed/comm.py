"""Communicators: the collectives data-parallel training needs, on one interface.

:class:`Communicator` is the interface: in-place ``allreduce`` (``"sum"``, ``"avg"``, ``"max"``,
``"min"``) of one C-contiguous array, its asynchronous form returning a :class:`Handle`,
in-place ``broadcast`` of an array, ``broadcast_object`` / ``allgather_object`` of small
picklable objects, ``barrier`` and ``close``. Implementations:

* :class:`LocalCommunicator`: one process (every collective is the identity).
* :class:`MPICommunicator`: ``mpi4py`` (imported lazily); host arrays directly, device
  arrays staged through the host.
* :class:`gpucnn.distributed.nccl.NcclCommunicator`: NCCL for device arrays, MPI for objects.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucnn.backend.device import is_device_array

__all__ = ["OPS", "Communicator", "DoneHandle", "Handle", "LocalCommunicator",
           "MPICommunicator", "check_buffer", "check_op"]

#: The reduction operations every communicator supports.
OPS = ("sum", "avg", "max", "min")


def check_op(where: str, op: Any) -> str:
    """``op`` if it is one of :data:`OPS`, else a ValueError naming ``where``."""
    if not isinstance(op, str) or op not in OPS:
        raise ValueError(f"{where}: op must be one of {OPS}, got {op!r}")
    return op


def check_buffer(where: str, x: Any) -> Any:
    """``x`` if it is a C-contiguous host or device array of numbers (collectives work in
    place, so a copy would lose the result), else a TypeError/ValueError naming ``where``."""
    if not (isinstance(x, np.ndarray) or is_device_array(x)):
        raise TypeError(f"{where}: expected a NumPy or device array, got {type(x).__name__}")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{where}: expected a numeric array, got dtype {x.dtype}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{where}: the array must be C-contiguous (collectives work in place), "
                         f"got shape {tuple(x.shape)} with strides {tuple(x.strides)}")
    return x


class Handle:
    """An asynchronous collective in flight: :meth:`wait` finishes it and returns the array
    (the one given, now holding the result)."""

    def wait(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def done(self) -> bool:
        """Whether :meth:`wait` has completed."""
        return bool(getattr(self, "_done", False))


class DoneHandle(Handle):
    """A collective that finished when it was started."""

    def __init__(self, x: Any) -> None:
        self._x, self._done = x, True

    def wait(self) -> Any:
        return self._x


class Communicator:
    """The collectives of data-parallel training over ``size`` processes (this one is
    ``rank``). Array collectives work in place on C-contiguous arrays and return them."""

    name = "base"
    rank: int = 0
    size: int = 1

    def allreduce(self, x: Any, op: str = "sum") -> Any:
        """Reduce ``x`` over every rank in place (``"avg"``: the sum divided by ``size``)."""
        return self.allreduce_async(x, op).wait()

    def allreduce_async(self, x: Any, op: str = "sum") -> Handle:  # pragma: no cover
        """Start :meth:`allreduce`; the returned handle's ``wait()`` finishes it. ``x`` must
        not be read or written until then."""
        raise NotImplementedError

    def broadcast(self, x: Any, root: int = 0) -> Any:  # pragma: no cover
        """Overwrite ``x`` on every rank with ``root``'s ``x`` (same shape and dtype)."""
        raise NotImplementedError

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:  # pragma: no cover
        """``root``'s ``obj`` (a small picklable object), on every rank."""
        raise NotImplementedError

    def allgather_object(self, obj: Any) -> list:  # pragma: no cover
        """Every rank's ``obj``, in rank order, on every rank."""
        raise NotImplementedError

    def barrier(self) -> None:  # pragma: no cover
        """Return once every rank has called it."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the communicator's resources (idempotent)."""

    def _check_root(self, where: str, root: Any) -> int:
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) \
                or not 0 <= root < self.size:
            raise ValueError(f"{where}: root must be a rank in [0, {self.size}), got {root!r}")
        return int(root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class LocalCommunicator(Communicator):
    """The communicator of a single process: every collective leaves its data as it is."""

    name = "local"

    def __init__(self) -> None:
        self.rank, self.size = 0, 1

    def allreduce_async(self, x: Any, op: str = "sum") -> Handle:
        check_op("allreduce", op)
        return DoneHandle(check_buffer("allreduce", x))

    def broadcast(self, x: Any, root: int = 0) -> Any:
        self._check_root("broadcast", root)
        return check_buffer("broadcast", x)

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        self._check_root("broadcast_object", root)
        return obj

    def allgather_object(self, obj: Any) -> list:
        return [obj]

    def barrier(self) -> None:
        return None


class _MPIHandle(Handle):
    def __init__(self, request: Any, host: np.ndarray, x: Any, scale: int | None) -> None:
        self._request, self._host, self._x, self._scale = request, host, x, scale
        self._done = False

    def wait(self) -> Any:
        if self._done:
            return self._x
        self._request.Wait()
        if self._scale is not None:
            self._host /= self._scale
        if self._host is not self._x:  # a device array staged through the host
            self._x[...] = _upload_like(self._host, self._x)
        self._done = True
        self._host = None  # type: ignore[assignment]
        return self._x


def _host_copy(x: Any) -> np.ndarray:
    """``x`` itself for a host array, else a host copy of the device array."""
    if isinstance(x, np.ndarray):
        return x
    from gpucnn.backend import to_numpy

    return np.ascontiguousarray(to_numpy(x))


def _upload_like(host: np.ndarray, like: Any) -> Any:
    from gpucnn.backend import to_backend

    return to_backend(host, "cuda") if is_device_array(like) else host


class MPICommunicator(Communicator):
    """Collectives over an ``mpi4py`` communicator (default ``MPI.COMM_WORLD``).

    Host arrays are reduced in place (``Iallreduce`` with ``MPI.IN_PLACE``); device arrays
    are copied to the host, reduced and copied back (use
    :class:`~gpucnn.distributed.nccl.NcclCommunicator` for device arrays on GPUs). ``"avg"``
    is the sum divided by ``size`` (integer arrays: floor division is refused, ask for
    ``"sum"``)."""

    name = "mpi"

    def __init__(self, comm: Any = None) -> None:
        from mpi4py import MPI  # lazily: importing gpucnn never needs mpi4py

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = int(self.comm.Get_rank()), int(self.comm.Get_size())
        self._ops = {"sum": MPI.SUM, "avg": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}

    def allreduce_async(self, x: Any, op: str = "sum") -> Handle:
        check_op("allreduce", op)
        check_buffer("allreduce", x)
        if op == "avg" and x.dtype.kind != "f":
            raise TypeError(f"allreduce: op 'avg' needs a floating array, got dtype {x.dtype}")
        host = _host_copy(x)
        req = self.comm.Iallreduce(self.MPI.IN_PLACE, host, op=self._ops[op])
        return _MPIHandle(req, host, x, self.size if op == "avg" else None)

    def broadcast(self, x: Any, root: int = 0) -> Any:
        root = self._check_root("broadcast", root)
        check_buffer("broadcast", x)
        host = _host_copy(x)
        self.comm.Bcast(host, root=root)
        if host is not x:
            x[...] = _upload_like(host, x)
        return x

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.comm.bcast(obj, root=self._check_root("broadcast_object", root))

    def allgather_object(self, obj: Any) -> list:
        return list(self.comm.allgather(obj))

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every rank's process now (``MPI_Abort``): what an uncaught exception on one
        rank does after :func:`gpucnn.distributed.init`."""
        self.comm.Abort(code)
