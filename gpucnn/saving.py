"""Checkpoints: ``model.save(path)`` / :func:`load_model`, ``save_weights`` / ``load_weights``,
and PyTorch-style :func:`save` / :func:`load` of state dicts and other nested values.

Format: ONE ``.npz`` file (a zip of ``.npy`` members, readable with ``numpy.load`` and
``allow_pickle=False``):

* ``__meta__``: a JSON string: format name and version, ``kind`` (``"model"``,
  ``"weights"`` or ``"object"``: a value saved by :func:`save`), the architecture
  (``{"class_name", "config"}``, see :func:`gpucnn.module.serialize`), the per-sample input
  shape the model was built for, the compile settings, the optimizer class, hyper-parameters
  and the structure of its state (array leaves replaced by references), the
  :mod:`gpucnn.random` state, and the number of completed epochs (with
  ``compile(mixed_precision="float16")`` also ``loss_scaler``: the
  :class:`~gpucnn.amp.GradScaler` state, so a resumed run scales exactly as an uninterrupted
  one; the weights saved are always the FP32 master weights);
* ``w/<name>``: every state-dict entry (parameters and persistent buffers), as NumPy arrays;
* ``o/<i>``: the optimizer's state arrays (momentum buffers, Adam moments, ...);
* ``a/<i>``: the arrays and Tensors of an ``"object"`` file, whose structure (dicts, lists,
  tuples, scalars, strings, which entries are Tensors or Parameters and on which backend they
  were) is the metadata's ``object`` entry;
* ``__sha256__``: SHA-256 over every other entry (name, dtype, shape and bytes), verified on
  load, so a truncated or corrupted file raises :class:`CheckpointError` naming the file
  instead of loading garbage.

Reading allocates nothing the file does not hold: members must be stored uncompressed (as
``np.savez`` writes them; a compressed member, e.g. a deflate bomb, is refused unread), each
``.npy`` header must account for exactly its member's bytes, and the members together for no
more than the file. Only plain numeric arrays (and the two strings) are accepted: no pickles,
objects or structured dtypes. After the checksum the metadata's structure is checked (a file
tampered with and re-checksummed), and any failure to rebuild, fill, re-compile or restore the
model from it is a :class:`CheckpointError` naming the file and the step; a refused
:func:`load_model` leaves the process's RNG state as it was.

Writes are atomic: the file is written to a temporary file ``.<name>.<pid>.<random>.tmp`` in
the same directory, flushed and fsync'ed, then ``os.replace``'d over ``path`` (and the directory
fsync'ed), so a crash mid-write (even ``kill -9``) leaves the previous checkpoint intact. The
next save to ``path`` removes the temporary files such crashes left (their process is gone).

This module imports :mod:`gpucnn.module` (for the registry) and never :mod:`gpucnn.model`:
``Model.save`` calls in here, not the other way round.

Architectures are rebuilt from the registry (:func:`gpucnn.register_module`): Sequential, the
built-in layers and blocks, and any custom Module class registered with a ``get_config()``
that returns its ``__init__`` keyword arguments. Other modules can still use
``save_weights``/``load_weights``.

The RNG state saved is that of gpucnn's NumPy generator (initialisers, shuffling, dropout on
the NumPy backend); :func:`load_model` restores it by default, so training resumed with
``fit(..., initial_epoch=k)`` repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import re
import tempfile
import threading
import time
import warnings
import zipfile
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn.backend.device import is_array as _is_array

__all__ = [
    "CheckpointError",
    "save",
    "load",
    "save_model",
    "load_model",
    "save_weights",
    "load_weights",
    "read_checkpoint",
]

FORMAT = "gpucnn-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, corrupt or of the wrong kind."""


# ----------------------------------------------------------------------------- encoding



