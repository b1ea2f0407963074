"""Dynamic loss scaling: :class:`GradScaler`, with the semantics of ``torch.amp.GradScaler``.

A custom loop uses it as in PyTorch::

    scaler = gpucnn.amp.GradScaler()
    for x, y in loader:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()   # gradients of loss * scale
        scaler.unscale_(opt)            # optional: e.g. to clip the true gradients
        scaler.step(opt)                # unscales if not done; skipped on inf/NaN gradients
        scaler.update()                 # backoff on inf/NaN, growth after clean steps

The scale lives on the host (a float32 value, as torch's one-element float32 tensor), so
:meth:`GradScaler.scale` and the update arithmetic never touch the device. Unscaling multiplies
the gradients in place by ``1/scale`` (float32, computed as torch does) and reduces the
finiteness of all of them into ONE device flag; :meth:`GradScaler.step` reads that flag once,
the only host read of a step (torch reads its ``found_inf`` once per step too).

Gradients are unscaled where the optimizer reads them: ``p.grad.data`` in place, which for the
flat-bucket path of :mod:`gpucnn.optim.flat` is a view of the bucket's gradient buffer (a whole
bucket whose gradients are all their views is unscaled with one operation on the buffer).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from gpucnn.backend.device import array_module
from gpucnn.tensor import Tensor

__all__ = ["GradScaler", "OptState"]


class OptState:
    """Per-optimizer stage within an iteration (torch's ``OptState``)."""

    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _f32(x: float) -> float:
    return float(np.float32(x))


def _number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


class GradScaler:
    """Dynamic loss scaling (``torch.amp.GradScaler``'s arguments, defaults and behaviour).

    Args:
        init_scale: the initial scale (> 0), default ``2**16``.
        growth_factor: the factor (> 1) the scale grows by after ``growth_interval``
            consecutive steps without inf/NaN gradients.
        backoff_factor: the factor (in (0, 1)) the scale shrinks by after a step with inf/NaN.
        growth_interval: clean steps (an int >= 1) between growths, default 2000.
        enabled: ``False`` makes every method a pass-through (``scale`` returns its input,
            ``step`` calls ``optimizer.step()``, ``get_scale()`` is 1.0).
        device: accepted for torch compatibility (``"cuda"``, ``"cpu"``; also as the first
            positional argument, as ``torch.amp.GradScaler("cuda")``, which keeps the default
            ``init_scale``); the scaler follows the arrays of the gradients it meets.

    Raises:
        ValueError: an argument out of range (the message names ``GradScaler`` and it).
    """

    def __init__(
        self,
        init_scale: float | str = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
        *,
        device: str = "cuda",
    ) -> None:
        if isinstance(init_scale, str):  # torch.amp.GradScaler("cuda"): a device name first
            device, init_scale = init_scale, 2.0**16
        if not isinstance(device, str):
            raise TypeError(f"GradScaler: device must be a string, got {type(device).__name__}")
        self._device = device
        self._enabled = bool(enabled)
        self._check_scale("init_scale", init_scale)
        if not _number(growth_factor) or not math.isfinite(growth_factor) or growth_factor <= 1:
            raise ValueError(
                f"GradScaler: growth_factor must be a finite number > 1, got {growth_factor!r}"
            )
        if not _number(backoff_factor) or not 0 < backoff_factor < 1:
            raise ValueError(
                f"GradScaler: backoff_factor must be a number in (0, 1), got {backoff_factor!r}"
            )
        if (
            isinstance(growth_interval, bool)
            or not isinstance(growth_interval, (int, np.integer))
            or growth_interval < 1
        ):
            raise ValueError(
                f"GradScaler: growth_interval must be an int >= 1, got {growth_interval!r}"
            )
        self._scale = _f32(init_scale)
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = int(growth_interval)
        self._growth_tracker = 0
        self._per_optimizer: dict[int, dict[str, Any]] = {}

    @staticmethod
    def _check_scale(name: str, value: Any) -> None:
        if not _number(value) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"GradScaler: {name} must be a finite number > 0, got {value!r}")

    # ------------------------------------------------------------------ per-optimizer state
    def _state(self, optimizer: Any) -> dict[str, Any]:
        return self._per_optimizer.setdefault(
            id(optimizer), {"stage": OptState.READY, "found_inf": None, "found_host": None}
        )

    # ------------------------------------------------------------------ the loop
    def scale(self, outputs: Any) -> Any:
        """``outputs * scale`` (a Tensor that backpropagates), or each of a list/tuple of them;
        the input itself when disabled."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            return outputs * self._scale
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        if isinstance(outputs, Iterable) and not isinstance(outputs, (str, bytes)):
            return [self.scale(o) for o in outputs]
        raise TypeError(
            f"GradScaler.scale: outputs must be a Tensor or an iterable of Tensors, got "
            f"{type(outputs).__name__}"
        )

    def _inv_scale(self) -> float:
        # torch: scale.double().reciprocal().float()
        return _f32(1.0 / self._scale)

    def _grad_arrays(self, optimizer: Any) -> list[Any]:
        """The gradient arrays of ``optimizer``'s parameters, as few as possible: a flat bucket
        whose gradients are all views of its buffer contributes that buffer once."""
        arrays: list[Any] = []
        covered: set[int] = set()
        flat = getattr(optimizer, "_flat_params", None)
        if getattr(optimizer, "flat", False) and flat is not None:
            for layout in getattr(flat, "layouts", []):
                for bucket in layout.buckets:
                    ok = True
                    for p, gv in zip(bucket.params, bucket.grad_views):
                        g = p.grad
                        if g is None or (g.data if isinstance(g, Tensor) else g) is not gv:
                            ok = False
                            break
                    if ok and bucket.params:
                        arrays.append(bucket.grad_flat)
                        covered.update(id(p) for p in bucket.params)
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) in covered or p.grad is None:
                    continue
                arrays.append(p.grad.data if isinstance(p.grad, Tensor) else p.grad)
        return arrays

    def unscale_(self, optimizer: Any) -> None:
        """Divide ``optimizer``'s gradients by the scale in place (once per step) and record,
        on the device, whether any of them holds inf/NaN.

        Raises:
            RuntimeError: called twice for this optimizer since the last :meth:`update`, or
                after :meth:`step`.
            ValueError: a float16 gradient (keep FP32 master weights, as torch requires).
        """
        if not self._enabled:
            return
        st = self._state(optimizer)
        if st["stage"] == OptState.UNSCALED:
            raise RuntimeError(
                "GradScaler.unscale_() has already been called on this optimizer since the "
                "last update()."
            )
        if st["stage"] == OptState.STEPPED:
            raise RuntimeError("GradScaler.unscale_() is being called after step().")
        inv = self._inv_scale()
        finite = None  # device bool: every gradient finite
        for g in self._grad_arrays(optimizer):
            if g.dtype == np.float16:
                raise ValueError("GradScaler: attempting to unscale FP16 gradients.")
            xp = array_module(g)
            g *= inv
            ok = xp.isfinite(g).all()
            finite = ok if finite is None else xp.logical_and(finite, ok)
        st["found_inf"] = None if finite is None else array_module(finite).logical_not(finite)
        st["found_host"] = None
        st["stage"] = OptState.UNSCALED

    def _found_inf(self, st: dict[str, Any]) -> bool:
        """The recorded flag read on the host, once (cached for :meth:`update`)."""
        if st["found_host"] is None:
            flag = st["found_inf"]
            st["found_host"] = False if flag is None else bool(flag)
        return st["found_host"]

    def step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        """Unscale ``optimizer``'s gradients if :meth:`unscale_` was not called, then run
        ``optimizer.step(*args, **kwargs)`` unless a gradient holds inf/NaN.

        Returns:
            What ``optimizer.step`` returned, or None when the step was skipped.

        Raises:
            RuntimeError: a ``closure`` argument (not supported, as in torch), or a second
                ``step`` for this optimizer before :meth:`update`.
        """
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        st = self._state(optimizer)
        if st["stage"] == OptState.STEPPED:
            raise RuntimeError("GradScaler.step() has already been called since the last update().")
        if st["stage"] == OptState.READY:
            self.unscale_(optimizer)
        ret = None
        if not self._found_inf(st):
            ret = optimizer.step(*args, **kwargs)
        st["stage"] = OptState.STEPPED
        return ret

    def update(self, new_scale: float | None = None) -> None:
        """End the iteration: set the scale to ``new_scale`` if given, else back off (and reset
        the growth tracker) if any optimizer met inf/NaN gradients, or grow it after
        ``growth_interval`` consecutive clean steps.

        Raises:
            RuntimeError: no optimizer was unscaled or stepped since the last update.
            ValueError: a ``new_scale`` that is not a finite number > 0.
        """
        if not self._enabled:
            return
        if new_scale is not None:
            if isinstance(new_scale, Tensor):
                new_scale = new_scale.item()
            self._check_scale("new_scale", new_scale)
            self._scale = _f32(new_scale)
        else:
            recorded = [st for st in self._per_optimizer.values() if st["stage"] != OptState.READY]
            if not recorded:
                raise RuntimeError(
                    "GradScaler.update: no inf checks were recorded prior to update() (call "
                    "unscale_(optimizer) or step(optimizer) first)."
                )
            found = any(self._found_inf(st) for st in recorded)
            if found:
                self._scale = _f32(self._scale * self._backoff_factor)
                self._growth_tracker = 0
            else:
                successful = self._growth_tracker + 1
                if successful == self._growth_interval:
                    grown = _f32(self._scale * self._growth_factor)
                    if math.isfinite(grown):
                        self._scale = grown
                    self._growth_tracker = 0
                else:
                    self._growth_tracker = successful
        self._per_optimizer = {}

    # ------------------------------------------------------------------ accessors
    def get_scale(self) -> float:
        """The current scale (1.0 when disabled)."""
        return self._scale if self._enabled else 1.0

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        if not _number(new_factor) or not math.isfinite(new_factor) or new_factor <= 1:
            raise ValueError(
                f"GradScaler: growth_factor must be a finite number > 1, got {new_factor!r}"
            )
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        if not _number(new_factor) or not 0 < new_factor < 1:
            raise ValueError(
                f"GradScaler: backoff_factor must be a number in (0, 1), got {new_factor!r}"
            )
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        if isinstance(new_interval, bool) or not isinstance(new_interval, (int, np.integer)) \
                or new_interval < 1:
            raise ValueError(
                f"GradScaler: growth_interval must be an int >= 1, got {new_interval!r}"
            )
        self._growth_interval = int(new_interval)

    def is_enabled(self) -> bool:
        return self._enabled

    # ------------------------------------------------------------------ state dicts
    def state_dict(self) -> dict[str, Any]:
        """``{"scale", "growth_factor", "backoff_factor", "growth_interval",
        "_growth_tracker"}`` as plain Python numbers (torch's keys); ``{}`` when disabled."""
        if not self._enabled:
            return {}
        return {
            "scale": self.get_scale(),
            "growth_factor": self._growth_factor,
            "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval,
            "_growth_tracker": self._growth_tracker,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (nothing happens when disabled).

        Raises:
            RuntimeError: an empty state dict (saved from a disabled scaler).
            ValueError: a value out of range.
        """
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError(
                "GradScaler.load_state_dict: the source state dict is empty, possibly because "
                "it was saved from a disabled instance of GradScaler."
            )
        scale = float(state_dict["scale"])
        self._check_scale("scale", scale)
        restored = GradScaler(
            init_scale=scale,
            growth_factor=float(state_dict["growth_factor"]),
            backoff_factor=float(state_dict["backoff_factor"]),
            growth_interval=int(state_dict["growth_interval"]),
        )  # validates the values
        self._scale = restored._scale
        self._growth_factor = restored._growth_factor
        self._backoff_factor = restored._backoff_factor
        self._growth_interval = restored._growth_interval
        self._growth_tracker = int(state_dict["_growth_tracker"])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_per_optimizer"] = {}  # device flags of an iteration in flight are not kept
        return state

    def __repr__(self) -> str:
        if not self._enabled:
            return "GradScaler(enabled=False)"
        return (
            f"GradScaler(scale={self._scale}, growth_factor={self._growth_factor}, "
            f"backoff_factor={self._backoff_factor}, growth_interval={self._growth_interval}, "
            f"growth_tracker={self._growth_tracker})"
        )
