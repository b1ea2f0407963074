"""Runtime backend selection: ``numpy`` (CPU) or ``cuda`` (CuPy + our kernels).

A backend is an array module ``xp`` plus named primitives (``im2col``, ``col2im``,
``maxpool2d_forward``, ...) with identical signatures on both sides. Primitives live one
family per module in :mod:`gpucnn.backend.numpy_ops` and :mod:`gpucnn.backend.cuda_ops`;
every public name listed in a module's ``__all__`` becomes an attribute of the backend.

Select with :func:`use` (``"auto" | "numpy" | "cuda"``) or the environment variable
``GPUCNN_BACKEND``; :func:`current` names the active one. Everywhere a backend is named
(:func:`use`, ``GPUCNN_BACKEND``, ``Tensor.to``, ``Module.to``, factory ``backend=`` arguments)
the aliases ``"cpu"`` (= ``"numpy"``) and ``"gpu"`` / ``"cuda:<current device>"`` (=
``"cuda"``) are accepted too (:func:`canonical_name`). ``auto`` picks ``cuda`` only when
CuPy imports, a device answers and a probe kernel compiles, launches and synchronises.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
from types import ModuleType
from typing import Any

import numpy as np

from gpucnn.backend.device import cupy_module, is_device_array, simulated

__all__ = [
    "Backend",
    "BackendUnavailable",
    "VALID_BACKENDS",
    "BACKEND_ALIASES",
    "canonical_name",
    "use",
    "current",
    "get",
    "get_backend",
    "backend_of",
    "to_backend",
    "to_numpy",
    "cuda_available",
    "cuda_unavailable_reason",
    "set_tf32",
    "tf32_enabled",
    "CudaFallbackWarning",
    "simulated",
]

VALID_BACKENDS = ("auto", "numpy", "cuda")
#: Other accepted spellings of the backend names (PyTorch's device names, Keras users' "gpu").
BACKEND_ALIASES = {"cpu": "numpy", "np": "numpy", "gpu": "cuda"}
log = logging.getLogger("gpucnn")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why."""