def _encode(v: Any, arrays: dict[str, np.ndarray], prefix: str, tensors: bool = False,
            depth: int = 0) -> Any:
    """JSON-able structure of ``v`` with arrays moved to ``arrays`` (keys ``prefix<i>``).

    ``tensors`` (the :func:`save` format): Tensors are kept as ``{"__tensor__": array, ...}``
    and device arrays remember their backend; otherwise a Tensor is refused."""
    if depth > 100:
        raise ValueError("cannot save a value nested more than 100 deep (is it circular?)")
    if tensors:
        from gpucnn.tensor import Parameter, Tensor

        if isinstance(v, Tensor):
            return {"__tensor__": _encode(v.data, arrays, prefix, tensors, depth + 1),
                    "requires_grad": bool(v.requires_grad),
                    "parameter": isinstance(v, Parameter)}
    if _is_array(v):
        dt = v.dtype
        if dt.kind not in _MEMBER_KINDS or dt.names is not None or dt.subdtype is not None:
            raise TypeError(f"cannot save an array of dtype {dt} (plain number or string "
                            "arrays only; an object array would need a pickle)")
        key = f"{prefix}{len(arrays)}"
        arrays[key] = np.ascontiguousarray(_backend.to_numpy(v))
        if tensors and not isinstance(v, np.ndarray):
            return {"__array__": key, "backend": "cuda"}
        return {"__array__": key}
    if isinstance(v, dict):
        for k in v:
            if _is_array(k) or _is_tensor(k):
                raise TypeError(f"cannot save a dict keyed by a {type(k).__name__} (keys: "
                                "strings, numbers, bools, None or tuples of them)")
        return {"__dict__": [[_encode(k, arrays, prefix, tensors, depth + 1),
                              _encode(x, arrays, prefix, tensors, depth + 1)]
                             for k, x in v.items()]}
    if isinstance(v, tuple):
        return {"__tuple__": [_encode(x, arrays, prefix, tensors, depth + 1) for x in v]}
    if isinstance(v, list):
        return [_encode(x, arrays, prefix, tensors, depth + 1) for x in v]
    if isinstance(v, np.generic):
        return {"__scalar__": v.dtype.str, "value": v.item()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"cannot save a value of type {type(v).__name__} in a checkpoint")


#: Scalar dtypes an encoded optimizer value may name (never void/object: ``np.void(10**9)``
#: would allocate a gigabyte).
_SCALAR_KINDS = "biufc"


def _decode(v: Any, arrays: dict[str, np.ndarray], depth: int = 0,
            place: Any = None) -> Any:
    """Inverse of :func:`_encode`; a malformed structure raises ``ValueError`` saying what.

    ``place`` (the :func:`load` format): ``place(array, saved_backend)`` puts each array on
    its backend, and Tensors are rebuilt; without it a Tensor entry is refused."""
    if depth > 100:
        raise ValueError("encoded value nested more than 100 deep")
    if isinstance(v, list):
        return [_decode(x, arrays, depth + 1, place) for x in v]
    if isinstance(v, dict):
        if "__array__" in v:
            key = v["__array__"]
            if not isinstance(key, str) or key not in arrays:
                raise ValueError(f"reference to a missing array entry {key!r}")
            if place is None:
                return arrays[key]
            saved = v.get("backend", "numpy")
            if saved not in ("numpy", "cuda") or set(v) - {"__array__", "backend"}:
                raise ValueError(f"bad encoded array {v!r}")
            return place(arrays[key], saved)
        if "__tensor__" in v:
            if place is None:
                raise ValueError("a Tensor entry where plain arrays are expected")
            from gpucnn.tensor import Parameter, Tensor

            rg, is_param = v.get("requires_grad"), v.get("parameter")
            inner = v["__tensor__"]
            if not isinstance(rg, bool) or not isinstance(is_param, bool) \
                    or set(v) != {"__tensor__", "requires_grad", "parameter"} \
                    or not isinstance(inner, dict) or "__array__" not in inner:
                raise ValueError(f"bad encoded tensor {v!r}")
            data = _decode(inner, arrays, depth + 1, place)
            if is_param:
                return Parameter(data, requires_grad=rg)
            return Tensor(data, requires_grad=rg)
        if "__dict__" in v:
            pairs = v["__dict__"]
            if not isinstance(pairs, list) or not all(
                    isinstance(p, list) and len(p) == 2 for p in pairs):
                raise ValueError("an encoded dict is not a list of [key, value] pairs")
            out = {}
            for k, x in pairs:
                k = _decode(k, arrays, depth + 1, place)
                if _is_array(k) or _is_tensor(k) or isinstance(k, (list, dict)):
                    raise ValueError(f"an encoded dict has an unhashable key of type "
                                     f"{type(k).__name__}")
                out[k] = _decode(x, arrays, depth + 1, place)
            return out
        if "__tuple__" in v:
            if not isinstance(v["__tuple__"], list):
                raise ValueError("an encoded tuple is not a list")
            return tuple(_decode(x, arrays, depth + 1, place) for x in v["__tuple__"])
        if "__scalar__" in v:
            code, value = v["__scalar__"], v.get("value")
            try:
                dt = np.dtype(code) if isinstance(code, str) else None
            except TypeError:
                dt = None
            if dt is None or dt.kind not in _SCALAR_KINDS or dt.itemsize > 16 \
                    or isinstance(value, (list, dict, str)) or value is None:
                raise ValueError(f"bad encoded scalar {code!r}: {value!r}")
            try:
                return dt.type(value)
            except (OverflowError, TypeError, ValueError) as exc:
                raise ValueError(f"bad encoded scalar {code!r}: {value!r} ({exc})") from exc
        if place is not None:
            raise ValueError(f"unknown encoded entry with keys {sorted(v)[:5]}")
        return {k: _decode(x, arrays, depth + 1) for k, x in v.items()}
    return v


