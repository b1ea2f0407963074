"""Tensor-core implicit-GEMM convolution (cuda/conv_igemm_tc.cu) and the fused forward epilogue
(cuda/epilogue.cuh) of both the SIMT (cuda/conv_igemm.cu) and tensor-core forwards.

Tolerances. Under the host emulator the MMA steps sum in k order in float32 and products of
TF32 / FP16 / BF16 values are exact in float32, so each output is a float32 sum of the SAME
rounded products the twin sums in float64 (the twin rounds the inputs exactly as the kernels
do). The difference is float32 summation error only: at most ``K * 2**-24 * (|A| @ |B|)``,
in practice ~1e-7 of the output's scale for these sizes. The checks use ``atol = 1e-5 *
scale`` (scale: the largest |output| of the twin, at least 1) and ``rtol = 1e-5``: tight enough
that one wrongly rounded operand (2**-11 relative, TF32 / FP16; 2**-8, BF16) or a dropped or
doubled tap fails. A real GPU adds in another order (same bound).

Geometries: those of tests/test_conv_igemm.py (stride, asymmetric padding, dilation, groups,
depthwise, 1x1, tails everywhere, several row and column tiles). Two tensor-core tiles, capped
grids, split-K; every activation with and without bias and with the pre-activation output;
the error messages for dtypes a precision does not take; NVRTC for the non-default tiles.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gpucnn.backend.geometry import Conv2dGeometry
from gpucnn.backend.precision import bf16_bits, round_bf16, round_fp16, round_tf32

try:  # optional: bfloat16 tensors are uint16 bit patterns without it
    import ml_dtypes
except ImportError:  # pragma: no cover - depends on the environment
    ml_dtypes = None

# (input shape, weight shape, keyword arguments of Conv2dGeometry.create), as
# tests/test_conv_igemm.py: C, O, H*W and N*oh*ow are no multiple of any tile.
GEOMS = {
    "3x3_s1_p1": ((2, 3, 7, 6), (5, 3, 3, 3), dict(padding=1)),
    "3x3_s2_p1_n1": ((1, 4, 9, 8), (6, 4, 3, 3), dict(stride=2, padding=1)),
    "same_dil2": ((2, 3, 8, 7), (4, 3, 3, 3), dict(padding="same", dilation=2)),
    "even_same": ((2, 3, 6, 6), (4, 3, 2, 2), dict(padding="same")),  # asymmetric same pads
    "asym_pads": ((2, 3, 6, 5), (4, 3, 2, 3), dict(padding=(0, 1, 2, 1))),
    "strided_rect": ((2, 4, 9, 8), (6, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), groups=2)),
    "groups2_s2_dil2": ((2, 4, 11, 10), (6, 2, 3, 3), dict(stride=2, dilation=2, groups=2)),
    "depthwise": ((2, 6, 7, 7), (6, 1, 3, 3), dict(padding=1, groups=6)),
    "depthwise_x2": ((1, 3, 6, 7), (6, 1, 3, 3), dict(stride=2, padding=1, groups=3)),
    "1x1": ((2, 5, 6, 6), (3, 5, 1, 1), {}),
    "1x1_n1": ((1, 5, 6, 6), (3, 5, 1, 1), {}),
    "1x1_s2": ((2, 5, 7, 7), (3, 5, 1, 1), dict(stride=2)),
    "5x5_valid": ((2, 2, 9, 9), (3, 2, 5, 5), {}),
    # more than one row and column tile of both TC tiles, K = 45 > BK (several K-slices)
    "multi_tile": ((2, 5, 9, 7), (70, 5, 3, 3), dict(padding=1)),
}
PRECS = ("tf32", "fp16", "bf16")
TC_TILES = ("64x64", "32x32")  # the default and a small one (128x128: NVRTC only, below)
ACTS = (None, "relu", "leaky_relu", "gelu", "gelu_tanh")
REL = 1e-5  # see the module docstring


def _cast(a: np.ndarray, prec: str) -> np.ndarray:
    """float32 data as the launchers take it at ``prec``."""
    if prec == "fp16":
        return a.astype(np.float16)
    if prec == "bf16":
        return bf16_bits(a)  # uint16 bit patterns (ml_dtypes.bfloat16: a test below)
    return a.astype(np.float32)


def _data(name: str, dtype: Any = np.float32) -> tuple:
    xs, ws, kw = GEOMS[name]
    g = Conv2dGeometry.create(xs, ws, **kw)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    dy = rng.standard_normal(g.output_shape).astype(dtype)
    return g, x, w, b, dy


def _tol(want: Any) -> dict:
    """``rtol`` and ``atol`` relative to the scale of the twin's output(s)."""
    arrs = want if isinstance(want, tuple) else (want,)
    scale = max([1.0] + [float(np.max(np.abs(a))) for a in arrs if a.size])
    return dict(rtol=REL, atol=REL * scale)


