"""Host emulator for the ``cuda/*.cu`` kernels: the same source, built by the host C++ compiler.

A kernel source is compiled with ``g++ -std=c++17 -O1 -shared -fPIC -include cuda_shim.h``
into a shared library, loaded with :mod:`ctypes`, and launched with the same grid, block and
arguments as :class:`cupy.RawKernel`::

    mod = EmulatedModule("im2col")                 # cuda/im2col.cu, or a Path to any .cu
    k = mod.get_function("im2col_f32")
    k((grid,), (block,), (x, cols, np.int64(n), np.int32(c), ...))   # NumPy arrays, in place

Every CUDA thread of a block is a cooperative fiber on one OS thread (blocks run one after
another), so ``__syncthreads()`` is a real barrier and warp shuffles exchange values between
lanes; results are deterministic. Sources that never use a barrier or warp operation take a
fast path (each thread is a plain call).

Checks beyond what a GPU does: kernel parameter types are read from the compiled kernel, and
each argument must match (pointer to the array's dtype, scalar of the exact width: a Python
``int``/``float`` raises ``TypeError``); arrays run inside guard zones, so a write past either
end of an array (or into a read-only array) raises :class:`EmulatorError`.

With :func:`emulated_runtime` and :func:`gpucnn.backend.runtime.use_runtime`, the CuPy
launchers in :mod:`gpucnn.backend.cuda_ops` run unchanged on NumPy arrays.

Limits: no real concurrency (atomics are trivially atomic, races show up only as the
deterministic in-order interleaving); blocks run in order and static ``__shared__`` storage
persists between blocks and launches (never zeroed); 256 KiB stack per fiber (overflow
crashes the process); out-of-bounds reads are not reported (they read NaN guard bytes) and
writes beyond the 4 KiB guard zones are not caught; only ``extern "C" __global__`` kernels are
launchable; a shuffle from an inactive or missing lane returns the caller's own value;
no textures, cooperative groups, ``__half`` / ``__nv_bfloat16`` or CUDA library headers.

16-bit floats and tensor cores: kernels keep FP16 / BF16 values as raw ``unsigned short`` bit
patterns with the round-to-nearest-even conversions of ``cuda/mma.cuh`` (the same code on the
device and here; launchers pass ``float16`` / ``bfloat16`` arrays as ``.view(np.uint16)``).
The sources are compiled with ``GPUCNN_EMULATOR=1``, under which the ``mma.sync`` steps of
``cuda/mma.cuh`` run a portable body that gathers the other lanes' fragments by warp shuffles
following the PTX ISA layouts and accumulates in float32 in k order (tensor cores add in an
unspecified order: real-GPU results differ within tolerance); TF32 rounding (``cvt.rna``) is
the same bit manipulation.

Compiled libraries are cached in ``$GPUCNN_EMULATOR_CACHE`` (default
``~/.cache/gpucnn/emulator``), keyed by the source, the shim, included headers, defines,
flags and compiler version.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpucnn.backend.kernels import (
    define_flags,
    kernel_include_dir,
    kernel_source_path,
    normalize_defines,
)
from gpucnn.backend.runtime import DEFAULT_BLOCK, KernelRuntime

__all__ = [
    "EmulatorError",
    "EmulatorUnavailable",
    "EmulatorCompileError",
    "EmulatedModule",
    "EmulatedKernel",
    "find_compiler",
    "compiler_available",
    "get_emulated_kernel",
    "get_emulated_module",
    "emulated_runtime",
    "SHIM_PATH",
]

SHIM_PATH = Path(__file__).resolve().parent / "cuda_shim.h"
CXX_FLAGS = ("-std=c++17", "-O1", "-shared", "-fPIC", "-fno-strict-aliasing", "-w")
GUARD_BYTES = 4096  # guard zone on each side of every array argument


def _guard_pattern(k: int) -> np.ndarray:
    """8 guard bytes for region ``k``: NaN as float32 and float64, different payload per region.

    A per-region payload means a value copied out of one array's guard into another's (say
    ``c[n] = a[n] + b[n]`` one past the end) still changes the bytes and is caught.
    """
    p = (0x11 + 29 * k) % 251, (0x5A + 53 * k) % 251
    return np.array([p[0], p[1], 0xFF, 0xFF, p[1], p[0], 0xFF, 0xFF], dtype=np.uint8)


DEFAULT_MAX_DYNAMIC_SHARED = 48 * 1024  # what a launch gets on a GPU without opting in

_KERNEL_RE = re.compile(
    r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+([A-Za-z_]\w*)\s*\('
)
_DYN_SHARED_RE = re.compile(
    r"extern\s+__shared__\s+((?:(?:__align__|alignas)\s*\(\s*\w+\s*\)\s*)*)"
    r"([A-Za-z_][\w:<>,\s]*?)\s*([A-Za-z_]\w*)\s*\[\s*\]\s*;"
)
_INCLUDE_RE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)
_SYNC_RE = re.compile(r"__syncthreads|__syncwarp|__shfl_|__ballot_sync|__any_sync|__all_sync")


class EmulatorError(RuntimeError):
    """A kernel misbehaved under the emulator (barrier divergence, out-of-bounds write, ...)."""


class EmulatorUnavailable(RuntimeError):
    """No host C++ compiler was found; the message says what was searched."""


class EmulatorCompileError(RuntimeError):
    """The host compiler rejected a kernel source; the message has the file and the log."""


# ------------------------------------------------------------------ compiler


_compiler: tuple[str, str] | None = None


def find_compiler() -> str:
    """Path of the host C++ compiler (``$CXX``, else g++, c++, clang++); raises if none."""
    global _compiler
    if _compiler is not None:
        return _compiler[0]
    candidates = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    for c in candidates:
        if not c:
            continue
        path = shutil.which(c)
        if path:
            try:
                out = subprocess.run(
                    [path, "--version"], capture_output=True, text=True, timeout=60
                ).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            _compiler = (path, out.strip())
            return path
    raise EmulatorUnavailable(
        "the kernel emulator needs a host C++ compiler (C++17); none found among "
        "$CXX, g++, c++, clang++"
    )


def compiler_available() -> bool:
    """Whether :func:`find_compiler` finds a compiler."""
    try:
        find_compiler()
    except EmulatorUnavailable:
        return False
    return True


def _compiler_version() -> str:
    find_compiler()
    assert _compiler is not None
    return _compiler[1]


def cache_dir() -> Path:
    """Where compiled emulator libraries are kept."""
    env = os.environ.get("GPUCNN_EMULATOR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gpucnn" / "emulator"


# ------------------------------------------------------------------ source preparation


def _included_headers(source: str, dirs: Sequence[Path]) -> list[Path]:
    """Quoted ``#include`` files reachable from ``source``, found in ``dirs`` (recursively)."""
    found: list[Path] = []
    todo = [source]
    while todo:
        text = todo.pop()
        for name in _INCLUDE_RE.findall(text):
            for d in dirs:
                p = (d / name).resolve()
                if p.is_file():
                    if p not in found:
                        found.append(p)
                        todo.append(p.read_text())
                    break
    return found


