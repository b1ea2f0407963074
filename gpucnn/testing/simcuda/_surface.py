"""CuPy 14's API surface as the stand-in needs it: names and keyword parameters.

``cupy14_api.json`` (next to this file) lists, for every name the stand-in provides, the
parameter names of the real CuPy callable. The stand-in's wrappers refuse a keyword CuPy does
not take (``TypeError``, as CuPy would), so gpucnn cannot come to rely on a NumPy-only keyword.
The file is written from an installed CuPy by ``python -m gpucnn.testing.simcuda._surface
--write``; ``tests/test_simcuda.py`` regenerates it from the installed CuPy and compares.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

API_FILE = Path(__file__).with_name("cupy14_api.json")
_DOC_SIG = re.compile(r"^[\w.]*?\(([^)]*)\)")


def parameters(obj: Any) -> list[str] | None:
    """Parameter names of a callable (``None``: it takes ``**kwargs`` or cannot be read)."""
    try:
        sig = inspect.signature(obj)
        names = []
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                return None
            if p.kind is not p.VAR_POSITIONAL and p.name != "self":
                names.append(p.name)
        return names
    except (TypeError, ValueError):
        pass
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    m = _DOC_SIG.match(doc[0].strip()) if doc else None
    if not m:
        return None
    names = []
    for part in m.group(1).split(","):
        part = part.strip().lstrip("\\")
        if not part or part in ("/", "*") or part.startswith("*"):
            if part.startswith("**"):
                return None
            continue
        name = part.split("=")[0].split(":")[0].strip().split()[-1] if part.strip() else ""
        if name and name != "self":
            names.append(name)
    return names


def _lookup(root: Any, dotted: str) -> Any:
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def names_to_check() -> dict[str, list[str]]:
    """Per section (a CuPy object path), the stand-in's public names found in that section."""
    from gpucnn.testing import simcuda
    from gpucnn.testing.simcuda import _array, _cuda

    funcs = sorted(
        set(simcuda.CREATION) | set(simcuda.FUNCTIONS) | set(simcuda.SYNC_FUNCTIONS)
        | set(simcuda.GEMM_FUNCTIONS)
        | {"asarray", "array", "asnumpy", "ascontiguousarray", "get_array_module", "copyto",
           "where", "get_default_memory_pool", "get_default_pinned_memory_pool", "RawKernel",
           "RawModule", "ndarray", "result_type", "can_cast", "ndim", "shape", "size"}
    )  # fmt: skip
    public = lambda cls: sorted(  # noqa: E731
        n for n, v in vars(cls).items() if not n.startswith("_") and (callable(v) or
                                                                      isinstance(v, property))
    )
    return {
        "": funcs,
        "ndarray": sorted(set(_array.NDARRAY_METHODS) | set(public(_array.ndarray))),
        "random": ["default_rng", "Generator"],
        "random.Generator": public(simcuda.Generator),
        "cuda": ["Device", "Stream", "Event", "get_current_stream", "get_elapsed_time",
                 "MemoryPool", "PinnedMemoryPool", "runtime", "compiler", "graph",
                 "is_available"],
        "cuda.Device": public(_cuda.Device),
        "cuda.Stream": public(_cuda.Stream),
        "cuda.Event": public(_cuda.Event),
        "cuda.graph.Graph": public(_cuda.Graph),
        "cuda.MemoryPool": [n for n in public(_cuda.MemoryPool) if n not in ("malloc", "free")],
        "cuda.runtime": [n for n in dir(_cuda.runtime) if not n.startswith("_")],
        "RawModule": public(_cuda.RawModule),
        "RawKernel": ["max_dynamic_shared_size_bytes"],
    }


def collect(cupy: Any, cupyx: Any) -> dict[str, dict[str, list[str] | None | bool]]:
    """``{section: {name: parameters-or-None, or False when CuPy lacks the name}}``."""
    out: dict[str, dict[str, Any]] = {}
    for section, names in names_to_check().items():
        base = _lookup(cupy, section) if section else cupy
        entry: dict[str, Any] = {}
        for n in names:
            if not hasattr(base, n):
                entry[n] = False
                continue
            v = getattr(base, n)
            entry[n] = parameters(v) if callable(v) and not isinstance(v, type) else (
                parameters(v.__init__) if isinstance(v, type) else None)
        out[section] = entry
    out["cupyx"] = {
        n: (parameters(getattr(cupyx, n)) if hasattr(cupyx, n) else False)
        for n in ("scatter_add", "empty_pinned", "zeros_pinned")
    }
    return out


@lru_cache(maxsize=1)
def recorded() -> dict:
    """The committed table (empty if the file is missing)."""
    if not API_FILE.is_file():
        return {}
    return json.loads(API_FILE.read_text())


def allowed_keywords(section: str, name: str) -> list[str] | None:
    """CuPy's parameter names of ``section.name`` (``None``: anything, or not recorded)."""
    entry = recorded().get(section, {}).get(name)
    return entry if isinstance(entry, list) else None


def check_keywords(section: str, name: str, kwargs: dict) -> None:
    """Raise ``TypeError`` for a keyword the real CuPy callable does not take."""
    if not kwargs:
        return
    allowed = allowed_keywords(section, name)
    if allowed is None:
        return
    for k in kwargs:
        if k not in allowed:
            where = f"cupy.{section + '.' if section else ''}{name}"
            raise TypeError(f"{where}() got an unexpected keyword argument {k!r} (CuPy 14 "
                            f"takes: {', '.join(allowed) or 'none'})")


def main(argv: list[str] | None = None) -> int:
    """``--write``: regenerate ``cupy14_api.json`` from the installed CuPy."""
    argv = sys.argv[1:] if argv is None else argv
    import cupy
    import cupyx

    table = collect(cupy, cupyx)
    table["_cupy_version"] = cupy.__version__  # type: ignore[assignment]
    text = json.dumps(table, indent=1, sort_keys=True) + "\n"
    if "--write" in argv:
        API_FILE.write_text(text)
        print(f"wrote {API_FILE} (CuPy {cupy.__version__})")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
