"""Our implicit-GEMM convolution kernels (cuda/conv_igemm.cu): emulator parity with the NumPy
reference over a grid of geometries, dtypes, tiles and launch grids; the ``"igemm"``
algorithm of the CUDA conv primitives; the whole autograd op on the simulated device; NVRTC
for the non-default tile."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from gpucnn.backend.geometry import Conv2dGeometry
from gpucnn.backend.numpy_ops.conv import reference

# (input shape, weight shape, keyword arguments of Conv2dGeometry.create). Odd sizes: C, O,
# H*W and N*oh*ow are no multiple of any tile, so every tail is exercised.
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
    # more than one row and column tile of both tiles (M = 70 > 64, N*oh*ow = 126 > 64)
    "multi_tile": ((2, 5, 9, 7), (70, 5, 3, 3), dict(padding=1)),
}
TILES = ("64x64", "16x32", "64x128", "128x128")
DTYPES = (np.float32, np.float64)


def _tol(dtype) -> dict:  # noqa: ANN001
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def _data(name: str, dtype) -> tuple:  # noqa: ANN001
    xs, ws, kw = GEOMS[name]
    g = Conv2dGeometry.create(xs, ws, **kw)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    dy = rng.standard_normal(g.output_shape).astype(dtype)
    return g, x, w, b, dy


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(GEOMS))
def test_kernels_match_the_reference(name: str, dtype, tile: str, kernel_parity) -> None:  # noqa: ANN001
    """Forward (with and without the fused bias), backward-data and backward-weight (one
    split and several) equal the im2col + GEMM reference."""
    from gpucnn.backend.cuda_ops import conv_igemm

    g, x, w, b, dy = _data(name, dtype)
    tol = _tol(dtype)
    with conv_igemm.use_tile(tile):
        kernel_parity("conv_igemm", "conv2d_igemm_forward", x, w, b, g, **tol)
        kernel_parity("conv_igemm", "conv2d_igemm_forward", x, w, None, g, **tol)
        kernel_parity("conv_igemm", "conv2d_igemm_backward_data", dy, w, g, **tol)
        for splits in (None, 1, 3):
            kernel_parity("conv_igemm", "conv2d_igemm_backward_weight", dy, x, g, splits,
                          label=f"backward_weight splits={splits}", **tol)  # fmt: skip


@pytest.mark.parametrize("launch", [(1, 32), (2, 64), (3, 256), (None, 256)],
                         ids=["grid1", "grid2", "grid3", "gridfull"])  # fmt: skip
@pytest.mark.parametrize("tile", TILES)
def test_any_grid_size_gives_the_same_result(launch: tuple, tile: str, kernel_parity) -> None:  # noqa: ANN001
    """Blocks loop over the tiles (grid-stride), so a capped grid computes every tile; the
    split-K sum kernel is a plain grid-stride loop over ``launch``'s block size."""
    from gpucnn.backend.cuda_ops import conv_igemm

    g, x, w, b, dy = _data("multi_tile", np.float64)
    with conv_igemm.use_tile(tile):
        kernel_parity("conv_igemm", "conv2d_igemm_forward", x, w, b, g, launch=launch)
        kernel_parity("conv_igemm", "conv2d_igemm_backward_data", dy, w, g, launch=launch)
        kernel_parity("conv_igemm", "conv2d_igemm_backward_weight", dy, x, g, 4, launch=launch)


def test_more_splits_than_k_slices_and_empty_batch(emulate) -> None:  # noqa: ANN001
    """Splits past the end of the reduction add zeros; N = 0 gives empty y/dx and a zero dW."""
    from gpucnn.backend.cuda_ops import conv_igemm

    g, x, w, b, dy = _data("3x3_s2_p1_n1", np.float64)  # N*oh*ow = 20: 3 slices of 8
    want = reference.backward(dy, reference.columns(x, g), None, g, False, True)[1]
    with emulate():
        got = conv_igemm.conv2d_igemm_backward_weight(dy, x, g, 7)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    g0 = Conv2dGeometry.create((0, 4, 9, 8), (6, 4, 3, 3), stride=2, padding=1)
    x0, dy0 = np.zeros((0, 4, 9, 8)), np.zeros(g0.output_shape)
    with emulate():
        assert conv_igemm.conv2d_igemm_forward(x0, w, b, g0).shape == (0, 6, 5, 4)
        assert conv_igemm.conv2d_igemm_backward_data(dy0, w, g0).shape == (0, 4, 9, 8)
        dw0 = conv_igemm.conv2d_igemm_backward_weight(dy0, x0, g0)
    np.testing.assert_array_equal(dw0, np.zeros_like(w))


def test_split_rule_and_argument_checks(emulate) -> None:  # noqa: ANN001
    from gpucnn.backend.cuda_ops import conv_igemm

    small = Conv2dGeometry.create((64, 64, 8, 8), (64, 64, 3, 3), padding=1)
    assert conv_igemm.weight_grad_splits(small, 4) > 1  # few tiles, long reduction
    tiny = Conv2dGeometry.create((1, 3, 5, 5), (4, 3, 3, 3), padding=1)
    assert conv_igemm.weight_grad_splits(tiny, 4) == 1  # too short to split
    g, x, w, b, dy = _data("3x3_s1_p1", np.float32)
    with emulate():
        with pytest.raises(ValueError, match="splits must be a positive int"):
            conv_igemm.conv2d_igemm_backward_weight(dy, x, g, 0)
        with pytest.raises(ValueError, match=r"expected weight of shape \(5, 3, 3, 3\)"):
            conv_igemm.conv2d_igemm_forward(x, w[:, :2], b, g)
        with pytest.raises(TypeError, match="conv2d_igemm_forward.*float16"):
            conv_igemm.conv2d_igemm_forward(x.astype(np.float16), w, b, g)
    with pytest.raises(ValueError, match="tile must be one of"):
        with conv_igemm.use_tile("8x8"):
            pass


