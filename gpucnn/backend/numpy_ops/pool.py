"""Pooling primitives on NumPy: the vectorised twins of the kernels in ``cuda/pool2d.cu``.

Layout NCHW, PyTorch semantics. Output sizes are computed by the caller (see
:mod:`gpucnn.functional.pool`) and passed in, so the primitives do no argument checking.
Argmax arrays are int64 holding the flat index ``h*W + w`` inside the input plane (PyTorch's
``return_indices``). Every loop here runs over kernel offsets or bin offsets, never over
pixels or windows: each step is one strided (or gathered) view of the whole batch.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "maxpool2d_forward",
    "maxpool2d_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
    "adaptive_avgpool2d_forward",
    "adaptive_avgpool2d_backward",
    "adaptive_maxpool2d_forward",
    "adaptive_maxpool2d_backward",
]


def _pads(size: int, out: int, k: int, s: int, p: int, d: int) -> tuple[int, int]:
    """(before, after) padding so that every window of the ``out`` windows lies inside."""
    after = max(0, (out - 1) * s - p + (k - 1) * d + 1 - size)
    return p, after


def _padded(x: np.ndarray, pads_h: tuple[int, int], pads_w: tuple[int, int], fill: float):
    """``x`` padded on H and W with ``fill`` (``x`` itself when no padding is needed)."""
    if pads_h == (0, 0) and pads_w == (0, 0):
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + sum(pads_h), w + sum(pads_w)), fill, dtype=x.dtype)
    out[:, :, pads_h[0] : pads_h[0] + h, pads_w[0] : pads_w[0] + w] = x
    return out


def _window_view(xp: np.ndarray, i0: int, j0: int, oh: int, ow: int, sh: int, sw: int):
    """Strided view ``xp[:, :, i0 + y*sh, j0 + x*sw]`` of shape (N, C, oh, ow)."""
    return xp[:, :, i0 : i0 + (oh - 1) * sh + 1 : sh, j0 : j0 + (ow - 1) * sw + 1 : sw]


def _first_inside(start: np.ndarray, step: int) -> np.ndarray:
    """Smallest non-negative ``start + k*step`` (k >= 0), elementwise."""
    neg = np.maximum(-start, 0)
    return start + (-(-neg // step)) * step


# --------------------------------------------------------------------------- max pooling


def _offset_deltas(kh: int, kw: int, dh: int, dw: int, w: int) -> np.ndarray:
    """Flat in-plane offset ``i*dh*W + j*dw`` of kernel cell ``k = i*kw + j`` (int64, kh*kw)."""
    i, j = np.divmod(np.arange(kh * kw, dtype=np.int64), kw)
    return i * dh * w + j * dw


def maxpool2d_forward(
    x: np.ndarray,
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
) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling of ``x`` (N, C, H, W) → ``(y (N, C, oh, ow), argmax int64 (N, C, oh, ow))``.

    Window ``(y, x)`` covers rows ``y*sh - ph + i*dh`` (i < kh) and columns ``x*sw - pw + j*dw``;
    positions outside the input are ignored. The first maximum in row-major order wins; a NaN
    is the maximum (the last NaN seen), as in PyTorch. ``argmax`` is ``h*W + w`` in the plane.
    Kernel twin: ``maxpool2d_fwd_f32/f64`` in ``cuda/pool2d.cu``.
    """
    n, c, h, w = x.shape
    if (kh, kw, sh, sw, ph, pw, dh, dw) == (2, 2, 2, 2, 0, 0, 1, 1) and (
        2 * oh <= h and 2 * ow <= w
    ):  # ceil_mode with an odd H or W has a last window past the edge: the generic scan
        return _maxpool2x2(x, oh, ow)
    pads_h = _pads(h, oh, kh, sh, ph, dh)
    pads_w = _pads(w, ow, kw, sw, pw, dw)
    xp = _padded(x, pads_h, pads_w, -np.inf)
    hs = np.arange(oh, dtype=np.int64) * sh - ph
    ws = np.arange(ow, dtype=np.int64) * sw - pw
    # Offset (i, j) of the first in-bounds position of each window: PyTorch's initial argmax.
    i0 = (_first_inside(hs, dh) - hs) // dh
    j0 = (_first_inside(ws, dw) - ws) // dw
    kdt = np.int16 if kh * kw < 2**15 else np.int32
    off = np.empty((n, c, oh, ow), dtype=kdt)
    off[...] = (i0[:, None] * kw + j0[None, :]).astype(kdt)
    best = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    upd = np.empty((n, c, oh, ow), dtype=bool)
    step = np.empty((n, c, oh, ow), dtype=kdt)
    for i in range(kh):
        for j in range(kw):
            v = _window_view(xp, i * dh, j * dw, oh, ow, sh, sw)
            np.greater(v, best, out=upd)
            # off = k where upd, as arithmetic: off += (k - off) * upd. A masked copy
            # (np.copyto where=) branches per element and is slow on random masks.
            np.subtract(kdt(i * kw + j), off, out=step)
            np.multiply(step, upd, out=step)
            off += step
            np.maximum(best, v, out=best)  # NaN propagates into the value
    nan_out = np.isnan(best)
    if nan_out.any():
        # A NaN is the maximum and the last NaN of the scan is the argmax (PyTorch's rule).
        for i in range(kh):
            for j in range(kw):
                v = _window_view(xp, i * dh, j * dw, oh, ow, sh, sw)
                np.copyto(off, kdt(i * kw + j), where=np.isnan(v))
    # argmax = (window origin h*W + w) + (offset of kernel cell k inside the plane)
    delta = _offset_deltas(kh, kw, dh, dw, w)
    argmax = np.take(delta, off)
    argmax += hs[:, None] * w + ws[None, :]
    return best, argmax


