"""The data adapters of ``fit``, ``evaluate`` and ``predict``: what ``x``/``y`` can be.

:func:`make_data` turns the arguments into an :class:`ArrayData` (in-memory arrays, host or
device, batched by a :class:`gpucnn.data.DataLoader` on the model's backend and dtype) or an
:class:`IterData` (any iterable of ``(x, y)`` batches, e.g. a DataLoader); :func:`iter_batches`
gives one epoch of ``(x, y)`` pairs of either (``(x, y, sample_weight)`` triples with
``triples=True``, the weight None where there is none), and :func:`close_batches` stops an
abandoned pass's loader thread.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from gpucnn.backend.device import is_device_array as _is_device_array
from gpucnn.backend.precision import is_bfloat16
from gpucnn.data import DataLoader
from gpucnn.tensor import Tensor

__all__ = ["LOADER_PREFETCH", "ArrayData", "IterData", "Pairs", "close_batches", "iter_batches",
           "is_arraylike", "is_batch", "make_data", "raw_array"]

#: Batches the DataLoader of :class:`ArrayData` prepares ahead (in its worker thread).
LOADER_PREFETCH = 2


def is_arraylike(a: Any) -> bool:
    return isinstance(a, (np.ndarray, Tensor)) or _is_device_array(a)


def raw_array(a: Any) -> Any:
    """``a`` as an array where it already is (host or device; a Tensor's array), else NumPy."""
    if isinstance(a, Tensor):
        return a.data
    return a if is_arraylike(a) else np.asarray(a)


class ArrayData:
    """In-memory arrays (NumPy, device arrays, Tensors' arrays; never copied to the host),
    batched by a :class:`gpucnn.data.DataLoader` on the model's backend and dtype: pinned,
    prefetched uploads of host data on CUDA; device data is indexed where it is. Shuffled
    epochs use the loader's seeded order, ``default_rng([seed, epoch]).permutation(n)``.
    ``w``: optional per-sample weights ``(N,)``, batched with ``x`` and ``y``."""

    def __init__(self, x: Any, y: Any | None, batch_size: int, w: Any | None = None) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size
        self.w = w
        self._loader: Any = None
        self._key: tuple | None = None

    def num_batches(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def split(self, at: int) -> tuple[ArrayData, ArrayData]:
        """The first ``at`` samples and the rest (views: no copy)."""
        y, w = self.y, self.w
        return (ArrayData(self.x[:at], None if y is None else y[:at], self.batch_size,
                          None if w is None else w[:at]),
                ArrayData(self.x[at:], None if y is None else y[at:], self.batch_size,
                          None if w is None else w[at:]))

    def host_targets(self, backend: str) -> np.ndarray | None:
        """The host targets when batches reach the step on the device: their checks are done
        once on the whole host array (free) instead of deferred per device batch."""
        return self.y if isinstance(self.y, np.ndarray) and backend != "numpy" else None

    def loader(self, backend: str, dtype: Any, shuffle: bool, seed: int | None) -> Any:
        """The DataLoader for these arrays (kept across epochs: its CUDA stream and pinned
        rings are reused). It yields raw arrays (``tensors=False``): the step wraps them."""
        key = (backend, np.dtype(dtype).str, bool(shuffle), seed, id(self.w))
        if self._loader is None or self._key != key:
            arrays = (self.x,) if self.y is None else (self.x, self.y)
            if self.w is not None and self.y is not None:
                arrays = (*arrays, self.w)
            self._loader = DataLoader(arrays, batch_size=self.batch_size, shuffle=shuffle,
                                      seed=seed, backend=backend, dtype=dtype,
                                      prefetch=LOADER_PREFETCH, tensors=False)
            self._key = key
        return self._loader

    def batches(self, backend: str, dtype: Any, epoch: int = 0, shuffle: bool = False,
                seed: int | None = None, triples: bool = False) -> Iterator[tuple]:
        """One epoch's ``(x, y)`` batches (``y`` None without targets); ``(x, y, w)`` with
        ``triples`` (``w`` None without weights)."""
        loader = self.loader(backend, dtype, shuffle, seed if shuffle else None)
        loader.set_epoch(epoch)
        return Pairs(iter(loader), triples)


class Pairs:
    """``(x, y)`` pairs (``(x, y, w)`` triples) from a DataLoader iterator. Keeps no
    reference to a batch it handed out (a generator's loop variable would, across the next
    upload)."""

    def __init__(self, it: Any, triples: bool = False) -> None:
        self._it = it
        self._triples = triples

    def __iter__(self) -> Pairs:
        return self

    def __next__(self) -> tuple:
        b = next(self._it)
        if self._triples:
            return b[0], (b[1] if len(b) > 1 else None), (b[2] if len(b) > 2 else None)
        return b[0], (b[1] if len(b) > 1 else None)

    def close(self) -> None:
        """Stop the loader's thread now (an abandoned or failed pass)."""
        self._it.close()


def close_batches(batches: Any) -> None:
    """Close an iteration over batches (a :class:`Pairs` or a generator) if it can be."""
    close = getattr(batches, "close", None)
    if callable(close):
        close()


class IterData:
    """Batches from any iterable of ``(x, y)`` (or ``x``) batches, e.g. a DataLoader."""

    def __init__(self, loader: Iterable, steps: int | None = None) -> None:
        self.loader, self.steps = loader, steps

    def num_batches(self) -> int | None:
        if self.steps is not None:
            return self.steps
        try:
            return len(self.loader)  # type: ignore[arg-type]
        except TypeError:
            return None

    def batches(self, triples: bool = False) -> Iterator[tuple]:
        """The batches as ``(x, y)``, or ``(x, y, sample_weight)`` with ``triples`` (a batch
        ``(x, y, w)`` or a dict with ``"sample_weight"`` gives its weights, else None)."""
        for i, b in enumerate(self.loader):
            if self.steps is not None and i >= self.steps:
                break
            if isinstance(b, (tuple, list)):
                if len(b) < 1 or len(b) > 3:
                    raise ValueError(
                        f"data loader: expected batches (x, y), (x, y, sample_weight) or x, "
                        f"got a tuple of {len(b)}"
                    )
                x, y, w = b[0], (b[1] if len(b) > 1 else None), (b[2] if len(b) > 2 else None)
            elif isinstance(b, dict):
                x, y, w = b["x"], b.get("y"), b.get("sample_weight")
            else:
                x, y, w = b, None, None
            yield (x, y, w) if triples else (x, y)

    def set_epoch(self, epoch: int) -> None:
        fn = getattr(self.loader, "set_epoch", None)
        if callable(fn):
            fn(epoch)


def is_batch(b: Any) -> bool:
    if is_arraylike(b):
        return True
    return isinstance(b, (list, tuple)) and bool(b) and all(is_arraylike(v) for v in b)


def make_data(x: Any, y: Any, batch_size: int, where: str, steps: int | None = None) -> Any:
    if x is None:
        raise ValueError(f"{where}: x is required")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be a positive int, got {batch_size!r}")
    if y is None and isinstance(x, (list, tuple)) and x and all(is_batch(b) for b in x):
        return IterData(x, steps)  # a list of batches
    if y is None and not is_arraylike(x) and not isinstance(x, (list, tuple)):
        if not hasattr(x, "__iter__"):
            raise TypeError(
                f"{where}: x must be an array, a Tensor or an iterable of (x, y) batches, got "
                f"{type(x).__name__}"
            )
        return IterData(x, steps)
    try:
        xa = raw_array(x)
    except ValueError:
        raise ValueError(f"{where}: x is ragged (nested lists of different lengths)") from None
    if is_bfloat16(xa.dtype):  # ml_dtypes.bfloat16 (kind 'V'): exact in float32
        xa = xa.astype(np.float32)
    if xa.dtype.kind not in "biuf":
        raise TypeError(f"{where}: x must hold numbers, got dtype {xa.dtype}")
    if xa.ndim == 0:
        raise ValueError(f"{where}: x must have a batch dimension, got a scalar")
    ya = None
    if y is not None:
        try:
            ya = raw_array(y)
        except ValueError:
            raise ValueError(f"{where}: y is ragged (nested lists of different lengths)") \
                from None
        if ya.dtype.kind in "USO":
            raise TypeError(
                f"{where}: y holds {'strings' if ya.dtype.kind in 'US' else 'objects'} (dtype "
                f"{ya.dtype}); labels must be integer class ids (or one-hot rows): encode them "
                "first, e.g. classes, y = np.unique(y, return_inverse=True)"
            )
        if ya.dtype.kind not in "biuf":
            raise TypeError(f"{where}: y must hold numbers, got dtype {ya.dtype}")
        if ya.ndim == 0 or len(ya) != len(xa):
            raise ValueError(
                f"{where}: x and y have different numbers of samples: x has {len(xa)} "
                f"(shape {tuple(xa.shape)}), y has {len(ya) if ya.ndim else 0} "
                f"(shape {tuple(ya.shape)})"
            )
    return ArrayData(xa, ya, int(batch_size))


def iter_batches(data: ArrayData | IterData, backend: str, dtype: Any, epoch: int = 0,
                 shuffle: bool = False, seed: int | None = None,
                 triples: bool = False) -> Iterator[tuple]:
    """One epoch's ``(x, y)`` batches of ``data`` (``y`` None when absent; ``(x, y, w)`` with
    ``triples``); arrays through the DataLoader on ``backend`` and ``dtype`` (an iterable's
    batches come as they are)."""
    if isinstance(data, ArrayData):
        return data.batches(backend, dtype, epoch, shuffle, seed, triples)
    return data.batches(triples)
