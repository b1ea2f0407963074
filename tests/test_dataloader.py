"""DataLoader: batching, seeded shuffling, the prefetch thread (errors, bounded queue, shutdown),
Tensor batches (PyTorch's convention) and raw arrays with ``tensors=False``."""

from __future__ import annotations

import gc
import threading
import time
import types

import numpy as np
import pytest

import gpucnn
from gpucnn import Tensor
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
    assert isinstance(xb, Tensor) and isinstance(yb, Tensor)
    assert not xb.requires_grad and not yb.requires_grad and xb.is_leaf
    assert xb.backend == yb.backend == backend.name
    assert type(xb.data) is type(backend.xp.zeros(1)) and type(yb.data) is type(xb.data)
    assert xb.dtype == np.float32 and yb.dtype == np.int64
    assert xb.shape == (10, 1, 2, 2) and yb.shape == (10,)
    assert np.array_equal(yb.numpy(), np.arange(30, 40))
    assert np.array_equal(xb.numpy(), x[30:40].astype(np.float32))


def test_tensors_false_yields_the_raw_arrays(backend):
    x, y = _data()
    dl = DataLoader((x, y), batch_size=10, shuffle=True, seed=2, tensors=False)
    ref = DataLoader((x, y), batch_size=10, shuffle=True, seed=2)
    array = type(backend.xp.zeros(1))
    for (xa, ya), (xt, yt) in zip(dl, ref, strict=True):
        assert type(xa) is array and type(ya) is array
        assert xa.dtype == np.float32 and ya.dtype == np.int64
        assert np.array_equal(gpucnn.backend.to_numpy(xa), xt.numpy())
        assert np.array_equal(gpucnn.backend.to_numpy(ya), yt.numpy())
    (only,), *_ = DataLoader(x, batch_size=10, tensors=False)
    assert type(only) is array and only.shape == (10, 1, 2, 2)
    with pytest.raises(TypeError, match="DataLoader: tensors must be a bool"):
        DataLoader((x, y), tensors="yes")


@pytest.mark.parametrize("prefetch", [0, 2])
def test_tensor_batches_wrap_the_batch_arrays_without_a_copy(backend, prefetch, monkeypatch):
    built = []  # the arrays the loader built, batch by batch
    real = DataLoader._batch_maker

    def spy(self, *args):
        make = real(self, *args)

        def recording(*a):
            item = make(*a)
            built.append(item[0])
            return item
        return recording

    monkeypatch.setattr(DataLoader, "_batch_maker", spy)
    x, y = _data(40)
    got = list(DataLoader((x, y), batch_size=8, prefetch=prefetch))
    assert len(got) == len(built) == 5
    for (xb, yb), (xa, ya) in zip(got, built):
        assert xb.data is xa and yb.data is ya  # the very arrays built for the batch
    (only,), = DataLoader(x[:5], batch_size=5)
    assert isinstance(only, Tensor) and only.shape == (5, 1, 2, 2)


def test_tensor_batches_cost_the_device_nothing_more():
    """On the simulated device (both passes): iterating Tensor batches does exactly the device
    work of iterating raw arrays on the caller's thread (no sync, copy or allocation more)."""
    from gpucnn.testing import simulated_device

    x, y = _data(64)
    keys = ("syncs", "allocations", "launches", "cupy_kernels", "h2d", "d2h")
    counts, every = {}, {}
    with simulated_device() as sim:
        for tensors in (False, True, False, True):  # (the second pair: a warm memory pool)
            dl = DataLoader((x, y), batch_size=8, shuffle=True, seed=1, tensors=tensors)
            mine, alls = sim.counters(thread="current").snapshot(), sim.counters().snapshot()
            batches = list(dl)
            mine2, alls2 = sim.counters(thread="current").snapshot(), sim.counters().snapshot()
            assert len(batches) == 8
            assert all(isinstance(b[0], Tensor) == tensors for b in batches)
            counts[tensors] = {k: mine2[k] - mine[k] for k in keys}
            every[tensors] = {k: alls2[k] - alls[k] for k in ("syncs", "h2d", "d2h")}
    assert counts[True] == counts[False], counts
    assert counts[True]["syncs"] == counts[True]["d2h"] == 0, counts
    assert every[True] == every[False] == {"syncs": 0, "h2d": 16, "d2h": 0}, every


