"""Convolution + bias + activation as one op (issue 13's fused epilogues).

``F.conv2d(..., activation=...)`` / ``Conv2D(activation="relu" | "leaky_relu" | "gelu")`` run
:class:`gpucnn.functional.conv.Conv2dActFunction`: on the CUDA implicit-GEMM route the bias
and activation are applied in the kernel's epilogue (``conv_igemm_fwd`` with ``act``), the
backward reads the output's mask (relu, leaky relu) or the saved pre-activation (gelu).
Elsewhere it is the convolution then the activation kernel, so it must equal the two ops bit
for bit; under ``own_kernels`` on the (simulated) device it must match them within float32
rounding, with no separate activation kernel launched.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import Tensor
from gpucnn import layers as L
from gpucnn.backend.runtime import own_kernels
from gpucnn.functional.conv import Conv2dActFunction
from gpucnn.testing import simulated_device
from gpucnn.testing.gradcheck import gradient_check

KINDS = ("relu", "leaky_relu", "gelu", "gelu_tanh")
GEOMS = [dict(stride=1, padding=1), dict(stride=2, padding=0, dilation=2),
         dict(stride=1, padding="same", groups=2)]  # fmt: skip


def _unfused(y: Tensor, kind: str, slope: float) -> Tensor:
    if kind == "leaky_relu":
        return F.leaky_relu(y, slope)
    if kind == "gelu":
        return F.gelu(y)
    if kind == "gelu_tanh":
        return F.gelu(y, approximate="tanh")
    return F.relu(y)


def _data(dtype=np.float32, seed: int = 0) -> tuple:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    return x, w, b


def _run(x, w, b, kw: dict, kind: str | None, slope: float = 0.1) -> list:  # noqa: ANN001
    xs, ws = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    bs = None if b is None else Tensor(b, requires_grad=True)
    if kind is None:
        return [xs, ws, bs]
    g = dict(kw, groups=kw.get("groups", 2))
    y = F.conv2d(xs, ws, bs, activation=kind, negative_slope=slope, **g)
    return [y, xs, ws, bs]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kw", GEOMS, ids=["s1p1", "s2dil2", "same_g2"])
@pytest.mark.parametrize("kind", KINDS)
def test_fused_equals_conv_then_activation_bit_for_bit(kind: str, kw: dict, bias: bool) -> None:
    """On the session's backend (NumPy; the simulated pass: the im2col route + activation
    kernel), forward and every gradient equal the two separate ops exactly."""
    x, w, b = _data()
    b = b if bias else None
    g = dict(kw, groups=kw.get("groups", 2))
    y, xs, ws, bs = _run(x, w, b, kw, kind)
    assert y._node[0] is Conv2dActFunction  # one autograd node, not two
    xu, wu = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    bu = None if b is None else Tensor(b, requires_grad=True)
    yu = _unfused(F.conv2d(xu, wu, bu, **g), kind, 0.1)
    assert np.array_equal(y.numpy(), yu.numpy())
    rng = np.random.default_rng(1)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    (y * Tensor(gy).to(y.backend)).sum().backward()
    (yu * Tensor(gy).to(yu.backend)).sum().backward()
    for a, u in ((xs, xu), (ws, wu), (bs, bu)):
        if a is not None:
            assert np.array_equal(a.grad.numpy(), u.grad.numpy())


@pytest.mark.numpy_internal
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kw", GEOMS, ids=["s1p1", "s2dil2", "same_g2"])
def test_fused_gradient_check_float64(kind: str, kw: dict) -> None:
    x, w, b = _data(np.float64, seed=3)
    g = dict(kw, groups=kw.get("groups", 2))
    gradient_check(lambda x, w, b: F.conv2d(x, w, b, activation=kind, negative_slope=0.2, **g),
                   [x, w, b], atol=1e-5, rtol=1e-4)  # fmt: skip


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "gelu", F.relu])
def test_conv2d_layer_fuses_and_matches_the_unfused_layer(activation) -> None:  # noqa: ANN001
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    gpucnn.manual_seed(0)
    fused = L.Conv2D(5, 3, padding="same", activation=activation)
    fused.build((3, 8, 8))
    assert fused._fused is not None
    plain = L.Conv2D(5, 3, padding="same")
    plain.build((3, 8, 8))
    plain.load_state_dict(fused.state_dict())
    xt = Tensor(x).to(fused.weight.backend)
    y = fused(xt)
    assert y._node[0] is Conv2dActFunction
    act = activation if callable(activation) else F.get_activation(activation)
    assert np.array_equal(y.numpy(), act(plain(xt)).numpy())
    assert L.Conv2D(5, 3, activation="sigmoid")._fused is None  # not fusable: separate op


def test_fused_activation_errors() -> None:
    x, w, b = (Tensor(a) for a in _data())
    with pytest.raises(ValueError, match=r"conv2d: activation 'sigmoid' cannot be fused"):
        F.conv2d(x, w, b, groups=2, activation="sigmoid")
    with pytest.raises(ValueError, match="negative slope > 0, got -0.1"):
        F.conv2d(x, w, b, groups=2, activation="leaky_relu", negative_slope=-0.1)


@pytest.mark.parametrize("kind", KINDS)
def test_own_kernels_fuse_in_the_igemm_epilogue(kind: str) -> None:
    """The implicit-GEMM route applies bias + activation in the forward kernel (no
    activation kernel), and forward/gradients match NumPy's two ops."""
    x, w, b = _data(seed=5)
    kw = dict(stride=1, padding=1, groups=2)

    def run(backend: str) -> list:
        xp = gpucnn.backend.get_backend(backend).xp
        ts = [Tensor(xp.asarray(a), requires_grad=True) for a in (x, w, b)]
        y = F.conv2d(*ts, activation=kind, negative_slope=0.1, **kw)
        (y * y).sum().backward()
        return [y.numpy()] + [t.grad.numpy() for t in ts]

    with gpucnn.testing.backend_scope("numpy"):
        ref = run("numpy")
    with simulated_device() as sim, own_kernels():
        sim.reset_counters()
        got = run("cuda")
        launched = dict(sim.counters().kernels)
    assert launched.get("conv_igemm_fwd_f32", 0) == 1, launched
    assert not any(k.endswith("_fwd_f32") and not k.startswith("conv") for k in launched), launched
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ dense + bias + activation