def _check(kernel_parity: Callable, fn: str, *args: Any, launch: Any = None, label: str = "",
           **kw: Any) -> tuple:  # fmt: skip
    """``kernel_parity`` of ``conv_igemm.<fn>(*args, **kw)`` at tolerances of the twin's scale."""
    from gpucnn.backend.numpy_ops import conv_igemm as twin

    tol = _tol(getattr(twin, fn)(*args, **kw))

    def call(m: Any, *a: Any) -> Any:
        return getattr(m, fn)(*a, **kw)

    call.__name__ = fn
    return kernel_parity("conv_igemm", call, *args, launch=launch, label=f"{fn} {label}", **tol)


# ------------------------------------------------------------------ tensor-core parity


@pytest.mark.parametrize("tile", TC_TILES)
@pytest.mark.parametrize("prec", PRECS)
@pytest.mark.parametrize("name", list(GEOMS))
def test_tc_kernels_match_the_twin(name: str, prec: str, tile: str, kernel_parity) -> None:  # noqa: ANN001
    """Forward (with and without bias), backward-data and backward-weight (one split and
    several) of every tensor-core kernel equal the twin on the same rounded inputs."""
    from gpucnn.backend.cuda_ops import conv_igemm

    g, x, w, b, dy = _data(name)
    x, w, dy = _cast(x, prec), _cast(w, prec), _cast(dy, prec)  # bias stays float32
    with conv_igemm.use_tc_tile(tile):
        got, _ = _check(kernel_parity, "conv2d_igemm_forward", x, w, b, g, precision=prec)
        assert got.dtype == np.float32
        _check(kernel_parity, "conv2d_igemm_forward", x, w, None, g, precision=prec)
        _check(kernel_parity, "conv2d_igemm_backward_data", dy, w, g, precision=prec)
        for splits in (None, 1, 3):
            _check(kernel_parity, "conv2d_igemm_backward_weight", dy, x, g, splits,
                   precision=prec, label=f"splits={splits}")  # fmt: skip


