"""Training callbacks with Keras semantics (``model.fit(..., callbacks=[...])``).

Hooks: ``on_train_begin/end(logs)``, ``on_epoch_begin(epoch, logs)``,
``on_epoch_end(epoch, logs)`` (``logs`` has ``loss``, the metrics, ``val_*`` and ``lr``),
``on_train_batch_begin/end(batch, logs)`` (aliases ``on_batch_begin/end``),
``on_test_begin/end(logs)``. ``epoch`` is 0-based; file names format it 1-based, as Keras.
A callback sees the model as ``self.model`` and fit's arguments as ``self.params``; setting
``self.model.stop_training = True`` ends training after the current epoch.

Batch logs: ``on_train_batch_end`` gets, as Keras, the RUNNING means of the epoch so far
(``loss`` and each metric) plus ``batch_loss`` (this batch's loss) and ``size`` (its
samples). They are a mapping read from the device on first access: reading a value inside the
hook costs one host read (a device sync) for that step, not reading costs nothing (key tests,
``size`` and keys a callback sets are free). Copy them inside the hook (``dict(logs)``) to
keep them: an unread value of an earlier step raises once the hook has returned. Epoch logs
are plain dicts of floats.
"""

from __future__ import annotations

import csv
import inspect
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from gpucnn._checks import check_int, check_number

__all__ = [
    "Callback",
    "CallbackList",
    "History",
    "EarlyStopping",
    "ModelCheckpoint",
    "LearningRateScheduler",
    "ReduceLROnPlateau",
    "CSVLogger",
    "LambdaCallback",
    "TerminateOnNaN",
]


def _check_monitor(op: str, monitor: Any) -> None:
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(f"{op}: monitor must be the name of a logged value (a str), got "
                        f"{monitor!r}")


def _check_verbose(op: str, verbose: Any) -> int:
    return check_int(op, "verbose", verbose, 0, 2)


class Callback:
    """Base class: override the hooks you need."""

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs: dict | None = None) -> None: ...

    def on_train_end(self, logs: dict | None = None) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.on_batch_end(batch, logs)

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None: ...

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None: ...

    def on_test_begin(self, logs: dict | None = None) -> None: ...

    def on_test_end(self, logs: dict | None = None) -> None: ...


class CallbackList:
    """Dispatches each hook to every callback in order."""

    def __init__(self, callbacks: Iterable[Callback] | None, model: Any, params: dict) -> None:
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"fit(callbacks=...): expected Callback instances, got {type(cb).__name__}"
                )
            cb.set_model(model)
            cb.set_params(params)

    def __getattr__(self, hook: str) -> Callable[..., None]:
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args: Any) -> None:
            for cb in self.callbacks:
                getattr(cb, hook)(*args)

        return call


