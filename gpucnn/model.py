"""``Model``: a :class:`~gpucnn.Module` with the Keras-style training API; ``Sequential``.

``compile(optimizer, loss, metrics)``, ``fit``, ``evaluate``, ``predict``, ``train_on_batch``,
``summary``, ``save``/``save_weights``/``load_weights``. A plain ``Module`` (a layer, a block)
has none of them; subclass :class:`Model` (PyTorch style: layers in ``__init__``, a
``forward``) or use :class:`Sequential` to train with them.

Conventions:

* Models output LOGITS. ``"sparse_categorical_crossentropy"`` and
  ``"categorical_crossentropy"`` apply the softmax inside the loss, ``"binary_crossentropy"``
  the sigmoid. If the model ends in a softmax or sigmoid (a ``Softmax`` layer,
  ``Activation("softmax"/"sigmoid")`` or ``activation="softmax"/"sigmoid"`` on the last
  layer) compile detects it (``from_logits=None``) and the loss takes the log of the
  (clipped) probabilities instead; pass ``from_logits=True/False`` to override.
* Inputs are NCHW (or (N, features)). In-memory arrays are batched by a
  :class:`gpucnn.data.DataLoader` on the model's backend and cast to its dtype (float32 by
  default; integer images are cast, not scaled): pinned, prefetched uploads of host arrays on
  CUDA; device arrays (or cuda Tensors) are batched where they are, never copied to the host.
  ``fit``, ``train_on_batch``, ``evaluate`` and ``predict`` run one train step and one eval step
  (``Model._train_step`` / ``Model._eval_step``).
* Host reads: a training step does not synchronise with the device. The running loss and
  metric sums stay on the device and are read (all together, with the losses' deferred
  target checks, in one transfer: :func:`_host_read`) every ``update_freq`` steps, at the last
  step of each epoch and once at the end of ``evaluate``; ``History`` and the epoch logs get
  the same numbers as reading every step would. ``on_train_batch_end`` receives Keras' batch
  logs (running ``loss`` and metrics, plus ``batch_loss`` and ``size``) as a mapping read on
  first access, so a callback that reads them inside the hook costs one host read for that
  step and one that does not costs none.
* Shuffling draws a permutation per epoch from ``numpy.random.default_rng([seed, epoch])``
  (``seed``: fit's argument, else the :func:`gpucnn.manual_seed` seed), so a run resumed with
  ``initial_epoch=k`` shuffles exactly like an uninterrupted one. ``seed`` does not reseed
  the global generator (dropout masks continue the :mod:`gpucnn.random` stream, which
  :func:`gpucnn.load_model` restores).
"""

from __future__ import annotations

import inspect
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn import metrics as _metrics
from gpucnn.backend.device import is_array as _is_array
from gpucnn.backend.device import is_device_array as _is_device_array
from gpucnn.callbacks import Callback, CallbackList, History
from gpucnn.module import Module, backend_name, deserialize, register_module, serialize
from gpucnn.tensor import Tensor, no_grad

__all__ = ["Model", "Sequential", "LOSSES", "OPTIMIZERS", "move_optimizer_state"]

LOSSES = (
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
    "mse",
    "mean_squared_error",
    "mae",
    "mean_absolute_error",
)
_LOSS_ALIASES = {
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
    "bce": "binary_crossentropy",
}

# Keras default learning rates
OPTIMIZERS = {"sgd": ("SGD", 0.01), "adam": ("Adam", 1e-3), "adamw": ("AdamW", 1e-3),
              "rmsprop": ("RMSprop", 1e-3)}

_PROB_EPS = 1e-7

#: ``fit(update_freq=None)`` on the cuda backend: read the running loss and metrics (a host
#: sync) every this many steps. On NumPy reads are free and the default is every step.
DEFAULT_UPDATE_FREQ = 20


# ----------------------------------------------------------------------------- losses


def _F() -> Any:
    import gpucnn.functional as F

    return F


def _loss_module() -> Any:
    from gpucnn.functional import loss

    return loss


def _host_read(values: Sequence[Any]) -> list[float]:
    """THE host read of ``fit``, ``evaluate`` and ``train_on_batch``: ``values`` (device or
    host 0-d arrays: running sums, a batch loss) as Python floats, read in one device-to-host
    transfer together with the losses' deferred input checks, whose errors are raised here.
    Nothing else in those loops waits for the device."""
    return [float(v) for v in _loss_module().read_host(values)]


def _scalar(value: Tensor) -> Any:
    """A (scalar) loss Tensor's value as a 0-d array (no host read)."""
    if value.size != 1:
        raise ValueError(f"item(): tensor has {value.size} elements, expected 1")
    return value.data.reshape(())


class _Running:
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
        v = _scalar(value)
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
        host = _host_read([acc, *(m.pending() for m in self.metrics), *extra])
        k = 1 + len(self.metrics)
        logs = {"loss": host[0] / self.seen if self.seen else float("nan"),
                **{m.name: m.result(t) for m, t in zip(self.metrics, host[1:k])}}
        self.dirty = False
        return logs, host[k:]


