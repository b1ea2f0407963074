"""Backend selection, the CUDA probe's failure reasons, and the shared primitive set."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

import gpucnn
from gpucnn import backend as B

ROOT = Path(__file__).resolve().parent.parent


def _fresh_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the probe's verdict; the real CuPy path (not the simulated device) is probed."""
    monkeypatch.delenv("GPUCNN_SIMULATE_CUDA", raising=False)
    monkeypatch.setattr(B, "_logged", False)
    monkeypatch.setattr(B, "_cuda_ok", None)
    monkeypatch.setattr(B, "_cuda_reason", None)
    monkeypatch.setattr(B, "_backends", {k: v for k, v in B._backends.items() if k == "numpy"})
    monkeypatch.setattr(B, "_active", None)


def test_misspelt_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="auto, numpy, cuda"):
        B.use("cdua")
    with pytest.raises(ValueError, match="valid names"):
        B.get_backend("gpu")


def test_numpy_backend_explicit() -> None:
    be = B.use("numpy")
    assert B.current() == "numpy" and be.xp is np


def test_env_var_selects_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    _fresh_probe(monkeypatch)
    monkeypatch.setenv("GPUCNN_BACKEND", "numpy")
    assert B.current() == "numpy"
    monkeypatch.setattr(B, "_active", None)
    monkeypatch.setenv("GPUCNN_BACKEND", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        B.current()


def _fake_cupy(monkeypatch: pytest.MonkeyPatch, device_count_error: Exception | None = None,
               count: int = 1, kernel_error: Exception | None = None) -> None:
    cupy = types.ModuleType("cupy")

    def get_count() -> int:
        if device_count_error is not None:
            raise device_count_error
        return count

    class RawKernel:
        def __init__(self, *a: object, **k: object) -> None:
            if kernel_error is not None:
                raise kernel_error

    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_count))
    cupy.RawKernel = RawKernel
    monkeypatch.setitem(sys.modules, "cupy", cupy)


def _fake_working_cupy(monkeypatch: pytest.MonkeyPatch, bad_family: str | None) -> None:
    """A CuPy whose device and probe kernel work; RawModule rejects ``bad_family``'s source."""
    from gpucnn.backend import kernels
    from gpucnn.testing import simcuda

    class RawModule:
        def __init__(self, code: str, options: tuple) -> None:
            self.code = code

        def compile(self) -> None:
            if bad_family and f"{bad_family}.cu" in self.code[:200]:
                raise RuntimeError(f"{bad_family}.cu(3): error: planted")

    cupy = types.ModuleType("cupy")
    cupy.cuda, cupy.RawKernel, cupy.zeros = simcuda.cuda, simcuda.RawKernel, simcuda.zeros
    cupy.float32, cupy.RawModule = np.float32, RawModule
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(kernels, "_modules", {})


def test_probe_compiles_every_kernel_family(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel file the device compiler rejects makes cuda unusable at selection time."""
    _fresh_probe(monkeypatch)
    _fake_working_cupy(monkeypatch, bad_family="pool2d")
    with pytest.raises(gpucnn.BackendUnavailable, match="pool2d.cu failed to compile"):
        B.use("cuda")
    _fresh_probe(monkeypatch)
    _fake_working_cupy(monkeypatch, bad_family=None)
    assert B.cuda_available(), B.cuda_unavailable_reason()
    assert "every kernel family compiled" in B._cuda_reason


def test_installed_cupy_falling_back_warns_visibly(monkeypatch: pytest.MonkeyPatch) -> None:
    _fresh_probe(monkeypatch)
    _fake_cupy(monkeypatch, device_count_error=RuntimeError("cudaErrorNoDevice"))
    monkeypatch.setattr(B, "_cupy_installed", lambda: True)
    with pytest.warns(B.CudaFallbackWarning, match="CuPy is installed but the cuda backend"):
        assert B.use("auto").name == "numpy"
    _fresh_probe(monkeypatch)
    _fake_cupy(monkeypatch, device_count_error=RuntimeError("cudaErrorNoDevice"))
    monkeypatch.setattr(B, "_cupy_installed", lambda: False)  # a CPU-only install: quiet
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", B.CudaFallbackWarning)
        assert B.use("auto").name == "numpy"


def test_backend_scope_restores_exactly() -> None:
    """The fixture's helper puts back what it found, ``None`` (not yet chosen) included."""
    from gpucnn.testing import backend_scope

    saved = B._active
    try:
        B._active = None
        with backend_scope("numpy") as be:
            assert be.name == "numpy" and B._active == "numpy"
        assert B._active is None
        B._active = "numpy"
        with backend_scope(None):
            B.use("numpy")
        assert B._active == "numpy"
    finally:
        B._active = saved


@pytest.mark.skipif(B.cuda_available(), reason="a GPU is usable here")
def test_cuda_without_cupy_raises_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fresh_probe(monkeypatch)
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(gpucnn.BackendUnavailable, match="CuPy is not installed"):
        B.use("cuda")
    assert B.use("auto").name == "numpy"


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"device_count_error": RuntimeError("cudaErrorInsufficientDriver: CUDA driver "
                                             "version is insufficient")}, "driver is too old"),
        ({"device_count_error": RuntimeError("cudaErrorNoDevice")}, "no CUDA device answers"),
        ({"count": 0}, "device count is 0"),
        ({"kernel_error": RuntimeError("nvrtc: error")}, "probe kernel failed to compile"),
    ],
)
def test_cuda_failure_reasons(monkeypatch: pytest.MonkeyPatch, kwargs: dict, reason: str) -> None:
    _fresh_probe(monkeypatch)
    _fake_cupy(monkeypatch, **kwargs)
    with pytest.raises(gpucnn.BackendUnavailable, match=reason):
        B.use("cuda")
    assert B.cuda_unavailable_reason() is not None
    assert B.use("auto").name == "numpy"