def _preprocess(path: Path, flags: Sequence[str]) -> str:
    """The source after the C preprocessor (no shim), to find kernels defined through macros."""
    cxx = find_compiler()
    proc = subprocess.run(
        [cxx, "-E", "-P", "-x", "c++", "-std=c++17", *flags, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise EmulatorCompileError(
            f"preprocessing {path} for the host emulator failed:\n{proc.stderr}"
        )
    return proc.stdout


def _rewrite_dynamic_shared(source: str) -> str:
    """``extern __shared__ T name[];`` -> a reference to the launch's dynamic shared buffer."""

    def repl(m: re.Match[str]) -> str:
        ctype, name = m.group(2).strip(), m.group(3)
        return (
            f"static __attribute__((unused)) {ctype}*& {name} = "
            f"reinterpret_cast<{ctype}*&>(__emu::g_dyn_smem);"
        )

    return _DYN_SHARED_RE.sub(repl, source)


def _wrappers(names: Sequence[str]) -> str:
    lines = ["", "// ---- appended by gpucnn.testing.emulator: one launcher per kernel"]
    for n in names:
        lines.append(
            f'extern "C" int __emu_launch_{n}(unsigned gx, unsigned gy, unsigned gz, '
            "unsigned bx, unsigned by, unsigned bz, size_t shmem, void** args, int fibers) "
            f"{{ return __emu::launch({n}, gx, gy, gz, bx, by, bz, shmem, args, fibers); }}"
        )
        lines.append(f'extern "C" const char* __emu_sig_{n}() {{ return __emu::signature({n}); }}')
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ modules


_LAUNCH_ARGTYPES = [ctypes.c_uint] * 6 + [ctypes.c_size_t, ctypes.c_void_p, ctypes.c_int]


class EmulatedModule:
    """A ``.cu`` file compiled for the host: the emulator's ``cupy.RawModule``.

    Args:
        path_or_family: a :class:`~pathlib.Path` (or a string with a ``/``) to a ``.cu`` file,
            or a family name found with :func:`gpucnn.backend.kernels.kernel_source_path`.
        defines: preprocessor defines, as for :func:`gpucnn.backend.kernels.get_module`.
        fibers: force (``True``) or forbid (``False``) fiber scheduling; ``None`` uses fibers
            only when the source (or a header it includes) mentions a barrier or warp operation.
        include_dirs: more directories searched for quoted ``#include`` files (``-I``).

    Attributes:
        path: the source file. kernel_names: its ``extern "C" __global__`` kernels.
        library: the compiled shared library. from_cache: whether it was found already built.
    """

    def __init__(
        self,
        path_or_family: str | Path,
        defines: Any = None,
        *,
        fibers: bool | None = None,
        include_dirs: Sequence[str | Path] = (),
    ) -> None:
        extra_dirs = tuple(include_dirs)
        if isinstance(path_or_family, Path) or "/" in str(path_or_family):
            self.path = Path(path_or_family).resolve()
            if not self.path.is_file():
                raise FileNotFoundError(f"kernel source {self.path} does not exist")
            include_dirs = [self.path.parent]
            fam = str(self.path.with_suffix("").name)
            include_dirs.extend(Path(d) for d in extra_dirs)
            try:
                include_dirs.append(kernel_include_dir("common.cuh"))
            except FileNotFoundError:
                pass
        else:
            self.path = kernel_source_path(str(path_or_family)).resolve()
            include_dirs = [self.path.parent, kernel_include_dir(str(path_or_family))]
            include_dirs.extend(Path(d) for d in extra_dirs)
            fam = str(path_or_family).removesuffix(".cu")
        self.defines = normalize_defines(defines)
        self._lock = threading.Lock()
        raw = self.path.read_text()
        headers = _included_headers(raw, include_dirs)
        header_texts = [h.read_text() for h in headers]
        inc_flags = [f"-I{d}" for d in dict.fromkeys(include_dirs)]
        def_flags = ["-DGPUCNN_EMULATOR=1", *define_flags(self.defines)]
        # Kernel names and barrier use are read after preprocessing (kernels may come from macros).
        pre = _preprocess(self.path, [*inc_flags, *def_flags])
        self.kernel_names: tuple[str, ...] = tuple(dict.fromkeys(_KERNEL_RE.findall(pre)))
        if fibers is None:
            fibers = bool(_SYNC_RE.search(pre))
        self.fibers = bool(fibers)
        unit = (
            f'#line 1 "{self.path}"\n' + _rewrite_dynamic_shared(raw) + _wrappers(self.kernel_names)
        )
        flags = [
            *CXX_FLAGS,
            *inc_flags,
            *def_flags,
            "-include",
            str(SHIM_PATH),
        ]
        h = hashlib.sha256()
        for part in (unit, SHIM_PATH.read_text(), *header_texts, repr(flags)):
            h.update(part.encode())
            h.update(b"\0")
        h.update(_compiler_version().encode())
        digest = h.hexdigest()[:24]
        self.library = cache_dir() / f"{fam}-{digest}.so"
        self.from_cache = self.library.is_file()
        if not self.from_cache:
            self._compile(unit, flags)
        self._lib = ctypes.CDLL(str(self.library))
        self._error = getattr(self._lib, "__emu_error")  # (a getattr: no name mangling)
        self._error.restype = ctypes.c_char_p
        self._kernels: dict[str, EmulatedKernel] = {}

    def _compile(self, unit: str, flags: list[str]) -> None:
        cxx = find_compiler()
        out_dir = self.library.parent
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="gpucnn-emu-") as tmp:
            src = Path(tmp) / (self.path.stem + ".emu.cpp")
            src.write_text(unit)
            fd, tmp_lib = tempfile.mkstemp(dir=out_dir, prefix=".tmp-", suffix=".so")
            os.close(fd)
            try:
                proc = subprocess.run(
                    [cxx, *flags, "-o", tmp_lib, str(src)],
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                if proc.returncode != 0:
                    log = (proc.stderr + proc.stdout).replace(str(src), str(self.path))
                    raise EmulatorCompileError(
                        f"compiling {self.path} for the host emulator failed "
                        f"({Path(cxx).name} exit {proc.returncode}):\n{log}"
                    )
                os.replace(tmp_lib, self.library)
            finally:
                if os.path.exists(tmp_lib):
                    os.unlink(tmp_lib)

    def get_function(self, name: str) -> EmulatedKernel:
        """The kernel called ``name`` (an ``extern "C" __global__`` function of the source)."""
        k = self._kernels.get(name)
        if k is None:
            if name not in self.kernel_names:
                raise AttributeError(
                    f'{self.path.name} has no extern "C" __global__ kernel {name!r}; '
                    f"it has: {', '.join(self.kernel_names) or 'none'}"
                )
            k = EmulatedKernel(self, name)
            self._kernels[name] = k
        return k

    def __repr__(self) -> str:
        return f"EmulatedModule({str(self.path)!r}, defines={self.defines!r})"


# ------------------------------------------------------------------ kernels

_SCALAR_CTYPES: dict[str, Any] = {
    "i1": ctypes.c_int8,
    "u1": ctypes.c_uint8,
    "i2": ctypes.c_int16,
    "u2": ctypes.c_uint16,
    "i4": ctypes.c_int32,
    "u4": ctypes.c_uint32,
    "i8": ctypes.c_int64,
    "u8": ctypes.c_uint64,
    "f4": ctypes.c_float,
    "f8": ctypes.c_double,
    "b1": ctypes.c_bool,
}


def _dims(v: int | Sequence[int], what: str) -> tuple[int, int, int]:
    t = (v,) if isinstance(v, (int, np.integer)) else tuple(v)
    if not 1 <= len(t) <= 3:
        raise ValueError(f"{what} must be an int or a tuple of 1 to 3 ints, got {v!r}")
    dims = [int(d) for d in t] + [1] * (3 - len(t))
    if any(d < 1 for d in dims):
        raise ValueError(f"{what} dimensions must be >= 1, got {v!r}")
    return dims[0], dims[1], dims[2]


def _array_code_ok(code: str, dtype: np.dtype) -> bool:
    """Whether an array of ``dtype`` may be passed for a pointer parameter ``p<code>``."""
    pointee = code[1:]
    if pointee in ("v", "i1", "u1") or pointee.startswith(("s", "p")):
        return True  # void*, byte pointers, structs: no element type to check
    kind, size = pointee[0], int(pointee[1:])
    if dtype.itemsize != size:
        return False
    if kind == "f":
        return dtype.kind == "f"
    if kind in "iu":
        return dtype.kind in "iu"
    if kind == "b":
        return dtype.kind in "biu"
    return True


class EmulatedKernel:
    """One kernel of an :class:`EmulatedModule`; called like :class:`cupy.RawKernel`.

    Attributes:
        name: the kernel name. signature: a code per parameter (``pf4`` = ``float*``,
            ``i4`` = 32-bit int, ``f8`` = double, ...).
        max_dynamic_shared_size_bytes: the launch limit on ``shared_mem`` (48 KiB unless
            raised, as on a GPU).
    """

    def __init__(self, module: EmulatedModule, name: str) -> None:
        self.module = module
        self.name = name
        lib = module._lib
        self._launch = getattr(lib, f"__emu_launch_{name}")
        self._launch.argtypes = _LAUNCH_ARGTYPES
        self._launch.restype = ctypes.c_int
        sig = getattr(lib, f"__emu_sig_{name}")
        sig.restype = ctypes.c_char_p
        text = sig().decode()
        self.signature: tuple[str, ...] = tuple(text.split(",")) if text else ()
        self.max_dynamic_shared_size_bytes = DEFAULT_MAX_DYNAMIC_SHARED

    def _pack_scalar(self, i: int, code: str, a: Any) -> Any:
        if isinstance(a, (bool, int, float)) and not isinstance(a, np.generic):
            raise TypeError(
                f"{self.name}: argument {i} is a Python {type(a).__name__}; pass a NumPy "
                f"scalar of the kernel's type (parameter code {code}), e.g. np.int32(...) — "
                "cupy.RawKernel would silently pass a Python int as 64 bits"
            )
        if not isinstance(a, np.generic):
            raise TypeError(
                f"{self.name}: argument {i} has type {type(a).__name__}; the kernel expects a "
                f"scalar (code {code})"
            )
        dt = a.dtype
        if code.startswith("s"):
            if dt.itemsize != int(code[1:]):
                raise TypeError(f"{self.name}: argument {i} size mismatch for struct {code}")
            return ctypes.create_string_buffer(a.tobytes(), dt.itemsize)
        kind, size = code[0], int(code[1:])
        ok = dt.itemsize == size and (
            (kind == "f" and dt.kind == "f")
            or (kind in "iu" and dt.kind in "iu")
            or (kind == "b" and dt.kind in "biu")
        )
        if not ok:
            raise TypeError(
                f"{self.name}: argument {i} is {dt} but the kernel parameter is {_describe(code)}"
            )
        ctype = _SCALAR_CTYPES[code]
        return ctype(a.item())

    def __call__(
        self,
        grid: int | Sequence[int],
        block: int | Sequence[int],
        args: Sequence[Any],
        shared_mem: int = 0,
    ) -> None:
        """Launch ``grid`` x ``block`` threads; NumPy arrays act as device memory (in place)."""
        g = _dims(grid, "grid")
        b = _dims(block, "block")
        if b[0] > 1024 or b[1] > 1024 or b[2] > 64 or b[0] * b[1] * b[2] > 1024:
            raise ValueError(f"{self.name}: invalid block {b}: at most 1024 threads (z <= 64)")
        if g[0] > 2**31 - 1 or g[1] > 65535 or g[2] > 65535:
            raise ValueError(f"{self.name}: invalid grid {g}")
        shared_mem = int(shared_mem)
        if shared_mem < 0 or shared_mem > self.max_dynamic_shared_size_bytes:
            raise ValueError(
                f"{self.name}: shared_mem={shared_mem} exceeds max_dynamic_shared_size_bytes="
                f"{self.max_dynamic_shared_size_bytes} (a GPU needs an opt-in above 48 KiB)"
            )
        args = tuple(args)
        if len(args) != len(self.signature):
            raise TypeError(
                f"{self.name} takes {len(self.signature)} arguments "
                f"({', '.join(_describe(c) for c in self.signature)}), got {len(args)}"
            )
        arrays: list[tuple[int, np.ndarray]] = []
        packed: list[Any] = [None] * len(args)
        for i, (code, a) in enumerate(zip(self.signature, args)):
            if code.startswith("p"):
                if not isinstance(a, np.ndarray):
                    raise TypeError(
                        f"{self.name}: argument {i} must be a NumPy array for the pointer "
                        f"parameter {_describe(code)}, got {type(a).__name__}"
                    )
                if not a.flags.c_contiguous:
                    raise ValueError(
                        f"{self.name}: argument {i} (shape {a.shape}, strides {a.strides}) is not "
                        "C-contiguous; kernels ignore strides — pass np.ascontiguousarray(...)"
                    )
                if not _array_code_ok(code, a.dtype):
                    raise TypeError(
                        f"{self.name}: argument {i} is a {a.dtype} array but the kernel parameter "
                        f"is {_describe(code)}"
                    )
                arrays.append((i, a))
            else:
                packed[i] = self._pack_scalar(i, code, a)
        with self.module._lock:
            regions = _GuardedRegions(arrays, self.name)
            for i, ptr in regions.pointers.items():
                packed[i] = ctypes.c_void_p(ptr)
            argv = (ctypes.c_void_p * max(1, len(packed)))()
            for i, p in enumerate(packed):
                argv[i] = ctypes.cast(ctypes.pointer(p), ctypes.c_void_p)
            rc = self._launch(
                *g, *b, shared_mem, ctypes.cast(argv, ctypes.c_void_p), int(self.module.fibers)
            )
            err = self.module._error().decode(errors="replace") if rc else ""
            regions.finish(ok=not rc)
        if rc:
            raise EmulatorError(f"kernel {self.name} (grid {g}, block {b}): {err}")

    def __repr__(self) -> str:
        return f"EmulatedKernel({self.name!r}, signature={','.join(self.signature)!r})"


def _describe(code: str) -> str:
    names = {
        "i1": "int8",
        "u1": "uint8",
        "i2": "int16",
        "u2": "uint16",
        "i4": "int32 (int)",
        "u4": "uint32 (unsigned)",
        "i8": "int64 (long long)",
        "u8": "uint64",
        "f4": "float32 (float)",
        "f8": "float64 (double)",
        "b1": "bool",
        "v": "void",
    }
    if code.startswith("p"):
        return f"pointer to {names.get(code[1:], code[1:])}"
    return names.get(code, f"struct of {code[1:]} bytes")


class _GuardedRegions:
    """Copies array arguments into buffers with guard zones; checks and copies back after.

    Arrays that overlap in memory share one buffer, so aliasing (in-place kernels) is kept.
    """

    def __init__(self, arrays: list[tuple[int, np.ndarray]], kernel: str) -> None:
        self.kernel = kernel
        spans = []
        for i, a in arrays:
            start = a.__array_interface__["data"][0]
            spans.append((start, start + a.nbytes, i, a))
        spans.sort(key=lambda s: (s[0], s[1]))
        groups: list[list[Any]] = []
        for s in spans:
            if groups and s[0] < groups[-1][1] and s[1] > s[0]:
                g = groups[-1]
                g[1] = max(g[1], s[1])
                g[2].append(s)
            else:
                groups.append([s[0], s[1], [s]])
        self.pointers: dict[int, int] = {}
        self.groups = []
        for k, (start, end, members) in enumerate(groups):
            size = end - start
            total = size + 2 * GUARD_BYTES + 64
            buf = np.empty(total, dtype=np.uint8)
            base = buf.ctypes.data
            off = (-(base + GUARD_BYTES)) % 64  # 64-byte alignment of the data, as cudaMalloc
            data = base + GUARD_BYTES + off
            # pattern phase follows absolute addresses, so 4/8-byte reads see whole NaNs
            pat = _guard_pattern(k)
            cut = GUARD_BYTES + off
            lo_fill = pat[(np.arange(cut) - cut) % 8]
            hi_fill = pat[(np.arange(total - cut - size) + size) % 8]
            buf[:cut] = lo_fill
            buf[cut + size :] = hi_fill
            if size:
                ctypes.memmove(data, start, size)
            writable = all(m[3].flags.writeable for m in members)
            snapshot = (
                buf[GUARD_BYTES + off : GUARD_BYTES + off + size].copy() if not writable else None
            )
            self.groups.append(
                (start, size, buf, off, members, writable, snapshot, lo_fill, hi_fill)
            )
            for m in members:
                self.pointers[m[2]] = data + (m[0] - start)

    def finish(self, ok: bool) -> None:
        problems = []
        for start, size, buf, off, members, writable, snapshot, lo_fill, hi_fill in self.groups:
            cut = GUARD_BYTES + off
            lo, hi = buf[:cut], buf[cut + size :]
            names = ", ".join(f"argument {m[2]} ({m[3].dtype}{list(m[3].shape)})" for m in members)
            bad_lo = np.flatnonzero(lo != lo_fill)
            bad_hi = np.flatnonzero(hi != hi_fill)
            if bad_lo.size:
                problems.append(f"wrote {len(lo) - bad_lo[0]} byte(s) before the start of {names}")
            if bad_hi.size:
                problems.append(
                    f"wrote past the end of {names} (up to byte {bad_hi[-1] + 1} beyond it)"
                )
            body = buf[GUARD_BYTES + off : GUARD_BYTES + off + size]
            if not writable:
                if snapshot is not None and not np.array_equal(body, snapshot):
                    problems.append(f"wrote into read-only {names}")
            elif size:
                ctypes.memmove(start, body.ctypes.data, size)
        if problems and ok:
            raise EmulatorError(f"kernel {self.kernel}: " + "; ".join(problems))


# ------------------------------------------------------------------ runtime

_modules: dict[tuple, EmulatedModule] = {}
_modules_lock = threading.Lock()


def get_emulated_module(family: str | Path, defines: Any = None) -> EmulatedModule:
    """The :class:`EmulatedModule` for ``family`` and ``defines`` (built once per process)."""
    key = (str(family), normalize_defines(defines))
    mod = _modules.get(key)
    if mod is None:
        with _modules_lock:
            mod = _modules.get(key)
            if mod is None:
                mod = EmulatedModule(family, defines)
                _modules[key] = mod
    return mod


def get_emulated_kernel(family: str, name: str, defines: Any = None) -> EmulatedKernel:
    """Kernel ``name`` of ``cuda/<family>.cu`` compiled for the host (cached per process)."""
    return get_emulated_module(family, defines).get_function(name)


def emulated_runtime(grid_cap: int | None = None, block: int = DEFAULT_BLOCK) -> KernelRuntime:
    """A :class:`~gpucnn.backend.runtime.KernelRuntime` on NumPy with emulated kernels.

    Use with :func:`gpucnn.backend.runtime.use_runtime` to run the CuPy launchers on the CPU;
    ``grid_cap`` and ``block`` set the 1-D launch shape (sweep them to test grid-stride loops).
    """
    find_compiler()
    return KernelRuntime(np, get_emulated_kernel, grid_cap=grid_cap, block=block, name="emulator")
