"""The simulated CUDA device (gpucnn.testing.simcuda): CuPy's strictness, counters, capture,
kernels through the emulator, and its API surface against the installed CuPy 14."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpucnn.testing import simcuda as cp
from gpucnn.testing.simcuda import _surface

_KSRC = r"""
extern "C" __global__ void axpy_f32(const float* x, float* y, float a, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x)
        y[i] = a * x[i] + y[i];
}
"""


@pytest.fixture
def axpy() -> cp.RawKernel:
    return cp.RawModule(code=_KSRC, options=("--std=c++14",)).get_function("axpy_f32")


def _dev(a) -> cp.ndarray:
    return cp.asarray(np.asarray(a, dtype=np.float32))


# ------------------------------------------------------------------------- strictness


def test_implicit_conversion_to_numpy_raises() -> None:
    a = _dev([1, 2, 3])
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError):
        np.testing.assert_allclose(a, [1, 2, 3])


@pytest.mark.parametrize(
    "op",
    [
        lambda a, h: a + h,
        lambda a, h: h + a,
        lambda a, h: a * h,
        lambda a, h: cp.maximum(a, h),
        lambda a, h: cp.concatenate([a, h]),
        lambda a, h: np.add(h, a),
        lambda a, h: a.__setitem__(slice(None), h),
        lambda a, h: cp.ascontiguousarray(h),
    ],
)
def test_numpy_array_inside_a_device_op_raises(op) -> None:
    with pytest.raises(TypeError):
        op(_dev([1, 2, 3]), np.ones(3, np.float32))


def test_scalars_mix_and_reductions_are_0d_device_arrays() -> None:
    a = _dev([[1, 2], [3, 4]])
    for r in (a.sum(), a.max(), cp.mean(a), a[0, 1], (a * np.float32(2)).min(), a.argmax()):
        assert isinstance(r, cp.ndarray) and r.shape == ()
    assert float(a.sum()) == 10.0 and (a + 1).dtype == np.float32
    assert np.exp(a).__class__ is cp.ndarray  # NumPy ufuncs dispatch to the device
    assert cp.get_array_module(a) is cp and cp.get_array_module(np.ones(1)) is np


def test_host_reads_are_counted_syncs_with_call_site() -> None:
    a = _dev([1.0, 2.0])
    with cp.counting() as c:
        float(a[0])
        bool(a[1] > 0)
        a.get()
        _ = a + 1  # no sync
    assert c.syncs == 3 and c.d2h == 3
    sites = c.sites["syncs"]
    assert all("test_simcuda.py" in s for s in sites), sites


def test_boolean_mask_and_nonzero_synchronise() -> None:
    a = _dev([1.0, -1.0, 2.0])
    with cp.counting() as c:
        b = a[a > 0]
        cp.nonzero(a)
    assert c.syncs == 2 and b.shape == (2,)


def test_uploads_downloads_and_pool_reuse() -> None:
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    with cp.counting() as c:
        x = cp.asarray(np.zeros(1000, np.float32))  # h2d + allocation
        del x
        y = cp.empty(1000, cp.float32)  # the freed block is reused
        z = y.reshape(10, 100)  # a view: no allocation
        host = z.get()
    assert (c.h2d, c.d2h, c.allocations, c.pool_reuses) == (1, 1, 1, 1)
    assert host.shape == (10, 100)


def test_empty_is_uninitialised() -> None:
    assert np.isnan(cp.empty(4, cp.float32).get()).all()


def test_unknown_keyword_refused_as_cupy_would() -> None:
    a = _dev([1.0, 2.0])
    with pytest.raises(TypeError, match="unexpected keyword argument 'where'"):
        cp.sum(a, where=a > 0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        a.sum(initial=0.0)


# ------------------------------------------------------------------------- kernels


def test_kernel_runs_through_the_emulator(axpy) -> None:
    x, y = _dev(np.arange(10)), _dev(np.ones(10))
    with cp.counting() as c:
        axpy((2,), (4,), (x, y, np.float32(2), np.int64(10)))
    np.testing.assert_array_equal(y.get(), 2 * np.arange(10) + 1)
    assert c.launches == 1 and c.kernels["axpy_f32"] == 1


def test_kernel_arguments_are_checked(axpy) -> None:
    x, y = _dev(np.arange(4)), _dev(np.ones(4))
    with pytest.raises(TypeError, match="Python int"):
        axpy((1,), (4,), (x, y, np.float32(2), 4))
    with pytest.raises(TypeError):
        axpy((1,), (4,), (x, y, np.float64(2), np.int64(4)))  # double for a float parameter
    with pytest.raises(TypeError, match="NumPy array"):
        axpy((1,), (4,), (np.arange(4, dtype=np.float32), y, np.float32(2), np.int64(4)))
    with pytest.raises(TypeError):
        axpy((1,), (4,), (x.astype(cp.float64), y, np.float32(2), np.int64(4)))
    with pytest.raises(ValueError, match="C-contiguous"):
        big = _dev(np.ones((4, 4)))
        axpy((1,), (4,), (big[:, 0], y, np.float32(2), np.int64(4)))


def test_compile_error_is_a_compile_exception() -> None:
    mod = cp.RawModule(code='extern "C" __global__ void k(float* y) { y[0] = oops; }\n')
    with pytest.raises(cp.cuda.compiler.CompileException, match="oops"):
        mod.get_function("k")


# ------------------------------------------------------------------------- stream capture


def test_capture_refuses_what_cuda_and_cupy_refuse() -> None:
    a = _dev(np.ones((4, 4)))
    s = cp.cuda.Stream(non_blocking=True)
    refused = [
        lambda: a @ a,  # cuBLAS through CuPy (cupy/cupy#6290)
        lambda: cp.matmul(a, a),
        lambda: s.synchronize(),
        lambda: cp.cuda.runtime.deviceSynchronize(),
        lambda: a.get(),
        lambda: float(a[0, 0]),
        lambda: cp.asarray(np.ones(3)),  # pageable host->device copy
        lambda: cp.empty(12345, cp.float32),  # nothing of that size in the pool
    ]
    for fn in refused:
        s.begin_capture()
        try:
            with pytest.raises(cp.StreamCaptureError):
                fn()
        finally:
            s.end_capture()


def test_capture_records_and_replays(axpy) -> None:
    x = _dev(np.arange(8))
    y = _dev(np.zeros(8))
    static_in = _dev(np.zeros(8))
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        tmp = cp.empty(8, cp.float32)
        del tmp  # a freed block of the right size in s's arena: the pool serves the capture
        s.begin_capture()
        z = static_in * 2  # a new array from the pool, recorded
        axpy((1,), (8,), (z, y, np.float32(1), np.int64(8)))  # y += z
        y += x  # in place: recorded, not run
        graph = s.end_capture()
    assert len(graph) == 3
    np.testing.assert_array_equal(y.get(), 0)  # nothing ran during capture
    host = np.full(8, 3, np.float32)
    static_in.set(host)
    graph.launch(s)
    np.testing.assert_array_equal(y.get(), 6 + np.arange(8))
    graph.launch(s)
    np.testing.assert_array_equal(y.get(), 2 * (6 + np.arange(8)))


# ------------------------------------------------------------------------- backend wiring


def test_backend_uses_the_simulated_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpucnn.backend import device

    monkeypatch.setenv("GPUCNN_SIMULATE_CUDA", "1")
    assert device.cupy_module() is cp and device.cupyx_module() is cp.cupyx
    assert device.is_device_array(cp.zeros(1)) and not device.is_device_array(np.zeros(1))
    assert device.array_module(cp.zeros(1)) is cp


def test_info_says_the_device_is_simulated() -> None:
    env = dict(os.environ, GPUCNN_SIMULATE_CUDA="1", GPUCNN_BACKEND="cuda")
    out = subprocess.run(
        [sys.executable, "-m", "gpucnn", "info"], capture_output=True, text=True, env=env,
        timeout=300, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "SIMULATED" in out.stdout and "simulated device" in out.stdout


# ------------------------------------------------------------------------- API surface


def _real_cupy():
    try:
        import cupy
        import cupyx
    except Exception as exc:  # not installed, or broken
        if os.environ.get("GPUCNN_REQUIRE_NVRTC") == "1":
            pytest.fail(f"CuPy must be importable for the API check in CI: {exc}")
        pytest.skip(f"CuPy is not importable here ({exc})")
    return cupy, cupyx


def test_surface_exists_in_cupy_with_compatible_keywords() -> None:
    """Every name of the stand-in exists in the installed CuPy, with the recorded parameters."""
    cupy, cupyx = _real_cupy()
    live = _surface.collect(cupy, cupyx)
    missing = {s: [n for n, v in d.items() if v is False] for s, d in live.items()}
    missing = {s: v for s, v in missing.items() if v}
    assert not missing, f"the stand-in provides names CuPy {cupy.__version__} lacks: {missing}"
    recorded = json.loads(_surface.API_FILE.read_text())
    recorded.pop("_cupy_version", None)
    assert live == recorded, (
        "cupy14_api.json is stale for the installed CuPy: run "
        "python -m gpucnn.testing.simcuda._surface --write"
    )


@pytest.mark.parametrize(
    "name", ["asarray", "array", "asnumpy", "ascontiguousarray", "copyto", "where"]
)
def test_explicit_signatures_are_cupys(name: str) -> None:
    cupy, _ = _real_cupy()
    ours = _surface.parameters(getattr(cp, name))
    theirs = _surface.parameters(getattr(cupy, name))
    assert ours is not None and theirs is not None
    assert set(ours) <= set(theirs), f"cupy.{name}: ours {ours}, CuPy's {theirs}"


@pytest.mark.parametrize(
    "section,obj",
    [
        ("ndarray", cp.ndarray), ("cuda.Stream", cp.cuda.Stream), ("cuda.Event", cp.cuda.Event),
        ("random.Generator", cp.Generator), ("cuda.Device", cp.cuda.Device),
    ],
)  # fmt: skip
def test_method_keywords_are_cupys(section: str, obj: type) -> None:
    """Explicitly written methods take no keyword the CuPy method lacks."""
    cupy, _ = _real_cupy()
    real = _surface._lookup(cupy, section)
    for name, fn in vars(obj).items():
        if name.startswith("_") or not callable(fn) or not hasattr(real, name):
            continue
        ours, theirs = _surface.parameters(fn), _surface.parameters(getattr(real, name))
        if ours is None or theirs is None:
            continue
        assert set(ours) <= set(theirs), f"{section}.{name}: ours {ours}, CuPy's {theirs}"


def test_simulated_modules_can_go_through_the_real_nvrtc_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With GPUCNN_SIMULATE_NVRTC=1 a source g++ accepts but NVRTC rejects fails as on a GPU."""
    from gpucnn.testing.nvrtc import NvrtcUnavailable, nvrtc_version

    try:
        nvrtc_version()
    except NvrtcUnavailable as exc:
        if os.environ.get("GPUCNN_REQUIRE_NVRTC") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    src = 'extern "C" __global__ void k(float* y) { y[0] = __builtin_inff(); }\n'
    cp.RawModule(code=src).get_function("k")  # the host compiler alone accepts it
    monkeypatch.setenv("GPUCNN_SIMULATE_NVRTC", "1")
    with pytest.raises(cp.cuda.compiler.CompileException, match="__builtin_inff"):
        cp.RawModule(code=src).get_function("k")
    cp.RawModule(code=_KSRC).get_function("axpy_f32")  # a clean source still compiles