def test_drop_last():
    x, y = _data()
    dl = DataLoader((x, y), batch_size=10, drop_last=True)
    assert len(dl) == 10 and len(list(dl)) == 10 and all(len(b[1]) == 10 for b in dl)


def _h(loader):
    """The loader's batches as host arrays (they are Tensors, on the device on cuda)."""
    for b in loader:
        yield tuple(a.numpy() for a in b)


def test_shuffle_covers_everything_and_is_seeded():
    x, y = _data()
    a = DataLoader((x, y), batch_size=16, shuffle=True, seed=5)
    b = DataLoader((x, y), batch_size=16, shuffle=True, seed=5)
    ea1 = np.concatenate([yb for _, yb in _h(a)])
    ea2 = np.concatenate([yb for _, yb in _h(a)])
    eb1 = np.concatenate([yb for _, yb in _h(b)])
    eb2 = np.concatenate([yb for _, yb in _h(b)])
    assert np.array_equal(np.sort(ea1), y)
    assert not np.array_equal(ea1, y) and not np.array_equal(ea1, ea2)  # new order each epoch
    assert np.array_equal(ea1, eb1) and np.array_equal(ea2, eb2)  # reproducible
    for xb, yb in _h(a):  # x and y stay paired
        assert np.array_equal(xb, x[yb].astype(np.float32))
    a.set_epoch(1)
    assert np.array_equal(np.concatenate([yb for _, yb in _h(a)]), ea2)


def test_unseeded_shuffle_follows_manual_seed():
    x, y = _data()
    gpucnn.manual_seed(11)
    e1 = np.concatenate([yb for _, yb in _h(DataLoader((x, y), 8, shuffle=True))])
    gpucnn.manual_seed(11)
    e2 = np.concatenate([yb for _, yb in _h(DataLoader((x, y), 8, shuffle=True))])
    assert np.array_equal(e1, e2) and not np.array_equal(e1, y)


def test_generic_dataset_and_tensor_dataset():
    ds = ListDataset(25)
    batches = list(_h(DataLoader(ds, batch_size=4, dtype=None)))
    assert len(batches) == 7 and batches[0][0].shape == (4, 1, 2, 2)
    assert batches[0][0].dtype == np.float64 and np.array_equal(batches[-1][1], [24])
    x, y = _data(9)
    td = TensorDataset(gpucnn.Tensor(x.astype(np.float32)), y)
    assert len(td) == 9 and td[3][1] == 3
    (xb, yb), = list(_h(DataLoader(td, batch_size=9)))
    assert np.array_equal(yb, y)
    (only,), = [b for b in _h(DataLoader(x, batch_size=20))]
    assert only.shape == (9, 1, 2, 2) and only.dtype == np.float32
    with pytest.raises(ValueError, match="array 0 has 9 samples but array 1 has 8"):
        TensorDataset(x, y[:8])


def test_dataset_attribute_as_in_pytorch():
    """``len(loader.dataset)``, the sample count of PyTorch loops' progress lines."""
    x, y = _data(9)
    ds = ListDataset(25)
    assert DataLoader(ds).dataset is ds
    td = TensorDataset(x, y)
    assert DataLoader(td).dataset is td
    dl = DataLoader((x, y), batch_size=4)
    assert isinstance(dl.dataset, TensorDataset) and len(dl.dataset) == dl.num_samples == 9
    assert dl.dataset.arrays[0] is x and dl.dataset[3][1] == 3
    assert len(DataLoader(x).dataset) == 9


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
        runs.append([xb for xb, _ in _h(dl)])
    for other in runs[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(runs[0], other))
    assert not np.array_equal(runs[0][0], x[:8])
    gpucnn.manual_seed(2)
    u1 = [xb for xb, _ in _h(DataLoader((x, y), 8, transform=aug))]
    gpucnn.manual_seed(2)
    u2 = [xb for xb, _ in _h(DataLoader((x, y), 8, transform=aug))]
    assert all(np.array_equal(a, b) for a, b in zip(u1, u2))


