"""Winograd F(2x2, 3x3) for the NumPy backend's 3x3, stride-1, dilation-1 convolutions.

The Winograd route of :mod:`gpucnn.backend.numpy_ops.conv` (NumPy arrays only). Every 2x2
block of outputs
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
whole-chunk NumPy passes each; chunks of tile rows keep ``V`` and ``M`` near cache size. When
the weight gradient will be needed, the forward keeps every chunk's ``V`` (:class:`KeptInput`,
pooled buffers) so the backward does not transform the input again.

Accuracy: the transforms add and subtract the 16 values of a tile before the products, so the
rounding error of an output is relative to the largest value in its tile, not (as im2col + GEMM)
to the terms of its own sum; one huge input next to small ones, or an infinity (``inf - inf``
is NaN), would spoil its neighbours. The rule therefore takes Winograd only for data whose
dynamic range :func:`range_ok` accepts (finite, ``max|a| <= MAX_RANGE * mean|a|``), checked on
``x`` in the forward and on ``dy`` in the backward (which falls back to the reference for that
call otherwise). Within it, measured on 32->32 16x16 convs in float32 (error of each output
over the sum of the absolute values of its terms): Winograd's stays within 4x of the reference
route's (``tests/test_conv_primitives.py::test_winograd_accuracy_is_bounded``).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from gpucnn.backend.geometry import Conv2dGeometry
from gpucnn.backend.numpy_ops.im2col import _from_batch_inner, _to_batch_inner

# Filter transform G (4, 3); see the module docstring.
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])

# Bytes of V per chunk of tile rows (at least one tile row per chunk). Measured fwd+bwd,
# float32, one thread, N=128, V kept: 32->32 16x16 1 MiB 28.7 ms, 2 MiB 27.0 ms (median of 15,
# alternating with PyTorch); 64->64 8x8 about equal (19.8 / 20.4 ms, noise).
CHUNK_BYTES = 2 << 20

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


# Free buffers of kept transformed inputs (:class:`KeptInput`), oldest first: a training step
# takes them back in the next forward instead of faulting in fresh pages. At most
# :data:`POOL_MAX_BYTES` are held; the oldest go first (sizes no longer used age out).
_pool: list[np.ndarray] = []
_pool_lock = threading.Lock()
POOL_MAX_BYTES = 256 << 20

# Largest transformed input (bytes) the forward keeps for the weight gradient; a larger one is
# recomputed from the polyphase input in the backward (which is 4x smaller).
KEEP_MAX_BYTES = 64 << 20


def clear_buffers() -> None:
    """Free the calling thread's scratch buffers and the pool of kept-input buffers (they are
    otherwise held for reuse by the next convolution)."""
    _scratch.__dict__.pop("bufs", None)
    with _pool_lock:
        _pool.clear()


def _pool_take(size: int, dtype: np.dtype) -> np.ndarray:
    """A pooled (the newest of that size and dtype) or new 1-D array of ``size`` elements;
    contents undefined."""
    dtype = np.dtype(dtype)
    with _pool_lock:
        for i in range(len(_pool) - 1, -1, -1):
            if _pool[i].size == size and _pool[i].dtype == dtype:
                return _pool.pop(i)
    return np.empty(size, dtype)


def _pool_give(buf: np.ndarray) -> None:
    """Return a :func:`_pool_take` array to the pool, dropping the oldest buffers while more
    than :data:`POOL_MAX_BYTES` are held (``buf`` itself too if it alone exceeds that)."""
    with _pool_lock:
        _pool.append(buf)
        held = sum(b.nbytes for b in _pool)
        while _pool and held > POOL_MAX_BYTES:
            held -= _pool.pop(0).nbytes


class KeptInput:
    """The forward's transformed input ``V`` of every chunk (see :func:`conv3x3`), kept for
    :func:`weight_grad` so the backward does not transform the input again.

    ``shape`` is the polyphase input's ``(C, 2, th+1, 2, tw+1, N)``, ``chunks`` the
    ``(t0, t1, n0, n1)`` chunks; chunk ``i``'s ``V (4, 4, C, t1-t0, tw, n1-n0)`` is one
    contiguous block of a pooled buffer, handed back to the pool when this object dies (not
    earlier: a retained graph may run its backward twice).
    """

    def __init__(
        self, shape: tuple[int, ...], chunks: list[tuple[int, int, int, int]], dtype: np.dtype
    ) -> None:
        c, tw = shape[0], shape[4] - 1
        self.shape, self.chunks = tuple(shape), chunks
        sizes = [16 * c * (t1 - t0) * tw * (n1 - n0) for t0, t1, n0, n1 in chunks]
        self.offsets = [0]
        for size in sizes:
            self.offsets.append(self.offsets[-1] + size)
        self._buf: np.ndarray | None = _pool_take(self.offsets[-1], dtype)

    @staticmethod
    def nbytes(shape: tuple[int, ...], itemsize: int) -> int:
        """Bytes of all chunks' ``V`` for a polyphase input of ``shape``."""
        c, th, tw, n = shape[0], shape[2] - 1, shape[4] - 1, shape[5]
        return 16 * c * th * tw * n * itemsize

    def chunk(self, i: int) -> np.ndarray:
        """``V`` of chunk ``i``: ``(4, 4, C, t1-t0, tw, n1-n0)`` (a view of the buffer)."""
        assert self._buf is not None
        t0, t1, n0, n1 = self.chunks[i]
        block = self._buf[self.offsets[i] : self.offsets[i + 1]]
        return block.reshape(4, 4, self.shape[0], t1 - t0, self.shape[4] - 1, n1 - n0)

    def __del__(self) -> None:
        buf, self._buf = self._buf, None
        if buf is not None:
            try:
                _pool_give(buf)
            except Exception:  # noqa: BLE001 - interpreter shutdown: let the array go
                pass


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
    p4 = _buffer("p4", c * 4 * (th + 1) * (tw + 1) * n, src.dtype).reshape(
        c, 2, th + 1, 2, tw + 1, n
    )
    for p, q, rs, cs, src_rows, src_cols in _phases(h, w, top, left, th, tw):
        _fill_phase(p4[:, p, :, q], rs, cs)
        if rs.stop > rs.start and cs.stop > cs.start:
            p4[:, p, rs, q, cs] = src[:, src_rows, src_cols]
    return p4


