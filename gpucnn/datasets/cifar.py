"""CIFAR-10 and CIFAR-100 from the "python version" pickle batches.

Read from the extracted folder (``cifar-10-batches-py/`` or ``cifar-100-python/``) when present,
else straight out of the ``.tar.gz`` (SHA-256 verified, nothing extracted to disk). The batches
are pickles: they are read with a restricted unpickler that resolves only checked stand-ins of
the few globals a NumPy array needs, so a crafted file cannot run code, cannot yield an array
without data (uninitialised memory) and cannot make gpucnn allocate more than the data it holds.
File and archive-member sizes are checked against what a batch can be before they are read.
Labels must be integers in range (0..9 for CIFAR-10, 0..99 fine / 0..19 coarse for CIFAR-100).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gpucnn.datasets._download import (
    DatasetError,
    DatasetNotFoundError,
    cache_dir,
    dataset_dir,
    fetch_file,
)

__all__ = [
    "CIFAR10_CLASSES",
    "load_cifar10",
    "load_cifar100",
    "safe_unpickle",
]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


#: Dtypes an array inside a CIFAR pickle may have (plain numbers; never objects, structured or
#: void types): the byte-order-qualified ``dtype.str`` forms.
_ARRAY_DTYPES = frozenset(
    np.dtype(t).newbyteorder(o).str
    for t in ("b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8", "c8", "c16")
    for o in "<>"
)
_DTYPE_CODE = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248]|c(8|16)|[?bBhHiIlLqQefdFD])")


class _PickleRefused(pickle.UnpicklingError):
    """Raised inside the restricted unpickler (wrapped into :class:`DatasetError`)."""


class _PendingDtype:
    """What ``numpy.dtype(code, align, copy)`` returns in a CIFAR pickle: the plain dtype
    ``code`` names, whose BUILD state may only set the byte order. NumPy's own
    ``dtype.__setstate__`` must never see a pickle's state: a malformed one crashes it."""

    __slots__ = ("dtype", "built")

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype, self.built = dtype, False

    def __setstate__(self, state: Any) -> None:
        if self.built:
            raise _PickleRefused("dtype state given twice")
        if not isinstance(state, tuple) or not 5 <= len(state) <= 9 \
                or not isinstance(state[0], int) or state[1] not in ("<", ">", "|", "=") \
                or not all(v is None or v == {} or (type(v) is int and v in (-1, 0))
                           for v in state[2:]):
            raise _PickleRefused(f"refused dtype state {state!r:.80}")
        self.built = True
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def _check_dtype(dt: Any, what: str) -> np.dtype:
    if isinstance(dt, _PendingDtype):
        dt = dt.dtype
    if not isinstance(dt, np.dtype) or dt.str not in _ARRAY_DTYPES or dt.names is not None \
            or dt.subdtype is not None or dt != np.dtype(dt.str):
        raise _PickleRefused(f"{what}: refused dtype {dt!r} (only plain numeric arrays)")
    return dt


def _shape_of(shape: Any, what: str) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0
            for n in shape):
        raise _PickleRefused(f"{what}: bad array shape {shape!r}")
    return tuple(int(n) for n in shape)


def _array_from_bytes(raw: Any, dt: np.dtype, shape: tuple[int, ...], fortran: bool,
                      what: str) -> np.ndarray:
    """A fresh, writable array of ``shape`` filled from ``raw``, whose length must be exactly
    what ``shape`` and ``dt`` need: nothing is allocated before that is checked."""
    if isinstance(raw, str):  # Python 2 pickles (read with encoding="latin1")
        try:
            raw = raw.encode("latin1")
        except UnicodeEncodeError as exc:
            raise _PickleRefused(f"{what}: array data is not a byte string") from exc
    if not isinstance(raw, (bytes, bytearray)):
        raise _PickleRefused(
            f"{what}: array data must be a byte string, got {type(raw).__name__}"
        )
    need = math.prod(shape) * dt.itemsize
    if len(raw) != need:
        raise _PickleRefused(
            f"{what}: array declares shape {shape} {dt} ({need} bytes) but holds "
            f"{len(raw)} bytes of data"
        )
    flat = np.frombuffer(raw, dtype=dt)
    return np.array(flat.reshape(shape, order="F" if fortran else "C"), copy=True)