def _seq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sum over k of a[..., :, k, None] * b[..., None, k, :]`` in float32, k ascending (the
    emulated MMA's order). a (..., M, K), b (..., K, L) -> (..., M, L)."""
    acc = np.zeros(a.shape[:-1] + b.shape[-1:], np.float32)
    for k in range(a.shape[-1]):
        acc = acc + a[..., :, k : k + 1] * b[..., k : k + 1, :]
    return acc


def _dy_gather(dy: np.ndarray, g: Conv2dGeometry) -> np.ndarray:
    """The backward-data B operand: (N, O, KH*KW, H*W), tap (i, j) of dy for each input pixel
    (zero where the tap reaches no output position), as conv_igemm.cuh's DataProblem::b."""
    n, o = dy.shape[:2]
    out = np.zeros((n, o, g.kh * g.kw, g.h * g.w), np.float32)
    iy, ix = np.divmod(np.arange(g.h * g.w), g.w)
    for i in range(g.kh):
        for j in range(g.kw):
            ty, tx = iy + g.pt - i * g.dh, ix + g.pl - j * g.dw
            ok = (ty >= 0) & (tx >= 0) & (ty % g.sh == 0) & (tx % g.sw == 0)
            p, q = ty // g.sh, tx // g.sw
            ok &= (p < g.oh) & (q < g.ow)
            out[:, :, i * g.kw + j, ok] = dy[:, :, p[ok], q[ok]]
    return out


@pytest.mark.parametrize("prec", PRECS)
@pytest.mark.parametrize("name", ["strided_rect", "groups2_s2_dil2", "asym_pads", "multi_tile"])
def test_tc_kernels_are_the_k_ordered_float32_sum(name: str, prec: str, emulate) -> None:  # noqa: ANN001
    """Bit for bit: under the emulator every output of the three passes (one split) is the
    float32 sum over its reduction index in ascending order of the rounded products, the order
    the driver's K-slices and MMA steps walk (k = (c, i, j), (o, i, j) and (n, p, q))."""
    from gpucnn.backend.cuda_ops import conv_igemm
    from gpucnn.backend.numpy_ops.conv import reference

    g, x, w, b, dy = _data(name)
    rnd = {"tf32": round_tf32, "fp16": round_fp16, "bf16": round_bf16}[prec]
    xr, wr, dyr = rnd(x), rnd(w), rnd(dy)
    G, og, cg, L = g.groups, g.o // g.groups, g.cg, g.oh * g.ow
    ck = cg * g.kh * g.kw
    cols = reference.columns(xr, g).astype(np.float32).reshape(g.n, G, ck, L)
    w2 = wr.reshape(G, og, ck)
    y = _seq(w2[None], cols).reshape(g.output_shape)  # (N, G, og, L)
    dyg = dyr.reshape(g.n, G, og, L)
    dw = _seq(dyg.transpose(1, 2, 0, 3).reshape(G, og, g.n * L),
              cols.transpose(1, 2, 0, 3).reshape(G, ck, g.n * L).transpose(0, 2, 1))  # fmt: skip
    bd = _dy_gather(dyr, g).reshape(g.n, G, og * g.kh * g.kw, g.h * g.w)
    wd = wr.reshape(G, og, cg, g.kh * g.kw).transpose(0, 2, 1, 3).reshape(G, cg, -1)
    dx = _seq(wd[None], bd).reshape(g.n, g.c, g.h, g.w)
    xc, wc, dyc = _cast(x, prec), _cast(w, prec), _cast(dy, prec)
    with emulate(), conv_igemm.use_tc_tile("32x32"):
        np.testing.assert_array_equal(
            conv_igemm.conv2d_igemm_forward(xc, wc, None, g, precision=prec), y)
        np.testing.assert_array_equal(
            conv_igemm.conv2d_igemm_backward_data(dyc, wc, g, precision=prec), dx)
        np.testing.assert_array_equal(
            conv_igemm.conv2d_igemm_backward_weight(dyc, xc, g, 1, precision=prec),
            dw.reshape(g.o, cg, g.kh, g.kw))  # fmt: skip


@pytest.mark.parametrize("launch", [(1, 32), (2, 64), (3, 256)], ids=["grid1", "grid2", "grid3"])
@pytest.mark.parametrize("tile", TC_TILES)
def test_tc_any_grid_size_gives_the_same_result(launch: tuple, tile: str, kernel_parity) -> None:  # noqa: ANN001
    """The blocks loop over the tiles (grid-stride): a capped grid computes every tile (the
    block size is the tile's; the launch's ``block`` only sizes the split-K sum)."""
    from gpucnn.backend.cuda_ops import conv_igemm

    g, x, w, b, dy = _data("multi_tile")
    for prec in PRECS:
        xc, wc, dyc = _cast(x, prec), _cast(w, prec), _cast(dy, prec)
        with conv_igemm.use_tc_tile(tile):
            _check(kernel_parity, "conv2d_igemm_forward", xc, wc, b, g, launch=launch,
                   precision=prec, activation="relu")  # fmt: skip
            _check(kernel_parity, "conv2d_igemm_backward_data", dyc, wc, g, launch=launch,
                   precision=prec)  # fmt: skip
            _check(kernel_parity, "conv2d_igemm_backward_weight", dyc, xc, g, 4, launch=launch,
                   precision=prec)  # fmt: skip


def test_tc_large_tile(kernel_parity) -> None:  # noqa: ANN001
    """The 128x128 tile (8 warps of 64x32, the GPU benchmark's) on one problem, all passes."""
    from gpucnn.backend.cuda_ops import conv_igemm

    g, x, w, b, dy = _data("multi_tile")
    with conv_igemm.use_tc_tile("128x128"):
        _check(kernel_parity, "conv2d_igemm_forward", x, w, b, g, precision="tf32",
               activation="gelu_tanh")  # fmt: skip
        _check(kernel_parity, "conv2d_igemm_backward_data", dy, w, g, precision="tf32")
        _check(kernel_parity, "conv2d_igemm_backward_weight", dy, x, g, 2, precision="tf32")


@pytest.mark.parametrize("prec", PRECS)
def test_tc_is_within_the_input_rounding_of_float32(prec: str, emulate) -> None:  # noqa: ANN001
    """Against the float64 conv of the UNROUNDED inputs: within the rounding of both operands
    (``2u * conv(|x|, |w|)``, u = 2**-11 for TF32 / FP16, 2**-8 for BF16) plus the float32 sum."""
    from gpucnn.backend.cuda_ops import conv_igemm
    from gpucnn.backend.numpy_ops.conv import reference

    g, x, w, b, _ = _data("multi_tile")
    if prec == "fp16":  # the float16 tensors ARE the inputs: their float32 values are exact
        x, w = round_fp16(x), round_fp16(w)
    want = reference.forward(x.astype(np.float64), w.astype(np.float64), None, g)[0]
    mag = reference.forward(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), None, g)[0]
    with emulate():
        got = conv_igemm.conv2d_igemm_forward(_cast(x, prec), _cast(w, prec), None, g,
                                              precision=prec)  # fmt: skip
    u = {"tf32": 2.0**-11, "fp16": 0.0, "bf16": 2.0**-8}[prec]
    k = g.cg * g.kh * g.kw
    bound = (2 * u + k * 2.0**-24) * mag + 1e-6
    assert np.all(np.abs(got - want) <= bound)
    if prec != "fp16":  # and the rounding did happen: the unrounded float32 result differs
        assert np.max(np.abs(got - want)) > 1e-4


