"""Losses: the fused softmax-cross-entropy kernel (emulated) vs its NumPy twin, gradient
checks for every option, PyTorch parity, stability with huge logits, NaN and errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn.functional as F
from gpucnn import backend as B
from gpucnn.backend.cuda_ops import softmax_xent as cuda_sx
from gpucnn.backend.numpy_ops import softmax_xent as np_sx
from gpucnn.tensor import Tensor
from gpucnn.testing.gradcheck import gradient_check


def _targets(rng, shape, c: int, ignore: int | None = -100) -> np.ndarray:
    t = rng.integers(0, c, shape)
    if ignore is not None and t.size > 1:
        t.reshape(-1)[1] = ignore
    return t


# --------------------------------------------------------------------------- kernel parity


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 10), (3, 1000), (2, 1001), (2, 4, 3, 2), (1, 1)])
@pytest.mark.parametrize("eps, weighted", [(0.0, False), (0.15, True), (0.3, False)])
def test_fused_xent_kernels_match_twin(emulated, shape, eps, weighted, dtype, rng) -> None:
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    c = shape[1]
    tshape = shape[:1] + shape[2:]
    t = _targets(rng, tshape, c)
    w = rng.uniform(0.2, 2.0, c).astype(dtype) if weighted else None
    ref = np_sx.softmax_xent_forward(x, t, w, -100, eps)
    out = cuda_sx.softmax_xent_forward(x, t, w, -100, eps)
    tol = dict(rtol=3e-5, atol=3e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    for name, a, b in zip(("loss", "wrow", "logp"), out, ref):
        assert a.dtype == dtype and a.shape == b.shape, name
        np.testing.assert_allclose(a, b, err_msg=name, **tol)
    grow = rng.standard_normal(tshape).astype(dtype)
    np.testing.assert_allclose(
        cuda_sx.softmax_xent_backward(ref[2], t, w, grow, -100, eps),
        np_sx.softmax_xent_backward(ref[2], t, w, grow, -100, eps),
        **tol,
    )


def test_fused_xent_kernel_int32_targets_and_custom_ignore(emulated, rng) -> None:
    x = rng.standard_normal((6, 7))
    t = rng.integers(0, 7, 6).astype(np.int32)
    t[2] = 3
    for ignore in (3, -1):
        ref = np_sx.softmax_xent_forward(x, t, None, ignore, 0.1)
        out = cuda_sx.softmax_xent_forward(x, t, None, ignore, 0.1)
        for a, b in zip(out, ref):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    assert out[0][2] != 0  # ignore=-1 no longer drops row 2


# --------------------------------------------------------------------------- gradient checks


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("ignore", [None, -100, 2])
def test_cross_entropy_index_gradients(reduction, weighted, eps, ignore, rng) -> None:
    x = rng.standard_normal((5, 4))
    t = _targets(rng, (5,), 4, ignore=-100 if ignore == -100 else None)
    if ignore == 2:
        t[0] = 2
    w = rng.uniform(0.3, 2.0, 4) if weighted else None
    kw = dict(weight=w, label_smoothing=eps, reduction=reduction)
    if ignore is not None:
        kw["ignore_index"] = ignore
    gradient_check(lambda a: F.cross_entropy(a, t, **kw), [x])


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_spatial_gradients(reduction, rng) -> None:
    x = rng.standard_normal((2, 3, 2, 2))
    t = _targets(rng, (2, 2, 2), 3)
    w = rng.uniform(0.5, 1.5, 3)
    gradient_check(
        lambda a: F.cross_entropy(a, t, weight=w, label_smoothing=0.1, reduction=reduction), [x]
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.25])
def test_cross_entropy_probability_gradients(reduction, weighted, eps, rng) -> None:
    x = rng.standard_normal((4, 5))
    p = rng.dirichlet(np.ones(5), 4)
    w = rng.uniform(0.3, 2.0, 5) if weighted else None
    kw = dict(weight=w, label_smoothing=eps, reduction=reduction)
    gradient_check(lambda a, b: F.cross_entropy(a, b, **kw), [x, p])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_gradients(reduction, weighted, rng) -> None:
    lp = rng.standard_normal((5, 4, 2))
    t = _targets(rng, (5, 2), 4)
    w = rng.uniform(0.3, 2.0, 4) if weighted else None
    gradient_check(lambda a: F.nll_loss(a, t, weight=w, reduction=reduction), [lp])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pos_weight", [None, "vector"])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_with_logits_gradients(reduction, pos_weight, weighted, rng) -> None:
    x = rng.standard_normal((3, 4)) * 3
    t = rng.uniform(0, 1, (3, 4))
    pw = rng.uniform(0.5, 3.0, 4) if pos_weight else None
    w = rng.uniform(0.5, 2.0, (3, 1)) if weighted else None
    gradient_check(
        lambda a, b: F.binary_cross_entropy_with_logits(
            a, b, pos_weight=pw, reduction=reduction, weight=w
        ),
        [x, t],
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_and_mse_gradients(reduction, rng) -> None:
    p = rng.uniform(0.05, 0.95, (3, 4))
    t = rng.uniform(0, 1, (3, 4))
    w = rng.uniform(0.5, 2.0, 4)
    gradient_check(lambda a, b: F.binary_cross_entropy(a, b, reduction=reduction), [p, t])
    gradient_check(lambda a, b: F.binary_cross_entropy(a, b, reduction=reduction, weight=w), [p, t])
    gradient_check(lambda a, b: F.mse_loss(a, b, reduction=reduction), [p * 4, t])


# --------------------------------------------------------------------------- PyTorch parity


def _compare(torch, ours_out, theirs_out, pairs, tol) -> None:
    np.testing.assert_allclose(ours_out.numpy(), theirs_out.detach().numpy(), **tol)
    g = np.random.default_rng(7).standard_normal(ours_out.shape)
    ours_out.backward(g.astype(ours_out.dtype))
    theirs_out.backward(torch.tensor(g.astype(ours_out.dtype)))
    for a, b in pairs:
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), **tol)


def _tol(dtype) -> dict:
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_torch_parity_random(seed: int, dtype) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    spatial = tuple(rng.integers(1, 3, rng.integers(0, 3)))
    n, c = int(rng.integers(1, 6)), int(rng.integers(2, 8))
    shape = (n, c) + spatial
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    prob = seed % 3 == 2
    eps = float(rng.choice([0.0, 0.1, 0.4]))
    reduction = str(rng.choice(["mean", "sum", "none"]))
    w = rng.uniform(0.2, 2.0, c).astype(dtype) if rng.random() < 0.5 else None
    ignore = int(rng.choice([-100, 0, 1]))
    if prob:
        tgt = rng.dirichlet(np.ones(c), n * int(np.prod(spatial))).astype(dtype)
        tgt = np.moveaxis(tgt.reshape((n,) + spatial + (c,)), -1, 1).copy()
        kw = dict(label_smoothing=eps, reduction=reduction)
        to = Tensor(tgt, requires_grad=True)
        tt = torch.tensor(tgt, requires_grad=True)
    else:
        tgt = rng.integers(0, c, (n,) + spatial)
        tgt.reshape(-1)[0] = 0 if ignore != 0 else 1  # at least one counted row for 'mean'
        kw = dict(label_smoothing=eps, reduction=reduction, ignore_index=ignore)
        to, tt = tgt, torch.tensor(tgt)
    xo = Tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    wt = None if w is None else torch.tensor(w)
    out = F.cross_entropy(xo, to, weight=w, **kw)
    ref = torch.nn.functional.cross_entropy(xt, tt, weight=wt, **kw)
    pairs = [(xo, xt)] + ([(to, tt)] if prob else [])
    _compare(torch, out, ref, pairs, _tol(dtype))


def test_cross_entropy_unbatched_torch_parity(rng) -> None:
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(6)
    for target, tt in ((np.array(4), torch.tensor(4)), (rng.dirichlet(np.ones(6)), None)):
        tt = torch.tensor(target) if tt is None else tt
        for reduction in ("mean", "none"):
            xo = Tensor(x, requires_grad=True)
            xt = torch.tensor(x, requires_grad=True)
            out = F.cross_entropy(xo, target, reduction=reduction, label_smoothing=0.1)
            ref = torch.nn.functional.cross_entropy(
                xt, tt, reduction=reduction, label_smoothing=0.1
            )
            assert out.shape == tuple(ref.shape)
            _compare(torch, out, ref, [(xo, xt)], _tol(np.float64))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_torch_parity(reduction, weighted, rng) -> None:
    torch = pytest.importorskip("torch")
    lp = np.log(rng.dirichlet(np.ones(5), (4, 3))).transpose(0, 2, 1).copy()  # (4, 5, 3)
    t = _targets(rng, (4, 3), 5)
    w = rng.uniform(0.3, 2.0, 5) if weighted else None
    a = Tensor(lp, requires_grad=True)
    b = torch.tensor(lp, requires_grad=True)
    out = F.nll_loss(a, t, weight=w, reduction=reduction)
    ref = torch.nn.functional.nll_loss(
        b, torch.tensor(t), weight=None if w is None else torch.tensor(w), reduction=reduction
    )
    _compare(torch, out, ref, [(a, b)], _tol(np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pos_weight", [False, True])
def test_bce_with_logits_torch_parity(dtype, reduction, pos_weight, rng) -> None:
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((4, 3)) * 5).astype(dtype)
    x[0, 0], x[0, 1] = 200.0, -200.0
    t = rng.uniform(0, 1, (4, 3)).astype(dtype)
    pw = rng.uniform(0.5, 3.0, 3).astype(dtype) if pos_weight else None
    w = rng.uniform(0.5, 2.0, (4, 1)).astype(dtype)
    xo, to = Tensor(x, requires_grad=True), Tensor(t, requires_grad=True)
    xt, tt = torch.tensor(x, requires_grad=True), torch.tensor(t, requires_grad=True)
    out = F.binary_cross_entropy_with_logits(xo, to, pos_weight=pw, reduction=reduction, weight=w)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(
        xt,
        tt,
        weight=torch.tensor(w),
        reduction=reduction,
        pos_weight=None if pw is None else torch.tensor(pw),
    )
    _compare(torch, out, ref, [(xo, xt), (to, tt)], dict(rtol=1e-5, atol=1e-5))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_and_mse_torch_parity(reduction, rng) -> None:
    torch = pytest.importorskip("torch")
    p = rng.uniform(0.01, 0.99, (3, 5))
    t = rng.uniform(0, 1, (3, 5))
    po, to = Tensor(p, requires_grad=True), Tensor(t, requires_grad=True)
    pt, tt = torch.tensor(p, requires_grad=True), torch.tensor(t, requires_grad=True)
    out = F.binary_cross_entropy(po, to, reduction=reduction)
    ref = torch.nn.functional.binary_cross_entropy(pt, tt, reduction=reduction)
    _compare(torch, out, ref, [(po, pt), (to, tt)], dict(rtol=1e-8, atol=1e-8))
    # At p = 0 or 1 the logs are clamped at -100: same loss and input gradient as PyTorch.
    # (PyTorch's TARGET gradient there is +-inf from the unclamped logs; ours, 100 - 0, is the
    # derivative of the clamped loss, so only the input gradient is compared.)
    p[0, :2] = [0.0, 1.0]
    po, pt = Tensor(p, requires_grad=True), torch.tensor(p, requires_grad=True)
    out = F.binary_cross_entropy(po, t, reduction=reduction)
    ref = torch.nn.functional.binary_cross_entropy(pt, torch.tensor(t), reduction=reduction)
    _compare(torch, out, ref, [(po, pt)], dict(rtol=1e-8, atol=1e-8))
    xo, to = Tensor(t * 3, requires_grad=True), Tensor(p, requires_grad=True)
    xt, tt = torch.tensor(t * 3, requires_grad=True), torch.tensor(p, requires_grad=True)
    out = F.mse_loss(xo, to, reduction=reduction)
    ref = torch.nn.functional.mse_loss(xt, tt, reduction=reduction)
    _compare(torch, out, ref, [(xo, xt), (to, tt)], dict(rtol=1e-10, atol=1e-12))


# --------------------------------------------------------------------------- stability, NaN


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_huge_logits(dtype, eps) -> None:
    x = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]], dtype=dtype)
    t = np.array([1, 2])
    xo = Tensor(x, requires_grad=True)
    loss = F.cross_entropy(xo, t, label_smoothing=eps, reduction="none")
    assert np.isfinite(loss.numpy()).all()
    lp = x.astype(np.float64) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))
    lp -= x.max(1, keepdims=True)
    q = (1 - eps) * np.eye(3)[t] + eps / 3
    # float32: logp = x - lse carries ~1e-4 absolute error at |x| ~ 1000 (as in PyTorch).
    atol = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(loss.numpy(), -(q * lp).sum(1), rtol=1e-6, atol=atol)
    loss.sum().backward()
    grad = xo.grad.numpy()
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, np.exp(lp) - q, rtol=1e-5, atol=1e-4)


def test_bce_with_logits_huge_logits() -> None:
    x = Tensor(np.array([1000.0, -1000.0, 1000.0, -1000.0], dtype=np.float32), requires_grad=True)
    t = np.array([1.0, 0.0, 0.0, 1.0], dtype=np.float32)
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    np.testing.assert_allclose(loss.numpy(), [0.0, 0.0, 1000.0, 1000.0])
    loss.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.0, 1.0, -1.0])


def test_nan_propagates() -> None:
    x = np.array([[np.nan, 1.0], [0.5, 1.0]])
    loss = F.cross_entropy(Tensor(x), np.array([0, 1]), reduction="none").numpy()
    assert np.isnan(loss[0]) and np.isfinite(loss[1])
    assert np.isnan(F.cross_entropy(Tensor(x), np.array([0, 1])).item())
    bce = F.binary_cross_entropy_with_logits(Tensor(x), np.ones((2, 2)), reduction="none")
    assert np.isnan(bce.numpy()[0, 0]) and np.isfinite(bce.numpy()[1]).all()
    assert np.isnan(F.mse_loss(Tensor(x), np.zeros((2, 2))).item())


def test_cross_entropy_all_ignored_mean_is_nan_like_torch() -> None:
    x = Tensor(np.zeros((2, 3)), requires_grad=True)
    loss = F.cross_entropy(x, np.array([-100, -100]))
    assert np.isnan(loss.item())
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), 0.0)


# --------------------------------------------------------------------------- fused path


def test_cross_entropy_is_one_fused_primitive_each_way(monkeypatch, rng) -> None:
    be = B.get_backend("numpy")
    calls: list[str] = []
    for name in ("softmax_xent_forward", "softmax_xent_backward", "log_softmax_forward"):
        orig = getattr(be, name)

        def spy(*a, _orig=orig, _name=name, **k):
            calls.append(_name)
            return _orig(*a, **k)

        monkeypatch.setattr(be, name, spy)
    x = Tensor(rng.standard_normal((4, 5)), requires_grad=True)
    F.cross_entropy(x, np.array([0, 1, 2, 3]), label_smoothing=0.1).backward()
    assert calls == ["softmax_xent_forward", "softmax_xent_backward"]


# --------------------------------------------------------------------------- errors


def test_bad_targets_and_shapes() -> None:
    x = Tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"cross_entropy: target value 7.*\[0, 3\]"):
        F.cross_entropy(x, np.array([0, 7, 1]))
    with pytest.raises(ValueError, match=r"cross_entropy: target value -1.*\[0, 3\]"):
        F.cross_entropy(x, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"nll_loss: target value 4 .*\[0, 3\]"):
        F.nll_loss(x, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"cross_entropy: target shape \(2,\).*expected \(3,\)"):
        F.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"cross_entropy: probability target shape \(3, 5\)"):
        F.cross_entropy(x, np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"cross_entropy: weight must have shape \(4,\), got"):
        F.cross_entropy(x, np.array([0, 1, 2]), weight=np.ones(3))
    with pytest.raises(ValueError, match=r"cross_entropy: reduction must be .*'avg'"):
        F.cross_entropy(x, np.array([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match=r"cross_entropy: label_smoothing must be in \[0, 1\]"):
        F.cross_entropy(x, np.array([0, 1, 2]), label_smoothing=1.5)
    with pytest.raises(TypeError, match=r"cross_entropy: class-index target must be an integer"):
        F.cross_entropy(x, np.array([True, False, True]))
    with pytest.raises(ValueError, match=r"nll_loss: input must be \(C,\), \(N, C\).*shape \(\)"):
        F.nll_loss(Tensor(np.zeros(())), np.array(1))
    with pytest.raises(ValueError, match=r"mse_loss: target shape \(3, 5\).*\(3, 4\)"):
        F.mse_loss(x, np.zeros((3, 5)))
    with pytest.raises(
        ValueError, match=r"binary_cross_entropy_with_logits: target shape \(4,\).*\(3, 4\)"
    ):
        F.binary_cross_entropy_with_logits(x, np.zeros(4))
    with pytest.raises(ValueError, match=r"pos_weight of shape \(3,\) does not broadcast"):
        F.binary_cross_entropy_with_logits(x, np.zeros((3, 4)), pos_weight=np.ones(3))
    with pytest.raises(ValueError, match=r"binary_cross_entropy: input values must be.*1.5"):
        F.binary_cross_entropy(Tensor(np.array([0.5, 1.5])), np.zeros(2))


def test_ignore_index_may_lie_outside_range() -> None:
    x = Tensor(np.zeros((2, 3)))
    np.testing.assert_allclose(
        F.cross_entropy(x, np.array([-7, 1]), ignore_index=-7).item(), np.log(3)
    )


# --------------------------------------------------------------------------- backends


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_backend_matches_numpy(backend: B.Backend, eps: float, rng) -> None:
    """Fused cross-entropy on every usable backend (cuda is gpu-marked) matches NumPy."""
    x = rng.standard_normal((6, 1001)).astype(np.float32)
    t = _targets(rng, (6,), 1001)
    w = rng.uniform(0.5, 1.5, 1001).astype(np.float32)
    results = []
    for be in (backend, B.get_backend("numpy")):
        xo = Tensor(be.asarray(x), requires_grad=True)
        loss = F.cross_entropy(xo, be.asarray(t), weight=be.asarray(w), label_smoothing=eps)
        loss.backward()
        results.append((loss.numpy(), xo.grad.numpy()))
    (l1, g1), (l2, g2) = results
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------- deferred checks


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_xent_kernel_records_bad_targets_like_twin(emulated, dtype, rng) -> None:
    """The kernel's device-side range check (err = [smallest bad target, count], accumulated
    across launches with atomics) matches the twin; in-range rows are unaffected."""
    x = rng.standard_normal((7, 5)).astype(dtype)
    calls = [np.array([0, 7, 4, -100, -3, 2, 5]), np.array([1, 2, 3, 4, 0, 1, 9]),
             np.array([0, 1, 2, 3, 4, 0, 1])]
    init = np.array([np.iinfo(np.int64).max, 0], dtype=np.int64)
    e_kernel, e_twin = init.copy(), init.copy()
    for t in calls:
        out = cuda_sx.softmax_xent_forward(x, t, None, -100, 0.1, e_kernel)
        ref = np_sx.softmax_xent_forward(x, t, None, -100, 0.1, e_twin)
        np.testing.assert_array_equal(e_kernel, e_twin)
        for a, b in zip(out, ref):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert e_kernel.tolist() == [-3, 4]  # 7, -3, 5 in the first call, 9 in the second
    assert np.isnan(out[0]).sum() == 0
    e_ok = init.copy()
    cuda_sx.softmax_xent_forward(x, calls[2], None, -100, 0.0, e_ok)
    assert e_ok.tolist() == init.tolist()  # nothing to record: untouched
    with pytest.raises(ValueError, match="err must be a C-contiguous int64 array"):
        cuda_sx.softmax_xent_forward(x, calls[2], None, -100, 0.0, np.zeros(2, np.int32))


@pytest.fixture
def deferred(monkeypatch):
    """Host targets checked the device way: recorded now, raised at the next host read."""
    import gpucnn.functional.loss as loss_mod

    monkeypatch.setattr(loss_mod, "_DEFER_HOST_CHECKS", True)
    return loss_mod


@pytest.mark.numpy_internal
def test_deferred_target_check_raises_at_the_first_host_read(deferred, rng) -> None:
    x = Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    loss = F.cross_entropy(x, np.array([0, 7, 1, 2]))  # no error yet
    loss.backward()  # the bad row gets no gradient meanwhile
    assert np.isfinite(x.grad.numpy()).all() and not x.grad.numpy()[1].any()
    with pytest.raises(ValueError, match=r"cross_entropy: target value 7 is out of range; class "
                                         r"indices must be in \[0, 2\] \(or ignore_index=-100\); "
                                         r"1 such target\(s\), found by the device-side check"):
        loss.item()
    assert np.isnan(loss.item())  # reported once; the value itself is NaN, as the kernel's
    for read in (lambda t: t.numpy(), lambda t: t.tolist(), repr, lambda t: deferred.read_host()):
        bad = F.cross_entropy(x, np.array([-5, 1, -9, 2]), reduction="none")
        with pytest.raises(ValueError, match=r"target value -9 is out of range.*2 such"):
            read(bad)
    with pytest.raises(ValueError, match=r"nll_loss: target value 3 is out of range"):
        F.nll_loss(F.log_softmax(x, axis=1), np.array([0, 1, 3, -100])).item()
    with pytest.raises(ValueError, match=r"binary_cross_entropy: input values must be "
                                         r"probabilities in \[0, 1\], got 1.5"):
        F.binary_cross_entropy(Tensor(np.array([0.5, 1.5, 1.2])), np.zeros(3)).item()
    with pytest.raises(ValueError, match=r"binary_cross_entropy: .* got -0.5"):
        F.binary_cross_entropy(Tensor(np.array([-0.5, 1.5])), np.zeros(2)).item()
    deferred.read_host()  # everything reported and reset: nothing pending


@pytest.mark.numpy_internal
def test_deferred_checks_leave_valid_results_unchanged(monkeypatch, rng) -> None:
    import gpucnn.functional.loss as loss_mod

    x = rng.standard_normal((6, 4))
    t = np.array([0, 3, -100, 2, 1, 1])
    results = []
    for defer in (False, True):
        monkeypatch.setattr(loss_mod, "_DEFER_HOST_CHECKS", defer)
        xt = Tensor(x, requires_grad=True)
        ce = F.cross_entropy(xt, t, label_smoothing=0.1)
        nll = F.nll_loss(F.log_softmax(xt, axis=1), t)
        (ce + nll).backward()
        assert (type(ce) is Tensor) != defer
        results.append((ce.item(), nll.item(), xt.grad.numpy()))
    assert results[0][:2] == results[1][:2]
    np.testing.assert_array_equal(results[0][2], results[1][2])


@pytest.mark.numpy_internal
def test_read_host_packs_device_values_into_one_exact_transfer(monkeypatch) -> None:
    """Device values of every kind travel as 8-byte words in ONE transfer and come back
    exactly (float32/float64 through float64, integers and bools through int64)."""
    import gpucnn.functional.loss as loss_mod

    gets: list = []
    monkeypatch.setattr(loss_mod, "_is_device_array", lambda a: isinstance(a, np.ndarray))
    monkeypatch.setattr(loss_mod, "to_numpy", lambda a: gets.append(a.shape) or np.array(a))
    values = [np.array(0.1, np.float32), np.array([1e300, -0.0, np.nan]),
              np.array([2**62 + 1, -7], np.int64), np.array([True, False]),
              np.array([250], np.uint8), np.array([[1.5, 2.5]], np.float16)]
    got = loss_mod.read_host(values)
    assert gets == [(11,)]
    for a, b in zip(values, got):
        assert b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(a, b)


def test_out_of_range_targets_raise_by_the_first_host_read(backend: B.Backend) -> None:
    """NumPy targets: at the call. Device targets (cuda): no sync at the call, the error
    comes at the first host read of the loss, as PyTorch reports it asynchronously."""
    x = Tensor(backend.asarray(np.zeros((3, 4), np.float32)), requires_grad=True)
    t = backend.asarray(np.array([0, 9, 1]))
    match = r"cross_entropy: target value 9 is out of range; class indices must be in \[0, 3\]"
    if backend.name == "numpy":
        with pytest.raises(ValueError, match=match):
            F.cross_entropy(x, t)
        return
    loss = F.cross_entropy(x, t)
    loss.backward()
    with pytest.raises(ValueError, match=match):
        loss.item()
    ok = F.cross_entropy(x, backend.asarray(np.array([0, 3, 1])))
    np.testing.assert_allclose(ok.item(), np.log(4), rtol=1e-6)


# --------------------------------------------------------------------------- Huber, KL divergence

KL_REDUCTIONS = ["mean", "batchmean", "sum", "none"]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("delta", [1.0, 0.3, 2.5])
def test_huber_gradients(reduction, delta, rng) -> None:
    x = rng.standard_normal((3, 5)) * 2
    t = rng.standard_normal((3, 5))
    keep = np.abs(np.abs(x - t) - delta) > 1e-3  # away from the kink at |d| = delta
    x = np.where(keep, x, x + 0.01)
    gradient_check(lambda a, b: F.huber_loss(a, b, reduction=reduction, delta=delta), [x, t])


@pytest.mark.parametrize("reduction", KL_REDUCTIONS)
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_gradients(reduction, log_target, rng) -> None:
    logp = np.log(rng.uniform(0.05, 1.0, (4, 3, 2)))
    t = rng.uniform(0.05, 1.0, (4, 3, 2))
    if log_target:
        t = np.log(t)
    gradient_check(lambda a, b: F.kl_div(a, b, reduction=reduction, log_target=log_target),
                   [logp, t])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("delta", [1.0, 0.5])
def test_huber_torch_parity(dtype, reduction, delta, rng) -> None:
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((6, 4)) * 2).astype(dtype)
    t = rng.standard_normal((6, 4)).astype(dtype)
    xo, to = Tensor(x, requires_grad=True), Tensor(t, requires_grad=True)
    xt, tt = (torch.tensor(a, requires_grad=True) for a in (x, t))
    ours = F.huber_loss(xo, to, reduction=reduction, delta=delta)
    theirs = torch.nn.functional.huber_loss(xt, tt, reduction=reduction, delta=delta)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), **tol)
    g = rng.standard_normal(ours.shape).astype(dtype)
    (ours * Tensor(g)).sum().backward()
    (theirs * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), **tol)
    np.testing.assert_allclose(to.grad.numpy(), tt.grad.numpy(), **tol)
    assert ours.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", KL_REDUCTIONS)
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_torch_parity(dtype, reduction, log_target, rng) -> None:
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((5, 7))
    logp = (logits - np.log(np.exp(logits).sum(1, keepdims=True))).astype(dtype)
    p = rng.dirichlet(np.ones(7), 5)
    p[0, :3] = 0.0  # zero target probabilities: 0 log 0 = 0
    p /= p.sum(1, keepdims=True)
    t = (np.log(p + 1e-3) if log_target else p).astype(dtype)
    xo, to = Tensor(logp, requires_grad=True), Tensor(t, requires_grad=True)
    xt, tt = (torch.tensor(a, requires_grad=True) for a in (logp, t))
    ours = F.kl_div(xo, to, reduction=reduction, log_target=log_target)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on reduction="mean"
        theirs = torch.nn.functional.kl_div(xt, tt, reduction=reduction, log_target=log_target)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), **tol)
    g = rng.standard_normal(ours.shape).astype(dtype)
    (ours * Tensor(g)).sum().backward()
    (theirs * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), **tol)
    nz = np.ones_like(t, dtype=bool) if log_target else t > 0  # torch: NaN where t == 0
    np.testing.assert_allclose(to.grad.numpy()[nz], tt.grad.numpy()[nz], **tol)
    if not log_target:
        np.testing.assert_array_equal(to.grad.numpy()[~nz], 0.0)


@pytest.mark.parametrize("op", ["huber", "kl_div"])
def test_huber_kl_div_on_every_backend(backend: B.Backend, op: str, rng) -> None:
    """Forward and backward on each usable backend (the simulated device in the second pass)
    match NumPy."""
    x = rng.standard_normal((6, 5)).astype(np.float32)
    t = rng.uniform(0.0, 1.0, (6, 5)).astype(np.float32)
    if op == "kl_div":
        x = np.log(rng.uniform(0.05, 1.0, (6, 5))).astype(np.float32)
        t[0, 0] = 0.0
    results = []
    for be in (backend, B.get_backend("numpy")):
        xo = Tensor(be.asarray(x), requires_grad=True)
        to = Tensor(be.asarray(t), requires_grad=True)
        loss = (F.huber_loss(xo, to, delta=0.7) if op == "huber"
                else F.kl_div(xo, to, reduction="batchmean"))
        loss.backward()
        assert loss.backend == be.name
        results.append((loss.numpy(), xo.grad.numpy(), to.grad.numpy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_huber_kl_div_errors() -> None:
    x = Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"huber_loss: delta must be > 0, got 0"):
        F.huber_loss(x, np.zeros((2, 3)), delta=0)
    with pytest.raises(ValueError, match=r"huber_loss: target shape \(2, 2\) must equal"):
        F.huber_loss(x, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"huber_loss: reduction must be"):
        F.huber_loss(x, np.zeros((2, 3)), reduction="batchmean")
    with pytest.raises(ValueError, match=r"kl_div: reduction must be 'mean', 'batchmean'"):
        F.kl_div(x, np.zeros((2, 3)), reduction="avg")
    with pytest.raises(TypeError, match="kl_div: log_target must be a bool"):
        F.kl_div(x, np.zeros((2, 3)), log_target="yes")
    with pytest.raises(TypeError, match="kl_div: input must be a Tensor"):
        F.kl_div(np.zeros((2, 3)), np.zeros((2, 3)))
