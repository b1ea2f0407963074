"""The simulated CUDA device (gpucnn.testing.simcuda): CuPy's strictness, counters, capture,
kernels through the emulator, and its API surface against the installed CuPy 14."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    tmp = cp.empty(8, cp.float32)
    del tmp  # a freed block of the right size: the pool serves the capture
    s = cp.cuda.Stream(non_blocking=True)
    with s:
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
