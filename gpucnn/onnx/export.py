"""ONNX export: trace one eval-mode forward pass and write each recorded op as ONNX nodes.

Every gpucnn op is an autograd :class:`~gpucnn.tensor.Function` run through
``Function.apply``. :func:`export` wraps that entry point (and ``Module.__call__``, to know
which layer is running) for the length of one forward pass, restoring both in ``finally``,
and turns each recorded ``(op, inputs, arguments, output)`` into ONNX nodes. This covers
``Sequential`` models, the zoo, residual and inception blocks and PyTorch-style ``Module``
subclasses alike, since all of them end in the same functional ops.

Parameters become initializers named as in ``named_parameters()`` (buffers as in
``named_buffers()``); ops whose inputs are all constants are folded into initializers. A
dynamic batch dimension is tracked through the graph: an op that would mix the batch axis
with others (a reshape across it, a transpose moving it, a reduction over it) is an
:class:`ExportError` with ``dynamic_batch=True``.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucnn import backend as _backend
from gpucnn.module import Module
from gpucnn.onnx._common import ExportError, check_opset, min_ir_version, require_onnx
from gpucnn.saving import write_bytes_atomic
from gpucnn.tensor import Function, Parameter, Tensor, enable_grad

__all__ = ["export", "to_model_proto"]

_LOCK = threading.Lock()
_INT64_MIN = -(2**63)


@dataclass
class _Val:
    """A traced value: its ONNX name (once emitted), shape, dtype, whether axis 0 is the
    (dynamic) batch axis, and for constants and parameters the array itself."""

    name: str | None
    shape: tuple
    dtype: np.dtype
    batch: bool = False
    const: np.ndarray | None = None  # a foldable constant (not a parameter)
    param: np.ndarray | None = None  # a parameter or buffer, emitted on first use
    pname: str | None = None


def _onnx_dtype(dtype: Any) -> int:
    onnx = require_onnx()
    return int(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


class _Tracer:
    def __init__(self, model: Module, opset: int, dynamic: bool) -> None:
        self.opset = opset
        self.dynamic = dynamic
        self.nodes: list[Any] = []
        self.inits: dict[str, np.ndarray] = {}
        self.values: dict[int, _Val] = {}
        self.keep: list[Any] = []  # tensors whose ids are in self.values stay alive
        self.tainted: set[int] = set()
        self.scope: list[Module] = []
        self.counts: dict[str, int] = {}
        self.mod_names = {id(m): n for n, m in model.named_modules()}
        self.param_names = {id(p): n for n, p in model.named_parameters()}
        self.buffer_names: dict[int, str] = {}
        for n, b in model.named_buffers():
            if b is not None:
                self.buffer_names[id(b)] = n
                self.buffer_names[id(b.data)] = n
        self.used_names: set[str] = set()
        self.thread = threading.get_ident()
        self.error: ExportError | None = None

    # ------------------------------------------------------------------ naming
    def where(self) -> str:
        if not self.scope:
            return "the model's forward()"
        m = self.scope[-1]
        path = self.mod_names.get(id(m))
        at = f", at {path!r}" if path and path != m.name else ""
        return f"layer {m.name!r} ({type(m).__name__}{at})"

    def fresh(self, base: str) -> str:
        k = self.counts.get(base, 0)
        self.counts[base] = k + 1
        name = f"{base}_{k}" if k else base
        while name in self.used_names:
            k += 1
            self.counts[base] = k + 1
            name = f"{base}_{k}"
        self.used_names.add(name)
        return name

    def prefix(self) -> str:
        if not self.scope:
            return ""
        path = self.mod_names.get(id(self.scope[-1])) or self.scope[-1].name
        return f"{path}/" if path else ""

    # ------------------------------------------------------------------ emitting
    def init(self, arr: np.ndarray, base: str = "const") -> str:
        name = self.fresh(base)
        self.inits[name] = np.ascontiguousarray(arr)
        return name

    def scalar(self, v: float, dtype: Any) -> str:
        return self.init(np.array(v, dtype=dtype), "const")

    def ints(self, vals: Sequence[int]) -> str:
        return self.init(np.array(list(vals), dtype=np.int64), "const")

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> Any:
        onnx = require_onnx()
        nname = self.fresh(f"{self.prefix()}{op}")
        outs = [self.fresh(f"{nname}_out") for _ in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(onnx.helper.make_node(op, list(inputs), outs, name=nname, **attrs))
        return outs[0] if n_out == 1 else outs

    def name_of(self, v: _Val) -> str:
        """The ONNX name of ``v``, emitting its initializer on first use."""
        if v.name is None:
            if v.param is not None:
                base = (v.pname or "param").replace("/", "_")
                v.name = self.init(v.param, base)
            else:
                assert v.const is not None
                v.name = self.init(v.const, (v.pname or "const").replace("/", "_"))
        return v.name

    def param_as(self, v: _Val, shape: tuple) -> str:
        """``v`` with ``shape``: a reshaped initializer when ``v`` is a parameter or constant
        not yet emitted, else a Reshape node."""
        arr = v.param if v.param is not None else v.const
        if v.name is None and arr is not None:
            base = (v.pname or "const").replace("/", "_")
            return self.init(arr.reshape(shape), base)
        return self.node("Reshape", [self.name_of(v), self.ints(shape)])

    # ------------------------------------------------------------------ values
    def value_of(self, t: Tensor) -> _Val:
        v = self.values.get(id(t))
        if v is not None:
            return v
        if id(t) in self.tainted:
            raise ExportError(
                f"gpucnn.onnx.export: {self.where()}: a comparison result (x > y, ...) is used "
                "as data; comparisons are not differentiable ops and cannot be traced"
            )
        arr = _backend.to_numpy(t.data)
        if isinstance(t, Parameter):
            v = _Val(None, tuple(arr.shape), arr.dtype, param=np.array(arr),
                     pname=self.param_names.get(id(t), "param"))
        elif t._node is not None:
            raise ExportError(
                f"gpucnn.onnx.export: {self.where()}: a tensor computed from the input reached "
                "an op without passing through a traced gpucnn op (raw array arithmetic?)"
            )
        elif id(t) in self.buffer_names or id(t.data) in self.buffer_names:
            name = self.buffer_names.get(id(t)) or self.buffer_names[id(t.data)]
            v = _Val(None, tuple(arr.shape), arr.dtype, param=np.array(arr), pname=name)
        else:
            v = _Val(None, tuple(arr.shape), arr.dtype, const=np.array(arr))
        self.bind(t, v)
        return v

    def raw_value(self, a: Any, base: str) -> _Val:
        """A raw array argument (batch-norm statistics): a buffer initializer."""
        name = self.buffer_names.get(id(a), base)
        arr = np.array(_backend.to_numpy(a))
        return _Val(None, tuple(arr.shape), arr.dtype, param=arr, pname=name)

    def bind(self, t: Any, v: _Val) -> None:
        self.values[id(t)] = v
        self.keep.append(t)

    # ------------------------------------------------------------------ recording
    def record(self, cls: type, args: tuple, kwargs: dict, out: Tensor) -> None:
        tensors = [a for a in args if isinstance(a, Tensor)]
        ins = [self.value_of(t) for t in tensors]
        shape, dtype = tuple(out.shape), np.dtype(out.dtype)
        if ins and all(v.const is not None or v.param is not None for v in ins):
            # Inputs known at export time (constants, parameters): fold into an initializer
            # named after the parameter, e.g. a reshaped PReLU slope.
            pnames = [v.pname for v in ins if v.param is not None]
            self.bind(out, _Val(None, shape, dtype, const=np.array(_backend.to_numpy(out.data)),
                                pname=pnames[0] if len(pnames) == 1 else None))
            return
        conv = _CONVERTERS.get(cls.__name__)
        if conv is None:
            op = _OP_NAMES.get(cls.__name__, cls.__name__)
            raise ExportError(f"gpucnn.onnx.export: {self.where()}: op {op} has no ONNX export")
        res = conv(self, ins, args, kwargs, out)
        name, batch = res if isinstance(res, tuple) else (res, any(v.batch for v in ins))
        self.bind(out, _Val(name, shape, dtype, batch=bool(batch)))

    def fail(self, why: str) -> ExportError:
        return ExportError(f"gpucnn.onnx.export: {self.where()}: {why}")

    def batch_guard(self, v: _Val, touches_batch: bool, what: str) -> None:
        if self.dynamic and v.batch and touches_batch:
            raise self.fail(
                f"{what} involves the batch axis, which a dynamic-batch graph cannot express; "
                "export with dynamic_batch=False (and batch_size=...)"
            )


# ----------------------------------------------------------------------------- converters

_OP_NAMES = {
    "_CrossEntropyIndex": "cross_entropy (a loss)",
    "_CrossEntropyProb": "cross_entropy (a loss)",
    "_NLL": "nll_loss (a loss)",
    "_BCE": "binary_cross_entropy (a loss)",
    "_BCEWithLogits": "binary_cross_entropy_with_logits (a loss)",
    "_MSE": "mse_loss (a loss)",
    "_MaskMul": "dropout in training mode (training=True)",
    "_Where": "where",
}

Converter = Callable[[_Tracer, list, tuple, dict, Tensor], Any]
_CONVERTERS: dict[str, Converter] = {}


def _converter(*names: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for n in names:
            _CONVERTERS[n] = fn
        return fn

    return deco


@_converter("Conv2dFunction")
def _conv(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    from gpucnn.backend.geometry import Conv2dGeometry

    g = kw.get("geom")
    if g is None:
        g = Conv2dGeometry.create(ins[0].shape, ins[1].shape, kw.get("stride", 1),
                                  kw.get("pads", (0, 0, 0, 0)), kw.get("dilation", 1),
                                  kw.get("groups", 1))
    names = [tr.name_of(v) for v in ins]
    return tr.node("Conv", names, kernel_shape=[g.kh, g.kw], strides=[g.sh, g.sw],
                   pads=[g.pt, g.pl, g.pb, g.pr], dilations=[g.dh, g.dw], group=g.groups)


def _ceil_mode(h: int, w: int, k: tuple, s: tuple, p: tuple, d: tuple, o: tuple) -> int:
    floor = tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1
                  for n, kk, ss, pp, dd in zip((h, w), k, s, p, d))
    return 0 if floor == tuple(o) else 1


@_converter("_MaxPool2d")
def _maxpool(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    (kh, kw_), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = args[1]
    h, w = ins[0].shape[2:]
    ceil = _ceil_mode(h, w, (kh, kw_), (sh, sw), (ph, pw), (dh, dw), (oh, ow))
    return tr.node("MaxPool", [tr.name_of(ins[0])], kernel_shape=[kh, kw_], strides=[sh, sw],
                   pads=[ph, pw, ph, pw], dilations=[dh, dw], ceil_mode=ceil)


@_converter("_AvgPool2d")
def _avgpool(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    (kh, kw_), (sh, sw), (ph, pw), _, (oh, ow) = args[1]
    cip, divisor = bool(args[2]), int(args[3])
    if divisor:
        raise tr.fail(f"avg_pool2d with divisor_override={divisor} has no ONNX equivalent")
    h, w = ins[0].shape[2:]
    ceil = _ceil_mode(h, w, (kh, kw_), (sh, sw), (ph, pw), (1, 1), (oh, ow))
    # count_include_pad is always written: ONNX defaults to 0, PyTorch (and gpucnn) to 1.
    return tr.node("AveragePool", [tr.name_of(ins[0])], kernel_shape=[kh, kw_],
                   strides=[sh, sw], pads=[ph, pw, ph, pw], ceil_mode=ceil,
                   count_include_pad=int(cip))


def _adaptive(tr: _Tracer, ins: list, oh: int, ow: int, kind: str) -> str:
    h, w = ins[0].shape[2:]
    x = tr.name_of(ins[0])
    if oh == 1 and ow == 1:
        return tr.node(f"Global{kind}Pool", [x])
    if h % oh or w % ow:
        raise tr.fail(
            f"adaptive pooling from {h}x{w} to {oh}x{ow}: the output size must divide the input "
            "size for an ONNX pooling equivalent (its windows would be uneven)"
        )
    k = [h // oh, w // ow]
    extra = {"count_include_pad": 0} if kind == "Average" else {}
    return tr.node(f"{kind}Pool", [x], kernel_shape=k, strides=k, **extra)


@_converter("_AdaptiveAvgPool2d")
def _adaptive_avg(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    return _adaptive(tr, ins, int(args[1]), int(args[2]), "Average")


@_converter("_AdaptiveMaxPool2d")
def _adaptive_max(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    return _adaptive(tr, ins, int(args[1]), int(args[2]), "Max")


@_converter("_GlobalAvgPool2d")
def _global_avg(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    y = tr.node("GlobalAveragePool", [tr.name_of(ins[0])])
    return y if args[1] else tr.node("Flatten", [y], axis=1)


@_converter("_BatchNorm")
def _batchnorm(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    if kw["training"]:
        raise tr.fail("batch norm without running statistics (or in training mode) uses batch "
                      "statistics, which ONNX BatchNormalization (inference) cannot express")
    x = ins[0]
    c = x.shape[1]
    rest = iter(ins[1:])
    dt = x.dtype
    scale = tr.name_of(next(rest)) if kw["has_weight"] else tr.init(np.ones(c, dt), "bn_scale")
    bias = tr.name_of(next(rest)) if kw["has_bias"] else tr.init(np.zeros(c, dt), "bn_bias")
    mean = tr.name_of(tr.raw_value(kw["mean"], "bn_mean"))
    var = tr.name_of(tr.raw_value(kw["var"], "bn_var"))
    return tr.node("BatchNormalization", [tr.name_of(x), scale, bias, mean, var],
                   epsilon=float(kw["eps"]))


@_converter("_Linear")
def _linear(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    names = [tr.name_of(v) for v in ins]
    if len(ins[0].shape) == 2:
        return tr.node("Gemm", names, transB=1)
    y = tr.node("MatMul", [names[0], tr.node("Transpose", [names[1]], perm=[1, 0])])
    return tr.node("Add", [y, names[2]]) if len(names) > 2 else y


@_converter("_LinearAct")
def _linear_act(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    """The fused dense + bias + activation: Gemm, then the activation's nodes."""
    y = _linear(tr, ins, args, kw, out)
    return _activation_on(tr, y, ins[0].dtype, kw["kind"], float(kw["param"]))