class Backend:
    """An array module plus the named primitives of every op family.

    Attributes:
        name: ``"numpy"`` or ``"cuda"``.
        xp: ``numpy`` or ``cupy``.
        primitives: sorted names of the primitives, shared by both backends.
    """

    def __init__(self, name: str, xp: ModuleType, ops_package: str) -> None:
        self.name = name
        self.xp = xp
        self.simulated = name == "cuda" and simulated()
        names: list[str] = []
        pkg = importlib.import_module(ops_package)
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            mod = importlib.import_module(f"{ops_package}.{info.name}")
            for attr in getattr(mod, "__all__", ()):
                if attr in names:
                    raise RuntimeError(f"primitive {attr!r} defined twice in {ops_package}")
                setattr(self, attr, getattr(mod, attr))
                names.append(attr)
        self.primitives = tuple(sorted(names))

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """``a`` as an array of this backend (copies across devices)."""
        if self.name == "numpy" and is_device_array(a):
            a = a.get()
        return self.xp.asarray(a, dtype=dtype)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on NumPy)."""
        if self.name == "cuda":
            self.xp.cuda.get_current_stream().synchronize()

    @property
    def description(self) -> str:
        """``"numpy"``, ``"cuda"``, or ``"cuda (simulated device: ...)"`` where simulated."""
        if self.simulated:
            return "cuda (simulated device: CuPy stand-in, kernels run by the host emulator)"
        return self.name

    def __repr__(self) -> str:
        if self.simulated:
            return f"Backend({self.name!r}, simulated device)"
        return f"Backend({self.name!r})"


_backends: dict[str, Backend] = {}
_active: str | None = None
_cuda_reason: str | None = None  # why cuda is unusable; None = not probed yet
_cuda_ok: bool | None = None
_logged = False

_PROBE_SRC = r"""
extern "C" __global__ void gpucnn_probe(float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = 2.0f * i;
}
"""


def _probe_cuda() -> tuple[bool, str]:
    """Try CuPy, a device, and a probe kernel; return (usable, reason)."""
    try:
        cupy = cupy_module()
    except Exception as exc:  # ImportError, or a broken install raising anything
        return False, f"CuPy is not installed or failed to import ({type(exc).__name__}: {exc})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        msg = str(exc)
        if "InsufficientDriver" in msg or "insufficient" in msg.lower():
            return False, f"the NVIDIA driver is too old for this CuPy build ({msg})"
        return False, f"no CUDA device answers ({type(exc).__name__}: {msg})"
    if n < 1:
        return False, "no CUDA device found (device count is 0)"
    try:
        kern = cupy.RawKernel(_PROBE_SRC, "gpucnn_probe")
        y = cupy.zeros(64, dtype=cupy.float32)
        kern((1,), (64,), (y, np.int32(64)))
        cupy.cuda.get_current_stream().synchronize()
        if float(y[3].get()) != 6.0:
            return False, "the probe kernel ran but computed a wrong value"
    except Exception as exc:
        return False, f"the probe kernel failed to compile or launch ({type(exc).__name__}: {exc})"
    # Compile every real kernel family now, so a source the device's compiler rejects stops
    # the backend from being chosen here, not in the middle of the first fit step.
    from gpucnn.backend.kernels import all_kernel_sources, get_module

    for path in all_kernel_sources():
        try:
            get_module(path.stem)
        except Exception as exc:
            return False, f"the kernel family {path.name} failed to compile ({exc})"
    where = "the simulated device (GPUCNN_SIMULATE_CUDA=1)" if simulated() else "a device"
    return True, f"CuPy imported, {where} answered and every kernel family compiled"


class CudaFallbackWarning(RuntimeWarning):
    """CuPy is installed (the GPU extra) but the cuda backend is unusable: NumPy runs instead."""


def _cupy_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("cupy") is not None
    except (ImportError, ValueError):
        return False


def cuda_available() -> bool:
    """Whether the CUDA backend is usable here (probed once, then cached)."""
    global _cuda_ok, _cuda_reason
    if _cuda_ok is None:
        _cuda_ok, _cuda_reason = _probe_cuda()
    return bool(_cuda_ok)


def cuda_unavailable_reason() -> str | None:
    """Why the CUDA backend is not usable, or ``None`` if it is."""
    return None if cuda_available() else _cuda_reason


_tf32: bool | None = None


def tf32_enabled() -> bool:
    """Whether float32 GEMMs on the CUDA backend may use TF32 tensor cores (default: yes).

    The default comes from ``GPUCNN_TF32`` (``0`` opts out); :func:`set_tf32` changes it.
    """
    if _tf32 is None:
        return os.environ.get("GPUCNN_TF32", "1").strip() not in ("0", "false", "False", "")
    return _tf32


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TF32 tensor cores in the CUDA backend's float32 GEMMs (cuBLAS).

    TF32 keeps float32's range with a 10-bit mantissa in the products (about 1e-3 relative
    error per product): much faster on Ampere and Hopper GPUs, and the usual choice for
    training. Turn it off for bit-for-bit-style comparisons with float32 CPU results. CuPy
    reads ``CUPY_TF32`` at its first float32 GEMM, so the variable is set here too; once CuPy
    is loaded its compute type is switched directly. float64 GEMMs are never affected.
    """
    global _tf32
    _tf32 = bool(enabled)
    _apply_tf32()


def _apply_tf32() -> None:
    on = tf32_enabled()
    os.environ["CUPY_TF32"] = "1" if on else "0"
    if "cupy" not in sys.modules or sys.modules["cupy"] is None:
        return
    try:
        from cupy._core import _routines_linalg as linalg

        linalg.set_compute_type(
            np.float32, linalg.COMPUTE_TYPE_TF32 if on else linalg.COMPUTE_TYPE_DEFAULT
        )
    except Exception as exc:  # an older/newer CuPy layout: the variable decides instead
        log.debug("gpucnn: could not switch CuPy's float32 compute type directly (%s)", exc)


def _valid_names(allow_auto: bool) -> str:
    names = [n for n in VALID_BACKENDS if allow_auto or n != "auto"]
    return (f"valid names are {', '.join(names)} (aliases: 'cpu' = 'numpy', 'gpu' and "
            "'cuda:<device id>' = 'cuda')")