def test_plain_callable_transform():
    x, y = _data()
    (xb, _), *_ = _h(DataLoader((x, y), 10, transform=lambda b: b * 2))
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
    from gpucnn.backend.device import cupy_module

    cupy = cupy_module()

    x = np.random.default_rng(0).random((70, 3, 8, 8)).astype(np.float32)
    y = np.arange(70)
    aug = T.Compose([T.RandomCrop(8, padding=1), T.RandomHorizontalFlip()])
    for prefetch in (0, 2):
        got = list(DataLoader((x, y), 16, shuffle=True, seed=1, backend="cuda",
                              prefetch=prefetch, tensors=False))
        ref = list(DataLoader((x, y), 16, shuffle=True, seed=1, backend="numpy",
                              tensors=False))
        for (gx, gy), (rx, ry) in zip(got, ref):
            assert isinstance(gx, cupy.ndarray)
            assert np.array_equal(gx.get(), rx) and np.array_equal(gy.get(), ry)
        wrapped = list(DataLoader((x, y), 16, shuffle=True, seed=1, backend="cuda",
                                  prefetch=prefetch))
        for (tx, ty), (rx, ry) in zip(wrapped, ref, strict=True):
            assert tx.backend == "cuda" and isinstance(tx.data, cupy.ndarray)
            assert np.array_equal(tx.numpy(), rx) and np.array_equal(ty.numpy(), ry)
        aug_batches = list(DataLoader((x, y), 16, seed=1, backend="cuda", transform=aug,
                                      prefetch=prefetch))
        assert all(isinstance(b[0].data, cupy.ndarray) and b[0].shape == (16, 3, 8, 8)
                   for b in aug_batches[:-1])


