"""Activations, PReLU, softmax and log-softmax: kernels (emulated) vs NumPy twins, gradients,
PyTorch parity, numerical stability, NaN propagation and errors."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import gpucnn.functional as F
from gpucnn import backend as B
from gpucnn.backend.cuda_ops import activation as cuda_act
from gpucnn.backend.cuda_ops import softmax_xent as cuda_sx
from gpucnn.backend.numpy_ops import activation as np_act
from gpucnn.backend.numpy_ops import softmax_xent as np_sx
from gpucnn.tensor import Tensor
from gpucnn.testing.gradcheck import gradient_check

KINDS = ("relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "gelu_tanh")
USES_OUTPUT = ("sigmoid", "tanh")
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def _param(kind: str) -> float:
    return {"leaky_relu": 0.07, "elu": 1.3}.get(kind, 0.0)


# --------------------------------------------------------------------------- kernel parity


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_activation_kernel_matches_twin(emulated, kind: str, dtype, rng) -> None:
    x = (rng.standard_normal((3, 5, 7)) * 3).astype(dtype)
    x.flat[::11] = 0.0  # exact zeros: the relu kink
    g = rng.standard_normal(x.shape).astype(dtype)
    p = _param(kind)
    y_ref = np_act.activation_forward(x, kind, p)
    y = cuda_act.activation_forward(x, kind, p)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, y_ref, **TOL[dtype])
    saved = y_ref if kind in USES_OUTPUT else x
    np.testing.assert_allclose(
        cuda_act.activation_backward(saved, g, kind, p),
        np_act.activation_backward(saved, g, kind, p),
        **TOL[dtype],
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, channels", [((2, 5, 3, 4), 5), ((4, 3), 3), ((2, 3, 6), 1)])
def test_prelu_kernels_match_twin(emulated, shape, channels: int, dtype, rng) -> None:
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.uniform(0.05, 0.5, channels).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_allclose(cuda_act.prelu_forward(x, w), np_act.prelu_forward(x, w))
    dx, dw = cuda_act.prelu_backward(x, w, g)
    dx_ref, dw_ref = np_act.prelu_backward(x, w, g)
    assert dw.shape == (channels,)
    np.testing.assert_allclose(dx, dx_ref, **TOL[dtype])
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_prelu_dw_reduction_longer_than_block(emulate, rng) -> None:
    """Each channel has many more elements than threads: the per-thread loop must cover them."""
    x = rng.standard_normal((3, 2, 50)).astype(np.float64)
    g = rng.standard_normal(x.shape)
    w = np.array([0.2, 0.3])
    with emulate(grid_cap=1, block=33):
        _, dw = cuda_act.prelu_backward(x, w, g)
    np.testing.assert_allclose(dw, np_act.prelu_backward(x, w, g)[1], rtol=1e-12)
    expected = np.where(x > 0, 0, x * g).sum(axis=(0, 2))
    np.testing.assert_allclose(dw, expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, axis",
    [((4, 10), -1), ((3, 1000), 1), ((2, 1001), -1), ((3, 7, 4), 1), ((2, 3, 5), 0), ((6,), 0)],
)
def test_softmax_kernels_match_twin(emulated, shape, axis: int, dtype, rng) -> None:
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    tol = TOL[dtype]
    y = cuda_sx.softmax_forward(x, axis)
    np.testing.assert_allclose(y, np_sx.softmax_forward(x, axis), **tol)
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=1e-5)
    ly = cuda_sx.log_softmax_forward(x, axis)
    np.testing.assert_allclose(ly, np_sx.log_softmax_forward(x, axis), **tol)
    y_ref = np_sx.softmax_forward(x, axis)
    ly_ref = np_sx.log_softmax_forward(x, axis)
    np.testing.assert_allclose(
        cuda_sx.softmax_backward(y_ref, g, axis), np_sx.softmax_backward(y_ref, g, axis), **tol
    )
    np.testing.assert_allclose(
        cuda_sx.log_softmax_backward(ly_ref, g, axis),
        np_sx.log_softmax_backward(ly_ref, g, axis),
        rtol=tol["rtol"] * 10,
        atol=tol["atol"] * 10,
    )


def test_softmax_kernel_nan_and_extremes(emulated) -> None:
    x = np.array([[1000.0, -1000.0, 0.0], [np.nan, 1.0, 2.0], [-1000.0, -1000.0, -999.0]])
    y = cuda_sx.softmax_forward(x, -1)
    np.testing.assert_allclose(y[0], [1.0, 0.0, 0.0])
    assert np.isnan(y[1]).all()
    assert np.isfinite(y[[0, 2]]).all()
    ly = cuda_sx.log_softmax_forward(x, -1)
    np.testing.assert_allclose(ly[0], [0.0, -2000.0, -1000.0])
    assert np.isnan(ly[1]).all()


def test_primitive_signatures_match() -> None:
    for npm, cum in ((np_act, cuda_act), (np_sx, cuda_sx)):
        assert sorted(npm.__all__) == sorted(cum.__all__)
        for name in npm.__all__:
            sig_np = inspect.signature(getattr(npm, name))
            sig_cu = inspect.signature(getattr(cum, name))
            assert list(sig_np.parameters) == list(sig_cu.parameters), name
            defaults = [p.default for p in sig_np.parameters.values()]
            assert defaults == [p.default for p in sig_cu.parameters.values()], name


# --------------------------------------------------------------------------- gradients


def _away_from_zero(rng, shape, margin: float = 0.05) -> np.ndarray:
    x = rng.uniform(-2, 2, shape)
    return np.where(np.abs(x) < margin, x + np.sign(x + 1e-12) * 2 * margin, x)


@pytest.mark.parametrize(
    "fn",
    [
        F.relu,
        F.leaky_relu,
        lambda x: F.leaky_relu(x, negative_slope=0.3),
        F.elu,
        lambda x: F.elu(x, alpha=0.6),
        F.sigmoid,
        F.tanh,
        F.gelu,
        lambda x: F.gelu(x, approximate="tanh"),
        F.softplus,
        lambda x: F.softplus(x, beta=2.0, threshold=1.5),
    ],
    ids=[
        "relu", "leaky", "leaky0.3", "elu", "elu0.6", "sigmoid", "tanh", "gelu", "gelu_tanh",
        "softplus", "softplus_b2_t1.5",
    ],
)  # fmt: skip
def test_activation_gradients(fn, rng) -> None:
    gradient_check(fn, [_away_from_zero(rng, (3, 4, 2))])


@pytest.mark.parametrize("channels", [1, 4])
def test_prelu_gradients(channels: int, rng) -> None:
    x = _away_from_zero(rng, (2, 4, 3, 2))
    w = rng.uniform(0.1, 0.5, channels)
    gradient_check(F.prelu, [x, w])


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_gradients(axis: int, log: bool, rng) -> None:
    fn = F.log_softmax if log else F.softmax
    gradient_check(lambda x: fn(x, axis=axis), [rng.standard_normal((3, 5, 2))])


# --------------------------------------------------------------------------- PyTorch parity


def _torch_pair(rng, shape, dtype=np.float64):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    ours = Tensor(x, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    return torch, x, g, ours, theirs


CASES = [
    ("relu", {}, lambda t, x, k: t.nn.functional.relu(x)),
    ("leaky_relu", {"negative_slope": 0.2}, lambda t, x, k: t.nn.functional.leaky_relu(x, **k)),
    ("elu", {"alpha": 0.7}, lambda t, x, k: t.nn.functional.elu(x, **k)),
    ("sigmoid", {}, lambda t, x, k: t.sigmoid(x)),
    ("tanh", {}, lambda t, x, k: t.tanh(x)),
    ("gelu", {}, lambda t, x, k: t.nn.functional.gelu(x)),
    ("gelu", {"approximate": "tanh"}, lambda t, x, k: t.nn.functional.gelu(x, **k)),
    ("softplus", {"beta": 1.5}, lambda t, x, k: t.nn.functional.softplus(x, **k)),
    ("softmax", {"axis": 1}, lambda t, x, k: t.softmax(x, dim=k["axis"])),
    ("log_softmax", {"axis": -1}, lambda t, x, k: t.log_softmax(x, dim=k["axis"])),
    ("log_softmax", {"axis": 0}, lambda t, x, k: t.log_softmax(x, dim=k["axis"])),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, kw, ref", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_torch_parity(name: str, kw: dict, ref, dtype, rng) -> None:
    torch, x, g, ours, theirs = _torch_pair(rng, (4, 6, 3), dtype)
    y = getattr(F, name)(ours, **kw)
    yt = ref(torch, theirs, kw)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), **tol)
    y.backward(g)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), **tol)


@pytest.mark.parametrize("channels", [1, 3])
def test_prelu_torch_parity(channels: int, rng) -> None:
    torch, x, g, ours, theirs = _torch_pair(rng, (2, 3, 4, 5))
    w = rng.uniform(0.1, 0.4, channels)
    wo = Tensor(w, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    y = F.prelu(ours, wo)
    yt = torch.nn.functional.prelu(theirs, wt)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-12)
    y.backward(g)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(wo.grad.numpy(), wt.grad.numpy(), rtol=1e-10)


# --------------------------------------------------------------------------- stability, NaN


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_stable_for_huge_logits(dtype) -> None:
    x = np.array([[1000.0, -1000.0, 999.0], [-1000.0, -1000.0, -1000.0]], dtype=dtype)
    t = Tensor(x, requires_grad=True)
    y = F.softmax(t, axis=1)
    assert np.isfinite(y.numpy()).all()
    e = np.exp(-1.0)
    np.testing.assert_allclose(y.numpy()[0], [1 / (1 + e), 0, e / (1 + e)], rtol=1e-6)
    np.testing.assert_allclose(y.numpy()[1], [1 / 3] * 3, rtol=1e-6)
    ly = F.log_softmax(t, axis=1)
    assert np.isfinite(ly.numpy()).all()
    np.testing.assert_allclose(ly.numpy()[0, 1], -2000 - np.log1p(e), rtol=1e-6)
    g = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype)
    ly.backward(g)
    p = y.numpy().astype(np.float64)
    expected = g - p * g.sum(axis=1, keepdims=True)
    # float32 carries ~1e-4 absolute error here: logp = x - lse loses digits at |x| ~ 1000.
    atol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(t.grad.numpy(), expected, rtol=1e-5, atol=atol)


def test_sigmoid_and_gelu_stable_at_extremes() -> None:
    x = Tensor(np.array([-1000.0, -80.0, 0.0, 80.0, 1000.0], dtype=np.float32))
    s = F.sigmoid(x).numpy()
    assert np.isfinite(s).all()
    np.testing.assert_allclose(s, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-30)
    g = F.gelu(x).numpy()
    np.testing.assert_allclose(g, [0.0, 0.0, 0.0, 80.0, 1000.0], atol=1e-6)
    sp = F.softplus(x).numpy()
    np.testing.assert_allclose(sp, [0.0, 0.0, np.log(2), 80.0, 1000.0], atol=1e-6)


@pytest.mark.parametrize(
    "fn", [F.relu, F.leaky_relu, F.elu, F.sigmoid, F.tanh, F.gelu, F.softplus], ids=str
)
def test_nan_propagates(fn) -> None:
    y = fn(Tensor(np.array([np.nan, 1.0, -1.0]))).numpy()
    assert np.isnan(y[0]) and np.isfinite(y[1:]).all()


def test_nan_propagates_softmax_row_only() -> None:
    y = F.softmax(Tensor(np.array([[np.nan, 1.0], [1.0, 2.0]]))).numpy()
    assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()


# --------------------------------------------------------------------------- names, errors


def test_get_activation() -> None:
    x = Tensor(np.array([-1.0, 2.0]))
    for name in ("relu", "leaky_relu", "sigmoid", "tanh", "softmax", "elu", "gelu"):
        fn = F.get_activation(name)
        assert fn is getattr(F, name)
    assert F.get_activation("ReLU") is F.relu
    assert F.get_activation(None)(x) is x
    assert F.get_activation("linear")(x) is x
    assert F.get_activation(F.tanh) is F.tanh
    with pytest.raises(ValueError, match=r"unknown activation 'swishy'.*relu.*sigmoid"):
        F.get_activation("swishy")


def test_bad_inputs() -> None:
    x = Tensor(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"gelu: approximate must be 'none' or 'tanh'.*'fast'"):
        F.gelu(x, approximate="fast")
    with pytest.raises(ValueError, match=r"prelu: weight has 2 parameters.*\(2, 3, 4\) \(3\)"):
        F.prelu(x, Tensor(np.ones(2)))
    with pytest.raises(ValueError, match=r"prelu: weight must have shape \(1,\) or \(C,\)"):
        F.prelu(x, Tensor(np.ones((3, 1))))
    with pytest.raises(ValueError, match=r"softmax: axis 3 is out of range.*\(2, 3, 4\)"):
        F.softmax(x, axis=3)
    with pytest.raises(TypeError, match=r"relu: expected a floating-point tensor, got dtype int"):
        F.relu(Tensor(np.arange(3)))
    with pytest.raises(ValueError, match="unknown kind 'swish'"):
        np_act.activation_forward(np.ones(2), "swish")


# --------------------------------------------------------------------------- backends


@pytest.mark.parametrize("name", ["relu", "sigmoid", "gelu", "softmax", "log_softmax", "prelu"])
def test_backend_matches_numpy(backend: B.Backend, name: str, rng) -> None:
    """On every usable backend (cuda is gpu-marked), forward and backward match NumPy."""
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    w = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    results = []
    for be in (backend, B.get_backend("numpy")):
        t = Tensor(be.asarray(x), requires_grad=True)
        args = (Tensor(be.asarray(w), requires_grad=True),) if name == "prelu" else ()
        y = getattr(F, name)(t, *args)
        y.backward(Tensor(be.asarray(g)))
        results.append((y.numpy(), t.grad.numpy()))
    (y1, g1), (y2, g2) = results
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- fast paths


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["relu", "leaky_relu"])
def test_relu_fast_paths_match_where_bit_for_bit(kind: str, dtype, rng) -> None:
    """The mask/bit tricks of the NumPy twin give exactly ``np.where``'s bits, specials too."""
    x = rng.standard_normal((4, 3, 9, 7)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    x.flat[:8] = [np.nan, -0.0, 0.0, -np.inf, np.inf, -1.0, 2.0, -3.0]
    g.flat[:8] = [np.inf, np.nan, np.inf, np.nan, -np.inf, np.inf, np.nan, -np.inf]
    p = dtype(0.07)
    if kind == "relu":
        y_ref, dx_ref = np.where(x <= 0, dtype(0), x), np.where(x <= 0, dtype(0), g)
    else:
        y_ref, dx_ref = np.where(x > 0, x, x * p), np.where(x > 0, g, g * p)
    y = np_act.activation_forward(x, kind, 0.07)
    dx = np_act.activation_backward(x, g, kind, 0.07)
    bits = np.dtype(f"i{np.dtype(dtype).itemsize}")
    for got, ref in ((y, y_ref), (dx, dx_ref)):
        assert got.dtype == dtype and got.shape == x.shape and got.flags.c_contiguous
        np.testing.assert_array_equal(got.view(bits), ref.view(bits))
    # a non-contiguous upstream gradient works too
    gt = np.asfortranarray(g)
    np.testing.assert_array_equal(np_act.activation_backward(x, gt, kind, 0.07).view(bits),
                                  dx_ref.view(bits))


@pytest.mark.parametrize("kind", KINDS)
def test_zero_dim_keeps_its_shape(kind: str) -> None:
    x = np.array(-0.75, dtype=np.float32)
    p = _param(kind)
    y = np_act.activation_forward(x, kind, p)
    saved = y if kind in USES_OUTPUT else x
    dx = np_act.activation_backward(saved, np.array(2.0, dtype=np.float32), kind, p)
    assert y.shape == () and dx.shape == () and y.dtype == dx.dtype == np.float32
    np.testing.assert_allclose(y, np_act.activation_forward(x.reshape(1), kind, p)[0])