def _phases(h: int, w: int, top: int, left: int, th: int, tw: int) -> list[tuple]:
    """``(p, q, rows, cols, src_rows, src_cols)`` per phase component of an ``h x w`` image
    padded by ``top``/``left``: the slices of phase rows/columns it fills and of the source
    rows/columns that fill them (empty slices when none lands there)."""
    hq, wq = th + 1, tw + 1
    out = []
    for p in range(2):
        y0 = (p - top) % 2  # first source row landing on row phase p
        a0 = (y0 + top) // 2
        rows = max(0, min(hq - a0, (h - y0 + 1) // 2))
        for q in range(2):
            x0 = (q - left) % 2
            b0 = (x0 + left) // 2
            cols = max(0, min(wq - b0, (w - x0 + 1) // 2))
            out.append(
                (
                    p,
                    q,
                    slice(a0, a0 + rows),
                    slice(b0, b0 + cols),
                    slice(y0, y0 + 2 * rows - 1, 2),
                    slice(x0, x0 + 2 * cols - 1, 2),
                )
            )
    return out


def _fill_phase(block: np.ndarray, rs: slice, cs: slice) -> None:
    """Zero the part of a phase component ``block (C, hq, wq, N)`` outside ``[rs, cs]`` (the
    padding; the inside is about to be overwritten)."""
    if rs.stop <= rs.start or cs.stop <= cs.start:
        block.fill(0)
        return
    block[:, : rs.start] = 0
    block[:, rs.stop :] = 0
    block[:, rs, : cs.start] = 0
    block[:, rs, cs.stop :] = 0


def rows_per_chunk(
    c: int, tw: int, n: int, itemsize: int, th: int, chunk_bytes: int = CHUNK_BYTES
) -> int:
    """Tile rows per chunk: ``V`` of about ``chunk_bytes`` (at least 1, at most ``th``)."""
    per_row = max(16 * c * tw * n * itemsize, 1)
    return max(1, min(th, chunk_bytes // per_row))


def batch_per_chunk(c: int, tw: int, n: int, itemsize: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Samples per chunk when one tile row's ``V`` exceeds ``chunk_bytes``: the batch is
    split so that ``V`` fits (runs of at least :data:`MIN_BATCH_RUN` samples); else ``n``.
    Measured (float32, one thread, N=128, 1 MiB): 32->32 16x16 forward 7.6 -> 6.9 ms and
    64->64 8x8 5.2 -> 4.5 ms with halves."""
    per_sample = max(16 * c * tw * itemsize, 1)
    nb = max(MIN_BATCH_RUN, chunk_bytes // per_sample)
    return n if nb >= n else nb


# Fewest samples per batch chunk (the innermost run of every transform pass).
MIN_BATCH_RUN = 64


def polyphase_nchw(
    x: np.ndarray, top: int, left: int, th: int, tw: int, scratch: bool = False
) -> np.ndarray:
    """As :func:`polyphase` for ``x (N, C, H, W)`` (blocked transposes straight into the phase
    components); a new array, or with ``scratch`` the :func:`polyphase` scratch buffer."""
    n, c, h, w = x.shape
    shape = (c, 2, th + 1, 2, tw + 1, n)
    if scratch:
        p4 = _buffer("p4", int(np.prod(shape)), x.dtype).reshape(shape)
    else:
        p4 = np.empty(shape, x.dtype)
    for p, q, rs, cs, src_rows, src_cols in _phases(h, w, top, left, th, tw):
        _fill_phase(p4[:, p, :, q], rs, cs)
        if rs.stop > rs.start and cs.stop > cs.start:
            _to_batch_inner(x[:, :, src_rows, src_cols], p4[:, p, rs, q, cs])
    return p4


def _input_transform(
    p4: np.ndarray, t0: int, t1: int, out: np.ndarray | None = None
) -> np.ndarray:
    """``V (4, 4, C, t1-t0, tw, N)`` = ``B^T d B`` of the tiles in tile rows ``t0:t1``, written
    into ``out`` (contiguous, that shape) or a scratch buffer; ``p4`` may be a view of a slice
    of the batch."""
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
    v = _buffer("v", 16 * c * r * tw * n, dt).reshape(4, 4, c, r, tw, n) if out is None else out
    s0, s1 = t[:, :, :, 0, :tw], t[:, :, :, 1, :tw]
    s2, s3 = t[:, :, :, 0, 1:], t[:, :, :, 1, 1:]
    np.subtract(s0, s2, out=v[:, 0])
    np.add(s1, s2, out=v[:, 1])
    np.subtract(s2, s1, out=v[:, 2])
    np.subtract(s1, s3, out=v[:, 3])
    return v


def conv3x3(
    p4: np.ndarray, u: np.ndarray, keep: bool = False, chunk_bytes: int = CHUNK_BYTES
) -> tuple[np.ndarray, KeptInput | None]:
    """``(Y (O, 2*th, 2*tw, N), kept)``: ``Y`` is the 3x3 correlation of the image behind ``p4``
    (see :func:`polyphase`) with the kernel behind ``u (16, O, C)`` (see
    :func:`filter_transform`), ``Y[o, y, x, n] = sum_{c,i,j} W[o, c, i, j] padded[c, y + i,
    x + j, n]``, a scratch buffer (see :func:`_buffer`): use it before the next call. With
    ``keep``, ``kept`` holds the transformed input for :func:`weight_grad` (else None).
    ``V`` is built in chunks of about ``chunk_bytes`` (:func:`plan_chunks`)."""
    c, _, hq, _, wq, n = p4.shape
    o = u.shape[1]
    th, tw, dt = hq - 1, wq - 1, p4.dtype
    chunks = plan_chunks(c, th, tw, n, dt.itemsize, chunk_bytes)
    kept = KeptInput(p4.shape, chunks, dt) if keep else None
    most = max(((t1 - t0) * tw * (n1 - n0) for t0, t1, n0, n1 in chunks), default=0)
    mbuf = _buffer("m", 16 * o * most, dt)
    zbuf = _buffer("z", 8 * o * most, dt)
    y = _buffer("y", o * 4 * th * tw * n, dt).reshape(o, th, 2, tw, 2, n)
    for i, (t0, t1, n0, n1) in enumerate(chunks):
        r, b = t1 - t0, n1 - n0
        v = _input_transform(p4[..., n0:n1], t0, t1, None if kept is None else kept.chunk(i))
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
    return y.reshape(o, 2 * th, 2 * tw, n), kept


def plan_chunks(
    c: int, th: int, tw: int, n: int, itemsize: int, chunk_bytes: int = CHUNK_BYTES
) -> list[tuple[int, int, int, int]]:
    """The ``(t0, t1, n0, n1)`` chunks of tile rows x samples for ``c`` input channels: whole
    batches of :func:`rows_per_chunk` tile rows, or one tile row and :func:`batch_per_chunk`
    samples when a tile row alone exceeds ``chunk_bytes``."""
    rows = rows_per_chunk(c, tw, n, itemsize, th, chunk_bytes)
    nb = batch_per_chunk(c, tw, n, itemsize, chunk_bytes) if rows == 1 else n
    return _chunks(th, rows, n, nb)


def _chunks(th: int, rows: int, n: int, nb: int) -> list[tuple[int, int, int, int]]:
    """``(t0, t1, n0, n1)`` chunks: tile rows in steps of ``rows``, the batch in ``nb``."""
    nb = max(nb, 1)  # an empty batch: no chunks
    return [
        (t0, min(th, t0 + rows), n0, min(n, n0 + nb))
        for t0 in range(0, th, rows)
        for n0 in range(0, n, nb)
    ]


def weight_grad(
    src: np.ndarray | KeptInput, dyt: np.ndarray, chunk_bytes: int = CHUNK_BYTES
) -> np.ndarray:
    """``dW (O, C, 3, 3)`` of :func:`conv3x3` from its input (the polyphase ``P4``, or what
    the forward kept of it) and ``dyt (O, oh, ow, N)`` (the output gradient, batch innermost;
    ``oh <= 2*th``, ``ow <= 2*tw``).

    The transpose of the forward: ``y_t = A^T [U * V_t] A`` per tile gives
    ``dW = G^T [sum_t (A dy_t A^T) * V_t] G``, i.e. per position ``k`` one GEMM
    ``S[k] (O, C) = (A dy A^T)[k] (O, T) @ V[k]^T (T, C)`` over the same tiles as the forward.
    """
    kept = src if isinstance(src, KeptInput) else None
    shape = src.shape
    c, hq, wq, n = shape[0], shape[2], shape[4], shape[5]
    o, oh, ow = dyt.shape[:3]
    th, tw, dt = hq - 1, wq - 1, dyt.dtype
    if (oh, ow) != (2 * th, 2 * tw):  # partial last tiles: zero rows/columns past the output
        dyp = _buffer("dyp", o * 4 * th * tw * n, dt).reshape(o, 2 * th, 2 * tw, n)
        dyp[:, oh:] = 0
        dyp[:, :oh, ow:] = 0
        dyp[:, :oh, :ow] = dyt
        dyt = dyp
    e = dyt.reshape(o, th, 2, tw, 2, n)
    chunks = (
        kept.chunks
        if kept is not None
        else plan_chunks(max(c, o), th, tw, n, dt.itemsize, chunk_bytes)
    )
    s = np.zeros((16, o, c), dt)
    for i, (t0, t1, n0, n1) in enumerate(chunks):
        r, b = t1 - t0, n1 - n0
        if kept is not None:
            v = kept.chunk(i)
        else:
            assert isinstance(src, np.ndarray)
            v = _input_transform(src[..., n0:n1], t0, t1)
        # A dy A^T with A = [[1, 0], [1, 1], [1, -1], [0, -1]], rows then columns. The -1 of
        # the last row and column of A is left out here and put back on S (the GEMM is linear).
        ee = e[:, t0:t1, :, :, :, n0:n1].transpose(2, 0, 1, 3, 4, 5)  # (2, O, r, tw, 2, b)
        q = _buffer("q", 2 * o * r * tw * 2 * b, dt).reshape(2, o, r, tw, 2, b)
        np.add(ee[0], ee[1], out=q[0])
        np.subtract(ee[0], ee[1], out=q[1])
        mdy = _buffer("m", 16 * o * r * tw * b, dt).reshape(4, 4, o, r, tw, b)
        for rows_out, rows_in in ((mdy[::3], ee), (mdy[1:3], q)):  # rows 0, 3 and 1, 2
            p0, p1 = rows_in[..., 0, :], rows_in[..., 1, :]
            rows_out[:, 0] = p0
            np.add(p0, p1, out=rows_out[:, 1])
            np.subtract(p0, p1, out=rows_out[:, 2])
            rows_out[:, 3] = p1
        k = r * tw * b
        s += np.matmul(mdy.reshape(16, o, k), v.reshape(16, c, k).transpose(0, 2, 1))
    s64 = s.reshape(4, 4, o, c).astype(np.float64) * _SIGNS
    sg = np.tensordot(s64, _G, axes=([1], [0]))  # S G
    dw = np.tensordot(_G, sg, axes=([0], [0])).transpose(1, 2, 0, 3)  # G^T S G: (O, C, 3, 3)
    return np.ascontiguousarray(dw, dtype=dt)


# Signs of the last row and column of A put back on S (see :func:`weight_grad`).
_SIGNS = np.outer([1.0, 1.0, 1.0, -1.0], [1.0, 1.0, 1.0, -1.0]).reshape(4, 4, 1, 1)


# ------------------------------------------------------------------ the range check

# Largest ``max|a| / mean|a|`` the rule accepts for Winograd (see the module docstring). A
# single outlier of 1e3 in unit-scale data keeps the error within 3x of im2col + GEMM's; 1e4
# costs 10-20x (32->32 16x16, float32).
MAX_RANGE = 1024.0

# Elements of the strided sample that estimates ``mean|a|`` (the max is exact).
_RANGE_SAMPLE = 4096


def range_ok(a: np.ndarray) -> bool:
    """Whether ``a``'s values keep Winograd's error bounded: all finite and
    ``max|a| <= MAX_RANGE * mean|a|`` (the mean from a strided sample of about
    ``_RANGE_SAMPLE`` elements; two exact reductions and no temporary of ``a``'s size)."""
    if a.size == 0:
        return True
    amax = max(float(a.max()), -float(a.min()))
    if not math.isfinite(amax):
        return False
    if amax == 0.0:
        return True
    flat = a.reshape(-1)
    sample = flat[:: max(1, flat.size // _RANGE_SAMPLE)]
    return amax <= MAX_RANGE * float(np.abs(sample).mean(dtype=np.float64))


# ------------------------------------------------------------------ the route


def applies(geom: Conv2dGeometry) -> bool:
    """Whether Winograd F(2x2, 3x3) computes this convolution at all: a 3x3 kernel, stride 1,
    dilation 1, one group, top/left pads <= 2 (``dx``, the correlation of ``dy`` padded by
    ``2 - pad``, would need negative pads)."""
    g = geom
    return (
        (g.kh, g.kw) == (3, 3)
        and g.stride == (1, 1)
        and g.dilation == (1, 1)
        and g.groups == 1
        and max(g.pt, g.pl) <= 2
    )


def applies_well(geom: Conv2dGeometry) -> bool:
    """Whether the NumPy backend runs this convolution (forward and ``dx``) as Winograd
    F(2x2, 3x3): it :func:`applies` and it measured faster (the rule constants below)."""
    if not applies(geom):
        return False
    if min(geom.c, geom.o) < _WINOGRAD_MIN_CHANNELS or geom.ow < _WINOGRAD_MIN_WIDTH:
        return False
    return geom.n * ((geom.ow + 1) // 2) >= _WINOGRAD_MIN_RUN


# Rule constants of :func:`applies_well`. The transforms cost a fixed number of NumPy passes
# per tile and channel while the GEMMs save 20 of 36 multiplies per tile and channel pair, so
# the channel count must be large enough for the saving to outweigh the transforms; the passes
# run over ``tw*N`` contiguous elements (``tw`` tiles per row) and the polyphase input carries
# one extra tile row and column, which dominates tiny images. Measured fwd+bwd, float32, one
# BLAS thread, time relative to PyTorch (winograd / batch_inner / wide), padding 1:
# 64->64 8x8 N=128: 1.33 / 1.78 / 2.10; 32->32 16x16 N=128: 1.55 / 1.77 / 1.66;
# 16->16 32x32 N=128: 1.98 / 2.07 / 1.80 (too few channels); 64->64 8x8 N=16 (runs of 64):
# 1.58 / 1.52; N=4: 2.0 / 0.85; 128->128 4x4 N=128 (2 tiles a row): 2.3 / 2.2.
_WINOGRAD_MIN_CHANNELS = 24
_WINOGRAD_MIN_WIDTH = 7
_WINOGRAD_MIN_RUN = 128


def forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    geom: Conv2dGeometry,
    keep: bool = False,
    chunk_bytes: int = CHUNK_BYTES,
) -> tuple[np.ndarray, Any]:
    """``(y (N, O, oh, ow), saved)`` by Winograd F(2x2, 3x3).

    ``x`` is transposed once into the zero-padded, batch-innermost polyphase ``P4`` of
    this module and run through :func:`conv3x3`; the ``(O, oh, ow, N)`` part of the tiles is
    transposed to NCHW with the bias added in the same pass. ``saved`` is what the weight
    gradient needs when ``keep`` (else None): the transformed input itself (a
    :class:`~KeptInput`, the backward skips the input transform) up to
    :data:`~KEEP_MAX_BYTES`, else ``P4``.
    """
    n, o, oh, ow, dt = geom.n, geom.o, geom.oh, geom.ow, x.dtype
    th, tw = tiles(oh), tiles(ow)
    shape = (geom.c, 2, th + 1, 2, tw + 1, n)
    keep_v = keep and KeptInput.nbytes(shape, dt.itemsize) <= KEEP_MAX_BYTES
    p4 = polyphase_nchw(x, geom.pt, geom.pl, th, tw, scratch=not (keep and not keep_v))
    yt, kept = conv3x3(p4, filter_transform(weight), keep=keep_v, chunk_bytes=chunk_bytes)
    y = np.empty((n, o, oh, ow), dtype=dt)
    add = None if bias is None else bias.astype(dt, copy=False).reshape(o, 1, 1)
    _from_batch_inner(yt[:, :oh, :ow], y, add=add)
    return y, (kept if keep_v else p4 if keep else None)


def backward(
    gy: np.ndarray,
    p4: Any,
    weight: np.ndarray | None,
    geom: Conv2dGeometry,
    need_x: bool,
    need_w: bool,
    chunk_bytes: int = CHUNK_BYTES,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(dx, dW)`` of :func:`forward`: ``dy`` transposed once to ``dyt (O, oh, ow, N)``;
    ``dW`` by the transposed Winograd transform over what the forward saved (its transformed
    input, or ``P4``: :func:`weight_grad`), ``dx`` by Winograd on the padded ``dy`` with the
    flipped kernel (:func:`_input_grad`)."""
    if not (need_x or need_w):
        return None, None
    n, o, oh, ow = geom.n, geom.o, geom.oh, geom.ow
    # scratch (reused across calls: no page faults on fresh pages); it does not escape
    dyt = _buffer("dyt", o * oh * ow * n, gy.dtype).reshape(o, oh, ow, n)
    _to_batch_inner(gy, dyt)
    gw = weight_grad(p4, dyt, chunk_bytes) if need_w else None
    gx = None
    if need_x:
        gx = np.empty((n, geom.c, geom.h, geom.w), gy.dtype)
        _from_batch_inner(_input_grad(dyt, weight, geom, chunk_bytes), gx)
    return gx, gw


def _input_grad(
    dyt: np.ndarray, weight: np.ndarray, geom: Conv2dGeometry, chunk_bytes: int = CHUNK_BYTES
) -> np.ndarray:
    """``dx (C, H, W, N)`` of a stride-1 3x3 convolution from ``dyt (O, oh, ow, N)`` by
    Winograd: the correlation of ``dy`` padded by ``2 - pad`` (top/left; the pads must be
    <= 2) with the flipped, transposed kernel (see
    :meth:`~gpucnn.backend.geometry.Conv2dGeometry.input_grad_as_conv`)."""
    h, w = geom.h, geom.w
    p4 = polyphase(dyt, 2 - geom.pt, 2 - geom.pl, tiles(h), tiles(w))
    return conv3x3(p4, flipped_filter_transform(weight), chunk_bytes=chunk_bytes)[0][:, :h, :w]
