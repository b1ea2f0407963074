"""Batch normalisation and dropout: kernel parity (emulated), gradients, PyTorch parity, errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import Tensor
from gpucnn.backend import get_backend
from gpucnn.backend.cuda_ops import norm as cuda_norm
from gpucnn.backend.numpy_ops import norm as np_norm
from gpucnn.testing.gradcheck import gradient_check

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
SHAPES = [(3, 5), (2, 7, 3, 5), (4, 3, 1, 1), (1, 33, 2, 3), (5, 2, 13)]


def _data(shape, dtype, seed=0, offset=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 2 + offset).astype(dtype)


# ----------------------------------------------------------------------------- kernel parity


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_stats_forward_parity_emulated(kernel_parity, launch_grid, dtype, shape):
    x = _data(shape, dtype)
    c = shape[1]
    rng = np.random.default_rng(1)
    w = rng.standard_normal(c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    tol = TOL[dtype]
    (mean, var), (mean_t, var_t) = kernel_parity(
        "norm", "batchnorm_stats", x, launch=launch_grid, **tol
    )
    assert mean.dtype == dtype and var.dtype == dtype and mean.shape == (c,)
    # independent check of the twin itself
    axes = (0,) + tuple(range(2, x.ndim))
    np.testing.assert_allclose(mean_t, x.astype(np.float64).mean(axis=axes), **tol)
    np.testing.assert_allclose(var_t, x.astype(np.float64).var(axis=axes), **tol)
    kernel_parity("norm", "batchnorm_forward", x, mean, var, w, b, 1e-5, launch=launch_grid, **tol)
    kernel_parity(
        "norm", "batchnorm_forward", x, mean, var, None, None, 1e-3, launch=launch_grid, **tol
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_backward_parity_emulated(kernel_parity, launch_grid, dtype, shape, training):
    x = _data(shape, dtype)
    c = shape[1]
    rng = np.random.default_rng(2)
    dy = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(c).astype(dtype)
    mean, var = np_norm.batchnorm_stats(x)
    if not training:
        mean = rng.standard_normal(c).astype(dtype)
        var = (rng.random(c) + 0.5).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else TOL[dtype]
    for weight in (w, None):
        got, _ = kernel_parity(
            "norm", "batchnorm_backward", dy, x, mean, var, weight, 1e-5, training,
            launch=launch_grid, **tol,
        )  # fmt: skip
        assert all(g.dtype == dtype for g in got)


def test_stats_accuracy_large_mean(emulate):
    """Two-pass double accumulation: a large offset does not destroy the float32 variance."""
    x = _data((64, 2, 8, 8), np.float32, offset=1e4)
    with emulate(None, 128):
        _, var = cuda_norm.batchnorm_stats(x)
    ref = x.astype(np.float64).var(axis=(0, 2, 3))
    np.testing.assert_allclose(var, ref, rtol=1e-5)


def test_primitives_registered():
    assert {"batchnorm_stats", "batchnorm_forward", "batchnorm_backward"} <= set(
        get_backend("numpy").primitives
    )


# ----------------------------------------------------------------------------- functional


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 3, 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_gradcheck_training(shape, affine):
    x = _data(shape, np.float64, seed=5, offset=0.5)
    c = shape[1]
    rng = np.random.default_rng(6)
    if affine:
        w, b = rng.standard_normal(c), rng.standard_normal(c)
        gradient_check(
            lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [x, w, b], atol=1e-5
        )
    else:
        gradient_check(lambda x: F.batch_norm(x, None, None, training=True), [x], atol=1e-5)


def test_batch_norm_gradcheck_eval():
    x = _data((3, 2, 2, 2), np.float64, seed=7)
    rm, rv = np.array([0.5, -1.0]), np.array([2.0, 0.3])
    w, b = np.array([1.5, -0.7]), np.array([0.1, 0.2])
    gradient_check(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=False), [x, w, b])


def test_running_stats_by_hand(backend):
    x = _data((4, 3, 2, 5), np.float32, seed=8)
    rm = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    rv = np.array([1.0, 2.0, 0.5], dtype=np.float32)
    rm_t, rv_t = Tensor(rm.copy(), backend=backend.name), Tensor(rv.copy(), backend=backend.name)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    xt = Tensor(x, backend=backend.name)
    for _ in range(2):
        F.batch_norm(xt, rm_t, rv_t, training=True, momentum=0.3)
        x64 = x.astype(np.float64)
        mu = x64.mean(axis=(0, 2, 3))
        var_unbiased = x64.var(axis=(0, 2, 3), ddof=1)
        rm_ref = 0.7 * rm_ref + 0.3 * mu
        rv_ref = 0.7 * rv_ref + 0.3 * var_unbiased
    np.testing.assert_allclose(rm_t.numpy(), rm_ref, rtol=1e-5)
    np.testing.assert_allclose(rv_t.numpy(), rv_ref, rtol=1e-5)
    # raw arrays are updated in place too (numpy)
    raw_m, raw_v = rm.copy(), rv.copy()
    F.batch_norm(Tensor(x), raw_m, raw_v, training=True, momentum=0.3)
    assert not np.allclose(raw_m, rm)
    # eval leaves them alone and uses them
    before = rm_t.numpy().copy()
    y = F.batch_norm(xt, rm_t, rv_t, training=False, eps=1e-5)
    np.testing.assert_array_equal(rm_t.numpy(), before)
    bs = (1, 3, 1, 1)
    ref = (x - before.reshape(bs)) / np.sqrt(rv_t.numpy().reshape(bs) + 1e-5)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_batch_norm_forward_matches_formula(backend):
    x = _data((5, 4), np.float32, seed=9)
    w = np.array([1.0, 2.0, 0.5, -1.0], dtype=np.float32)
    b = np.array([0.0, 1.0, -1.0, 3.0], dtype=np.float32)
    y = F.batch_norm(
        Tensor(x, backend=backend.name),
        None,
        None,
        Tensor(w, backend=backend.name),
        Tensor(b, backend=backend.name),
        training=True,
    )
    ref = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * w + b
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5)
    assert y.dtype == np.float32


@pytest.mark.parametrize("seed", range(4))
def test_batch_norm_torch_parity(seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    shape = [(6, 3), (2, 4, 3, 5), (3, 5, 2, 2), (4, 2, 7)][seed]
    c = shape[1]
    training = seed != 3
    affine = seed != 1
    x = rng.standard_normal(shape) * 3 + 1
    dy = rng.standard_normal(shape)
    w, b = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.random(c) + 0.5
    mom, eps = [0.1, 0.5, 0.01, 0.2][seed], [1e-5, 1e-3, 1e-5, 1e-2][seed]

    xt = Tensor(x, requires_grad=True)
    wt = Tensor(w, requires_grad=True) if affine else None
    bt = Tensor(b, requires_grad=True) if affine else None
    rm_g, rv_g = rm.copy(), rv.copy()
    y = F.batch_norm(xt, rm_g, rv_g, wt, bt, training=training, momentum=mom, eps=eps)
    y.backward(dy)

    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True) if affine else None
    tb = torch.tensor(b, requires_grad=True) if affine else None
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training, mom, eps)
    ty.backward(torch.tensor(dy))

    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(rm_g, trm.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rv_g, trv.numpy(), rtol=1e-12, atol=1e-12)
    if affine:
        np.testing.assert_allclose(wt.grad.numpy(), tw.grad.numpy(), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(bt.grad.numpy(), tb.grad.numpy(), rtol=1e-9, atol=1e-10)


def test_batch_norm_float32_torch_parity():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 6, 5, 5)).astype(np.float32)
    w = rng.standard_normal(6).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    xt, wt, bt = (Tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.batch_norm(xt, None, None, wt, bt, training=True)
    y.backward(dy)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.batch_norm(tx, None, None, tw, tb, True)
    ty.backward(torch.tensor(dy))
    assert y.dtype == np.float32 and xt.grad.dtype == np.float32
    for a, t in ((y, ty), (xt.grad, tx.grad), (wt.grad, tw.grad), (bt.grad, tb.grad)):
        np.testing.assert_allclose(a.numpy(), t.detach().numpy(), rtol=1e-4, atol=1e-4)


def test_batch_norm_errors():
    x = Tensor(np.zeros((4, 3, 2, 2), dtype=np.float32))
    msg = r"batch_norm: running_mean must have shape \(3,\).*got \(4,\)"
    with pytest.raises(ValueError, match=msg):
        F.batch_norm(x, np.zeros(4, np.float32), np.ones(3, np.float32), training=True)
    with pytest.raises(ValueError, match=r"batch_norm: weight must have shape \(3,\)"):
        F.batch_norm(x, None, None, Tensor(np.ones(2, np.float32)), training=True)
    with pytest.raises(ValueError, match="batch_norm: expected input of shape"):
        F.batch_norm(Tensor(np.zeros(3, np.float32)), None, None, training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(Tensor(np.zeros((1, 3), np.float32)), None, None, training=True)
    with pytest.raises(ValueError, match="batch_norm: momentum"):
        F.batch_norm(x, None, None, training=True, momentum=1.5)


# ----------------------------------------------------------------------------- dropout


def test_dropout_gradcheck_fixed_mask():
    x = _data((3, 4, 2), np.float64, seed=12)

    def f(x):
        gpucnn.manual_seed(42)  # the same mask on every call
        return F.dropout(x, 0.3)

    gradient_check(f, [x])
    # grad = mask * scale exactly
    xt = Tensor(x, requires_grad=True)
    y = f(xt)
    y.backward(np.ones_like(x))
    mask = (y.numpy() != 0).astype(np.float64)
    np.testing.assert_allclose(xt.grad.numpy(), mask / 0.7)
    np.testing.assert_allclose(y.numpy(), x * mask / 0.7)


def test_dropout_statistics(backend):
    x = Tensor(np.ones((200, 500), dtype=np.float32), backend=backend.name)
    for p in (0.1, 0.5, 0.8):
        y = F.dropout(x, p).numpy()
        frac = float((y == 0).mean())
        assert abs(frac - p) < 0.01, (p, frac)
        assert abs(float(y.mean()) - 1.0) < 0.02
        assert set(np.unique(y)) <= {0.0, np.float32(1 / (1 - p))}


def test_dropout_deterministic_and_modes(backend):
    x = Tensor(np.arange(1, 101, dtype=np.float32).reshape(10, 10), backend=backend.name)
    gpucnn.manual_seed(7)
    a = F.dropout(x, 0.5).numpy()
    gpucnn.manual_seed(7)
    b = F.dropout(x, 0.5).numpy()
    c = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0).numpy(), np.zeros((10, 10)))
    assert F.dropout(Tensor(np.ones(4)), 0.5).dtype == np.float64


def test_dropout_errors():
    x = Tensor(np.ones(5, np.float32))
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"dropout: probability p must be in \[0, 1\]"):
            F.dropout(x, p)
    with pytest.raises(ValueError, match="dropout2d: expected a 4-D"):
        F.dropout2d(x, 0.5)


def test_dropout2d_channelwise():
    x = Tensor(np.ones((20, 30, 3, 4), dtype=np.float32), requires_grad=True)
    y = F.dropout2d(x, 0.4)
    yv = y.numpy()
    per_map = yv.reshape(20, 30, -1)
    assert np.all(per_map.min(axis=2) == per_map.max(axis=2))  # whole maps kept or dropped
    assert abs(float((per_map[:, :, 0] == 0).mean()) - 0.4) < 0.08
    y.backward(np.ones(yv.shape, np.float32))
    np.testing.assert_allclose(x.grad.numpy(), yv)


# ----------------------------------------------------------------------------- gpu


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(64, 16), (8, 32, 9, 11)])
def test_gpu_batch_norm_matches_numpy(shape):
    x = _data(shape, np.float32, seed=13)
    dy = np.random.default_rng(14).standard_normal(shape).astype(np.float32)
    c = shape[1]
    outs = {}
    for name in ("numpy", "cuda"):
        xt = Tensor(x, requires_grad=True, backend=name)
        w = Tensor(np.linspace(0.5, 1.5, c, dtype=np.float32), requires_grad=True, backend=name)
        b = Tensor(np.linspace(-1, 1, c, dtype=np.float32), requires_grad=True, backend=name)
        rm = Tensor(np.zeros(c, np.float32), backend=name)
        rv = Tensor(np.ones(c, np.float32), backend=name)
        y = F.batch_norm(xt, rm, rv, w, b, training=True)
        y.backward(Tensor(dy, backend=name))
        outs[name] = [t.numpy() for t in (y, xt.grad, w.grad, b.grad, rm, rv)]
    for a, b in zip(outs["numpy"], outs["cuda"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
