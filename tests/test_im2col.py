"""im2col / col2im: NumPy twins vs a brute-force reference vs the CUDA kernels.

The CUDA launchers run on the CPU through the host emulator (same grid, block and arguments as
on a GPU) over a sweep of grid sizes; ``gpu``-marked tests repeat the parity through CuPy.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpucnn.backend import cuda_available
from gpucnn.backend.cuda_ops import im2col as cuda_im2col
from gpucnn.backend.numpy_ops import im2col as np_im2col
from gpucnn.backend.runtime import use_runtime


def _out(size: int, k: int, s: int, p_lo: int, p_hi: int, d: int) -> int:
    return (size + p_lo + p_hi - d * (k - 1) - 1) // s + 1


def _case(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, pb=None, pr=None):
    """(x shape, im2col geometry); bottom/right padding default to top/left."""
    pb = ph if pb is None else pb
    pr = pw if pr is None else pr
    oh, ow = _out(h, kh, sh, ph, pb, dh), _out(w, kw, sw, pw, pr, dw)
    return (n, c, h, w), (kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)


CASES = {
    "3x3_s1_p1": _case(2, 3, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1),
    "odd_nonsquare": _case(1, 2, 9, 5, 3, 2, 2, 1, 1, 0, 1, 1),
    "k5_s2_p2": _case(2, 1, 8, 7, 5, 5, 2, 2, 2, 2, 1, 1),
    "dilation2": _case(1, 3, 9, 10, 3, 3, 1, 1, 2, 2, 2, 2),
    "1x1": _case(3, 4, 5, 6, 1, 1, 1, 1, 0, 0, 1, 1),
    "stride_gt_kernel": _case(1, 2, 11, 11, 2, 2, 3, 3, 0, 0, 1, 1),
    "same_even_asym": _case(2, 2, 6, 5, 4, 2, 1, 1, 1, 0, 1, 1, pb=2, pr=1),
    "pad_gt_kernel": _case(1, 1, 4, 5, 2, 3, 1, 2, 3, 2, 1, 1),
    "dilated_strided": _case(2, 2, 13, 12, 3, 2, 2, 3, 1, 2, 2, 3),
}
IDS = list(CASES)
DTYPES = [np.float32, np.float64]


def _brute_im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    n_, c_, h_, w_ = x.shape
    cols = np.zeros((n_, c_ * kh * kw, oh * ow), x.dtype)
    for n in range(n_):
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    for y in range(oh):
                        for xx in range(ow):
                            iy, ix = y * sh - ph + i * dh, xx * sw - pw + j * dw
                            if 0 <= iy < h_ and 0 <= ix < w_:
                                cols[n, (c * kh + i) * kw + j, y * ow + xx] = x[n, c, iy, ix]
    return cols


def _brute_col2im(cols, n_, c_, h_, w_, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    x = np.zeros((n_, c_, h_, w_), cols.dtype)
    for n in range(n_):
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    for y in range(oh):
                        for xx in range(ow):
                            iy, ix = y * sh - ph + i * dh, xx * sw - pw + j * dw
                            if 0 <= iy < h_ and 0 <= ix < w_:
                                x[n, c, iy, ix] += cols[n, (c * kh + i) * kw + j, y * ow + xx]
    return x


def _inputs(shape, geom, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    kh, kw, oh, ow = geom[0], geom[1], geom[8], geom[9]
    cols = rng.standard_normal((shape[0], shape[1] * kh * kw, oh * ow)).astype(dtype)
    return x, cols


# ------------------------------------------------------------------ NumPy twin


@pytest.mark.parametrize("case", IDS)
def test_numpy_twin_matches_brute_force(case):
    shape, geom = CASES[case]
    x, cols = _inputs(shape, geom, np.float64)
    got = np_im2col.im2col(x, *geom)
    assert got.shape == cols.shape and got.dtype == np.float64 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, _brute_im2col(x, *geom))
    back = np_im2col.col2im(cols, *shape, *geom)
    assert back.shape == shape and back.flags.c_contiguous
    np.testing.assert_allclose(back, _brute_col2im(cols, *shape, *geom), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", IDS)
def test_adjoint_identity(case):
    shape, geom = CASES[case]
    x, cols = _inputs(shape, geom, np.float64, seed=3)
    lhs = np.vdot(np_im2col.im2col(x, *geom), cols)
    rhs = np.vdot(x, np_im2col.col2im(cols, *shape, *geom))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


def test_numpy_twin_dtype_and_noncontiguous():
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 3)).astype(np.float32)
    xt = x.transpose(0, 3, 1, 2)  # (2, 3, 5, 6), not C-contiguous
    geom = (3, 3, 1, 1, 1, 1, 1, 1, 5, 6)
    got = np_im2col.im2col(xt, *geom)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, _brute_im2col(np.ascontiguousarray(xt), *geom))


# ------------------------------------------------------------------ NumPy-only wide (frame) layout


def _narrow(wide, c, kh, kw, n, oh, ow, wq):
    """Wide cols (C*kh*kw, N*oh*Wq) -> im2col's (N, C*kh*kw, oh*ow): drop garbage columns."""
    real = wide.reshape(c * kh * kw, n, oh, wq)[:, :, :, :ow]
    return real.reshape(c * kh * kw, n, oh * ow).transpose(1, 0, 2)