# ---------------------------------------------------------------- CUDA path on a fake CuPy
class _FakeCuda:
    """A CuPy stand-in for the loader's CUDA path, with lazy copies: ``ndarray.set`` only
    queues the copy on its stream, and the copy reads the pinned host buffer when it runs (at
    a host wait on an event or stream after it, or when the array is read). A staging buffer
    overwritten before its copy ran therefore shows up as wrong batch contents. ``done`` is
    False for an event with copies still queued, as for a copy still in flight."""

    def __init__(self):
        fake = self
        self.lock = threading.RLock()
        self.streams_created = 0
        self.stream_syncs = 0
        self.event_syncs = 0
        self.devices_used: list = []
        self.log: list = []  # ("consumer_record" | "consumer_wait" | "side_wait", event)

        class Event:
            def __init__(self, block=False, disable_timing=False, interprocess=False):
                self.stream, self.mark = None, 0

            def record(self, stream=None):
                stream = stream if stream is not None else fake.consumer
                with fake.lock:
                    self.stream, self.mark = stream, len(stream.ops)
                if stream is fake.consumer:
                    fake.log.append(("consumer_record", self))

            @property
            def done(self):
                with fake.lock:
                    return self.stream is None or all(d[0] for d in self.stream.ops[:self.mark])

            def synchronize(self):
                fake.event_syncs += 1
                if self.stream is not None:
                    self.stream.run(self.mark)

        class Stream:
            def __init__(self, null=False, non_blocking=False, counted=True):
                self.ops: list = []
                self.prev: list = []
                if counted:
                    fake.streams_created += 1

            def run(self, upto):
                with fake.lock:
                    for op in self.ops[:upto]:
                        if not op[0]:
                            op[1]()
                            op[0] = True

            def synchronize(self):
                fake.stream_syncs += 1
                self.run(len(self.ops))

            def record(self, event=None):
                event = event or Event()
                event.record(self)
                return event

            def wait_event(self, event):
                fake.log.append(("consumer_wait" if self is fake.consumer else "side_wait",
                                 event))

            def __enter__(self):
                self.prev.append(fake.tls.__dict__.get("stream"))
                fake.tls.stream = self
                return self

            def __exit__(self, *exc):
                fake.tls.stream = self.prev.pop()

        class Device:
            def __init__(self, device=None):
                self.id = 0 if device is None else device

            def use(self):
                fake.devices_used.append(self.id)

        class ndarray:  # noqa: N801 - CuPy's name
            __gpucnn_device_array__ = True

            def __init__(self, data):
                self._data, self._pending = data, None

            shape = property(lambda self: self._data.shape)
            dtype = property(lambda self: self._data.dtype)

            def __len__(self):
                return len(self._data)

            def set(self, arr, stream=None):
                stream = stream if stream is not None else fake.current_stream()

                def copy(dst=self._data, src=arr):
                    dst[...] = src

                with fake.lock:
                    stream.ops.append([False, copy])
                    self._pending = (stream, len(stream.ops))

            def get(self):
                if self._pending is not None:
                    self._pending[0].run(self._pending[1])
                return self._data.copy()

            def astype(self, dtype):
                return ndarray(self.get().astype(dtype))

        self.tls = threading.local()
        self.consumer = Stream(counted=False)
        self.cuda = types.SimpleNamespace(
            Stream=Stream, Event=Event, Device=Device,
            get_current_stream=lambda: fake.current_stream(),
        )
        self.ndarray = ndarray

    def current_stream(self):
        return self.tls.__dict__.get("stream") or self.consumer

    def empty(self, shape, dtype=np.float32):
        return self.ndarray(np.full(shape, 77, dtype=dtype))  # garbage until the copy runs


@pytest.fixture
def fake_cuda(monkeypatch):
    import gpucnn.data.loader as loader_mod

    fake = _FakeCuda()
    fake_be = types.SimpleNamespace(name="cuda", xp=fake)
    real = loader_mod._resolve_backend
    monkeypatch.setattr(loader_mod, "_resolve_backend",
                        lambda name: fake_be if name == "cuda" else real(name))
    monkeypatch.setattr("gpucnn.backend.device.cupy_module", lambda: fake)
    monkeypatch.setattr(loader_mod, "empty_pinned",
                        lambda shape, dtype: np.empty(shape, dtype=dtype))
    return fake


@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_cuda_path_one_stream_no_syncs_ring_of_staging_buffers(fake_cuda, prefetch):
    n, bs, epochs = 96, 8, 3
    x = np.random.default_rng(0).random((n, 3, 4, 4)).astype(np.float32)
    y = np.arange(n, dtype=np.int64)
    dl = DataLoader((x, y), bs, shuffle=True, seed=4, backend="cuda", prefetch=prefetch,
                    tensors=False)
    ref = DataLoader((x, y), bs, shuffle=True, seed=4, backend="numpy", tensors=False)
    got = []
    for _ in range(epochs):
        got.append(list(dl))  # nothing read yet: every copy stays queued until forced
    assert fake_cuda.streams_created == 1  # one side stream, reused by every epoch
    assert fake_cuda.stream_syncs == 0  # no per-upload (or per-epoch) stream synchronisation
    assert set(fake_cuda.devices_used) == {0}
    uploads = epochs * len(dl)  # per ring: x and y batches each have one shape
    depth = prefetch + 2
    # Event waits happen only when a ring wraps onto a copy still queued (here: all of them).
    assert fake_cuda.event_syncs == 2 * max(0, uploads - depth)
    for epoch in range(epochs):
        for (gx, gy), (rx, ry) in zip(got[epoch], ref, strict=True):
            assert isinstance(gx, fake_cuda.ndarray) and gx.dtype == np.float32
            assert np.array_equal(gx.get(), rx) and np.array_equal(gy.get(), ry)
    # The event protocol: the caller's stream waits on every batch; the side stream waits on
    # the caller's latest event before each batch, and each epoch's first batch waits on an
    # event recorded after the previous epoch's batches were all handed out.
    kinds = [k for k, _ in fake_cuda.log]
    assert kinds.count("consumer_wait") == uploads and kinds.count("side_wait") == uploads
    records = {id(ev): i for i, (k, ev) in enumerate(fake_cuda.log) if k == "consumer_record"}
    side = [(i, ev) for i, (k, ev) in enumerate(fake_cuda.log) if k == "side_wait"]
    waits = [i for i, (k, _) in enumerate(fake_cuda.log) if k == "consumer_wait"]
    for epoch in range(1, epochs):
        _, first = side[epoch * len(dl)]
        assert records[id(first)] > waits[epoch * len(dl) - 1]
    for i, ev in side:
        assert records[id(ev)] < i  # always a caller event, recorded before the wait


