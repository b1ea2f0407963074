"""NumPy twins of ``cuda/im2col.cu``: im2col and col2im for 2-D convolution (NCHW).

Layout (both backends): ``x`` is ``(N, C, H, W)``; ``cols`` is ``(N, C*kh*kw, oh*ow)`` with
``cols[n, (c*kh + i)*kw + j, y*ow + x] = x[n, c, y*sh - ph + i*dh, x*sw - pw + j*dw]``, zero
where that pixel lies outside the image. ``ph``/``pw`` are the top/left padding; the caller
chooses ``oh``/``ow``, which expresses any bottom/right padding.

The "batch-in-columns" variants :func:`im2col_cn` / :func:`col2im_cn` hold the same entries as
one 2-D matrix ``cols2 (C*kh*kw, N*oh*ow)``, ``cols2[r, n*oh*ow + l] = cols[n, r, l]``: the
convolution GEMMs of the CUDA backend are then plain 2-D products (see
:mod:`gpucnn.backend.cuda_ops.conv`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from gpucnn.backend.geometry import check_col2im_args, check_col2im_cn_args, check_im2col_args

__all__ = ["im2col", "col2im", "im2col_cn", "col2im_cn"]

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


def im2col_cn(
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
    """Batch-in-columns columns ``(C*kh*kw, N*oh*ow)`` of ``x (N, C, H, W)``: :func:`im2col`
    with the batch moved into the columns (column ``n*oh*ow + y*ow + x``)."""
    check_im2col_args(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, op="im2col_cn")
    cols = im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    n, ck, L = cols.shape
    return np.ascontiguousarray(cols.transpose(1, 0, 2)).reshape(ck, n * L)


def col2im_cn(
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
    """The adjoint of :func:`im2col_cn`: ``x (N, C, H, W)`` from ``cols (C*kh*kw, N*oh*ow)``."""
    g = check_col2im_cn_args(cols, n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    ck, L = cols.shape[0], g["oh"] * g["ow"]
    per_sample = cols.reshape(ck, g["n"], L).transpose(1, 0, 2)
    return col2im(per_sample, n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)


# --------------------------------------------------------------------------------------------
# NumPy-only "frame" (wide) layout, used by the NumPy convolution routes (numpy_ops/conv/).
#
# The generic im2col above copies runs of only ``ow`` elements (one output row), which makes
# NumPy's copy loop the bottleneck. The frame layout makes every copy a run of ``oh*Wq``
# elements:
#
# * the zero-padded input is split into phase images (polyphase decomposition), so a strided
#   convolution becomes a stride-1 one on each phase: padded row ``y*sh + i*dh`` is row
#   ``y + (i*dh)//sh`` of row phase ``(i*dh) % sh`` (the same for columns);
# * each phase image of sample n, channel c is a flat "frame" of ``Hq+1`` rows of ``Wq``
#   elements, ``Hq = oh + ((kh-1)*dh)//sh``, ``Wq = ow + ((kw-1)*dw)//sw`` (the extra zero row
#   absorbs the reads past the last row, see below). Frames array: ``(Pr, Pc, N, C, (Hq+1)*Wq)``
#   for the ``Pr x Pc`` phases the kernel uses (N before C: filling it is a plain padded copy);
# * the columns of kernel offset (i, j) are then ONE slice ``frame[off : off + oh*Wq]`` with
#   ``off = ((i*dh)//sh)*Wq + (j*dw)//sw``: an ``oh x Wq`` block whose last ``Wq - ow``
#   columns are garbage (they read the next row's left edge or the zero row). GEMMs run on
#   these wide columns and the caller drops the garbage columns from the result.
#
# Wide cols layout: ``(C*kh*kw, nb*oh*Wq)`` for samples ``n0:n0+nb``, row ``(c*kh + i)*kw + j``
# (as im2col, so weight reshapes are unchanged), column ``(n*oh + y)*Wq + x``; real outputs are
# the ``x < ow``. Putting the samples in the columns makes each GEMM one (O, Ck) @ (Ck, nb*oh*Wq)
# product; building them per chunk of samples keeps the columns in cache (conv.py never
# materialises all of them).
# --------------------------------------------------------------------------------------------


class _FrameGeometry:
    """Frame layout of one convolution geometry (same arguments as :func:`col2im`).

    Attributes: ``hq``, ``wq`` (frame rows without the zero row, and row length), ``run``
    (``oh*Wq``: columns per sample), ``rows_ph``/``cols_ph`` (used phases), and per phase where
    the image lies in its frame (``_rspans``/``_cspans``: ``(a0, a1, r0, count)``: frame rows
    ``a0:a1`` hold image rows ``r0, r0+sh, ...``).
    """

    def __init__(
        self,
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
    ) -> None:
        self.n, self.c, self.h, self.w = n, c, h, w
        self.kh, self.kw, self.sh, self.sw, self.dh, self.dw = kh, kw, sh, sw, dh, dw
        self.oh, self.ow = oh, ow
        self.hq = oh + ((kh - 1) * dh) // sh
        self.wq = ow + ((kw - 1) * dw) // sw
        self.run = oh * self.wq
        self.rows_ph = sorted({(i * dh) % sh for i in range(kh)})
        self.cols_ph = sorted({(j * dw) % sw for j in range(kw)})
        self._rspans = [self._span(h, ph, sh, p, self.hq) for p in self.rows_ph]
        self._cspans = [self._span(w, pw, sw, p, self.wq) for p in self.cols_ph]
        # kernel offset (i, j) -> (row phase index, column phase index, flat offset)
        self.offsets = [
            (
                self.rows_ph.index((i * dh) % sh),
                self.cols_ph.index((j * dw) % sw),
                ((i * dh) // sh) * self.wq + (j * dw) // sw,
            )
            for i in range(kh)
            for j in range(kw)
        ]

    @staticmethod
    def _span(size: int, pad: int, s: int, p: int, frame: int) -> tuple[int, int, int, int]:
        # frame index a holds image index a*s + p - pad; keep 0 <= that < size and a < frame
        a0 = max(0, -((p - pad) // s))  # ceil((pad - p) / s), clipped at 0
        count = max(0, min(frame, (size + pad - p + s - 1) // s) - a0)
        return a0, a0 + count, a0 * s + p - pad, count

    def _pairs(self):  # noqa: ANN202 - (frame view slices, image slices) per used phase
        for a, (a0, a1, r0, rn) in enumerate(self._rspans):
            for b, (b0, b1, c0, cn) in enumerate(self._cspans):
                if rn and cn:
                    rows = slice(r0, r0 + (rn - 1) * self.sh + 1, self.sh)
                    cols = slice(c0, c0 + (cn - 1) * self.sw + 1, self.sw)
                    yield a, b, slice(a0, a1), slice(b0, b1), rows, cols

    def new_frames(self, dtype: Any) -> np.ndarray:
        """Zero frames ``(Pr, Pc, N, C, (Hq+1)*Wq)``."""
        shape = (len(self.rows_ph), len(self.cols_ph), self.n, self.c, (self.hq + 1) * self.wq)
        return np.zeros(shape, dtype=dtype)

    def to_frames(self, x: np.ndarray) -> np.ndarray:
        """Frames of ``x (N, C, H, W)``: the zero-padded image split into phases."""
        frames = self.new_frames(x.dtype)
        f6 = frames.reshape(frames.shape[:4] + (self.hq + 1, self.wq))
        for a, b, fr, fc, rows, cols in self._pairs():
            f6[a, b, :, :, fr, fc] = x[:, :, rows, cols]
        return frames

    def from_frames(self, frames: np.ndarray) -> np.ndarray:
        """``x (N, C, H, W)`` read back from frames; pixels no window reaches are zero."""
        f6 = frames.reshape(frames.shape[:4] + (self.hq + 1, self.wq))
        x = np.zeros((self.n, self.c, self.h, self.w), dtype=frames.dtype)
        for a, b, fr, fc, rows, cols in self._pairs():
            x[:, :, rows, cols] = f6[a, b, :, :, fr, fc]
        return x

    def cols(self, frames: np.ndarray, n0: int, n1: int, out: np.ndarray | None = None) -> Any:
        """Wide columns ``(C*kh*kw, (n1-n0)*run)`` of samples ``n0:n1`` (into ``out`` if given,
        a C-contiguous buffer of at least that size)."""
        nb, run = n1 - n0, self.run
        size = self.c * self.kh * self.kw * nb * run
        buf = np.empty(size, frames.dtype) if out is None else out.reshape(-1)[:size]
        c4 = buf.reshape(self.c, self.kh * self.kw, nb, run)
        for k, (a, b, off) in enumerate(self.offsets):
            c4[:, k] = frames[a, b, n0:n1, :, off : off + run].transpose(1, 0, 2)
        return buf.reshape(-1, nb * run)

    def scatter_add(self, dcols: np.ndarray, dframes: np.ndarray, n0: int, n1: int) -> None:
        """Adjoint of :meth:`cols`: add ``dcols (C*kh*kw, (n1-n0)*run)`` into ``dframes``.

        The garbage columns (``x >= ow``) of ``dcols`` MUST be zero: they land on real pixels.
        """
        nb, run = n1 - n0, self.run
        c4 = dcols.reshape(self.c, self.kh * self.kw, nb, run)
        for k, (a, b, off) in enumerate(self.offsets):
            dframes[a, b, n0:n1, :, off : off + run] += c4[:, k].transpose(1, 0, 2)


def _wide_im2col(
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
) -> tuple[np.ndarray, int]:
    """Wide columns ``(C*kh*kw, N*oh*Wq)`` of ``x (N, C, H, W)`` and ``Wq`` (see above).

    Same geometry arguments as :func:`im2col`; ``cols.reshape(C*kh*kw, N, oh, Wq)[..., :ow]``
    equals ``im2col(x, ...)`` transposed to ``(C*kh*kw, N, oh*ow)``.
    """
    n, c, h, w = (int(s) for s in x.shape)
    geo = _FrameGeometry(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    return geo.cols(geo.to_frames(x), 0, n), geo.wq


def _wide_col2im(
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
    """Adjoint of :func:`_wide_im2col`: ``(C*kh*kw, N*oh*Wq)`` -> ``(N, C, H, W)``; the garbage
    columns of ``cols`` must be zero."""
    geo = _FrameGeometry(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    dframes = geo.new_frames(cols.dtype)
    geo.scatter_add(cols, dframes, 0, n)
    return geo.from_frames(dframes)


# --------------------------------------------------------------------------------------------
# NumPy-only "batch-innermost" (CHWN) layout, used by the NumPy convolution routes (numpy_ops/conv/)
# for small images.
#
# The frame layout above still copies rows of ``Wq`` elements and, worse, multiplies
# ``Wq - ow`` garbage columns per output row: 20% (8x8 images, 3x3 kernel) to 30% (LeNet's
# 14 -> 10 with a 5x5 kernel) of every GEMM is wasted there. Putting the batch innermost
# removes both problems:
#
# * ``x (N, C, H, W)`` is transposed once into a zero-padded ``P (C, Hp, Wp, N)`` (a blocked
#   transpose, see :func:`_to_batch_inner`);
# * the columns of output rows ``y0:y1`` are ``(C*kh*kw, (y1-y0)*ow*N)``, row
#   ``(c*kh + i)*kw + j`` (as im2col), column ``(y*ow + x)*N + n``; entry
#   ``P[c, y*sh + i*dh, x*sw + j*dw, n]``. For stride 1 along the width a kernel offset's
#   ``(x, n)`` block is ONE contiguous run of ``ow*N`` elements of ``P`` (``N`` with a
#   stride), there are no garbage columns, and the whole chunk is a single strided copy;
# * GEMMs write ``(O, oh*ow*N)``, i.e. ``y`` in (O, oh, ow, N) order, transposed back to NCHW
#   once (with the bias added in that pass by the caller).
# --------------------------------------------------------------------------------------------

# Blocked (N, R) <-> (R, N) transposes. NumPy's one-pass strided copy is 2-4x slower than
# copying blocks that stay in L1 (measured on 8x8 .. 32x32 images, batch 128):
# * into batch-innermost: blocks of one cache line of samples (64 bytes), all of R;
# * out of it: blocks of about 64 KiB, whole channels times as many samples as fit.
_TO_BLOCK_BYTES = 64
_FROM_BLOCK_BYTES = 64 << 10


def _to_batch_inner(a: np.ndarray, out: np.ndarray) -> None:
    """Write ``a (N, *rest)`` into ``out (*rest, N)`` (any strides), blocked over ``N``."""
    n = a.shape[0]
    nb = max(1, _TO_BLOCK_BYTES // a.itemsize)
    axes = tuple(range(1, a.ndim)) + (0,)
    for n0 in range(0, n, nb):
        out[..., n0 : n0 + nb] = a[n0 : n0 + nb].transpose(axes)


def _from_batch_inner(a: np.ndarray, out: np.ndarray, add: np.ndarray | None = None) -> None:
    """Write ``a (C, *rest, N)`` into ``out (N, C, *rest)`` in blocks of channels x samples;
    ``add`` (broadcast against ``(C, *rest)``, e.g. a bias ``(C, 1, 1)``) is added in the same
    pass."""
    c, n = a.shape[0], a.shape[-1]
    if a.size == 0:
        return
    if _from_batch_inner_tiled(a, out, add):
        return
    per_channel = max(1, a[0, ..., 0].size) * a.itemsize  # bytes of one channel of one sample
    budget = max(1, _FROM_BLOCK_BYTES // per_channel)  # channel-samples per block
    if budget >= n:
        cb, nb = min(c, budget // max(n, 1)), n
    else:
        cb, nb = 1, budget
    axes = (a.ndim - 1,) + tuple(range(a.ndim - 1))
    for n0 in range(0, n, nb):
        for c0 in range(0, c, cb):
            src = a[c0 : c0 + cb, ..., n0 : n0 + nb].transpose(axes)
            dst = out[n0 : n0 + nb, c0 : c0 + cb]
            if add is None:
                dst[...] = src
            else:
                np.add(src, add[c0 : c0 + cb], out=dst)


# Square tile edge of :func:`_from_batch_inner_tiled` (measured float32, N=128: 16x32x32 2.3 ->
# 1.7 ms, 32x16x16 1.0 -> 0.5 ms against the channel x sample blocks).
_FROM_TILE = 64


def _from_batch_inner_tiled(a: np.ndarray, out: np.ndarray, add: np.ndarray | None) -> bool:
    """:func:`_from_batch_inner` as 2-D ``_FROM_TILE``-square tiles of ``a`` viewed as
    ``(R, N)`` and ``out`` as ``(N, R)``; applies (returns True) only when both views exist,
    ``add`` is None or per channel and the tile divides each channel's ``R / C`` rows."""
    c, n, t = a.shape[0], a.shape[-1], _FROM_TILE
    if not out.flags.c_contiguous or n < t:
        return False
    per = a.size // (c * n)
    if per % t:
        return False
    try:
        a2 = a.reshape(c * per, n, copy=False)
    except ValueError:
        return False
    bias = None
    if add is not None:
        if add.size != c or add.shape[0] != c:
            return False
        bias = add.reshape(c)
    o2 = out.reshape(n, c * per)
    for r0 in range(0, c * per, t):
        b = None if bias is None else bias[r0 // per]
        for n0 in range(0, n, t):
            src = a2[r0 : r0 + t, n0 : n0 + t].T
            dst = o2[n0 : n0 + t, r0 : r0 + t]
            if b is None:
                dst[...] = src
            else:
                np.add(src, b, out=dst)
    return True


class _BatchInnerGeometry:
    """Batch-innermost layout of one convolution geometry (same arguments as :func:`col2im`).

    ``hp``/``wp`` are the padded extents (image plus every window the output reads; the top/
    left pads are ``ph``/``pw``, the bottom/right ones follow from ``oh``/``ow``).
    ``row_size`` is the number of column entries per output row, ``C*kh*kw*ow*N``.
    """

    def __init__(
        self,
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
    ) -> None:
        self.n, self.c, self.h, self.w = n, c, h, w
        self.kh, self.kw, self.sh, self.sw, self.ph, self.pw = kh, kw, sh, sw, ph, pw
        self.dh, self.dw, self.oh, self.ow = dh, dw, oh, ow
        self.hp = _padded_extent(h, ph, kh, sh, dh, oh)
        self.wp = _padded_extent(w, pw, kw, sw, dw, ow)
        self.row_size = c * kh * kw * ow * n

    def new_padded(self, dtype: Any) -> np.ndarray:
        """Zeros ``(C, Hp, Wp, N)``."""
        return np.zeros((self.c, self.hp, self.wp, self.n), dtype=dtype)

    def _interior(self, p: np.ndarray) -> np.ndarray:
        return p[:, self.ph : self.ph + self.h, self.pw : self.pw + self.w]

    def to_padded(self, x: np.ndarray) -> np.ndarray:
        """``P (C, Hp, Wp, N)``: ``x (N, C, H, W)`` zero-padded, batch innermost."""
        p = self.new_padded(x.dtype)
        _to_batch_inner(x, self._interior(p))
        return p

    def pad_batch_inner(self, a: np.ndarray) -> np.ndarray:
        """``P (C, Hp, Wp, N)`` of an image already batch-innermost, ``a (C, H, W, N)``."""
        p = self.new_padded(a.dtype)
        self._interior(p)[...] = a
        return p

    def from_padded(self, p: np.ndarray) -> np.ndarray:
        """``x (N, C, H, W)`` read back from ``P`` (the padding is dropped)."""
        x = np.empty((self.n, self.c, self.h, self.w), dtype=p.dtype)
        _from_batch_inner(self._interior(p), x)
        return x

    def _windows(self, p: np.ndarray, y0: int, y1: int) -> np.ndarray:
        """Strided view ``(C, kh, kw, y1-y0, ow, N)`` of ``P``: the columns of rows y0:y1."""
        s_c, s_h, s_w, s_n = p.strides
        return as_strided(
            p[:, y0 * self.sh :],
            shape=(self.c, self.kh, self.kw, y1 - y0, self.ow, self.n),
            strides=(s_c, s_h * self.dh, s_w * self.dw, s_h * self.sh, s_w * self.sw, s_n),
            writeable=False,
        )

    def cols(self, p: np.ndarray, y0: int, y1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Columns ``(C*kh*kw, (y1-y0)*ow*N)`` of output rows ``y0:y1`` (into ``out`` if
        given: a C-contiguous buffer of at least that size)."""
        size = (y1 - y0) * self.row_size
        buf = np.empty(size, p.dtype) if out is None else out.reshape(-1)[:size]
        win = self._windows(p, y0, y1)
        np.copyto(buf.reshape(win.shape), win)
        return buf.reshape(self.c * self.kh * self.kw, -1)

    def add_cols(self, dcols: np.ndarray, dp: np.ndarray, y0: int, y1: int) -> None:
        """Adjoint of :meth:`cols`: add ``dcols (C*kh*kw, (y1-y0)*ow*N)`` into ``dp``."""
        d6 = dcols.reshape(self.c, self.kh, self.kw, y1 - y0, self.ow, self.n)
        sh, sw, rows = self.sh, self.sw, y1 - y0
        for i in range(self.kh):
            r0 = y0 * sh + i * self.dh
            rs = slice(r0, r0 + sh * (rows - 1) + 1, sh)
            for j in range(self.kw):
                c0 = j * self.dw
                dp[:, rs, c0 : c0 + sw * (self.ow - 1) + 1 : sw] += d6[:, i, j]


def _batch_inner_im2col(
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
    """Batch-innermost columns ``(C*kh*kw, oh*ow*N)`` of ``x (N, C, H, W)`` (see above).

    ``cols.reshape(C*kh*kw, oh*ow, N)`` equals ``im2col(x, ...)`` transposed to that order.
    """
    n, c, h, w = (int(s) for s in x.shape)
    geo = _BatchInnerGeometry(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    return geo.cols(geo.to_padded(x), 0, oh)


def _batch_inner_col2im(
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
    """Adjoint of :func:`_batch_inner_im2col`: ``(C*kh*kw, oh*ow*N)`` -> ``(N, C, H, W)``."""
    geo = _BatchInnerGeometry(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    dp = geo.new_padded(cols.dtype)
    geo.add_cols(cols, dp, 0, oh)
    return geo.from_padded(dp)