def _widen(cols, c, kh, kw, n, oh, ow, wq):
    """im2col-layout cols -> wide layout with ZERO garbage columns (what _wide_col2im needs)."""
    wide = np.zeros((c * kh * kw, n, oh, wq), cols.dtype)
    wide[..., :ow] = cols.transpose(1, 0, 2).reshape(c * kh * kw, n, oh, ow)
    return wide.reshape(c * kh * kw, -1)


def _random_geometries(count, seed=0):
    """Random (x shape, geometry) over stride, asymmetric padding, dilation, odd/even sizes."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        n, c = (int(v) for v in rng.integers(1, 3, 2))
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        dh, dw = (int(v) for v in rng.integers(1, 3, 2))
        ph, pw, pb, pr = (int(v) for v in rng.integers(0, 4, 4))
        h, w = (int(v) for v in rng.integers(1, 10, 2))
        oh, ow = _out(h, kh, sh, ph, pb, dh), _out(w, kw, sw, pw, pr, dw)
        if oh >= 1 and ow >= 1:
            out.append(((n, c, h, w), (kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)))
    return out


WIDE_CASES = list(CASES.values()) + _random_geometries(120)


@pytest.mark.parametrize("shape, geom", WIDE_CASES)
def test_wide_layout_matches_im2col_and_col2im(shape, geom):
    """The NumPy-only frame layout (polyphase, long runs) is im2col/col2im with extra columns."""
    n, c = shape[:2]
    kh, kw, oh, ow = geom[0], geom[1], geom[8], geom[9]
    x, cols = _inputs(shape, geom, np.float64, seed=sum(shape) + sum(geom))
    wide, wq = np_im2col._wide_im2col(x, *geom)
    assert wq >= ow and wide.shape == (c * kh * kw, n * oh * wq) and wide.dtype == x.dtype
    np.testing.assert_array_equal(
        _narrow(wide, c, kh, kw, n, oh, ow, wq), np_im2col.im2col(x, *geom)
    )
    back = np_im2col._wide_col2im(_widen(cols, c, kh, kw, n, oh, ow, wq), *shape, *geom)
    assert back.shape == shape and back.dtype == cols.dtype
    np.testing.assert_allclose(back, np_im2col.col2im(cols, *shape, *geom), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["k5_s2_p2", "dilated_strided", "same_even_asym"])
def test_wide_layout_matches_brute_force_float32(case):
    shape, geom = CASES[case]
    n, c = shape[:2]
    kh, kw, oh, ow = geom[0], geom[1], geom[8], geom[9]
    x, cols = _inputs(shape, geom, np.float32)
    wide, wq = np_im2col._wide_im2col(x, *geom)
    assert wide.dtype == np.float32
    np.testing.assert_array_equal(_narrow(wide, c, kh, kw, n, oh, ow, wq), _brute_im2col(x, *geom))
    back = np_im2col._wide_col2im(_widen(cols, c, kh, kw, n, oh, ow, wq), *shape, *geom)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, _brute_col2im(cols, *shape, *geom), rtol=1e-5, atol=1e-5)


def test_wide_cols_chunks_match_whole_batch():
    """FrameGeometry.cols over sample chunks (into a reused buffer) equals the whole batch."""
    shape, geom = CASES["dilated_strided"]
    x = np.random.default_rng(2).standard_normal((5,) + shape[1:])
    geo = np_im2col._FrameGeometry(5, *shape[1:], *geom)
    frames = geo.to_frames(x)
    whole = geo.cols(frames, 0, 5)
    buf = np.full(whole.size, np.nan)
    for n0, n1 in [(0, 2), (2, 4), (4, 5)]:
        part = geo.cols(frames, n0, n1, out=buf)
        np.testing.assert_array_equal(part, whole[:, n0 * geo.run : n1 * geo.run])


# ---------------------------------------------------------- NumPy-only batch-innermost layout


def _batch_outer(bi, c, kh, kw, n, oh, ow):
    """Batch-innermost cols (C*kh*kw, oh*ow*N) -> im2col's (N, C*kh*kw, oh*ow)."""
    return bi.reshape(c * kh * kw, oh * ow, n).transpose(2, 0, 1)