def canonical_name(name: Any, allow_auto: bool = True, op: str = "backend") -> str:
    """``"numpy"``, ``"cuda"`` (or ``"auto"`` when ``allow_auto``) for ``name`` or an alias of
    it: ``"cpu"``/``"np"`` → numpy, ``"gpu"``/``"cuda:<id>"`` → cuda (case-insensitive). A
    device index must be the current CUDA device's (gpucnn runs on one device per thread).

    Raises:
        TypeError: ``name`` is not a string (e.g. ``None`` or a number).
        ValueError: an unknown name (the message lists the accepted ones), or a device index
            that is not the current device's.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"{op}: the backend must be a string, got {name!r} ({type(name).__name__}); "
            f"{_valid_names(allow_auto)}"
        )
    key = name.strip().lower()
    key = BACKEND_ALIASES.get(key, key)
    if key.startswith("cuda:"):
        index = key[5:]
        if not index.isdigit():
            raise ValueError(f"{op}: unknown backend {name!r}; {_valid_names(allow_auto)}")
        if int(index) != 0 or cuda_available():
            current_id = _current_device_id() if cuda_available() else 0
            if int(index) != current_id:
                raise ValueError(
                    f"{op}: {name!r} is not the current CUDA device (cuda:{current_id}); "
                    "select the device with cupy.cuda.Device(i).use() first"
                )
        key = "cuda"
    if key not in VALID_BACKENDS or (key == "auto" and not allow_auto):
        raise ValueError(f"{op}: unknown backend {name!r}; {_valid_names(allow_auto)}")
    return key


def _current_device_id() -> int:
    from gpucnn.backend.device import current_device_id

    try:
        return current_device_id()
    except Exception:  # a stand-in without device ids: the one device
        return 0


def get_backend(name: str) -> Backend:
    """The backend object called exactly ``name`` (``"numpy"`` or ``"cuda"``), created once;
    user-facing arguments go through :func:`canonical_name` first (aliases)."""
    if name not in ("numpy", "cuda"):
        raise ValueError(f"unknown backend {name!r}; valid names are numpy, cuda")
    be = _backends.get(name)
    if be is not None:
        return be
    if name == "numpy":
        be = Backend("numpy", np, "gpucnn.backend.numpy_ops")
    else:
        if not cuda_available():
            raise BackendUnavailable(f"the cuda backend is not usable: {_cuda_reason}")
        _apply_tf32()  # before any float32 GEMM runs
        be = Backend("cuda", cupy_module(), "gpucnn.backend.cuda_ops")
    _backends[name] = be
    return be


def _resolve(name: str) -> str:
    global _logged
    name = canonical_name(name, op="use")
    if name != "auto":
        return name
    if cuda_available():
        return "cuda"
    if not _logged:
        _logged = True
        if _cupy_installed():  # the GPU extra is installed: landing on the CPU is news
            msg = (
                f"gpucnn: CuPy is installed but the cuda backend is not usable, so 'auto' "
                f"runs on the NumPy backend (CPU): {_cuda_reason}"
            )
            log.warning(msg)
            import warnings

            warnings.warn(msg, CudaFallbackWarning, stacklevel=3)
        else:
            log.info("gpucnn: using the numpy backend because %s", _cuda_reason)
    return "numpy"


def use(name: str = "auto") -> Backend:
    """Make ``name`` (``"auto" | "numpy" | "cuda"``, or an alias: ``"cpu"``, ``"gpu"``) the
    active backend and return it.

    Raises:
        ValueError: ``name`` is not a valid backend name.
        BackendUnavailable: ``"cuda"`` was asked for and cannot run here (the message says why).
    """
    global _active
    resolved = _resolve(name)
    be = get_backend(resolved)
    _active = resolved
    return be


def get() -> Backend:
    """The active backend (chosen from ``GPUCNN_BACKEND``, default ``auto``, on first use)."""
    if _active is None:
        use(os.environ.get("GPUCNN_BACKEND", "auto").strip().lower() or "auto")
    return _backends[_active]  # type: ignore[index]


def current() -> str:
    """Name of the active backend: ``"numpy"`` or ``"cuda"``."""
    return get().name


def backend_of(array: Any) -> Backend:
    """The backend that owns ``array`` (NumPy arrays and scalars → numpy, CuPy arrays → cuda)."""
    if isinstance(array, (np.ndarray, np.generic, float, int, bool)):
        return get_backend("numpy")
    if is_device_array(array):
        return get_backend("cuda")
    raise TypeError(f"not an array of a gpucnn backend: {type(array).__name__}")


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy copy/view of ``array`` from either backend."""
    if isinstance(array, np.ndarray):
        return array
    if is_device_array(array):
        return array.get()
    return np.asarray(array)


def to_backend(array: Any, name: str | Backend) -> Any:
    """``array`` moved to backend ``name`` (``"numpy"`` or ``"cuda"``, or an alias); no copy if
    already there."""
    be = name if isinstance(name, Backend) else get_backend(
        canonical_name(name, allow_auto=False, op="to_backend"))
    if be.name == "numpy":
        return to_numpy(array)
    return be.xp.asarray(array)