class History(Callback):
    """Records the logs of every epoch: ``history[key]`` is a list, ``epoch`` the indices."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        # keep earlier epochs if the same History continues (Keras resets; we append)
        pass

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def _resolve_mode(mode: str, monitor: str, who: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{who}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    m = monitor.lower()
    if "acc" in m or m.endswith("auc") or "precision" in m or "recall" in m:
        return "max"
    return "min"


def _monitor_value(logs: dict | None, monitor: str, who: str) -> float | None:
    logs = logs or {}
    if monitor not in logs:
        import warnings

        warnings.warn(
            f"{who}: monitored metric {monitor!r} is not in the logs (available: "
            f"{', '.join(logs)}); skipping",
            stacklevel=3,
        )
        return None
    return float(logs[monitor])


def _optimizer(model: Any, who: str) -> Any:
    opt = getattr(model, "optimizer", None)
    if opt is None and getattr(model, "built", False) and hasattr(model, "_ensure_optimizer"):
        opt = model._ensure_optimizer()
    if opt is None:
        raise RuntimeError(
            f"{who}: the model has no optimizer yet: compile() it, and build it first "
            "(input_shape= on the first layer, or model.build(input_shape)) when it is fed "
            "by a data loader"
        )
    return opt


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Args:
        monitor: a key of the epoch logs (default ``"val_loss"``).
        min_delta: smallest change that counts as an improvement.
        patience: epochs without improvement before stopping (0: stop at the first).
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracies, else min).
        baseline: training stops if the value does not beat it within ``patience`` epochs.
        restore_best_weights: when stopping, load the weights of the best epoch.
        start_from_epoch: epochs to wait before monitoring starts.

    ``stopped_epoch`` is the 0-based epoch at which training stopped (0 if it did not).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        super().__init__()
        op = "EarlyStopping"
        _check_monitor(op, monitor)
        self.monitor = monitor
        self.min_delta = abs(check_number(op, "min_delta", min_delta))
        self.patience = check_int(op, "patience", patience, 0)
        check_number(op, "baseline", baseline, allow_none=True)
        start_from_epoch = check_int(op, "start_from_epoch", start_from_epoch, 0)
        self.verbose = _check_verbose(op, verbose)
        self.mode = _resolve_mode(mode, monitor, "EarlyStopping")
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = int(start_from_epoch)

    def _improved(self, current: float, reference: float) -> bool:
        if self.mode == "min":
            return current < reference - self.min_delta
        return current > reference + self.min_delta

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights: list | None = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        current = _monitor_value(logs, self.monitor, "EarlyStopping")
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._improved(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._improved(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                if self.verbose:
                    print(f"EarlyStopping: restoring weights from epoch {self.best_epoch + 1}")
                self.model.set_weights(self.best_weights)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")


class ModelCheckpoint(Callback):
    """Save the model (or only its weights) at the end of every epoch.

    Args:
        filepath: path; may contain ``{epoch:02d}`` (1-based) and log keys such as
            ``{val_loss:.3f}``.
        monitor: the log key compared when ``save_best_only``.
        save_best_only: save only when ``monitor`` improves (then a fixed ``filepath``
            always holds the best model).
        save_weights_only: :meth:`save_weights` instead of :meth:`save`.
        mode: ``"min"``, ``"max"`` or ``"auto"``.
        save_freq: ``"epoch"`` (the only supported frequency).

    Saves are atomic (see :mod:`gpucnn.saving`): an interrupted save leaves the previous file.
    """

    def __init__(
        self,
        filepath: str | os.PathLike,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq: str = "epoch",
    ) -> None:
        super().__init__()
        if save_freq != "epoch":
            raise ValueError(f"ModelCheckpoint: save_freq must be 'epoch', got {save_freq!r}")
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"ModelCheckpoint: filepath must be a str or a path, got "
                            f"{filepath!r}")
        _check_monitor("ModelCheckpoint", monitor)
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = _check_verbose("ModelCheckpoint", verbose)
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.mode = _resolve_mode(mode, monitor, "ModelCheckpoint")
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved: list[str] = []

    def _path(self, epoch: int, logs: dict) -> str:
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except KeyError as exc:
            raise KeyError(
                f"ModelCheckpoint: filepath {self.filepath!r} refers to {exc} which is not in the "
                f"logs (available: epoch, {', '.join(logs)})"
            ) from None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        if self.save_best_only:
            current = _monitor_value(logs, self.monitor, "ModelCheckpoint")
            if current is None:
                return
            better = current < self.best if self.mode == "min" else current > self.best
            if not better:
                return
            self.best = current
        path = self._path(epoch, logs)
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        self.saved.append(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved {path}")


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of every epoch.

    Args:
        schedule: either a function ``schedule(epoch)`` or ``schedule(epoch, lr)`` returning
            the new learning rate (``epoch`` 0-based, as Keras), or a :mod:`gpucnn.optim`
            schedule object (``StepLR``...), whose ``step()`` is called at the end of every
            epoch (PyTorch's per-epoch convention), or after every training batch with
            ``per_batch=True`` (for schedules counted in iterations: warm-up, cosine decay).
        verbose: print the new rate each epoch (functions only).
        per_batch: step a schedule object after every batch instead of every epoch.

    The learning rate the epoch ran with (with ``per_batch``: the current one) is added to the
    logs as ``lr``.
    """

    def __init__(self, schedule: Any, verbose: int = 0, per_batch: bool = False) -> None:
        super().__init__()
        self.schedule = schedule
        self.verbose = _check_verbose("LearningRateScheduler", verbose)
        self.per_batch = bool(per_batch)
        self._is_object = hasattr(schedule, "step") and not inspect.isfunction(schedule)
        if not self._is_object and not callable(schedule):
            raise TypeError(
                "LearningRateScheduler: schedule must be a function epoch -> lr, "
                f"(epoch, lr) -> lr, or a gpucnn.optim schedule; got {type(schedule).__name__}"
            )
        if self.per_batch and not self._is_object:
            raise ValueError(
                "LearningRateScheduler: per_batch=True needs a gpucnn.optim schedule object "
                "(its step() counts iterations), not a function of the epoch"
            )

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.per_batch:
            self.schedule.step()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._is_object:
            return
        opt = _optimizer(self.model, "LearningRateScheduler")
        try:
            n_args = len(inspect.signature(self.schedule).parameters)
        except (TypeError, ValueError):
            n_args = 2
        lr = self.schedule(epoch, opt.lr) if n_args >= 2 else self.schedule(epoch)
        lr = float(lr)
        if not math.isfinite(lr):
            raise ValueError(f"LearningRateScheduler: schedule returned {lr} at epoch {epoch}")
        opt.lr = lr
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:  # the rate this epoch ran with
            logs["lr"] = float(_optimizer(self.model, "LearningRateScheduler").lr)
        if self._is_object and not self.per_batch:
            self.schedule.step()


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs.

    Keras semantics: ``min_delta`` threshold, ``cooldown`` epochs after a reduction, never
    below ``min_lr``.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        super().__init__()
        op = "ReduceLROnPlateau"
        _check_monitor(op, monitor)
        factor = check_number(op, "factor", factor)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor}")
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = check_int(op, "patience", patience, 0)
        self.verbose = _check_verbose(op, verbose)
        self.mode = _resolve_mode(mode, monitor, "ReduceLROnPlateau")
        self.min_delta = check_number(op, "min_delta", min_delta)
        self.cooldown = check_int(op, "cooldown", cooldown, 0)
        self.min_lr = check_number(op, "min_lr", min_lr, 0.0)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.wait = 0
        self.cooldown_counter = 0
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        opt = _optimizer(self.model, "ReduceLROnPlateau")
        if logs is not None:
            logs["lr"] = float(opt.lr)
        current = _monitor_value(logs, self.monitor, "ReduceLROnPlateau")
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        better = (
            current < self.best - self.min_delta
            if self.mode == "min"
            else current > self.best + self.min_delta
        )
        if better:
            self.best = current
            self.wait = 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = float(opt.lr)
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    opt.lr = new
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing lr to {new}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class CSVLogger(Callback):
    """Write one CSV row per epoch: ``epoch`` (0-based) then the log keys in sorted order.

    Args:
        filename: the CSV path.
        separator: the field separator.
        append: append to an existing file (no second header) instead of overwriting.
    """

    def __init__(self, filename: str | os.PathLike, separator: str = ",",
                 append: bool = False) -> None:
        super().__init__()
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(f"CSVLogger: filename must be a str or a path, got {filename!r}")
        if not isinstance(separator, str) or not separator:
            raise TypeError(f"CSVLogger: separator must be a non-empty str, got {separator!r}")
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = append
        self.keys: list[str] | None = None
        self._file: Any = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        has_header = (
            self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        )
        self.keys = None
        if has_header:
            with open(self.filename, newline="") as f:
                first = f.readline().strip()
            if first:
                self.keys = first.split(self.sep)[1:]
        self._file = open(self.filename, "a" if self.append else "w", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._file, delimiter=self.sep)
        self._need_header = not has_header

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        if self._need_header:
            self._writer.writerow(["epoch", *self.keys])
            self._need_header = False

        def fmt(v: Any) -> Any:
            if isinstance(v, (float, np.floating)):
                return repr(float(v))
            return v

        self._writer.writerow([epoch, *[fmt(logs.get(k, "NA")) for k in self.keys]])
        self._file.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda e, logs: ...)``."""

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        super().__init__()
        for name, fn in hooks.items():
            if not name.startswith("on_"):
                raise ValueError(f"LambdaCallback: unknown hook {name!r}")
            setattr(self, name, fn)


class TerminateOnNaN(Callback):
    """Stop training as soon as the loss is NaN or Inf (Keras's ``TerminateOnNaN``).

    Checks the running loss at the end of every batch (``logs["loss"]``; reading it is one
    host read per step on the GPU, as in Keras) and sets ``model.stop_training``: ``fit``
    stops after that batch. ``stopped_batch`` / ``stopped_epoch`` tell where (None if not).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stopped_batch: int | None = None
        self.stopped_epoch: int | None = None
        self._epoch = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.stopped_batch = self.stopped_epoch = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        if not logs or "loss" not in logs:
            return
        loss = logs["loss"]
        try:
            bad = not math.isfinite(float(loss))
        except (TypeError, ValueError):
            return
        if bad:
            print(f"Batch {batch}: invalid loss {loss}, terminating training")
            self.stopped_batch, self.stopped_epoch = batch, self._epoch
            self.model.stop_training = True
