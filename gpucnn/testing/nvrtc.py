"""The real NVRTC, driven the way ``cupy.RawModule`` drives it, on a machine without a GPU.

CuPy compiles a ``RawModule`` with NVRTC, adding to the user's options its own include paths
(``assemble_cupy_compiler_options``), ``-ftz=true``, ``-arch=sm_XX`` (cubin for a known
architecture) and ``--device-as-default-execution-space``. :func:`compile_with_nvrtc` does the
same through CuPy's NVRTC binding, so a source that compiles here compiles in ``RawModule`` on
a GPU. Needs ``cupy-cuda13x`` (imports without a driver) and the ``nvidia-cuda-nvrtc`` wheel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

__all__ = ["NvrtcUnavailable", "NvrtcResult", "nvrtc_version", "cupy_options", "compile_with_nvrtc"]


class NvrtcUnavailable(RuntimeError):
    """CuPy or ``libnvrtc`` cannot be loaded here; the message says which and why."""


@dataclass(frozen=True)
class NvrtcResult:
    """Outcome of one NVRTC compile: success, the program log, the full options, cubin size."""

    ok: bool
    log: str
    options: tuple[str, ...]
    binary_size: int


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc
    except Exception as exc:
        raise NvrtcUnavailable(
            f"CuPy's NVRTC binding does not import ({type(exc).__name__}: {exc}); "
            "pip install cupy-cuda13x nvidia-cuda-nvrtc"
        ) from exc
    return nvrtc


@lru_cache(maxsize=1)
def nvrtc_version() -> tuple[int, int]:
    """``(major, minor)`` of the NVRTC library CuPy loads; raises :class:`NvrtcUnavailable`."""
    nvrtc = _nvrtc()
    try:
        return tuple(nvrtc.getVersion())  # type: ignore[return-value]
    except Exception as exc:
        raise NvrtcUnavailable(
            f"libnvrtc could not be loaded ({type(exc).__name__}: {exc}); "
            "pip install nvidia-cuda-nvrtc"
        ) from exc


def cupy_options(options: tuple[str, ...], arch: str) -> tuple[str, ...]:
    """``options`` as CuPy hands them to NVRTC for ``arch`` (``"sm_80"``, ``"sm_90"``, ...)."""
    try:
        from cupy._core.core import assemble_cupy_compiler_options

        full = tuple(assemble_cupy_compiler_options(tuple(options)))
    except Exception as exc:  # the private helper moved: say so rather than guess
        raise NvrtcUnavailable(f"CuPy's option assembly is not available ({exc})") from exc
    return full + ("-ftz=true", f"-arch={arch}", "--device-as-default-execution-space")


def compile_with_nvrtc(
    source: str, name: str, options: tuple[str, ...], arch: str = "sm_90"
) -> NvrtcResult:
    """Compile ``source`` (reported as ``name``) with NVRTC as ``RawModule`` would for ``arch``."""
    nvrtc = _nvrtc()
    nvrtc_version()
    full = cupy_options(tuple(options), arch)
    prog = nvrtc.createProgram(source, name, (), ())
    try:
        try:
            nvrtc.compileProgram(prog, full)
            ok = True
        except Exception:  # NVRTCError: the log says why
            ok = False
        log = nvrtc.getProgramLog(prog) or ""
        size = len(nvrtc.getCUBIN(prog)) if ok else 0
    finally:
        nvrtc.destroyProgram(prog)
    return NvrtcResult(ok, log.rstrip("\x00"), full, size)