def _maxpool2x2(x: np.ndarray, oh: int, ow: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`maxpool2d_forward` for 2x2 windows, stride 2, no padding, every window inside
    the input (``2*oh <= H`` and ``2*ow <= W``; not ``ceil_mode`` on an odd size): a tournament.

    Cells a b / c d of each window: the row winners (``b > a``, ``d > c``), then the rows
    (``bottom > top``); strict comparisons keep the first maximum in row-major order, as the
    generic scan. NaN values propagate through ``np.maximum``; their argmax is fixed up after.
    """
    n, c, h, w = x.shape
    r, s = 2 * oh, 2 * ow  # odd trailing rows/columns belong to no window
    a, b = x[:, :, 0:r:2, 0:s:2], x[:, :, 0:r:2, 1:s:2]
    cc, d = x[:, :, 1:r:2, 0:s:2], x[:, :, 1:r:2, 1:s:2]
    top, bottom = np.maximum(a, b), np.maximum(cc, d)
    right_top, right_bottom = np.greater(b, a), np.greater(d, cc)
    down = np.greater(bottom, top)
    right = right_top ^ (down & (right_top ^ right_bottom))  # select by ``down``, no branch
    best = np.maximum(top, bottom, out=top)
    origin = (np.arange(0, r, 2)[:, None] * w + np.arange(0, s, 2)[None, :]).astype(np.int64)
    argmax = np.multiply(down, w, dtype=np.int64)
    argmax += right
    argmax += origin
    if np.isnan(best).any():
        # A NaN is the maximum and the last NaN in row-major order is the argmax (PyTorch).
        for v, delta in ((a, 0), (b, 1), (cc, w), (d, w + 1)):
            np.copyto(argmax, origin + delta, where=np.isnan(v))
    return best, argmax


def maxpool2d_backward(
    dy: np.ndarray,
    argmax: np.ndarray,
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
) -> np.ndarray:
    """Gradient of :func:`maxpool2d_forward`: ``dy`` (N, C, oh, ow) routed to each argmax.

    Returns ``dx`` (N, C, h, w). Non-overlapping windows (stride >= dilated kernel): one
    scatter. Otherwise, for each kernel offset (i, j) in row-major order, the windows whose
    argmax sits at that offset add their ``dy`` to it (the kernel's gather order).
    Kernel twin: ``maxpool2d_bwd_f32/f64``.
    """
    n, c, oh, ow = dy.shape
    if sh >= (kh - 1) * dh + 1 and sw >= (kw - 1) * dw + 1:
        # Windows do not overlap: every pixel gets at most one gradient, so scatter directly.
        dx = np.zeros(n * c * h * w, dtype=dy.dtype)
        flat = argmax.reshape(n * c, oh * ow)
        inside = flat < h * w  # windows without an input pixel keep an out-of-plane index
        flat = flat + np.arange(n * c, dtype=np.int64)[:, None] * (h * w)
        g = dy.reshape(n * c, oh * ow)
        if inside.all():
            dx[flat.ravel()] = g.ravel()
        else:
            dx[flat[inside]] = g[inside]
        return dx.reshape(n, c, h, w)
    pads_h = _pads(h, oh, kh, sh, ph, dh)
    pads_w = _pads(w, ow, kw, sw, pw, dw)
    hp, wp = h + sum(pads_h), w + sum(pads_w)
    dxp = np.zeros((n, c, hp, wp), dtype=dy.dtype)
    hs = np.arange(oh, dtype=np.int64) * sh - ph
    ws = np.arange(ow, dtype=np.int64) * sw - pw
    # Position of each argmax relative to its window origin, compared per kernel cell below.
    rdt = np.int32 if (h + 2 * kh * dh) * (w + 2 * kw * dw) < 2**31 else np.int64
    rel = (argmax - (hs[:, None] * w + ws[None, :])).astype(rdt)
    delta = _offset_deltas(kh, kw, dh, dw, w).astype(rdt)
    hit = np.empty((n, c, oh, ow), dtype=bool)
    for i in range(kh):
        rows = hs + i * dh
        rows_ok = (rows >= 0) & (rows < h)
        for j in range(kw):
            cols = ws + j * dw
            cols_ok = (cols >= 0) & (cols < w)
            np.equal(rel, delta[i * kw + j], out=hit)
            inside = rows_ok[:, None] & cols_ok[None, :]
            if not inside.all():  # a cell in the padding can alias an in-bounds index
                hit &= inside
            if not hit.any():
                continue
            view = _window_view(dxp, i * dh, j * dw, oh, ow, sh, sw)
            np.add(view, dy, out=view, where=hit)
    if hp == h and wp == w:
        return dxp
    return np.ascontiguousarray(dxp[:, :, ph : ph + h, pw : pw + w])


# --------------------------------------------------------------------------- average pooling


def _avg_divisor(
    h: int,
    w: int,
    oh: int,
    ow: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    count_include_pad: bool,
    divisor_override: int,
) -> np.ndarray:
    """PyTorch's average-pooling divisor per window, shape (oh, ow) (int64)."""
    if divisor_override > 0:
        return np.full((oh, ow), divisor_override, dtype=np.int64)
    hs = np.arange(oh, dtype=np.int64) * sh - ph
    ws = np.arange(ow, dtype=np.int64) * sw - pw
    if count_include_pad:
        rh = np.minimum(hs + kh, h + ph) - hs
        rw = np.minimum(ws + kw, w + pw) - ws
    else:
        rh = np.minimum(hs + kh, h) - np.maximum(hs, 0)
        rw = np.minimum(ws + kw, w) - np.maximum(ws, 0)
    return rh[:, None] * rw[None, :]


def _avg_empty(
    h: int, w: int, oh: int, ow: int, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int
) -> np.ndarray:
    """Windows with no input pixel inside, shape (oh, ow) bool."""
    hs = np.arange(oh, dtype=np.int64) * sh - ph
    ws = np.arange(ow, dtype=np.int64) * sw - pw
    eh = np.minimum(hs + kh, h) <= np.maximum(hs, 0)
    ew = np.minimum(ws + kw, w) <= np.maximum(ws, 0)
    return eh[:, None] | ew[None, :]


def avgpool2d_forward(
    x: np.ndarray,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    oh: int,
    ow: int,
    count_include_pad: bool,
    divisor_override: int,
) -> np.ndarray:
    """Average pooling of ``x`` (N, C, H, W) → (N, C, oh, ow), PyTorch's divisor rules.

    The sum runs over the window clipped to the input; the divisor is ``divisor_override`` when
    > 0, else the window clipped to the padded input (``count_include_pad``) or to the input.
    Kernel twin: ``avgpool2d_fwd_f32/f64``.
    """
    n, c, h, w = x.shape
    pads_h = _pads(h, oh, kh, sh, ph, 1)
    pads_w = _pads(w, ow, kw, sw, pw, 1)
    xp = _padded(x, pads_h, pads_w, 0.0)
    acc = np.zeros((n, c, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            acc += _window_view(xp, i, j, oh, ow, sh, sw)
    div = _avg_divisor(h, w, oh, ow, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override)
    empty = _avg_empty(h, w, oh, ow, kh, kw, sh, sw, ph, pw)
    if empty.any():
        div = np.where(empty, 1, div)
        acc[:, :, empty] = 0
    acc /= div.astype(x.dtype)
    return acc


def avgpool2d_backward(
    dy: np.ndarray,
    h: int,
    w: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    count_include_pad: bool,
    divisor_override: int,
) -> np.ndarray:
    """Gradient of :func:`avgpool2d_forward`: ``dx`` (N, C, h, w) from ``dy`` (N, C, oh, ow).

    Each window spreads ``dy / divisor`` over its pixels inside the input.
    Kernel twin: ``avgpool2d_bwd_f32/f64``.
    """
    n, c, oh, ow = dy.shape
    pads_h = _pads(h, oh, kh, sh, ph, 1)
    pads_w = _pads(w, ow, kw, sw, pw, 1)
    hp, wp = h + sum(pads_h), w + sum(pads_w)
    div = _avg_divisor(h, w, oh, ow, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override)
    g = dy / np.maximum(div, 1).astype(dy.dtype)
    dxp = np.zeros((n, c, hp, wp), dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            view = _window_view(dxp, i, j, oh, ow, sh, sw)
            view += g
    if hp == h and wp == w:
        return dxp
    return np.ascontiguousarray(dxp[:, :, ph : ph + h, pw : pw + w])


# --------------------------------------------------------------------------- adaptive pooling


def _bins(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's adaptive bins of an axis of length ``n`` split into ``m``: (start, end)."""
    i = np.arange(m, dtype=np.int64)
    return (i * n) // m, -((-(i + 1) * n) // m)


def adaptive_avgpool2d_forward(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Adaptive average pooling of ``x`` (N, C, H, W) → (N, C, oh, ow).

    Bin ``i`` of an axis of length ``n`` covers ``[floor(i*n/m), ceil((i+1)*n/m))``. Separable:
    sums over column bins, then over row bins; each step gathers one offset inside the bins
    for every bin at once (offsets past a bin's end are masked to 0, so NaN/inf stay local).
    Kernel twin: ``adaptive_avgpool2d_fwd_f32/f64``.
    """
    n, c, h, w = x.shape
    hs, he = _bins(h, oh)
    ws, we = _bins(w, ow)
    zero = x.dtype.type(0)
    t = np.zeros((n, c, h, ow), dtype=x.dtype)
    for j in range(int((we - ws).max())):
        cols = ws + j
        ok = cols < we
        t += np.where(ok, x[:, :, :, np.minimum(cols, w - 1)], zero)
    y = np.zeros((n, c, oh, ow), dtype=x.dtype)
    for i in range(int((he - hs).max())):
        rows = hs + i
        ok = rows < he
        y += np.where(ok[:, None], t[:, :, np.minimum(rows, h - 1), :], zero)
    y /= ((he - hs)[:, None] * (we - ws)[None, :]).astype(x.dtype)
    return y


def adaptive_avgpool2d_backward(dy: np.ndarray, h: int, w: int) -> np.ndarray:
    """Gradient of :func:`adaptive_avgpool2d_forward`: ``dx`` (N, C, h, w) from ``dy``.

    ``dx = Mh^T (dy / size) Mw`` with 0/1 bin-membership matrices (two batched GEMMs).
    Kernel twin: ``adaptive_avgpool2d_bwd_f32/f64``.
    """
    n, c, oh, ow = dy.shape
    hs, he = _bins(h, oh)
    ws, we = _bins(w, ow)
    rh = np.arange(h)
    rw = np.arange(w)
    mh = ((rh[None, :] >= hs[:, None]) & (rh[None, :] < he[:, None])).astype(dy.dtype)
    mw = ((rw[None, :] >= ws[:, None]) & (rw[None, :] < we[:, None])).astype(dy.dtype)
    g = dy / ((he - hs)[:, None] * (we - ws)[None, :]).astype(dy.dtype)
    t = np.matmul(g.reshape(n * c * oh, ow), mw).reshape(n * c, oh, w)  # (NC, oh, W)
    dx = np.matmul(mh.T, t)  # (NC, H, W)
    return np.ascontiguousarray(dx.reshape(n, c, h, w))


def adaptive_maxpool2d_forward(x: np.ndarray, oh: int, ow: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive max pooling of ``x`` (N, C, H, W) → ``(y, argmax int64)``, both (N, C, oh, ow).

    Same bins as :func:`adaptive_avgpool2d_forward`; the first maximum in row-major order wins
    and NaN is the maximum (the last NaN seen), as PyTorch. Separable: a max over column bins
    (keeping the column), then over row bins; offsets past a bin's end repeat its last element,
    which changes neither the value nor the winner. Kernel twin: ``adaptive_maxpool2d_fwd_*``.
    """
    n, c, h, w = x.shape
    hs, he = _bins(h, oh)
    ws, we = _bins(w, ow)
    m1 = np.full((n, c, h, ow), -np.inf, dtype=x.dtype)
    c1 = np.empty((n, c, h, ow), dtype=np.int64)
    c1[...] = ws
    for j in range(int((we - ws).max())):
        cols = np.minimum(ws + j, we - 1)
        v = x[:, :, :, cols]
        upd = (v > m1) | (v != v)
        np.copyto(m1, v, where=upd)
        np.copyto(c1, cols, where=upd)
    y = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    r2 = np.empty((n, c, oh, ow), dtype=np.int64)
    r2[...] = hs[:, None]
    c2 = np.empty((n, c, oh, ow), dtype=np.int64)
    c2[...] = ws[None, :]
    for i in range(int((he - hs).max())):
        rows = np.minimum(hs + i, he - 1)
        v = m1[:, :, rows, :]
        upd = (v > y) | (v != v)
        np.copyto(y, v, where=upd)
        np.copyto(r2, rows[:, None], where=upd)
        np.copyto(c2, c1[:, :, rows, :], where=upd)
    return y, r2 * w + c2


def adaptive_maxpool2d_backward(dy: np.ndarray, argmax: np.ndarray, h: int, w: int) -> np.ndarray:
    """Gradient of :func:`adaptive_maxpool2d_forward`: ``dy`` summed into each argmax.

    Returns ``dx`` (N, C, h, w). One ``bincount`` over plane offset + argmax (accumulated in
    float64, outputs in row-major order). Kernel twin: ``adaptive_maxpool2d_bwd_f32/f64``.
    """
    n, c, oh, ow = dy.shape
    planes = np.arange(n * c, dtype=np.int64)[:, None] * (h * w)
    flat = (argmax.reshape(n * c, oh * ow) + planes).ravel()
    dx = np.bincount(flat, weights=dy.reshape(-1), minlength=n * c * h * w)
    return dx.astype(dy.dtype, copy=False).reshape(n, c, h, w)