class _BatchLogs(MutableMapping):
    """The ``logs`` of ``on_train_batch_end``: running ``loss`` and metrics (as Keras),
    ``batch_loss`` (this batch) and ``size``, read from the device on first access (one host
    read for all of them). Read them inside the hook: afterwards the running sums move on, and
    reading an unread one raises (``size`` and keys the callbacks set stay readable)."""

    def __init__(self, run: _Running, batch_loss: Any, size: int, step: int,
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


def _update_every(update_freq: Any, backend: str) -> int | None:
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


class _Loss:
    """A compiled loss: ``loss(output Tensor, target Tensor) -> scalar Tensor``."""

    def __init__(self, spec: Any, from_logits: bool) -> None:
        self.from_logits = from_logits
        if callable(spec):
            self.name = getattr(spec, "__name__", "custom_loss")
            self.fn = spec
            self.kind = "custom"
            return
        if not isinstance(spec, str):
            raise ValueError(
                f"compile(loss=...): expected a loss name or a callable, got {spec!r}"
            )
        key = spec.lower()
        key = _LOSS_ALIASES.get(key, key)
        if key not in LOSSES:
            raise ValueError(
                f"compile(loss=...): unknown loss {spec!r}; known: {', '.join(LOSSES)} "
                "or a callable(output, target) -> scalar Tensor"
            )
        self.name = key
        self.kind = key
        self.fn = None

    @property
    def sparse(self) -> bool:
        return self.kind == "sparse_categorical_crossentropy"

    def __call__(self, out: Tensor, y: Tensor) -> Tensor:
        F = _F()
        k = self.kind
        if k == "custom":
            return self.fn(out, y)
        if k == "sparse_categorical_crossentropy":
            if self.from_logits:
                return F.cross_entropy(out, y)
            return F.nll_loss(F.log(F.clip(out, _PROB_EPS, 1.0)), y)
        if k == "categorical_crossentropy":
            if self.from_logits:
                return F.cross_entropy(out, y)
            return -(y * F.log(F.clip(out, _PROB_EPS, 1.0))).sum(axis=1).mean()
        if k == "binary_crossentropy":
            y = y.reshape(out.shape)
            if self.from_logits:
                return F.binary_cross_entropy_with_logits(out, y)
            return F.binary_cross_entropy(F.clip(out, _PROB_EPS, 1.0 - _PROB_EPS), y)
        y = y.reshape(out.shape)
        if k == "mse":
            return F.mse_loss(out, y)
        return (out - y).abs().mean()  # mae


def _check_targets(loss: _Loss, y: Any, out_shape: tuple, where: str) -> None:
    """Validate targets against the model output for the built-in losses."""
    n = out_shape[0]
    if int(y.shape[0]) != n:
        raise ValueError(f"{where}: got {n} outputs but {int(y.shape[0])} targets")
    if loss.sparse:
        if y.ndim > 1 and not (y.ndim == 2 and y.shape[1] == 1):
            raise ValueError(
                f"{where}: loss 'sparse_categorical_crossentropy' expects integer class ids of "
                f"shape (N,), got targets of shape {tuple(y.shape)}; use "
                "'categorical_crossentropy' for one-hot targets"
            )
        if len(out_shape) < 2:
            raise ValueError(
                f"{where}: loss 'sparse_categorical_crossentropy' needs outputs (N, classes), "
                f"got {out_shape}"
            )
        c = out_shape[1]
        # Host labels are checked here for free. Device labels are left to the loss op, which
        # checks the range on the device and reports at the next host read (no sync here).
        if y.size and isinstance(y, np.ndarray) and not _loss_module().defers(y):
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= c:
                raise ValueError(
                    f"{where}: labels must be in [0, {c}) for loss "
                    f"'sparse_categorical_crossentropy' with {c} outputs, got labels in "
                    f"[{lo}, {hi}]"
                )
    elif loss.kind == "categorical_crossentropy":
        if tuple(y.shape) != tuple(out_shape):
            raise ValueError(
                f"{where}: loss 'categorical_crossentropy' expects one-hot/probability targets "
                f"of shape {tuple(out_shape)}, got {tuple(y.shape)}; use "
                "'sparse_categorical_crossentropy' for integer labels"
            )
    elif loss.kind in ("binary_crossentropy", "mse", "mae"):
        if int(np.prod(y.shape)) != int(np.prod(out_shape)):
            raise ValueError(
                f"{where}: loss {loss.kind!r} expects targets with the output's shape "
                f"{tuple(out_shape)}, got {tuple(y.shape)}"
            )


# ----------------------------------------------------------------------------- data


def _is_arraylike(a: Any) -> bool:
    return isinstance(a, (np.ndarray, Tensor)) or _is_device_array(a)


def _raw_array(a: Any) -> Any:
    """``a`` as an array where it already is (host or device; a Tensor's array), else NumPy."""
    if isinstance(a, Tensor):
        return a.data
    return a if _is_arraylike(a) else np.asarray(a)


def _loader_prefetch() -> int:
    """Batches the DataLoader of :class:`_ArrayData` prepares ahead. On the simulated device
    (no real asynchrony to overlap with) it builds each batch at ``next()`` instead, so the
    device events of a step (the per-step budgets the tests count) do not depend on thread
    timing."""
    from gpucnn.backend.device import simulated

    return 0 if simulated() else 2


class _ArrayData:
    """In-memory arrays (NumPy, device arrays, Tensors' arrays; never copied to the host),
    batched by a :class:`gpucnn.data.DataLoader` on the model's backend and dtype: pinned,
    prefetched uploads of host data on CUDA; device data is indexed where it is. Shuffled
    epochs use the loader's seeded order, ``default_rng([seed, epoch]).permutation(n)``."""

    def __init__(self, x: Any, y: Any | None, batch_size: int) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size
        self._loader: Any = None
        self._key: tuple | None = None

    def num_batches(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def split(self, at: int) -> tuple[_ArrayData, _ArrayData]:
        """The first ``at`` samples and the rest (views: no copy)."""
        y = self.y
        return (_ArrayData(self.x[:at], None if y is None else y[:at], self.batch_size),
                _ArrayData(self.x[at:], None if y is None else y[at:], self.batch_size))

    def host_targets(self, backend: str) -> np.ndarray | None:
        """The host targets when batches reach the step on the device: their checks are done
        once on the whole host array (free) instead of deferred per device batch."""
        return self.y if isinstance(self.y, np.ndarray) and backend != "numpy" else None

    def loader(self, backend: str, dtype: Any, shuffle: bool, seed: int | None) -> Any:
        """The DataLoader for these arrays (kept across epochs: its CUDA stream and pinned
        rings are reused)."""
        from gpucnn.data import DataLoader

        key = (backend, np.dtype(dtype).str, bool(shuffle), seed)
        if self._loader is None or self._key != key:
            arrays = (self.x,) if self.y is None else (self.x, self.y)
            self._loader = DataLoader(arrays, batch_size=self.batch_size, shuffle=shuffle,
                                      seed=seed, backend=backend, dtype=dtype,
                                      prefetch=_loader_prefetch())
            self._key = key
        return self._loader

    def batches(self, backend: str, dtype: Any, epoch: int = 0, shuffle: bool = False,
                seed: int | None = None) -> Iterator[tuple]:
        """One epoch's ``(x, y)`` batches (``y`` None without targets)."""
        loader = self.loader(backend, dtype, shuffle, seed if shuffle else None)
        loader.set_epoch(epoch)
        return _Pairs(iter(loader))


class _Pairs:
    """``(x, y)`` pairs from a DataLoader iterator. Keeps no reference to a batch it handed
    out (a generator's loop variable would, across the next upload)."""

    def __init__(self, it: Any) -> None:
        self._it = it

    def __iter__(self) -> _Pairs:
        return self

    def __next__(self) -> tuple:
        b = next(self._it)
        return b[0], (b[1] if len(b) > 1 else None)

    def close(self) -> None:
        """Stop the loader's thread now (an abandoned or failed pass)."""
        self._it.close()


def _close(batches: Any) -> None:
    """Close an iteration over batches (a :class:`_Pairs` or a generator) if it can be."""
    close = getattr(batches, "close", None)
    if callable(close):
        close()


class _IterData:
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

    def batches(self) -> Iterator[tuple]:
        for i, b in enumerate(self.loader):
            if self.steps is not None and i >= self.steps:
                break
            if isinstance(b, (tuple, list)):
                if len(b) < 1 or len(b) > 3:
                    raise ValueError(
                        f"data loader: expected batches (x, y) or x, got a tuple of {len(b)}"
                    )
                yield b[0], (b[1] if len(b) > 1 else None)
            elif isinstance(b, dict):
                yield b["x"], b.get("y")
            else:
                yield b, None

    def set_epoch(self, epoch: int) -> None:
        fn = getattr(self.loader, "set_epoch", None)
        if callable(fn):
            fn(epoch)


def _is_batch(b: Any) -> bool:
    if _is_arraylike(b):
        return True
    return isinstance(b, (list, tuple)) and bool(b) and all(_is_arraylike(v) for v in b)


def _host_or(raw: Any, prepared: Any) -> Any:
    """The host copy of targets when there is one (checks need no device sync)."""
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "iub":
        return raw.reshape(-1) if raw.ndim == 2 and raw.shape[1] == 1 else raw
    return prepared


def _make_data(x: Any, y: Any, batch_size: int, where: str, steps: int | None = None) -> Any:
    if x is None:
        raise ValueError(f"{where}: x is required")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be a positive int, got {batch_size!r}")
    if y is None and isinstance(x, (list, tuple)) and x and all(_is_batch(b) for b in x):
        return _IterData(x, steps)  # a list of batches
    if y is None and not _is_arraylike(x) and not isinstance(x, (list, tuple)):
        if not hasattr(x, "__iter__"):
            raise TypeError(
                f"{where}: x must be an array, a Tensor or an iterable of (x, y) batches, got "
                f"{type(x).__name__}"
            )
        return _IterData(x, steps)
    xa = _raw_array(x)
    if xa.ndim == 0:
        raise ValueError(f"{where}: x must have a batch dimension, got a scalar")
    ya = None
    if y is not None:
        ya = _raw_array(y)
        if ya.ndim == 0 or len(ya) != len(xa):
            raise ValueError(
                f"{where}: x and y have different numbers of samples: x has {len(xa)} "
                f"(shape {tuple(xa.shape)}), y has {len(ya) if ya.ndim else 0} "
                f"(shape {tuple(ya.shape)})"
            )
    return _ArrayData(xa, ya, int(batch_size))


# ----------------------------------------------------------------------------- progress


def _fmt_logs(logs: dict) -> str:
    return " - ".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}"
                      for k, v in logs.items())


