"""The NCCL communicator, re-exported: it lives with the CUDA backend
(:mod:`gpucnn.backend.nccl`), the only layer that touches CuPy."""

from gpucnn.backend.nccl import NcclCommunicator, nccl_available, nccl_module

__all__ = ["NcclCommunicator", "nccl_available", "nccl_module"]
