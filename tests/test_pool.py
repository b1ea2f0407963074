"""Pooling: brute-force references, NumPy twin vs emulated kernels, gradient checks, PyTorch
parity, errors, NaN, non-contiguous inputs and GPU parity."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import gpucnn.functional as F
from gpucnn import backend as B
from gpucnn.backend import cuda_ops, numpy_ops
from gpucnn.backend.cuda_ops import pool as CP
from gpucnn.backend.numpy_ops import pool as NP
from gpucnn.backend.runtime import use_runtime
from gpucnn.functional.pool import pool_output_size
from gpucnn.tensor import Tensor
from gpucnn.testing.gradcheck import gradient_check

# --------------------------------------------------------------------------- helpers


def tie_free(shape: tuple, seed: int = 0) -> np.ndarray:
    """A shuffled linspace: every value distinct (max-pool gradients are well defined)."""
    n = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(np.linspace(-1.0, 1.0, n)).reshape(shape)


def ref_out(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """Output length from PyTorch's documented formula with real-valued floor/ceil."""
    r = (n + 2 * p - d * (k - 1) - 1) / s
    o = (math.ceil(r) if ceil else math.floor(r)) + 1
    if ceil and (o - 1) * s >= n + p:
        o -= 1
    return o


def ref_maxpool(x, k, s, p, d, ceil):
    """Loop reference: (y, idx) with PyTorch's scan (first max, NaN wins, -inf init)."""
    n, c, h, w = x.shape
    oh, ow = ref_out(h, k[0], s[0], p[0], d[0], ceil), ref_out(w, k[1], s[1], p[1], d[1], ceil)
    y = np.zeros((n, c, oh, ow), x.dtype)
    idx = np.zeros((n, c, oh, ow), np.int64)
    for b in range(n):
        for ch in range(c):
            for oy in range(oh):
                for ox in range(ow):
                    rows = [oy * s[0] - p[0] + i * d[0] for i in range(k[0])]
                    cols = [ox * s[1] - p[1] + j * d[1] for j in range(k[1])]
                    rows = [r for r in rows if 0 <= r < h]
                    cols = [q for q in cols if 0 <= q < w]
                    best, arg = -np.inf, rows[0] * w + cols[0]
                    for r in rows:
                        for q in cols:
                            v = x[b, ch, r, q]
                            if v > best or np.isnan(v):
                                best, arg = v, r * w + q
                    y[b, ch, oy, ox], idx[b, ch, oy, ox] = best, arg
    return y, idx


def ref_argmax_backward(dy, idx, h, w):
    n, c = dy.shape[:2]
    dx = np.zeros((n, c, h * w), dy.dtype)
    for b in range(n):
        for ch in range(c):
            for o, i in zip(dy[b, ch].ravel(), idx[b, ch].ravel()):
                dx[b, ch, i] += o
    return dx.reshape(n, c, h, w)


def ref_avgpool(x, k, s, p, ceil, cip, dov):
    """Loop reference of PyTorch's avg_pool2d: (y, list of (window cells, divisor))."""
    n, c, h, w = x.shape
    oh, ow = ref_out(h, k[0], s[0], p[0], 1, ceil), ref_out(w, k[1], s[1], p[1], 1, ceil)
    y = np.zeros((n, c, oh, ow), x.dtype)
    wins = {}
    for oy in range(oh):
        for ox in range(ow):
            r0, c0 = oy * s[0] - p[0], ox * s[1] - p[1]
            r1, c1 = min(r0 + k[0], h + p[0]), min(c0 + k[1], w + p[1])
            size_pad = (r1 - r0) * (c1 - c0)
            cells = [
                (r, q) for r in range(max(r0, 0), min(r1, h)) for q in range(max(c0, 0), min(c1, w))
            ]
            div = dov if dov else (size_pad if cip else len(cells))
            wins[oy, ox] = (cells, div)
            for b in range(n):
                for ch in range(c):
                    y[b, ch, oy, ox] = sum(x[b, ch, r, q] for r, q in cells) / div
    return y, wins


def ref_avg_backward(dy, wins, h, w):
    n, c = dy.shape[:2]
    dx = np.zeros((n, c, h, w), dy.dtype)
    for (oy, ox), (cells, div) in wins.items():
        for r, q in cells:
            dx[:, :, r, q] += dy[:, :, oy, ox] / div
    return dx


def ref_bins(n, m):
    return [(math.floor(i * n / m), math.ceil((i + 1) * n / m)) for i in range(m)]


def ref_adaptive(x, oh, ow, mode):
    """Loop reference of adaptive pooling: (y, idx or None, bins)."""
    n, c, h, w = x.shape
    bh, bw = ref_bins(h, oh), ref_bins(w, ow)
    y = np.zeros((n, c, oh, ow), x.dtype)
    idx = np.zeros((n, c, oh, ow), np.int64)
    for b in range(n):
        for ch in range(c):
            for i, (r0, r1) in enumerate(bh):
                for j, (c0, c1) in enumerate(bw):
                    if mode == "avg":
                        y[b, ch, i, j] = x[b, ch, r0:r1, c0:c1].mean()
                        continue
                    best, arg = -np.inf, r0 * w + c0
                    for r in range(r0, r1):
                        for q in range(c0, c1):
                            v = x[b, ch, r, q]
                            if v > best or np.isnan(v):
                                best, arg = v, r * w + q
                    y[b, ch, i, j], idx[b, ch, i, j] = best, arg
    return y, idx, (bh, bw)


