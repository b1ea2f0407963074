"""Per-step budgets of a LeNet-5 ``fit`` on the simulated CUDA device.

A training step must not wait for the device except where the progress display is refreshed
(one packed read every ``update_freq`` steps and at an epoch's last step), and must allocate
no device memory in steady state (the memory pool serves every buffer from the previous
step's freed ones). The counts come from :mod:`gpucnn.testing.simcuda`; they run in both test
passes (:func:`gpucnn.testing.simulated_device` switches the device on for the test).

The DataLoader prefetches 2 batches in its worker thread meanwhile, uploading on its own
stream: the counts are the training thread's (``counters(thread="current")``), and the
worker's allocations come from its stream's arena of the pool (CuPy keeps one per stream), so
they change neither the step's counts nor whether the step's allocations are served.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import gpucnn
from gpucnn.callbacks import Callback
from gpucnn.testing import simulated_device

KEYS = ("syncs", "allocations", "launches", "cupy_kernels", "cublas", "h2d", "d2h")
# A steady LeNet-5 training step (adam, sparse categorical cross-entropy, accuracy, batch 32)
# on the training thread; the note and benchmarks quote these figures.
STEADY = {"launches": 22, "cupy_kernels": 35, "cublas": 14}


@pytest.fixture(autouse=True)
def _prefetch_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """fit's loader prefetches 2 batches in its worker thread, on the simulated device too
    (older code made it 0 there through ``gpucnn.model._loader_prefetch``). Whatever names
    the depth, :func:`_fit` checks the worker really did the uploads."""
    import importlib

    for module, name, value in (("gpucnn.model", "_loader_prefetch", lambda: 2),
                                ("gpucnn.train.data", "LOADER_PREFETCH", 2)):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(mod, name):
            monkeypatch.setattr(mod, name, value)


class _PerStep(Callback):
    """Counter deltas of every training step, of the training thread only (reads no logs:
    costs no sync itself)."""

    def __init__(self, sim) -> None:  # noqa: ANN001 - the simcuda module
        super().__init__()
        self.sim, self.rows = sim, []
        self.threads: set = set()

    def on_train_batch_begin(self, batch: int, logs=None) -> None:  # noqa: ANN001
        self.threads.add(threading.current_thread())
        self.before = self.sim.counters(thread="current").snapshot()

    def on_train_batch_end(self, batch: int, logs=None) -> None:  # noqa: ANN001
        after = self.sim.counters(thread="current").snapshot()
        row = {k: after[k] - self.before[k] for k in KEYS}
        b = self.before["sites"].get("syncs", {})
        row["sync_sites"] = {
            s: n - b.get(s, 0) for s, n in after["sites"].get("syncs", {}).items()
            if n - b.get(s, 0)
        }  # fmt: skip
        self.rows.append(row)


def _fit(update_freq: int, steps: int = 8, epochs: int = 2) -> list[dict]:
    """Per-step rows of the training thread; checks the batches were uploaded by another
    thread (the loader's worker), one upload per array and batch."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32 * steps, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 32 * steps)
    with simulated_device() as sim:
        model = gpucnn.models.lenet5()
        model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        rec = _PerStep(sim)
        sim.get_default_memory_pool().free_all_blocks()  # an empty pool, as in a new process
        sim.reset_counters()
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, update_freq=update_freq,
                  callbacks=[rec])  # fmt: skip
        workers = {n: c for n, c in sim.by_thread().items() if n.startswith("gpucnn-dataloader")}
    assert rec.threads == {threading.main_thread()}, rec.threads
    assert sum(c.h2d for c in workers.values()) == 2 * steps * epochs, (
        "fit's loader did not prefetch in its worker thread", sorted(workers))
    # (the first step uploads the model's first-step state; the batches are the worker's)
    assert all(r["h2d"] == 0 for r in rec.rows[1:]), [r["h2d"] for r in rec.rows]
    return rec.rows


@pytest.mark.parametrize("update_freq", [4, 3])
def test_lenet5_fit_step_syncs_only_at_progress_refresh(update_freq: int) -> None:
    steps = 8
    rows = _fit(update_freq, steps)
    for i, r in enumerate(rows):
        step = i % steps
        refresh = (step + 1) % update_freq == 0 or step + 1 == steps
        assert r["syncs"] == (1 if refresh else 0), (i, r)
        if refresh:  # the one packed read of the running loss and metrics
            (site,) = r["sync_sites"]
            assert r["d2h"] == 1, r
        assert r["cublas"] > 0 and r["launches"] > 0  # the step really ran on the device


def test_lenet5_fit_step_allocates_nothing_in_steady_state() -> None:
    rows = _fit(4)
    assert rows[0]["allocations"] > 0  # the first step fills the pool
    # Persistent state made during the first step (optimizer moments, running-metric buffers)
    # takes a free chunk a temporary of step 1 left, so steps 2 and 3 may each need one more
    # (backward visits leaves right after their consumers, so their gradients are final early
    # for gpucnn.distributed's overlapped all-reduce, which shifts when temporaries are freed);
    # the model of CuPy's pool splits chunks but does not merge freed neighbours, as CuPy would.
    counts = [r["allocations"] for r in rows]
    assert all(c <= 1 for c in counts[1:3]), counts
    assert all(c == 0 for c in counts[3:]), counts
    # The same work every step: record it (the note and benchmarks quote these figures).
    steady = rows[2:]
    for k in ("launches", "cublas", "h2d"):
        assert len({r[k] for r in steady}) == 1, (k, [r[k] for r in steady])
    quiet = [r for r in steady if r["syncs"] == 0]  # (a refresh step adds the packing kernels)
    assert quiet and all({k: r[k] for k in STEADY} == STEADY for r in quiet), quiet
    r = quiet[0]
    print(f"LeNet-5 fit step on the simulated device: {r['launches']} kernel launches, "
          f"{r['cupy_kernels']} CuPy kernels, {r['cublas']} cuBLAS calls, {r['h2d']} uploads")


def test_class_weighted_fit_step_uploads_nothing() -> None:
    """``fit(class_weight=...)``: the class-weight table goes to the device once, so a
    weighted training step uploads nothing from the training thread either."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32 * 4, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 32 * 4)
    with simulated_device() as sim:
        model = gpucnn.models.lenet5()
        model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        rec = _PerStep(sim)
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, update_freq=4, callbacks=[rec],
                  class_weight={0: 2.0, 3: 0.5})
    assert [r["h2d"] for r in rec.rows[1:]] == [0] * 3, [r["h2d"] for r in rec.rows]
    assert all(r["syncs"] == 0 for r in rec.rows[:3]), rec.rows
