"""Checkpoints: ``model.save(path)`` / :func:`load_model`, ``save_weights`` / ``load_weights``.

Format: ONE ``.npz`` file (a zip of ``.npy`` members, readable with ``numpy.load`` and
``allow_pickle=False``):

* ``__meta__``: a JSON string: format name and version, ``kind`` (``"model"`` or
  ``"weights"``), the architecture (``{"class_name", "config"}``, see
  :func:`gpucnn.module.serialize`), the per-sample input shape the model was built for, the
  compile settings, the optimizer class, hyper-parameters and the structure of its state (array
  leaves replaced by references), the :mod:`gpucnn.random` state, and the number of completed
  epochs;
* ``w/<name>``: every state-dict entry (parameters and persistent buffers), as NumPy arrays;
* ``o/<i>``: the optimizer's state arrays (momentum buffers, Adam moments, ...);
* ``__sha256__``: SHA-256 over every other entry (name, dtype, shape and bytes), verified on
  load, so a truncated or corrupted file raises :class:`CheckpointError` naming the file
  instead of loading garbage.

Writes are atomic: the file is written to a temporary file in the same directory, flushed and
fsync'ed, then ``os.replace``'d over ``path`` (and the directory fsync'ed), so a crash mid-write
leaves the previous checkpoint intact.

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
import os
import tempfile
import warnings
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn.backend.device import is_array as _is_array

__all__ = [
    "CheckpointError",
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



def _encode(v: Any, arrays: dict[str, np.ndarray], prefix: str) -> Any:
    """JSON-able structure of ``v`` with arrays moved to ``arrays`` (keys ``prefix<i>``)."""
    if _is_array(v):
        key = f"{prefix}{len(arrays)}"
        arrays[key] = np.ascontiguousarray(_backend.to_numpy(v))
        return {"__array__": key}
    if isinstance(v, dict):
        return {"__dict__": [[_encode(k, arrays, prefix), _encode(x, arrays, prefix)]
                             for k, x in v.items()]}
    if isinstance(v, tuple):
        return {"__tuple__": [_encode(x, arrays, prefix) for x in v]}
    if isinstance(v, list):
        return [_encode(x, arrays, prefix) for x in v]
    if isinstance(v, np.generic):
        return {"__scalar__": v.dtype.str, "value": v.item()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"cannot save a value of type {type(v).__name__} in a checkpoint")


def _decode(v: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(v, list):
        return [_decode(x, arrays) for x in v]
    if isinstance(v, dict):
        if "__array__" in v:
            return arrays[v["__array__"]]
        if "__dict__" in v:
            return {_decode(k, arrays): _decode(x, arrays) for k, x in v["__dict__"]}
        if "__tuple__" in v:
            return tuple(_decode(x, arrays) for x in v["__tuple__"])
        if "__scalar__" in v:
            return np.dtype(v["__scalar__"]).type(v["value"])
        return {k: _decode(x, arrays) for k, x in v.items()}
    return v


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


def _write_npz(f: Any, entries: dict[str, np.ndarray]) -> None:
    """Write the archive to the open binary file ``f`` (a seam for crash tests)."""
    np.savez(f, **entries)


def _atomic_write(path: str, entries: dict[str, np.ndarray]) -> None:
    entries = dict(entries)
    entries["__sha256__"] = np.array(_digest(entries))
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
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
    with contextlib.suppress(OSError, AttributeError):
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def read_checkpoint(path: Any) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, entries)`` of a checkpoint, after verifying its SHA-256.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a gpucnn checkpoint, truncated, or corrupt (names the file).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            entries = {k: z[k] for k in z.files}
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot read the checkpoint (truncated or corrupt file?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if "__sha256__" not in entries or "__meta__" not in entries:
        raise CheckpointError(f"{path}: not a gpucnn checkpoint (no __meta__/__sha256__ entry)")
    stored = str(entries["__sha256__"])
    if _digest(entries) != stored:
        raise CheckpointError(f"{path}: checksum mismatch: the checkpoint is corrupt")
    try:
        meta = json.loads(str(entries["__meta__"]))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: unreadable metadata: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a gpucnn checkpoint (format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {meta.get('version')} is newer than this gpucnn "
            f"supports ({VERSION})"
        )
    return meta, entries


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


def load_weights(model: Any, path: Any, strict: bool = True) -> None:
    """Load the weights of a checkpoint (``save`` or ``save_weights``) into ``model``.

    An unbuilt model is first built for the input shape recorded in the file.
    """
    path = os.fspath(path)
    meta, entries = read_checkpoint(path)
    shape = meta.get("build_input_shape")
    if not model.built and shape is not None:
        model.build(tuple(shape) if not (shape and isinstance(shape[0], list)) else shape)
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
    from gpucnn.module import deserialize
    from gpucnn.random import set_state

    path = os.fspath(path)
    meta, entries = read_checkpoint(path)
    if meta.get("kind") != "model" or meta.get("architecture") is None:
        raise CheckpointError(
            f"{path}: holds weights only (saved with save_weights); build the model and call "
            "load_weights() instead"
        )
    be = backend or _backend.current()
    try:
        model = deserialize(meta["architecture"], custom_objects)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot rebuild the architecture: {exc}") from exc
    model.to(be)
    shape = meta.get("build_input_shape")
    if not model.built:
        if shape is None:
            raise CheckpointError(f"{path}: the model was saved unbuilt (no input shape)")
        model.build(tuple(shape) if not (shape and isinstance(shape[0], list)) else shape,
                    backend=be)
    model.load_state_dict(_state_from(entries, meta))
    comp = meta.get("compile")
    if compile and comp:
        loss = comp.get("loss") or (custom_objects or {}).get("loss")
        if loss is None:
            warnings.warn(
                f"load_model({path!r}): the model was compiled with a custom loss; pass "
                "custom_objects={'loss': fn} to re-compile it. Returning it uncompiled.",
                stacklevel=2,
            )
        else:
            metrics = [m for m in comp.get("metrics", []) if m is not None]
            metrics = [(custom_objects or {}).get(m, m) for m in metrics]
            opt_spec = meta.get("optimizer")
            if opt_spec is not None:
                opt: Any = _build_optimizer(model, opt_spec, entries)
            else:  # compiled with a named optimizer not created yet: its class, by name
                opt = comp["optimizer"].get("class_name") or "rmsprop"
            model.compile(optimizer=opt, loss=loss, metrics=metrics,
                          from_logits=comp.get("from_logits"),
                          lr=(comp["optimizer"]["config"].get("lr") if isinstance(opt, str)
                              else None))
    if restore_rng and meta.get("random_state") is not None:
        set_state(meta["random_state"])
    model.completed_epochs = int(meta.get("epoch", 0))
    return model