def ref_adaptive_avg_backward(dy, bins, h, w):
    bh, bw = bins
    dx = np.zeros(dy.shape[:2] + (h, w), dy.dtype)
    for i, (r0, r1) in enumerate(bh):
        for j, (c0, c1) in enumerate(bw):
            dx[:, :, r0:r1, c0:c1] += (dy[:, :, i, j] / ((r1 - r0) * (c1 - c0)))[:, :, None, None]
    return dx


# Max-pool option grid: (input shape, kernel, stride, padding, dilation, ceil_mode). Covers
# kernel 2/3, stride 1/2/3, overlapping windows, padding 0/1, dilation 2, ceil on/off, odd/even
# and non-square sizes, and edge windows that do not fit (dropped without ceil_mode).
MAX_CASES = [
    ((2, 2, 6, 8), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((1, 2, 5, 7), (3, 3), (1, 1), (0, 0), (1, 1), False),
    ((1, 2, 7, 6), (3, 3), (2, 2), (1, 1), (1, 1), False),
    ((1, 2, 7, 8), (2, 2), (3, 3), (0, 0), (1, 1), False),
    ((1, 2, 6, 6), (3, 3), (2, 2), (0, 0), (1, 1), False),
    ((1, 1, 6, 7), (2, 3), (1, 2), (1, 0), (1, 1), False),
    ((1, 2, 7, 7), (3, 3), (1, 1), (1, 1), (2, 2), False),
    ((1, 2, 6, 6), (3, 3), (2, 2), (0, 0), (1, 1), True),
    ((1, 2, 5, 7), (2, 2), (2, 2), (1, 1), (1, 1), True),
    ((1, 1, 8, 7), (3, 2), (2, 1), (1, 1), (1, 2), True),
    ((1, 1, 9, 6), (2, 3), (3, 2), (1, 1), (2, 1), True),
]

# Avg-pool option grid: (shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor).
AVG_CASES = [
    ((2, 2, 6, 8), (2, 2), (2, 2), (0, 0), False, True, None),
    ((1, 2, 5, 7), (3, 3), (1, 1), (1, 1), False, True, None),
    ((1, 2, 5, 7), (3, 3), (1, 1), (1, 1), False, False, None),
    ((1, 2, 7, 6), (3, 2), (2, 3), (1, 1), False, False, None),
    ((1, 2, 6, 6), (3, 3), (2, 2), (0, 0), True, True, None),
    ((1, 2, 5, 5), (3, 3), (2, 2), (1, 1), True, True, None),
    ((1, 2, 5, 5), (3, 3), (2, 2), (1, 1), True, False, None),
    ((1, 1, 6, 7), (2, 3), (3, 2), (1, 1), True, True, None),
    ((1, 2, 7, 7), (3, 3), (2, 2), (1, 1), False, True, 5),
    ((1, 1, 6, 5), (2, 2), (3, 2), (1, 0), True, False, 3),
]

ADAPTIVE_CASES = [  # (shape, output_size)
    ((1, 2, 7, 7), 3),
    ((1, 2, 5, 5), 2),
    ((1, 2, 4, 4), 7),
    ((2, 1, 6, 5), (None, 2)),
    ((1, 2, 5, 7), (3, 4)),
    ((1, 2, 4, 6), (7, 2)),
    ((1, 2, 5, 6), 1),
]


def _out_pair(shape, out):
    if isinstance(out, int):
        return out, out
    return (shape[2] if out[0] is None else out[0], shape[3] if out[1] is None else out[1])


# --------------------------------------------------------------------------- output size


def test_pool_output_size_matches_formula():
    for n in range(1, 12):
        for k in (1, 2, 3, 4):
            for s in (1, 2, 3):
                for p in range(k // 2 + 1):
                    for d in (1, 2):
                        for ceil in (False, True):
                            assert pool_output_size(n, k, s, p, d, ceil) == ref_out(
                                n, k, s, p, d, ceil
                            ), (n, k, s, p, d, ceil)


# --------------------------------------------------------------------------- brute-force refs


@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool_matches_loops(backend, case):
    shape, k, s, p, d, ceil = case
    x = tie_free(shape)
    ry, ridx = ref_maxpool(x, k, s, p, d, ceil)
    xt = Tensor(backend.asarray(x), requires_grad=True)
    y, idx = F.max_pool2d(xt, k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(y.numpy(), ry)
    np.testing.assert_array_equal(idx.numpy(), ridx)
    assert idx.numpy().dtype == np.int64
    dy = np.random.default_rng(1).standard_normal(ry.shape)
    y.backward(backend.asarray(dy))
    np.testing.assert_allclose(
        xt.grad.numpy(), ref_argmax_backward(dy, ridx, *shape[2:]), rtol=1e-12, atol=1e-12
    )


def test_max_pool_overlapping_windows_share_gradient():
    # kernel 3, stride 1: one pixel is the max of several windows and collects all their grads.
    x = np.zeros((1, 1, 3, 4))
    x[0, 0, 1, 1] = 5.0
    xt = Tensor(x, requires_grad=True)
    y = F.max_pool2d(xt, 3, stride=1, padding=1)
    y.sum().backward()
    g = xt.grad.numpy()[0, 0]
    assert g[1, 1] == 9.0  # the 3x3 neighbourhood of (1, 1): windows (0..2, 0..2)
    assert g.sum() == y.numel()


@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool_matches_loops(backend, case):
    shape, k, s, p, ceil, cip, dov = case
    x = np.random.default_rng(2).standard_normal(shape)
    ry, wins = ref_avgpool(x, k, s, p, ceil, cip, dov)
    xt = Tensor(backend.asarray(x), requires_grad=True)
    y = F.avg_pool2d(xt, k, s, p, ceil, cip, dov)
    np.testing.assert_allclose(y.numpy(), ry, rtol=1e-12, atol=1e-14)
    dy = np.random.default_rng(3).standard_normal(ry.shape)
    y.backward(backend.asarray(dy))
    np.testing.assert_allclose(
        xt.grad.numpy(), ref_avg_backward(dy, wins, *shape[2:]), rtol=1e-12, atol=1e-14
    )


def test_avg_pool_ceil_window_past_padded_edge_divisor():
    # H=W=6, k=3, s=2, p=1, ceil: 4 outputs; the last window starts at 5 and would cover rows
    # 5..7, but the padded input ends at row 6 (= H+p-1), so with count_include_pad its
    # divisor counts 2 rows, not 3 (PyTorch's rule); without it, only the real row 5.
    x = np.ones((1, 1, 6, 6))
    y = F.avg_pool2d(Tensor(x), 3, 2, 1, ceil_mode=True, count_include_pad=True).numpy()[0, 0]
    assert y.shape == (4, 4)
    np.testing.assert_allclose(y[0, 0], 4 / 9)  # rows/cols -1..1: 2x2 real of 3x3
    np.testing.assert_allclose(y[3, 0], 2 / 6)  # rows 5..6 (pad): 1x2 real of 2x3
    np.testing.assert_allclose(y[3, 3], 1 / 4)
    np.testing.assert_allclose(y[1, 3], 3 / 6)
    y = F.avg_pool2d(Tensor(x), 3, 2, 1, ceil_mode=True, count_include_pad=False).numpy()
    np.testing.assert_allclose(y, 1.0)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("case", ADAPTIVE_CASES)
def test_adaptive_matches_loops(backend, case, mode):
    shape, out = case
    oh, ow = _out_pair(shape, out)
    x = tie_free(shape, seed=4)
    ry, ridx, bins = ref_adaptive(x, oh, ow, mode)
    xt = Tensor(backend.asarray(x), requires_grad=True)
    dy = np.random.default_rng(5).standard_normal(ry.shape)
    if mode == "avg":
        y = F.adaptive_avg_pool2d(xt, out)
        np.testing.assert_allclose(y.numpy(), ry, rtol=1e-12, atol=1e-14)
        y.backward(backend.asarray(dy))
        ref_dx = ref_adaptive_avg_backward(dy, bins, *shape[2:])
    else:
        y, idx = F.adaptive_max_pool2d(xt, out, return_indices=True)
        np.testing.assert_array_equal(y.numpy(), ry)
        np.testing.assert_array_equal(idx.numpy(), ridx)
        y.backward(backend.asarray(dy))
        ref_dx = ref_argmax_backward(dy, ridx, *shape[2:])
    np.testing.assert_allclose(xt.grad.numpy(), ref_dx, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pools_match_numpy(backend, keepdims):
    x = tie_free((2, 3, 5, 4), seed=6)
    xt = Tensor(backend.asarray(x), requires_grad=True)
    ya = F.global_avg_pool2d(xt, keepdims=keepdims)
    ym = F.global_max_pool2d(xt, keepdims=keepdims)
    shape = (2, 3, 1, 1) if keepdims else (2, 3)
    assert ya.shape == shape and ym.shape == shape
    np.testing.assert_allclose(ya.numpy().reshape(2, 3), x.mean(axis=(2, 3)), rtol=1e-12)
    np.testing.assert_array_equal(ym.numpy().reshape(2, 3), x.max(axis=(2, 3)))
    (ya.sum() + ym.sum() * 2.0).backward()
    want = np.full(x.shape, 1 / 20) + 2.0 * (x == x.max(axis=(2, 3), keepdims=True))
    np.testing.assert_allclose(xt.grad.numpy(), want, rtol=1e-12)


# --------------------------------------------------------------------------- gradient checks


@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool_gradcheck(case):
    shape, k, s, p, d, ceil = case
    shape = (1,) + shape[1:]
    gradient_check(lambda t: F.max_pool2d(t, k, s, p, d, ceil), [tie_free(shape, seed=7)])


@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool_gradcheck(case):
    shape, k, s, p, ceil, cip, dov = case
    shape = (1,) + shape[1:]
    x = np.random.default_rng(8).standard_normal(shape)
    gradient_check(lambda t: F.avg_pool2d(t, k, s, p, ceil, cip, dov), [x])


@pytest.mark.parametrize("case", ADAPTIVE_CASES)
def test_adaptive_gradcheck(case):
    shape, out = case
    x = tie_free(shape, seed=9)
    gradient_check(lambda t: F.adaptive_avg_pool2d(t, out), [x])
    gradient_check(lambda t: F.adaptive_max_pool2d(t, out), [x])


def test_global_gradcheck():
    x = tie_free((2, 2, 3, 4), seed=10)
    gradient_check(lambda t: F.global_avg_pool2d(t), [x])
    gradient_check(lambda t: F.global_max_pool2d(t, keepdims=True), [x])


# --------------------------------------------------------------------------- twin vs emulator


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_kernels_parity(kernel_parity, launch_grid, dtype):
    rng = np.random.default_rng(11)
    for shape, (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil in MAX_CASES:
        x = tie_free(shape, seed=12).astype(dtype)
        oh, ow = ref_out(shape[2], kh, sh, ph, dh, ceil), ref_out(shape[3], kw, sw, pw, dw, ceil)
        args = (x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
        kernel_parity("pool", "maxpool2d_forward", *args, launch=launch_grid)
        _, arg = NP.maxpool2d_forward(*args)
        dy = rng.standard_normal(arg.shape).astype(dtype)
        h, w = shape[2:]
        bargs = (dy, arg, h, w, kh, kw, sh, sw, ph, pw, dh, dw)
        kernel_parity("pool", "maxpool2d_backward", *bargs, launch=launch_grid)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avgpool_kernels_parity(kernel_parity, launch_grid, dtype):
    rng = np.random.default_rng(13)
    for shape, (kh, kw), (sh, sw), (ph, pw), ceil, cip, dov in AVG_CASES:
        x = rng.standard_normal(shape).astype(dtype)
        oh, ow = ref_out(shape[2], kh, sh, ph, 1, ceil), ref_out(shape[3], kw, sw, pw, 1, ceil)
        div = dov or 0
        args = (x, kh, kw, sh, sw, ph, pw, oh, ow, cip, div)
        kernel_parity("pool", "avgpool2d_forward", *args, launch=launch_grid)
        dy = rng.standard_normal((shape[0], shape[1], oh, ow)).astype(dtype)
        h, w = shape[2:]
        bargs = (dy, h, w, kh, kw, sh, sw, ph, pw, cip, div)
        kernel_parity("pool", "avgpool2d_backward", *bargs, launch=launch_grid)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adaptive_kernels_parity(kernel_parity, launch_grid, dtype):
    rng = np.random.default_rng(14)
    for shape, out in ADAPTIVE_CASES + [((2, 3, 9, 11), (4, 5)), ((1, 2, 3, 3), (8, 6))]:
        oh, ow = _out_pair(shape, out)
        h, w = shape[2:]
        x = tie_free(shape, seed=15).astype(dtype)
        dy = rng.standard_normal((shape[0], shape[1], oh, ow)).astype(dtype)
        kernel_parity("pool", "adaptive_avgpool2d_forward", x, oh, ow, launch=launch_grid)
        kernel_parity("pool", "adaptive_avgpool2d_backward", dy, h, w, launch=launch_grid)
        kernel_parity("pool", "adaptive_maxpool2d_forward", x, oh, ow, launch=launch_grid)
        _, arg = NP.adaptive_maxpool2d_forward(x, oh, ow)
        kernel_parity("pool", "adaptive_maxpool2d_backward", dy, arg, h, w, launch=launch_grid)


def test_kernels_parity_random_sweep(kernel_parity):
    """Random configurations (seeded) through every kernel, float32, one odd grid."""
    rng = np.random.default_rng(16)
    grid = (2, 64)
    for _ in range(25):
        n, c = (int(v) for v in rng.integers(1, 3, 2))
        h, w = (int(v) for v in rng.integers(1, 10, 2))
        kh, kw, sh, sw = (int(v) for v in rng.integers(1, 4, 4))
        dh, dw = (int(v) for v in rng.integers(1, 3, 2))
        ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
        ceil = bool(rng.integers(2))
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        oh, ow = (
            pool_output_size(h, kh, sh, ph, dh, ceil),
            pool_output_size(w, kw, sw, pw, dw, ceil),
        )
        if oh >= 1 and ow >= 1:
            args = (x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
            kernel_parity("pool", "maxpool2d_forward", *args, launch=grid)
            _, arg = NP.maxpool2d_forward(*args)
            dy = rng.standard_normal(arg.shape).astype(np.float32)
            bargs = (dy, arg, h, w, kh, kw, sh, sw, ph, pw, dh, dw)
            kernel_parity("pool", "maxpool2d_backward", *bargs, launch=grid)
        oh, ow = pool_output_size(h, kh, sh, ph, 1, ceil), pool_output_size(w, kw, sw, pw, 1, ceil)
        if oh >= 1 and ow >= 1:
            cip, div = bool(rng.integers(2)), int(rng.choice([0, 0, 2]))
            args = (x, kh, kw, sh, sw, ph, pw, oh, ow, cip, div)
            kernel_parity("pool", "avgpool2d_forward", *args, launch=grid)
            dy = rng.standard_normal((n, c, oh, ow)).astype(np.float32)
            bargs = (dy, h, w, kh, kw, sh, sw, ph, pw, cip, div)
            kernel_parity("pool", "avgpool2d_backward", *bargs, launch=grid)


# --------------------------------------------------------------------------- PyTorch parity


def _torch_grad(fn, x, dy, *args, **kwargs):
    """PyTorch's (y, indices or None, dx) for ``fn(x, *args, **kwargs)`` and upstream ``dy``."""
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    out = fn(tx, *args, **kwargs)
    ty, ti = out if isinstance(out, tuple) else (out, None)
    ty.backward(torch.tensor(dy))
    return ty.detach().numpy(), (None if ti is None else ti.numpy()), tx.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_torch_parity(dtype):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    rng = np.random.default_rng(17)
    done = 0
    while done < 40:
        n, c = (int(v) for v in rng.integers(1, 3, 2))
        h, w = (int(v) for v in rng.integers(1, 12, 2))
        k = tuple(int(v) for v in rng.integers(1, 5, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        d = tuple(int(v) for v in rng.integers(1, 3, 2))
        p = (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1)))
        ceil = bool(rng.integers(2))
        if (
            min(
                pool_output_size(h, k[0], s[0], p[0], d[0], ceil),
                pool_output_size(w, k[1], s[1], p[1], d[1], ceil),
            )
            < 1
        ):
            with pytest.raises(RuntimeError):
                tf.max_pool2d(torch.zeros(n, c, h, w), k, s, p, d, ceil)
            with pytest.raises(ValueError, match="max_pool2d"):
                F.max_pool2d(Tensor(np.zeros((n, c, h, w), dtype)), k, s, p, d, ceil)
            continue
        x = tie_free((n, c, h, w), seed=done).astype(dtype)
        xt = Tensor(x, requires_grad=True)
        y, idx = F.max_pool2d(xt, k, s, p, d, ceil, return_indices=True)
        dy = rng.standard_normal(y.shape).astype(dtype)
        y.backward(dy)
        ty, ti, tg = _torch_grad(tf.max_pool2d, x, dy, k, s, p, d, ceil, return_indices=True)
        np.testing.assert_array_equal(y.numpy(), ty)
        np.testing.assert_array_equal(idx.numpy(), ti)
        if ti.max() < h * w:  # windows with no input pixel: PyTorch's index is out of range
            np.testing.assert_allclose(xt.grad.numpy(), tg, rtol=1e-5, atol=1e-6)
        done += 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_pool_torch_parity(dtype):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    rng = np.random.default_rng(18)
    done = 0
    while done < 40:
        n, c = (int(v) for v in rng.integers(1, 3, 2))
        h, w = (int(v) for v in rng.integers(1, 12, 2))
        k = tuple(int(v) for v in rng.integers(1, 5, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        p = (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1)))
        ceil, cip = bool(rng.integers(2)), bool(rng.integers(2))
        dov = [None, None, 1, 3, 7][int(rng.integers(5))]
        if (
            min(
                pool_output_size(h, k[0], s[0], p[0], 1, ceil),
                pool_output_size(w, k[1], s[1], p[1], 1, ceil),
            )
            < 1
        ):
            continue
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        xt = Tensor(x, requires_grad=True)
        y = F.avg_pool2d(xt, k, s, p, ceil, cip, dov)
        dy = rng.standard_normal(y.shape).astype(dtype)
        y.backward(dy)
        ty, _, tg = _torch_grad(tf.avg_pool2d, x, dy, k, s, p, ceil, cip, dov)
        np.testing.assert_allclose(y.numpy(), ty, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(xt.grad.numpy(), tg, rtol=1e-5, atol=1e-6)
        done += 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adaptive_torch_parity(dtype):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    rng = np.random.default_rng(19)
    for i in range(30):
        n, c = (int(v) for v in rng.integers(1, 3, 2))
        h, w = (int(v) for v in rng.integers(1, 12, 2))
        out = [int(v) for v in rng.integers(1, 10, 2)]
        if i % 5 == 0:
            out[int(rng.integers(2))] = None
        out = tuple(out)
        x = tie_free((n, c, h, w), seed=i).astype(dtype)
        xa = Tensor(x, requires_grad=True)
        ya = F.adaptive_avg_pool2d(xa, out)
        dy = rng.standard_normal(ya.shape).astype(dtype)
        ya.backward(dy)
        ty, _, tg = _torch_grad(tf.adaptive_avg_pool2d, x, dy, out)
        np.testing.assert_allclose(ya.numpy(), ty, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(xa.grad.numpy(), tg, rtol=1e-5, atol=1e-6)
        xm = Tensor(x, requires_grad=True)
        ym, idx = F.adaptive_max_pool2d(xm, out, return_indices=True)
        ym.backward(dy)
        ty, ti, tg = _torch_grad(tf.adaptive_max_pool2d, x, dy, out, return_indices=True)
        np.testing.assert_array_equal(ym.numpy(), ty)
        np.testing.assert_array_equal(idx.numpy(), ti)
        np.testing.assert_allclose(xm.grad.numpy(), tg, rtol=1e-5, atol=1e-6)


def test_global_torch_parity():
    torch = pytest.importorskip("torch")
    x = tie_free((3, 4, 7, 5), seed=20).astype(np.float32)
    dy = np.random.default_rng(21).standard_normal((3, 4)).astype(np.float32)
    for ours, theirs in [
        (F.global_avg_pool2d, lambda t: t.mean(dim=(2, 3))),
        (F.global_max_pool2d, lambda t: torch.nn.functional.adaptive_max_pool2d(t, 1)[:, :, 0, 0]),
    ]:
        xt = Tensor(x, requires_grad=True)
        y = ours(xt)
        y.backward(dy)
        ty, _, tg = _torch_grad(theirs, x, dy)
        np.testing.assert_allclose(y.numpy(), ty, rtol=1e-6)
        np.testing.assert_allclose(xt.grad.numpy(), tg, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- NaN and -inf


def test_nan_is_the_max_like_torch():
    x = tie_free((1, 2, 6, 6), seed=22)
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 4, 3] = np.nan
    x[0, 0, 4, 5] = np.nan  # two NaNs in one window: the last one is the argmax
    x[0, 1, 2, 2] = -np.inf
    y, idx = F.max_pool2d(Tensor(x), 3, 1, 1, return_indices=True)
    yn, ix = y.numpy(), idx.numpy()
    assert np.isnan(yn[0, 0, 0, 0]) and np.isnan(yn[0, 0, 2, 2])
    assert ix[0, 0, 0, 0] == 1 * 6 + 1
    assert ix[0, 0, 4, 4] == 4 * 6 + 5  # window rows 3..5, cols 3..5 holds both NaNs
    assert not np.isnan(yn[0, 1]).any()
    ya, ia = F.adaptive_max_pool2d(Tensor(x), 2, return_indices=True)
    assert np.isnan(ya.numpy()[0, 0]).sum() == 2  # bins (0,0) and (1,1)
    assert ia.numpy()[0, 0, 1, 1] == 4 * 6 + 5
    torch = pytest.importorskip("torch")
    ty, ti = torch.nn.functional.max_pool2d(torch.tensor(x), 3, 1, 1, return_indices=True)
    np.testing.assert_array_equal(yn, ty.numpy())
    np.testing.assert_array_equal(ix, ti.numpy())
    ty, ti = torch.nn.functional.adaptive_max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(ya.numpy(), ty.numpy())
    np.testing.assert_array_equal(ia.numpy(), ti.numpy())


def test_nan_in_kernels(kernel_parity, launch_grid):
    x = tie_free((1, 1, 5, 5), seed=23)
    x[0, 0, 2, 2] = x[0, 0, 2, 3] = np.nan
    x[0, 0, 0, 0] = -np.inf
    for dtype in (np.float32, np.float64):
        xd = x.astype(dtype)
        args = (xd, 3, 3, 1, 1, 1, 1, 1, 1, 5, 5)
        kernel_parity("pool", "maxpool2d_forward", *args, launch=launch_grid)
        kernel_parity("pool", "adaptive_maxpool2d_forward", xd, 3, 2, launch=launch_grid)


def test_ties_first_maximum_wins(kernel_parity, launch_grid):
    """With ties the first maximum in row-major order is the argmax (PyTorch), everywhere."""
    x = np.random.default_rng(27).integers(0, 3, (2, 2, 7, 6)).astype(np.float64)
    x[0, 0, :3, :3] = -np.inf  # an all -inf window keeps its first in-bounds position
    y, idx = F.max_pool2d(Tensor(x), 3, 2, 1, ceil_mode=True, return_indices=True)
    ry, ridx = ref_maxpool(x, (3, 3), (2, 2), (1, 1), (1, 1), True)
    np.testing.assert_array_equal(y.numpy(), ry)
    np.testing.assert_array_equal(idx.numpy(), ridx)
    ya, ia = F.adaptive_max_pool2d(Tensor(x), (3, 4), return_indices=True)
    ry, ridx, _ = ref_adaptive(x, 3, 4, "max")
    np.testing.assert_array_equal(ia.numpy(), ridx)
    for dtype in (np.float32, np.float64):
        xd = x.astype(dtype)
        args = (xd, 3, 3, 2, 2, 1, 1, 1, 1, 4, 3)
        kernel_parity("pool", "maxpool2d_forward", *args, launch=launch_grid)
        kernel_parity("pool", "adaptive_maxpool2d_forward", xd, 3, 4, launch=launch_grid)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw", [(6, 8), (7, 9)])  # exact tiling / odd trailing row and column
def test_maxpool_2x2_fast_path_ties_nan_and_inf(dtype, hw):
    """The 2x2 stride-2 tournament of the NumPy twin keeps the scan's rules: first maximum on
    ties, the last NaN of a window wins, an all -inf window keeps its first pixel."""
    h, w = hw
    x = np.random.default_rng(31).integers(0, 3, (3, 2, h, w)).astype(dtype)
    x[0, 0, 0:2, 0:2] = -np.inf
    x[0, 1, 0, 1] = x[0, 1, 1, 0] = np.nan  # two NaNs in one window: (1, 0) is the argmax
    x[1, 0, 3, 3] = np.nan
    x[2, 1, 2, 4] = x[2, 1, 3, 5] = np.nan
    x[1, 1, 2:4, 2:4] = 2.0  # an all-equal window: its first pixel
    ry, ridx = ref_maxpool(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    y, idx = NP.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, 1, 1, h // 2, w // 2)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    assert idx[0, 1, 0, 0] == 1 * w + 0 and idx[1, 1, 1, 1] == 2 * w + 2
    torch = pytest.importorskip("torch")
    ty, ti = torch.nn.functional.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, ti.numpy())


def test_all_minus_inf_window_keeps_first_index():
    x = np.full((1, 1, 4, 4), -np.inf)
    y, idx = F.max_pool2d(Tensor(x), 2, return_indices=True)
    assert np.all(np.isneginf(y.numpy()))
    np.testing.assert_array_equal(idx.numpy()[0, 0], [[0, 2], [8, 10]])


@pytest.mark.parametrize("stride", [(4, 2), (4, 1)])  # non-overlapping / overlapping columns
def test_windows_without_input_pixels(kernel_parity, launch_grid, stride):
    # H=2, kernel 2 rows dilated by 3, padding 1: the only window row pair is (-1, 2), outside
    # the input. PyTorch outputs -inf with an out-of-plane index; no gradient flows from it.
    x = tie_free((1, 2, 2, 4), seed=28)
    xt = Tensor(x, requires_grad=True)
    # The op refuses such configs (issue 17: PyTorch's out-of-plane index crashed its backward);
    # the primitives still agree with each other on them.
    with pytest.raises(ValueError, match="lies entirely in the padding"):
        F.max_pool2d(xt, 2, stride, (1, 0), (3, 1), return_indices=True)
    from gpucnn.backend.numpy_ops import pool as npool

    oh, ow = 1, (4 - 2) // stride[1] + 1
    args = (x, 2, 2, stride[0], stride[1], 1, 0, 3, 1, oh, ow)
    y, idx = npool.maxpool2d_forward(*args)
    assert np.all(np.isneginf(y))
    kernel_parity("pool", "maxpool2d_forward", *args, launch=launch_grid)
    dy = np.ones(y.shape)
    bargs = (dy, idx, 2, 4, 2, 2, stride[0], stride[1], 1, 0, 3, 1)
    kernel_parity("pool", "maxpool2d_backward", *bargs, launch=launch_grid)


def test_avg_pool_nan_and_inf_stay_local():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0] = np.inf
    x[0, 0, 3, 3] = np.nan
    y = F.adaptive_avg_pool2d(Tensor(x), 2).numpy()[0, 0]
    assert np.isposinf(y[0, 0]) and np.isnan(y[1, 1]) and y[0, 1] == 0 and y[1, 0] == 0
    y = F.avg_pool2d(Tensor(x), 2).numpy()[0, 0]
    assert np.isposinf(y[0, 0]) and np.isnan(y[1, 1]) and y[0, 1] == 0 and y[1, 0] == 0


# --------------------------------------------------------------------------- layouts


def test_non_contiguous_input(emulator):
    base = tie_free((2, 7, 3, 6), seed=24)
    x = base.transpose(0, 2, 3, 1)[:, :, :, ::2]  # (2, 3, 6, 4), non-contiguous
    assert not x.flags.c_contiguous
    xc = np.ascontiguousarray(x)
    for fn in (
        lambda t: F.max_pool2d(t, 3, 2, 1, ceil_mode=True),
        lambda t: F.avg_pool2d(t, 2, 1, 1, count_include_pad=False),
        lambda t: F.adaptive_avg_pool2d(t, (4, 3)),
        lambda t: F.adaptive_max_pool2d(t, (4, 3)),
        lambda t: F.global_avg_pool2d(t),
        lambda t: F.global_max_pool2d(t),
    ):
        a, b = Tensor(x, requires_grad=True), Tensor(xc, requires_grad=True)
        ya, yb = fn(a), fn(b)
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        g = np.random.default_rng(0).standard_normal(ya.shape)
        ya.backward(g[..., ::-1].copy()[..., ::-1])  # a non-contiguous-born upstream grad
        yb.backward(g)
        np.testing.assert_array_equal(a.grad.numpy(), b.grad.numpy())
    # Kernel launchers accept strided views too (they make them contiguous before launch).
    with use_runtime(emulator.emulated_runtime()):
        y, arg = CP.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, 1, 1, 3, 2)
        dx = CP.maxpool2d_backward(
            np.ones((2, 3, 3, 2))[..., ::1], arg, 6, 4, 2, 2, 2, 2, 0, 0, 1, 1
        )
    y2, arg2 = NP.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, 1, 1, 3, 2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(arg, arg2)
    assert dx.sum() == y.size


def test_float32_stays_float32():
    x = Tensor(tie_free((1, 2, 6, 6)).astype(np.float32), requires_grad=True)
    outs = [
        F.max_pool2d(x, 2),
        F.avg_pool2d(x, 3, 2, 1),
        F.adaptive_avg_pool2d(x, 4),
        F.adaptive_max_pool2d(x, 4),
        F.global_avg_pool2d(x),
        F.global_max_pool2d(x),
    ]
    total = outs[0].sum()
    for o in outs:
        assert o.dtype == np.float32
        total = total + o.sum()
    total.backward()
    assert x.grad.dtype == np.float32


# --------------------------------------------------------------------------- errors


def test_errors_name_op_and_values():
    x4 = Tensor(np.zeros((1, 1, 4, 4), np.float32))
    x3 = Tensor(np.zeros((1, 4, 4), np.float32))
    x2 = Tensor(np.zeros((4, 4), np.float32))
    # The windowed pools take an unbatched (C, H, W) input as PyTorch does; a 2-D one is refused.
    for fn, name in [
        (lambda t: F.max_pool2d(t, 2), "max_pool2d"),
        (lambda t: F.avg_pool2d(t, 2), "avg_pool2d"),
        (lambda t: F.adaptive_avg_pool2d(t, 2), "adaptive_avg_pool2d"),
        (lambda t: F.adaptive_max_pool2d(t, 2), "adaptive_max_pool2d"),
    ]:
        assert fn(x3).shape == (1, 2, 2)
        with pytest.raises(
            ValueError, match=rf"{name}: expected a 3-D \(C, H, W\) or 4-D .*2-D.*\(4, 4\)"
        ):
            fn(x2)
    # The global pools (Keras's GlobalAveragePooling2D) take batches only.
    for fn, name in [
        (lambda t: F.global_avg_pool2d(t), "global_avg_pool2d"),
        (lambda t: F.global_max_pool2d(t), "global_max_pool2d"),
    ]:
        with pytest.raises(ValueError, match=rf"{name}: expected a 4-D .*3-D.*\(1, 4, 4\)"):
            fn(x3)
    with pytest.raises(
        ValueError,
        match=r"max_pool2d: padding .* got padding=\(2, 2\) for "
        r"kernel_size=\(3, 3\) \(expected padding <= \(1, 1\)\)",
    ):
        F.max_pool2d(x4, 3, padding=2)
    with pytest.raises(ValueError, match=r"avg_pool2d: padding .* half"):
        F.avg_pool2d(x4, (2, 4), padding=(2, 1))
    with pytest.raises(
        ValueError,
        match=r"max_pool2d: input spatial size \(4, 4\).*output size "
        r"would be \(0, 0\), expected >= 1",
    ):
        F.max_pool2d(x4, 6)
    with pytest.raises(ValueError, match=r"max_pool2d: .*dilated\) kernel \(5, 5\)"):
        F.max_pool2d(x4, 3, dilation=2)
    with pytest.raises(ValueError, match=r"avg_pool2d: input spatial size \(4, 4\)"):
        F.avg_pool2d(x4, (1, 5))
    with pytest.raises(ValueError, match=r"max_pool2d: stride must be >= 1, got \(0, 1\)"):
        F.max_pool2d(x4, 2, stride=(0, 1))
    with pytest.raises(ValueError, match=r"max_pool2d: kernel_size must be >= 1"):
        F.max_pool2d(x4, 0)
    with pytest.raises(ValueError, match=r"avg_pool2d: padding must be >= 0, got \(-1, -1\)"):
        F.avg_pool2d(x4, 2, padding=-1)
    # a wrong length or item type is a ValueError, a value that is no int nor sequence a
    # TypeError (gpucnn.backend.geometry.pair, shared by the whole package)
    with pytest.raises(
        ValueError, match=r"max_pool2d: kernel_size must be an int or a pair of ints, got \(2, 2, "
    ):
        F.max_pool2d(x4, (2, 2, 2))
    with pytest.raises(ValueError, match=r"max_pool2d: dilation must be an int or a pair.*1.5"):
        F.max_pool2d(x4, 2, dilation=(1.5, 1))
    with pytest.raises(ValueError, match=r"avg_pool2d: stride must be an int or a pair.*True"):
        F.avg_pool2d(x4, 2, stride=(True, 1))
    with pytest.raises(TypeError, match=r"max_pool2d: kernel_size must be an int or a pair.*2.0"):
        F.max_pool2d(x4, 2.0)
    with pytest.raises(TypeError, match=r"avg_pool2d: stride must be an int or a pair.*True"):
        F.avg_pool2d(x4, 2, stride=True)
    with pytest.raises(ValueError, match=r"avg_pool2d: divisor_override must be >= 1, got 0"):
        F.avg_pool2d(x4, 2, divisor_override=0)
    with pytest.raises(
        ValueError,
        match=r"adaptive_avg_pool2d: output size must be >= 1 in each "
        r"dim, got \(0, 2\)",
    ):
        F.adaptive_avg_pool2d(x4, (0, 2))
    with pytest.raises(ValueError, match=r"adaptive_max_pool2d: output size must be >= 1"):
        F.adaptive_max_pool2d(x4, -1)
    with pytest.raises(
        ValueError,
        match=r"adaptive_avg_pool2d: output_size must be an int or a "
        r"pair",
    ):
        F.adaptive_avg_pool2d(x4, (1, 2, 3))
    with pytest.raises(TypeError, match=r"max_pool2d: expected a floating-point input"):
        F.max_pool2d(Tensor(np.zeros((1, 1, 4, 4), np.int64)), 2)


def test_padding_rule_matches_torch():
    torch = pytest.importorskip("torch")
    for k, p in [(3, 1), (3, 2), (2, 1), (4, 2), (4, 3), (1, 1)]:
        x = np.zeros((1, 1, 8, 8), np.float32)
        try:
            torch.nn.functional.max_pool2d(torch.tensor(x), k, 1, p)
            torch_ok = True
        except RuntimeError:
            torch_ok = False
        try:
            F.max_pool2d(Tensor(x), k, 1, p)
            ours_ok = True
        except ValueError:
            ours_ok = False
        assert ours_ok == torch_ok, (k, p)


def test_stride_defaults_to_kernel():
    x = Tensor(tie_free((1, 1, 6, 9)))
    assert F.max_pool2d(x, (2, 3)).shape == (1, 1, 3, 3)
    assert F.max_pool2d(x, (2, 3), stride=()).shape == (1, 1, 3, 3)
    assert F.avg_pool2d(x, 3).shape == (1, 1, 2, 3)
    # one-item sequences stand for both dims (as in PyTorch); NumPy ints are ints
    assert F.max_pool2d(x, (3,), stride=[np.int64(3)]).shape == (1, 1, 2, 3)
    assert F.avg_pool2d(x, np.int32(2), padding=(1,)).shape == (1, 1, 4, 5)


# --------------------------------------------------------------------------- backends


def test_both_backends_expose_the_same_pool_primitives():
    assert NP.__all__ == CP.__all__
    for name in NP.__all__:
        assert list(inspect.signature(getattr(NP, name)).parameters) == list(
            inspect.signature(getattr(CP, name)).parameters
        ), name
    assert numpy_ops.__name__ and cuda_ops.__name__


@pytest.mark.gpu
def test_cuda_matches_numpy():
    cu = B.get_backend("cuda")
    rng = np.random.default_rng(25)
    for dtype in (np.float32, np.float64):
        x = tie_free((4, 5, 17, 13), seed=26).astype(dtype)
        calls = [
            lambda t: F.max_pool2d(t, 3, 2, 1, ceil_mode=True),
            lambda t: F.max_pool2d(t, (2, 3), (1, 2), (1, 0), dilation=(2, 1)),
            lambda t: F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False),
            lambda t: F.avg_pool2d(t, 2, divisor_override=3),
            lambda t: F.adaptive_avg_pool2d(t, (5, 7)),
            lambda t: F.adaptive_max_pool2d(t, (5, 20)),
            lambda t: F.global_avg_pool2d(t),
            lambda t: F.global_max_pool2d(t),
        ]
        for fn in calls:
            a = Tensor(x, requires_grad=True)
            b = Tensor(cu.asarray(x), requires_grad=True)
            ya, yb = fn(a), fn(b)
            g = rng.standard_normal(ya.shape).astype(dtype)
            ya.backward(g)
            yb.backward(cu.asarray(g))
            tol = 1e-5 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(yb.numpy(), ya.numpy(), rtol=tol, atol=tol)
            np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=tol, atol=tol)
