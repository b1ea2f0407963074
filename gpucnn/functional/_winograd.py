"""Winograd F(2x2, 3x3) for the NumPy backend's 3x3, stride-1, dilation-1 convolutions.

Private helpers of :mod:`gpucnn.functional.conv` (NumPy arrays only). Every 2x2 block of outputs
("tile") of a 3x3 correlation reads a 4x4 input tile ``d`` (tiles overlap by 2); with

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

the tile's output is ``A^T [sum_c (G g_oc G^T) * (B^T d_c B)] A``: 16 products per tile and
channel pair instead of 36. The sum over channels is, for each of the 16 positions ``k``, one
GEMM ``M[k] (O, T) = U[k] (O, C) @ V[k] (C, T)`` over all ``T`` tiles.

Layouts (batch innermost, as the batch-innermost route of conv.py):

* source image ``(C, H, W, N)``; it is zero-padded and split into its 2x2 polyphase components
  ``P4 (C, 2, hq, 2, wq, N)``, ``P4[c, p, a, q, b, n] = padded[c, 2a + p, 2b + q, n]``,
  ``hq = th + 1``, ``wq = tw + 1`` for ``th x tw`` tiles. Tile ``(ty, tx)`` reads padded rows
  ``2ty .. 2ty+3`` = phase-0/1 rows ``ty`` and ``ty + 1``, so every slice the transforms take is
  a contiguous run of ``wq*N`` (rows) or ``tw*N`` (columns) elements;
* ``V`` per chunk of tile rows: ``(16, C, rows*tw*N)``; ``M``: ``(16, O, rows*tw*N)``;
* output ``Y (O, 2*th, 2*tw, N)``; odd output sizes use a partial last tile (the caller crops).

The transforms are additions and subtractions only (the 1/2 factors of ``G`` are exact), a few
whole-chunk NumPy passes each; chunks of tile rows keep ``V`` and ``M`` near cache size.
"""

from __future__ import annotations

import threading

import numpy as np

# Filter transform G (4, 3); see the module docstring.
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])

# Bytes of V per chunk of tile rows (at least one tile row per chunk).
CHUNK_BYTES = 1 << 20

# Per-thread scratch buffers (name, dtype) -> 1-D array, grown on demand and kept: fresh
# multi-megabyte temporaries come from mmap and cost a page fault per 4 KiB on first touch, which
# measured as much as the transforms themselves (ResNet shapes, batch 128).
_scratch = threading.local()


def _buffer(name: str, size: int, dtype: np.dtype) -> np.ndarray:
    """A reused scratch array of ``size`` elements (contents undefined); one per ``name`` and
    dtype per thread, valid until the next request for that name."""
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    key = (name, np.dtype(dtype))
    buf = bufs.get(key)
    if buf is None or buf.size < size:
        buf = bufs[key] = np.empty(max(size, 1), dtype)
    return buf[:size]


def filter_transform(weight: np.ndarray) -> np.ndarray:
    """``U (16, O, C)`` of a 3x3 kernel ``weight (O, C, 3, 3)``: ``U[4a + b] = (G g G^T)[a, b]``,
    computed in float64 and returned in ``weight``'s dtype."""
    o, c = weight.shape[:2]
    gg = np.tensordot(_G, weight.astype(np.float64), axes=([1], [2]))  # (4, O, C, 3)
    u = np.tensordot(gg, _G, axes=([3], [1]))  # (4, O, C, 4)
    return np.ascontiguousarray(u.transpose(0, 3, 1, 2).reshape(16, o, c), weight.dtype)


