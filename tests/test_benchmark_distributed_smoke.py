"""Smoke test of benchmarks/distributed.py: LeNet-5 at a tiny size, 1 and 2 MPI ranks, one
step (never timed here; it proves the launcher, the workers and the report run)."""

from __future__ import annotations

import importlib.util

import pytest

from benchmarks.distributed import main, scaling_table

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None,
                                reason="needs mpi4py (pip install mpi4py mpich)")


def test_scaling_table_fraction_of_linear() -> None:
    rows = [{"ranks": 1, "seconds": 1.0, "steps": 2, "batch_per_rank": 4},
            {"ranks": 2, "seconds": 1.25, "steps": 2, "batch_per_rank": 4}]
    text = scaling_table(rows)
    assert "| 1 | 4 | 4 | 8.0 | 8.0 | 1.00 |" in text
    assert "| 2 | 4 | 8 | 12.8 | 6.4 | 0.80 |" in text


def test_distributed_benchmark_runs_one_and_two_ranks(tmp_path) -> None:
    out = tmp_path / "d.md"
    res = main(["--device", "cpu", "--model", "lenet5", "--ranks", "1,2", "--batch", "2",
                "--steps", "1", "--warmup", "0", "--rounds", "1", "--out", str(out)])
    assert [r["ranks"] for r in res] == [1, 2]
    assert res[1]["communicator"] == "MPICommunicator"
    text = out.read_text()
    assert "fraction of linear" in text and "python -m benchmarks.distributed" in text
