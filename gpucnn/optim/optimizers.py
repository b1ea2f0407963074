"""Optimizers with PyTorch semantics and argument names: SGD, Adam, AdamW, RMSprop, Adagrad,
NAdam (also ``Nadam``).

Each optimizer is written as its per-tensor update, ``_update(be, param, grad, state, group)``:
the PyTorch algorithm on ONE parameter, a call of the backend primitive that implements it
(``sgd_update``, ``adam_update``, ``rmsprop_update``, ``adagrad_update``, ``nadam_update``: a
fused kernel of ``cuda/optim.cu`` on the GPU, an in-place vectorised NumPy twin on the CPU).
That update is the reference.

Keras style: every optimizer takes ``learning_rate=`` as well as ``lr=`` (the same value; both
given and different is a ``ValueError``) and has both attributes, and may be built WITHOUT
parameters (``optim.Adam(learning_rate=1e-3)``): ``Model.compile`` then binds it to the model's
trainable parameters (:meth:`Optimizer.bind`) once the model is built.

By default (``flat=True``) :meth:`Optimizer.step` runs the same ``_update`` once per bucket of
parameters instead of once per tensor, on flat buffers of which the parameters, gradients and
state are views: the mechanism of :mod:`gpucnn.optim.flat`, bit-identical to the per-tensor
path (the updates are element-wise). ``flat=False`` opts out: one call per tensor, ``p.data``
left alone.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn.optim.flat import FlatParams
from gpucnn.tensor import Tensor, enable_grad

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "Nadam"]


def _nonneg(op: str, name: str, value: float) -> None:
    if isinstance(value, bool) or not (
        isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)
    ) or value < 0:
        raise ValueError(f"{op}: invalid {name} {value!r} (expected a finite number >= 0)")


def _zeros_like(be: Any, a: Any) -> Any:
    return be.xp.zeros(a.shape, dtype=a.dtype)


def resolve_lr(op: str, lr: Any, learning_rate: Any, default: float) -> Any:
    """The learning rate given as ``lr`` (PyTorch) or ``learning_rate`` (Keras), else
    ``default``; both given with different values is a ValueError naming ``op``."""
    if learning_rate is None:
        return default if lr is None else lr
    if lr is not None and not _same_value(lr, learning_rate):
        raise ValueError(
            f"{op}: lr={lr!r} and learning_rate={learning_rate!r} disagree; they are the same "
            "setting (PyTorch and Keras names), pass one of them"
        )
    return learning_rate


def _same_value(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``step``/``zero_grad``/state dicts.

    Args:
        params: an iterable of Tensors/Parameters, or of dicts ``{"params": [...], **options}``
            (parameter groups; options missing from a group take the defaults; a group may
            name its learning rate ``learning_rate``); or ``None``: an unbound optimizer
            (Keras style) that :meth:`bind` (or ``Model.compile``) gives its parameters later.
        defaults: the optimizer's hyper-parameters (``lr`` among them).
        flat: update each group's Parameters bucket by bucket on flat buffers (one primitive
            call per bucket, bit-identical; see :mod:`gpucnn.optim.flat`); ``False``: one call
            per tensor, ``p.data`` and the gradients left alone.

    A subclass defines :meth:`_update`, the update of one parameter. ``self.state[p]`` holds
    the state of parameter ``p`` (arrays on p's backend, plus ints). The ``lr`` property (alias
    ``learning_rate``) reads the first group's learning rate and sets every group's (and the
    defaults', while unbound).
    """

    def __init__(
        self, params: Iterable[Any] | None, defaults: dict[str, Any], flat: bool = True
    ) -> None:
        self.flat = bool(flat)
        self._flat_params = FlatParams()
        self.defaults = dict(defaults)
        self._validate(self.defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Tensor, dict[str, Any]] = {}
        if params is not None:
            self.bind(params)

    @property
    def bound(self) -> bool:
        """Whether the optimizer has its parameters (False for ``Adam(learning_rate=...)``)."""
        return bool(self.param_groups)

    def bind(self, params: Iterable[Any]) -> Optimizer:
        """Give an unbound optimizer its parameters (what ``Model.compile`` does); returns it.

        Raises:
            RuntimeError: the optimizer already has parameters.
            TypeError, ValueError: as the constructor, for bad or empty ``params``.
        """
        name = type(self).__name__
        if self.param_groups:
            raise RuntimeError(
                f"{name}: the optimizer already has its parameters; create a new one for "
                "another model"
            )
        if isinstance(params, Tensor):
            raise TypeError(f"{name}: params must be an iterable of Tensors or dicts, got a Tensor")
        if isinstance(params, (int, float, np.number)) and not isinstance(params, bool):
            raise TypeError(
                f"{name}: params must be an iterable of Tensors or dicts, got the number "
                f"{params!r}; pass the learning rate as lr= or learning_rate="
            )
        try:
            groups = list(params)
        except TypeError:
            raise TypeError(
                f"{name}: params must be an iterable of Tensors or dicts, got "
                f"{type(params).__name__}"
            ) from None
        if not groups:
            raise ValueError(f"{name}: optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)
        return self

    def _update(self, be: Any, param: Any, grad: Any, state: dict, group: dict) -> None:
        """Update ``param`` in place from ``grad`` and its ``state`` (created on first use).

        The reference: one tensor, or (flat path) a flat buffer of several, with ``be`` its
        backend. It must be element-wise over ``param``, ``grad`` and the state arrays.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ groups
    def _validate(self, group: dict[str, Any]) -> None:
        _nonneg(type(self).__name__, "learning rate lr", group["lr"])

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group ``{"params": [...], **options}``; missing options take the defaults."""
        name = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{name}: a parameter group must be a dict with a 'params' entry")
        if "learning_rate" in group:  # Keras' name for lr
            group = dict(group)
            rate = group.pop("learning_rate")
            group["lr"] = resolve_lr(f"{name} parameter group", group.get("lr"), rate, rate)
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
        if self.flat:  # laid out now: p.data becomes a view of the flat buffer once
            self._flat_params.layout(len(self.param_groups) - 1, ps)

    @property
    def lr(self) -> float:
        """Learning rate of the first parameter group (the default one while unbound)."""
        return self.param_groups[0]["lr"] if self.param_groups else self.defaults["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        _nonneg(type(self).__name__, "learning rate lr", value)
        for g in self.param_groups:
            g["lr"] = value
        if not self.param_groups:
            self.defaults["lr"] = value

    @property
    def learning_rate(self) -> float:
        """Keras' name for :attr:`lr` (the same value, read and set)."""
        return self.lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.lr = value

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
        """One update of every parameter that has a gradient; returns ``closure()`` if given.

        Per tensor (``flat=False``), or bucket by bucket through :mod:`gpucnn.optim.flat`, a
        bucket that cannot go flat this step (and every plain Tensor) going per tensor.
        """
        if not self.param_groups:
            raise RuntimeError(
                f"{type(self).__name__}: the optimizer has no parameters yet; pass them "
                f"({type(self).__name__}(model.parameters(), ...)), call bind(params), or give "
                "it to model.compile(optimizer=...), which binds it"
            )
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        if not self.flat:
            self._flat_params.release()  # opted out after construction: clear the slots it set
        for i, group in enumerate(self.param_groups):
            if not self.flat:
                self._step_per_tensor(group, group["params"])
                continue
            layout = self._flat_params.layout(i, group["params"])
            for bucket in layout.buckets:
                if not bucket.step(self._update, self.state, group):
                    self._step_per_tensor(group, bucket.params)
            if layout.loose:
                self._step_per_tensor(group, layout.loose)
        return loss

    def _step_per_tensor(self, group: dict, params: list[Tensor]) -> None:
        """:meth:`_update` on each parameter that has a gradient (the reference path)."""
        for p in params:
            if p.grad is None:
                continue
            grad = p.grad.data if isinstance(p.grad, Tensor) else p.grad
            be = _backend.backend_of(p.data)
            self._update(be, p.data, grad, self.state.setdefault(p, {}), group)

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


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, dampening, weight decay.

    ``lr`` (or ``learning_rate``) defaults to 0.01. State per parameter: ``momentum_buffer``
    (momentum > 0).
    """

    def __init__(
        self,
        params: Iterable[Any] | None = None,
        lr: float | None = None,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        *,
        learning_rate: float | None = None,
        flat: bool = True,
    ) -> None:
        defaults = dict(
            lr=resolve_lr("SGD", lr, learning_rate, 0.01),
            momentum=momentum,
            dampening=dampening,
            nesterov=bool(nesterov),
            weight_decay=weight_decay,
        )
        super().__init__(params, defaults, flat=flat)

    def _update(self, be: Any, param: Any, grad: Any, state: dict, group: dict) -> None:
        """PyTorch's SGD on one parameter, in place::

            g = grad + weight_decay * p
            if momentum:
                buf = g  (first step)  or  momentum * buf + (1 - dampening) * g
                g = g + momentum * buf  (nesterov)  or  buf
            p -= lr * g
        """
        momentum = group["momentum"]
        buf = state.get("momentum_buffer") if momentum != 0 else None
        first = momentum != 0 and buf is None
        if first:  # the primitive sets buf = g
            buf = state["momentum_buffer"] = _zeros_like(be, param)
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

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        for k in ("momentum", "dampening", "weight_decay"):
            _nonneg("SGD", k, group[k])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"SGD: nesterov momentum requires momentum > 0 and dampening == 0, got "
                f"momentum={group['momentum']} dampening={group['dampening']}"
            )


class Adam(Optimizer):
    """Adam (L2 weight decay added to the gradient), optional AMSGrad.

    ``lr`` (or ``learning_rate``) defaults to 1e-3. State per parameter: ``step``,
    ``exp_avg``, ``exp_avg_sq`` and (amsgrad) ``max_exp_avg_sq``, arrays zero-initialised.
    """

    _decoupled = False  # AdamW: weight decay applied to the parameter, not the gradient

    def __init__(
        self,
        params: Iterable[Any] | None = None,
        lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        learning_rate: float | None = None,
        flat: bool = True,
    ) -> None:
        defaults = dict(
            lr=resolve_lr(type(self).__name__, lr, learning_rate, 1e-3),
            betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas, eps=eps,
            weight_decay=weight_decay, amsgrad=bool(amsgrad)
        )
        super().__init__(params, defaults, flat=flat)

    def _update(self, be: Any, param: Any, grad: Any, state: dict, group: dict) -> None:
        """PyTorch's Adam (AdamW: ``decoupled``) on one parameter, in place, at step ``t``::

            p *= 1 - lr * weight_decay  (AdamW)  or  g = grad + weight_decay * p  (Adam)
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            vmax = max(vmax, v)  (amsgrad, then used instead of v)
            p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
        """
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = _zeros_like(be, param)
            state["exp_avg_sq"] = _zeros_like(be, param)
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

    def _validate(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        super()._validate(group)
        _nonneg(name, "eps", group["eps"])
        _nonneg(name, "weight_decay", group["weight_decay"])
        Adam._check_betas(name, group["betas"])

    @staticmethod
    def _check_betas(name: str, betas: Any) -> None:
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: invalid betas {betas!r} (expected a pair (beta1, beta2))")
        if not all(isinstance(b, (int, float, np.floating)) and not isinstance(b, bool)
                   and 0.0 <= float(b) < 1.0 for b in betas):
            raise ValueError(f"{name}: invalid betas {tuple(betas)} (each must be in [0, 1))")


class AdamW(Adam):
    """Adam with decoupled weight decay (``p *= 1 - lr*weight_decay`` before the Adam step)."""

    _decoupled = True

    def __init__(
        self,
        params: Iterable[Any] | None = None,
        lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
        *,
        learning_rate: float | None = None,
        flat: bool = True,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad,
                         learning_rate=learning_rate, flat=flat)


class RMSprop(Optimizer):
    """RMSprop with optional momentum and centering.

    ``lr`` (or ``learning_rate``) defaults to 0.01. State per parameter: ``step``,
    ``square_avg``, and ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered), arrays
    zero-initialised.
    """

    def __init__(
        self,
        params: Iterable[Any] | None = None,
        lr: float | None = None,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        learning_rate: float | None = None,
        flat: bool = True,
    ) -> None:
        defaults = dict(
            lr=resolve_lr("RMSprop", lr, learning_rate, 0.01),
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=bool(centered),
        )
        super().__init__(params, defaults, flat=flat)

    def _update(self, be: Any, param: Any, grad: Any, state: dict, group: dict) -> None:
        """PyTorch's RMSprop on one parameter, in place::

            g = grad + weight_decay * p
            sq = alpha * sq + (1 - alpha) * g * g
            centered: ga = alpha * ga + (1 - alpha) * g;  avg = sqrt(sq - ga * ga) + eps
            else:     avg = sqrt(sq) + eps
            momentum: buf = momentum * buf + g / avg;  p -= lr * buf
            else:     p -= lr * g / avg
        """
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

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        for k in ("alpha", "eps", "weight_decay", "momentum"):
            _nonneg("RMSprop", k, group[k])


class Adagrad(Optimizer):
    """Adagrad with learning-rate decay (PyTorch's ``torch.optim.Adagrad``).

    ``lr`` (or ``learning_rate``) defaults to 1e-2. State per parameter: ``step`` and ``sum``
    (initialised to ``initial_accumulator_value``).
    """

    def __init__(
        self,
        params: Iterable[Any] | None = None,
        lr: float | None = None,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        learning_rate: float | None = None,
        flat: bool = True,
    ) -> None:
        defaults = dict(
            lr=resolve_lr("Adagrad", lr, learning_rate, 1e-2),
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        )
        super().__init__(params, defaults, flat=flat)

    def _update(self, be: Any, param: Any, grad: Any, state: dict, group: dict) -> None:
        """PyTorch's Adagrad on one parameter, in place, at step ``t``::

            g = grad + weight_decay * p
            sum += g * g
            p -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(sum) + eps)
        """
        if "step" not in state:
            state["step"] = 0
            state["sum"] = be.xp.full(param.shape, group["initial_accumulator_value"],
                                      dtype=param.dtype)
        state["step"] += 1
        be.adagrad_update(
            param,
            grad,
            state["sum"],
            group["lr"],
            group["lr_decay"],
            group["weight_decay"],
            group["eps"],
            state["step"],
        )

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        for k in ("lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            _nonneg("Adagrad", k, group[k])


class NAdam(Optimizer):
    """NAdam: Adam with Nesterov momentum and momentum decay (PyTorch's ``torch.optim.NAdam``;
    Keras calls it ``Nadam``, also importable under that name).

    ``lr`` (or ``learning_rate``) defaults to 2e-3. ``decoupled_weight_decay=True`` applies
    the weight decay to the parameter (as AdamW) instead of the gradient. State per
    parameter: ``step``, ``mu_product`` (a float), ``exp_avg``, ``exp_avg_sq``.
    """

    def __init__(
        self,
        params: Iterable[Any] | None = None,
        lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        learning_rate: float | None = None,
        flat: bool = True,
    ) -> None:
        defaults = dict(
            lr=resolve_lr(type(self).__name__, lr, learning_rate, 2e-3),
            betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=bool(decoupled_weight_decay),
        )
        super().__init__(params, defaults, flat=flat)

    def _update(self, be: Any, param: Any, grad: Any, state: dict, group: dict) -> None:
        """PyTorch's NAdam on one parameter, in place, at step ``t``::

            g = grad + weight_decay * p  (or p *= 1 - lr * weight_decay, decoupled)
            mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay));  prod *= mu_t
            m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g * g
            d = sqrt(v / (1 - beta2**t)) + eps
            p -= lr * (1 - mu_t) / (1 - prod) * g / d
            p -= lr * mu_{t+1} / (1 - prod * mu_{t+1}) * m / d
        """
        if "step" not in state:
            state["step"] = 0
            state["mu_product"] = 1.0
            state["exp_avg"] = _zeros_like(be, param)
            state["exp_avg_sq"] = _zeros_like(be, param)
        state["step"] += 1
        t = state["step"]
        beta1, beta2 = group["betas"]
        md = float(group["momentum_decay"])
        mu = float(beta1) * (1.0 - 0.5 * 0.96 ** (t * md))
        mu_next = float(beta1) * (1.0 - 0.5 * 0.96 ** ((t + 1) * md))
        state["mu_product"] = float(state["mu_product"]) * mu
        be.nadam_update(
            param,
            grad,
            state["exp_avg"],
            state["exp_avg_sq"],
            group["lr"],
            beta1,
            beta2,
            group["eps"],
            group["weight_decay"],
            mu,
            mu_next,
            state["mu_product"],
            t,
            group["decoupled_weight_decay"],
        )

    def _validate(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        super()._validate(group)
        for k in ("eps", "weight_decay", "momentum_decay"):
            _nonneg(name, k, group[k])
        Adam._check_betas(name, group["betas"])


#: Keras' name for :class:`NAdam`.
Nadam = NAdam