def _batch_inner(cols, c, kh, kw, n, oh, ow):
    return np.ascontiguousarray(cols.transpose(1, 2, 0)).reshape(c * kh * kw, oh * ow * n)


BATCH_INNER_CASES = list(CASES.values()) + _random_geometries(120, seed=1)


@pytest.mark.parametrize("shape, geom", BATCH_INNER_CASES)
def test_batch_inner_layout_matches_im2col_and_col2im(shape, geom):
    """The NumPy-only batch-innermost layout is im2col/col2im with the batch moved innermost."""
    n, c = shape[:2]
    kh, kw, oh, ow = geom[0], geom[1], geom[8], geom[9]
    x, cols = _inputs(shape, geom, np.float64, seed=sum(shape) + sum(geom))
    bi = np_im2col._batch_inner_im2col(x, *geom)
    assert bi.shape == (c * kh * kw, oh * ow * n) and bi.dtype == x.dtype
    np.testing.assert_array_equal(
        _batch_outer(bi, c, kh, kw, n, oh, ow), np_im2col.im2col(x, *geom)
    )
    back = np_im2col._batch_inner_col2im(_batch_inner(cols, c, kh, kw, n, oh, ow), *shape, *geom)
    assert back.shape == shape and back.dtype == cols.dtype
    np.testing.assert_allclose(back, np_im2col.col2im(cols, *shape, *geom), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["k5_s2_p2", "dilated_strided", "same_even_asym", "pad_gt_kernel"])
def test_batch_inner_layout_matches_brute_force_float32(case):
    shape, geom = CASES[case]
    n, c = shape[:2]
    kh, kw, oh, ow = geom[0], geom[1], geom[8], geom[9]
    x, cols = _inputs(shape, geom, np.float32)
    bi = np_im2col._batch_inner_im2col(x, *geom)
    assert bi.dtype == np.float32
    np.testing.assert_array_equal(_batch_outer(bi, c, kh, kw, n, oh, ow), _brute_im2col(x, *geom))
    back = np_im2col._batch_inner_col2im(_batch_inner(cols, c, kh, kw, n, oh, ow), *shape, *geom)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, _brute_col2im(cols, *shape, *geom), rtol=1e-5, atol=1e-5)


def test_batch_inner_row_chunks_match_whole():
    """cols/add_cols over chunks of output rows (reused buffer, partial last chunk) equal the
    whole-image versions."""
    shape, geom = CASES["dilated_strided"]
    n = 5
    x = np.random.default_rng(3).standard_normal((n,) + shape[1:])
    geo = np_im2col._BatchInnerGeometry(n, *shape[1:], *geom)
    p = geo.to_padded(x)
    whole = geo.cols(p, 0, geo.oh)
    step = geo.ow * n
    buf = np.full(whole.size, np.nan)
    dp_whole, dp_parts = geo.new_padded(x.dtype), geo.new_padded(x.dtype)
    geo.add_cols(whole, dp_whole, 0, geo.oh)
    for y0, y1 in [(0, 2), (2, 3), (3, geo.oh)]:
        part = geo.cols(p, y0, y1, out=buf)
        np.testing.assert_array_equal(part, whole[:, y0 * step : y1 * step])
        geo.add_cols(part.copy(), dp_parts, y0, y1)
    np.testing.assert_allclose(dp_parts, dp_whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(geo.from_padded(p), x)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(37, 3, 5, 4), (1, 2, 1, 3), (130, 5, 9, 11), (0, 2, 3, 3)])
