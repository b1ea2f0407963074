"""Convolution geometry, shared by both backends: argument pairs, padding, output sizes, and
:class:`Conv2dGeometry`, which validates a convolution's shapes once and carries every size.

The backend primitives ``conv2d_forward`` / ``conv2d_backward`` / ``conv2d_backward_data`` /
``conv2d_backward_weight`` (:mod:`gpucnn.backend.numpy_ops.conv`,
:mod:`gpucnn.backend.cuda_ops.conv`) take arrays plus a geometry, as cuDNN's API does; each
backend picks its own algorithm inside.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "IntPair",
    "Padding",
    "pair",
    "same_padding",
    "resolve_padding",
    "keras_padding",
    "conv2d_output_size",
    "use_transposed_path",
    "transposed_path_applies",
    "input_grad_path",
    "INPUT_GRAD_PATHS",
    "Conv2dGeometry",
    "ConvSaved",
    "check_im2col_args",
    "check_col2im_args",
    "check_col2im_cn_args",
]

IntPair = int | Sequence[int]
Padding = int | str | Sequence[int]


def pair(v: IntPair, name: str, op: str = "conv2d", minimum: int = 1) -> tuple[int, int]:
    """``v`` as ``(int, int)``; raises ``ValueError`` naming ``op`` and ``name``."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        p = (int(v), int(v))
    else:
        try:
            items = tuple(v)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}") from None
        if len(items) != 2 or not all(
            isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in items
        ):
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
        p = (int(items[0]), int(items[1]))
    if p[0] < minimum or p[1] < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {p}")
    return p


def same_padding(kernel: IntPair, dilation: IntPair = 1) -> tuple[int, int, int, int]:
    """Padding ``(top, bottom, left, right)`` of ``padding="same"`` (stride 1), as PyTorch.

    The total per axis is ``dilation*(k-1)``; top/left get ``total // 2`` and the extra one of
    an odd total (even kernels) goes to bottom/right.
    """
    kh, kw = pair(kernel, "kernel_size")
    dh, dw = pair(dilation, "dilation")
    th, tw = dh * (kh - 1), dw * (kw - 1)
    return th // 2, th - th // 2, tw // 2, tw - tw // 2


def resolve_padding(
    padding: Padding, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``padding`` (int, pair, 4-tuple, "valid" or "same") as ``(top, bottom, left, right)``."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return 0, 0, 0, 0
        if mode == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"conv2d: padding='same' needs stride 1 (as in PyTorch), got stride {stride}"
                )
            return same_padding(kernel, dilation)
        raise ValueError(
            f"conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}"
        )
    if not isinstance(padding, (int, np.integer)):
        try:
            items = tuple(padding)
        except TypeError:
            raise TypeError(
                f"conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}"
            ) from None
        if len(items) == 4:
            vals = tuple(int(i) for i in items)
            if min(vals) < 0:
                raise ValueError(f"conv2d: padding must be >= 0, got {vals}")
            return vals  # type: ignore[return-value]
    ph, pw = pair(padding, "padding", minimum=0)
    return ph, ph, pw, pw


