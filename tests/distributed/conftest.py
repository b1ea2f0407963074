"""The distributed tests: skipped as a whole unless ``mpi4py`` imports.

They run as they are under plain pytest (a world of one; the 2-rank logic is also checked
in-process with threads) and under ``mpiexec -n 2 python -m mpi4py -m pytest
tests/distributed`` (every rank runs every test; collectives meet in test order)."""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("mpi4py") is None:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def world():
    """The communicator of :func:`gpucnn.distributed.init` (MPI's world)."""
    import gpucnn.distributed as dist

    return dist.init(communicator="mpi")