def flipped_filter_transform(weight: np.ndarray) -> np.ndarray:
    """``U (16, C, O)`` of the flipped, in/out-transposed kernel ``W'[c, o, i, j] =
    W[o, c, 2-i, 2-j]`` of ``weight (O, C, 3, 3)``: the kernel of the input gradient."""
    return filter_transform(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def tiles(size: int) -> int:
    """Tiles along one axis for ``size`` outputs (a partial last tile for odd sizes)."""
    return (size + 1) // 2


def polyphase(src: np.ndarray, top: int, left: int, th: int, tw: int) -> np.ndarray:
    """``P4 (C, 2, th+1, 2, tw+1, N)`` of ``src (C, H, W, N)`` zero-padded by ``top``/``left``
    (>= 0) rows/columns; source pixels beyond the ``2*th+2`` x ``2*tw+2`` padded extent (read by
    no output tile) are dropped. The result is a scratch buffer (see :func:`_buffer`)."""
    c, h, w, n = src.shape
    hq, wq = th + 1, tw + 1
    p4 = _buffer("p4", c * 4 * hq * wq * n, src.dtype).reshape(c, 2, hq, 2, wq, n)
    p4.fill(0)
    for p in range(2):
        y0 = (p - top) % 2  # first source row landing on row phase p
        a0 = (y0 + top) // 2
        rows = min(hq - a0, (h - y0 + 1) // 2)
        if rows <= 0:
            continue
        for q in range(2):
            x0 = (q - left) % 2
            b0 = (x0 + left) // 2
            cols = min(wq - b0, (w - x0 + 1) // 2)
            if cols <= 0:
                continue
            p4[:, p, a0 : a0 + rows, q, b0 : b0 + cols] = src[
                :, y0 : y0 + 2 * rows - 1 : 2, x0 : x0 + 2 * cols - 1 : 2
            ]
    return p4


def rows_per_chunk(c: int, tw: int, n: int, itemsize: int, th: int) -> int:
    """Tile rows per chunk: ``V`` of about :data:`CHUNK_BYTES` (at least 1, at most ``th``)."""
    per_row = max(16 * c * tw * n * itemsize, 1)
    return max(1, min(th, CHUNK_BYTES // per_row))


def batch_per_chunk(c: int, tw: int, n: int, itemsize: int) -> int:
    """Samples per chunk when one tile row's ``V`` exceeds :data:`CHUNK_BYTES`: the batch is
    split so that ``V`` fits (runs of at least :data:`MIN_BATCH_RUN` samples); else ``n``.
    Measured (float32, one thread, N=128, 1 MiB): 32->32 16x16 forward 7.6 -> 6.9 ms and
    64->64 8x8 5.2 -> 4.5 ms with halves."""
    per_sample = max(16 * c * tw * itemsize, 1)
    nb = max(MIN_BATCH_RUN, CHUNK_BYTES // per_sample)
    return n if nb >= n else nb


# Fewest samples per batch chunk (the innermost run of every transform pass).
MIN_BATCH_RUN = 64


def polyphase_nchw(x: np.ndarray, top: int, left: int, th: int, tw: int) -> np.ndarray:
    """As :func:`polyphase` for ``x (N, C, H, W)`` (blocked transposes straight into the phase
    components); returns a new array (not scratch)."""
    from gpucnn.backend.numpy_ops.im2col import _to_batch_inner

    n, c, h, w = x.shape
    hq, wq = th + 1, tw + 1
    p4 = np.zeros((c, 2, hq, 2, wq, n), x.dtype)
    for p in range(2):
        y0 = (p - top) % 2
        a0 = (y0 + top) // 2
        rows = min(hq - a0, (h - y0 + 1) // 2)
        for q in range(2):
            x0 = (q - left) % 2
            b0 = (x0 + left) // 2
            cols = min(wq - b0, (w - x0 + 1) // 2)
            if rows > 0 and cols > 0:
                src = x[:, :, y0 : y0 + 2 * rows - 1 : 2, x0 : x0 + 2 * cols - 1 : 2]
                _to_batch_inner(src, p4[:, p, a0 : a0 + rows, q, b0 : b0 + cols])
    return p4


def _input_transform(p4: np.ndarray, t0: int, t1: int) -> np.ndarray:
    """``V (4, 4, C, t1-t0, tw, N)`` = ``B^T d B`` of the tiles in tile rows ``t0:t1`` (scratch;
    ``p4`` may be a view of a slice of the batch)."""
    c, _, hq, _, wq, n = p4.shape
    tw, dt, r = wq - 1, p4.dtype, t1 - t0
    # rows of B^T d: padded rows 2ty+0..3 are phase rows (0, ty), (1, ty), (0, ty+1), (1, ty+1)
    d0, d1 = p4[:, 0, t0:t1], p4[:, 1, t0:t1]
    d2, d3 = p4[:, 0, t0 + 1 : t1 + 1], p4[:, 1, t0 + 1 : t1 + 1]
    t = _buffer("t", 4 * c * r * 2 * wq * n, dt).reshape(4, c, r, 2, wq, n)
    np.subtract(d0, d2, out=t[0])
    np.add(d1, d2, out=t[1])
    np.subtract(d2, d1, out=t[2])
    np.subtract(d1, d3, out=t[3])
    # columns: padded columns 2tx+0..3 are phase columns (0, tx), (1, tx), (0, tx+1), (1, tx+1)
    v = _buffer("v", 16 * c * r * tw * n, dt).reshape(4, 4, c, r, tw, n)
    s0, s1 = t[:, :, :, 0, :tw], t[:, :, :, 1, :tw]
    s2, s3 = t[:, :, :, 0, 1:], t[:, :, :, 1, 1:]
    np.subtract(s0, s2, out=v[:, 0])
    np.add(s1, s2, out=v[:, 1])
    np.subtract(s2, s1, out=v[:, 2])
    np.subtract(s1, s3, out=v[:, 3])
    return v


def conv3x3(p4: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``Y (O, 2*th, 2*tw, N)``: the 3x3 correlation of the image behind ``p4`` (see
    :func:`polyphase`) with the kernel behind ``u (16, O, C)`` (see :func:`filter_transform`);
    ``Y[o, y, x, n] = sum_{c,i,j} W[o, c, i, j] padded[c, y + i, x + j, n]``. ``Y`` is a
    scratch buffer (see :func:`_buffer`): use it before the next call."""
    c, _, hq, _, wq, n = p4.shape
    o = u.shape[1]
    th, tw, dt = hq - 1, wq - 1, p4.dtype
    rows = rows_per_chunk(c, tw, n, dt.itemsize, th)
    nb = batch_per_chunk(c, tw, n, dt.itemsize) if rows == 1 else n
    mbuf = _buffer("m", 16 * o * rows * tw * nb, dt)
    zbuf = _buffer("z", 8 * o * rows * tw * nb, dt)
    y = _buffer("y", o * 4 * th * tw * n, dt).reshape(o, th, 2, tw, 2, n)
    for t0, t1, n0, n1 in _chunks(th, rows, n, nb):
        r, b = t1 - t0, n1 - n0
        v = _input_transform(p4[..., n0:n1], t0, t1)
        m = mbuf[: 16 * o * r * tw * b].reshape(16, o, r * tw * b)
        np.matmul(u, v.reshape(16, c, r * tw * b), out=m)
        # A^T M A: rows first (Z[a, s]), then columns straight into the output tiles
        m6 = m.reshape(4, 4, o, r, tw, b)
        z = zbuf[: 8 * o * r * tw * b].reshape(2, 4, o, r, tw, b)
        np.add(m6[0], m6[1], out=z[0])
        z[0] += m6[2]
        np.subtract(m6[1], m6[2], out=z[1])
        z[1] -= m6[3]
        yc = y[:, t0:t1, :, :, :, n0:n1].transpose(2, 4, 0, 1, 3, 5)  # (a, b, O, r, tw, N)
        np.add(z[:, 0], z[:, 1], out=yc[:, 0])
        yc[:, 0] += z[:, 2]
        np.subtract(z[:, 1], z[:, 2], out=yc[:, 1])
        yc[:, 1] -= z[:, 3]
    return y.reshape(o, 2 * th, 2 * tw, n)


def _chunks(th: int, rows: int, n: int, nb: int) -> list[tuple[int, int, int, int]]:
    """``(t0, t1, n0, n1)`` chunks: tile rows in steps of ``rows``, the batch in ``nb``."""
    return [
        (t0, min(th, t0 + rows), n0, min(n, n0 + nb))
        for t0 in range(0, th, rows)
        for n0 in range(0, n, nb)
    ]


def weight_grad(p4: np.ndarray, dyt: np.ndarray) -> np.ndarray:
    """``dW (O, C, 3, 3)`` of :func:`conv3x3` from ``p4`` and ``dyt (O, oh, ow, N)`` (the
    output gradient, batch innermost; ``oh <= 2*th``, ``ow <= 2*tw``).

    The transpose of the forward: ``y_t = A^T [U * V_t] A`` per tile gives
    ``dW = G^T [sum_t (A dy_t A^T) * V_t] G``, i.e. per position ``k`` one GEMM
    ``S[k] (O, C) = (A dy A^T)[k] (O, T) @ V[k]^T (T, C)`` over the same tiles as the forward.
    """
    c, _, hq, _, wq, n = p4.shape
    o, oh, ow = dyt.shape[:3]
    th, tw, dt = hq - 1, wq - 1, p4.dtype
    if (oh, ow) != (2 * th, 2 * tw):  # partial last tiles: zero rows/columns past the output
        dyp = _buffer("dyp", o * 4 * th * tw * n, dt).reshape(o, 2 * th, 2 * tw, n)
        dyp[:, oh:] = 0
        dyp[:, :oh, ow:] = 0
        dyp[:, :oh, :ow] = dyt
        dyt = dyp
    e = dyt.reshape(o, th, 2, tw, 2, n)
    rows = rows_per_chunk(max(c, o), tw, n, dt.itemsize, th)
    nb = batch_per_chunk(max(c, o), tw, n, dt.itemsize) if rows == 1 else n
    s = np.zeros((16, o, c), dt)
    for t0, t1, n0, n1 in _chunks(th, rows, n, nb):
        r, b = t1 - t0, n1 - n0
        v = _input_transform(p4[..., n0:n1], t0, t1)
        # A dy A^T with A = [[1, 0], [1, 1], [1, -1], [0, -1]]: rows, then columns
        e0, e1 = e[:, t0:t1, 0, :, :, n0:n1], e[:, t0:t1, 1, :, :, n0:n1]  # (O, r, tw, 2, b)
        q = _buffer("q", 4 * o * r * tw * 2 * b, dt).reshape(4, o, r, tw, 2, b)
        q[0] = e0
        np.add(e0, e1, out=q[1])
        np.subtract(e0, e1, out=q[2])
        np.negative(e1, out=q[3])
        mdy = _buffer("m", 16 * o * r * tw * b, dt).reshape(4, 4, o, r, tw, b)
        q0, q1 = q[..., 0, :], q[..., 1, :]
        mdy[:, 0] = q0
        np.add(q0, q1, out=mdy[:, 1])
        np.subtract(q0, q1, out=mdy[:, 2])
        np.negative(q1, out=mdy[:, 3])
        k = r * tw * b
        s += np.matmul(mdy.reshape(16, o, k), v.reshape(16, c, k).transpose(0, 2, 1))
    sg = np.tensordot(s.reshape(4, 4, o, c).astype(np.float64), _G, axes=([1], [0]))  # S G
    dw = np.tensordot(_G, sg, axes=([0], [0])).transpose(1, 2, 0, 3)  # G^T S G: (O, C, 3, 3)
    return np.ascontiguousarray(dw, dtype=dt)
