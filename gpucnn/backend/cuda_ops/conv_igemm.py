"""CUDA launchers of ``cuda/conv_igemm.cu`` and ``cuda/conv_igemm_tc.cu``: implicit-GEMM
convolution, forward (bias and an activation fused into the epilogue), backward-data and
backward-weight, for every :class:`Conv2dGeometry`.

No column matrix is built: each kernel computes its GEMM operands from the tensors directly
(see the header of ``cuda/conv_igemm.cu`` for the three GEMMs and the tiling). These are the
kernels of the ``"igemm"`` algorithm of :mod:`gpucnn.backend.cuda_ops.conv`; same names and
signatures as :mod:`gpucnn.backend.numpy_ops.conv_igemm`. ``xp`` and kernels come from
:func:`gpucnn.backend.runtime.current_runtime`, so the host emulator runs these launchers.

The tile is a compile-time choice (``-D`` defines): :data:`TILES` names the configurations,
:func:`use_tile` selects one for the launches inside a ``with`` block (tests sweep them).

``precision``: ``None`` runs the FP32/FP64 SIMT kernels of ``cuda/conv_igemm.cu`` on float32 or
float64 tensors (``"fp32"``: the same, float32 only); ``"tf32"`` (float32 tensors, rounded to
TF32 in the kernel), ``"fp16"`` (float16) and ``"bf16"`` (``ml_dtypes.bfloat16``, or ``uint16``
bit patterns) run the tensor-core kernels of ``cuda/conv_igemm_tc.cu`` (FP32 accumulation and
float32 output), whose tiles are :data:`TC_TILES` / :func:`use_tc_tile`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from gpucnn.backend.geometry import Conv2dGeometry
from gpucnn.backend.precision import check_conv_precision, epilogue_code
from gpucnn.backend.runtime import MAX_GRID, current_runtime, dtype_suffix

__all__ = ["conv2d_igemm_forward", "conv2d_igemm_backward_data", "conv2d_igemm_backward_weight"]

_FAMILY = "conv_igemm"
_TC_FAMILY = "conv_igemm_tc"

# Precisions: gpucnn.backend.precision.GEMM_PRECISIONS (None also: the SIMT kernels at the input
# dtype); fused activations: precision.EPILOGUE_ACTIVATIONS (kernel codes of cuda/epilogue.cuh).
_TC_SUFFIX = {"tf32": "tf32", "fp16": "f16", "bf16": "bf16"}


class Tile(NamedTuple):
    """A block tile ``bm x bn`` with a ``bk`` K-slice and a ``tm x tn`` micro-tile per thread
    (the kernel's ``IGEMM_*`` defines)."""

    bm: int
    bn: int
    bk: int
    tm: int
    tn: int

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    def defines(self) -> dict[str, int] | None:
        """The ``-D`` defines (``None`` for the source's defaults: one shared module)."""
        if self == TILES["64x64"]:
            return None
        return {f"IGEMM_{k.upper()}": v for k, v in self._asdict().items()}


#: Tile configurations. ``"64x64"`` is the source's default (256 threads, 4x4 per thread);
#: ``"16x32"`` (64 threads, 2x4 per thread) a small one for small problems and tests;
#: ``"64x128"`` (128 threads) and ``"128x128"`` (256 threads) give each thread an 8x8
#: micro-tile: 4 multiply-adds per shared-memory load instead of 2, for large layers (which
#: wins where is for the GPU benchmark to say: ``benchmarks/cases.py``, igemm cases).
TILES = {
    "64x64": Tile(64, 64, 8, 4, 4),
    "16x32": Tile(16, 32, 4, 2, 4),
    "64x128": Tile(64, 128, 8, 8, 8),
    "128x128": Tile(128, 128, 8, 8, 8),
}

_tile: contextvars.ContextVar[str] = contextvars.ContextVar("gpucnn_igemm_tile", default="64x64")


class TcTile(NamedTuple):
    """A tensor-core block tile: ``warps_m x warps_n`` warps of ``wm x wn`` each, ``bk`` deep
    (the ``CONV_TC_*`` defines of ``cuda/conv_igemm_tc.cu``)."""

    warps_m: int
    warps_n: int
    wm: int
    wn: int
    bk: int

    @property
    def bm(self) -> int:
        return self.warps_m * self.wm

    @property
    def bn(self) -> int:
        return self.warps_n * self.wn

    @property
    def threads(self) -> int:
        return 32 * self.warps_m * self.warps_n

    def defines(self) -> dict[str, int] | None:
        """The ``-D`` defines (``None`` for the source's defaults: one shared module)."""
        if self == TC_TILES["64x64"]:
            return None
        return {f"CONV_TC_{k.upper()}": v for k, v in self._asdict().items()}


#: Tensor-core tiles. ``"64x64"``: the source's default (2x2 warps of 32x32, 128 threads, BK
#: 32); ``"32x32"``: 1x2 warps of 32x16, BK 16 (64 threads, small problems and tests);
#: ``"128x128"``: 2x4 warps of 64x32 (256 threads) for large layers (the GPU benchmark,
#: ``benchmarks/cases.py`` ``conv2d_igemm_tc`` cases, is to say which wins where).
TC_TILES = {
    "64x64": TcTile(2, 2, 32, 32, 32),
    "32x32": TcTile(1, 2, 32, 16, 16),
    "128x128": TcTile(2, 4, 64, 32, 32),
}

_tc_tile: contextvars.ContextVar[str] = contextvars.ContextVar(
    "gpucnn_igemm_tc_tile", default="64x64"
)

# Split-K of the weight gradient: its GEMM is small (O x Cg*kh*kw) with a long reduction
# (N*oh*ow), so few tiles would keep most of a GPU idle. Split the reduction until about
# _SPLIT_TARGET_BLOCKS blocks run, each split keeping >= _SPLIT_MIN_SLICES K-slices, at most
# _SPLIT_MAX splits and _SPLIT_MAX_WORKSPACE bytes of partial sums. Provisional constants (no
# GPU measurement yet): benchmarks/cases.py ``conv2d_igemm_*`` cases are where to tune them.
_SPLIT_TARGET_BLOCKS = 256
_SPLIT_MIN_SLICES = 16
_SPLIT_MAX = 32
_SPLIT_MAX_WORKSPACE = 64 << 20


def current_tile() -> Tile:
    """The tile the launchers use now (:func:`use_tile`; default ``"64x64"``)."""
    return TILES[_tile.get()]


@contextlib.contextmanager
def use_tile(name: str) -> Iterator[Tile]:
    """Launch the implicit-GEMM kernels with tile ``name`` (a key of :data:`TILES`) inside
    the ``with`` block."""
    if name not in TILES:
        raise ValueError(f"conv_igemm: tile must be one of {tuple(TILES)}, got {name!r}")
    token = _tile.set(name)
    try:
        yield TILES[name]
    finally:
        _tile.reset(token)


def current_tc_tile() -> TcTile:
    """The tensor-core tile the launchers use now (:func:`use_tc_tile`; default ``"64x64"``)."""
    return TC_TILES[_tc_tile.get()]


@contextlib.contextmanager
def use_tc_tile(name: str) -> Iterator[TcTile]:
    """Launch the tensor-core kernels with tile ``name`` (a key of :data:`TC_TILES`) inside
    the ``with`` block."""
    if name not in TC_TILES:
        raise ValueError(f"conv_igemm: tensor-core tile must be one of {tuple(TC_TILES)}, "
                         f"got {name!r}")  # fmt: skip
    token = _tc_tile.set(name)
    try:
        yield TC_TILES[name]
    finally:
        _tc_tile.reset(token)


def _tc_operand(xp: Any, a: Any, precision: str) -> Any:
    """``a`` as the kernels take it: C-contiguous float32 (tf32) or uint16 bit patterns."""
    a = xp.ascontiguousarray(a)
    return a if precision == "tf32" else a.view(np.uint16)


def _launch_tc(name: str, precision: str, tiles: int, args: tuple) -> None:
    """Launch tensor-core kernel ``name`` with the current tensor-core tile (grid capped by the
    runtime's ``grid_cap``; the blocks loop over ``tiles`` tiles)."""
    rt = current_runtime()
    tile = current_tc_tile()
    cap = MAX_GRID if rt.grid_cap is None else int(rt.grid_cap)
    grid = max(1, min(int(tiles), cap))
    k = rt.kernel(_TC_FAMILY, f"{name}_{_TC_SUFFIX[precision]}", tile.defines())
    k((grid,), (tile.threads,), args)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _shape_args(g: Conv2dGeometry) -> tuple:
    """The kernels' trailing int32 sizes ``N, C, H, W, O, G, KH, KW, SH, SW, PT, PL, DH, DW,
    P, Q`` (bottom/right pads are implied by P, Q)."""
    vals = (g.n, g.c, g.h, g.w, g.o, g.groups, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.dh, g.dw,
            g.oh, g.ow)  # fmt: skip
    if max(vals) > 2**31 - 1:
        raise ValueError(f"conv_igemm: sizes must be < 2**31, got {vals}")
    return tuple(np.int32(v) for v in vals)


def _check(op: str, a: Any, shape: tuple, what: str) -> None:
    if tuple(int(s) for s in a.shape) != tuple(shape):
        raise ValueError(f"{op}: expected {what} of shape {tuple(shape)}, got {tuple(a.shape)}")


def _launch(name: str, dtype: Any, tiles: int, args: tuple, op: str) -> None:
    """Launch ``name`` with the current tile: a 1-D grid (capped by the runtime's
    ``grid_cap``) whose blocks loop over ``tiles`` tiles."""
    rt = current_runtime()
    tile = current_tile()
    cap = MAX_GRID if rt.grid_cap is None else int(rt.grid_cap)
    grid = max(1, min(int(tiles), cap))
    k = rt.kernel(_FAMILY, f"{name}_{dtype_suffix(dtype, op)}", tile.defines())
    k((grid,), (tile.threads,), args)


def conv2d_igemm_forward(
    x: Any,
    weight: Any,
    bias: Any,
    geom: Conv2dGeometry,
    *,
    precision: str | None = None,
    activation: str | None = None,
    slope: float = 0.01,
    return_preactivation: bool = False,
) -> Any:
    """``y (N, O, oh, ow) = act(conv(x, weight) + bias)``, NCHW, all fused in the kernel.

    ``x (N, C, H, W)``, ``weight (O, C/groups, kh, kw)``, ``bias (O,)`` or ``None``.
    ``precision`` (see the module docstring): ``None`` keeps the input dtype (kernels
    ``conv_igemm_fwd_f32/_f64``); ``"tf32"``/``"fp16"``/``"bf16"`` give float32 ``y`` (kernels
    ``conv_igemm_tc_fwd_tf32/_f16/_bf16``; ``bias`` is taken as float32). ``activation``: one
    of :data:`gpucnn.backend.precision.EPILOGUE_ACTIVATIONS` (``slope``: LeakyReLU's negative
    slope). ``return_preactivation``: return ``(y, pre)``, ``pre`` the value before the
    activation (conv + bias).
    """
    op = "conv2d_igemm_forward"
    g = geom
    xp = current_runtime().xp
    prec = check_conv_precision(op, precision, x=x, weight=weight)
    act = epilogue_code(op, activation)
    if prec in ("simt", "fp32"):
        dtype_suffix(x.dtype, op)
    _check(op, x, (g.n, g.c, g.h, g.w), "x")
    _check(op, weight, (g.o, g.cg, g.kh, g.kw), "weight")
    if bias is not None:
        _check(op, bias, (g.o,), "bias")
    if prec in ("simt", "fp32"):
        x = xp.ascontiguousarray(x)
        weight = xp.ascontiguousarray(weight, dtype=x.dtype)
        out_dtype = x.dtype
    else:
        x, weight = _tc_operand(xp, x, prec), _tc_operand(xp, weight, prec)
        out_dtype = np.dtype(np.float32)
    has_bias = bias is not None
    y = xp.empty(g.output_shape, dtype=out_dtype)
    pre = xp.empty(g.output_shape, dtype=out_dtype) if return_preactivation else y
    b = xp.ascontiguousarray(bias, dtype=out_dtype) if has_bias else y
    flags = (np.int32(has_bias), np.int32(act), out_dtype.type(slope),
             np.int32(bool(return_preactivation)))  # fmt: skip
    if y.size:
        args = (x, weight, b, y, pre, *flags, *_shape_args(g))
        if prec in ("simt", "fp32"):
            t = current_tile()
            tiles = g.groups * _cdiv(g.o // g.groups, t.bm) * _cdiv(g.n * g.oh * g.ow, t.bn)
            _launch("conv_igemm_fwd", out_dtype, tiles, args, op)
        else:
            tc = current_tc_tile()
            tiles = g.groups * _cdiv(g.o // g.groups, tc.bm) * _cdiv(g.n * g.oh * g.ow, tc.bn)
            _launch_tc("conv_igemm_tc_fwd", prec, tiles, args)
    return (y, pre) if return_preactivation else y


def conv2d_igemm_backward_data(
    dy: Any, weight: Any, geom: Conv2dGeometry, *, precision: str | None = None
) -> Any:
    """``dx (N, C, H, W)`` from ``dy (N, O, oh, ow)`` and ``weight (O, C/groups, kh, kw)``: a
    gather, each ``dx`` element written once (no atomics). Kernel
    ``conv_igemm_bwd_data_f32/_f64`` (``precision=None``/``"fp32"``, dtype of ``dy``) or
    ``conv_igemm_tc_bwd_data_tf32/_f16/_bf16`` (float32 ``dx``)."""
    op = "conv2d_igemm_backward_data"
    g = geom
    xp = current_runtime().xp
    prec = check_conv_precision(op, precision, dy=dy, weight=weight)
    if prec in ("simt", "fp32"):
        dtype_suffix(dy.dtype, op)
    _check(op, dy, g.output_shape, "dy")
    _check(op, weight, (g.o, g.cg, g.kh, g.kw), "weight")
    if prec not in ("simt", "fp32"):
        dy, weight = _tc_operand(xp, dy, prec), _tc_operand(xp, weight, prec)
        dx = xp.empty((g.n, g.c, g.h, g.w), dtype=np.float32)
        tc = current_tc_tile()
        tiles = g.groups * _cdiv(g.cg, tc.bm) * _cdiv(g.n * g.h * g.w, tc.bn)
        if dx.size:
            _launch_tc("conv_igemm_tc_bwd_data", prec, tiles, (dy, weight, dx, *_shape_args(g)))
        return dx
    dy = xp.ascontiguousarray(dy)
    weight = xp.ascontiguousarray(weight, dtype=dy.dtype)
    dx = xp.empty((g.n, g.c, g.h, g.w), dtype=dy.dtype)
    t = current_tile()
    tiles = g.groups * _cdiv(g.cg, t.bm) * _cdiv(g.n * g.h * g.w, t.bn)
    if dx.size:
        _launch("conv_igemm_bwd_data", dy.dtype, tiles, (dy, weight, dx, *_shape_args(g)), op)
    return dx


def weight_grad_splits(
    geom: Conv2dGeometry, itemsize: int, tile: Tile | TcTile | None = None
) -> int:
    """How many split-K ranges :func:`conv2d_igemm_backward_weight` uses for ``geom`` (the
    provisional rule of the ``_SPLIT_*`` constants above)."""
    t = current_tile() if tile is None else tile
    g = geom
    ckk = g.cg * g.kh * g.kw
    tiles = g.groups * _cdiv(g.o // g.groups, t.bm) * _cdiv(ckk, t.bn)
    slices = _cdiv(g.n * g.oh * g.ow, t.bk)
    want = _cdiv(_SPLIT_TARGET_BLOCKS, max(tiles, 1))
    fit = _SPLIT_MAX_WORKSPACE // max(1, g.o * ckk * int(itemsize))
    return int(max(1, min(want, slices // _SPLIT_MIN_SLICES, _SPLIT_MAX, fit)))


def conv2d_igemm_backward_weight(
    dy: Any,
    x: Any,
    geom: Conv2dGeometry,
    splits: int | None = None,
    *,
    precision: str | None = None,
) -> Any:
    """``dW (O, C/groups, kh, kw)`` from ``dy (N, O, oh, ow)`` and the input ``x (N, C, H,
    W)``. ``splits``: split-K ranges of the ``N*oh*ow`` reduction (``None``:
    :func:`weight_grad_splits`); more than one writes partial sums to a workspace that
    ``conv_igemm_splitk_sum`` adds in split order (deterministic). Kernels
    ``conv_igemm_bwd_weight_f32/_f64`` (``precision=None``/``"fp32"``, dtype of ``dy``) or
    ``conv_igemm_tc_bwd_weight_tf32/_f16/_bf16`` (float32 ``dW`` and workspace), plus
    ``conv_igemm_splitk_sum_f32/_f64``."""
    op = "conv2d_igemm_backward_weight"
    g = geom
    rt = current_runtime()
    xp = rt.xp
    prec = check_conv_precision(op, precision, dy=dy, x=x)
    simt = prec in ("simt", "fp32")
    if simt:
        dtype_suffix(dy.dtype, op)
    _check(op, dy, g.output_shape, "dy")
    _check(op, x, (g.n, g.c, g.h, g.w), "x")
    if simt:
        dy = xp.ascontiguousarray(dy)
        x = xp.ascontiguousarray(x, dtype=dy.dtype)
        out_dtype = dy.dtype
    else:
        dy, x = _tc_operand(xp, dy, prec), _tc_operand(xp, x, prec)
        out_dtype = np.dtype(np.float32)
    tile: Tile | TcTile = current_tile() if simt else current_tc_tile()
    if splits is None:
        splits = weight_grad_splits(g, out_dtype.itemsize, tile)
    if isinstance(splits, bool) or not isinstance(splits, (int, np.integer)) or splits < 1:
        raise ValueError(f"{op}: splits must be a positive int or None, got {splits!r}")
    splits = int(splits)
    wshape = (g.o, g.cg, g.kh, g.kw)
    dw = xp.empty(wshape, dtype=out_dtype)
    total = int(np.prod(wshape))
    if total == 0:
        return dw
    out = dw if splits == 1 else xp.empty((splits, *wshape), dtype=out_dtype)
    tiles = g.groups * splits * _cdiv(g.o // g.groups, tile.bm) * _cdiv(total // g.o, tile.bn)
    args = (dy, x, out, np.int32(splits), *_shape_args(g))
    if simt:
        _launch("conv_igemm_bwd_weight", out_dtype, tiles, args, op)
    else:
        _launch_tc("conv_igemm_tc_bwd_weight", prec, tiles, args)
    if splits > 1:
        rt.launch(
            _FAMILY,
            f"conv_igemm_splitk_sum_{dtype_suffix(out_dtype, op)}",
            total,
            (out, dw, np.int64(total), np.int32(splits)),
            current_tile().defines(),
        )
    return dw