def _postfix(logs: dict, rate: float) -> dict:
    """The progress bar's numbers."""
    return {**{k: f"{v:.4f}" for k, v in logs.items()}, "img/s": f"{rate:.0f}"}


def _line(head: str, dt: float, logs: dict, rate: float | None = None) -> str:
    """One summary line (``fit(verbose=2)``'s epochs, ``evaluate(verbose=1)``)."""
    text = f"{head} - {dt:.1f}s - {_fmt_logs(logs)}"
    return text if rate is None else f"{text} - {rate:.0f} img/s"


class _Progress:
    """``fit``'s progress display: a bar per epoch (``verbose=1``) or one :func:`_line`."""

    def __init__(self, verbose: int, epoch: int, epochs: int, total: int | None) -> None:
        self.verbose, self.epoch, self.epochs = verbose, epoch, epochs
        self.t0 = time.perf_counter()
        self.bar = None
        if verbose == 1:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=f"Epoch {epoch + 1}/{epochs}",
                unit="batch",
                file=sys.stdout,
                leave=True,
                dynamic_ncols=True,
                mininterval=0.2,
            )

    def update(self, logs: dict | None, seen: int) -> None:
        """Advance one step; ``logs`` (values just read from the device) refresh the numbers
        shown, ``None`` leaves them (and the rate, only meaningful after a sync) as they are."""
        if self.bar is not None:
            if logs is not None:
                rate = seen / max(time.perf_counter() - self.t0, 1e-9)
                self.bar.set_postfix(_postfix(logs, rate), refresh=False)
            self.bar.update(1)

    def abort(self) -> None:
        """Close the bar of an epoch that raised (nothing is printed for it)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self, logs: dict, seen: int) -> None:
        dt = time.perf_counter() - self.t0
        rate = seen / max(dt, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix(_postfix(logs, rate), refresh=True)
            self.bar.close()
        elif self.verbose == 2:
            print(_line(f"Epoch {self.epoch + 1}/{self.epochs}", dt, logs, rate),
                  file=sys.stdout, flush=True)


# ----------------------------------------------------------------------------- optimizer


def move_optimizer_state(opt: Any, backend: str) -> None:
    """Move every array in ``opt.state`` to ``backend`` (the optimizer copies them into its
    flat buffers at its next step)."""
    be = _backend.get_backend(backend_name(backend))
    for st in getattr(opt, "state", {}).values():
        for k, v in list(st.items()):
            if _is_array(v):
                st[k] = _backend.to_backend(v, be)


# ----------------------------------------------------------------------------- Model


class Model(Module):
    """A Module that trains itself: compile / fit / evaluate / predict / summary / save.

    Subclass it as a Module (assign layers in ``__init__`` after ``super().__init__()``, write
    ``forward``), or use :class:`Sequential`.

    Args:
        name: a display name (default: snake_case class name plus a counter).
    """

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self.optimizer: Any = None
        self.stop_training = False
        self.history: History | None = None
        self.completed_epochs = 0
        self._loss: _Loss | None = None
        self._metric_specs: list = []
        self._optimizer_factory: Callable[[list], Any] | None = None
        self._compile_config: dict | None = None

    # ------------------------------------------------------------------ compile
    def compile(
        self,
        optimizer: Any = "rmsprop",
        loss: Any = None,
        metrics: list | None = None,
        lr: float | None = None,
        from_logits: bool | None = None,
    ) -> None:
        """Configure training.

        Args:
            optimizer: ``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"`` (Keras default
                learning rates 0.01, 1e-3, 1e-3, 1e-3), an :class:`gpucnn.optim.Optimizer`
                instance, or a callable ``params -> Optimizer`` (e.g. ``functools.partial(
                optim.SGD, lr=0.1, momentum=0.9)``) for models whose parameters do not exist
                yet. Named optimizers are created as soon as the model is built.
            loss: a name in :data:`LOSSES` or ``callable(output, target) -> scalar Tensor``.
            metrics: names (see :mod:`gpucnn.metrics`) or callables.
            lr: learning rate for a named optimizer.
            from_logits: whether the model outputs logits; ``None`` detects a final
                softmax/sigmoid (see the module doc).

        Raises:
            ValueError: unknown optimizer, loss or metric name (listing the valid ones).
        """
        from gpucnn import optim

        if loss is None:
            raise ValueError(
                f"compile(loss=...): a loss is required; known: {', '.join(LOSSES)} or a callable"
            )
        if from_logits is None:
            act = self._output_activation()
            from_logits = act not in ("softmax", "sigmoid")
        self._loss = _Loss(loss, bool(from_logits))
        specs = list(metrics or [])
        if isinstance(metrics, str):
            specs = [metrics]
        for m in specs:  # validate names now
            _metrics.get(m, self._loss.name, self._loss.from_logits)
        self._metric_specs = specs
        opt_cfg: dict[str, Any]
        self.optimizer = None
        if isinstance(optimizer, str):
            key = optimizer.lower()
            if key not in OPTIMIZERS:
                raise ValueError(
                    f"compile(optimizer=...): unknown optimizer {optimizer!r}; known: "
                    f"{', '.join(OPTIMIZERS)}, an Optimizer instance or a callable params -> "
                    "Optimizer"
                )
            cls_name, default_lr = OPTIMIZERS[key]
            rate = default_lr if lr is None else float(lr)
            cls = getattr(optim, cls_name)
            self._optimizer_factory = lambda ps: cls(ps, lr=rate)
            opt_cfg = {"class_name": cls_name, "config": {"lr": rate}}
        elif isinstance(optimizer, optim.Optimizer):
            if lr is not None:
                optimizer.lr = float(lr)
            self._optimizer_factory = None
            self.optimizer = optimizer
            opt_cfg = {"class_name": type(optimizer).__name__, "config": {}}
        elif callable(optimizer):
            self._optimizer_factory = optimizer
            opt_cfg = {"class_name": None, "config": {}}
        else:
            raise ValueError(
                f"compile(optimizer=...): expected a name ({', '.join(OPTIMIZERS)}), an "
                f"Optimizer or a callable, got {type(optimizer).__name__}"
            )
        self._compile_config = {
            "optimizer": opt_cfg,
            "loss": self._loss.name if self._loss.kind != "custom" else None,
            "metrics": [m if isinstance(m, str) else getattr(m, "__name__", None) for m in specs],
            "from_logits": bool(from_logits),
        }
        if self.built:
            self._ensure_optimizer()

    def _output_activation(self) -> str | None:
        leaves = [m for m in self.modules() if not list(m.children())]
        for m in reversed(leaves):
            act = getattr(m, "output_activation", None)
            if act is not None:
                return act
            if type(m).__name__ in ("Dropout", "Flatten", "Reshape"):
                continue
            return None
        return None

    def _ensure_optimizer(self) -> Any:
        if self.optimizer is None:
            if self._optimizer_factory is None:
                raise RuntimeError("no optimizer: call compile() first")
            params = self.trainable_parameters()
            if not params:
                raise RuntimeError(f"{self.name}: the model has no trainable parameters")
            self.optimizer = self._optimizer_factory(params)
            cfg = self._compile_config
            if cfg is not None and cfg["optimizer"]["class_name"] is None:
                cfg["optimizer"]["class_name"] = type(self.optimizer).__name__
        return self.optimizer

    def _metric_objects(self, loss: _Loss) -> list:
        """Fresh metric objects of the compiled metrics (accumulated by :class:`_Running`)."""
        return [_metrics.get(m, loss.name, loss.from_logits) for m in self._metric_specs]

    def _require_compiled(self, where: str) -> _Loss:
        if self._loss is None:
            raise RuntimeError(f"{where}: the model is not compiled; call compile(...) first")
        return self._loss

    # ------------------------------------------------------------------ batches
    def _prepare_x(self, xb: Any) -> Tensor:
        be = self.backend
        dt = self.dtype
        if isinstance(xb, Tensor):
            t = xb.to(be) if xb.backend != be else xb
            return t if t.dtype == dt else Tensor(t.data.astype(dt))
        arr = _backend.get_backend(be).xp.asarray(xb)
        if arr.dtype != dt:
            arr = arr.astype(dt)
        return Tensor(arr)

    def _prepare_y(self, yb: Any, loss: _Loss) -> Any:
        be = self.backend
        arr = yb.data if isinstance(yb, Tensor) else yb
        if loss.sparse and not _is_arraylike(arr):
            arr = np.asarray(arr)
        if loss.sparse:  # on the host copy when there is one (free), else on the device
            _loss_module().check_integer_targets("loss 'sparse_categorical_crossentropy'", arr)
        arr = _backend.to_backend(arr, be) if _is_arraylike(arr) else \
            _backend.get_backend(be).xp.asarray(arr)
        if loss.sparse:
            if arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr.reshape(-1)
            return arr.astype(np.int64) if arr.dtype != np.int64 else arr
        if arr.dtype != self.dtype:
            arr = arr.astype(self.dtype)
        return arr

    def _ensure_built_for(self, xb: Any) -> None:
        if not self.built:
            shape = tuple(xb.shape[1:])
            self.check_input_shape(shape)
            self.build(shape)

    # ------------------------------------------------------------------ the steps
    def _batches(self, data: Any, epoch: int = 0, shuffle: bool = False,
                 seed: int | None = None) -> Iterator[tuple]:
        """``(x, y)`` batches of ``data`` (``y`` None when absent); arrays through the
        DataLoader on this model's backend and dtype."""
        if isinstance(data, _ArrayData):
            return data.batches(self.backend, self.dtype, epoch, shuffle, seed)
        return data.batches()

    def _forward_loss(self, xb: Any, yb: Any, loss: _Loss, where: str,
                      y_all: np.ndarray | None = None) -> tuple[int, Any, Tensor, Tensor]:
        """Forward ``xb`` and the loss against ``yb``: ``(n, prepared targets, output, loss)``.
        ``y_all``: the pass's whole host targets, checked here (once) instead of per batch."""
        if yb is None:
            raise ValueError(f"{where}: the data gave batches without targets; yield (x, y)")
        if y_all is not None and loss.sparse:
            _loss_module().check_integer_targets("loss 'sparse_categorical_crossentropy'",
                                                 y_all)
        xt = self._prepare_x(xb)
        ya = self._prepare_y(yb, loss)
        out = self(xt)
        if y_all is not None:
            _check_targets(loss, _host_or(y_all, y_all), (len(y_all), *out.shape[1:]), where)
        _check_targets(loss, _host_or(yb, ya), tuple(out.shape), where)
        return int(xt.shape[0]), ya, out, loss(out, Tensor(ya))

    def _train_step(self, xb: Any, yb: Any, loss: _Loss, run: _Running | None, where: str,
                    y_all: np.ndarray | None = None) -> tuple[int, Any]:
        """THE training step (``fit``, ``train_on_batch``): forward, loss, backward, optimizer
        step, and the batch added to ``run`` (when given). Returns ``(n, batch loss as a 0-d
        array)``; no host read."""
        self._ensure_built_for(xb)
        opt = self._ensure_optimizer()
        n, ya, out, value = self._forward_loss(xb, yb, loss, where, y_all)
        opt.zero_grad()
        value.backward()
        opt.step()
        return n, (_scalar(value) if run is None else run.add(value, n, ya, out.data))

    def _eval_step(self, xb: Any, yb: Any, loss: _Loss | None, run: _Running | None,
                   where: str, y_all: np.ndarray | None = None) -> Tensor:
        """THE evaluation step (``evaluate``, validation, ``predict``; the caller sets eval
        mode): the forward without gradients and, when ``run`` is given, the loss and metrics
        added to it. Returns the output."""
        with no_grad():
            self._ensure_built_for(xb)
            if run is None:
                return self(self._prepare_x(xb))
            n, ya, out, value = self._forward_loss(xb, yb, loss, where, y_all)
            run.add(value, n, ya, out.data)
        return out

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int = 32,
        epochs: int = 1,
        verbose: int = 1,
        callbacks: list[Callback] | None = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: bool = True,
        initial_epoch: int = 0,
        seed: int | None = None,
        steps_per_epoch: int | None = None,
        update_freq: int | str | None = None,
    ) -> History:
        """Train for ``epochs - initial_epoch`` epochs (``epochs`` is the final epoch index).

        Args:
            x, y: arrays/Tensors (N, ...) and targets (N, ...); or ``x`` an iterable of
                ``(x, y)`` batches (e.g. a :class:`gpucnn.data.DataLoader`) with ``y=None``.
            batch_size: samples per step for arrays.
            verbose: 0 silent, 1 a progress bar per epoch (running loss, metrics, img/s),
                2 one line per epoch.
            callbacks: :class:`gpucnn.callbacks.Callback` instances.
            validation_split: fraction of the LAST samples of ``x``/``y`` (taken before
                shuffling, as Keras) held out for validation (arrays only).
            validation_data: ``(x_val, y_val)`` or an iterable of batches (overrides
                ``validation_split``).
            shuffle: shuffle array data each epoch (see the module doc on reproducibility).
            initial_epoch: epoch to start from (to resume training).
            seed: seed of the per-epoch shuffles.
            steps_per_epoch: cap on the batches per epoch (for endless loaders).
            update_freq: how often the running loss and metrics are read from the device
                (the only host sync of a training step, see the module doc): every that many
                steps (an int), ``"batch"`` (every step), ``"epoch"`` (only at the end of an
                epoch), or ``None``: every step on NumPy (reads are free),
                every :data:`DEFAULT_UPDATE_FREQ` steps on cuda. The last step of an epoch is
                always read. The progress bar's numbers refresh at these reads; ``History``
                and the epoch logs are the same whatever the frequency.

        Returns:
            The :class:`History` (also ``self.history``): per-epoch ``loss``, metrics and
            ``val_*``.
        """
        loss = self._require_compiled("fit")
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
        if verbose not in (0, 1, 2):
            raise ValueError(f"fit: verbose must be 0, 1 or 2, got {verbose!r}")
        if not 0.0 <= float(validation_split) < 1.0:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split}")
        every = _update_every(update_freq, self.backend)
        train = _make_data(x, y, batch_size, "fit", steps_per_epoch)
        val = None
        if validation_data is not None:
            if isinstance(validation_data, tuple) and len(validation_data) in (2, 3):
                val = _make_data(validation_data[0], validation_data[1], batch_size,
                                 "fit(validation_data)")
            else:
                val = _make_data(validation_data, None, batch_size, "fit(validation_data)")
        elif validation_split > 0:
            if not isinstance(train, _ArrayData):
                raise ValueError(
                    "fit: validation_split needs array inputs; pass validation_data=loader "
                    "when x is a data loader"
                )
            n = len(train.x)
            split_at = int(round(n * (1.0 - float(validation_split))))
            if split_at <= 0 or split_at >= n:
                raise ValueError(
                    f"fit: validation_split={validation_split} leaves {split_at} training and "
                    f"{n - split_at} validation samples out of {n}"
                )
            train, val = train.split(split_at)
        if isinstance(train, _ArrayData) and train.y is None:
            raise ValueError("fit: y is required when x is an array")
        if isinstance(train, _ArrayData) and len(train.x):
            self._ensure_built_for(train.x[:1])
        if self.built:
            self._ensure_optimizer()  # so callbacks see it from on_train_begin

        base_seed = seed
        if base_seed is None:
            from gpucnn.random import generator, initial_seed

            base_seed = initial_seed()
            if base_seed is None:
                base_seed = int(generator("numpy").integers(2**31))

        history = History()
        params = {"epochs": epochs, "steps": train.num_batches(), "verbose": verbose,
                  "batch_size": batch_size}
        cbs = CallbackList([*(callbacks or []), history], self, params)  # History last
        self.history = history
        self.stop_training = False
        metric_objs = self._metric_objects(loss)
        run = _Running(metric_objs)
        keys = ["loss", *(m.name for m in metric_objs)]
        cbs.on_train_begin({})
        logs: dict = {}
        for epoch in range(int(initial_epoch), int(epochs)):
            cbs.on_epoch_begin(epoch, {})
            if isinstance(train, _IterData):
                train.set_epoch(epoch)
            self.train()
            run.reset()
            total = train.num_batches()
            prog = _Progress(verbose, epoch, int(epochs), total)
            logs = {}
            y_all = train.host_targets(self.backend) if isinstance(train, _ArrayData) else None
            batches: Any = None
            try:
                batches = self._batches(train, epoch, shuffle, int(base_seed))
                step = -1  # counted by hand: enumerate would keep the last batch alive
                for xb, yb in batches:
                    step += 1
                    cbs.on_train_batch_begin(step, {})
                    n, lv = self._train_step(xb, yb, loss, run, "fit", y_all)
                    y_all = None  # checked once per epoch
                    batch_logs = _BatchLogs(run, lv, n, step, keys)
                    refresh = (every is not None and (step + 1) % every == 0) or (
                        total is not None and step + 1 >= total
                    )
                    if refresh:  # the step's one host read
                        logs = {k: v for k, v in batch_logs.resolve().items() if k in keys}
                    prog.update(logs if refresh else None, run.seen)
                    cbs.on_train_batch_end(step, batch_logs)
                    batch_logs.close()
                    # Drop this step's arrays before the next upload, so the memory pool
                    # serves the next step from them (one generation of buffers, not two).
                    xb = yb = lv = batch_logs = None  # type: ignore[assignment]
                    if self.stop_training:
                        break
                if run.seen == 0:
                    raise ValueError("fit: the training data produced no batches")
                if run.dirty:  # data of unknown length, or stopped early: read the epoch's end
                    logs, _ = run.read()
            except BaseException:
                prog.abort()
                raise
            finally:
                _close(batches)  # stop an abandoned epoch's loader thread now
                batches = None
            if val is not None:
                vlogs = self._run_eval(val, loss, metric_objs, "fit(validation)")
                logs.update({f"val_{k}": v for k, v in vlogs.items()})
            prog.close(logs, run.seen)
            self.completed_epochs = epoch + 1
            cbs.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cbs.on_train_end(logs)
        return history

    # ------------------------------------------------------------------ evaluate / predict
    def _run_eval(self, data: Any, loss: _Loss, metric_objs: list, where: str) -> dict:
        """One pass of :meth:`_eval_step` over ``data``: the logs, in one host read."""
        was = self.training
        self.eval()
        run = _Running(metric_objs)
        run.reset()
        y_all = data.host_targets(self.backend) if isinstance(data, _ArrayData) else None
        batches: Any = None
        try:
            batches = self._batches(data)
            for xb, yb in batches:
                self._eval_step(xb, yb, loss, run, where, y_all)
                y_all = xb = yb = None  # type: ignore[assignment]
        finally:
            _close(batches)
            self.train(was)
        if run.seen == 0:
            raise ValueError(f"{where}: the data produced no batches")
        return run.read()[0]  # the pass's one host read

    def evaluate(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int = 32,
        verbose: int = 0,
        return_dict: bool = False,
    ) -> Any:
        """Loss and metrics on ``x``/``y`` (or a loader), in eval mode without gradients.

        Returns, as Keras: the loss (a float) when there are no metrics, else
        ``[loss, metric...]``; a dict ``{"loss": ..., name: ...}`` with ``return_dict``.
        """
        loss = self._require_compiled("evaluate")
        data = _make_data(x, y, batch_size, "evaluate")
        if isinstance(data, _ArrayData) and data.y is None:
            raise ValueError("evaluate: y is required when x is an array")
        metric_objs = self._metric_objects(loss)
        t0 = time.perf_counter()
        logs = self._run_eval(data, loss, metric_objs, "evaluate")
        if verbose:
            print(_line("evaluate", time.perf_counter() - t0, logs))
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    def predict(self, x: Any, batch_size: int = 32, verbose: int = 0) -> np.ndarray:
        """Model outputs for ``x`` (array/Tensor (N, ...) or an iterable of batches), batched,
        in eval mode without gradients; a NumPy array (N, ...)."""
        data = _make_data(x, None, batch_size, "predict")
        was = self.training
        self.eval()
        outs: list[np.ndarray] = []
        batches: Any = None
        try:
            batches = self._batches(data)
            for xb, _ in batches:
                outs.append(self._eval_step(xb, None, None, None, "predict").numpy())
                if verbose:
                    print(f"predict: {sum(len(o) for o in outs)} samples", end="\r")
        finally:
            _close(batches)
            self.train(was)
        if not outs:
            return np.zeros((0,), dtype=np.float32)
        return np.concatenate(outs, axis=0)

    def train_on_batch(self, x: Any, y: Any) -> float:
        """One optimisation step on one batch; returns the loss."""
        loss = self._require_compiled("train_on_batch")
        self.train()
        _, lv = self._train_step(x, y, loss, None, "train_on_batch")
        return _host_read([lv])[0]

    # ------------------------------------------------------------------ summary
    def summary(self, input_shape: Any = None, print_fn: Callable[[str], Any] | None = print,
                line_length: int = 92) -> str:
        """Print and return a Keras-like table: layer (type), output shape, parameters and
        forward FLOPs per sample (a multiply-add counts 2) of each top-level layer; then the
        total / trainable / non-trainable parameter counts (buffers such as batch-norm running
        statistics are not parameters; they are listed separately).

        Args:
            input_shape: per-sample input shape, needed when the model is not built and has
                no ``input_shape`` on its first layer.
        """
        shape = input_shape
        if shape is None:
            shape = getattr(self, "input_shape", None) or self.__dict__.get("_build_input_shape")
        if shape is None:
            raise ValueError(
                f"summary(): the input shape of {self.name} is unknown; pass input_shape=(C, H, "
                "W), give the first layer input_shape=..., or run a batch through it first"
            )
        shape = tuple(shape) if not (shape and isinstance(shape[0], (list, tuple))) else shape
        if not self.built:
            self.build(shape)
        rows = self._summary_rows(shape)
        total = self.count_params()
        trainable = self.count_params(True)
        n_buf = sum(b.size for b in self.buffers())
        # Columns grow to fit the longest entry (plus a space), so they never run together.
        w = [
            max(30, line_length - 62, *(len(r[0]) + 1 for r in rows)),
            max(26, *(len(r[1]) + 1 for r in rows)),
            14,
            16,
        ]
        sep = "─" * sum(w)
        lines = [f'Model: "{self.name}" ({type(self).__name__}), input (None, '
                 f'{", ".join(map(str, shape))})', sep,
                 f"{'Layer (type)':<{w[0]}}{'Output Shape':<{w[1]}}{'Param #':>{w[2]}}"
                 f"{'FLOPs':>{w[3]}}", "═" * sum(w)]
        for name, out, p, fl in rows:
            lines.append(f"{name:<{w[0]}}{out:<{w[1]}}{p:>{w[2]},}{fl:>{w[3]},}")
        lines += [
            sep,
            f"Total params: {total:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}",
            f"Buffers (not parameters, e.g. running statistics): {n_buf:,}",
            f"Forward FLOPs per sample: {sum(r[3] for r in rows):,}",
            sep,
        ]
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def _summary_rows(self, shape: Any) -> list[tuple[str, str, int, int]]:
        """``(name (type), output shape, params, FLOPs)`` of each child, from a traced run."""
        rows: list[tuple[str, str, int, int]] = []
        table = self._trace_children(shape)
        for _, child in self.named_children():
            if id(child) in table:
                ins, out = table[id(child)]
                fl = int(child.flops(ins))
                out_s = _shape_str(out)
            else:
                fl, out_s = 0, "(not called)"
            rows.append((f"{child.name} ({type(child).__name__})", out_s,
                         child.count_params(), fl))
        own = sum(p.size for p in self._parameters.values() if p is not None)
        if own:
            rows.append(("(own parameters)", "", own, 0))
        return rows

    # ------------------------------------------------------------------ devices
    def to(self, backend: str) -> Model:
        """Move the parameters, buffers and the optimizer's state to ``backend`` (see
        :meth:`Module.to`); training continues where it stopped. Returns ``self``."""
        super().to(backend)
        if self.optimizer is not None:
            move_optimizer_state(self.optimizer, backend_name(backend))
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: Any) -> None:
        """Save architecture, weights, optimizer state, RNG state and epoch counter to one
        ``.npz`` file, atomically (see :mod:`gpucnn.saving`)."""
        from gpucnn.saving import save_model

        save_model(self, path)

    def save_weights(self, path: Any) -> None:
        """Save only the state dict (atomically, checksummed)."""
        from gpucnn.saving import save_weights

        save_weights(self, path)

    def load_weights(self, path: Any, strict: bool = True) -> None:
        """Load a state dict saved by :meth:`save_weights` or :meth:`save`."""
        from gpucnn.saving import load_weights

        load_weights(self, path, strict=strict)