def test_tc_rounds_tf32_ties_away_and_takes_ml_dtypes_bfloat16(emulate) -> None:  # noqa: ANN001
    """tf32: the staged value is round_tf32(x) (a 1x1 conv of one pixel returns w * x exactly
    for these values); bf16: ml_dtypes.bfloat16 arrays give the same result as bit patterns."""
    from gpucnn.backend.cuda_ops import conv_igemm

    g = Conv2dGeometry.create((1, 1, 1, 4), (1, 1, 1, 1))
    x = np.array([1 + 2.0**-11, 1 + 3 * 2.0**-11, -(1 + 2.0**-11), 1 + 2.0**-12],
                 dtype=np.float32).reshape(1, 1, 1, 4)  # fmt: skip
    w = np.ones((1, 1, 1, 1), np.float32)
    with emulate():
        y = conv_igemm.conv2d_igemm_forward(x, w, None, g, precision="tf32")
    np.testing.assert_array_equal(y, round_tf32(x))
    assert y[0, 0, 0, 0] == 1 + 2.0**-10  # the tie went away from zero
    if ml_dtypes is None:
        pytest.skip("ml_dtypes is not installed")
    gg, xx, ww, bb, _ = _data("3x3_s1_p1")
    with emulate():
        a = conv_igemm.conv2d_igemm_forward(xx.astype(ml_dtypes.bfloat16),
                                            ww.astype(ml_dtypes.bfloat16), bb, gg,
                                            precision="bf16")  # fmt: skip
        c = conv_igemm.conv2d_igemm_forward(bf16_bits(xx), bf16_bits(ww), bb, gg,
                                            precision="bf16")  # fmt: skip
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(round_bf16(xx), xx.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_tc_empty_batch_and_more_splits_than_slices(emulate) -> None:  # noqa: ANN001
    from gpucnn.backend.cuda_ops import conv_igemm
    from gpucnn.backend.numpy_ops import conv_igemm as twin

    g, x, w, b, dy = _data("3x3_s2_p1_n1")  # N*oh*ow = 20: one K-slice of 32
    with emulate():
        got = conv_igemm.conv2d_igemm_backward_weight(dy, x, g, 5, precision="tf32")
    want = twin.conv2d_igemm_backward_weight(dy, x, g, precision="tf32")
    np.testing.assert_allclose(got, want, **_tol(want))
    g0 = Conv2dGeometry.create((0, 4, 9, 8), (6, 4, 3, 3), stride=2, padding=1)
    x0, dy0 = np.zeros((0, 4, 9, 8), np.float32), np.zeros(g0.output_shape, np.float32)
    with emulate():
        y0, p0 = conv_igemm.conv2d_igemm_forward(x0, w, b, g0, precision="tf32",
                                                 return_preactivation=True)  # fmt: skip
        assert y0.shape == p0.shape == (0, 6, 5, 4)
        assert conv_igemm.conv2d_igemm_backward_data(dy0, w, g0, precision="tf32").shape == (
            0, 4, 9, 8)  # fmt: skip
        dw0 = conv_igemm.conv2d_igemm_backward_weight(dy0, x0, g0, precision="tf32")
    np.testing.assert_array_equal(dw0, np.zeros_like(w))


# ------------------------------------------------------------------ fused epilogue


@pytest.mark.parametrize("prec", [None, "fp32", *PRECS], ids=["simt", "fp32", *PRECS])
@pytest.mark.parametrize("act", ACTS, ids=[str(a) for a in ACTS])
def test_fused_epilogue_every_activation(prec: str | None, act: str | None, kernel_parity) -> None:  # noqa: ANN001
    """act(conv + bias) with and without bias, and the pre-activation output, for the SIMT
    forward (float32 and float64) and every tensor-core forward."""
    g, x, w, b, _ = _data("groups2_s2_dil2")
    dtypes = (np.float32, np.float64) if prec is None else (np.float32,)
    for dt in dtypes:
        xc = x.astype(dt) if prec is None else _cast(x, prec)
        wc = w.astype(dt) if prec is None else _cast(w, prec)
        bc = b.astype(dt)
        tol = {} if dt == np.float32 else dict(rtol=1e-12, atol=1e-12)
        for bias in (bc, None):
            kw = dict(precision=prec, activation=act, slope=0.2)
            if dt == np.float64:
                kernel_parity("conv_igemm", lambda m, *a, k=kw: m.conv2d_igemm_forward(*a, **k),
                              xc, wc, bias, g, **tol)  # fmt: skip
                got, _ = kernel_parity(
                    "conv_igemm",
                    lambda m, *a, k=kw: m.conv2d_igemm_forward(*a, **k, return_preactivation=True),
                    xc, wc, bias, g, **tol)  # fmt: skip
            else:
                _check(kernel_parity, "conv2d_igemm_forward", xc, wc, bias, g, **kw)
                got, _ = _check(kernel_parity, "conv2d_igemm_forward", xc, wc, bias, g,
                                return_preactivation=True, **kw)  # fmt: skip
            y, pre = got
            assert y.shape == pre.shape == g.output_shape
            if act is None:
                np.testing.assert_array_equal(y, pre)


@pytest.mark.parametrize("prec", [None, "tf32", "bf16"], ids=["simt", "tf32", "bf16"])
def test_fused_equals_conv_then_the_activation_kernel(prec: str | None, emulate) -> None:  # noqa: ANN001
    """The fused epilogue equals the unfused route (conv with bias, then cuda/activation.cu's
    kernel on the result) within float32 rounding: same formulas."""
    from gpucnn.backend.cuda_ops import activation, conv_igemm

    g, x, w, b, _ = _data("3x3_s1_p1")
    xc, wc = (x, w) if prec is None else (_cast(x, prec), _cast(w, prec))
    with emulate():
        conv = conv_igemm.conv2d_igemm_forward(xc, wc, b, g, precision=prec)
        for act, p in (("relu", 0.0), ("leaky_relu", 0.1), ("gelu", 0.0), ("gelu_tanh", 0.0)):
            fused, pre = conv_igemm.conv2d_igemm_forward(
                xc, wc, b, g, precision=prec, activation=act, slope=p, return_preactivation=True
            )
            np.testing.assert_array_equal(pre, conv)
            sep = activation.activation_forward(conv, act, p)
            np.testing.assert_allclose(fused, sep, rtol=1e-6, atol=1e-6, err_msg=act)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("ops", ["numpy_ops", "cuda_ops"])
def test_bad_precision_dtype_or_activation_is_a_clear_error(ops: str, emulate) -> None:  # noqa: ANN001
    import importlib

    m = importlib.import_module(f"gpucnn.backend.{ops}.conv_igemm")
    g, x, w, b, dy = _data("3x3_s1_p1")
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    with emulate():
        with pytest.raises(TypeError, match=r"conv2d_igemm_forward: precision 'tf32' takes "
                                            r"float32 inputs, got x of dtype float64"):
            m.conv2d_igemm_forward(x64, w64, b, g, precision="tf32")
        with pytest.raises(TypeError, match=r"conv2d_igemm_forward: precision 'fp16' takes "
                                            r"float16 inputs, got x of dtype float32"):
            m.conv2d_igemm_forward(x, w, b, g, precision="fp16")
        with pytest.raises(TypeError, match=r"precision 'fp16' .* got weight of dtype float32"):
            m.conv2d_igemm_forward(x.astype(np.float16), w, b, g, precision="fp16")
        with pytest.raises(TypeError, match=r"conv2d_igemm_backward_data: precision 'bf16' "
                                            r"takes bfloat16 .*uint16.* got dy of dtype float32"):
            m.conv2d_igemm_backward_data(dy, w, g, precision="bf16")
        with pytest.raises(TypeError, match=r"conv2d_igemm_backward_weight: precision 'fp32' "
                                            r"takes float32 inputs, got dy of dtype float64"):
            m.conv2d_igemm_backward_weight(dy.astype(np.float64), x64, g, precision="fp32")
        with pytest.raises(ValueError, match=r"conv2d_igemm_forward: unknown precision 'int8'"):
            m.conv2d_igemm_forward(x, w, b, g, precision="int8")
        with pytest.raises(ValueError, match=r"conv2d_igemm_forward: unknown activation 'elu'"):
            m.conv2d_igemm_forward(x, w, b, g, activation="elu")
        with pytest.raises(TypeError, match=r"conv2d_igemm_forward.*float16"):
            m.conv2d_igemm_forward(x.astype(np.float16), w.astype(np.float16), b, g)
    if ops == "cuda_ops":
        with pytest.raises(ValueError, match="tensor-core tile must be one of"):
            with m.use_tc_tile("8x8"):
                pass


# ------------------------------------------------------------------ NVRTC


def test_nvrtc_compiles_every_tc_tile() -> None:
    """tests/test_nvrtc.py compiles cuda/conv_igemm_tc.cu with its default defines; every
    other tensor-core tile must compile cleanly too, for sm_80 and sm_90."""
    from gpucnn.backend.cuda_ops.conv_igemm import TC_TILES as TILE_CONFIGS
    from gpucnn.backend.kernels import (
        kernel_source_path,
        module_options,
        module_source,
        normalize_defines,
    )
    from gpucnn.testing.nvrtc import NvrtcUnavailable, compile_with_nvrtc, nvrtc_version

    try:
        nvrtc_version()
    except NvrtcUnavailable as exc:
        pytest.skip(str(exc))
    path = kernel_source_path("conv_igemm_tc")
    # sm_75: mma.cuh's portable shuffle bodies (the backend probe compiles every family on the
    # device it finds, pre-Ampere included)
    r = compile_with_nvrtc(module_source(path), path.name, module_options(path), "sm_75")
    assert r.ok and not r.log.strip(), ("default", "sm_75", r.log)
    for name, tile in TILE_CONFIGS.items():
        if tile.defines() is None:
            continue
        defines = normalize_defines(tile.defines())
        for arch in ("sm_80", "sm_90"):
            r = compile_with_nvrtc(module_source(path), path.name,
                                   module_options(path, defines), arch)  # fmt: skip
            assert r.ok and not r.log.strip(), (name, arch, r.log)
