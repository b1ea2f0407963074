"""Metric accumulation of one pass over the data, kept on the device, and THE host read.

:class:`Running` sums the sample-weighted loss and the metrics where the data is (no host
read per step); :func:`host_read` reads them (with the losses' deferred target checks) in one
device-to-host transfer; :class:`BatchLogs` is ``on_train_batch_end``'s lazily read ``logs``;
:func:`update_every` turns ``fit(update_freq=...)`` into steps between reads.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn.backend.device import is_device_array as _is_device_array
from gpucnn.tensor import Tensor, no_grad
from gpucnn.train.losses import loss_ops

__all__ = ["DEFAULT_UPDATE_FREQ", "BatchLogs", "Running", "host_read", "scalar", "update_every"]

#: ``fit(update_freq=None)`` on the cuda backend: read the running loss and metrics (a host
#: sync) every this many steps. On NumPy reads are free and the default is every step.
DEFAULT_UPDATE_FREQ = 20


def host_read(values: Sequence[Any]) -> list[float]:
    """THE host read of ``fit``, ``evaluate`` and ``train_on_batch``: ``values`` (device or
    host 0-d arrays: running sums, a batch loss) as Python floats, read in one device-to-host
    transfer together with the losses' deferred input checks, whose errors are raised here.
    Nothing else in those loops waits for the device."""
    return [float(v) for v in loss_ops().read_host(values)]


def scalar(value: Tensor) -> Any:
    """A (scalar) loss Tensor's value as a 0-d array (no host read)."""
    if value.numel() != 1:
        raise ValueError(f"item(): tensor has {value.numel()} elements, expected 1")
    return value.data.reshape(())


class Running:
    """Running sums of one pass over the data, kept where the data is: the sample-weighted loss
    (float64 0-d array, updated in place) and the metrics' sums; samples seen (host int)."""

    def __init__(self, metrics: list) -> None:
        self.metrics = metrics
        self.loss_sum: Any = None
        self._scaled: Any = None
        self.seen = 0
        self.dirty = False

    def reset(self) -> None:
        if self.loss_sum is not None:
            self.loss_sum.fill(0)
        for m in self.metrics:
            m.reset()
        self.seen = 0
        self.dirty = False

    def add(self, value: Tensor, n: int, y: Any, out: Any) -> Any:
        """Add a batch: its (scalar) loss ``value`` for ``n`` samples, and the metrics of
        ``out`` against ``y``. Returns the loss as a 0-d array. No host read."""
        v = scalar(value)
        xp = _backend.backend_of(v).xp
        acc = self.loss_sum
        if acc is None or _is_device_array(acc) != _is_device_array(v):
            acc = self.loss_sum = xp.zeros((), dtype=np.float64)
            self._scaled = xp.zeros((), dtype=np.float64)
        # loss_sum += float64(v) * n, in place: exactly the arithmetic of summing
        # float(value.item()) * n in a Python float, without reading the value.
        sc = self._scaled
        sc[...] = v
        xp.multiply(sc, n, out=sc)
        xp.add(acc, sc, out=acc)
        self.seen += n
        with no_grad():
            for m in self.metrics:
                m.update(y, out)
        self.dirty = True
        return v

    def read(self, extra: Sequence[Any] = ()) -> tuple[dict, list[float]]:
        """The logs (mean loss, metrics) and ``extra`` values, in one host read."""
        acc = 0.0 if self.loss_sum is None else self.loss_sum
        # A metric's pending value is one 0-d array, or a tuple of them (Precision/Recall:
        # true positives and the denominator), read in the same transfer.
        parts: list[Any] = []
        sizes: list[int | None] = []
        for m in self.metrics:
            p = m.pending()
            if isinstance(p, tuple):
                parts.extend(p)
                sizes.append(len(p))
            else:
                parts.append(p)
                sizes.append(None)
        host = host_read([acc, *parts, *extra])
        results, pos = {}, 1
        for m, size in zip(self.metrics, sizes):
            if size is None:
                results[m.name] = m.result(host[pos])
                pos += 1
            else:
                results[m.name] = m.result(tuple(host[pos : pos + size]))
                pos += size
        logs = {"loss": host[0] / self.seen if self.seen else float("nan"), **results}
        self.dirty = False
        return logs, host[pos:]


class BatchLogs(MutableMapping):
    """The ``logs`` of ``on_train_batch_end``: running ``loss`` and metrics (as Keras),
    ``batch_loss`` (this batch) and ``size``, read from the device on first access (one host
    read for all of them). Read them inside the hook: afterwards the running sums move on, and
    reading an unread one raises (``size`` and keys the callbacks set stay readable)."""

    def __init__(self, run: Running, batch_loss: Any, size: int, step: int,
                 keys: list[str]) -> None:
        self._run, self._loss, self._size, self._step = run, batch_loss, size, step
        self._keys = [*keys, "batch_loss", "size"]
        self._values: dict | None = None
        self._extra: dict = {}
        self._open = True

    @property
    def resolved(self) -> bool:
        return self._values is not None

    def resolve(self) -> dict:
        if self._values is None:
            if not self._open:
                raise RuntimeError(
                    f"fit: the batch logs of step {self._step} were read after "
                    "on_train_batch_end returned; the running values have moved on since. Read "
                    "them (or copy them: dict(logs)) inside the hook"
                )
            logs, (bl,) = self._run.read([self._loss])
            self._values = {**logs, "batch_loss": bl, "size": self._size}
        return self._values

    def close(self) -> None:
        self._open = False

    def __getitem__(self, key: str) -> Any:
        if key in self._extra:
            return self._extra[key]
        if key == "size" and "size" in self._keys:
            return self._size
        if key not in self._keys:
            raise KeyError(key)
        return self.resolve()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._extra[key] = value

    def __delitem__(self, key: str) -> None:
        if key in self._extra:
            del self._extra[key]
        elif key in self._keys:
            self._keys.remove(key)
        else:
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:  # no read (Mapping's would get the value)
        return key in self._extra or key in self._keys

    def __iter__(self) -> Iterator[str]:
        yield from self._keys
        yield from (k for k in self._extra if k not in self._keys)

    def __len__(self) -> int:
        return len(self._keys) + sum(k not in self._keys for k in self._extra)

    def copy(self) -> dict:
        return dict(self)

    def __repr__(self) -> str:
        return repr(dict(self))


def update_every(update_freq: Any, backend: str) -> int | None:
    """Steps between host reads for ``fit(update_freq=...)`` (``None``: at epoch end only)."""
    if update_freq is None:
        return 1 if backend == "numpy" else DEFAULT_UPDATE_FREQ
    if update_freq == "batch":
        return 1
    if update_freq == "epoch":
        return None
    if isinstance(update_freq, (int, np.integer)) and not isinstance(update_freq, bool) \
            and update_freq >= 1:
        return int(update_freq)
    raise ValueError(
        f"fit: update_freq must be a positive int, 'batch', 'epoch' or None, got {update_freq!r}"
    )