def test_conv_primitives_run_igemm_when_asked(emulate, monkeypatch) -> None:  # noqa: ANN001
    """``algorithm="igemm"``, :func:`set_conv_algorithm` and ``$GPUCNN_CUDA_CONV_ALGO`` route
    the CUDA conv primitives to our kernels; the default stays im2col + cuBLAS."""
    from gpucnn.backend.cuda_ops import conv as cconv

    g, x, w, b, dy = _data("groups2_s2_dil2", np.float64)
    y_ref, cols = reference.forward(x, w, b, g)
    dx_ref, dw_ref = reference.backward(dy, cols, w, g, True, True)
    monkeypatch.delenv(cconv.ALGORITHM_ENV, raising=False)
    assert cconv.conv2d_algorithm(g) == "im2col_gemm"
    assert cconv.workspace_needed(g, 8, "igemm") == 0
    with emulate(grid_cap=2):
        y, saved = cconv.conv2d_forward(x, w, b, g, algorithm="igemm", workspace_bytes=0)
        assert saved.algorithm == "igemm" and np.shares_memory(saved.data, x)
        dx, dw = cconv.conv2d_backward(dy, g, saved, True, True)
        dx_c2i = cconv.conv2d_backward(dy, g, saved, True, False, input_grad="col2im")[0]
        with pytest.raises(ValueError, match="input_grad must be one of"):
            cconv.conv2d_backward(dy, g, saved, True, False, input_grad="fft")
        _, saved2 = cconv.conv2d_forward(x, w, None, g, False, False, algorithm="igemm")
        assert saved2.data is None and saved2.weight is None
        assert cconv.conv2d_backward(dy, g, saved2, False, False) == (None, None)
        monkeypatch.setenv(cconv.ALGORITHM_ENV, "igemm")
        assert cconv.conv2d_algorithm(g) == "igemm"
        dx1 = cconv.conv2d_backward_data(dy, w, g)
        dw1 = cconv.conv2d_backward_weight(dy, x, g)
        monkeypatch.setenv(cconv.ALGORITHM_ENV, "bogus")
        with pytest.raises(ValueError, match=r"\$GPUCNN_CUDA_CONV_ALGO must be one of"):
            cconv.conv2d_algorithm(g)
        monkeypatch.delenv(cconv.ALGORITHM_ENV)
        try:
            cconv.set_conv_algorithm("igemm")
            assert cconv.get_conv_algorithm() == "igemm"
            assert cconv.conv2d_forward(x, w, b, g)[1].algorithm == "igemm"
        finally:
            cconv.set_conv_algorithm(None)
        assert cconv.get_conv_algorithm() is None
        with pytest.raises(ValueError, match="set_conv_algorithm's name must be one of"):
            cconv.set_conv_algorithm("fft")
    for got, ref in ((y, y_ref), (dx, dx_ref), (dw, dw_ref), (dx_c2i, dx_ref), (dx1, dx_ref),
                     (dw1, dw_ref)):  # fmt: skip
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((2, 4, 6, 6), (6, 2, 3, 3), dict(stride=2, padding=1, groups=2)),
        ((2, 3, 5, 4), (4, 3, 1, 1), {}),
        ((1, 3, 7, 7), (3, 1, 3, 3), dict(padding="same", dilation=2, groups=3)),
    ],
    ids=["grouped_s2", "1x1", "depthwise_dil"],
)
def test_autograd_conv_on_the_simulated_device_with_igemm(emulator, xs, ws, kw, bias) -> None:  # noqa: ANN001
    """F.conv2d forward + backward on the cuda backend (simulated device) with the igemm
    algorithm equals the NumPy backend, and reaches no cuBLAS GEMM."""
    import gpucnn.functional as F
    from gpucnn import backend as B
    from gpucnn.backend.cuda_ops import conv as cconv
    from gpucnn.tensor import Tensor
    from gpucnn.testing import simulated_device

    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(xs), rng.standard_normal(ws)]
    if bias:
        arrays.append(rng.standard_normal(ws[0]))
    g = Conv2dGeometry.create(xs, ws, **kw)
    gy = rng.standard_normal(g.output_shape)

    def run(name: str) -> list:
        ts = [Tensor(B.to_backend(a, name), requires_grad=True) for a in arrays]
        y = F.conv2d(*ts, **kw)
        y.backward(B.to_backend(gy, name))
        return [y.numpy()] + [t.grad.numpy() for t in ts]

    want = run("numpy")
    with simulated_device() as sim:
        cconv.set_conv_algorithm("igemm")
        try:
            sim.reset_counters()
            got = run("cuda")
            counts = sim.counters()
        finally:
            cconv.set_conv_algorithm(None)
    assert counts.cublas == 0 and counts.launches > 0
    for a, r in zip(got, want):
        np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-11)


def test_nvrtc_compiles_every_tile() -> None:
    """tests/test_nvrtc.py compiles every cuda/*.cu with its default defines (the 64x64 tile);
    every other tile's defines must compile cleanly too."""
    from gpucnn.backend.cuda_ops.conv_igemm import TILES as TILE_CONFIGS
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
    path = kernel_source_path("conv_igemm")
    for name, tile in TILE_CONFIGS.items():
        if tile.defines() is None:
            continue  # the default: test_nvrtc.py's case
        defines = normalize_defines(tile.defines())
        for arch in ("sm_80", "sm_90"):
            options = module_options(path, defines)
            r = compile_with_nvrtc(module_source(path), path.name, options, arch)
            assert r.ok and not r.log.strip(), (name, arch, r.log)
