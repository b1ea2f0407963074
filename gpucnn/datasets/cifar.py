"""CIFAR-10 and CIFAR-100 from the "python version" pickle batches.

Read from the extracted folder (``cifar-10-batches-py/`` or ``cifar-100-python/``) when present,
else straight out of the ``.tar.gz`` (SHA-256 verified, nothing extracted to disk). The batches
are pickles: they are read with a restricted unpickler that resolves only the few globals a
NumPy array needs, so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
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


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import codecs

    # NumPy 2 keeps its internals in numpy._core (numpy.core is a deprecated alias); older
    # NumPy only has numpy.core. Pickles name either module, depending on who wrote them.
    core = getattr(np, "_core", None)
    if core is None or not hasattr(core, "multiarray"):
        core = np.core
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how Python 3 protocol-2 pickles store bytes
    }
    multi, numeric = core.multiarray, getattr(core, "numeric", None)
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multi._reconstruct
        allowed[(f"{prefix}.multiarray", "scalar")] = multi.scalar
        if numeric is not None and hasattr(numeric, "_frombuffer"):
            allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only NumPy array reconstruction globals; anything else is refused."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        obj = _RestrictedUnpickler._allowed.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name}")
        return obj


def safe_unpickle(raw: bytes, name: str = "<bytes>") -> Any:
    """Unpickle ``raw`` allowing only plain containers, bytes/str/numbers and NumPy arrays.

    Raises:
        DatasetError: the pickle is malformed or asks for any other global (names the file).
    """
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:
        raise DatasetError(f"{name}: not a valid CIFAR batch pickle ({exc})") from exc
    return obj


def _parse_batch(raw: bytes, name: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
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
    try:
        labels = np.asarray(d[label_key], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{name}: {label_key!r} is not a list of integers ({exc})") from exc
    if labels.shape != (data.shape[0],):
        raise DatasetError(
            f"{name}: {label_key!r} has shape {labels.shape}, expected ({data.shape[0]},) "
            "to match 'data'"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _reader(dataset: str, folder_name: str, archive: str, root: str | os.PathLike | None,
            download: bool) -> Callable[[list[str]], list[tuple[bytes, str]]]:
    """A function [member names] -> [(bytes, display name)], from the folder or the archive."""
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
                    out.append((path.read_bytes(), str(path)))
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
                for info in tar:  # one sequential pass over the compressed stream
                    if info.name in wanted and info.isfile():
                        f = tar.extractfile(info)
                        if f is not None:
                            found[wanted[info.name]] = f.read()
        except (tarfile.TarError, EOFError, OSError) as exc:
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
    for raw, name in read(members):
        x, y = _parse_batch(raw, name, "labels")
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
    [(raw, name)] = read(["train" if train else "test"])
    x, y = _parse_batch(raw, name, f"{label_mode}_labels")
    return _finish(x, y, normalize)
