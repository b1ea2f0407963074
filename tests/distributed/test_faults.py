"""Faults: a rank that raises makes every rank exit non-zero within a bounded time.

Each test launches ``mpiexec -n 2`` itself (so it runs under plain pytest only: skipped on
the ranks of an mpiexec run) with a hard timeout; a hang would fail the test, not CI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT_S = 90  # a hang is caught by this; a healthy abort takes a few seconds

SCRIPT = """
import sys
import numpy as np
import gpucnn
import gpucnn.distributed as dist
from gpucnn import layers as L
from gpucnn.callbacks import LambdaCallback

dist.init()
assert dist.world_size() == 2, dist.world_size()
gpucnn.manual_seed(0)
m = gpucnn.Sequential([L.Dense(4, input_shape=(3,)), L.Dense(2)])
m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
x = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
y = np.zeros(64, dtype=np.int64)

def fail(batch, logs):
    if dist.rank() == 1 and batch == 2:
        raise RuntimeError("rank 1 fails on purpose")

m.fit(x, y, batch_size=4, epochs=50, verbose=0,
      callbacks=[LambdaCallback(on_train_batch_end=fail)])
print("rank", dist.rank(), "finished: the fault did not stop it", flush=True)
"""


def _mpiexec() -> str | None:
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def _world_size() -> int:
    import gpucnn.distributed as dist

    return dist.world_size()


@pytest.mark.parametrize("launcher", [[], ["-m", "mpi4py"]], ids=["plain", "m-mpi4py"])
def test_a_failing_rank_ends_every_rank(tmp_path: Path, launcher: list) -> None:
    if _world_size() > 1:
        pytest.skip("launches mpiexec itself: run under plain pytest")
    mpiexec = _mpiexec()
    if mpiexec is None:
        pytest.skip("mpiexec not found (pip install mpich)")
    script = tmp_path / "fault.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT), GPUCNN_BACKEND="numpy")
    env.pop("GPUCNN_SIMULATE_CUDA", None)
    t0 = time.monotonic()
    try:
        proc = subprocess.run([mpiexec, "-n", "2", sys.executable, *launcher, str(script)],
                              capture_output=True, text=True, timeout=LIMIT_S, env=env,
                              cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the ranks did not end within {LIMIT_S} s after one raised (a hang)")
    took = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "rank 1 fails on purpose" in out
    assert "finished" not in proc.stdout, out
    assert took < LIMIT_S
