"""The NCCL communicator: collectives of device arrays through ``cupy.cuda.nccl``.

NCCL runs on its own non-blocking CUDA stream. Each collective first makes that stream wait
for an event recorded on the caller's current (compute) stream, so it reads finished
gradients; its handle's ``wait()`` makes the compute stream wait for an event recorded after
the collective, so the optimizer reads the result; neither waits on the host. The unique id
that bootstraps the NCCL communicator is broadcast over the object communicator (MPI). NCCL
refuses two ranks on one GPU: one process per GPU. It lives in the backend (the one layer that
touches CuPy) and is re-exported as :mod:`gpucnn.distributed.nccl`; it subclasses the
communicator interface of :mod:`gpucnn.distributed.comm`, which imports nothing above the
backend.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from gpucnn.backend.device import cupy_module, is_device_array
from gpucnn.distributed.comm import Communicator, Handle, check_buffer, check_op

__all__ = ["NcclCommunicator", "nccl_available", "nccl_module"]


def nccl_module() -> Any:
    """The ``cupy.cuda.nccl`` module, or None where CuPy has no usable NCCL (not installed,
    the simulated device, the library missing)."""
    try:
        cp = cupy_module()
    except ImportError:
        return None
    mod = getattr(cp.cuda, "nccl", None)
    if mod is None and cp.__name__ == "cupy":
        try:
            mod = importlib.import_module("cupy.cuda.nccl")
        except ImportError:
            return None
    if mod is None or not getattr(mod, "available", True):
        return None
    return mod


def nccl_available() -> bool:
    """Whether :func:`nccl_module` finds a usable NCCL."""
    return nccl_module() is not None


_DTYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64",
           "int8": "NCCL_INT8", "uint8": "NCCL_UINT8", "int32": "NCCL_INT32",
           "uint32": "NCCL_UINT32", "int64": "NCCL_INT64", "uint64": "NCCL_UINT64"}
_OPS = {"sum": "NCCL_SUM", "max": "NCCL_MAX", "min": "NCCL_MIN", "avg": "NCCL_AVG"}


class _NcclHandle(Handle):
    def __init__(self, x: Any, event: Any, xp: Any) -> None:
        self._x, self._event, self._xp, self._done = x, event, xp, False

    def wait(self) -> Any:
        if not self._done:
            self._xp.cuda.get_current_stream().wait_event(self._event)
            self._done = True
        return self._x


class NcclCommunicator(Communicator):
    """NCCL collectives of device arrays; host arrays and objects go through ``objects``.

    Args:
        objects: the communicator of the same ranks for objects and host arrays (an
            :class:`~gpucnn.distributed.comm.MPICommunicator`); it carries the NCCL unique id
            from rank 0 to every rank.
        nccl: the NCCL module (default :func:`nccl_module`).
        xp: the device module (default CuPy, or the simulated device's stand-in).

    ``"avg"`` uses NCCL's average op where the NCCL build has it (2.10+), else a sum and a
    division on the NCCL stream.
    """

    name = "nccl"

    def __init__(self, objects: Communicator, nccl: Any = None, xp: Any = None) -> None:
        self._nccl = nccl if nccl is not None else nccl_module()
        if self._nccl is None:
            raise RuntimeError("NcclCommunicator: CuPy's NCCL (cupy.cuda.nccl) is not available "
                               "here; use the MPI communicator (init(communicator='mpi'))")
        self._xp = xp if xp is not None else cupy_module()
        self.objects = objects
        self.rank, self.size = objects.rank, objects.size
        uid = self._nccl.get_unique_id() if self.rank == 0 else None
        uid = objects.broadcast_object(uid, 0)
        self._comm = self._nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = self._xp.cuda.Stream(non_blocking=True)
        self._closed = False

    # -------------------------------------------------------------- helpers
    def _ptr(self, x: Any) -> int:
        """The device pointer of ``x``."""
        return int(x.data.ptr)

    def _dtype(self, where: str, x: Any) -> int:
        name = _DTYPES.get(np.dtype(x.dtype).name)
        if name is None or not hasattr(self._nccl, name):
            raise TypeError(f"{where}: NCCL has no type for dtype {x.dtype}")
        return int(getattr(self._nccl, name))

    def _after_compute(self) -> None:
        """Order the NCCL stream after everything queued so far on the compute stream."""
        self.stream.wait_event(self._xp.cuda.get_current_stream().record())

    def _check_open(self, where: str) -> None:
        if self._closed:
            raise RuntimeError(f"{where}: the NCCL communicator is closed")

    # -------------------------------------------------------------- collectives
    def allreduce_async(self, x: Any, op: str = "sum") -> Handle:
        check_op("allreduce", op)
        check_buffer("allreduce", x)
        if not is_device_array(x):
            return self.objects.allreduce_async(x, op)
        self._check_open("allreduce")
        if op == "avg" and x.dtype.kind != "f":
            raise TypeError(f"allreduce: op 'avg' needs a floating array, got dtype {x.dtype}")
        dtype = self._dtype("allreduce", x)
        native_avg = op != "avg" or hasattr(self._nccl, _OPS["avg"])
        nccl_op = int(getattr(self._nccl, _OPS[op] if native_avg else _OPS["sum"]))
        self._after_compute()
        ptr = self._ptr(x)
        self._comm.allReduce(ptr, ptr, int(x.size), dtype, nccl_op, int(self.stream.ptr))
        if not native_avg:
            with self.stream:
                x /= self.size
        return _NcclHandle(x, self.stream.record(), self._xp)

    def broadcast(self, x: Any, root: int = 0) -> Any:
        root = self._check_root("broadcast", root)
        check_buffer("broadcast", x)
        if not is_device_array(x):
            return self.objects.broadcast(x, root)
        self._check_open("broadcast")
        dtype = self._dtype("broadcast", x)
        self._after_compute()
        self._comm.bcast(self._ptr(x), int(x.size), dtype, root, int(self.stream.ptr))
        return _NcclHandle(x, self.stream.record(), self._xp).wait()

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.objects.broadcast_object(obj, root)

    def allgather_object(self, obj: Any) -> list:
        return self.objects.allgather_object(obj)

    def barrier(self) -> None:
        self.stream.synchronize()
        self.objects.barrier()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.stream.synchronize()
            self._comm.destroy()
