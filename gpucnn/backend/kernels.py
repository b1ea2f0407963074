"""Finding kernel sources in ``cuda/`` and compiling them through CuPy ``RawModule``.

Sources are searched, in order, in ``$GPUCNN_KERNEL_DIR``, the installed package data
(``gpucnn/_cuda``, where the wheel puts the top-level ``cuda/`` folder) and the source
checkout's ``cuda/``. A module is compiled once per (file, defines, device) and cached.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_PKG_DIR = Path(__file__).resolve().parent.parent


class KernelSourceNotFound(FileNotFoundError):
    """A ``cuda/<family>.cu`` file could not be found in any searched directory."""


class KernelCompileError(RuntimeError):
    """NVRTC rejected a kernel source; the message carries the file name and the log."""


def kernel_dirs() -> list[Path]:
    """Directories searched for ``<family>.cu``, in order."""
    dirs: list[Path] = []
    env = os.environ.get("GPUCNN_KERNEL_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(_PKG_DIR / "_cuda")  # installed wheel
    dirs.append(_PKG_DIR.parent / "cuda")  # source checkout / editable install
    return dirs


def kernel_source_path(family: str) -> Path:
    """Path of ``<family>.cu``; raises :class:`KernelSourceNotFound` naming the searched dirs."""
    name = family if family.endswith((".cu", ".cuh")) else f"{family}.cu"
    searched = kernel_dirs()
    for d in searched:
        p = d / name
        if p.is_file():
            return p
    raise KernelSourceNotFound(
        f"kernel source {name!r} not found; searched: " + ", ".join(str(d) for d in searched)
    )


def kernel_include_dir(family: str) -> Path:
    """Directory holding ``<family>.cu`` (also the include path for ``common.cuh``)."""
    return kernel_source_path(family).parent


def all_kernel_sources() -> list[Path]:
    """Every ``.cu`` file in the first directory that has any."""
    for d in kernel_dirs():
        files = sorted(d.glob("*.cu"))
        if files:
            return files
    return []


def normalize_defines(defines: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> tuple:
    """Defines as a sorted, hashable tuple of ``(name, value)`` pairs."""
    if not defines:
        return ()
    items = defines.items() if isinstance(defines, Mapping) else defines
    return tuple(sorted((str(k), str(v)) for k, v in items))


def define_flags(defines: tuple) -> list[str]:
    """``-DNAME=VALUE`` compiler flags for normalised defines."""
    return [f"-D{k}={v}" for k, v in defines]


_modules: dict[tuple, Any] = {}
_lock = threading.Lock()


def get_module(family: str, defines: Any = None) -> Any:
    """The compiled ``cupy.RawModule`` for ``cuda/<family>.cu`` on the current device (cached)."""
    import cupy

    defs = normalize_defines(defines)
    device = cupy.cuda.runtime.getDevice()
    key = (family, defs, device)
    mod = _modules.get(key)
    if mod is not None:
        return mod
    with _lock:
        mod = _modules.get(key)
        if mod is not None:
            return mod
        path = kernel_source_path(family)
        source = path.read_text()
        options = ("--std=c++14", f"-I{path.parent}", *define_flags(defs))
        try:
            mod = cupy.RawModule(code=source, options=options)
            mod.compile()
        except Exception as exc:  # cupy.cuda.compiler.CompileException and friends
            log = exc.get_message() if hasattr(exc, "get_message") else str(exc)
            raise KernelCompileError(f"compiling {path} failed:\n{log}") from exc
        _modules[key] = mod
        return mod


def get_kernel(family: str, name: str, defines: Any = None) -> Any:
    """The ``cupy.RawKernel`` called ``name`` from ``cuda/<family>.cu`` (compiled once, cached)."""
    return get_module(family, defines).get_function(name)