def test_blocked_batch_transposes(shape, dtype, monkeypatch):
    """(N, C, H, W) <-> (C, H, W, N) through blocks (batch not a multiple of the block, blocks
    smaller than a channel) equals np.transpose; the fused add broadcasts per channel."""
    monkeypatch.setattr(np_im2col, "_FROM_BLOCK_BYTES", 40 * np.dtype(dtype).itemsize)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(dtype)
    t = np.full(shape[1:] + shape[:1], np.nan, dtype)
    np_im2col._to_batch_inner(x, t)
    np.testing.assert_array_equal(t, x.transpose(1, 2, 3, 0))
    back = np.full(shape, np.nan, dtype)
    add = rng.standard_normal((shape[1], 1, 1)).astype(dtype)
    np_im2col._from_batch_inner(t, back, add=add)
    np.testing.assert_array_equal(back, x + add)
    np_im2col._from_batch_inner(t, back)
    np.testing.assert_array_equal(back, x)


def test_wide_helpers_are_private():
    """NumPy-only helpers (frame and batch-innermost layouts) must not become backend
    primitives (the CUDA side lacks them); the batch-in-columns pair exists on both."""
    expected = ["im2col", "col2im", "im2col_cn", "col2im_cn"]
    assert np_im2col.__all__ == expected == cuda_im2col.__all__


# ------------------------------------------------------------------ batch-in-columns layout


def _cn(cols):
    """Per-sample cols (N, C*kh*kw, L) -> batch-in-columns (C*kh*kw, N*L)."""
    n, ck, L = cols.shape
    return np.ascontiguousarray(cols.transpose(1, 0, 2)).reshape(ck, n * L)


def _cn_inputs(shape, geom, dtype, seed=0):
    x, cols = _inputs(shape, geom, dtype, seed)
    return x, _cn(cols)


CN_CASES = list(CASES.values()) + _random_geometries(40, seed=2)


