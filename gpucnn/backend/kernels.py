"""Finding kernel sources in ``cuda/`` and compiling them through CuPy ``RawModule``.

Sources are searched, in order, in ``$GPUCNN_KERNEL_DIR``, the installed package data
(``gpucnn/_cuda``, where the wheel puts the top-level ``cuda/`` folder) and the source
checkout's ``cuda/``. A module is compiled once per (file, defines, device) and cached.

CuPy's on-disk kernel cache keys on the source text and the options, not on the headers a
source includes, so :func:`module_source` appends a digest of every included header: an edit
to ``common.cuh`` changes the text CuPy sees and cannot load a stale binary.
"""

from __future__ import annotations

import hashlib
import os
import re
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


_INCLUDE_RE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)


def included_headers(path: Path) -> list[Path]:
    """Every ``#include "..."`` header reachable from ``path`` (depth first, each once)."""
    seen: list[Path] = []

    def walk(p: Path) -> None:
        for name in _INCLUDE_RE.findall(p.read_text()):
            h = (p.parent / name).resolve()
            if h.is_file() and h not in seen:
                seen.append(h)
                walk(h)

    walk(path)
    return seen


def module_source(path: Path) -> str:
    """The text handed to NVRTC for ``path``: the file, plus a digest line of its headers."""
    source = path.read_text()
    headers = included_headers(path)
    if not headers:
        return source
    digest = hashlib.sha256()
    for h in headers:
        digest.update(h.name.encode() + b"\0" + h.read_bytes() + b"\0")
    return f"{source}\n// gpucnn: included headers sha256 {digest.hexdigest()[:32]}\n"


def module_options(path: Path, defines: tuple = ()) -> tuple[str, ...]:
    """The options gpucnn gives ``cupy.RawModule`` for ``path`` (CuPy adds its own after)."""
    return ("--std=c++14", f"-I{path.parent}", *define_flags(defines))


_modules: dict[tuple, Any] = {}
_lock = threading.Lock()


def get_module(family: str, defines: Any = None) -> Any:
    """The compiled ``cupy.RawModule`` for ``cuda/<family>.cu`` on the current device (cached)."""
    from gpucnn.backend.device import cupy_module

    cupy = cupy_module()
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
        source = module_source(path)
        options = module_options(path, defs)
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