def _is_tensor(v: Any) -> bool:
    from gpucnn.tensor import Tensor

    return isinstance(v, Tensor)


def _digest(entries: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(entries):
        if name == "__sha256__":
            continue
        a = np.ascontiguousarray(entries[name])
        h.update(name.encode())
        h.update(b"\0" + a.dtype.str.encode() + b"\0" + repr(a.shape).encode() + b"\0")
        h.update(a.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- file I/O

#: A temporary file this long unmodified is an orphan even if its process id is in use again.
_ORPHAN_AGE_S = 3600.0
_ACTIVE: set[str] = set()  # temporary files this process is writing right now
_ACTIVE_LOCK = threading.Lock()


def temp_file(path: str, suffix: str) -> tuple[int, str]:
    """``mkstemp`` next to ``path``, named ``.<name>.<pid>.<random><suffix>`` so that
    :func:`remove_orphans` can tell a dead writer's file from a live one's."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.",
                               suffix=suffix, dir=d)
    with _ACTIVE_LOCK:
        _ACTIVE.add(tmp)
    return fd, tmp


def temp_done(tmp: str) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.discard(tmp)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours, and not in _ACTIVE: left by an earlier failed attempt
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def remove_orphans(path: str, suffix: str) -> list[str]:
    """Remove the temporary files of earlier writes of ``path`` that were never finished (the
    writer was killed): those of a process that no longer runs (or of this one, not in
    progress), and any not modified for an hour. Returns the removed paths."""
    d = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    pattern = re.compile(re.escape(f".{base}.") + r"(?:(\d+)\.)?[a-z0-9_]{8}" +
                         re.escape(suffix))
    removed = []
    try:
        names = os.listdir(d)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        m = pattern.fullmatch(name)
        if m is None:
            continue
        full = os.path.join(d, name)
        with _ACTIVE_LOCK:
            if full in _ACTIVE:
                continue
        try:
            stale = now - os.stat(full).st_mtime > _ORPHAN_AGE_S
            # no pid: the name an older gpucnn gave its temporary files
            if stale or m.group(1) is None or not _pid_alive(int(m.group(1))):
                os.unlink(full)
                removed.append(full)
        except OSError:
            continue
    return removed


def write_bytes_atomic(path: str | os.PathLike, body: bytes) -> None:
    """Write ``body`` to ``path`` through a temporary file in the same folder, flushed,
    fsync'ed and ``os.replace``'d over it: ``path`` is never half-written (datasets' cache,
    ONNX files)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    remove_orphans(path, ".tmp")
    fd, tmp = temp_file(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        temp_done(tmp)


def _write_npz(f: Any, entries: dict[str, np.ndarray]) -> None:
    """Write the archive to the open binary file ``f`` (a seam for crash tests)."""
    np.savez(f, **entries)


def _atomic_write(path: str, entries: dict[str, np.ndarray]) -> None:
    entries = dict(entries)
    entries["__sha256__"] = np.array(_digest(entries))
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    remove_orphans(path, ".tmp")
    fd, tmp = temp_file(path, ".tmp")
    try:
        # mkstemp creates 0600: keep the old file's mode, else rw-r--r--
        mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
        with contextlib.suppress(OSError):
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, entries)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        temp_done(tmp)
    with contextlib.suppress(OSError, AttributeError):
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


#: Array dtypes a checkpoint member may have: real numbers (and the unicode strings of
#: ``__meta__``/``__sha256__``); never complex, objects, structured or void types.
_MEMBER_KINDS = "biufU"


def _member_dtype(dt: np.dtype, where: str) -> np.dtype:
    if dt.kind not in _MEMBER_KINDS or dt.names is not None or dt.subdtype is not None \
            or dt.hasobject:
        raise CheckpointError(f"{where}: refused dtype {dt} (gpucnn saves plain arrays only)")
    return dt


def _read_entries(path: str) -> dict[str, np.ndarray]:
    """Every ``.npy`` member of the archive, reading nothing the format does not allow.

    gpucnn writes members stored (uncompressed), so each member's size is known from the zip
    directory before it is read: a compressed member (a deflate bomb), members overlapping or
    claiming more bytes than the file has, and an ``.npy`` header whose shape and dtype do not
    account for exactly the member's bytes are all refused before any array is allocated.
    """
    size = os.path.getsize(path)
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                raise CheckpointError(
                    f"{path}: member {info.filename!r} is compressed (method "
                    f"{info.compress_type}); gpucnn checkpoints store members uncompressed, so "
                    "it is refused without inflating it"
                )
        total = sum(i.file_size for i in infos)
        if total > size:
            raise CheckpointError(
                f"{path}: the members claim {total} bytes, more than the file's {size} "
                "(overlapping or forged zip entries)"
            )
        for info in infos:
            where = f"{path}: member {info.filename!r}"
            if not info.filename.endswith(".npy") or info.is_dir():
                raise CheckpointError(f"{where} is not an .npy array")
            key = info.filename[:-4]
            if key in out:
                raise CheckpointError(f"{where} appears twice")
            if info.header_offset + info.compress_size > size:
                raise CheckpointError(f"{where} extends past the end of the file (truncated)")
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dt = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dt = np.lib.format.read_array_header_2_0(f)
                else:
                    raise CheckpointError(f"{where}: unsupported .npy version {version}")
                _member_dtype(dt, where)
                need = math.prod(shape) * dt.itemsize
                start = f.tell()
                if start + need != info.file_size:
                    raise CheckpointError(
                        f"{where}: its header declares shape {shape} {dt} ({need} bytes) but "
                        f"the member holds {info.file_size - start} bytes of data"
                    )
                buf = bytearray(need)  # bounded: need <= file_size <= the file's size
                pos = 0
                while pos < need:
                    chunk = f.read(min(_READ_CHUNK, need - pos))
                    if not chunk:
                        raise CheckpointError(f"{where}: truncated data")
                    buf[pos:pos + len(chunk)] = chunk
                    pos += len(chunk)
                if f.read(1):  # reaching the end verifies the member's CRC-32
                    raise CheckpointError(f"{where}: more data than its header declares")
            order = "F" if fortran else "C"
            if dt.itemsize == 0:
                out[key] = np.empty(shape, dt, order=order)  # holds no bytes
            else:
                out[key] = np.frombuffer(buf, dtype=dt).reshape(shape, order=order)
    return out


_READ_CHUNK = 1 << 22


def read_checkpoint(path: Any) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, entries)`` of a checkpoint, after verifying its SHA-256 and the structure of
    its metadata.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a gpucnn checkpoint, truncated, corrupt, or with metadata that
            does not describe its contents (names the file and what is wrong).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        entries = _read_entries(path)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot read the checkpoint (truncated or corrupt file?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if "__sha256__" not in entries or "__meta__" not in entries:
        raise CheckpointError(f"{path}: not a gpucnn checkpoint (no __meta__/__sha256__ entry)")
    for key in ("__sha256__", "__meta__"):
        if entries[key].dtype.kind != "U" or entries[key].shape != ():
            raise CheckpointError(f"{path}: not a gpucnn checkpoint ({key} is not a string)")
    stored = str(entries["__sha256__"])
    if _digest(entries) != stored:
        raise CheckpointError(f"{path}: checksum mismatch: the checkpoint is corrupt")
    try:
        meta = json.loads(str(entries["__meta__"]))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: unreadable metadata: {exc}") from exc
    _check_meta(path, meta, entries)
    return meta, entries


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: Bounds on a recorded per-sample input shape (building allocates one such sample).
_MAX_DIM = 1 << 16
_MAX_SAMPLE = 1 << 24


def _check_shape(shape: Any) -> str | None:
    """What is wrong with a recorded ``build_input_shape`` (None if nothing)."""
    if shape is None:
        return None
    if not isinstance(shape, list) or len(shape) > 8:
        return f"build_input_shape {shape!r} is not a list of dimensions"
    groups = shape if shape and isinstance(shape[0], list) else [shape]
    for g in groups:
        if not isinstance(g, list) or len(g) > 8 or not all(
                _is_int(n) and 0 < n <= _MAX_DIM for n in g):
            return f"build_input_shape {shape!r} is not a list of positive dimensions"
        if math.prod(g) > _MAX_SAMPLE:
            return f"build_input_shape {shape!r} is larger than {_MAX_SAMPLE} values per sample"
    return None


def _check_meta(path: str, meta: Any, entries: dict[str, np.ndarray]) -> None:
    """Refuse metadata that does not describe a checkpoint of this format (a tampered file
    with a recomputed checksum, or a newer/older writer's), naming the field."""

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: invalid checkpoint metadata: {why}")

    if not isinstance(meta, dict):
        raise bad(f"expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a gpucnn checkpoint (format {meta.get('format')!r})")
    version = meta.get("version")
    if not _is_int(version) or version < 1:
        raise bad(f"version {version!r} is not a positive integer")
    if version > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {version} is newer than this gpucnn supports "
            f"({VERSION})"
        )
    kind = meta.get("kind")
    if kind not in ("model", "weights", "object"):
        raise bad(f"kind {kind!r} is not 'model', 'weights' or 'object'")
    if kind == "object" and "object" not in meta:
        raise bad("an 'object' file without its 'object' entry")
    names = meta.get("weights", [])
    if not isinstance(names, list) or not all(isinstance(k, str) for k in names):
        raise bad("'weights' is not a list of names")
    if len(set(names)) != len(names):
        raise bad("'weights' names an entry twice")
    for k in names:
        arr = entries.get(f"w/{k}")
        if arr is None:
            raise bad(f"weight {k!r} is listed but the file has no entry w/{k}")
        if arr.dtype.kind not in "biuf":
            raise bad(f"weight {k!r} has dtype {arr.dtype}, not a number type")
    epoch = meta.get("epoch", 0)
    if not _is_int(epoch) or epoch < 0:
        raise bad(f"epoch {epoch!r} is not a non-negative integer")
    why = _check_shape(meta.get("build_input_shape"))
    if why:
        raise bad(why)
    if kind == "model":
        for key, types in (("architecture", (dict, type(None))), ("compile", (dict, type(None))),
                           ("optimizer", (dict, type(None))),
                           ("loss_scaler", (dict, type(None))),
                           ("random_state", (dict, type(None))),
                           ("backend", (str, type(None)))):
            if not isinstance(meta.get(key), types):
                raise bad(f"{key!r} has type {type(meta.get(key)).__name__}")
        opt = meta.get("optimizer")
        if opt is not None and not isinstance(opt.get("class_name"), str):
            raise bad("the optimizer has no class name")


# ----------------------------------------------------------------------------- optimizer


def _optimizer_kwargs(cls: type, defaults: dict) -> dict:
    try:
        names = set(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        names = set(defaults)
    return {k: (tuple(v) if isinstance(v, list) else v)
            for k, v in defaults.items() if k in names and k != "params"}


def _build_optimizer(model: Any, spec: dict, arrays: dict) -> Any:
    from gpucnn import optim

    cls = getattr(optim, spec["class_name"], None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, optim.Optimizer):
        raise CheckpointError(f"unknown optimizer class {spec['class_name']!r} in the checkpoint")
    defaults = _decode(spec.get("defaults", {}), arrays)
    opt = cls(model.trainable_parameters(), **_optimizer_kwargs(cls, defaults))
    state = spec.get("state")
    if state is not None:
        opt.load_state_dict(_decode(state, arrays))
    return opt


# ----------------------------------------------------------------------------- save / load


def _build_shape(model: Any) -> Any:
    shape = getattr(model, "input_shape", None) if hasattr(type(model), "input_shape") else None
    if shape is None:
        shape = model.__dict__.get("_build_input_shape")
    if shape is None:
        return None
    if shape and isinstance(shape[0], (list, tuple)):
        return [list(s) for s in shape]
    return list(shape)


def _weights_entries(model: Any) -> tuple[list[str], dict[str, np.ndarray]]:
    sd = model.state_dict()
    return list(sd), {f"w/{k}": np.ascontiguousarray(v) for k, v in sd.items()}


def save_model(model: Any, path: Any) -> None:
    """Save architecture + weights + optimizer state + RNG state + epoch counter (atomic)."""
    from gpucnn.module import serialize
    from gpucnn.random import get_state

    path = os.fspath(path)
    names, entries = _weights_entries(model)
    try:
        arch = serialize(model)
    except (ValueError, NotImplementedError) as exc:
        raise ValueError(
            f"save({path!r}): cannot save the architecture of {type(model).__name__}: {exc}"
        ) from exc
    opt_spec = None
    opt = getattr(model, "optimizer", None)
    if opt is not None:
        arrays: dict[str, np.ndarray] = {}
        opt_spec = {
            "class_name": type(opt).__name__,
            "defaults": _encode(dict(getattr(opt, "defaults", {})), arrays, "o/"),
            "state": _encode(opt.state_dict(), arrays, "o/"),
        }
        entries.update(arrays)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "kind": "model",
        "architecture": arch,
        "build_input_shape": _build_shape(model),
        "weights": names,
        "compile": getattr(model, "_compile_config", None),
        "optimizer": opt_spec,
        "loss_scaler": _scaler_state(model),
        "random_state": get_state(),
        "epoch": int(getattr(model, "completed_epochs", 0)),
        "backend": model.backend,
    }
    entries["__meta__"] = np.array(json.dumps(meta))
    _atomic_write(path, entries)


def save_weights(model: Any, path: Any) -> None:
    """Save the state dict only (atomic, checksummed)."""
    path = os.fspath(path)
    names, entries = _weights_entries(model)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "kind": "weights",
        "build_input_shape": _build_shape(model),
        "weights": names,
        "epoch": int(getattr(model, "completed_epochs", 0)),
    }
    entries["__meta__"] = np.array(json.dumps(meta))
    _atomic_write(path, entries)