def test_launch_sites_are_recorded(axpy) -> None:
    x, y = _dev(np.arange(4)), _dev(np.ones(4))
    with cp.counting() as c:
        axpy((1,), (4,), (x, y, np.float32(1), np.int64(4)))
        _ = x + y
    (site,) = c.sites["launches"]
    assert "test_simcuda.py" in site and "test_simcuda.py" in next(iter(c.sites["cupy_kernels"]))


def test_main_job_smoke_trains_on_the_simulated_device(tmp_path: Path) -> None:
    """The README's command: GPUCNN_SIMULATE_CUDA=1 GPUCNN_BACKEND=cuda train_mnist.py --smoke."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, GPUCNN_SIMULATE_CUDA="1", GPUCNN_BACKEND="cuda")
    out = subprocess.run(
        [sys.executable, str(root / "examples" / "train_mnist.py"), "--smoke", "--out",
         str(tmp_path), "--verbose", "2"],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "backend: cuda" in out.stdout and "training time" in out.stdout
    assert (tmp_path / "lenet5.npz").is_file()


# ------------------------------------------------------------------------- threads and streams


def _in_thread(fn, name: str = "simcuda-test-worker"):  # noqa: ANN001, ANN202
    """Run ``fn()`` in a new thread; its result, or its exception re-raised here."""
    import threading

    out: dict = {}

    def body() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            out["exc"] = exc

    t = threading.Thread(target=body, name=name)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive()
    if "exc" in out:
        raise out["exc"]
    return out.get("value")


def test_pool_keeps_an_arena_per_stream() -> None:
    """As CuPy's pool: a block freed on a side stream is reused by that stream only, and goes
    back to its stream's arena whoever frees it; free_all_blocks(stream) empties one arena."""
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    side = cp.cuda.Stream(non_blocking=True)
    with cp.counting() as c:
        with side:
            a = cp.empty(1000, cp.float32)  # 4000 -> 4096 bytes, side stream's arena
        del a  # freed outside ``with side``: back to the side stream's arena all the same
        assert pool._arena_blocks(side) == {4096: 1} and pool._arena_blocks() == {}
        b = cp.empty(1000, cp.float32)  # the null stream finds nothing of its own
        assert (c.allocations, c.pool_reuses) == (2, 0)
        with side:
            d = cp.empty(1000, cp.float32)  # the side stream gets its block back
        assert (c.allocations, c.pool_reuses) == (2, 1)
        assert pool._arena_blocks(side) == {}
        with side:
            e = cp.empty(256, cp.float32)  # 1024 bytes: nothing free on the side stream
        del e
        with side:
            cp.empty(100, cp.float32)  # 512 bytes: a split of the 1024-byte block, dropped
        assert (c.allocations, c.pool_reuses) == (3, 2)
        assert pool._arena_blocks(side) == {512: 2}  # (split halves are not merged back)
    del b, d
    assert pool._arena_blocks() == {4096: 1} and pool._arena_blocks(side) == {4096: 1, 512: 2}
    pool.free_all_blocks(stream=side)
    assert pool._arena_blocks(side) == {} and pool._arena_blocks() == {4096: 1}
    pool._check()
    pool.free_all_blocks()
    assert pool.n_free_blocks() == 0 and pool.free_bytes() == 0


