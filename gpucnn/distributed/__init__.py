"""Data-parallel training over processes: one per GPU (or CPU rank), on one machine or many.

Launch with MPI (``mpiexec -n 2 python train.py``; ``pip install "gpucnn[dist]"`` brings
``mpi4py``, imported only by :func:`init`), then::

    import gpucnn.distributed as dist
    dist.init()                        # the world from MPI; size 1 is valid
    model.fit(x, y, batch_size=64)     # Keras style: distributed automatically

    ddp = dist.DataParallel(model)     # PyTorch style
    loader = DataLoader((x, y), batch_size=64, sampler=dist.DistributedSampler(len(x)))

* :func:`init`, :func:`rank`, :func:`world_size`, :func:`local_rank`, :func:`is_main`,
  :func:`barrier`, :func:`shutdown`, :func:`get_communicator` (:mod:`.world`);
* communicators (:mod:`.comm`, :mod:`.nccl`): :class:`LocalCommunicator`,
  :class:`MPICommunicator`, :class:`NcclCommunicator`;
* :class:`DataParallel` and its :class:`Reducer` (bucketed all-reduce overlapped with
  backward, :mod:`.parallel`); ``fit``'s integration (:mod:`.fit`);
* :class:`DistributedSampler` (:mod:`.sampler`);
* :class:`SyncBatchNormalization`, :func:`convert_sync_batchnorm` (:mod:`.sync_bn`).
"""

from gpucnn.distributed.comm import (
    Communicator,
    Handle,
    LocalCommunicator,
    MPICommunicator,
)
from gpucnn.distributed.parallel import (
    DataParallel,
    Reducer,
    register_post_accumulate_grad_hook,
)
from gpucnn.distributed.sampler import DistributedSampler
from gpucnn.distributed.sync_bn import (
    SyncBatchNormalization,
    convert_sync_batchnorm,
    sync_batch_norm,
)
from gpucnn.distributed.world import (
    barrier,
    get_communicator,
    init,
    is_initialized,
    is_main,
    local_rank,
    local_scope,
    rank,
    shutdown,
    world_size,
)

__all__ = [
    "Communicator",
    "DataParallel",
    "DistributedSampler",
    "Handle",
    "LocalCommunicator",
    "MPICommunicator",
    "NcclCommunicator",
    "Reducer",
    "SyncBatchNormalization",
    "barrier",
    "convert_sync_batchnorm",
    "get_communicator",
    "init",
    "is_initialized",
    "is_main",
    "local_rank",
    "local_scope",
    "nccl_available",
    "rank",
    "register_post_accumulate_grad_hook",
    "shutdown",
    "sync_batch_norm",
    "world_size",
]


def __getattr__(name: str) -> object:
    """``NcclCommunicator`` and ``nccl_available`` on first use: the NCCL binding lives in
    :mod:`gpucnn.backend.nccl`, which imports :mod:`gpucnn.distributed.comm` (no cycle)."""
    if name in ("NcclCommunicator", "nccl_available"):
        from gpucnn.distributed import nccl

        return getattr(nccl, name)
    raise AttributeError(f"module 'gpucnn.distributed' has no attribute {name!r}")
