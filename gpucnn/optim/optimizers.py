"""Optimizers with PyTorch semantics and argument names: SGD, Adam, AdamW, RMSprop.

Each parameter tensor is updated by ONE backend primitive call (``sgd_update``,
``adam_update``, ``rmsprop_update``): a fused kernel of ``cuda/optim.cu`` on the GPU, an
in-place vectorised NumPy twin on the CPU. Parameters and their state arrays are updated in
place, so references to ``p.data`` stay valid. Parameters whose ``.grad`` is None are skipped.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn.tensor import Tensor, enable_grad

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop"]


def _nonneg(op: str, name: str, value: float) -> None:
    if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value)) or value < 0:
        raise ValueError(f"{op}: invalid {name} {value!r} (expected a finite number >= 0)")


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``step``/``zero_grad``/state dicts.

    Args:
        params: an iterable of Tensors/Parameters, or of dicts ``{"params": [...], **options}``
            (parameter groups; options missing from a group take the defaults).
        defaults: the optimizer's hyper-parameters (``lr`` among them).

    ``self.state[p]`` holds the state of parameter ``p`` (arrays on p's backend, plus ints).
    The ``lr`` property reads the first group's learning rate and sets every group's.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        name = type(self).__name__
        if isinstance(params, Tensor):
            raise TypeError(f"{name}: params must be an iterable of Tensors or dicts, got a Tensor")
        self.defaults = dict(defaults)
        self._validate(self.defaults)
        groups = list(params)
        if not groups:
            raise ValueError(f"{name}: optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Tensor, dict[str, Any]] = {}
        for g in groups:
            self.add_param_group(g)

    # ------------------------------------------------------------------ groups
    def _validate(self, group: dict[str, Any]) -> None:
        _nonneg(type(self).__name__, "learning rate lr", group["lr"])

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group ``{"params": [...], **options}``; missing options take the defaults."""
        name = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{name}: a parameter group must be a dict with a 'params' entry")
        ps = group["params"]
        ps = [ps] if isinstance(ps, Tensor) else list(ps)
        for p in ps:
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: can only optimize Tensors, got {type(p).__name__}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in ps) or len({id(p) for p in ps}) != len(ps):
            raise ValueError(f"{name}: a parameter appears in more than one group")
        full = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        self._validate(full)
        full["params"] = ps
        self.param_groups.append(full)

    @property
    def lr(self) -> float:
        """Learning rate of the first parameter group."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        _nonneg(type(self).__name__, "learning rate lr", value)
        for g in self.param_groups:
            g["lr"] = value

    # ------------------------------------------------------------------ stepping
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients (``None``, or zeros in place with ``set_to_none=False``)."""
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data[...] = 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data if isinstance(p.grad, Tensor) else p.grad
                be = _backend.backend_of(p.data)
                state = self.state.setdefault(p, {})
                self._update(be, p.data, grad, state, group)
        return loss

    def _update(self, be: Any, param: Any, grad: Any, state: dict, group: dict) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ state dicts
    def _all_params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {name: array copy or number}}, "param_groups": [...]}``.

        Parameters are referred to by their index in the order of the groups (as PyTorch);
        arrays are copies on their own backend.
        """
        index = {id(p): i for i, p in enumerate(self._all_params())}
        state = {}
        for p, s in self.state.items():
            if id(p) in index and s:
                state[index[id(p)]] = {
                    k: (v.copy() if hasattr(v, "shape") else copy.deepcopy(v)) for k, v in s.items()
                }
        groups = []
        for g in self.param_groups:
            d = {k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
            d["params"] = [index[id(p)] for p in g["params"]]
            groups.append(d)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyper-parameters and per-parameter state saved by :meth:`state_dict`.

        Arrays are copied onto each parameter's backend and dtype.

        Raises:
            ValueError: the number of groups or of parameters per group differs.
        """
        name = type(self).__name__
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: state has {len(groups)} parameter groups, "
                f"optimizer has {len(self.param_groups)}"
            )
        for saved, mine in zip(groups, self.param_groups):
            if len(saved["params"]) != len(mine["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: a group has {len(saved['params'])} parameters in "
                    f"the state but {len(mine['params'])} in the optimizer"
                )
        params = self._all_params()
        remap: dict[int, Tensor] = {}
        for saved, mine in zip(groups, self.param_groups):
            for i, p in zip(saved["params"], mine["params"]):
                remap[int(i)] = p
            for k, v in saved.items():
                if k != "params":
                    mine[k] = copy.deepcopy(v)
        self.state = {}
        for i, s in state_dict["state"].items():
            p = remap.get(int(i), params[int(i)] if int(i) < len(params) else None)
            if p is None:
                continue
            be = _backend.backend_of(p.data)
            self.state[p] = {
                k: (
                    be.xp.array(_backend.to_backend(v, be), dtype=p.dtype, copy=True)
                    if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0
                    else copy.deepcopy(v)
                )
                for k, v in s.items()
            }

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            opts = ", ".join(f"{k}={v}" for k, v in g.items() if k != "params")
            lines.append(f"  group {i}: {len(g['params'])} params, {opts}")
        return "\n".join(lines) + "\n)"


def _zeros_like(be: Any, a: Any) -> Any:
    return be.xp.zeros(a.shape, dtype=a.dtype)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, dampening, weight decay.

    PyTorch semantics: ``g = grad + weight_decay*p``; with momentum the buffer starts as
    ``g`` and then ``buf = momentum*buf + (1-dampening)*g``; ``g = g + momentum*buf``
    (nesterov) or ``buf``; ``p -= lr*g``.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.01,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=bool(nesterov),
            weight_decay=weight_decay,
        )
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        for k in ("momentum", "dampening", "weight_decay"):
            _nonneg("SGD", k, group[k])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"SGD: nesterov momentum requires momentum > 0 and dampening == 0, got "
                f"momentum={group['momentum']} dampening={group['dampening']}"
            )

    def _update(self, be: Any, param: Any, grad: Any, state: dict, group: dict) -> None:
        momentum = group["momentum"]
        first = False
        buf = None
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = _zeros_like(be, param)
                state["momentum_buffer"] = buf
                first = True
        be.sgd_update(
            param,
            grad,
            buf,
            group["lr"],
            momentum,
            group["dampening"],
            group["weight_decay"],
            group["nesterov"],
            first,
        )


