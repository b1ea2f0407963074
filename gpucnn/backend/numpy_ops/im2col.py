"""NumPy twins of ``cuda/im2col.cu``: im2col and col2im for 2-D convolution (NCHW).

Layout (both backends): ``x`` is ``(N, C, H, W)``; ``cols`` is ``(N, C*kh*kw, oh*ow)`` with
``cols[n, (c*kh + i)*kw + j, y*ow + x] = x[n, c, y*sh - ph + i*dh, x*sw - pw + j*dw]``, zero
where that pixel lies outside the image. ``ph``/``pw`` are the top/left padding; the caller
chooses ``oh``/``ow``, which expresses any bottom/right padding.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["im2col", "col2im"]

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
) -> dict[str, int]:
    """Validate im2col arguments (shared by both backends); returns the sizes as ints."""
    if getattr(x, "ndim", None) != 4:
        raise ValueError(
            f"im2col: expected x of shape (N, C, H, W), got shape {getattr(x, 'shape', None)}"
        )
    _check_dtype("im2col", x.dtype)
    g = _check_geometry(
        "im2col", kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw, dh=dh, dw=dw, oh=oh, ow=ow
    )
    N, C, H, W = (int(s) for s in x.shape)
    if min(C, H, W) < 1 or max(C, H, W) > _INT32_MAX:
        raise ValueError(f"im2col: x shape {tuple(x.shape)} must have C, H, W >= 1")
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
) -> dict[str, int]:
    """Validate col2im arguments (shared by both backends); returns the sizes as ints."""
    g = _check_geometry(
        "col2im",
        n=n,
        c=c,
        h=h,
        w=w,
        kh=kh,
        kw=kw,
        sh=sh,
        sw=sw,
        ph=ph,
        pw=pw,
        dh=dh,
        dw=dw,
        oh=oh,
        ow=ow,
    )
    expected = (g["n"], g["c"] * g["kh"] * g["kw"], g["oh"] * g["ow"])
    shape = tuple(int(s) for s in getattr(cols, "shape", ()))
    if shape != expected:
        raise ValueError(
            f"col2im: expected cols of shape (N, C*kh*kw, oh*ow) = {expected}, got {shape}"
        )
    _check_dtype("col2im", cols.dtype)
    return g


def _padded_extent(size: int, pad: int, k: int, s: int, d: int, o: int) -> int:
    """Padded length covering both the image and every window the output reads."""
    return max(size + pad, (o - 1) * s + (k - 1) * d + 1)


def im2col(
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
) -> np.ndarray:
    """Columns ``(N, C*kh*kw, oh*ow)`` of ``x (N, C, H, W)`` (see the module docstring)."""
    g = check_im2col_args(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    N, C, H, W = g["N"], g["C"], g["H"], g["W"]
    kh, kw, sh, sw, ph, pw = g["kh"], g["kw"], g["sh"], g["sw"], g["ph"], g["pw"]
    dh, dw, oh, ow = g["dh"], g["dw"], g["oh"], g["ow"]
    Hp = _padded_extent(H, ph, kh, sh, dh, oh)
    Wp = _padded_extent(W, pw, kw, sw, dw, ow)
    xp = np.zeros((N, C, Hp, Wp), dtype=x.dtype)
    xp[:, :, ph : ph + H, pw : pw + W] = x
    s0, s1, s2, s3 = xp.strides
    view = as_strided(
        xp,
        shape=(N, C, kh, kw, oh, ow),
        strides=(s0, s1, s2 * dh, s3 * dw, s2 * sh, s3 * sw),
        writeable=False,
    )
    return np.ascontiguousarray(view).reshape(N, C * kh * kw, oh * ow)


def col2im(
    cols: np.ndarray,
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
) -> np.ndarray:
    """The adjoint of :func:`im2col`: ``x (N, C, H, W)`` summing every entry taken from a pixel."""
    g = check_col2im_args(cols, n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    n, c, h, w = g["n"], g["c"], g["h"], g["w"]
    kh, kw, sh, sw, ph, pw = g["kh"], g["kw"], g["sh"], g["sw"], g["ph"], g["pw"]
    dh, dw, oh, ow = g["dh"], g["dw"], g["oh"], g["ow"]
    Hp = _padded_extent(h, ph, kh, sh, dh, oh)
    Wp = _padded_extent(w, pw, kw, sw, dw, ow)
    xp = np.zeros((n, c, Hp, Wp), dtype=cols.dtype)
    c6 = cols.reshape(n, c, kh, kw, oh, ow)
    for i in range(kh):
        y0 = i * dh
        for j in range(kw):
            x0 = j * dw
            xp[:, :, y0 : y0 + sh * (oh - 1) + 1 : sh, x0 : x0 + sw * (ow - 1) + 1 : sw] += c6[
                :, :, i, j
            ]
    return np.ascontiguousarray(xp[:, :, ph : ph + h, pw : pw + w])