@_converter("_MatMul")
def _matmul(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    return tr.node("MatMul", [tr.name_of(v) for v in ins])


@_converter("_Reshape")
def _reshape(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> Any:
    x = ins[0]
    oshape = tuple(out.shape)
    if not (tr.dynamic and x.batch):
        return tr.node("Reshape", [tr.name_of(x), tr.ints(oshape)]), False
    if not oshape or oshape[0] != x.shape[0]:
        tr.batch_guard(x, True, f"reshape from {x.shape} to {oshape}")
    if len(oshape) == 2 and len(x.shape) > 2 and oshape[1] == math.prod(x.shape[1:]):
        return tr.node("Flatten", [tr.name_of(x)], axis=1)
    return tr.node("Reshape", [tr.name_of(x), tr.ints((0, *oshape[1:]))])


@_converter("_Transpose")
def _transpose(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    x = ins[0]
    perm = list(args[1]) if args[1] is not None else list(reversed(range(len(x.shape))))
    tr.batch_guard(x, perm[0] != 0, f"transpose with axes {tuple(perm)}")
    return tr.node("Transpose", [tr.name_of(x)], perm=perm)


@_converter("_Concat")
def _concat(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    axis = int(kw.get("axis", 0))
    for v in ins:
        tr.batch_guard(v, axis == 0, "concatenation along axis 0")
    return tr.node("Concat", [tr.name_of(v) for v in ins], axis=axis)


@_converter("_Pad")
def _pad(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    x = ins[0]
    widths, value = args[1], float(args[2])
    tr.batch_guard(x, tuple(widths[0]) != (0, 0), "padding of axis 0")
    pads = [int(lo) for lo, _ in widths] + [int(hi) for _, hi in widths]
    return tr.node("Pad", [tr.name_of(x), tr.ints(pads), tr.scalar(value, x.dtype)],
                   mode="constant")


def _reduce(tr: _Tracer, op: str, ins: list, axes: tuple, keepdims: bool) -> Any:
    x = ins[0]
    axes = tuple(int(a) for a in axes)
    tr.batch_guard(x, 0 in axes, f"{op} over axis 0")
    if not axes:
        return tr.node("Identity", [tr.name_of(x)])
    batch = x.batch and 0 not in axes
    if op == "ReduceSum" or tr.opset >= 18:
        return tr.node(op, [tr.name_of(x), tr.ints(axes)], keepdims=int(keepdims)), batch
    return tr.node(op, [tr.name_of(x)], axes=list(axes), keepdims=int(keepdims)), batch


@_converter("_Sum")
def _sum(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> Any:
    if np.dtype(out.dtype) != ins[0].dtype:
        raise tr.fail(f"sum of a {ins[0].dtype} tensor to {out.dtype}: export float tensors")
    return _reduce(tr, "ReduceSum", ins, args[1], bool(args[2]))


@_converter("_Max")
def _max(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> Any:
    return _reduce(tr, "ReduceMax", ins, args[1], bool(args[2]))


def _unary(op: str) -> Converter:
    def conv(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
        return tr.node(op, [tr.name_of(ins[0])])

    return conv


for _cls, _op in (("_Exp", "Exp"), ("_Log", "Log"), ("_Abs", "Abs"), ("_Neg", "Neg")):
    _CONVERTERS[_cls] = _unary(_op)


def _binary(op: str) -> Converter:
    def conv(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
        return tr.node(op, [tr.name_of(v) for v in ins])

    return conv


for _cls, _op in (("_Add", "Add"), ("_Sub", "Sub"), ("_Mul", "Mul"), ("_Div", "Div")):
    _CONVERTERS[_cls] = _binary(_op)


@_converter("_Pow")
def _pow(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    x, p = ins[0], float(args[1])
    if p == 0.5:
        return tr.node("Sqrt", [tr.name_of(x)])
    return tr.node("Pow", [tr.name_of(x), tr.scalar(p, x.dtype)])


@_converter("_Clip")
def _clip(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    x = ins[0]
    lo = "" if args[1] is None else tr.scalar(args[1], x.dtype)
    hi = "" if args[2] is None else tr.scalar(args[2], x.dtype)
    inputs = [tr.name_of(x), lo, hi]
    while inputs[-1] == "":
        inputs.pop()
    return tr.node("Clip", inputs)


@_converter("_Cast")
def _cast(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    return tr.node("Cast", [tr.name_of(ins[0])], to=_onnx_dtype(args[1]))


@_converter("_GetItem")
def _getitem(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> Any:
    x = ins[0]
    index = args[1] if isinstance(args[1], tuple) else (args[1],)
    if not all(isinstance(i, (int, np.integer, slice, type(Ellipsis))) for i in index):
        raise tr.fail(f"indexing with {args[1]!r}: only ints, slices and ... can be exported "
                      "(no advanced indexing or None)")
    if sum(i is Ellipsis for i in index) > 1:
        raise tr.fail(f"indexing with {args[1]!r}: at most one ...")
    nd = len(x.shape)
    if Ellipsis in index:
        k = index.index(Ellipsis)
        index = index[:k] + (slice(None),) * (nd - len(index) + 1) + index[k + 1:]
    index = index + (slice(None),) * (nd - len(index))
    starts, ends, axes, steps, squeeze = [], [], [], [], []
    for ax, it in enumerate(index):
        dim = x.shape[ax]
        if isinstance(it, slice):
            if it == slice(None):
                continue
            b, e, s = it.indices(dim)
            if s < 0 and e < 0:
                e = _INT64_MIN
        else:
            b = int(it) + dim if int(it) < 0 else int(it)
            e, s = b + 1, 1
            squeeze.append(ax)
        starts.append(b)
        ends.append(e)
        axes.append(ax)
        steps.append(s)
    tr.batch_guard(x, 0 in axes, f"indexing {args[1]!r} of axis 0")
    y = tr.name_of(x)
    if axes:
        y = tr.node("Slice", [y, tr.ints(starts), tr.ints(ends), tr.ints(axes), tr.ints(steps)])
    if squeeze:
        y = tr.node("Squeeze", [y, tr.ints(squeeze)])
    elif not axes:
        y = tr.node("Identity", [y])
    return y, x.batch and 0 not in squeeze


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@_converter("_Activation")
def _activation(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    return _activation_on(tr, tr.name_of(ins[0]), ins[0].dtype, args[1], float(args[2]))


@_converter("Conv2dActFunction")
def _conv_act(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    """The fused convolution + bias + activation: a Conv node, then the activation's."""
    y = _conv(tr, ins, args, kw, out)
    return _activation_on(tr, y, ins[0].dtype, kw["kind"], float(kw["param"]))


def _activation_on(tr: _Tracer, x: str, dt: Any, kind: str, param: float) -> str:
    """The nodes of activation ``kind`` applied to the value named ``x`` (dtype ``dt``)."""
    simple = {"relu": ("Relu", {}), "sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}),
              "leaky_relu": ("LeakyRelu", {"alpha": param}), "elu": ("Elu", {"alpha": param})}
    if kind in simple:
        op, attrs = simple[kind]
        return tr.node(op, [x], **attrs)
    if kind in ("gelu", "gelu_tanh"):
        approx = "none" if kind == "gelu" else "tanh"
        if tr.opset >= 20:
            return tr.node("Gelu", [x], approximate=approx)
        if kind == "gelu":  # 0.5 x (1 + erf(x / sqrt(2)))
            inner = tr.node("Erf", [tr.node("Div", [x, tr.scalar(math.sqrt(2.0), dt)])])
        else:  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = tr.node("Mul", [tr.node("Mul", [x, x]), x])
            poly = tr.node("Add", [x, tr.node("Mul", [cube, tr.scalar(0.044715, dt)])])
            inner = tr.node("Tanh", [tr.node("Mul", [poly, tr.scalar(_SQRT_2_OVER_PI, dt)])])
        one_plus = tr.node("Add", [inner, tr.scalar(1.0, dt)])
        return tr.node("Mul", [tr.node("Mul", [x, one_plus]), tr.scalar(0.5, dt)])
    raise tr.fail(f"activation {kind!r} has no ONNX export")


@_converter("_Softplus")
def _softplus(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    beta = float(args[1])
    x = tr.name_of(ins[0])
    if beta == 1.0:
        return tr.node("Softplus", [x])
    b = tr.scalar(beta, ins[0].dtype)
    return tr.node("Div", [tr.node("Softplus", [tr.node("Mul", [x, b])]), b])


@_converter("_PReLU")
def _prelu(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    x, w = ins
    n = int(np.prod(w.shape))
    if n == 1:
        slope = tr.param_as(w, (1,))
    else:
        slope = tr.param_as(w, (n,) + (1,) * max(len(x.shape) - 2, 0))
    return tr.node("PRelu", [tr.name_of(x), slope])


@_converter("_Softmax")
def _softmax(tr: _Tracer, ins: list, args: tuple, kw: dict, out: Tensor) -> str:
    x, axis, log = ins[0], int(args[1]), bool(args[2])
    tr.batch_guard(x, axis == 0, "softmax over axis 0")
    return tr.node("LogSoftmax" if log else "Softmax", [tr.name_of(x)], axis=axis)


# ----------------------------------------------------------------------------- tracing


class _patched:
    """Wrap ``Function.apply``, ``Module.__call__`` and the non-traced ``Tensor`` helpers
    for one trace; everything is restored on exit, whatever happens."""

    def __init__(self, tr: _Tracer) -> None:
        self.tr = tr

    def __enter__(self) -> _patched:
        tr = self.tr
        self.apply = Function.__dict__["apply"]
        self.call = Module.__dict__["__call__"]
        self.cmp = Tensor.__dict__["_cmp"]
        self.detach = Tensor.__dict__["detach"]
        orig_apply, orig_call = self.apply.__func__, self.call
        orig_cmp, orig_detach = self.cmp, self.detach

        def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
            out = orig_apply(cls, *args, **kwargs)
            if threading.get_ident() == tr.thread and tr.error is None:
                # Never raise into the op's caller (functional code may catch ValueError):
                # keep the first error and raise it once the forward pass is over.
                try:
                    tr.record(cls, args, kwargs, out)
                except ExportError as exc:
                    tr.error = exc
            return out

        def call(mod: Module, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != tr.thread:
                return orig_call(mod, *args, **kwargs)
            tr.scope.append(mod)
            try:
                return orig_call(mod, *args, **kwargs)
            finally:
                tr.scope.pop()

        def cmp(t: Tensor, o: Any, op: str) -> Tensor:
            r = orig_cmp(t, o, op)
            if threading.get_ident() == tr.thread:
                tr.tainted.add(id(r))
                tr.keep.append(r)
            return r

        def detach(t: Tensor) -> Tensor:
            r = orig_detach(t)
            if threading.get_ident() == tr.thread and id(t) in tr.values:
                tr.bind(r, tr.values[id(t)])
            return r

        Function.apply = classmethod(apply)  # type: ignore[method-assign,assignment]
        Module.__call__ = call  # type: ignore[method-assign]
        Tensor._cmp = cmp  # type: ignore[method-assign]
        Tensor.detach = detach  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        Function.apply = self.apply  # type: ignore[method-assign]
        Module.__call__ = self.call  # type: ignore[method-assign]
        Tensor._cmp = self.cmp  # type: ignore[method-assign]
        Tensor.detach = self.detach  # type: ignore[method-assign]


def _input_shape(model: Module, input_shape: Any) -> tuple:
    shape = input_shape
    if shape is None:
        shape = getattr(model, "input_shape", None)
    if shape is None:
        shape = model.__dict__.get("_build_input_shape")
    if shape is None:
        raise ValueError(
            f"gpucnn.onnx.export: the input shape of {type(model).__name__} {model.name!r} is "
            "unknown; pass input_shape=(C, H, W) (per sample, no batch dim), give its first "
            "layer input_shape=..., or build it first"
        )
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
        raise ExportError(
            f"gpucnn.onnx.export: {type(model).__name__} {model.name!r} takes several inputs "
            f"{shape}; export supports models with one input tensor"
        )
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise TypeError(
            f"gpucnn.onnx.export: input_shape must be a tuple of ints (C, H, W), got {shape!r}"
        ) from None
    if not dims or min(dims) < 1:
        raise ValueError(
            f"gpucnn.onnx.export: input_shape must be positive sizes per sample, got {dims}"
        )
    return dims


def _outputs(result: Any) -> list[Tensor]:
    items = list(result) if isinstance(result, (list, tuple)) else [result]
    if not items or not all(isinstance(t, Tensor) for t in items):
        raise ExportError(
            "gpucnn.onnx.export: forward() must return a Tensor or a list/tuple of Tensors, got "
            f"{type(result).__name__}"
        )
    return items


def to_model_proto(
    model: Module,
    input_shape: Sequence[int] | None = None,
    opset: int = 21,
    dynamic_batch: bool = True,
    batch_size: int = 1,
) -> Any:
    """Trace ``model`` and return the checked ``onnx.ModelProto`` (see :func:`export`)."""
    onnx = require_onnx()
    if not isinstance(model, Module):
        raise TypeError(f"gpucnn.onnx.export: expected a gpucnn Module, got {type(model).__name__}")
    opset = check_opset(opset)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or \
            batch_size < 1:
        raise ValueError(f"gpucnn.onnx.export: batch_size must be a positive int, got "
                         f"{batch_size!r}")
    shape = _input_shape(model, input_shape)
    if not model.built:
        model.build(shape)
    for n, p in model.named_parameters():
        if np.dtype(p.dtype) != np.float32:
            raise ExportError(f"gpucnn.onnx.export: parameter {n!r} is {p.dtype}; export "
                              "float32 models")
    dynamic = bool(dynamic_batch)
    n = 2 if dynamic else int(batch_size)
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal((n, *shape)).astype(np.float32)
    x = Tensor(_backend.to_backend(x_host, model.backend), requires_grad=True)
    tr = _Tracer(model, opset, dynamic)
    tr.used_names.add("input")
    in_val = _Val("input", tuple(x.shape), np.dtype(np.float32), batch=True)
    tr.bind(x, in_val)
    was = model.training
    with _LOCK:
        model.eval()
        try:
            with enable_grad(), _patched(tr):
                result = model(x)
        finally:
            model.train(was)
    if tr.error is not None:
        raise tr.error
    outs = _outputs(result)
    h = onnx.helper
    batch_dim: Any = "batch" if dynamic else n
    out_infos = []
    for i, t in enumerate(outs):
        v = tr.value_of(t)
        name = "output" if len(outs) == 1 else f"output_{i}"
        src = tr.name_of(v)
        producer = next((nd for nd in tr.nodes if src in nd.output), None)
        if producer is not None and src not in [o.name for o in out_infos]:
            _rename(tr.nodes, src, name)
            v.name = name
        else:
            tr.nodes.append(h.make_node("Identity", [src], [name], name=tr.fresh("Identity")))
        dims = list(v.shape)
        if v.batch:
            dims[0] = batch_dim
        out_infos.append(h.make_tensor_value_info(name, _onnx_dtype(v.dtype), dims))
    inp = h.make_tensor_value_info("input", _onnx_dtype(np.float32), [batch_dim, *shape])
    inits = [onnx.numpy_helper.from_array(a, name) for name, a in tr.inits.items()]
    graph = h.make_graph(tr.nodes, model.name or "gpucnn_model", [inp], out_infos, inits)
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)],
                         producer_name="gpucnn", producer_version=_version())
    proto.ir_version = min_ir_version(opset)
    try:
        onnx.checker.check_model(proto, full_check=True)
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True,
                                          data_prop=True)
    except Exception as exc:  # a bug here, never the user's: say so clearly
        raise ExportError(f"gpucnn.onnx.export: the generated graph failed ONNX validation: "
                          f"{exc}") from exc
    return proto


def _rename(nodes: list, old: str, new: str) -> None:
    for nd in nodes:
        for i, o in enumerate(nd.output):
            if o == old:
                nd.output[i] = new
        for i, o in enumerate(nd.input):
            if o == old:
                nd.input[i] = new


def _version() -> str:
    import gpucnn

    return str(getattr(gpucnn, "__version__", "0"))


def export(
    model: Module,
    path: str | os.PathLike,
    input_shape: Sequence[int] | None = None,
    opset: int = 21,
    dynamic_batch: bool = True,
    batch_size: int = 1,
) -> Any:
    """Write ``model`` as an ONNX file at ``path`` and return the ``onnx.ModelProto``.

    Args:
        model: any gpucnn ``Module`` (``Sequential``, a zoo model, a PyTorch-style subclass)
            on either backend, float32; one forward pass is traced in eval mode.
        input_shape: per-sample input shape ``(C, H, W)`` (NCHW, no batch dim); default: the
            model's own (``input_shape=`` of its first layer, or the shape it was built for).
        opset: ``ai.onnx`` opset, 17 to 21; the file's IR version is the minimum for it.
        dynamic_batch: the batch dimension is symbolic (``"batch"``); else fixed to
            ``batch_size``.

    Raises:
        ExportError: a layer or op without an ONNX equivalent (the message names the layer
            and why).
        ValueError: an unknown input shape or an opset outside 17..21.
        ImportError: the ``onnx`` package is missing (``pip install "gpucnn[onnx]"``).
    """
    require_onnx()
    proto = to_model_proto(model, input_shape, opset, dynamic_batch, batch_size)
    # serialised first, then written atomically: a failed export never leaves a partial file
    write_bytes_atomic(path, proto.SerializeToString())
    return proto