def test_current_stream_and_device_are_per_thread() -> None:
    s1, s2 = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)

    def other() -> tuple:
        seen = [cp.cuda.get_current_stream()]
        with s2:
            seen.append(cp.cuda.get_current_stream())
            with cp.cuda.Device(0):
                seen.append(cp.cuda.runtime.getDevice())
        seen.append(cp.cuda.get_current_stream())
        s2.use()
        seen.append(cp.cuda.get_current_stream())
        return tuple(seen)

    with s1:
        assert cp.cuda.get_current_stream() is s1
        seen = _in_thread(other)
        assert cp.cuda.get_current_stream() is s1  # the other thread's streams are its own
    assert seen == (cp.cuda.Stream.null, s2, 0, cp.cuda.Stream.null, s2)
    assert cp.cuda.get_current_stream() is cp.cuda.Stream.null
    cp.cuda.Device(0).use()
    assert cp.cuda.runtime.getDevice() == 0


def test_counters_attribute_events_to_their_thread_and_stream() -> None:
    import threading

    side = cp.cuda.Stream(non_blocking=True)
    host = np.ones(64, np.float32)

    def worker() -> None:
        with side:
            for _ in range(3):
                out = cp.empty(64, cp.float32)
                out.set(host, stream=side)
            float(out.sum())  # one kernel, one sync, one read, on the side stream

    with cp.counting() as total:
        mine = cp.counters(thread="current")
        on_side = cp.counters(stream=side)
        a = _dev(np.arange(4))  # one upload on the null stream
        _in_thread(worker, name="uploader")
        _ = a + 1  # one kernel
        assert (mine.h2d, mine.syncs, mine.cupy_kernels) == (1, 0, 1)
        assert (on_side.h2d, on_side.syncs, on_side.cupy_kernels, on_side.d2h) == (3, 1, 1, 1)
        assert (total.h2d, total.syncs, total.cupy_kernels) == (4, 1, 2)
        per = cp.by_thread()
        assert set(per) == {threading.current_thread().name, "uploader"}
        assert per["uploader"].h2d == 3 and per["uploader"].allocations >= 1
        assert cp.counters(thread="main") is mine
        assert cp.counters(thread="current", stream=side).h2d == 0
        assert cp.counters(stream="current") is cp.counters(stream=cp.cuda.Stream.null)
        assert all("test_simcuda.py" in s for s in per["uploader"].sites["h2d"])
    with cp.counting(thread="current") as c:
        _in_thread(worker)
        _ = a * 2
    assert (c.h2d, c.syncs, c.cupy_kernels) == (0, 0, 1)  # the worker's are not in it
    with pytest.raises(TypeError, match="thread="):
        cp.counters(thread="mine")