@pytest.mark.parametrize("shape, geom", CN_CASES)
def test_cn_numpy_twin_matches_brute_force(shape, geom):
    """im2col_cn / col2im_cn are im2col / col2im with the batch moved into the columns."""
    x, cols2 = _cn_inputs(shape, geom, np.float64, seed=sum(shape) + sum(geom))
    got = np_im2col.im2col_cn(x, *geom)
    assert got.shape == cols2.shape and got.dtype == np.float64 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, _cn(_brute_im2col(x, *geom)))
    n, ck, nl = shape[0], cols2.shape[0], cols2.shape[1]
    per_sample = cols2.reshape(ck, n, nl // n).transpose(1, 0, 2)
    back = np_im2col.col2im_cn(cols2, *shape, *geom)
    assert back.shape == shape and back.dtype == np.float64 and back.flags.c_contiguous
    np.testing.assert_allclose(
        back, _brute_col2im(per_sample, *shape, *geom), rtol=1e-12, atol=1e-12
    )
    assert np.vdot(got, cols2) == pytest.approx(np.vdot(x, back), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", IDS)
def test_emulated_cn_kernels_match_numpy(kernel_parity, launch_grid, case, dtype):
    shape, geom = CASES[case]
    x, cols2 = _cn_inputs(shape, geom, dtype)
    got, _ = kernel_parity("im2col", "im2col_cn", x, *geom, launch=launch_grid, exact=True)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    back, _ = kernel_parity(
        "im2col", "col2im_cn", cols2, *shape, *geom, launch=launch_grid, rtol=tol, atol=tol
    )
    assert got.dtype == dtype and back.dtype == dtype
    assert got.flags.c_contiguous and back.flags.c_contiguous


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape, geom", CN_CASES[len(CASES) :])
def test_emulated_cn_kernels_random_geometries(emulate, shape, geom, dtype):
    """Random stride / dilation / asymmetric padding (bottom/right through oh, ow): the
    kernels equal the brute-force reference, and col2im_cn equals the per-sample col2im."""
    x, cols2 = _cn_inputs(shape, geom, dtype, seed=len(shape) + sum(geom))
    with emulate(grid_cap=2, block=32):
        got = cuda_im2col.im2col_cn(x, *geom)
        back = cuda_im2col.col2im_cn(cols2, *shape, *geom)
        n, ck = shape[0], cols2.shape[0]
        per_sample = np.ascontiguousarray(cols2.reshape(ck, n, -1).transpose(1, 0, 2))
        back_ref = cuda_im2col.col2im(per_sample, *shape, *geom)
    np.testing.assert_array_equal(got, _cn(_brute_im2col(x, *geom)))
    np.testing.assert_array_equal(back, back_ref)  # same gather, same summation order


def test_emulated_cn_noncontiguous_and_empty_batch(emulate):
    x = np.random.default_rng(1).standard_normal((2, 5, 6, 3)).transpose(0, 3, 1, 2)
    geom = (2, 3, 2, 1, 1, 0, 1, 1, 3, 4)
    with emulate(grid_cap=2, block=32):
        got = cuda_im2col.im2col_cn(x, *geom)
        back = cuda_im2col.col2im_cn(got.T.copy().T, 2, 3, 5, 6, *geom)  # F-ordered cols
        empty = cuda_im2col.im2col_cn(np.zeros((0, 3, 5, 6)), *geom)
        empty_back = cuda_im2col.col2im_cn(np.zeros((18, 0)), 0, 3, 5, 6, *geom)
    np.testing.assert_array_equal(got, np_im2col.im2col_cn(x, *geom))
    np.testing.assert_allclose(back, np_im2col.col2im_cn(got, 2, 3, 5, 6, *geom), rtol=1e-13)
    assert empty.shape == (18, 0) and empty_back.shape == (0, 3, 5, 6)


# ------------------------------------------------------------------ CUDA kernels (emulated)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", IDS)
def test_emulated_kernels_match_numpy(kernel_parity, launch_grid, case, dtype):
    shape, geom = CASES[case]
    x, cols = _inputs(shape, geom, dtype)
    got, _ = kernel_parity("im2col", "im2col", x, *geom, launch=launch_grid, exact=True)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    back, _ = kernel_parity(
        "im2col", "col2im", cols, *shape, *geom, launch=launch_grid, rtol=tol, atol=tol
    )
    assert got.dtype == dtype and back.dtype == dtype


@pytest.mark.parametrize("case", ["k5_s2_p2", "same_even_asym", "dilated_strided"])
def test_emulated_kernels_match_brute_force(emulate, case):
    shape, geom = CASES[case]
    x, cols = _inputs(shape, geom, np.float64, seed=5)
    with emulate(grid_cap=2, block=64):
        got = cuda_im2col.im2col(x, *geom)
        back = cuda_im2col.col2im(cols, *shape, *geom)
    np.testing.assert_array_equal(got, _brute_im2col(x, *geom))
    np.testing.assert_allclose(back, _brute_col2im(cols, *shape, *geom), rtol=1e-12, atol=1e-12)
    assert np.vdot(got, cols) == pytest.approx(np.vdot(x, back), rel=1e-12)


def test_emulated_noncontiguous_and_empty_batch(emulate):
    x = np.random.default_rng(1).standard_normal((2, 5, 6, 3)).transpose(0, 3, 1, 2)
    geom = (2, 3, 2, 1, 1, 0, 1, 1, 3, 4)
    with emulate(grid_cap=2, block=32):
        got = cuda_im2col.im2col(x, *geom)
        empty = cuda_im2col.im2col(np.zeros((0, 3, 5, 6)), *geom)
        empty_back = cuda_im2col.col2im(np.zeros((0, 18, 12)), 0, 3, 5, 6, *geom)
    np.testing.assert_array_equal(got, np_im2col.im2col(x, *geom))
    assert empty.shape == (0, 18, 12) and empty_back.shape == (0, 3, 5, 6)


# ------------------------------------------------------------------ validation (both backends)


@pytest.fixture(params=["numpy", "emulated"])
def ops(request):
    if request.param == "numpy":
        yield np_im2col
        return
    with request.getfixturevalue("emulate")():
        yield cuda_im2col


GEOM = (3, 3, 1, 1, 1, 1, 1, 1, 4, 4)


def test_errors_name_op_and_shapes(ops):
    with pytest.raises(ValueError, match=r"im2col.*\(N, C, H, W\).*\(4, 4\)"):
        ops.im2col(np.zeros((4, 4)), *GEOM)
    with pytest.raises(TypeError, match="im2col.*float32 or float64.*int64"):
        ops.im2col(np.zeros((1, 1, 4, 4), np.int64), *GEOM)
    with pytest.raises(TypeError, match="im2col.*float16"):
        ops.im2col(np.zeros((1, 1, 4, 4), np.float16), *GEOM)
    with pytest.raises(ValueError, match="im2col: ph"):
        ops.im2col(np.zeros((1, 1, 4, 4)), 3, 3, 1, 1, -1, 1, 1, 1, 4, 4)
    with pytest.raises(ValueError, match="im2col: sh"):
        ops.im2col(np.zeros((1, 1, 4, 4)), 3, 3, 0, 1, 1, 1, 1, 1, 4, 4)
    with pytest.raises(TypeError, match="im2col: kh must be an integer"):
        ops.im2col(np.zeros((1, 1, 4, 4)), 3.0, 3, 1, 1, 1, 1, 1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"col2im.*\(2, 18, 16\).*\(2, 18, 15\)"):
        ops.col2im(np.zeros((2, 18, 15)), 2, 2, 4, 4, *GEOM)
    with pytest.raises(TypeError, match="col2im.*float32 or float64"):
        ops.col2im(np.zeros((2, 18, 16), np.int32), 2, 2, 4, 4, *GEOM)


def test_cn_errors_name_op_and_shapes(ops):
    with pytest.raises(ValueError, match=r"im2col_cn.*\(N, C, H, W\).*\(4, 4\)"):
        ops.im2col_cn(np.zeros((4, 4)), *GEOM)
    with pytest.raises(TypeError, match="im2col_cn.*float16"):
        ops.im2col_cn(np.zeros((1, 1, 4, 4), np.float16), *GEOM)
    with pytest.raises(ValueError, match="im2col_cn: sh"):
        ops.im2col_cn(np.zeros((1, 1, 4, 4)), 3, 3, 0, 1, 1, 1, 1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"col2im_cn.*\(C\*kh\*kw, N\*oh\*ow\).*\(18, 32\)"):
        ops.col2im_cn(np.zeros((2, 18, 16)), 2, 2, 4, 4, *GEOM)
    with pytest.raises(ValueError, match=r"col2im_cn.*\(18, 32\).*\(18, 31\)"):
        ops.col2im_cn(np.zeros((18, 31)), 2, 2, 4, 4, *GEOM)
    with pytest.raises(TypeError, match="col2im_cn.*float32 or float64"):
        ops.col2im_cn(np.zeros((18, 32), np.int32), 2, 2, 4, 4, *GEOM)
    with pytest.raises(ValueError, match="col2im_cn: ph"):
        ops.col2im_cn(np.zeros((18, 32)), 2, 2, 4, 4, 3, 3, 1, 1, -1, 1, 1, 1, 4, 4)


# ------------------------------------------------------------------ real GPU


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="no usable CUDA device (CuPy)")
@pytest.mark.parametrize("grid_cap", [1, 3, None])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", IDS)
def test_gpu_kernels_match_numpy(case, dtype, grid_cap):
    from gpucnn.backend.device import cupy_module

    cupy = cupy_module()

    from gpucnn.backend.kernels import get_kernel
    from gpucnn.backend.runtime import KernelRuntime

    shape, geom = CASES[case]
    x, cols = _inputs(shape, geom, dtype)
    with use_runtime(KernelRuntime(cupy, get_kernel, grid_cap=grid_cap, block=64)):
        got = cuda_im2col.im2col(cupy.asarray(x), *geom).get()
        back = cuda_im2col.col2im(cupy.asarray(cols), *shape, *geom).get()
    np.testing.assert_array_equal(got, np_im2col.im2col(x, *geom))
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(back, np_im2col.col2im(cols, *shape, *geom), rtol=tol, atol=tol)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="no usable CUDA device (CuPy)")
@pytest.mark.parametrize("grid_cap", [1, 3, None])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", IDS)
def test_gpu_cn_kernels_match_numpy(case, dtype, grid_cap):
    from gpucnn.backend.device import cupy_module

    cupy = cupy_module()

    from gpucnn.backend.kernels import get_kernel
    from gpucnn.backend.runtime import KernelRuntime

    shape, geom = CASES[case]
    x, cols2 = _cn_inputs(shape, geom, dtype)
    with use_runtime(KernelRuntime(cupy, get_kernel, grid_cap=grid_cap, block=64)):
        got = cuda_im2col.im2col_cn(cupy.asarray(x), *geom).get()
        back = cuda_im2col.col2im_cn(cupy.asarray(cols2), *shape, *geom).get()
    np.testing.assert_array_equal(got, np_im2col.im2col_cn(x, *geom))
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(back, np_im2col.col2im_cn(cols2, *shape, *geom), rtol=tol, atol=tol)