class Adam(Optimizer):
    """Adam (L2 weight decay added to the gradient), optional AMSGrad. PyTorch semantics.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` and (amsgrad)
    ``max_exp_avg_sq``.
    """

    _decoupled = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=bool(amsgrad)
        )
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        super()._validate(group)
        _nonneg(name, "eps", group["eps"])
        _nonneg(name, "weight_decay", group["weight_decay"])
        betas = group["betas"]
        if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
            raise ValueError(f"{name}: invalid betas {tuple(betas)} (each must be in [0, 1))")

    def _update(self, be: Any, param: Any, grad: Any, state: dict, group: dict) -> None:
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = _zeros_like(be, param)
            state["exp_avg_sq"] = _zeros_like(be, param)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = _zeros_like(be, param)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = _zeros_like(be, param)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        be.adam_update(
            param,
            grad,
            state["exp_avg"],
            state["exp_avg_sq"],
            state.get("max_exp_avg_sq"),
            group["lr"],
            beta1,
            beta2,
            group["eps"],
            group["weight_decay"],
            state["step"],
            self._decoupled,
            group["amsgrad"],
        )


class AdamW(Adam):
    """Adam with decoupled weight decay (``p *= 1 - lr*weight_decay`` before the Adam step)."""

    _decoupled = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


class RMSprop(Optimizer):
    """RMSprop with optional momentum and centering. PyTorch semantics.

    State per parameter: ``step``, ``square_avg``, and ``momentum_buffer`` (momentum > 0),
    ``grad_avg`` (centered), all zero-initialised.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=bool(centered),
        )
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        for k in ("alpha", "eps", "weight_decay", "momentum"):
            _nonneg("RMSprop", k, group[k])

    def _update(self, be: Any, param: Any, grad: Any, state: dict, group: dict) -> None:
        if "step" not in state:
            state["step"] = 0
            state["square_avg"] = _zeros_like(be, param)
        if group["momentum"] > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = _zeros_like(be, param)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = _zeros_like(be, param)
        state["step"] += 1
        be.rmsprop_update(
            param,
            grad,
            state["square_avg"],
            state.get("grad_avg"),
            state.get("momentum_buffer"),
            group["lr"],
            group["alpha"],
            group["eps"],
            group["weight_decay"],
            group["momentum"],
            group["centered"],
        )