@register_module
class Sequential(Model):
    """A linear stack of layers (a :class:`Model`): ``forward`` calls them in order.

    Args:
        layers: initial layers (Modules).
        name: display name.

    If the first layer was given ``input_shape=(C, H, W)``, every added layer is built at once
    (so :meth:`summary` works before any data) and inputs are checked against that shape.
    """

    def __init__(self, layers: Iterable[Module] | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        object.__setattr__(self, "_input_shape", None)
        object.__setattr__(self, "_out_shape", None)
        for layer in layers or ():
            self.add(layer)

    @property
    def layers(self) -> list[Module]:
        return list(self._modules.values())

    @property
    def input_shape(self) -> tuple | None:
        """Per-sample input shape, when known (from ``input_shape=`` or the first build)."""
        return self._input_shape

    def add(self, layer: Module) -> Sequential:
        """Append ``layer`` (built at once when the input shape is known)."""
        if not isinstance(layer, Module):
            raise TypeError(
                f"Sequential.add: expected a layer (Module), got {type(layer).__name__}"
            )
        first = not self._modules
        self._modules[str(len(self._modules))] = layer
        if first and getattr(layer, "_input_shape_arg", None) is not None:
            object.__setattr__(self, "_input_shape", tuple(layer._input_shape_arg))
            object.__setattr__(self, "_out_shape", self._input_shape)
        if self._out_shape is not None:
            try:
                if not layer.built:
                    layer.check_input_shape(self._out_shape)
                    layer.build(self._out_shape, backend=self._backend_name)
                else:
                    layer.check_input_shape(self._out_shape)
                object.__setattr__(self, "_out_shape", tuple(layer.output_shape(self._out_shape)))
            except Exception:
                self._modules.pop(str(len(self._modules) - 1))
                raise
        return self

    def pop(self) -> Module:
        """Remove and return the last layer."""
        if not self._modules:
            raise IndexError("Sequential.pop: no layers")
        layer = self._modules.pop(str(len(self._modules) - 1))
        if self._input_shape is not None:
            shape: Any = self._input_shape
            for m in self.layers:
                shape = tuple(m.output_shape(shape))
            object.__setattr__(self, "_out_shape", shape)
        return layer

    def __getitem__(self, idx: int | slice) -> Any:
        layers = self.layers
        if isinstance(idx, slice):
            return Sequential(layers[idx])
        return layers[idx]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def build(self, input_shape: Any, backend: str | None = None) -> None:
        shape = tuple(input_shape)
        if self._input_shape is None:
            object.__setattr__(self, "_input_shape", shape)
        be = backend or self._backend_name
        for layer in self.layers:
            layer.check_input_shape(shape)
            if not layer.built:
                layer.build(shape, backend=be)
            shape = tuple(layer.output_shape(shape))
        object.__setattr__(self, "_out_shape", shape)

    def check_input_shape(self, shape: Any) -> None:
        exp = self._input_shape
        if exp is not None and tuple(shape) != tuple(exp):
            raise ValueError(
                f"{self.name} (Sequential): input shape mismatch: expected (None, "
                f"{', '.join(map(str, exp))}), received (N, {', '.join(map(str, shape))})"
            )
        if exp is None and self.layers:
            self.layers[0].check_input_shape(shape)

    def _build_from_inputs(self, args: tuple) -> None:
        first = args[0] if args else None
        if not isinstance(first, Tensor):
            raise TypeError(f"{self.name}: expected a Tensor input, got {type(first).__name__}")
        self.check_input_shape(tuple(first.shape[1:]))
        # layers build themselves lazily in forward (on the input's backend)

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def output_shape(self, input_shape: Any) -> Any:
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = tuple(layer.output_shape(shape))
        return shape

    def flops(self, input_shape: Any) -> int:
        total, shape = 0, tuple(input_shape)
        for layer in self.layers:
            total += layer.flops(shape)
            shape = tuple(layer.output_shape(shape))
        return total

    def _summary_rows(self, shape: Any) -> list[tuple[str, str, int, int]]:
        rows: list[tuple[str, str, int, int]] = []
        s = shape
        for layer in self.layers:
            out = tuple(layer.output_shape(s))
            rows.append((f"{layer.name} ({type(layer).__name__})", _shape_str(out),
                         layer.count_params(), int(layer.flops(s))))
            s = out
        return rows

    def get_config(self) -> dict:
        return {"layers": [serialize(m) for m in self.layers], "name": self.name}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Module:
        layers = [deserialize(s, custom_objects) for s in config.get("layers", [])]
        return cls(layers, name=config.get("name"))


def _shape_str(shape: Any) -> str:
    if isinstance(shape, list):
        return ", ".join(_shape_str(s) for s in shape)
    return "(None, " + ", ".join(str(s) for s in shape) + ")" if shape else "(None,)"


def _accepts_n_args(fn: Callable[..., Any]) -> int:
    try:
        return len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return 2
