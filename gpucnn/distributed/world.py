"""The process world: :func:`init` from MPI, the rank queries, :func:`shutdown`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from gpucnn.distributed.comm import Communicator, LocalCommunicator, MPICommunicator

__all__ = ["barrier", "get_communicator", "init", "is_initialized", "is_main", "local_rank",
           "local_scope", "rank", "shutdown", "world_size"]

#: Environment variables launchers set (MPICH/Hydra, Open MPI, Slurm's PMI): when one of them
#: says more than one process but mpi4py is missing, :func:`init` refuses instead of running
#: every process as a separate world of one.
_LAUNCH_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")


class _World:
    def __init__(self, comm: Communicator, local: int, previous_hook: Any) -> None:
        self.comm, self.local_rank, self.previous_hook = comm, local, previous_hook


_world: _World | None = None


def _launched_size() -> int:
    for var in _LAUNCH_SIZE_VARS:
        try:
            return int(os.environ[var])
        except (KeyError, ValueError):
            continue
    return 1


def init(communicator: str | Communicator | None = None, abort_on_exception: bool = True,
         ) -> Communicator:
    """Join the world of processes started by ``mpiexec -n N python train.py`` (``N`` may
    be 1; a plain ``python train.py`` is a world of one). Idempotent.

    Args:
        communicator: ``None`` (choose): on the cuda backend with more than one rank, each
            process is bound to GPU ``local_rank % device_count`` and an NCCL communicator
            is created (its unique id broadcast over MPI; MPI with host staging where CuPy
            has no NCCL); on the NumPy backend MPI collectives; one rank: the local
            communicator. ``"mpi"``, ``"nccl"`` or ``"local"`` force one; a
            :class:`~gpucnn.distributed.comm.Communicator` instance is used as it is.
        abort_on_exception: with more than one rank, an uncaught exception on any rank
            aborts every rank (``MPI_Abort``), so a failing rank cannot leave the others
            waiting in a collective (what ``python -m mpi4py`` does too).

    Returns:
        The communicator (also :func:`get_communicator`).
    """
    global _world
    if _world is not None:
        return _world.comm
    if communicator is not None and not isinstance(communicator, (str, Communicator)):
        raise TypeError(f"init: communicator must be None, 'mpi', 'nccl', 'local' or a "
                        f"Communicator, got {type(communicator).__name__}")
    if isinstance(communicator, str) and communicator not in ("mpi", "nccl", "local"):
        raise ValueError(f"init: communicator must be 'mpi', 'nccl' or 'local', got "
                         f"{communicator!r}")
    if isinstance(communicator, Communicator):
        _world = _World(communicator, 0, None)
        return communicator
    mpi = None
    if communicator != "local":
        try:
            mpi = MPICommunicator()
        except ImportError as e:
            if communicator in ("mpi", "nccl") or _launched_size() > 1:
                raise RuntimeError(
                    f"init: this process was launched as one of {_launched_size()} ranks (or "
                    f"MPI was asked for) but mpi4py cannot be imported ({e}); install the "
                    f"'dist' extra: pip install 'gpucnn[dist]'") from e
    local = 0
    if mpi is not None:
        MPI = mpi.MPI  # noqa: N806 - mpi4py's name
        node = mpi.comm.Split_type(MPI.COMM_TYPE_SHARED, mpi.rank)
        local = int(node.Get_rank())
        node.Free()
    comm: Communicator
    if communicator == "local" or mpi is None:
        comm = LocalCommunicator()
    else:
        comm = _choose(communicator, mpi, local)
    hook = None
    if abort_on_exception and comm.size > 1 and isinstance(mpi, MPICommunicator):
        hook = sys.excepthook
        sys.excepthook = _aborting_hook(mpi, hook)
    _world = _World(comm, local, hook)
    return comm


def _choose(communicator: str | None, mpi: MPICommunicator, local: int) -> Communicator:
    from gpucnn import backend as _backend

    on_cuda = _backend.current() == "cuda"
    if communicator == "nccl" or (communicator is None and on_cuda and mpi.size > 1):
        from gpucnn.backend import device
        from gpucnn.distributed.nccl import NcclCommunicator, nccl_available

        if on_cuda:
            count = device.device_count()
            device.use_device(local % max(count, 1))
        if communicator == "nccl" or nccl_available():
            return NcclCommunicator(mpi)
        return mpi  # CuPy without NCCL: device arrays staged through the host
    if communicator is None and mpi.size == 1:
        return LocalCommunicator()
    return mpi


def _aborting_hook(mpi: MPICommunicator, previous: Any) -> Any:
    def hook(kind: type, value: BaseException, tb: Any) -> None:
        try:
            previous(kind, value, tb)
            sys.stderr.write(f"gpucnn.distributed: uncaught {kind.__name__} on rank "
                             f"{mpi.rank}; aborting all {mpi.size} ranks\n")
            sys.stderr.flush()
        finally:
            mpi.abort(1)

    return hook


def is_initialized() -> bool:
    """Whether :func:`init` has run (and :func:`shutdown` has not)."""
    return _world is not None and not _suspended


_suspended = False


@contextlib.contextmanager
def local_scope() -> Iterator[None]:
    """Inside, this process acts as a world of one (``fit`` trains on it alone, new
    :class:`~gpucnn.distributed.DataParallel` wrappers do not communicate): e.g. a
    single-process reference run next to the distributed one."""
    global _suspended
    was, _suspended = _suspended, True
    try:
        yield
    finally:
        _suspended = was


def get_communicator() -> Communicator:
    """The communicator of :func:`init`; a local one (a world of one) before ``init``."""
    if _world is None or _suspended:
        return LocalCommunicator()
    return _world.comm


def rank() -> int:
    """This process's rank (0 before :func:`init`)."""
    return get_communicator().rank


def world_size() -> int:
    """The number of processes (1 before :func:`init`)."""
    return get_communicator().size


def local_rank() -> int:
    """This process's rank among those on its machine (selects its GPU)."""
    return _world.local_rank if _world is not None and not _suspended else 0


def is_main() -> bool:
    """Whether this is rank 0: the one that prints progress and writes checkpoints."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank reaches this call."""
    get_communicator().barrier()


def shutdown() -> None:
    """Leave the world: close the communicator and restore the exception hook (MPI itself
    is finalised by mpi4py at exit)."""
    global _world
    if _world is None:
        return
    w, _world = _world, None
    if w.previous_hook is not None:
        sys.excepthook = w.previous_hook
    w.comm.close()