def _dense_data(dtype=np.float32, seed: int = 0) -> tuple:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((6, 9)).astype(dtype), rng.standard_normal((5, 9)).astype(dtype),
            rng.standard_normal(5).astype(dtype))  # fmt: skip


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_fused_linear_equals_linear_then_activation(kind: str, bias: bool) -> None:
    from gpucnn.functional.basic import _LinearAct

    x, w, b = _dense_data()
    arrs = (x, w, b) if bias else (x, w)
    fused = [Tensor(a, requires_grad=True) for a in arrs]
    plain = [Tensor(a, requires_grad=True) for a in arrs]
    y = F.linear(*fused, activation=kind, negative_slope=0.1)
    assert y._node[0] is _LinearAct
    yu = _unfused(F.linear(*plain), kind, 0.1)
    assert np.array_equal(y.numpy(), yu.numpy())
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    (y * Tensor(gy).to(y.backend)).sum().backward()
    (yu * Tensor(gy).to(yu.backend)).sum().backward()
    for a, u in zip(fused, plain):
        assert np.array_equal(a.grad.numpy(), u.grad.numpy())


@pytest.mark.numpy_internal
@pytest.mark.parametrize("kind", KINDS)
def test_fused_linear_gradient_check_float64(kind: str) -> None:
    x, w, b = _dense_data(np.float64, seed=4)
    gradient_check(lambda x, w, b: F.linear(x, w, b, activation=kind, negative_slope=0.2),
                   [x, w, b], atol=1e-5, rtol=1e-4)  # fmt: skip


def test_dense_layer_fuses_relu() -> None:
    from gpucnn.functional.basic import _LinearAct

    layer = L.Dense(4, activation="relu")
    layer.build((9,))
    x = Tensor(_dense_data()[0]).to(layer.weight.backend)
    y = layer(x)
    assert y._node[0] is _LinearAct
    ref = F.relu(F.linear(x, layer.weight, layer.bias))
    assert np.array_equal(y.numpy(), ref.numpy())
    assert L.Dense(4, activation="softmax")._fused is None


@pytest.mark.parametrize("kind", ["relu", "leaky_relu", "gelu"])
def test_own_kernels_fuse_dense_activation_in_the_gemm_epilogue(kind: str) -> None:
    """relu / leaky relu go into ``gemm_f32_simt``'s epilogue (no activation kernel); gelu,
    whose backward needs the pre-activation, runs the activation kernel after."""
    x, w, b = _dense_data(seed=6)

    def run(backend: str) -> list:
        xp = gpucnn.backend.get_backend(backend).xp
        ts = [Tensor(xp.asarray(a), requires_grad=True) for a in (x, w, b)]
        y = F.linear(*ts, activation=kind, negative_slope=0.1)
        (y * y).sum().backward()
        return [y.numpy()] + [t.grad.numpy() for t in ts]

    with gpucnn.testing.backend_scope("numpy"):
        ref = run("numpy")
    with simulated_device() as sim, own_kernels():
        sim.reset_counters()
        got = run("cuda")
        c = sim.counters()
        launched = dict(c.kernels)
    assert c.cublas == 0 and launched.get("gemm_f32_simt", 0) == 3, launched
    assert (f"{kind}_fwd_f32" in launched) == (kind == "gelu"), launched
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
