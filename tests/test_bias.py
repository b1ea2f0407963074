"""Bias kernels (cuda/bias.cu): emulated kernel vs NumPy twin, grid/block sweeps, GPU parity."""

from __future__ import annotations

import numpy as np
import pytest

from gpucnn import backend as B
from gpucnn.backend.cuda_ops import bias as cb
from gpucnn.backend.numpy_ops import bias as nb

DTYPES = [np.float32, np.float64]
# (N, C, H, W): non-power-of-two spatial sizes, HW smaller and larger than a block, C = 1
SHAPES = [(2, 3, 5, 7), (3, 5, 1, 1), (1, 1, 13, 11), (4, 6, 9, 10), (2, 70, 3, 3)]


def _tol(dt: type) -> dict:
    return dict(rtol=1e-5, atol=1e-5) if dt == np.float32 else dict(rtol=1e-12, atol=1e-12)


def test_numpy_twins_against_definition(rng: np.random.Generator) -> None:
    y = rng.standard_normal((3, 4, 5, 6))
    b = rng.standard_normal(4)
    expect = y.copy()
    for c in range(4):
        expect[:, c] += b[c]
    out = nb.bias_add_nchw(y.copy(), b)
    np.testing.assert_allclose(out, expect, rtol=1e-14)
    db = nb.bias_grad_nchw(y)
    assert db.shape == (4,)
    np.testing.assert_allclose(db, [y[:, c].sum() for c in range(4)], rtol=1e-12)
    # non-contiguous input: the twin still sums the right elements
    yt = np.ascontiguousarray(y.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    np.testing.assert_allclose(nb.bias_grad_nchw(yt), db, rtol=1e-12)


def test_bias_add_twin_is_in_place(rng: np.random.Generator) -> None:
    y = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    out = nb.bias_add_nchw(y, np.ones(3, np.float32))
    assert out is y


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_add_emulated_vs_twin(kernel_parity, emulate, launch_grid, dtype: type) -> None:
    grid, block = launch_grid
    rng = np.random.default_rng(block + (grid or 0))
    for shape in SHAPES:
        y = rng.standard_normal(shape).astype(dtype)
        b = rng.standard_normal(shape[1]).astype(dtype)
        # the result and the bias-added first argument, against the twin's
        out, _ = kernel_parity("bias", "bias_add_nchw", y, b, launch=launch_grid, **_tol(dtype))
        assert out.dtype == dtype
        target = y.copy()
        with emulate(*launch_grid):
            assert cb.bias_add_nchw(target, b) is target  # in place, as documented


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_grad_emulated_vs_twin(kernel_parity, launch_grid, dtype: type) -> None:
    grid, block = launch_grid
    rng = np.random.default_rng(7 * block + (grid or 0))
    for shape in SHAPES:
        dy = rng.standard_normal(shape).astype(dtype)
        db, _ = kernel_parity("bias", "bias_grad_nchw", dy, launch=launch_grid, **_tol(dtype))
        assert db.shape == (shape[1],) and db.dtype == dtype
        ref = dy.astype(np.float64).sum(axis=(0, 2, 3))
        np.testing.assert_allclose(db, ref, **_tol(dtype))


@pytest.mark.parametrize("block", [32, 100, 256])
def test_bias_grad_emulated_odd_block_and_deterministic(emulate, block: int) -> None:
    # a non-power-of-two block exercises the tree's bounds check; two runs agree bit for bit
    dy = np.random.default_rng(3).standard_normal((3, 4, 17, 5)).astype(np.float32)
    with emulate(2, block):
        a = cb.bias_grad_nchw(dy)
        b = cb.bias_grad_nchw(dy)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, dy.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-5)


def test_emulated_non_contiguous_inputs(emulate) -> None:
    rng = np.random.default_rng(5)
    base = rng.standard_normal((2, 3, 6, 5))
    y = base.transpose(0, 1, 3, 2)  # (2, 3, 5, 6), not C-contiguous
    orig = y.copy()
    b = rng.standard_normal(3)
    with emulate(None, 64):
        db = cb.bias_grad_nchw(y)
        out = cb.bias_add_nchw(y, b)
    np.testing.assert_allclose(db, orig.sum(axis=(0, 2, 3)), rtol=1e-12)
    assert out is y
    np.testing.assert_allclose(y, orig + b[None, :, None, None], rtol=1e-12)
    np.testing.assert_allclose(base, (orig + b[None, :, None, None]).transpose(0, 1, 3, 2))


def test_emulated_empty_batch(emulate) -> None:
    with emulate(None, 32):
        db = cb.bias_grad_nchw(np.zeros((0, 4, 3, 3), np.float32))
    np.testing.assert_array_equal(db, np.zeros(4, np.float32))


def test_launcher_bad_bias_shape(emulate) -> None:
    with emulate(None, 32), pytest.raises(ValueError, match=r"bias_add_nchw.*\(3,\).*\(4,\)"):
        cb.bias_add_nchw(np.zeros((1, 3, 2, 2)), np.zeros(4))
    with emulate(None, 32), pytest.raises(ValueError, match="bias_grad_nchw.*4-D"):
        cb.bias_grad_nchw(np.zeros((3, 2, 2)))


def test_both_backends_export_the_bias_primitives() -> None:
    be = B.get_backend("numpy")
    assert be.bias_add_nchw is nb.bias_add_nchw
    assert be.bias_grad_nchw is nb.bias_grad_nchw
    assert set(cb.__all__) == set(nb.__all__)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_vs_numpy(dtype: type) -> None:
    be = B.get_backend("cuda")
    rng = np.random.default_rng(11)
    y = rng.standard_normal((8, 16, 13, 9)).astype(dtype)
    b = rng.standard_normal(16).astype(dtype)
    yd = be.asarray(y)
    be.bias_add_nchw(yd, be.asarray(b))
    np.testing.assert_allclose(B.to_numpy(yd), nb.bias_add_nchw(y.copy(), b), **_tol(dtype))
    db = B.to_numpy(be.bias_grad_nchw(be.asarray(y)))
    np.testing.assert_allclose(db, nb.bias_grad_nchw(y), **_tol(dtype))


def test_bias_grad_of_an_empty_batch_is_zero() -> None:
    from gpucnn.backend.numpy_ops.bias import bias_grad_nchw

    db = bias_grad_nchw(np.zeros((0, 3, 4, 5), np.float32))
    assert db.shape == (3,) and db.dtype == np.float32 and not db.any()
