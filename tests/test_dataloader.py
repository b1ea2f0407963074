"""DataLoader: batching, seeded shuffling, the prefetch thread (errors, bounded queue, shutdown)."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest

import gpucnn
from gpucnn import transforms as T
from gpucnn.data import DataLoader, TensorDataset


def _loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gpucnn-dataloader" and t.is_alive()]


def _wait_no_threads(timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        gc.collect()
        if not _loader_threads():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(autouse=True)
def _no_leaks():
    yield
    assert _wait_no_threads(), "a DataLoader worker thread outlived its iterator"


def _data(n=103):
    x = np.arange(n * 4, dtype=np.uint8).reshape(n, 1, 2, 2) % 251
    y = np.arange(n, dtype=np.int64)
    return x, y


class ListDataset:
    def __init__(self, n, fail_at=None):
        self.n, self.fail_at, self.calls = n, fail_at, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.calls += 1
        if i == self.fail_at:
            raise KeyError(f"sample {i} is broken")
        return np.full((1, 2, 2), i, np.float64), i


def test_batches_in_order(backend):
    x, y = _data()
    dl = DataLoader((x, y), batch_size=10)
    assert len(dl) == 11
    batches = list(dl)
    assert [len(b[1]) for b in batches] == [10] * 10 + [3]
    xb, yb = batches[3]
    assert type(xb) is type(backend.xp.zeros(1))
    assert xb.dtype == np.float32 and yb.dtype == np.int64
    assert np.array_equal(gpucnn.backend.to_numpy(yb), np.arange(30, 40))
    assert np.array_equal(gpucnn.backend.to_numpy(xb), x[30:40].astype(np.float32))


def test_drop_last():
    x, y = _data()
    dl = DataLoader((x, y), batch_size=10, drop_last=True)
    assert len(dl) == 10 and len(list(dl)) == 10 and all(len(b[1]) == 10 for b in dl)


def test_shuffle_covers_everything_and_is_seeded():
    x, y = _data()
    a = DataLoader((x, y), batch_size=16, shuffle=True, seed=5)
    b = DataLoader((x, y), batch_size=16, shuffle=True, seed=5)
    ea1 = np.concatenate([yb for _, yb in a])
    ea2 = np.concatenate([yb for _, yb in a])
    eb1 = np.concatenate([yb for _, yb in b])
    eb2 = np.concatenate([yb for _, yb in b])
    assert np.array_equal(np.sort(ea1), y)
    assert not np.array_equal(ea1, y) and not np.array_equal(ea1, ea2)  # new order each epoch
    assert np.array_equal(ea1, eb1) and np.array_equal(ea2, eb2)  # reproducible
    for xb, yb in a:  # x and y stay paired
        assert np.array_equal(xb, x[yb].astype(np.float32))
    a.set_epoch(1)
    assert np.array_equal(np.concatenate([yb for _, yb in a]), ea2)


def test_unseeded_shuffle_follows_manual_seed():
    x, y = _data()
    gpucnn.manual_seed(11)
    e1 = np.concatenate([yb for _, yb in DataLoader((x, y), 8, shuffle=True)])
    gpucnn.manual_seed(11)
    e2 = np.concatenate([yb for _, yb in DataLoader((x, y), 8, shuffle=True)])
    assert np.array_equal(e1, e2) and not np.array_equal(e1, y)


def test_generic_dataset_and_tensor_dataset():
    ds = ListDataset(25)
    batches = list(DataLoader(ds, batch_size=4, dtype=None))
    assert len(batches) == 7 and batches[0][0].shape == (4, 1, 2, 2)
    assert batches[0][0].dtype == np.float64 and np.array_equal(batches[-1][1], [24])
    x, y = _data(9)
    td = TensorDataset(gpucnn.Tensor(x.astype(np.float32)), y)
    assert len(td) == 9 and td[3][1] == 3
    (xb, yb), = list(DataLoader(td, batch_size=9))
    assert np.array_equal(yb, y)
    (only,), = [b for b in DataLoader(x, batch_size=20)]
    assert only.shape == (9, 1, 2, 2) and only.dtype == np.float32
    with pytest.raises(ValueError, match="array 0 has 9 samples but array 1 has 8"):
        TensorDataset(x, y[:8])


@pytest.mark.parametrize("prefetch", [0, 3])
def test_worker_exception_reraised(prefetch):
    dl = DataLoader(ListDataset(40, fail_at=21), batch_size=5, prefetch=prefetch)
    it = iter(dl)
    got = [next(it) for _ in range(4)]  # samples 0..19
    assert len(got) == 4
    with pytest.raises(KeyError, match="sample 21 is broken"):
        next(it)


def test_transform_exception_reraised():
    def bad(x):
        raise RuntimeError("transform exploded")

    x, y = _data()
    with pytest.raises(RuntimeError, match="transform exploded"):
        list(DataLoader((x, y), 10, transform=bad))


def test_abandoned_iterators_leave_no_threads():
    x, y = _data(1000)
    dl = DataLoader((x, y), batch_size=2, prefetch=4)
    for _ in dl:
        break
    it = iter(dl)
    next(it)
    assert _loader_threads()
    del it
    assert _wait_no_threads()
    it = iter(dl)
    next(it)
    it.close()
    assert not any(t.is_alive() for t in _loader_threads())


def test_queue_is_bounded():
    ds = ListDataset(1000)
    it = iter(DataLoader(ds, batch_size=10, prefetch=2))
    next(it)
    time.sleep(0.3)
    # 1 consumed + 2 queued + 1 being put while the queue is full
    assert ds.calls <= 4 * 10
    it.close()


def test_augmentation_deterministic_and_thread_independent():
    x = np.random.default_rng(0).random((50, 3, 8, 8)).astype(np.float32)
    y = np.arange(50)
    aug = T.Compose([T.RandomCrop(8, padding=2), T.RandomHorizontalFlip(), T.RandomRotation(20),
                     T.GaussianNoise(0.05)])
    runs = []
    for prefetch in (0, 1, 4):
        dl = DataLoader((x, y), 8, shuffle=True, seed=3, transform=aug, prefetch=prefetch)
        runs.append([xb for xb, _ in dl])
    for other in runs[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(runs[0], other))
    assert not np.array_equal(runs[0][0], x[:8])
    gpucnn.manual_seed(2)
    u1 = [xb for xb, _ in DataLoader((x, y), 8, transform=aug)]
    gpucnn.manual_seed(2)
    u2 = [xb for xb, _ in DataLoader((x, y), 8, transform=aug)]
    assert all(np.array_equal(a, b) for a, b in zip(u1, u2))


def test_plain_callable_transform():
    x, y = _data()
    (xb, _), *_ = DataLoader((x, y), 10, transform=lambda b: b * 2)
    assert np.array_equal(xb, x[:10].astype(np.float32) * 2)


def test_bad_arguments():
    with pytest.raises(TypeError, match="DataLoader: data must be"):
        DataLoader(42)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DataLoader(_data(), batch_size=0)
    with pytest.raises(ValueError, match="backend"):
        DataLoader(_data(), backend="tpu")


@pytest.mark.gpu
def test_cuda_backend_matches_numpy():
    import cupy

    x = np.random.default_rng(0).random((70, 3, 8, 8)).astype(np.float32)
    y = np.arange(70)
    aug = T.Compose([T.RandomCrop(8, padding=1), T.RandomHorizontalFlip()])
    for prefetch in (0, 2):
        got = list(DataLoader((x, y), 16, shuffle=True, seed=1, backend="cuda",
                              prefetch=prefetch))
        ref = list(DataLoader((x, y), 16, shuffle=True, seed=1, backend="numpy"))
        for (gx, gy), (rx, ry) in zip(got, ref):
            assert isinstance(gx, cupy.ndarray)
            assert np.array_equal(gx.get(), rx) and np.array_equal(gy.get(), ry)
        aug_batches = list(DataLoader((x, y), 16, seed=1, backend="cuda", transform=aug,
                                      prefetch=prefetch))
        assert all(isinstance(b[0], cupy.ndarray) and b[0].shape == (16, 3, 8, 8)
                   for b in aug_batches[:-1])
