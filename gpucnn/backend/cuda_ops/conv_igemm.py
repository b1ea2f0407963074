"""CUDA launchers of ``cuda/conv_igemm.cu``: implicit-GEMM convolution, forward (bias fused
into the epilogue), backward-data and backward-weight, for every :class:`Conv2dGeometry`.

No column matrix is built: each kernel computes its GEMM operands from the tensors directly
(see the header of ``cuda/conv_igemm.cu`` for the three GEMMs and the tiling). These are the
kernels of the ``"igemm"`` algorithm of :mod:`gpucnn.backend.cuda_ops.conv`; same names and
signatures as :mod:`gpucnn.backend.numpy_ops.conv_igemm`. ``xp`` and kernels come from
:func:`gpucnn.backend.runtime.current_runtime`, so the host emulator runs these launchers.

The tile is a compile-time choice (``-D`` defines): :data:`TILES` names the configurations,
:func:`use_tile` selects one for the launches inside a ``with`` block (tests sweep them).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from gpucnn.backend.geometry import Conv2dGeometry
from gpucnn.backend.runtime import MAX_GRID, current_runtime, dtype_suffix

__all__ = ["conv2d_igemm_forward", "conv2d_igemm_backward_data", "conv2d_igemm_backward_weight"]

_FAMILY = "conv_igemm"


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


def conv2d_igemm_forward(x: Any, weight: Any, bias: Any, geom: Conv2dGeometry) -> Any:
    """``y (N, O, oh, ow)`` of ``x`` convolved with ``weight`` (+ ``bias``, added in the
    kernel's epilogue). Kernel ``conv_igemm_fwd_f32/_f64``."""
    op = "conv2d_igemm_forward"
    g = geom
    xp = current_runtime().xp
    dtype_suffix(x.dtype, op)
    _check(op, x, (g.n, g.c, g.h, g.w), "x")
    _check(op, weight, (g.o, g.cg, g.kh, g.kw), "weight")
    x = xp.ascontiguousarray(x)
    weight = xp.ascontiguousarray(weight, dtype=x.dtype)
    b = weight if bias is None else xp.ascontiguousarray(bias, dtype=x.dtype)
    if bias is not None:
        _check(op, b, (g.o,), "bias")
    y = xp.empty(g.output_shape, dtype=x.dtype)
    t = current_tile()
    tiles = g.groups * _cdiv(g.o // g.groups, t.bm) * _cdiv(g.n * g.oh * g.ow, t.bn)
    if y.size:
        args = (x, weight, b, y, np.int32(bias is not None), *_shape_args(g))
        _launch("conv_igemm_fwd", x.dtype, tiles, args, op)
    return y


def conv2d_igemm_backward_data(dy: Any, weight: Any, geom: Conv2dGeometry) -> Any:
    """``dx (N, C, H, W)`` from ``dy`` and ``weight``: a gather, each ``dx`` element written
    once (no atomics). Kernel ``conv_igemm_bwd_data_f32/_f64``."""
    op = "conv2d_igemm_backward_data"
    g = geom
    xp = current_runtime().xp
    dtype_suffix(dy.dtype, op)
    _check(op, dy, g.output_shape, "dy")
    _check(op, weight, (g.o, g.cg, g.kh, g.kw), "weight")
    dy = xp.ascontiguousarray(dy)
    weight = xp.ascontiguousarray(weight, dtype=dy.dtype)
    dx = xp.empty((g.n, g.c, g.h, g.w), dtype=dy.dtype)
    t = current_tile()
    tiles = g.groups * _cdiv(g.cg, t.bm) * _cdiv(g.n * g.h * g.w, t.bn)
    if dx.size:
        _launch("conv_igemm_bwd_data", dy.dtype, tiles, (dy, weight, dx, *_shape_args(g)), op)
    return dx


def weight_grad_splits(geom: Conv2dGeometry, itemsize: int, tile: Tile | None = None) -> int:
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
    dy: Any, x: Any, geom: Conv2dGeometry, splits: int | None = None
) -> Any:
    """``dW (O, C/groups, kh, kw)`` from ``dy`` and the input ``x``. ``splits``: split-K
    ranges of the ``N*oh*ow`` reduction (``None``: :func:`weight_grad_splits`); more than one
    writes partial sums to a workspace that ``conv_igemm_splitk_sum`` adds in split order
    (deterministic). Kernels ``conv_igemm_bwd_weight_f32/_f64`` (+ ``splitk_sum``)."""
    op = "conv2d_igemm_backward_weight"
    g = geom
    rt = current_runtime()
    xp = rt.xp
    dtype_suffix(dy.dtype, op)
    _check(op, dy, g.output_shape, "dy")
    _check(op, x, (g.n, g.c, g.h, g.w), "x")
    dy = xp.ascontiguousarray(dy)
    x = xp.ascontiguousarray(x, dtype=dy.dtype)
    if splits is None:
        splits = weight_grad_splits(g, dy.dtype.itemsize)
    if isinstance(splits, bool) or not isinstance(splits, (int, np.integer)) or splits < 1:
        raise ValueError(f"{op}: splits must be a positive int or None, got {splits!r}")
    splits = int(splits)
    wshape = (g.o, g.cg, g.kh, g.kw)
    dw = xp.empty(wshape, dtype=dy.dtype)
    total = int(np.prod(wshape))
    if total == 0:
        return dw
    out = dw if splits == 1 else xp.empty((splits, *wshape), dtype=dy.dtype)
    t = current_tile()
    tiles = g.groups * splits * _cdiv(g.o // g.groups, t.bm) * _cdiv(total // g.o, t.bn)
    args = (dy, x, out, np.int32(splits), *_shape_args(g))
    _launch("conv_igemm_bwd_weight", dy.dtype, tiles, args, op)
    if splits > 1:
        rt.launch(
            _FAMILY,
            f"conv_igemm_splitk_sum_{dtype_suffix(dy.dtype, op)}",
            total,
            (out, dw, np.int64(total), np.int32(splits)),
            current_tile().defines(),
        )
    return dw