def _run(code: str, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    env_path = [str(ROOT)] + ([str(extra_path)] if extra_path else [])
    prog = f"import sys; sys.path[:0] = {env_path!r}\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "GPUCNN_BACKEND": "auto"})


def test_import_never_fails_with_broken_cupy(tmp_path: Path) -> None:
    broken = tmp_path / "cupy"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise OSError('libcudart.so.13: cannot open')\n")
    r = _run("""
        import gpucnn
        print(gpucnn.backend.current())
        try:
            gpucnn.backend.use('cuda')
        except gpucnn.BackendUnavailable as e:
            print('ERR', e)
    """, extra_path=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "numpy"
    assert "libcudart" in lines[1] and lines[1].startswith("ERR")
    assert "Traceback" not in r.stderr


def test_library_never_imports_torch() -> None:
    """PyTorch is a test oracle only: importing every gpucnn module must not need it."""
    r = _run("""
        import sys, importlib, pkgutil
        sys.modules['torch'] = None
        import gpucnn
        for m in pkgutil.walk_packages(gpucnn.__path__, 'gpucnn.'):
            if '.cuda_ops' in m.name:
                continue
            importlib.import_module(m.name)
        print('ok')
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def _public(pkg: str) -> dict[str, set[str]]:
    mod = importlib.import_module(pkg)
    out = {}
    for info in pkgutil.iter_modules(mod.__path__):
        if not info.name.startswith("_"):
            sub = importlib.import_module(f"{pkg}.{info.name}")
            out[info.name] = set(getattr(sub, "__all__", ()))
    return out


def test_both_backends_implement_the_same_primitives() -> None:
    """Every NumPy twin has a CUDA launcher of the same name and signature, and back."""
    import inspect

    np_ops = _public("gpucnn.backend.numpy_ops")
    cu_ops = _public("gpucnn.backend.cuda_ops")
    assert np_ops == cu_ops
    assert sum(len(v) for v in np_ops.values()) > 0
    for fam, names in np_ops.items():
        a = importlib.import_module(f"gpucnn.backend.numpy_ops.{fam}")
        b = importlib.import_module(f"gpucnn.backend.cuda_ops.{fam}")
        for n in names:
            sa = list(inspect.signature(getattr(a, n)).parameters)
            sb = list(inspect.signature(getattr(b, n)).parameters)
            assert sa == sb, f"{fam}.{n}: numpy {sa} vs cuda {sb}"


def test_numpy_backend_exposes_primitives() -> None:
    be = B.get_backend("numpy")
    assert "im2col" in be.primitives and callable(be.im2col)


def test_to_backend_and_backend_of() -> None:
    a = np.arange(6.0).reshape(2, 3)
    assert B.backend_of(a).name == "numpy"
    assert B.to_backend(a, "numpy") is a
    assert np.array_equal(B.to_numpy(a), a)
    with pytest.raises(TypeError, match="not an array"):
        B.backend_of("x")


@pytest.mark.gpu
def test_cuda_round_trip() -> None:
    a = np.arange(6.0).reshape(2, 3)
    d = B.to_backend(a, "cuda")
    assert B.backend_of(d).name == "cuda"
    assert np.array_equal(B.to_numpy(d), a)


def test_blas_thread_control_round_trips() -> None:
    before = gpucnn.get_num_threads()
    if before is None:
        pytest.skip("NumPy's BLAS does not expose a thread setting here")
    try:
        assert gpucnn.set_num_threads(1) is True
        assert gpucnn.get_num_threads() == 1
    finally:
        gpucnn.set_num_threads(before)
    with pytest.raises(ValueError, match="n must be >= 1"):
        gpucnn.set_num_threads(0)


def test_blas_core_names_the_kernel_set() -> None:
    """blas_core reads the kernel set OpenBLAS runs; OPENBLAS_CORETYPE, when set, forces it."""
    import os

    from gpucnn.backend.threads import blas_core

    if gpucnn.get_num_threads() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS gpucnn can reach")
    core = blas_core()
    assert isinstance(core, str) and core
    forced = os.environ.get("OPENBLAS_CORETYPE")
    if forced:
        assert core.lower() == forced.lower()
    assert gpucnn.backend.threads.blas_core_text().startswith(core + " (")


def test_tf32_switch_sets_cupy_compute_type(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    linalg = types.SimpleNamespace(
        COMPUTE_TYPE_TF32="tf32",
        COMPUTE_TYPE_DEFAULT="default",
        set_compute_type=lambda dt, ct: calls.append((np.dtype(dt), ct)),
    )
    core = types.ModuleType("cupy._core")
    core._routines_linalg = linalg
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    monkeypatch.setitem(sys.modules, "cupy._core", core)
    monkeypatch.setitem(sys.modules, "cupy._core._routines_linalg", linalg)
    monkeypatch.setattr(B, "_tf32", None)
    monkeypatch.setenv("GPUCNN_TF32", "1")
    monkeypatch.setenv("CUPY_TF32", "0")
    assert B.tf32_enabled()
    B.set_tf32(False)
    assert not B.tf32_enabled() and os.environ["CUPY_TF32"] == "0"
    B.set_tf32(True)
    assert os.environ["CUPY_TF32"] == "1"
    assert calls == [(np.dtype(np.float32), "default"), (np.dtype(np.float32), "tf32")]
    monkeypatch.setattr(B, "_tf32", None)
    monkeypatch.setenv("GPUCNN_TF32", "0")
    assert not B.tf32_enabled()


@pytest.mark.gpu
def test_tf32_gemm_close_to_fp32() -> None:
    from gpucnn.backend.device import simulated

    if simulated():
        pytest.skip("TF32 numerics need a real GPU (the simulated device runs FP32 GEMMs)")
    import cupy

    B.use("cuda")
    r = np.random.default_rng(0)
    a = r.standard_normal((256, 256)).astype(np.float32)
    b = r.standard_normal((256, 256)).astype(np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    try:
        B.set_tf32(True)
        fast = cupy.asnumpy(cupy.asarray(a) @ cupy.asarray(b))
        B.set_tf32(False)
        exact = cupy.asnumpy(cupy.asarray(a) @ cupy.asarray(b))
    finally:
        B.set_tf32(False)
    np.testing.assert_allclose(exact, ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(fast, ref, rtol=5e-2, atol=5e-2)


def test_twins_do_not_import_each_other() -> None:
    """A CUDA launcher and its NumPy twin share argument checks through
    ``gpucnn.backend.geometry`` / ``gpucnn.backend.checks``, never by importing each other."""
    import ast
    from pathlib import Path

    root = Path(B.__file__).parent
    for here, other in (("cuda_ops", "numpy_ops"), ("numpy_ops", "cuda_ops")):
        for path in sorted((root / here).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                bad = [n for n in names if f"gpucnn.backend.{other}" in n]
                assert not bad, f"{path.relative_to(root)} imports {bad}"


def test_only_the_backend_and_testing_reach_cupy() -> None:
    """Above ``gpucnn/backend`` (and ``gpucnn/testing``) nothing imports CuPy or asks for its
    module: device arrays, streams, events, uploads and generators come from
    ``gpucnn.backend.device``."""
    import ast
    from pathlib import Path

    pkg = Path(B.__file__).parent.parent
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).as_posix()
        if rel.startswith(("backend/", "testing/")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert not [a.name for a in node.names if a.name.split(".")[0] in
                            ("cupy", "cupyx")], rel  # fmt: skip
            elif isinstance(node, ast.ImportFrom):
                mod = (node.module or "").split(".")[0]
                assert mod not in ("cupy", "cupyx"), rel
                assert not {"cupy_module", "cupyx_module"} & {a.name for a in node.names}, rel
            elif isinstance(node, ast.Attribute):
                assert node.attr not in ("cupy_module", "cupyx_module"), rel
