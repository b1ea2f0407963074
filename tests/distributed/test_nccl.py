"""The NCCL communicator's logic against a fake ``cupy.cuda.nccl``, on the simulated device's
arrays and streams (neither pass needs a GPU; NCCL refuses two ranks on one GPU anyway).

The fake plays rank 0 of a world of two whose other rank contributes a known array, so the
op and dtype mapping, the native and emulated average and the stream handling are checked.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpucnn.distributed import LocalCommunicator
from gpucnn.distributed.comm import Communicator
from gpucnn.distributed.nccl import NcclCommunicator, nccl_module
from gpucnn.testing import simcuda


class FakeNccl:
    """The parts of ``cupy.cuda.nccl`` the communicator uses; ``peer``: rank 1's data."""

    NCCL_INT64, NCCL_FLOAT32, NCCL_FLOAT64 = 5, 7, 8
    NCCL_SUM, NCCL_MAX, NCCL_MIN = 0, 2, 3

    def __init__(self, peer: np.ndarray, avg: bool) -> None:
        self.peer, self.calls, self.arrays = peer, [], {}
        if avg:
            self.NCCL_AVG = 4
        fake = self

        class Comm:
            def __init__(self, ndev: int, uid: tuple, rank: int) -> None:
                fake.calls.append(("init", ndev, uid, rank))

            def allReduce(self, send, recv, count, dtype, op, stream):  # noqa: N802
                fake.calls.append(("allReduce", send, recv, count, dtype, op, stream))
                x = fake.arrays[recv]
                p = simcuda.asarray(fake.peer.astype(x.dtype))
                if op == fake.NCCL_SUM:
                    x += p
                elif op == fake.NCCL_MAX:
                    x[...] = simcuda.maximum(x, p)
                elif op == getattr(fake, "NCCL_AVG", None):
                    x[...] = (x + p) / 2
                else:
                    raise AssertionError(f"op {op}")

            def bcast(self, buff, count, dtype, root, stream):
                fake.calls.append(("bcast", buff, count, dtype, root, stream))

            def destroy(self) -> None:
                fake.calls.append(("destroy",))

        self.NcclCommunicator = Comm

    def get_unique_id(self) -> tuple:
        return (7, 7, 7)


class Objects(Communicator):
    """Rank 0 of two for objects: records what it broadcasts."""

    def __init__(self) -> None:
        self.rank, self.size, self.sent = 0, 2, []

    def broadcast_object(self, obj, root=0):
        self.sent.append(obj)
        return obj

    def allreduce_async(self, x, op="sum"):
        return LocalCommunicator().allreduce_async(x, op)


class Comm(NcclCommunicator):
    def _ptr(self, x) -> int:  # simulated arrays have no device pointers
        self._nccl.arrays[id(x)] = x
        return id(x)


def make(avg: bool = True, peer=(1.0, 2.0, 3.0)) -> tuple[Comm, FakeNccl, Objects]:
    fake, objs = FakeNccl(np.array(peer), avg), Objects()
    return Comm(objs, nccl=fake, xp=simcuda), fake, objs


def test_unique_id_goes_over_the_object_communicator() -> None:
    comm, fake, objs = make()
    assert objs.sent == [(7, 7, 7)]
    assert fake.calls[0] == ("init", 2, (7, 7, 7), 0)
    assert (comm.rank, comm.size) == (0, 2)


@pytest.mark.parametrize("avg", [True, False], ids=["native-avg", "sum-then-divide"])
def test_allreduce_ops_dtypes_and_stream(avg: bool) -> None:
    comm, fake, _ = make(avg)
    x = simcuda.asarray(np.array([3.0, 0.0, 5.0]))
    h = comm.allreduce_async(x, "sum")
    assert h.wait() is x and h.done()
    np.testing.assert_array_equal(x.get(), [4.0, 2.0, 8.0])
    name, send, recv, count, dtype, op, stream = fake.calls[-1]
    assert (send == recv == id(x), count, dtype, op) == (True, 3, fake.NCCL_FLOAT64, 0)
    assert stream == comm.stream.ptr != 0  # its own stream, not the compute stream
    y = simcuda.asarray(np.array([0.0, 4.0, 1.0], dtype=np.float32))
    comm.allreduce(y, "avg")
    np.testing.assert_allclose(y.get(), [0.5, 3.0, 2.0])
    assert fake.calls[-1][4] == fake.NCCL_FLOAT32
    assert fake.calls[-1][5] == (4 if avg else fake.NCCL_SUM)
    m = simcuda.asarray(np.array([5, 0, 1], dtype=np.int64))
    comm.allreduce(m, "max")
    np.testing.assert_array_equal(m.get(), [5, 2, 3])


def test_broadcast_host_arrays_errors_and_close() -> None:
    comm, fake, _ = make()
    b = simcuda.asarray(np.zeros(4))
    assert comm.broadcast(b, 1) is b
    assert fake.calls[-1][0] == "bcast" and fake.calls[-1][4] == 1
    host = np.ones(2)
    assert comm.allreduce(host, "sum") is host  # host arrays: the object communicator
    with pytest.raises(TypeError, match="NCCL has no type"):
        comm.allreduce(simcuda.asarray(np.zeros(2, dtype=np.int16)), "sum")
    with pytest.raises(TypeError, match="'avg' needs a floating"):
        comm.allreduce(simcuda.asarray(np.zeros(2, dtype=np.int64)), "avg")
    with pytest.raises(ValueError, match="op must be one of"):
        comm.allreduce(b, "prod")
    comm.close()
    comm.close()
    assert [c for c in fake.calls if c[0] == "destroy"] == [("destroy",)]
    with pytest.raises(RuntimeError, match="closed"):
        comm.allreduce(b, "sum")


def test_without_nccl_the_error_says_what_to_use(monkeypatch) -> None:
    monkeypatch.setattr("gpucnn.backend.nccl.nccl_module", lambda: None)
    with pytest.raises(RuntimeError, match="communicator='mpi'"):
        NcclCommunicator(Objects(), xp=simcuda)


def test_the_simulated_device_has_no_nccl(monkeypatch) -> None:
    monkeypatch.setenv("GPUCNN_SIMULATE_CUDA", "1")
    assert nccl_module() is None
