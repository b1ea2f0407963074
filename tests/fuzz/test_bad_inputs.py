"""Fuzzing every public argument with WRONG values: no silent wrong answer, no raw crash.

Each slot (one argument of one public op, layer, optimizer, schedule, loader, ``fit`` or
callback) gets values drawn from a pool of wrong kinds (strings, ``None``, floats for ints,
tuples, lists, bools, negatives, zeros, NaN, infinities) mixed with a few valid ones. The
result must be one of:

* a ``TypeError`` / ``ValueError`` whose message names the op or layer (the slot's
  ``names``), never another exception class or an anonymous message from deep inside;
* a success where PyTorch also succeeds with the same answer (slots with a ``torch`` oracle,
  when PyTorch imports), or a success on a value the slot documents as valid (its ``ok``).

Every slot gets the whole :data:`POOL`, then Hypothesis, derandomized (the same examples on
every run, no example database), draws :data:`EXAMPLES` more per slot (times
``$GPUCNN_FUZZ_SCALE``, default 1).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpucnn
import gpucnn.functional as F
from gpucnn import Tensor, optim
from gpucnn import backend as B
from gpucnn import callbacks as C
from gpucnn import layers as L
from gpucnn.data import DataLoader
from gpucnn.optim import schedules as S

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # pragma: no cover - torch is the optional oracle
    torch = None
    TF = None

#: Examples per slot (times $GPUCNN_FUZZ_SCALE).
EXAMPLES = max(1, int(12 * float(os.environ.get("GPUCNN_FUZZ_SCALE", "1"))))

NAN, INF = float("nan"), float("inf")

#: The pool of values every slot is fed: wrong kinds first, a few valid ones among them.
POOL = ["a", "", "1", None, (), (1,), (1, 2), (2, 2, 2), (1, "a"), (None, 2), [1], [2, 2],
        True, False, -2, -1, 0, 1, 2, 3, 1.5, 2.0, 0.5, -0.5, 1e-3, NAN, INF, -INF,
        np.int64(2), np.float64(0.25), object(), {"a": 1}]

#: What Hypothesis draws on top of the whole :data:`POOL` (which every slot gets in full).
VALUES = st.one_of(
    st.sampled_from(POOL),
    st.integers(-3, 5),
    st.floats(-4, 4),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(-2, 4), max_size=3).map(tuple),
    st.lists(st.one_of(st.none(), st.integers(0, 3), st.floats(0, 2)), max_size=3),
    st.text(max_size=2),
)


# --------------------------------------------------------------------------- predicates


def is_int(v: Any, lo: float | None = None, hi: float | None = None) -> bool:
    return (isinstance(v, numbers.Integral) and not isinstance(v, bool)
            and (lo is None or v >= lo) and (hi is None or v <= hi))


def is_real(v: Any, lo: float | None = None, hi: float | None = None, *,
            lo_open: bool = False, hi_open: bool = False, finite: bool = True) -> bool:
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or math.isnan(v):
        return False
    if finite and math.isinf(v):
        return False
    if lo is not None and (v <= lo if lo_open else v < lo):
        return False
    return hi is None or (v < hi if hi_open else v <= hi)


def is_pair(v: Any, lo: int = 1) -> bool:
    return is_int(v, lo) or (isinstance(v, (tuple, list)) and len(v) in (1, 2)
                             and all(is_int(e, lo) for e in v))


def never(v: Any) -> bool:  # success is only allowed where PyTorch agrees
    return False


# --------------------------------------------------------------------------- inputs


def _x(shape: tuple, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


X4 = _x((2, 3, 6, 6))
X2 = _x((4, 3), 1)
TARGET = np.array([0, 2, 1, 0])


def t(a: np.ndarray, grad: bool = False) -> Tensor:
    return Tensor(a.copy(), requires_grad=grad, backend=B.current())


def tt(a: np.ndarray) -> Any:
    return torch.tensor(a.copy())


@dataclass
class Slot:
    """One argument of one public callable."""

    id: str
    call: Callable[[Any], Any]  # ours, given the drawn value
    names: tuple[str, ...]  # an error message must start with one of these (+ ":")
    ok: Callable[[Any], bool] = never  # values whose success needs no oracle
    torch: Callable[[Any], Any] | None = None  # PyTorch's answer for the same value


def _host(v: Any) -> Any:
    if isinstance(v, Tensor):
        return v.numpy()
    if isinstance(v, tuple):
        return tuple(_host(e) for e in v)
    return v


def _compare(ours: Any, theirs: Any, slot: Slot, value: Any) -> None:
    ours, theirs = _host(ours), theirs
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs), (slot.id, value)
        for a, b in zip(ours, theirs):
            _compare(a, b, slot, value)
        return
    b = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    a = np.asarray(ours)
    assert a.shape == b.shape, (slot.id, value, a.shape, b.shape)
    np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=1e-4,
                               atol=1e-5, equal_nan=True, err_msg=f"{slot.id} with {value!r}")


# --------------------------------------------------------------------------- the slots


def _bn(**kw: Any) -> Any:
    rm, rv = t(np.zeros(3, np.float32)), t(np.ones(3, np.float32))
    y = F.batch_norm(t(X4), rm, rv, training=True, **kw)
    return y, rm, rv


def _tbn(**kw: Any) -> Any:
    rm, rv = torch.zeros(3), torch.ones(3)
    y = TF.batch_norm(tt(X4), rm, rv, training=True, **kw)
    return y, rm, rv


def functional_slots() -> list[Slot]:
    s = [
        Slot("leaky_relu.negative_slope", lambda v: F.leaky_relu(t(X4), v), ("leaky_relu",),
             torch=lambda v: TF.leaky_relu(tt(X4), v)),
        Slot("elu.alpha", lambda v: F.elu(t(X4), v), ("elu",),
             torch=lambda v: TF.elu(tt(X4), v)),
        Slot("softplus.beta", lambda v: F.softplus(t(X4), v), ("softplus",),
             ok=lambda v: is_real(v, 0, lo_open=True)),
        Slot("softplus.threshold", lambda v: F.softplus(t(X4), 1.0, v), ("softplus",),
             torch=lambda v: TF.softplus(tt(X4), 1.0, v)),
        Slot("gelu.approximate", lambda v: F.gelu(t(X4), v), ("gelu",)),
        Slot("softmax.axis", lambda v: F.softmax(t(X4), v), ("softmax",),
             torch=lambda v: TF.softmax(tt(X4), v)),
        Slot("log_softmax.axis", lambda v: F.log_softmax(t(X4), v), ("log_softmax",),
             torch=lambda v: TF.log_softmax(tt(X4), v)),
        Slot("sum.axis", lambda v: F.sum(t(X4), v), ("sum",),
             torch=lambda v: tt(X4).sum() if v is None else tt(X4).sum(dim=v)),
        Slot("mean.axis", lambda v: F.mean(t(X4), v), ("mean",),
             torch=lambda v: tt(X4).mean() if v is None else tt(X4).mean(dim=v)),
        Slot("max.axis", lambda v: F.max(t(X4), v), ("max",),
             torch=lambda v: tt(X4).amax(dim=() if v is None else v)),
        Slot("flatten.start_dim", lambda v: F.flatten(t(X4), v), ("flatten",),
             torch=lambda v: torch.flatten(tt(X4), v)),
        Slot("concat.axis", lambda v: F.concat([t(X4), t(X4)], v), ("concat",),
             torch=lambda v: torch.cat([tt(X4), tt(X4)], v)),
        Slot("stack.axis", lambda v: F.stack([t(X2), t(X2)], v), ("stack",),
             torch=lambda v: torch.stack([tt(X2), tt(X2)], v)),
        Slot("reshape.shape", lambda v: F.reshape(t(X2), v), ("reshape",),
             torch=lambda v: tt(X2).reshape(v)),
        Slot("transpose.axes", lambda v: F.transpose(t(X2), v), ("transpose",),
             torch=lambda v: tt(X2).T if v is None else tt(X2).permute(v)),
        Slot("pad.pad", lambda v: F.pad(t(X4), v), ("pad",),
             ok=lambda v: isinstance(v, (tuple, list)) and len(v) % 2 == 0
             and all(is_int(e, 0) for e in v)),
        Slot("pad.value", lambda v: F.pad(t(X4), (1, 1), v), ("pad",),
             torch=lambda v: TF.pad(tt(X4), (1, 1), value=v)),
        Slot("clip.min", lambda v: F.clip(t(X4), v), ("clip",),
             ok=lambda v: v is None or is_real(v, finite=False)),
        Slot("clip.max", lambda v: F.clip(t(X4), None, v), ("clip",),
             ok=lambda v: v is None or is_real(v, finite=False)),
        Slot("batch_norm.eps", lambda v: _bn(eps=v), ("batch_norm",),
             ok=lambda v: is_real(v, 0, lo_open=True)),
        Slot("batch_norm.momentum", lambda v: _bn(momentum=v), ("batch_norm",),
             ok=lambda v: is_real(v, 0, 1)),
        Slot("dropout.p", lambda v: F.dropout(t(X4), v), ("dropout",),
             ok=lambda v: is_real(v, 0, 1)),
        Slot("dropout2d.p", lambda v: F.dropout2d(t(X4), v), ("dropout2d",),
             ok=lambda v: is_real(v, 0, 1)),
        Slot("cross_entropy.label_smoothing",
             lambda v: F.cross_entropy(t(X2), TARGET, label_smoothing=v), ("cross_entropy",),
             torch=lambda v: TF.cross_entropy(tt(X2), torch.tensor(TARGET), label_smoothing=v)),
        Slot("cross_entropy.ignore_index",
             lambda v: F.cross_entropy(t(X2), TARGET, ignore_index=v), ("cross_entropy",),
             torch=lambda v: TF.cross_entropy(tt(X2), torch.tensor(TARGET), ignore_index=v)),
        Slot("cross_entropy.reduction",
             lambda v: F.cross_entropy(t(X2), TARGET, reduction=v), ("cross_entropy",)),
        Slot("nll_loss.ignore_index",
             lambda v: F.nll_loss(t(X2), TARGET, ignore_index=v), ("nll_loss",),
             torch=lambda v: TF.nll_loss(tt(X2), torch.tensor(TARGET), ignore_index=v)),
        Slot("nll_loss.reduction", lambda v: F.nll_loss(t(X2), TARGET, reduction=v),
             ("nll_loss",)),
        Slot("mse_loss.reduction", lambda v: F.mse_loss(t(X2), X2 * 0, reduction=v),
             ("mse_loss",)),
        Slot("max_pool2d.kernel_size", lambda v: F.max_pool2d(t(X4), v), ("max_pool2d",),
             ok=lambda v: is_pair(v)),
        Slot("max_pool2d.stride", lambda v: F.max_pool2d(t(X4), 2, v), ("max_pool2d",),
             ok=lambda v: v is None or (isinstance(v, (tuple, list)) and len(v) == 0)
             or is_pair(v)),
        Slot("max_pool2d.padding", lambda v: F.max_pool2d(t(X4), 3, 1, v), ("max_pool2d",),
             ok=lambda v: is_pair(v, 0)),
        Slot("max_pool2d.dilation", lambda v: F.max_pool2d(t(X4), 2, 1, 0, v),
             ("max_pool2d",), ok=lambda v: is_pair(v)),
        Slot("avg_pool2d.kernel_size", lambda v: F.avg_pool2d(t(X4), v), ("avg_pool2d",),
             ok=lambda v: is_pair(v)),
        Slot("avg_pool2d.divisor_override",
             lambda v: F.avg_pool2d(t(X4), 2, divisor_override=v), ("avg_pool2d",),
             ok=lambda v: v is None or is_int(v, 1)),
        Slot("adaptive_avg_pool2d.output_size", lambda v: F.adaptive_avg_pool2d(t(X4), v),
             ("adaptive_avg_pool2d",),
             ok=lambda v: is_int(v, 1) or (isinstance(v, (tuple, list)) and len(v) == 2
                                           and all(e is None or is_int(e, 1) for e in v))),
        Slot("adaptive_max_pool2d.output_size", lambda v: F.adaptive_max_pool2d(t(X4), v),
             ("adaptive_max_pool2d",),
             ok=lambda v: is_int(v, 1) or (isinstance(v, (tuple, list)) and len(v) == 2
                                           and all(e is None or is_int(e, 1) for e in v))),
        Slot("conv2d.stride", lambda v: F.conv2d(t(X4), t(_x((2, 3, 3, 3))), stride=v),
             ("conv2d",), ok=lambda v: is_pair(v)),
        Slot("conv2d.padding", lambda v: F.conv2d(t(X4), t(_x((2, 3, 3, 3))), padding=v),
             ("conv2d",), ok=lambda v: is_pair(v, 0)),
        Slot("conv2d.dilation", lambda v: F.conv2d(t(X4), t(_x((2, 3, 3, 3))), dilation=v),
             ("conv2d",), ok=lambda v: is_pair(v)),
        Slot("conv2d.groups", lambda v: F.conv2d(t(X4), t(_x((3, 1, 3, 3))), groups=v),
             ("conv2d",), ok=lambda v: v in (1, 3) and is_int(v)),
    ]
    return s


def _layer(make: Callable[[Any], Any], shape: tuple = (2, 3, 6, 6)) -> Callable[[Any], Any]:
    def call(v: Any) -> Any:
        layer = make(v)
        return layer(t(_x(shape)))
    return call


def layer_slots() -> list[Slot]:
    return [
        Slot("Dense.units", _layer(lambda v: L.Dense(v), (4, 3)), ("Dense",),
             ok=lambda v: is_int(v, 1)),
        Slot("Conv2D.filters", _layer(lambda v: L.Conv2D(v, 3)), ("Conv2D",),
             ok=lambda v: is_int(v, 1)),
        Slot("Conv2D.kernel_size", _layer(lambda v: L.Conv2D(2, v)), ("Conv2D",),
             ok=lambda v: is_pair(v)),
        Slot("Conv2D.strides", _layer(lambda v: L.Conv2D(2, 3, strides=v)), ("Conv2D",),
             ok=lambda v: is_pair(v)),
        Slot("Dropout.rate", _layer(lambda v: L.Dropout(v)), ("Dropout",),
             ok=lambda v: is_real(v, 0, 1, hi_open=True)),
        Slot("SpatialDropout2D.rate", _layer(lambda v: L.SpatialDropout2D(v)),
             ("SpatialDropout2D", "Dropout"), ok=lambda v: is_real(v, 0, 1, hi_open=True)),
        Slot("LeakyReLU.negative_slope", _layer(lambda v: L.LeakyReLU(v)), ("LeakyReLU",),
             ok=lambda v: is_real(v)),
        Slot("ELU.alpha", _layer(lambda v: L.ELU(v)), ("ELU",), ok=lambda v: is_real(v)),
        Slot("Softmax.axis", _layer(lambda v: L.Softmax(axis=v)), ("Softmax",),
             ok=lambda v: is_int(v, -4, 3)),
        Slot("Concatenate.axis", lambda v: L.Concatenate(axis=v)([t(X4), t(X4)]),
             ("Concatenate",), ok=lambda v: is_int(v, -4, 3)),
        Slot("BatchNormalization.momentum",
             _layer(lambda v: L.BatchNormalization(momentum=v)), ("BatchNormalization",),
             ok=lambda v: is_real(v, 0, 1)),
        Slot("BatchNormalization.epsilon",
             _layer(lambda v: L.BatchNormalization(epsilon=v)), ("BatchNormalization",),
             ok=lambda v: is_real(v, 0, lo_open=True)),
        Slot("MaxPooling2D.pool_size", _layer(lambda v: L.MaxPooling2D(v)), ("MaxPooling2D",),
             ok=lambda v: is_pair(v)),
        Slot("AveragePooling2D.pool_size", _layer(lambda v: L.AveragePooling2D(v)),
             ("AveragePooling2D",), ok=lambda v: is_pair(v)),
        Slot("AdaptiveAveragePooling2D.output_size",
             _layer(lambda v: L.AdaptiveAveragePooling2D(v)), ("AdaptiveAveragePooling2D",),
             ok=lambda v: is_pair(v)),
        Slot("ZeroPadding2D.padding", _layer(lambda v: L.ZeroPadding2D(v)),
             ("ZeroPadding2D",), ok=lambda v: is_pair(v, 0)),
    ]


def _params() -> list:
    return [gpucnn.Parameter(np.ones(3, np.float32))]


def _opt(cls: Any, **kw: Any) -> Any:
    opt = cls(_params(), **kw)
    for g in opt.param_groups:
        for p in g["params"]:
            p.grad = Tensor(np.ones(p.shape, p.dtype), backend=p.backend)
    opt.step()
    return opt


NONNEG = lambda v: is_real(v, 0)  # noqa: E731


def optim_slots() -> list[Slot]:
    out = []
    for cls, args in (
        (optim.SGD, ("lr", "momentum", "dampening", "weight_decay")),
        (optim.Adam, ("lr", "eps", "weight_decay", "betas")),
        (optim.AdamW, ("lr", "eps", "weight_decay")),
        (optim.RMSprop, ("lr", "alpha", "eps", "weight_decay", "momentum")),
    ):
        for a in args:
            ok = NONNEG
            if a == "lr":  # None: the documented default (lr= and Keras's learning_rate=)
                def ok(v: Any) -> bool:
                    return v is None or NONNEG(v)
            if a == "betas":
                def ok(v: Any) -> bool:
                    return isinstance(v, (tuple, list)) and len(v) == 2 and all(
                        is_real(b, 0, 1, hi_open=True) for b in v)
            out.append(Slot(f"{cls.__name__}.{a}",
                            lambda v, cls=cls, a=a: _opt(cls, **{a: v}),
                            (cls.__name__,), ok=ok))

    def sched(cls: Any, **kw: Any) -> Any:
        return lambda v: cls(optim.SGD(_params(), lr=0.1), **{k: (v if x is ... else x)
                                                           for k, x in kw.items()})

    out += [
        Slot("StepLR.step_size", sched(S.StepLR, step_size=...), ("StepLR",),
             ok=lambda v: is_int(v, 1)),
        Slot("StepLR.gamma", sched(S.StepLR, step_size=2, gamma=...), ("StepLR",), ok=NONNEG),
        Slot("MultiStepLR.milestones", sched(S.MultiStepLR, milestones=...),
             ("MultiStepLR",), ok=lambda v: isinstance(v, (list, tuple))
             and all(is_int(m, 0) for m in v)),
        Slot("ExponentialLR.gamma", sched(S.ExponentialLR, gamma=...), ("ExponentialLR",),
             ok=NONNEG),
        Slot("CosineAnnealingLR.T_max", sched(S.CosineAnnealingLR, T_max=...),
             ("CosineAnnealingLR",), ok=lambda v: is_int(v, 1)),
        Slot("CosineAnnealingLR.eta_min", sched(S.CosineAnnealingLR, T_max=3, eta_min=...),
             ("CosineAnnealingLR",), ok=NONNEG),
        Slot("LinearLR.start_factor", sched(S.LinearLR, start_factor=...), ("LinearLR",),
             ok=lambda v: is_real(v, 0, 1, lo_open=True)),
        Slot("LinearLR.total_iters", sched(S.LinearLR, total_iters=...), ("LinearLR",),
             ok=lambda v: is_int(v, 0)),
        Slot("ReduceLROnPlateau.factor", sched(S.ReduceLROnPlateau, factor=...),
             ("ReduceLROnPlateau",), ok=lambda v: is_real(v, 0, 1, hi_open=True)),
        Slot("ReduceLROnPlateau.patience", sched(S.ReduceLROnPlateau, patience=...),
             ("ReduceLROnPlateau",), ok=lambda v: is_int(v, 0)),
        Slot("ReduceLROnPlateau.cooldown", sched(S.ReduceLROnPlateau, cooldown=...),
             ("ReduceLROnPlateau",), ok=lambda v: is_int(v, 0)),
        Slot("ReduceLROnPlateau.min_lr", sched(S.ReduceLROnPlateau, min_lr=...),
             ("ReduceLROnPlateau",), ok=lambda v: NONNEG(v) or (
                 isinstance(v, (list, tuple)) and len(v) == 1 and NONNEG(v[0]))),
    ]
    return out


def _loader(**kw: Any) -> Any:
    return list(DataLoader((np.ones((5, 2), np.float32), np.arange(5)), backend=B.current(),
                           **kw))


_MODEL: dict = {}


def _fit(**kw: Any) -> Any:
    m = gpucnn.Sequential([L.Dense(2, input_shape=(3,))])
    m.compile(optimizer="sgd", loss="mse")
    kw.setdefault("verbose", 0)
    return m.fit(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32), **kw)


def _predict(**kw: Any) -> Any:
    m = gpucnn.Sequential([L.Dense(2, input_shape=(3,))])
    return m.predict(np.ones((4, 3), np.float32), **kw)


def _with_callback(cb: Any) -> Any:
    return _fit(epochs=2, callbacks=[cb])


def training_slots() -> list[Slot]:
    return [
        Slot("DataLoader.batch_size", lambda v: _loader(batch_size=v), ("DataLoader",),
             ok=lambda v: is_int(v, 1)),
        Slot("DataLoader.prefetch", lambda v: _loader(prefetch=v), ("DataLoader",),
             ok=lambda v: is_int(v, 0)),
        Slot("DataLoader.seed", lambda v: _loader(seed=v, shuffle=True), ("DataLoader",),
             ok=lambda v: v is None or is_int(v, 0)),
        Slot("DataLoader.shuffle", lambda v: _loader(shuffle=v), ("DataLoader",),
             ok=lambda v: isinstance(v, bool) or v in (0, 1) and is_int(v)),
        Slot("DataLoader.drop_last", lambda v: _loader(drop_last=v), ("DataLoader",),
             ok=lambda v: isinstance(v, bool) or v in (0, 1) and is_int(v)),
        Slot("fit.epochs", lambda v: _fit(epochs=v), ("fit",), ok=lambda v: is_int(v, 0)),
        Slot("fit.batch_size", lambda v: _fit(batch_size=v), ("fit",),
             ok=lambda v: is_int(v, 1)),
        Slot("fit.initial_epoch", lambda v: _fit(initial_epoch=v), ("fit",),
             ok=lambda v: is_int(v, 0)),
        Slot("fit.validation_split", lambda v: _fit(validation_split=v), ("fit",),
             ok=lambda v: is_real(v, 0, 0.75, hi_open=True)),
        Slot("fit.steps_per_epoch", lambda v: _fit(steps_per_epoch=v), ("fit",),
             ok=lambda v: v is None or is_int(v, 1)),
        Slot("fit.seed", lambda v: _fit(seed=v), ("fit",),
             ok=lambda v: v is None or is_int(v, 0)),
        Slot("fit.verbose", lambda v: _fit(verbose=v), ("fit",),
             ok=lambda v: is_int(v, 0, 2)),
        Slot("fit.shuffle", lambda v: _fit(shuffle=v), ("fit",),
             ok=lambda v: isinstance(v, bool) or v in (0, 1) and is_int(v)),
        Slot("fit.update_freq", lambda v: _fit(update_freq=v), ("fit",),
             ok=lambda v: v in ("batch", "epoch", None) or is_int(v, 1)),
        Slot("predict.batch_size", lambda v: _predict(batch_size=v), ("predict",),
             ok=lambda v: is_int(v, 1)),
        Slot("EarlyStopping.patience",
             lambda v: _with_callback(C.EarlyStopping("loss", patience=v)), ("EarlyStopping",),
             ok=lambda v: is_int(v, 0)),
        Slot("EarlyStopping.min_delta",
             lambda v: _with_callback(C.EarlyStopping("loss", min_delta=v)),
             ("EarlyStopping",), ok=lambda v: is_real(v)),
        Slot("EarlyStopping.monitor", lambda v: _with_callback(C.EarlyStopping(v)),
             ("EarlyStopping",), ok=lambda v: isinstance(v, str) and bool(v)),
        Slot("ReduceLROnPlateau(callback).factor",
             lambda v: _with_callback(C.ReduceLROnPlateau("loss", factor=v)),
             ("ReduceLROnPlateau",), ok=lambda v: is_real(v, 0, 1, lo_open=True, hi_open=True)),
        Slot("ReduceLROnPlateau(callback).patience",
             lambda v: _with_callback(C.ReduceLROnPlateau("loss", patience=v)),
             ("ReduceLROnPlateau",), ok=lambda v: is_int(v, 0)),
        Slot("ReduceLROnPlateau(callback).min_lr",
             lambda v: _with_callback(C.ReduceLROnPlateau("loss", min_lr=v)),
             ("ReduceLROnPlateau",), ok=NONNEG),
    ]


SLOTS = functional_slots() + layer_slots() + optim_slots() + training_slots()


def _torch_answer(slot: Slot, value: Any) -> tuple[bool, Any]:
    """``(True, answer)`` when PyTorch accepts ``value`` in this slot, else ``(False, None)``."""
    try:
        return True, slot.torch(value)
    except Exception:  # noqa: BLE001 - any refusal of PyTorch's
        return False, None


@pytest.mark.parametrize("slot", SLOTS, ids=[s.id for s in SLOTS])
def test_bad_argument_is_refused_by_name_or_matches_torch(slot: Slot) -> None:
    def check(value: Any) -> None:
        try:
            ours = slot.call(value)
        except (TypeError, ValueError) as exc:
            msg = str(exc)
            assert any(msg.startswith(f"{n}:") or msg.startswith(f"{n} ") for n in slot.names), (
                f"{slot.id} with {value!r}: the message does not name the op: {msg!r}")
            return
        # Accepted: PyTorch must agree (same answer), or the value is documented as valid.
        if slot.torch is not None and torch is not None:
            accepted, theirs = _torch_answer(slot, value)
            assert accepted, f"{slot.id}: {value!r} accepted here but refused by PyTorch"
            _compare(ours, theirs, slot, value)
        else:
            assert slot.ok(value), f"{slot.id}: invalid value {value!r} silently accepted"

    for value in POOL:  # every wrong kind, always
        check(value)

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(value=VALUES)
    def prop(value: Any) -> None:
        check(value)

    prop()


def test_every_public_functional_op_is_covered() -> None:
    """Each public op of gpucnn.functional taking a numeric argument has a slot here."""
    covered = {s.id.split(".")[0] for s in SLOTS}
    for op in ("leaky_relu", "elu", "softplus", "softmax", "log_softmax", "sum", "mean",
               "max", "flatten", "concat", "stack", "reshape", "transpose", "pad", "clip",
               "batch_norm", "dropout", "dropout2d", "cross_entropy", "nll_loss", "max_pool2d",
               "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "conv2d"):
        assert op in covered, op