def test_cuda_path_reads_as_it_goes_never_waits(fake_cuda):
    # A caller that uses each batch at once (the copies complete): the worker never blocks.
    x, y = _data(64)
    dl = DataLoader((x, y), 8, backend="cuda", prefetch=2, tensors=False)
    for _ in range(3):
        for xb, yb in dl:
            assert np.array_equal(xb.get(), x[yb.get()].astype(np.float32))
    dl.tensors = True  # the Tensors wrap the very device arrays (no copy, no wait)
    for xb, yb in dl:
        assert isinstance(xb, Tensor) and isinstance(xb.data, fake_cuda.ndarray)
        assert np.array_equal(xb.data.get(), x[yb.data.get()].astype(np.float32))
    assert fake_cuda.streams_created == 1
    assert fake_cuda.stream_syncs == 0 and fake_cuda.event_syncs == 0
    other = DataLoader((x, y), 8, backend="cuda", prefetch=2)
    list(other)
    list(other)
    assert fake_cuda.streams_created == 2  # one per loader


def test_cuda_path_prefetch_bounds_the_worker(fake_cuda):
    ds = ListDataset(1000)
    it = iter(DataLoader(ds, batch_size=10, prefetch=2, backend="cuda"))
    next(it)
    time.sleep(0.3)
    # 1 consumed + 2 queued + 1 built while the queue is full
    assert ds.calls <= 4 * 10
    it.close()
    assert fake_cuda.stream_syncs == 0


def test_cuda_path_rings_survive_until_the_loader_goes(fake_cuda):
    x, y = _data(40)
    dl = DataLoader((x, y), 8, backend="cuda", prefetch=1)
    it = iter(dl)
    next(it)
    del it  # abandoned mid-epoch: the thread stops, copies may still be queued
    assert _wait_no_threads() and fake_cuda.stream_syncs == 0
    state = dl._cuda_states[0]
    assert state.rings and state.stream is not None
    del dl, state
    gc.collect()
    assert fake_cuda.stream_syncs == 1  # the finalizer drained the stream before freeing rings


def test_cuda_path_rings_for_varying_shapes_are_bounded(fake_cuda):
    import gpucnn.data.loader as loader_mod

    class Shapes:  # every sample a different shape: one staging ring each
        def __len__(self):
            return 40

        def __getitem__(self, i):
            return np.full((1, i + 1), i, np.float32)

    dl = DataLoader(Shapes(), batch_size=1, backend="cuda", prefetch=2, tensors=False)
    for (xb,) in dl:  # read at once: the copies are done, so old rings can go
        assert xb.get().shape == (1, 1, xb.shape[-1])
    assert len(dl._cuda_states[0].rings) <= loader_mod._MAX_RINGS
    assert fake_cuda.stream_syncs == 0 and fake_cuda.event_syncs == 0