class _YieldingArena(collections.Counter):
    """An arena that lets the other thread run in the middle of every read and write of a
    free count (the interpreter would switch there only rarely): a pool whose updates were
    not under its lock would lose or double-serve blocks."""

    def __getitem__(self, k):  # noqa: ANN001, ANN204
        time.sleep(0)
        return super().__getitem__(k)

    def __setitem__(self, k, v) -> None:  # noqa: ANN001
        time.sleep(0)
        super().__setitem__(k, v)


def test_concurrent_allocation_from_two_threads_keeps_the_pool_consistent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two threads allocate and free a few hundred blocks each, on their own stream and on the
    null one, and free some of each other's: no block is lost or served twice."""
    import queue
    import threading

    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    monkeypatch.setattr(pool, "_arena_type", _YieldingArena)
    used0 = pool.used_bytes()
    handoff: queue.Queue = queue.Queue()
    barrier = threading.Barrier(2)
    n_iter = 400

    def work(seed: int) -> int:
        rng = np.random.default_rng(seed)
        own = cp.cuda.Stream(non_blocking=True)
        live: list = []
        made = 0
        barrier.wait()
        for i in range(n_iter):
            n = int(rng.integers(1, 3000))
            if i % 3 == 0:
                with own:
                    live.append(cp.empty(n, cp.float32))
            else:
                live.append(cp.empty(n, cp.float32))
            made += 1
            if i % 7 == 0:
                handoff.put(live.pop())  # freed by whichever thread drops it last
            if len(live) > 20:
                del live[int(rng.integers(0, len(live)))]
            try:
                handoff.get_nowait()
            except queue.Empty:
                pass
        live.clear()
        return made

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as often as the interpreter can
    try:
        with cp.counting() as c:
            results: list = []
            threads = [threading.Thread(target=lambda s=s: results.append(work(s)))
                       for s in (1, 2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            while not handoff.empty():
                handoff.get_nowait()
    finally:
        sys.setswitchinterval(switch)
    assert sorted(results) == [n_iter, n_iter]
    pool._check()
    assert pool.used_bytes() == used0  # every block came back
    assert c.allocations + c.pool_reuses == 2 * n_iter
    per = cp.by_thread()
    assert sum(x.allocations + x.pool_reuses for x in per.values()) == 2 * n_iter
    assert pool.free_bytes() == pool.total_bytes() - pool.used_bytes()
    pool.free_all_blocks()
    assert pool.n_free_blocks() == 0


def test_capture_is_only_the_capturing_threads_and_its_streams() -> None:
    """While one thread captures its stream, another thread's work on its own stream runs
    (allocations, syncs, cuBLAS); work any thread issues on the capturing stream is recorded
    and syncing that stream is refused; only the capturing thread may end the capture."""
    a = _dev(np.ones((4, 4)))
    y = _dev(np.zeros(4))
    s = cp.cuda.Stream(non_blocking=True)

    def elsewhere() -> float:
        other = cp.cuda.Stream(non_blocking=True)
        with other:
            b = cp.empty(54321, cp.float32)  # a device allocation: fine in this thread
            b.fill(1.0)
            other.synchronize()
            assert not cp.capturing()
            return float((a @ a).sum() + b[:1].sum())

    def on_the_capturing_stream() -> None:
        with s:
            assert cp.capturing()
            y.fill(5.0)  # recorded into s's graph, not run
            with pytest.raises(cp.StreamCaptureError):
                cp.empty(77777, cp.float32)

    with s:
        s.begin_capture()
        try:
            with pytest.raises(cp.StreamCaptureError):
                a @ a  # still refused in the capturing thread
            assert _in_thread(elsewhere) == 65.0
            with pytest.raises(cp.StreamCaptureError, match="not permitted"):
                _in_thread(s.synchronize)
            with pytest.raises(cp.StreamCaptureError):
                _in_thread(cp.cuda.runtime.deviceSynchronize)  # it would wait on s
            with pytest.raises(cp.StreamCaptureError, match="WrongThread"):
                _in_thread(s.end_capture)
            with pytest.raises(cp.StreamCaptureError, match="already"):
                cp.cuda.Stream(non_blocking=True).begin_capture()  # one per thread
            assert s.is_capturing() and _in_thread(s.is_capturing)
            _in_thread(on_the_capturing_stream)
            assert not _in_thread(cp.capturing)  # a thread on the null stream is not capturing
        finally:
            graph = s.end_capture()
    assert not s.is_capturing() and not cp.capturing()
    assert [label for label, _ in graph.nodes] == ["fill"]
    np.testing.assert_array_equal(y.get(), 0)  # nothing ran during capture
    graph.launch(s)
    np.testing.assert_array_equal(y.get(), 5)


@pytest.mark.parametrize("transform", [False, True])
def test_loader_prefetch_does_not_change_the_consumers_allocations(transform: bool) -> None:
    """A DataLoader prefetching in its worker thread (uploads, and an augmentation, on its own
    stream) leaves the consuming thread's per-step device events as they are without a
    worker: same allocations (none once warm), no uploads, no syncs, counted for that thread."""
    from gpucnn import transforms as T
    from gpucnn.data import DataLoader
    from gpucnn.testing import simulated_device

    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 3, 96)
    aug = T.Compose([T.RandomHorizontalFlip()]) if transform else None

    def steps(prefetch: int) -> tuple[list, dict]:
        with simulated_device() as sim:
            sim.get_default_memory_pool().free_all_blocks()
            # raw arrays: this measures the loader's transport, not Tensor arithmetic
            loader = DataLoader((x, y), batch_size=8, prefetch=prefetch, seed=1, transform=aug,
                                tensors=False)
            w = sim.asarray(np.ones((16, 4), np.float32))
            rows = []
            sim.reset_counters()
            for _epoch in range(2):
                for xb, yb in loader:
                    before = sim.counters(thread="current").snapshot()
                    h = xb.reshape(8, 16) @ w  # the consumer's "step" on its own stream
                    loss = (h * h).mean() + (yb == 1).sum()
                    del h, loss
                    after = sim.counters(thread="current").snapshot()
                    rows.append({k: after[k] - before[k] for k in
                                 ("allocations", "h2d", "syncs", "cupy_kernels", "cublas")})
                    del xb, yb
            workers = {n: c.h2d for n, c in sim.by_thread().items() if n != "MainThread"}
        return rows, workers

    plain, no_workers = steps(0)
    ahead, workers = steps(2)
    assert ahead == plain, (ahead, plain)
    assert not no_workers and sum(workers.values()) == 2 * 2 * 12, workers  # 2 epochs, x and y
    assert all(r["allocations"] == 0 for r in ahead[1:]), ahead
    assert all(r["h2d"] == 0 and r["syncs"] == 0 for r in ahead), ahead


def test_tensor_arithmetic_with_python_scalars_uploads_nothing() -> None:
    """``t * 2.0``, ``t.mean()`` (a division by the count) and comparisons with numbers make
    their scalar on the device (a fill kernel), never a host-to-device copy per op."""
    from gpucnn import Tensor
    from gpucnn.testing import simulated_device

    with simulated_device() as sim:
        x = Tensor(sim.asarray(np.arange(8, dtype=np.float32)))
        before = sim.counters(thread="current").snapshot()
        r = (x * 2.0 + 1).mean() - (x == 3).float().sum() / 4 + (x > 2).sum()
        after = sim.counters(thread="current").snapshot()
        assert after["h2d"] - before["h2d"] == 0 and after["syncs"] - before["syncs"] == 0
        assert float(r.item()) == pytest.approx(8.0 - 0.25 + 5)
