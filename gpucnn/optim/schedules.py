"""Learning-rate schedules with PyTorch semantics (``torch.optim.lr_scheduler``).

Call ``optimizer.step()`` then ``scheduler.step()`` once per epoch (or per iteration). On
construction a schedule records ``initial_lr`` in every parameter group and applies its
value for step 0. Every schedule has ``step()``, ``get_last_lr()``, ``state_dict()`` and
``load_state_dict()``.

Composition: warm-up followed by another schedule is :class:`SequentialLR`::

    warm = LinearWarmup(opt, warmup_steps=5, start_factor=0.1)     # = LinearLR(...)
    cos = CosineAnnealingLR(opt, T_max=95)
    sched = SequentialLR(opt, [warm, cos], milestones=[5])

or, in one call, :func:`warmup` (``warmup(opt, cos, warmup_steps=5)`` builds the same).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from typing import Any

from gpucnn._checks import check_int, check_number
from gpucnn.optim.optimizers import Optimizer

__all__ = [
    "LRScheduler",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "LinearLR",
    "LinearWarmup",
    "SequentialLR",
    "ReduceLROnPlateau",
    "warmup",
]


class LRScheduler:
    """Base class. Subclasses define ``get_lr()`` (recursive form, from the groups' current
    lr) and optionally ``_closed_form()`` (from ``base_lrs``, used by ``step(epoch)``).

    Attributes:
        optimizer: the :class:`~gpucnn.optim.Optimizer` whose groups' ``lr`` is set.
        base_lrs: each group's ``initial_lr``.
        last_epoch: index of the last step (0 right after construction).
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__}: {type(optimizer).__name__} is not a gpucnn Optimizer"
            )
        check_int(type(self).__name__, "last_epoch", last_epoch, -1)
        if not optimizer.param_groups:
            raise ValueError(
                f"{type(self).__name__}: the {type(optimizer).__name__} has no parameters yet "
                "(built without them, Keras style); bind it first (model.compile binds it once "
                "the model is built, or optimizer.bind(model.parameters())), then create the "
                "schedule"
            )
        self.optimizer = optimizer
        if last_epoch == -1:
            for g in optimizer.param_groups:
                g.setdefault("initial_lr", g["lr"])
        else:
            for i, g in enumerate(optimizer.param_groups):
                if "initial_lr" not in g:
                    raise KeyError(
                        f"{type(self).__name__}: 'initial_lr' missing in param_groups[{i}] when "
                        f"resuming with last_epoch={last_epoch}"
                    )
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._is_initial = False
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def _group_lrs(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _closed_form(self) -> list[float] | None:
        return None

    def step(self, epoch: int | None = None) -> None:
        """Advance one step (or jump to ``epoch`` with the closed form) and set the lrs."""
        self._step_count += 1
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = int(epoch)
            values = self._closed_form()
            if values is None:
                values = self.get_lr()
        for g, lr in zip(self.optimizer.param_groups, values):
            g["lr"] = lr
        self._last_lr = self._group_lrs()

    def get_last_lr(self) -> list[float]:
        """The learning rates set by the last step, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """Every attribute but the optimizer."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the attributes saved by :meth:`state_dict`."""
        self.__dict__.update(state_dict)


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` steps: ``base * gamma**(t // size)``."""

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        step_size = check_int("StepLR", "step_size", step_size)
        if step_size <= 0:
            raise ValueError(f"StepLR: step_size must be a positive integer, got {step_size}")
        self.step_size = step_size
        self.gamma = check_number("StepLR", "gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]

    def _closed_form(self) -> list[float]:
        return [b * self.gamma ** (self.last_epoch // self.step_size) for b in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the lr by ``gamma`` at each step listed in ``milestones`` (repeats compound)."""

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(milestones, (list, tuple, range)):
            raise TypeError(f"MultiStepLR: milestones must be a list of ints, got {milestones!r}")
        self.milestones = Counter(check_int("MultiStepLR", "milestone", m, 0) for m in milestones)
        self.gamma = check_number("MultiStepLR", "gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch not in self.milestones:
            return self._group_lrs()
        k = self.milestones[self.last_epoch]
        return [lr * self.gamma**k for lr in self._group_lrs()]

    def _closed_form(self) -> list[float]:
        ms = sorted(self.milestones.elements())
        return [b * self.gamma ** bisect_right(ms, self.last_epoch) for b in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every step: ``base * gamma**t``."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = check_number("ExponentialLR", "gamma", gamma, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]

    def _closed_form(self) -> list[float]:
        return [b * self.gamma**self.last_epoch for b in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the base lr to ``eta_min`` over ``T_max`` steps (no restarts):
    ``eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2``, continued periodically
    past ``T_max`` as PyTorch does.
    """

    def __init__(
        self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        self.T_max = check_int("CosineAnnealingLR", "T_max", T_max, 1)
        self.eta_min = check_number("CosineAnnealingLR", "eta_min", eta_min, 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._group_lrs()
        if self._step_count == 1 and t > 0:
            return [lo + (b - lo) * (1 + math.cos(t * math.pi / T)) / 2 for b in self.base_lrs]
        if (t - 1 - T) % (2 * T) == 0:
            return [
                lr + (b - lo) * (1 - math.cos(math.pi / T)) / 2
                for b, lr in zip(self.base_lrs, self._group_lrs())
            ]
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (lr - lo) + lo for lr in self._group_lrs()]

    def _closed_form(self) -> list[float]:
        t, T, lo = self.last_epoch, self.T_max, self.eta_min
        return [lo + (b - lo) * (1 + math.cos(math.pi * t / T)) / 2 for b in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the lr by a factor going linearly from ``start_factor`` to ``end_factor`` over
    ``total_iters`` steps, then hold it (PyTorch ``LinearLR``)."""

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        name = type(self).__name__
        start_factor = check_number(name, "start_factor", start_factor)
        end_factor = check_number(name, "end_factor", end_factor)
        total_iters = check_int(name, "total_iters", total_iters)
        if not 0 < start_factor <= 1:
            raise ValueError(f"{name}: start_factor must be in (0, 1], got {start_factor}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"{name}: end_factor must be in [0, 1], got {end_factor}")
        if int(total_iters) < 0:
            raise ValueError(f"{name}: total_iters must be >= 0, got {total_iters}")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = int(total_iters)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t = self.last_epoch
        if t == 0:
            return [lr * self.start_factor for lr in self._group_lrs()]
        if self._is_initial or t > self.total_iters:
            return self._group_lrs()
        d = self.end_factor - self.start_factor
        f = 1.0 + d / (self.total_iters * self.start_factor + (t - 1) * d)
        return [lr * f for lr in self._group_lrs()]

    def _closed_form(self) -> list[float]:
        d = self.end_factor - self.start_factor
        frac = min(self.total_iters, self.last_epoch) / self.total_iters if self.total_iters else 1
        return [b * (self.start_factor + d * frac) for b in self.base_lrs]


class LinearWarmup(LinearLR):
    """Linear warm-up: the lr rises from ``start_factor * base`` to ``base`` over
    ``warmup_steps`` steps, then stays (``LinearLR(opt, start_factor, 1.0, warmup_steps)``).
    Follow it with another schedule through :class:`SequentialLR` or :func:`warmup`."""

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        start_factor: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        warmup_steps = check_int("LinearWarmup", "warmup_steps", warmup_steps, 0)
        super().__init__(optimizer, start_factor, 1.0, warmup_steps, last_epoch)


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after another, switching at the steps in ``milestones``
    (``len(milestones) == len(schedulers) - 1``). At a milestone the next schedule starts
    from its step 0 (its closed form), as PyTorch ``SequentialLR``."""

    def __init__(
        self,
        optimizer: Optimizer,
        schedulers: Sequence[LRScheduler],
        milestones: Sequence[int],
        last_epoch: int = -1,
    ) -> None:
        schedulers = list(schedulers)
        if not schedulers:
            raise ValueError("SequentialLR: expects at least one scheduler")
        for i, s in enumerate(schedulers):
            if isinstance(s, ReduceLROnPlateau):
                raise ValueError(f"SequentialLR: scheduler {i} is a ReduceLROnPlateau")
            if s.optimizer is not optimizer:
                raise ValueError(f"SequentialLR: scheduler {i} belongs to another optimizer")
        if not isinstance(milestones, (list, tuple, range)):
            raise TypeError(f"SequentialLR: milestones must be a list of ints, got {milestones!r}")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"SequentialLR: expects len(milestones) == len(schedulers) - 1, got "
                f"{len(milestones)} milestones for {len(schedulers)} schedulers"
            )
        self._schedulers = schedulers
        self._milestones = [check_int("SequentialLR", "milestone", m, 0) for m in milestones]
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"]
        for s in schedulers:  # undo the construction step of every schedule
            s.last_epoch -= 1
        idx = bisect_right(self._milestones, 0)
        schedulers[idx]._initial_step()
        self._last_lr = schedulers[idx].get_last_lr()

    def step(self, epoch: int | None = None) -> None:  # noqa: ARG002 - PyTorch signature
        """Advance one step: the active schedule steps, or the next one starts at a milestone."""
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        s = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            s._update_lr(0)
        else:
            s.step()
        self._last_lr = s.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        d["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return d

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        d = dict(state_dict)
        subs = d.pop("_schedulers")
        self.__dict__.update(d)
        for s, sd in zip(self._schedulers, subs):
            s.load_state_dict(sd)


def warmup(
    optimizer: Optimizer, after: LRScheduler, warmup_steps: int, start_factor: float = 0.1
) -> SequentialLR:
    """Linear warm-up for ``warmup_steps`` steps, then ``after`` (built on the same optimizer,
    before calling this): ``SequentialLR(opt, [LinearWarmup(...), after], [warmup_steps])``."""
    warm = LinearWarmup(optimizer, warmup_steps, start_factor)
    return SequentialLR(optimizer, [warm, after], [warmup_steps])


class ReduceLROnPlateau:
    """Multiply the lr by ``factor`` when a metric stopped improving for ``patience`` steps.

    ``step(metric)`` once per epoch. ``mode``: ``"min"`` (lower is better) or ``"max"``;
    improvement means beating the best by ``threshold`` (relative, or absolute with
    ``threshold_mode="abs"``). After a reduction, ``cooldown`` steps pass before bad steps
    count again. The lr never goes below ``min_lr`` (a number or one per group); changes
    smaller than ``eps`` are skipped. PyTorch semantics.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | Sequence[float] = 0.0,
        eps: float = 1e-8,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"ReduceLROnPlateau: {type(optimizer).__name__} is not a gpucnn Optimizer"
            )
        op = "ReduceLROnPlateau"
        factor = check_number(op, "factor", factor)
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be < 1.0, got {factor}")
        check_number(op, "factor", factor, 0.0)
        patience = check_int(op, "patience", patience, 0)
        threshold = check_number(op, "threshold", threshold, 0.0)
        cooldown = check_int(op, "cooldown", cooldown, 0)
        eps = check_number(op, "eps", eps, 0.0)
        for v in (min_lr if isinstance(min_lr, (list, tuple)) else [min_lr]):
            check_number(op, "min_lr", v, 0.0)
        if not isinstance(mode, str) or mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if not isinstance(threshold_mode, str) or threshold_mode not in ("rel", "abs"):
            raise ValueError(
                f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}"
            )
        self.optimizer = optimizer
        ngroups = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != ngroups:
                raise ValueError(
                    f"ReduceLROnPlateau: expected {ngroups} min_lrs, got {len(min_lr)}"
                )
            self.min_lrs = list(min_lr)
        else:
            self.min_lrs = [min_lr] * ngroups
        self.mode, self.factor, self.patience = mode, factor, int(patience)
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.eps = int(cooldown), eps
        self.last_epoch = 0
        self.best = math.inf if mode == "min" else -math.inf
        self.cooldown_counter = 0
        self.num_bad_epochs = 0
        self._last_lr = [g["lr"] for g in optimizer.param_groups]

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            return a < (
                best * (1.0 - self.threshold)
                if self.threshold_mode == "rel"
                else best - self.threshold
            )
        return a > (
            best * (1.0 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold
        )

    def step(self, metric: Any) -> None:
        """Record this epoch's ``metric`` (a number or one-element tensor) and maybe reduce."""
        current = float(metric.item() if hasattr(metric, "item") else metric)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for g, lo in zip(self.optimizer.param_groups, self.min_lrs):
                old = float(g["lr"])
                new = max(old * self.factor, lo)
                if old - new > self.eps:
                    g["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The current learning rates, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """Every attribute but the optimizer."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the attributes saved by :meth:`state_dict`."""
        self.__dict__.update(state_dict)
