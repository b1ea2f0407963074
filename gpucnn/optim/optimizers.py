"""Optimizers with PyTorch semantics and argument names: SGD, Adam, AdamW, RMSprop.

The updates are element-wise, so by default (``flat=True``) every parameter group keeps its
parameters in FLAT buffers, one per (array type, dtype) "bucket": a parameter buffer, a
gradient buffer and one buffer per state array (``momentum_buffer``, ``exp_avg``, ...), each
parameter's ``p.data``, gradient and state being reshaped views of its slice. A step is then ONE
backend primitive call per bucket (``sgd_update``, ``adam_update``, ``rmsprop_update``: a fused
kernel of ``cuda/optim.cu`` on the GPU, an in-place vectorised NumPy twin on the CPU) instead of
one per tensor, and ``Tensor.backward`` writes leaf gradients into the gradient buffer
(``p._grad_buffer``) instead of allocating them. Results are bit-identical to per-tensor updates
(same primitives, same scalars, element-wise arithmetic).

Consequences and fall-backs:

* At construction, the ``p.data`` of a bucket with several parameters is rebound ONCE to a view of
  the flat buffer (values copied); afterwards every update is in place, so references taken
  after construction stay valid. A bucket of one C-contiguous parameter uses ``p.data`` itself.
* If ``p.data`` is rebound later (``Module.to``, user code), the next step copies the new values
  into the buffer and rebinds ``p.data`` to its view again (a new shape, dtype or backend
  rebuilds the buckets); state arrays replaced from outside (``load_state_dict``,
  ``move_optimizer_state``) are copied into the flat state buffers the same way.
* A gradient assigned by hand (``p.grad = ...``) is copied into the gradient buffer; a gradient
  of another shape or backend, a parameter whose ``.grad`` is None (it is NOT updated, as in
  ``torch.optim``) or per-parameter state out of step with the others (e.g. Adam's ``step``
  after a parameter was skipped) make the step fall back to one call per tensor for that bucket.
* The gradient buffer is reused: a ``p.grad`` array kept across ``zero_grad()`` and the next
  ``backward`` is overwritten by it (copy it to keep it).

``flat=False`` (constructor keyword or the ``flat`` attribute) restores one call per tensor
and leaves ``p.data`` alone.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn.backend.device import is_array as _is_array
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

        flat: keep each group's parameters, gradients and state in flat buffers and update
            them with one primitive call per (group, array type, dtype) (see the module doc).

    ``self.state[p]`` holds the state of parameter ``p`` (arrays on p's backend, plus ints).
    The ``lr`` property reads the first group's learning rate and sets every group's.
    """

    def __init__(
        self, params: Iterable[Any], defaults: dict[str, Any], flat: bool = True
    ) -> None:
        name = type(self).__name__
        self.flat = bool(flat)
        self._flat_groups: list[_FlatGroup | None] = []
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
        self._flat_groups.append(_FlatGroup(ps) if self.flat else None)

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
        if len(self._flat_groups) < len(self.param_groups):  # groups appended by hand
            self._flat_groups += [None] * (len(self.param_groups) - len(self._flat_groups))
        for gi, group in enumerate(self.param_groups):
            if not self.flat:
                self._step_per_tensor(group, group["params"])
                continue
            fg = self._flat_groups[gi]
            if fg is None or not fg.fits(group["params"]):
                fg = self._flat_groups[gi] = _FlatGroup(group["params"])
            for bucket in fg.buckets:
                self._step_bucket(group, bucket)
            if fg.loose:
                self._step_per_tensor(group, fg.loose)
        return loss

    def _step_per_tensor(self, group: dict, params: list[Tensor]) -> None:
        """One primitive call per parameter that has a gradient (the reference path)."""
        for p in params:
            if p.grad is None:
                continue
            grad = p.grad.data if isinstance(p.grad, Tensor) else p.grad
            be = _backend.backend_of(p.data)
            state = self.state.setdefault(p, {})
            self._update(be, p.data, grad, state, group)

    def _step_bucket(self, group: dict, b: _Bucket) -> None:
        """One primitive call over the bucket's flat buffers, or per tensor when not valid.

        Requires (checked here): every parameter has a gradient of its own shape and array
        type (copied into its slice of the gradient buffer unless it IS that slice), and all
        parameters' states have the same keys and equal scalars (``step``); their arrays are
        made views of the flat state buffers (copying values in when they were replaced).
        """
        params, gviews = b.params, b.grad_views
        for p, gv in zip(params, gviews):
            g = p.grad
            if g is None:
                return self._step_per_tensor(group, params)
            ga = g.data if isinstance(g, Tensor) else g
            if ga is not gv:
                if type(ga) is not type(gv) or tuple(ga.shape) != gv.shape:
                    return self._step_per_tensor(group, params)
                gv[...] = ga
        states = [self.state.setdefault(p, {}) for p in params]
        s0 = states[0]
        keys = s0.keys()
        for s in states[1:]:
            if s.keys() != keys:
                return self._step_per_tensor(group, params)
            for k, v0 in s0.items():
                if not _is_array(v0) and not _same_scalar(s[k], v0):
                    return self._step_per_tensor(group, params)
        merged: dict[str, Any] = {}
        for k, v0 in s0.items():
            if _is_array(v0):
                flat = b.flat_state(k, states)
                if flat is None:
                    return self._step_per_tensor(group, params)
                merged[k] = flat
            else:
                merged[k] = v0
        be = b.be
        info = self._prepare(be, b.flat, merged, group)
        chunk = _CHUNK_BYTES.get(be.name)
        n = b.total
        piece = max(1, chunk // b.flat.dtype.itemsize) if chunk else n
        if piece >= n:
            self._apply(be, b.flat, b.grad_flat, merged, group, info)
        else:  # NumPy: cache-sized pieces (see _CHUNK_BYTES)
            arrays = [k for k, v in merged.items() if _is_array(v)]
            for lo in range(0, n, piece):
                hi = lo + piece
                part = dict(merged)
                for k in arrays:
                    part[k] = merged[k][lo:hi]
                self._apply(be, b.flat[lo:hi], b.grad_flat[lo:hi], part, group, info)
        for k, v in merged.items():
            if _is_array(v):
                views = b.adopt_state(k, v)
                for s, view in zip(states, views):
                    s[k] = view
            else:
                for s in states:
                    s[k] = v

    def _update(self, be: Any, param: Any, grad: Any, state: dict, group: dict) -> None:
        """Update ``param`` (one tensor, or a flat buffer) in place from ``grad`` and ``state``."""
        self._apply(be, param, grad, state, group, self._prepare(be, param, state, group))

    def _prepare(self, be: Any, param: Any, state: dict, group: dict) -> Any:
        """Create missing state arrays (zeros like ``param``), advance counters; returns what
        :meth:`_apply` needs besides the state (e.g. SGD's first-step flag)."""
        raise NotImplementedError

    def _apply(
        self, be: Any, param: Any, grad: Any, state: dict, group: dict, info: Any
    ) -> None:
        """The primitive call: element-wise, so it may run on any slice of flat buffers."""
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



def _same_scalar(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except (TypeError, ValueError):
        return False


# Slice starts in a flat buffer are aligned to this many bytes (GPU: full cache lines and
# vector loads for the kernels and cuBLAS reading the parameters). NumPy packs them: alignment
# gains little there, and the zero gaps could meet 0/0 in an update with eps=0 (warnings).
_ALIGN_BYTES = {"numpy": 0, "cuda": 256}

# The NumPy twins allocate whole-array temporaries: over one flat buffer of a few MB they fall
# out of cache, and glibc returns/re-faults such blocks (measured 5x slower than per tensor
# for ResNet-20's 270k parameters). So NumPy updates run over cache-sized pieces of the flat
# buffers (a few calls per group instead of one per tensor); the GPU launches once per bucket.
_CHUNK_BYTES: dict[str, int | None] = {"numpy": 128 * 1024, "cuda": None}


def _layout(sizes: list[int], itemsize: int, align_bytes: int) -> tuple[list[int], int]:
    """Start offsets (elements) of consecutive slices of ``sizes`` and the total length."""
    step = max(1, align_bytes // itemsize) if align_bytes else 1
    offsets, pos = [], 0
    for n in sizes:
        offsets.append(pos)
        pos += -(-n // step) * step if n else 0
    return offsets, pos


class _Bucket:
    """Parameters of one group sharing array type and dtype, stored in one flat buffer.

    ``flat`` (total,) holds the parameters: ``views[i]`` (``params[i].shape``) is the slice of
    parameter ``i`` and its ``p.data``. ``grad_flat``/``grad_views`` the same for gradients (each
    ``p._grad_buffer``); ``state_flat[k]``/``state_views[k]`` for each state array ``k``.
    """

    def __init__(self, be: Any, params: list[Tensor]) -> None:
        xp = be.xp
        self.be = be
        self.params = params
        first = params[0].data
        dtype = first.dtype
        sizes = [int(p.data.size) for p in params]
        self.shapes = [tuple(p.data.shape) for p in params]
        if len(params) == 1 and first.flags.c_contiguous:
            self.offsets, self.total = [0], sizes[0]
            self.flat = first.reshape(-1)  # the parameter's own memory: nothing to copy
            self.views = [first]
        else:
            self.offsets, self.total = _layout(sizes, dtype.itemsize, _ALIGN_BYTES.get(be.name, 0))
            self.flat = xp.zeros(self.total, dtype=dtype)
            self.views = self._slices(self.flat)
            for p, v in zip(params, self.views):
                v[...] = p.data
                p.data = v
        self.grad_flat = xp.zeros(self.total, dtype=dtype)
        self.grad_views = self._slices(self.grad_flat)
        for p, gv in zip(params, self.grad_views):
            p._grad_buffer = gv
        self.state_flat: dict[str, Any] = {}
        self.state_views: dict[str, list[Any]] = {}

    def _slices(self, flat: Any) -> list[Any]:
        return [
            flat[o : o + math.prod(s)].reshape(s)
            for o, s in zip(self.offsets, self.shapes)
        ]

    def adopt_state(self, key: str, flat: Any) -> list[Any]:
        """Views of ``flat`` (the flat state buffer ``key``, adopted if new), one per param."""
        if self.state_flat.get(key) is not flat:
            self.state_flat[key] = flat
            self.state_views[key] = self._slices(flat)
        return self.state_views[key]

    def flat_state(self, key: str, states: list[dict]) -> Any | None:
        """The flat buffer of state ``key`` with every ``states[i][key]`` rebound to its view
        (arrays replaced from outside are copied in); None if an array has the wrong shape."""
        flat = self.state_flat.get(key)
        if flat is None:
            flat = self.be.xp.zeros(self.total, dtype=self.flat.dtype)
        views = self.adopt_state(key, flat)
        for s, view in zip(states, views):
            v = s[key]
            if v is view:
                continue
            if tuple(v.shape) != view.shape:
                return None
            if type(v) is not type(view):
                v = _backend.to_backend(v, self.be)
            view[...] = v
            s[key] = view
        return flat


class _FlatGroup:
    """The flat layout of one parameter group: buckets by (array type, dtype) of the params
    that require grad when it is built; ``loose`` the others (updated per tensor)."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = list(params)
        self.requires = [p.requires_grad for p in self.params]
        by_kind: dict[tuple, list[Tensor]] = {}
        self.loose: list[Tensor] = []
        for p in self.params:
            if p.requires_grad and _is_array(p.data):
                by_kind.setdefault((type(p.data), p.data.dtype), []).append(p)
            else:
                self.loose.append(p)
        self.buckets = [
            _Bucket(_backend.backend_of(ps[0].data), ps) for ps in by_kind.values()
        ]

    def fits(self, params: list[Tensor]) -> bool:
        """Whether this layout still describes ``params``; a ``p.data`` rebound to an array of
        the same type, dtype and shape is copied into its slice and rebound to the view."""
        if len(params) != len(self.params):
            return False
        for p, q, r in zip(params, self.params, self.requires):
            if p is not q or p.requires_grad != r:
                return False
        for b in self.buckets:
            for p, v in zip(b.params, b.views):
                d = p.data
                if d is v:
                    continue
                if type(d) is not type(v) or d.dtype != v.dtype or tuple(d.shape) != v.shape:
                    return False
                v[...] = d
                p.data = v
        return True


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
        *,
        flat: bool = True,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=bool(nesterov),
            weight_decay=weight_decay,
        )
        super().__init__(params, defaults, flat=flat)

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        for k in ("momentum", "dampening", "weight_decay"):
            _nonneg("SGD", k, group[k])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"SGD: nesterov momentum requires momentum > 0 and dampening == 0, got "
                f"momentum={group['momentum']} dampening={group['dampening']}"
            )

    def _prepare(self, be: Any, param: Any, state: dict, group: dict) -> bool:
        if group["momentum"] != 0 and state.get("momentum_buffer") is None:
            state["momentum_buffer"] = _zeros_like(be, param)
            return True  # first step: the kernel sets buf = g
        return False

    def _apply(
        self, be: Any, param: Any, grad: Any, state: dict, group: dict, first: bool
    ) -> None:
        momentum = group["momentum"]
        be.sgd_update(
            param,
            grad,
            state.get("momentum_buffer") if momentum != 0 else None,
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
        *,
        flat: bool = True,
    ) -> None:
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=bool(amsgrad)
        )
        super().__init__(params, defaults, flat=flat)

    def _validate(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        super()._validate(group)
        _nonneg(name, "eps", group["eps"])
        _nonneg(name, "weight_decay", group["weight_decay"])
        betas = group["betas"]
        if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
            raise ValueError(f"{name}: invalid betas {tuple(betas)} (each must be in [0, 1))")

    def _prepare(self, be: Any, param: Any, state: dict, group: dict) -> None:
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = _zeros_like(be, param)
            state["exp_avg_sq"] = _zeros_like(be, param)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = _zeros_like(be, param)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = _zeros_like(be, param)
        state["step"] += 1

    def _apply(
        self, be: Any, param: Any, grad: Any, state: dict, group: dict, info: None
    ) -> None:
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
        *,
        flat: bool = True,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, flat=flat)


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
        *,
        flat: bool = True,
    ) -> None:
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=bool(centered),
        )
        super().__init__(params, defaults, flat=flat)

    def _validate(self, group: dict[str, Any]) -> None:
        super()._validate(group)
        for k in ("alpha", "eps", "weight_decay", "momentum"):
            _nonneg("RMSprop", k, group[k])

    def _prepare(self, be: Any, param: Any, state: dict, group: dict) -> None:
        if "step" not in state:
            state["step"] = 0
            state["square_avg"] = _zeros_like(be, param)
        if group["momentum"] > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = _zeros_like(be, param)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = _zeros_like(be, param)
        state["step"] += 1

    def _apply(
        self, be: Any, param: Any, grad: Any, state: dict, group: dict, info: None
    ) -> None:
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