class _PendingArray:
    """What ``_reconstruct`` returns: an array still without data. Pickle's BUILD hands it
    its state (shape, dtype, data); one never given a state is refused after loading (NumPy's
    own ``_reconstruct`` would leave it uninitialised memory)."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise _PickleRefused("array state given twice")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _PickleRefused(f"bad array state of type {type(state).__name__}")
        if len(state) == 5:
            if state[0] != 1:
                raise _PickleRefused(f"unsupported array state version {state[0]!r}")
            state = state[1:]
        shape, dt, fortran, raw = state
        shape = _shape_of(shape, "array")
        dt = _check_dtype(dt, "array")
        self.array = _array_from_bytes(raw, dt, shape, bool(fortran), "array")


class _Guarded:
    """A stand-in for an allowed global: callable, but its state can never be set."""

    __slots__ = ("_name", "_fn")

    def __init__(self, name: str, fn: Callable[..., Any] | None) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: Any) -> Any:
        if self._fn is None:
            raise _PickleRefused(f"refused to call {self._name}")
        return self._fn(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise _PickleRefused(f"refused to set an attribute of {self._name}")

    def __setstate__(self, state: Any) -> None:
        raise _PickleRefused(f"refused to set the state of {self._name}")

    def __reduce__(self) -> Any:
        raise TypeError(f"{self._name} stand-in is not picklable")


_NDARRAY = _Guarded("numpy.ndarray", None)  # only valid as _reconstruct's first argument


def _reconstruct(subtype: Any, shape: Any = None, code: Any = None) -> _PendingArray:
    if subtype is not _NDARRAY:
        raise _PickleRefused("_reconstruct: only plain numpy.ndarray is allowed")
    if shape != (0,) or code not in (b"b", "b"):
        raise _PickleRefused(
            f"_reconstruct: unexpected arguments {shape!r}, {code!r} (NumPy writes (0,), b'b')"
        )
    return _PendingArray()


def _dtype(code: Any, align: Any = False, copy: Any = True) -> _PendingDtype:
    if not isinstance(code, str) or not _DTYPE_CODE.fullmatch(code):
        raise _PickleRefused(f"refused dtype {code!r} (only plain numeric dtypes)")
    return _PendingDtype(np.dtype(code))


def _scalar(dt: Any, raw: Any = None) -> Any:
    dt = _check_dtype(dt, "scalar")
    # a Python number: nothing a later BUILD could reach NumPy's __setstate__ through
    return _array_from_bytes(raw, dt, (), False, "scalar")[()].item()


def _frombuffer(buf: Any, dt: Any, shape: Any, order: Any = "C") -> _PendingArray:
    dt = _check_dtype(dt, "array")
    if order not in ("C", "F"):
        raise _PickleRefused(f"array: bad order {order!r}")
    out = _PendingArray()  # wrapped, so that no BUILD can reach the real array's __setstate__
    out.array = _array_from_bytes(buf, dt, _shape_of(shape, "array"), order == "F", "array")
    return out


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # How Python 3 writes bytes in protocol-2 pickles: encode(latin-1 text, "latin1"). Only
    # that: other codecs (hex, base64, zlib, ...) could expand data or run arbitrary codecs.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _PickleRefused(f"_codecs.encode: refused {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    if args:
        raise _PickleRefused("bytes(...): only bytes() without arguments is allowed")
    return b""


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Guarded("numpy.dtype", _dtype),
        ("_codecs", "encode"): _Guarded("_codecs.encode", _encode),
        # how Python 3 writes b"" in protocol-2 pickles: bytes() (no arguments: nothing else)
        ("builtins", "bytes"): _Guarded("bytes", _empty_bytes),
        ("__builtin__", "bytes"): _Guarded("bytes", _empty_bytes),
    }
    # NumPy 2 keeps its internals in numpy._core, older NumPy in numpy.core: pickles name
    # either module, depending on who wrote them. Both map to the checked stand-ins.
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = _Guarded("_reconstruct",
                                                                    _reconstruct)
        allowed[(f"{prefix}.multiarray", "scalar")] = _Guarded("scalar", _scalar)
        allowed[(f"{prefix}.numeric", "_frombuffer")] = _Guarded("_frombuffer", _frombuffer)
    return allowed


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Resolves only checked stand-ins of NumPy's array reconstruction; nothing else.

    The pure-Python unpickler, not the C one: its memo is a dict, where the C unpickler's is
    an array sized by the largest memo index a pickle names (a few bytes saying "put at
    index 2**31" would make it allocate and clear gigabytes)."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise _PickleRefused(f"refused to load global {module}.{name}")
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise _PickleRefused("refused a persistent id")


def _resolve(obj: Any, seen: dict[int, Any], depth: int = 0) -> Any:
    """``obj`` with every :class:`_PendingArray` replaced by its array (refused if it has
    none); containers are walked once each (pickles may share or nest them cyclically)."""
    if isinstance(obj, _PendingArray):
        if obj.array is None:
            raise _PickleRefused(
                "an array was reconstructed without its data (its contents would be "
                "uninitialised memory)"
            )
        return obj.array
    if isinstance(obj, _Guarded):
        raise _PickleRefused(f"a bare {obj._name} object is not data")
    if isinstance(obj, _PendingDtype):
        return obj.dtype
    if not isinstance(obj, (list, dict, tuple, set, frozenset)):
        return obj
    if id(obj) in seen:
        return seen[id(obj)]
    if depth > 64:
        raise _PickleRefused("containers nested more than 64 deep")
    if isinstance(obj, list):
        seen[id(obj)] = obj
        obj[:] = [_resolve(v, seen, depth + 1) for v in obj]
        return obj
    if isinstance(obj, dict):
        seen[id(obj)] = obj
        items = [(_resolve(k, seen, depth + 1), _resolve(v, seen, depth + 1))
                 for k, v in obj.items()]
        obj.clear()
        try:
            obj.update(items)
        except TypeError as exc:  # an array as a key
            raise _PickleRefused(f"unhashable dict key ({exc})") from exc
        return obj
    seen[id(obj)] = obj  # tuple, set, frozenset: rebuilt if an element was replaced
    out = [_resolve(v, seen, depth + 1) for v in obj]
    if any(a is not b for a, b in zip(out, obj)):
        if not isinstance(obj, tuple):
            raise _PickleRefused("an array inside a set")
        seen[id(obj)] = tuple(out)
    return seen[id(obj)]


def safe_unpickle(raw: bytes, name: str = "<bytes>") -> Any:
    """Unpickle ``raw`` allowing only plain containers, bytes/str/numbers and NumPy arrays of
    plain numeric dtypes, each fully specified (shape, dtype and exactly that many bytes of
    data): nothing is called but checked stand-ins of NumPy's reconstruction functions, and
    nothing is allocated beyond the data the pickle itself holds.

    Raises:
        DatasetError: the pickle is malformed, asks for any other global, or holds an array
            without (or with the wrong amount of) data; the message names the file.
    """
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
        return _resolve(obj, {})
    except RecursionError as exc:
        raise DatasetError(f"{name}: not a valid CIFAR batch pickle (nested too deeply)") \
            from exc
    except Exception as exc:
        raise DatasetError(f"{name}: not a valid CIFAR batch pickle ({exc})") from exc


#: The most images one batch file holds (the real files: 10,000 per CIFAR-10 batch, 50,000 in
#: CIFAR-100's ``train``); a file or archive member may be at most :func:`_max_bytes` of that.
_MAX_IMAGES = {"data_batch": 10_000, "test_batch": 10_000, "train": 50_000, "test": 10_000}
#: A CIFAR archive is ~180 MB of tar: reading stops (refused) past this many bytes/members.
_MAX_ARCHIVE_BYTES = 1 << 30
_MAX_ARCHIVE_MEMBERS = 10_000


def _max_images(member: str) -> int:
    return _MAX_IMAGES["data_batch" if member.startswith("data_batch") else member]


def _max_bytes(member: str) -> int:
    """The largest pickle a batch may be: its images and generous room for labels/names."""
    return _max_images(member) * (3 * 32 * 32 + 256) + (1 << 20)


def _parse_batch(raw: bytes, name: str, label_key: str, n_classes: int, max_images: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    obj = safe_unpickle(raw, name)
    if not isinstance(obj, dict):
        raise DatasetError(f"{name}: expected a dict batch, got {type(obj).__name__}")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    for key in ("data", label_key):
        if key not in d:
            raise DatasetError(
                f"{name}: missing key {key!r} (has {sorted(map(str, d))})"
            )
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        desc = (f"array {data.dtype} {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DatasetError(f"{name}: 'data' must be a uint8 array (N, 3072), got {desc}")
    n = data.shape[0]
    if n > max_images:
        raise DatasetError(f"{name}: {n} images, more than such a batch holds ({max_images})")
    raw_labels = d[label_key]
    # A flat list of ints (or a 1-D integer array) only: np.asarray of nested lists that a
    # pickle shares by reference could allocate far more than the file holds.
    if isinstance(raw_labels, np.ndarray):
        ok = raw_labels.ndim == 1 and raw_labels.dtype.kind in "iu"
    else:
        ok = isinstance(raw_labels, (list, tuple)) and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
            for v in raw_labels)
    if not ok:
        raise DatasetError(f"{name}: {label_key!r} is not a flat list of integers")
    if len(raw_labels) != n:
        raise DatasetError(
            f"{name}: {label_key!r} has shape ({len(raw_labels)},), expected ({n},) "
            "to match 'data'"
        )
    bad = [v for v in raw_labels if not 0 <= int(v) < n_classes]
    if bad:
        raise DatasetError(
            f"{name}: {label_key!r} holds {len(bad)} value(s) outside 0..{n_classes - 1} "
            f"(e.g. {int(bad[0])})"
        )
    labels = np.asarray(raw_labels, dtype=np.int64).reshape(n)
    return data.reshape(-1, 3, 32, 32), labels


def _reader(dataset: str, folder_name: str, archive: str, root: str | os.PathLike | None,
            download: bool) -> Callable[[list[str]], list[tuple[bytes, str]]]:
    """A function [member names] -> [(bytes, display name)], from the folder or the archive.

    Sizes are checked before anything is read: a file or archive member larger than the batch
    it stands for can be (:func:`_max_bytes`) is refused, never read or inflated."""
    for base in (dataset_dir(dataset, root), cache_dir(root)):
        folder = base / folder_name
        if folder.is_dir():
            def read_folder(members: list[str], folder: Path = folder
                            ) -> list[tuple[bytes, str]]:
                out = []
                for member in members:
                    path = folder / member
                    if not path.is_file():
                        raise DatasetNotFoundError(f"{dataset}: {path} not found")
                    size, limit = path.stat().st_size, _max_bytes(member)
                    if size > limit:
                        raise DatasetError(
                            f"{path}: {size} bytes, more than a CIFAR batch {member!r} can "
                            f"be ({limit}); refused without reading it"
                        )
                    with open(path, "rb") as f:
                        out.append((f.read(size + 1), str(path)))
                    if len(out[-1][0]) > size:
                        raise DatasetError(f"{path}: grew while being read; refused")
                return out

            return read_folder
    try:
        path = fetch_file(dataset, archive, root, download)
    except DatasetNotFoundError as exc:
        raise DatasetNotFoundError(
            f"{exc}\n(an extracted folder {dataset_dir(dataset, root) / folder_name} "
            "works too)"
        ) from None

    def read_archive(members: list[str]) -> list[tuple[bytes, str]]:
        wanted = {f"{folder_name}/{m}": m for m in members}
        found: dict[str, bytes] = {}
        try:
            with tarfile.open(path, "r:gz") as tar:
                for count, info in enumerate(tar):  # one sequential pass over the stream
                    member = wanted.get(info.name) if info.isfile() else None
                    if member is not None and info.size > _max_bytes(member):
                        raise DatasetError(
                            f"{path}: member {info.name} declares {info.size} bytes, more "
                            f"than a CIFAR batch can be ({_max_bytes(member)}); refused "
                            "before inflating it"
                        )
                    if count >= _MAX_ARCHIVE_MEMBERS or \
                            info.offset_data + max(info.size, 0) > _MAX_ARCHIVE_BYTES:
                        raise DatasetError(
                            f"{path}: more members or bytes than a CIFAR archive holds "
                            f"(at most {_MAX_ARCHIVE_MEMBERS} members, {_MAX_ARCHIVE_BYTES} "
                            "bytes); refused"
                        )
                    if member is None:
                        continue
                    if member in found:
                        raise DatasetError(f"{path}: member {info.name} appears twice")
                    f = tar.extractfile(info)
                    if f is not None:
                        data = f.read(info.size)
                        if len(data) != info.size:
                            raise DatasetError(
                                f"{path}: member {info.name} truncated ({len(data)} of "
                                f"{info.size} bytes)"
                            )
                        found[member] = data
                # read to the end of the gzip stream: its CRC and length catch a cut file
                drained = 0
                while chunk := tar.fileobj.read(1 << 20):
                    drained += len(chunk)
                    if drained > 16 << 20:
                        raise DatasetError(f"{path}: trailing data after the archive; refused")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt or truncated archive ({exc})") from exc
        missing = [m for m in members if m not in found]
        if missing:
            raise DatasetError(
                f"{path}: member(s) {', '.join(folder_name + '/' + m for m in missing)} "
                "not found in the archive"
            )
        return [(found[m], f"{path}:{folder_name}/{m}") for m in members]

    return read_archive


def _finish(x: np.ndarray, y: np.ndarray, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    if normalize:
        return x.astype(np.float32) / np.float32(255.0), y
    return np.ascontiguousarray(x), y


def load_cifar10(
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = False,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10: 50,000 training or 10,000 test 32x32 colour images in 10 classes.

    Read from ``<root>/cifar10/cifar-10-batches-py/`` or ``<root>/cifar10/cifar-10-python.tar.gz``
    (also directly under ``<root>``); ``download=True`` fetches the archive.

    Returns:
        ``(images, labels)``: ``(N, 3, 32, 32)`` float32 in [0, 1] (uint8 if
        ``normalize=False``) and ``(N,)`` int64; names in :data:`CIFAR10_CLASSES`.
    """
    read = _reader("cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz", root, download)
    members = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    xs, ys = [], []
    for (raw, name), member in zip(read(members), members):
        x, y = _parse_batch(raw, name, "labels", 10, _max_images(member))
        xs.append(x)
        ys.append(y)
    return _finish(np.concatenate(xs), np.concatenate(ys), normalize)


def load_cifar100(
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = False,
    label_mode: str = "fine",
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-100: 100 fine classes (``label_mode="fine"``) or 20 superclasses (``"coarse"``).

    Read from ``<root>/cifar100/cifar-100-python/`` or ``<root>/cifar100/cifar-100-python.tar.gz``.

    Returns:
        ``(images, labels)``: ``(N, 3, 32, 32)`` float32 in [0, 1] (uint8 if
        ``normalize=False``) and ``(N,)`` int64.
    """
    if label_mode not in ("fine", "coarse"):
        raise ValueError(
            f"load_cifar100: label_mode must be 'fine' or 'coarse', got {label_mode!r}"
        )
    read = _reader("cifar100", "cifar-100-python", "cifar-100-python.tar.gz", root, download)
    member = "train" if train else "test"
    [(raw, name)] = read([member])
    x, y = _parse_batch(raw, name, f"{label_mode}_labels", 100 if label_mode == "fine" else 20,
                        _max_images(member))
    return _finish(x, y, normalize)
