"""What a benchmark ran on: device, CPU model, versions, BLAS and thread counts, git commit."""

from __future__ import annotations

import ctypes
import datetime as _dt
import glob
import os
import platform
import subprocess
import sys
from typing import Any

import numpy as np

__all__ = [
    "cpu_model",
    "cpu_mhz",
    "blas_info",
    "blas_threads",
    "set_blas_threads",
    "git_commit",
    "collect",
    "GPU_PEAKS",
    "gpu_peak",
]

# Dense datasheet rates (FLOP/s) keyed by a substring of the device name; the H200 SXM has
# the H100 SXM's arithmetic (see the device notes: plain FP32 ~67 TFLOP/s, TF32 tensor-core
# ~495 TFLOP/s dense, i.e. 989 with 2:4 sparsity).
GPU_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"fp32": 67e12, "tf32": 494.7e12},
    "H100 80GB HBM3": {"fp32": 67e12, "tf32": 494.7e12},  # SXM
    "H100 PCIe": {"fp32": 51e12, "tf32": 378e12},
    "H100 NVL": {"fp32": 60e12, "tf32": 417.5e12},
    "H100": {"fp32": 67e12, "tf32": 494.7e12},
    "A100": {"fp32": 19.5e12, "tf32": 156e12},
}


def gpu_peak(name: str) -> dict[str, float] | None:
    """Datasheet dense peaks ``{"fp32": FLOP/s, "tf32": FLOP/s}`` for a device name, or None."""
    for key, val in GPU_PEAKS.items():
        if key in name:
            return val
    return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_mhz() -> float | None:
    """The current clock of CPU 0 in MHz as /proc/cpuinfo reports it, or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("cpu mhz"):
                    return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def _openblas_lib() -> Any | None:
    here = os.path.dirname(np.__file__)
    for pat in ("../numpy.libs/*openblas*", ".libs/*openblas*", "../scipy_openblas*/lib/*.so*"):
        for path in glob.glob(os.path.join(here, pat)):
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


_OB_GET = (
    "scipy_openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "openblas_get_num_threads",
)
_OB_SET = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def blas_threads() -> int | None:
    """Threads NumPy's BLAS uses (threadpoolctl if installed, else OpenBLAS via ctypes)."""
    try:
        import threadpoolctl

        for info in threadpoolctl.threadpool_info():
            if info.get("internal_api") in ("openblas", "mkl", "blis"):
                return int(info["num_threads"])
    except Exception:
        pass
    lib = _openblas_lib()
    if lib is not None:
        for name in _OB_GET:
            fn = getattr(lib, name, None)
            if fn is not None:
                return int(fn())
    return None


def set_blas_threads(n: int) -> bool:
    """Ask NumPy's OpenBLAS to use ``n`` threads; True if it could be done."""
    lib = _openblas_lib()
    if lib is None:
        return False
    for name in _OB_SET:
        fn = getattr(lib, name, None)
        if fn is not None:
            fn(ctypes.c_int(n))
            return True
    return False


def blas_info() -> str:
    """NumPy's BLAS as its build configuration names it, plus the kernel set OpenBLAS runs
    (``OPENBLAS_CORETYPE`` forces it: an AVX2 set on an AVX-512 CPU halves the GEMM rate)."""
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg["Build Dependencies"]["blas"]
        text = f"{b.get('name')} {b.get('version')} ({b.get('openblas configuration', '')})"
    except Exception:
        return "unknown"
    try:
        from gpucnn.backend.threads import blas_core_text

        text += f"; runtime kernels {blas_core_text()}"
    except Exception:
        pass
    return text.strip()


def git_commit() -> str | None:
    """HEAD of the repository holding this package, with '+dirty' if tracked files differ."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except Exception:
        return None


def collect(device: str, torch_mod: Any | None, cupy_mod: Any | None) -> dict[str, Any]:
    """A JSON-ready description of the machine and software of this run."""
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "device": device,
        "cpu_model": cpu_model(),
        "cpu_mhz": cpu_mhz(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "blas": blas_info(),
        "blas_threads": blas_threads(),
        "torch": getattr(torch_mod, "__version__", None),
        "torch_threads": torch_mod.get_num_threads() if torch_mod is not None else None,
        "cupy": getattr(cupy_mod, "__version__", None),
        "cuda_runtime": None,
        "cuda_driver": None,
        "device_name": cpu_model() if device == "cpu" else None,
    }
    try:
        import gpucnn

        info["gpucnn"] = gpucnn.__version__
    except Exception:
        info["gpucnn"] = None
    if cupy_mod is not None:
        try:
            rt = cupy_mod.cuda.runtime
            info["cuda_runtime"] = rt.runtimeGetVersion()
            info["cuda_driver"] = rt.driverGetVersion()
            props = rt.getDeviceProperties(cupy_mod.cuda.Device().id)
            name = props["name"]
            info["device_name"] = name.decode() if isinstance(name, bytes) else str(name)
        except Exception as exc:
            info["cuda_error"] = f"{type(exc).__name__}: {exc}"
    if torch_mod is not None and device == "cuda":
        try:
            info["torch_cuda"] = torch_mod.version.cuda
            info["cudnn"] = torch_mod.backends.cudnn.version()
            if info["device_name"] is None:
                info["device_name"] = torch_mod.cuda.get_device_name()
        except Exception:
            pass
    return info