def _state_from(entries: dict[str, np.ndarray], meta: dict) -> dict[str, np.ndarray]:
    return {k: entries[f"w/{k}"] for k in meta.get("weights", [])}


def _keep_float_dtypes(model: Any, state: dict[str, np.ndarray]) -> None:
    """Give the rebuilt model's floating parameters and buffers the dtype they were saved
    with (a float64 model comes back float64, so training resumes exactly)."""
    from gpucnn.tensor import Tensor

    for k, t in model._state_tensors().items():
        v = state.get(k)
        if (isinstance(t, Tensor) and isinstance(v, np.ndarray) and v.dtype.kind == "f"
                and t.dtype.kind == "f" and v.dtype != t.dtype and v.shape == t.shape):
            t.data = t.data.astype(v.dtype)


def _shape_arg(shape: list) -> Any:
    return tuple(shape) if not (shape and isinstance(shape[0], list)) else shape


def _stage(path: str, what: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, any failure turned into a :class:`CheckpointError` naming the file and
    the step (the file's metadata or arrays do not fit together)."""
    try:
        return fn(*args)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: {what}: {type(exc).__name__}: {exc}") from exc


def _recompile(path: str, model: Any, comp: dict, meta: dict, entries: dict,
               custom_objects: dict | None) -> None:
    loss = comp.get("loss") or (custom_objects or {}).get("loss")
    if loss is None:
        warnings.warn(
            f"load_model({path!r}): the model was compiled with a custom loss; pass "
            "custom_objects={'loss': fn} to re-compile it. Returning it uncompiled.",
            stacklevel=5,
        )
        return
    metrics = [m for m in comp.get("metrics", []) if m is not None]
    metrics = [(custom_objects or {}).get(m, m) for m in metrics]
    opt_spec = meta.get("optimizer")
    if opt_spec is not None:
        opt: Any = _stage(path, "cannot restore the optimizer", _build_optimizer, model,
                          opt_spec, entries)
    else:  # compiled with a named optimizer not created yet: its class, by name
        opt = comp["optimizer"].get("class_name") or "rmsprop"
    model.compile(optimizer=opt, loss=loss, metrics=metrics,
                  from_logits=comp.get("from_logits"),
                  lr=(comp["optimizer"]["config"].get("lr") if isinstance(opt, str)
                      else None), **_policy_kwargs(comp))
    scaler_state = meta.get("loss_scaler")
    scaler = getattr(model, "loss_scaler", None)
    if scaler_state and scaler is not None:
        _stage(path, "cannot restore the loss scaler", scaler.load_state_dict, scaler_state)


def _policy_kwargs(comp: dict) -> dict:
    """``compile``'s ``mixed_precision`` argument of a saved compile config (none when the
    model was compiled without one, so older files re-compile as before)."""
    mp = comp.get("mixed_precision")
    return {} if mp is None else {"mixed_precision": mp}


def _scaler_state(model: Any) -> dict | None:
    """The state of ``model.loss_scaler`` (``compile(mixed_precision="float16")``: scale,
    growth tracker and factors), or None."""
    scaler = getattr(model, "loss_scaler", None)
    return None if scaler is None else dict(scaler.state_dict())


def load_weights(model: Any, path: Any, strict: bool = True) -> None:
    """Load the weights of a checkpoint (``save`` or ``save_weights``) into ``model``.

    An unbuilt model is first built for the input shape recorded in the file.
    """
    path = os.fspath(path)
    meta, entries = read_checkpoint(path)
    if meta.get("kind") == "object":
        raise CheckpointError(
            f"{path}: holds a value saved with gpucnn.save, not model weights; use "
            "model.load_state_dict(gpucnn.load(path))"
        )
    shape = meta.get("build_input_shape")
    if not model.built and shape is not None:
        _stage(path, "cannot build the model for the recorded input shape",
               model.build, _shape_arg(shape))
    try:
        model.load_state_dict(_state_from(entries, meta), strict=strict)
    except (KeyError, ValueError) as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def load_model(
    path: Any,
    backend: str | None = None,
    custom_objects: dict | None = None,
    compile: bool = True,  # noqa: A002 - Keras name
    restore_rng: bool = True,
) -> Any:
    """Rebuild a model saved with ``model.save(path)``.

    Args:
        path: the ``.npz`` checkpoint.
        backend: ``"numpy"`` or ``"cuda"`` (default: the active backend), whatever backend
            the model was saved from.
        custom_objects: ``{class name: class}`` for custom modules/initialisers, and
            ``{"loss": fn}`` for a custom loss.
        compile: re-compile with the saved loss, metrics and optimizer (state restored).
        restore_rng: restore the :mod:`gpucnn.random` state saved with the model (exact
            resume of training).

    Raises:
        FileNotFoundError, CheckpointError: missing, truncated, corrupt or weights-only file.
    """
    from gpucnn.random import get_state, set_state

    path = os.fspath(path)
    before = get_state()
    try:
        return _load_model(path, backend, custom_objects, compile, restore_rng)
    except BaseException:
        set_state(before)  # a refused file leaves the process's RNG as it was
        raise


def _load_model(path: str, backend: str | None, custom_objects: dict | None, compile: bool,  # noqa: A002
                restore_rng: bool) -> Any:
    from gpucnn.module import deserialize
    from gpucnn.random import set_state

    meta, entries = read_checkpoint(path)
    if meta.get("kind") == "object":
        raise CheckpointError(
            f"{path}: holds a value saved with gpucnn.save (e.g. a state dict), not a model; "
            "read it with gpucnn.load(path)"
        )
    if meta.get("kind") != "model" or meta.get("architecture") is None:
        raise CheckpointError(
            f"{path}: holds weights only (saved with save_weights); build the model and call "
            "load_weights() instead"
        )
    from gpucnn.layers.base import weight_budget

    be = backend or _backend.current()
    # the architecture may create at most the weights the file holds (a tampered config with
    # a recomputed checksum must not make us allocate more before the weights are compared)
    with weight_budget(sum(int(a.nbytes) for a in entries.values()), path):
        try:
            model = deserialize(meta["architecture"], custom_objects)
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot rebuild the architecture: {exc}") from exc
        model.to(be)
        shape = meta.get("build_input_shape")
        if not model.built:
            if shape is None:
                raise CheckpointError(f"{path}: the model was saved unbuilt (no input shape)")
            _stage(path, "cannot build the model for the recorded input shape",
                   lambda: model.build(_shape_arg(shape), backend=be))
    state = _state_from(entries, meta)
    _keep_float_dtypes(model, state)
    _stage(path, "the weights do not match the architecture", model.load_state_dict, state)
    comp = meta.get("compile")
    if compile and comp:
        _stage(path, "cannot re-compile the model", _recompile, path, model, comp, meta, entries,
               custom_objects)
    if restore_rng and meta.get("random_state") is not None:
        _stage(path, "cannot restore the RNG state", set_state, meta["random_state"])
    model.completed_epochs = int(meta.get("epoch", 0))
    return model


# ----------------------------------------------------------------------------- save / load


def save(obj: Any, path: Any) -> None:
    """Save ``obj`` to ``path`` (PyTorch's ``torch.save`` for state dicts), atomically and
    checksummed, in the checkpoint format (``.npz`` of ``.npy`` members; never a pickle).

    ``obj``: nested dicts (keys: strings, numbers, bools, None or tuples of them), lists and
    tuples of Tensors and Parameters (their ``requires_grad`` kept), NumPy or device arrays,
    NumPy scalars, Python numbers, strings, bools and None; e.g. ``model.state_dict()``,
    ``optimizer.state_dict()`` or ``{"model": ..., "optimizer": ..., "epoch": 3}``.

    Raises:
        TypeError: ``obj`` holds a value of another type (names it).
    """
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        encoded = _encode(obj, arrays, "a/", tensors=True)
    except TypeError as exc:
        raise TypeError(f"gpucnn.save({path!r}): {exc}; save state dicts, arrays, Tensors, "
                        "numbers and strings (no pickles)") from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"gpucnn.save({path!r}): {exc}") from None
    meta = {"format": FORMAT, "version": VERSION, "kind": "object", "object": encoded}
    try:
        text = json.dumps(meta, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"gpucnn.save({path!r}): cannot store {exc}") from None
    entries = dict(arrays)
    entries["__meta__"] = np.array(text)
    _atomic_write(path, entries)


def load(path: Any, backend: str | None = None, *, map_location: Any = None) -> Any:
    """Read a value saved with :func:`save` (PyTorch's ``torch.load``).

    Args:
        path: the file.
        backend: where every Tensor and array goes: ``"numpy"``/``"cpu"`` or
            ``"cuda"``/``"gpu"``; default: the backend each was saved from (NumPy arrays stay
            NumPy arrays).
        map_location: PyTorch's name for ``backend`` (a name or a :class:`~gpucnn.Device`);
            give one of the two.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a file of :func:`save` (a model checkpoint, a foreign, truncated,
            corrupt or tampered file).
        TypeError, ValueError: a bad ``backend``/``map_location``.
    """
    if backend is not None and map_location is not None:
        raise TypeError(
            f"load: got both backend={backend!r} and map_location={map_location!r}; give one"
        )
    target = backend if backend is not None else map_location
    if target is not None:
        target = _backend.canonical_name(target, allow_auto=False, op="load")
    path = os.fspath(path)
    meta, entries = read_checkpoint(path)
    if meta.get("kind") != "object":
        raise CheckpointError(
            f"{path}: holds a model checkpoint (kind {meta.get('kind')!r}), not a value saved "
            "with gpucnn.save; use gpucnn.load_model(path) or model.load_weights(path)"
        )
    arrays = {k: v for k, v in entries.items() if k.startswith("a/")}

    def place(a: np.ndarray, saved: str) -> Any:
        where = target or saved
        return a.copy() if where == "numpy" else _backend.to_backend(a, where)

    try:
        return _decode(meta["object"], arrays, place=place)
    except (ValueError, TypeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: invalid contents: {exc}") from exc
