"""ONNX import: :func:`load` reads a graph and returns :class:`OnnxModel`, a gpucnn ``Model``
that interprets it node by node with gpucnn functional ops (NCHW, the current backend).

Float initializers become Parameters (trainable: gradients flow, ``compile``/``fit`` work),
batch-norm statistics become buffers (updated in training mode, as PyTorch), integer tensors
and ``Constant`` outputs stay host constants. The file is read with the ``onnx`` package's
protobuf parser (never pickle); external data must lie inside the model's directory.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

import gpucnn.functional as F
from gpucnn import backend as _backend
from gpucnn.model import Model
from gpucnn.onnx._common import UnsupportedOpError, require_onnx
from gpucnn.tensor import Parameter, Tensor

__all__ = ["load", "OnnxModel", "SUPPORTED_OPS"]

#: The oldest ``ai.onnx`` opset the importer reads (attribute/input forms from here on).
MIN_IMPORT_OPSET = 11

# Ops that only take static (constant) tensors in these input positions.
_STATIC_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Pad": (1, 2, 3), "Squeeze": (1,), "Unsqueeze": (1,),
    "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "Clip": (1, 2),
    "Slice": (1, 2, 3, 4), "Dropout": (1, 2), "Pow": (1,),
}
# Size-1 float initializers that only feed these ops stay constants (not Parameters).
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Clip", "Pad", "Dropout"}


def _t(op: str, name: str, why: str, opset: int) -> UnsupportedOpError:
    return UnsupportedOpError(f"gpucnn.onnx.load: op {op!r} (opset {opset}) of node {name!r}: "
                              f"{why}")


def _np(a: Any) -> np.ndarray:
    return np.asarray(_backend.to_numpy(a))


def _sanitize(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^0-9A-Za-z_]", "_", name) or "w"
    if base[0].isdigit():
        base = "w_" + base
    out, k = base, 1
    while out in taken:
        out = f"{base}_{k}"
        k += 1
    taken.add(out)
    return out


class _Node:
    __slots__ = ("op", "name", "inputs", "outputs", "attrs")

    def __init__(self, op: str, name: str, inputs: list, outputs: list, attrs: dict) -> None:
        self.op, self.name, self.inputs, self.outputs, self.attrs = (
            op, name, inputs, outputs, attrs)


class OnnxModel(Model):
    """A gpucnn ``Model`` running an imported ONNX graph (see :func:`load`).

    ``forward(*inputs)`` takes one tensor per graph input (NCHW) and returns a Tensor, or a
    tuple for several graph outputs. Parameters are named after the ONNX initializers (dots and
    other characters replaced by ``_``); ``onnx_names`` maps them back.
    """

    def __init__(
        self,
        nodes: list[_Node],
        inputs: list[tuple[str, tuple]],
        outputs: list[str],
        params: dict[str, np.ndarray],
        buffers: dict[str, np.ndarray],
        consts: dict[str, np.ndarray],
        opset: int,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        be = _backend.current()
        taken: set[str] = set()
        object.__setattr__(self, "_nodes", nodes)
        object.__setattr__(self, "_graph_inputs", inputs)
        object.__setattr__(self, "_graph_outputs", outputs)
        object.__setattr__(self, "_consts", consts)
        object.__setattr__(self, "_const_cache", {})
        object.__setattr__(self, "opset", opset)
        attr_of: dict[str, str] = {}
        for onnx_name, arr in params.items():
            attr = _sanitize(onnx_name, taken)
            self.register_parameter(attr, Parameter(_backend.to_backend(arr, be)))
            attr_of[onnx_name] = attr
        for onnx_name, arr in buffers.items():
            attr = _sanitize(onnx_name, taken)
            self.register_buffer(attr, Tensor(_backend.to_backend(arr, be)))
            attr_of[onnx_name] = attr
        object.__setattr__(self, "_attr_of", attr_of)
        object.__setattr__(self, "onnx_names", {a: n for n, a in attr_of.items()})
        shape = inputs[0][1] if len(inputs) == 1 else None
        if shape is not None and all(isinstance(d, int) and d > 0 for d in shape[1:]):
            object.__setattr__(self, "_build_input_shape", list(shape[1:]))

    @property
    def input_shape(self) -> tuple | None:
        """Per-sample input shape of a single-input graph with static dims (else ``None``)."""
        s = self.__dict__.get("_build_input_shape")
        return tuple(s) if s is not None else None

    def extra_repr(self) -> str:
        return f"opset={self.opset}, nodes={len(self._nodes)}"

    # ------------------------------------------------------------------ values
    def _static(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        return self._consts.get(name)

    def _value(self, env: dict, name: str) -> Any:
        if not name:
            return None
        v = env.get(name)
        if v is not None:
            return v
        attr = self._attr_of.get(name)
        if attr is not None:
            return getattr(self, attr)
        if name in self._consts:
            be = self.backend
            key = (name, be)
            t = self._const_cache.get(key)
            if t is None:
                arr = self._consts[name]
                t = Tensor(_backend.to_backend(arr, be))
                self._const_cache[key] = t
            return t
        raise KeyError(f"gpucnn.onnx: value {name!r} is used before it is computed")

    # ------------------------------------------------------------------ forward
    def forward(self, *xs: Any) -> Any:
        if len(xs) == 1 and isinstance(xs[0], (list, tuple)) and len(self._graph_inputs) > 1:
            xs = tuple(xs[0])
        if len(xs) != len(self._graph_inputs):
            raise TypeError(
                f"OnnxModel {self.name!r}: expected {len(self._graph_inputs)} input(s) "
                f"{[n for n, _ in self._graph_inputs]}, got {len(xs)}"
            )
        env: dict[str, Any] = {}
        for (name, shape), x in zip(self._graph_inputs, xs):
            if not isinstance(x, Tensor):
                x = Tensor(_backend.to_backend(np.asarray(x, dtype=np.float32), self.backend))
            if len(shape) != x.ndim or any(
                isinstance(d, int) and d > 0 and d != s for d, s in zip(shape, x.shape)
            ):
                raise ValueError(
                    f"OnnxModel {self.name!r}: input {name!r} expects shape "
                    f"{tuple(d if isinstance(d, int) and d > 0 else None for d in shape)}, got "
                    f"{x.shape}"
                )
            env[name] = x
        for node in self._nodes:
            ins = [self._value(env, n) for n in node.inputs]
            try:
                outs = _OPS[node.op](self, node, ins)
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"gpucnn.onnx: node {node.name!r} ({node.op}): {exc}") from exc
            if not isinstance(outs, tuple):
                outs = (outs,)
            for n, t in zip(node.outputs, outs):
                if n:
                    env[n] = t
        res = tuple(self._value(env, n) for n in self._graph_outputs)
        return res[0] if len(res) == 1 else res


# ----------------------------------------------------------------------------- op handlers

Handler = Callable[[OnnxModel, _Node, list], Any]
_OPS: dict[str, Handler] = {}


def _op(*names: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for n in names:
            _OPS[n] = fn
        return fn

    return deco


def _ints(m: OnnxModel, node: _Node, i: int) -> list[int] | None:
    if i >= len(node.inputs):
        return None
    a = m._static(node.inputs[i])
    return None if a is None else [int(v) for v in np.asarray(a).reshape(-1)]


def _same_pads(size: tuple, k: tuple, s: tuple, d: tuple, mode: str) -> list[int]:
    begins, ends = [], []
    for n, kk, ss, dd in zip(size, k, s, d):
        out = -(-n // ss)
        total = max((out - 1) * ss + (kk - 1) * dd + 1 - n, 0)
        lo = total // 2 if mode == "SAME_UPPER" else total - total // 2
        begins.append(lo)
        ends.append(total - lo)
    return begins + ends


def _window(node: _Node, x: Tensor, k: tuple) -> tuple:
    a = node.attrs
    s = tuple(a.get("strides", [1, 1]))
    d = tuple(a.get("dilations", [1, 1]))
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(tuple(x.shape[2:]), k, s, d, auto)
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    else:
        pads = list(a.get("pads", [0, 0, 0, 0]))
    return s, d, pads  # pads: [top, left, bottom, right]


def _need_4d(op: str, x: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"{op}: only 2-D (N, C, H, W) inputs are supported, got shape {x.shape}")


@_op("Conv")
def _conv(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    _need_4d("Conv", x)
    k = tuple(node.attrs.get("kernel_shape", w.shape[2:]))
    s, d, (t, left, bt, r) = _window(node, x, k)
    return F.conv2d(x, w, b, s, (t, bt, left, r), d, int(node.attrs.get("group", 1)))


@_op("MaxPool")
def _maxpool(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    x = ins[0]
    _need_4d("MaxPool", x)
    k = tuple(node.attrs["kernel_shape"])
    s, d, (t, left, bt, r) = _window(node, x, k)
    ceil = bool(node.attrs.get("ceil_mode", 0))
    if t == bt and left == r and t <= k[0] // 2 and left <= k[1] // 2:
        return F.max_pool2d(x, k, s, (t, left), d, ceil)
    return F.max_pool2d(F.pad(x, (left, r, t, bt), value=-np.inf), k, s, 0, d, ceil)


@_op("AveragePool")
def _avgpool(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    x = ins[0]
    _need_4d("AveragePool", x)
    k = tuple(node.attrs["kernel_shape"])
    s, d, (t, left, bt, r) = _window(node, x, k)
    if d != (1, 1):
        raise ValueError(f"AveragePool: dilations {d} are not supported")
    ceil = bool(node.attrs.get("ceil_mode", 0))
    cip = bool(node.attrs.get("count_include_pad", 0))  # ONNX's default is 0
    if t == bt and left == r and t <= k[0] // 2 and left <= k[1] // 2:
        return F.avg_pool2d(x, k, s, (t, left), ceil, cip)
    num = F.avg_pool2d(F.pad(x, (left, r, t, bt)), k, s, 0, ceil)
    if cip:
        return num
    ones = Tensor(x.xp.ones((1, 1, *x.shape[2:]), dtype=x.dtype))
    return num / F.avg_pool2d(F.pad(ones, (left, r, t, bt)), k, s, 0, ceil)


@_op("GlobalAveragePool")
def _gap(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    _need_4d("GlobalAveragePool", ins[0])
    return F.global_avg_pool2d(ins[0], keepdims=True)


@_op("GlobalMaxPool")
def _gmp(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    _need_4d("GlobalMaxPool", ins[0])
    return F.global_max_pool2d(ins[0], keepdims=True)


@_op("BatchNormalization")
def _bn(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    x, scale, bias, mean, var = ins[:5]
    mom = float(node.attrs.get("momentum", 0.9))
    return F.batch_norm(x, mean, var, scale, bias, training=m.training, momentum=1.0 - mom,
                        eps=float(node.attrs.get("epsilon", 1e-5)))


@_op("Gemm")
def _gemm(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
    if node.attrs.get("transA", 0):
        a = F.transpose(a)
    trans_b = bool(node.attrs.get("transB", 0))
    if trans_b and alpha == 1.0 and beta == 1.0 and c is not None and c.shape == (b.shape[0],):
        return F.linear(a, b, c)
    y = F.linear(a, b) if trans_b else F.matmul(a, b)
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return y


@_op("MatMul")
def _matmul(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    return F.matmul(ins[0], ins[1])


@_op("Add")
def _add(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    return ins[0] + ins[1]


@_op("Sub")
def _sub(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    return ins[0] - ins[1]


@_op("Mul")
def _mul(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    return ins[0] * ins[1]


@_op("Div")
def _div(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    return ins[0] / ins[1]


@_op("Neg")
def _neg(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    return -ins[0]


@_op("Pow")
def _pow(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    p = float(np.asarray(m._static(node.inputs[1])).reshape(-1)[0])
    return F.sqrt(ins[0]) if p == 0.5 else ins[0] ** p


@_op("Sqrt")
def _sqrt(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    return F.sqrt(ins[0])


for _name, _fn in (("Relu", F.relu), ("Sigmoid", F.sigmoid), ("Tanh", F.tanh),
                   ("Exp", F.exp), ("Log", F.log), ("Abs", F.abs), ("Softplus", F.softplus)):
    _OPS[_name] = (lambda fn: lambda m, node, ins: fn(ins[0]))(_fn)


@_op("LeakyRelu")
def _leaky(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    return F.leaky_relu(ins[0], float(node.attrs.get("alpha", 0.01)))


@_op("Elu")
def _elu(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    return F.elu(ins[0], float(node.attrs.get("alpha", 1.0)))


@_op("PRelu")
def _prelu(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    x, slope = ins
    c = x.shape[1] if x.ndim >= 2 else 1
    n = math.prod(slope.shape)
    if n == 1:
        return F.prelu(x, F.reshape(slope, (1,)))
    j = 1 - (x.ndim - slope.ndim)  # the slope axis aligned with the channel axis 1
    if 0 <= j < slope.ndim and slope.shape[j] == c and n == c:
        return F.prelu(x, F.reshape(slope, (c,)))
    raise ValueError(f"PRelu: slope of shape {slope.shape} for input {x.shape}: only one slope "
                     "or one per channel (axis 1) is supported")


@_op("Gelu")
def _gelu(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    return F.gelu(ins[0], approximate=node.attrs.get("approximate", "none"))


_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


@_op("Erf")
def _erf(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    """erf from exp, abs and where (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7)."""
    x = ins[0]
    ax = F.abs(x)
    t = 1.0 / (ax * _ERF_P + 1.0)
    poly = t * _ERF_A[4]
    for a in reversed(_ERF_A[:4]):
        poly = (poly + a) * t
    y = 1.0 - poly * F.exp(-(ax * ax))
    return F.where(x >= 0, y, -y)


def _softmax_like(fn: Callable, m: OnnxModel, node: _Node, x: Tensor) -> Tensor:
    if m.opset >= 13:
        return fn(x, int(node.attrs.get("axis", -1)))
    axis = int(node.attrs.get("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    if axis == x.ndim - 1:
        return fn(x, -1)
    flat = F.reshape(x, (math.prod(x.shape[:axis]), -1))  # opset < 13: coerced to 2-D
    return F.reshape(fn(flat, -1), x.shape)


@_op("Softmax")
def _softmax(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    return _softmax_like(F.softmax, m, node, ins[0])


@_op("LogSoftmax")
def _log_softmax(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    return _softmax_like(F.log_softmax, m, node, ins[0])


@_op("Flatten")
def _flatten(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    x = ins[0]
    axis = int(node.attrs.get("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    return F.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


@_op("Reshape")
def _reshape(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    x = ins[0]
    shape = _ints(m, node, 1)
    assert shape is not None
    if not node.attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return F.reshape(x, tuple(shape))


@_op("Concat")
def _concat(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    return F.concat([t for t in ins if t is not None], axis=int(node.attrs["axis"]))


@_op("Pad")
def _pad(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    x = ins[0]
    mode = node.attrs.get("mode", "constant")
    if mode != "constant":
        raise ValueError(f"Pad: mode {mode!r} is not supported (only 'constant')")
    pads = _ints(m, node, 1)
    assert pads is not None
    value = 0.0
    cv = m._static(node.inputs[2]) if len(node.inputs) > 2 else None
    if cv is not None and np.asarray(cv).size:
        value = float(np.asarray(cv).reshape(-1)[0])
    axes = _ints(m, node, 3)
    nax = len(pads) // 2
    axes = list(range(x.ndim)) if axes is None else [a + x.ndim if a < 0 else a for a in axes]
    if len(axes) != nax:
        raise ValueError(f"Pad: {len(pads)} pads for {len(axes)} axes")
    widths = [(0, 0)] * x.ndim
    for i, a in enumerate(axes):
        widths[a] = (pads[i], pads[i + nax])
    if any(lo < 0 or hi < 0 for lo, hi in widths):
        raise ValueError(f"Pad: negative pads {pads} (cropping) are not supported")
    torch_order: list[int] = []
    for lo, hi in reversed(widths):
        torch_order += [lo, hi]
    return F.pad(x, tuple(torch_order), value=value)


@_op("Dropout")
def _dropout(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    ratio = 0.5
    r = m._static(node.inputs[1]) if len(node.inputs) > 1 else None
    if r is not None:
        ratio = float(np.asarray(r).reshape(-1)[0])
    elif "ratio" in node.attrs:
        ratio = float(node.attrs["ratio"])
    if not m.training or ratio == 0.0:
        return ins[0]
    return F.dropout(ins[0], ratio, True)


@_op("Identity")
def _identity(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    return ins[0]


@_op("Transpose")
def _transpose(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    perm = node.attrs.get("perm")
    return F.transpose(ins[0], None if perm is None else tuple(int(p) for p in perm))


def _axes(m: OnnxModel, node: _Node, since: int) -> list[int] | None:
    """Axes from input 1 (opset >= ``since``) or the ``axes`` attribute (before)."""
    if m.opset >= since:
        return _ints(m, node, 1)
    a = node.attrs.get("axes")
    return None if a is None else [int(v) for v in a]


@_op("Squeeze")
def _squeeze(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    x = ins[0]
    axes = _axes(m, node, 13)
    if axes is None:
        keep = [d for d in x.shape if d != 1]
    else:
        drop = {a + x.ndim if a < 0 else a for a in axes}
        for a in drop:
            if x.shape[a] != 1:
                raise ValueError(f"Squeeze: axis {a} of shape {x.shape} is not 1")
        keep = [d for i, d in enumerate(x.shape) if i not in drop]
    return F.reshape(x, tuple(keep))


@_op("Unsqueeze")
def _unsqueeze(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    x = ins[0]
    axes = _axes(m, node, 13) or []
    nd = x.ndim + len(axes)
    pos = sorted(a + nd if a < 0 else a for a in axes)
    shape = list(x.shape)
    for a in pos:
        shape.insert(a, 1)
    return F.reshape(x, tuple(shape))


def _reduce(fn: Callable, since: int) -> Handler:
    def run(m: OnnxModel, node: _Node, ins: list) -> Tensor:
        x = ins[0]
        axes = _axes(m, node, since)
        keep = bool(node.attrs.get("keepdims", 1))
        if not axes:
            if node.attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.ndim))
        return fn(x, axis=tuple(a + x.ndim if a < 0 else a for a in axes), keepdims=keep)

    return run


_OPS["ReduceMean"] = _reduce(F.mean, 18)
_OPS["ReduceSum"] = _reduce(F.sum, 13)
_OPS["ReduceMax"] = _reduce(F.max, 18)


@_op("Clip")
def _clip(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    if m.opset >= 11:
        lo_a = m._static(node.inputs[1]) if len(node.inputs) > 1 else None
        hi_a = m._static(node.inputs[2]) if len(node.inputs) > 2 else None
        lo = None if lo_a is None else float(np.asarray(lo_a).reshape(-1)[0])
        hi = None if hi_a is None else float(np.asarray(hi_a).reshape(-1)[0])
    else:
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
    return F.clip(ins[0], lo, hi)  # min 0, max 6 is ReLU6


@_op("Cast")
def _cast(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    onnx = require_onnx()
    dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs["to"])))
    if dt.kind != "f":
        raise ValueError(f"Cast: only casts to floating types are supported, got {dt}")
    return ins[0] if ins[0].dtype == dt else ins[0].astype(dt)


@_op("Slice")
def _slice(m: OnnxModel, node: _Node, ins: list) -> Tensor:
    x = ins[0]
    starts, ends = _ints(m, node, 1), _ints(m, node, 2)
    assert starts is not None and ends is not None
    axes = _ints(m, node, 3) or list(range(len(starts)))
    steps = _ints(m, node, 4) or [1] * len(starts)
    index = [slice(None)] * x.ndim
    for b, e, a, s in zip(starts, ends, axes, steps):
        index[a + x.ndim if a < 0 else a] = slice(b, e, s)
    return x[tuple(index)]


SUPPORTED_OPS: tuple[str, ...] = tuple(sorted([*_OPS, "Constant"]))


# ----------------------------------------------------------------------------- loading


def _attrs(node: Any) -> dict:
    onnx = require_onnx()
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        out[a.name] = v
    return out


def _constant_value(node: Any, opset: int) -> np.ndarray:
    onnx = require_onnx()
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if a.name == "value":
            return onnx.numpy_helper.to_array(v)
        if a.name == "value_float":
            return np.array(v, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(v), dtype=np.float32)
        if a.name == "value_int":
            return np.array(v, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(v), dtype=np.int64)
    raise _t("Constant", node.name, "only value / value_float(s) / value_int(s) constants "
             "are supported", opset)


def _check_external(proto: Any, base: str) -> None:
    """Refuse external-data locations that are absolute or leave ``base``."""
    onnx = require_onnx()
    root = os.path.realpath(base)
    for t in onnx.external_data_helper._get_all_tensors(proto):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        target = os.path.realpath(os.path.join(root, loc))
        if not loc or os.path.isabs(loc) or os.path.commonpath([root, target]) != root:
            raise ValueError(
                f"gpucnn.onnx.load: initializer {t.name!r} points at external data {loc!r} "
                f"outside the model's directory {root}; refusing to read it"
            )
        if not os.path.isfile(target):
            raise ValueError(f"gpucnn.onnx.load: external data {loc!r} of initializer {t.name!r} "
                             f"is missing in {root}")


def _fuse_gelu(nodes: list[_Node], consts: dict, keep: set[str]) -> list[_Node]:
    """Replace ``0.5 * x * (1 + erf(x / sqrt 2))`` chains (what exporters write below opset
    20) with one Gelu node, so they run (and re-export) as gelu."""
    producer = {o: n for n in nodes for o in n.outputs}
    users: dict[str, list[_Node]] = {}
    for n in nodes:
        for i in n.inputs:
            users.setdefault(i, []).append(n)

    def scalar(name: str, want: float) -> bool:
        a = consts.get(name)
        return a is not None and a.size == 1 and abs(float(a.reshape(-1)[0]) - want) < 1e-4

    def only_user(name: str, op: str) -> _Node | None:
        us = users.get(name, [])
        if len(us) != 1 or us[0].op != op or name in keep:
            return None
        return us[0]

    def other(n: _Node, name: str) -> str:
        return n.inputs[1] if n.inputs[0] == name else n.inputs[0]

    drop: set[int] = set()
    new: dict[int, _Node] = {}
    for erf in nodes:
        if erf.op != "Erf":
            continue
        pre = producer.get(erf.inputs[0])
        if pre is None or pre.inputs[0] in ("",) or erf.inputs[0] in keep:
            continue
        if not ((pre.op == "Div" and scalar(pre.inputs[1], math.sqrt(2.0)))
                or (pre.op == "Mul" and scalar(pre.inputs[1], 1 / math.sqrt(2.0)))):
            continue
        x = pre.inputs[0]
        if len(users.get(pre.outputs[0], [])) != 1:
            continue
        add = only_user(erf.outputs[0], "Add")
        if add is None or not scalar(other(add, erf.outputs[0]), 1.0):
            continue
        m1 = only_user(add.outputs[0], "Mul")
        if m1 is None or other(m1, add.outputs[0]) != x:
            continue
        m2 = only_user(m1.outputs[0], "Mul")
        if m2 is None or not scalar(other(m2, m1.outputs[0]), 0.5):
            continue
        for n in (pre, erf, add, m1):
            drop.add(id(n))
        new[id(m2)] = _Node("Gelu", m2.name, [x], list(m2.outputs), {"approximate": "none"})
    return [new.get(id(n), n) for n in nodes if id(n) not in drop]


def load(path: str | os.PathLike) -> OnnxModel:
    """Read the ONNX file at ``path`` as an :class:`OnnxModel` in eval mode (parameters on
    the current backend; ``fit`` and ``train()`` switch batch norm and dropout to training).

    Supported: the ops of :data:`SUPPORTED_OPS` (what :func:`gpucnn.onnx.export` writes plus
    Constant, Identity, Reshape with a constant shape, Transpose, Squeeze/Unsqueeze,
    ReduceMean, Clip (ReLU6), Gemm, MatMul + Add, Slice...), ``ai.onnx`` opsets >= 11.

    Raises:
        UnsupportedOpError: an op outside that set (naming the op, its opset and the node), or
            one whose shape-like input is computed at run time.
        ValueError: an unreadable / truncated file, or external data outside the model's
            directory.
    """
    onnx = require_onnx()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"gpucnn.onnx.load: no such file: {path!r}")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise ValueError(f"gpucnn.onnx.load: {path!r} is not a readable ONNX model (truncated "
                         f"or corrupt?): {type(exc).__name__}: {exc}") from None
    base = os.path.dirname(os.path.abspath(path))
    _check_external(proto, base)
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, base)
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ValueError(f"gpucnn.onnx.load: {path!r} is not a valid ONNX model: "
                         f"{type(exc).__name__}: {exc}") from None
    return _from_proto(proto)


def _from_proto(proto: Any) -> OnnxModel:
    onnx = require_onnx()
    opsets = {o.domain or "ai.onnx": int(o.version) for o in proto.opset_import}
    opset = opsets.get("ai.onnx")
    g = proto.graph
    for n in g.node:
        dom = n.domain or "ai.onnx"
        if dom != "ai.onnx":
            raise _t(n.op_type, n.name, f"domain {dom!r} is not supported (only ai.onnx)",
                     opsets.get(dom, 0))
    if opset is None or opset < MIN_IMPORT_OPSET:
        raise UnsupportedOpError(f"gpucnn.onnx.load: ai.onnx opset {opset} is not supported "
                                 f"(need >= {MIN_IMPORT_OPSET})")
    floats: dict[str, np.ndarray] = {}
    consts: dict[str, np.ndarray] = {}
    for t in g.initializer:
        arr = onnx.numpy_helper.to_array(t)
        if arr.dtype.kind == "f":
            floats[t.name] = arr.astype(np.float32)
        else:
            consts[t.name] = arr
    nodes: list[_Node] = []
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        if n.op_type == "Constant":
            arr = _constant_value(n, opset)
            consts[n.output[0]] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr
            continue
        if n.op_type not in _OPS:
            raise _t(n.op_type, name, "unsupported op; supported: " + ", ".join(SUPPORTED_OPS),
                     opset)
        nodes.append(_Node(n.op_type, name, list(n.input), list(n.output), _attrs(n)))
    graph_outputs = [o.name for o in g.output]
    keep = set(graph_outputs)
    nodes = _fuse_gelu(nodes, {**consts, **{k: v for k, v in floats.items() if v.size == 1}},
                       keep)
    # Which float initializers are trainable parameters, which buffers, which constants.
    uses: dict[str, list[tuple[str, int]]] = {}
    for n in nodes:
        for k, i in enumerate(n.inputs):
            uses.setdefault(i, []).append((n.op, k))
        if n.op == "Dropout" and len(n.outputs) > 1 and n.outputs[1] and (
                n.outputs[1] in keep or any(n.outputs[1] in u.inputs for u in nodes)):
            raise _t(n.op, n.name, "the mask output is not supported", opset)
        if n.op == "MaxPool" and len(n.outputs) > 1 and n.outputs[1]:
            raise _t(n.op, n.name, "the Indices output is not supported", opset)
        if n.op == "BatchNormalization" and (n.attrs.get("training_mode", 0)
                                             or len([o for o in n.outputs if o]) > 1):
            raise _t(n.op, n.name, "training-mode batch norm graphs are not supported", opset)
    params: dict[str, np.ndarray] = {}
    buffers: dict[str, np.ndarray] = {}
    for name, arr in floats.items():
        us = uses.get(name, [])
        if any(op == "BatchNormalization" and k >= 3 for op, k in us):
            buffers[name] = arr
        elif not us or (arr.size == 1 and all(op in _ELEMENTWISE for op, _ in us)) or any(
                k in _STATIC_INPUTS.get(op, ()) for op, k in us):
            consts[name] = arr
        else:
            params[name] = arr
    for n in nodes:
        for k in _STATIC_INPUTS.get(n.op, ()):
            if k < len(n.inputs) and n.inputs[k] and n.inputs[k] not in consts:
                raise _t(n.op, n.name, f"input {k} ({n.inputs[k]!r}) must be a constant "
                         "(shape-computing subgraphs such as Shape -> Gather -> Reshape are not "
                         "supported)", opset)
    init_names = set(floats) | set(consts)
    inputs = []
    for vi in g.input:
        if vi.name in init_names:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in vi.type.tensor_type.shape.dim)
        inputs.append((vi.name, dims))
    model = OnnxModel(nodes, inputs, graph_outputs, params, buffers, consts, opset,
                      name=_sanitize(g.name or "onnx_model", set()))
    return model.eval()  # an inference graph: eval mode until fit() or train()