def keras_padding(
    padding: Any, h: int, w: int, k: tuple[int, int], s: tuple[int, int],
    d: tuple[int, int], layer: str,
) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of a Keras layer's ``padding`` for an ``h x w`` input
    (the layers' convention; :func:`resolve_padding` is PyTorch's, for the functional ops).

    ``"valid"``: none. ``"same"`` (Keras/TensorFlow): output ``ceil(h / stride)``, the total
    padding ``max((out-1)*stride + dilation*(k-1) + 1 - h, 0)`` split with the odd one at the
    bottom/right. An int or an ``(h, w)`` pair pads symmetrically; a 4-tuple is explicit.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return 0, 0, 0, 0
        if mode == "same":
            out = []
            for size, kk, ss, dd in ((h, k[0], s[0], d[0]), (w, k[1], s[1], d[1])):
                o = math.ceil(size / ss)
                total = max((o - 1) * ss + dd * (kk - 1) + 1 - size, 0)
                out += [total // 2, total - total // 2]
            return out[0], out[1], out[2], out[3]
        raise ValueError(f"{layer}: padding must be 'valid', 'same', an int or a pair, "
                         f"got {padding!r}")
    if isinstance(padding, (list, tuple)) and len(padding) == 4:
        return tuple(int(p) for p in padding)  # type: ignore[return-value]
    ph, pw = pair(padding, "padding", layer, minimum=0)
    return ph, ph, pw, pw


def conv2d_output_size(
    h: int,
    w: int,
    kernel: IntPair,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
) -> tuple[int, int]:
    """Output ``(OH, OW)`` of a convolution of an ``h x w`` image (PyTorch formula).

    ``OH = (h + top + bottom - dilation*(kh-1) - 1) // stride + 1``; ``padding`` is an int, a
    pair, ``(top, bottom, left, right)``, ``"valid"`` or ``"same"``. The result may be < 1 for
    impossible configurations (callers validate).
    """
    k = pair(kernel, "kernel_size")
    s = pair(stride, "stride")
    d = pair(dilation, "dilation")
    pt, pb, pl, pr = resolve_padding(padding, k, s, d)
    oh = (int(h) + pt + pb - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (int(w) + pl + pr - d[1] * (k[1] - 1) - 1) // s[1] + 1
    return oh, ow


@dataclass(frozen=True)
class Conv2dGeometry:
    """One convolution's sizes, validated: input (N, C, H, W), weight (O, C/groups, kh, kw),
    stride, pads (top, bottom, left, right), dilation, groups, output (oh, ow). NCHW."""

    n: int
    c: int
    h: int
    w: int
    o: int
    cg: int
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pb: int
    pl: int
    pr: int
    dh: int
    dw: int
    oh: int
    ow: int
    groups: int

    @classmethod
    def create(
        cls,
        x_shape: Sequence[int],
        w_shape: Sequence[int],
        stride: IntPair = 1,
        padding: Padding = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        op: str = "conv2d",
    ) -> Conv2dGeometry:
        """The geometry of convolving ``x_shape`` with ``w_shape``; ``ValueError`` naming ``op``
        and the expected and given values for anything that does not fit."""
        if len(x_shape) != 4:
            forms = "4-D (N, C, H, W) or 3-D (C, H, W)" if op == "conv2d" else "4-D (N, C, H, W)"
            raise ValueError(f"{op}: input must be {forms}, got shape {tuple(x_shape)}")
        if len(w_shape) != 4:
            raise ValueError(
                f"{op}: weight must be 4-D (out, in/groups, kh, kw), got shape {tuple(w_shape)}"
            )
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
        groups = int(groups)
        xs, ws = tuple(int(s) for s in x_shape), tuple(int(s) for s in w_shape)
        n, c, h, w = xs
        o, cg, kh, kw = ws
        if c % groups:
            raise ValueError(
                f"{op}: groups={groups} must divide the input channels, got {c} channels "
                f"(input shape {xs})"
            )
        if o % groups:
            raise ValueError(
                f"{op}: groups={groups} must divide the output channels, got {o} "
                f"(weight shape {ws})"
            )
        if cg != c // groups:
            raise ValueError(
                f"{op}: weight {ws} expects {cg * groups} input channels "
                f"({cg} per group x {groups} groups), but the input has {c} (shape {xs})"
            )
        if kh < 1 or kw < 1:
            raise ValueError(f"{op}: kernel size must be >= 1, got weight shape {ws}")
        s = pair(stride, "stride", op)
        d = pair(dilation, "dilation", op)
        pads = resolve_padding(padding, (kh, kw), s, d)
        pt, pb, pl, pr = pads
        eff_h, eff_w = d[0] * (kh - 1) + 1, d[1] * (kw - 1) + 1
        if eff_h > h + pt + pb or eff_w > w + pl + pr:
            raise ValueError(
                f"{op}: kernel ({kh}, {kw}) with dilation {d} spans ({eff_h}, {eff_w}), larger "
                f"than the padded input ({h + pt + pb}, {w + pl + pr}) (input {xs}, "
                f"padding (top, bottom, left, right) = {pads})"
            )
        oh, ow = conv2d_output_size(h, w, (kh, kw), s, pads, d)
        return cls(n, c, h, w, o, cg, kh, kw, s[0], s[1], pt, pb, pl, pr, d[0], d[1], oh, ow,
                   groups)  # fmt: skip

    @property
    def stride(self) -> tuple[int, int]:
        return self.sh, self.sw

    @property
    def dilation(self) -> tuple[int, int]:
        return self.dh, self.dw

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)``."""
        return self.pt, self.pb, self.pl, self.pr

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        """``(N, O, oh, ow)``."""
        return self.n, self.o, self.oh, self.ow

    @property
    def pointwise(self) -> bool:
        """A plain 1x1 convolution (stride 1, no padding): ``x`` is its own columns."""
        return (self.kh, self.kw, self.sh, self.sw) == (1, 1, 1, 1) and self.pads == (0,) * 4

    @property
    def window(self) -> tuple[int, int, int, int, int, int, int, int, int, int]:
        """``(kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)``: the sliding-window arguments of the
        ``im2col`` / ``col2im`` primitives and kernels (bottom/right pads are implied by
        ``oh``/``ow``)."""
        return (self.kh, self.kw, self.sh, self.sw, self.pt, self.pl, self.dh, self.dw,
                self.oh, self.ow)  # fmt: skip

    def input_grad_as_conv(self) -> Conv2dGeometry:
        """The stride-1 convolution whose output is this one's ``dx`` (stride 1 only).

        ``dx[n, c, y, x] = sum W[o, c, i, j] dy[n, o, y + pt - i*dh, x + pl - j*dw]``: ``dy``
        (N, O, oh, ow) correlated with the flipped, transposed kernel (C, O/groups, kh, kw),
        top/left pads ``dilation*(k-1) - pad``, output (H, W). A bottom/right pad may come out
        negative (rows of ``dy`` that depend on padding only are never read).
        """
        if self.stride != (1, 1):
            raise ValueError(f"conv2d: input_grad_as_conv needs stride 1, got {self.stride}")
        ekh, ekw = self.dh * (self.kh - 1), self.dw * (self.kw - 1)
        pt, pl = ekh - self.pt, ekw - self.pl
        pb, pr = self.h - self.oh - pt + ekh, self.w - self.ow - pl + ekw
        return Conv2dGeometry(
            self.n, self.o, self.oh, self.ow, self.c, self.o // self.groups, self.kh, self.kw,
            1, 1, pt, pb, pl, pr, self.dh, self.dw, self.h, self.w, self.groups,
        )  # fmt: skip


@dataclass
class ConvSaved:
    """What a backend's ``conv2d_forward`` keeps for its ``conv2d_backward``: the algorithm
    that ran, its copy of the input (``None`` unless the weight gradient is needed), the weight
    (``None`` unless the input gradient is needed), an algorithm-specific layout and the
    workspace bound the backward keeps to (bytes of scratch per chunk; ``None``: the default).
    """

    algorithm: str
    data: Any
    weight: Any
    layout: Any = None
    workspace_bytes: int | None = None


INPUT_GRAD_PATHS = ("col2im", "transposed")


def transposed_path_applies(geom: Conv2dGeometry) -> bool:
    """Whether ``dx`` can be computed as the stride-1 correlation of ``dy`` with the flipped
    kernel (:meth:`Conv2dGeometry.input_grad_as_conv`): stride 1 and top/left pads that fit
    inside the dilated kernel."""
    g = geom
    return g.stride == (1, 1) and g.pt <= g.dh * (g.kh - 1) and g.pl <= g.dw * (g.kw - 1)


def use_transposed_path(geom: Conv2dGeometry) -> bool:
    """Whether ``dx`` is cheaper as a stride-1 convolution of ``dy`` than as GEMM + col2im.

    For stride 1 the input gradient is the correlation of ``dy`` with the flipped, transposed
    kernel (:meth:`Conv2dGeometry.input_grad_as_conv`). That is one im2col of ``dy``
    (N, O*k, H*W) and one GEMM, against a GEMM writing (N, C*k, OH*OW) plus the col2im
    scatter-add; it wins when O*H*W is not much larger than C*OH*OW (ResNet's "same" 3x3
    convs) and needs the pads to fit inside the flipped kernel.
    """
    g = geom
    if g.pointwise or not transposed_path_applies(g):
        return False
    return g.o * g.h * g.w <= 1.25 * g.c * g.oh * g.ow


def input_grad_path(geom: Conv2dGeometry, requested: str | None = None) -> str:
    """How a backward computes ``dx``: ``"transposed"`` (the stride-1 correlation of ``dy``
    with the flipped kernel) or ``"col2im"`` (``W^T @ dy`` gathered back into the image).

    ``requested`` names one of :data:`INPUT_GRAD_PATHS` or is ``None`` for the rule
    (:func:`use_transposed_path`); ``"transposed"`` where it cannot apply raises ``ValueError``.
    """
    if requested is None:
        return "transposed" if use_transposed_path(geom) else "col2im"
    if requested not in INPUT_GRAD_PATHS:
        raise ValueError(
            f"conv2d: input_grad must be one of {INPUT_GRAD_PATHS} or None, got {requested!r}"
        )
    if requested == "transposed" and not transposed_path_applies(geom):
        raise ValueError(
            "conv2d: input_grad='transposed' needs stride 1 and top/left pads within the "
            f"dilated kernel, got stride {geom.stride}, pads {geom.pads}, kernel "
            f"({geom.kh}, {geom.kw}), dilation {geom.dilation}"
        )
    return requested


# ------------------------------------------------------------- window argument checks
# The im2col / col2im primitives of both backends take the window explicitly
# (``*Conv2dGeometry.window``) and validate it here, once for both.

_INT32_MAX = 2**31 - 1


def _check_geometry(op: str, **sizes: Any) -> dict[str, int]:
    """Sizes as ints: kernel, stride, dilation, oh, ow >= 1; padding >= 0; all < 2^31."""
    out: dict[str, int] = {}
    for name, v in sizes.items():
        try:
            iv = operator.index(v)
        except TypeError:
            raise TypeError(f"{op}: {name} must be an integer, got {v!r}") from None
        low = 0 if name in ("ph", "pw", "n") else 1
        if iv < low or iv > _INT32_MAX:
            raise ValueError(f"{op}: {name} must be in [{low}, 2**31), got {iv}")
        out[name] = iv
    return out


def _check_dtype(op: str, dtype: Any) -> None:
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"{op}: expected a float32 or float64 array, got {np.dtype(dtype)}")


def check_im2col_args(
    x: Any,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    oh: int,
    ow: int,
    op: str = "im2col",
) -> dict[str, int]:
    """Validate im2col (or ``op``'s) arguments (shared by both backends); returns the sizes as
    ints."""
    if getattr(x, "ndim", None) != 4:
        raise ValueError(
            f"{op}: expected x of shape (N, C, H, W), got shape {getattr(x, 'shape', None)}"
        )
    _check_dtype(op, x.dtype)
    g = _check_geometry(op, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw, dh=dh, dw=dw, oh=oh, ow=ow)
    N, C, H, W = (int(s) for s in x.shape)
    if min(C, H, W) < 1 or max(C, H, W) > _INT32_MAX:
        raise ValueError(f"{op}: x shape {tuple(x.shape)} must have C, H, W >= 1")
    g.update(N=N, C=C, H=H, W=W)
    return g


def check_col2im_args(
    cols: Any,
    n: int,
    c: int,
    h: int,
    w: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    oh: int,
    ow: int,
    *,
    op: str = "col2im",
) -> dict[str, int]:
    """Validate col2im (``op="col2im_cn"``: batch-in-columns) arguments for both backends."""
    g = _check_geometry(
        op, n=n, c=c, h=h, w=w, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw, dh=dh, dw=dw, oh=oh,
        ow=ow,
    )  # fmt: skip
    rows, L = g["c"] * g["kh"] * g["kw"], g["oh"] * g["ow"]
    if op == "col2im_cn":
        expected, layout = (rows, g["n"] * L), "(C*kh*kw, N*oh*ow)"
    else:
        expected, layout = (g["n"], rows, L), "(N, C*kh*kw, oh*ow)"
    shape = tuple(int(s) for s in getattr(cols, "shape", ()))
    if shape != expected:
        raise ValueError(f"{op}: expected cols of shape {layout} = {expected}, got {shape}")
    _check_dtype(op, cols.dtype)
    return g


def check_col2im_cn_args(*args: Any) -> dict[str, int]:
    """Validate col2im_cn arguments (as :func:`check_col2im_args`)."""
    return check_col2im_args(*args, op="col2im_cn")
