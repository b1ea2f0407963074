"""Convolution geometry, shared by both backends: argument pairs, padding, output sizes, and
:class:`Conv2dGeometry`, which validates a convolution's shapes once and carries every size.

The backend primitives ``conv2d_forward`` / ``conv2d_backward`` / ``conv2d_backward_data`` /
``conv2d_backward_weight`` (:mod:`gpucnn.backend.numpy_ops.conv`,
:mod:`gpucnn.backend.cuda_ops.conv`) take arrays plus a geometry, as cuDNN's API does; each
backend picks its own algorithm inside.
"""

from __future__ import annotations

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
    "conv2d_output_size",
    "use_transposed_path",
    "Conv2dGeometry",
    "ConvSaved",
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
            raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
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

    def as_tuple(self) -> tuple:
        """``(n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, groups, pointwise)``, the
        form the route code unpacks (bottom/right pads are implied by ``oh``/``ow``)."""
        return (self.n, self.c, self.h, self.w, self.o, self.cg, self.kh, self.kw, self.sh,
                self.sw, self.pt, self.pl, self.dh, self.dw, self.oh, self.ow, self.groups,
                self.pointwise)  # fmt: skip


@dataclass
class ConvSaved:
    """What a backend's ``conv2d_forward`` keeps for its ``conv2d_backward``: the route that
    ran, its copy of the input (``None`` unless the weight gradient is needed), the weight
    (``None`` unless the input gradient is needed) and a route-specific layout."""

    route: str
    data: Any
    weight: Any
    layout: Any = None


def use_transposed_path(geom: tuple) -> bool:
    """Whether ``dx`` is cheaper as a stride-1 convolution of ``dy`` than as GEMM + col2im.

    For stride 1 the input gradient is the correlation of ``dy`` with the flipped, transposed
    kernel. That is one im2col of ``dy`` (N, O*k, H*W) and one GEMM, against a GEMM writing
    (N, C*k, OH*OW) plus the col2im scatter-add; it wins when O*H*W is not much larger than
    C*OH*OW (ResNet's "same" 3x3 convs) and needs the pads to fit inside the flipped kernel.
    """
    n, c, h, w, o, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, g, pointwise = geom
    if pointwise or (sh, sw) != (1, 1):
        return False
    if pt > dh * (kh - 1) or pl > dw * (kw - 1):
        return False
    return o * h * w <= 1.25 * c * oh * ow
