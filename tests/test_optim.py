"""Optimizers: fused-kernel parity (emulated), hand-computed steps, torch.optim parity, state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpucnn import Parameter, Tensor, optim
from gpucnn.backend.cuda_ops import optim as cuda_optim
from gpucnn.backend.numpy_ops import optim as np_optim

SIZES = [1, 37, 300]


def _tol(dtype):
    return dict(rtol=2e-6, atol=2e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)


# ----------------------------------------------------------------------------- kernel parity

SGD_CASES = [
    dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False),
    dict(momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=False),
    dict(momentum=0.8, dampening=0.3, weight_decay=0.0, nesterov=False),
    dict(momentum=0.9, dampening=0.0, weight_decay=0.05, nesterov=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", range(len(SGD_CASES)))
def test_sgd_kernel_parity(dtype, launch_grid, emulate, n, case):
    kw = SGD_CASES[case]
    rng = np.random.default_rng(case)
    p0 = rng.standard_normal(n).astype(dtype)
    pa, pb = p0.copy(), p0.copy()
    ba, bb = np.zeros_like(p0), np.zeros_like(p0)
    with emulate(*launch_grid):
        for step in range(3):
            g = rng.standard_normal(n).astype(dtype)
            cuda_optim.sgd_update(pa, g, ba, lr=0.1, first_step=step == 0, **kw)
            np_optim.sgd_update(pb, g, bb, lr=0.1, first_step=step == 0, **kw)
    np.testing.assert_allclose(pa, pb, **_tol(dtype))
    np.testing.assert_allclose(ba, bb, **_tol(dtype))
    assert not np.allclose(pa, p0)


ADAM_CASES = [
    dict(weight_decay=0.0, decoupled=False, amsgrad=False),
    dict(weight_decay=0.1, decoupled=False, amsgrad=True),
    dict(weight_decay=0.1, decoupled=True, amsgrad=False),
    dict(weight_decay=0.05, decoupled=True, amsgrad=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", range(len(ADAM_CASES)))
def test_adam_kernel_parity(dtype, launch_grid, emulate, n, case):
    kw = ADAM_CASES[case]
    rng = np.random.default_rng(10 + case)
    p0 = rng.standard_normal(n).astype(dtype)
    sa = [p0.copy()] + [np.zeros_like(p0) for _ in range(3)]
    sb = [p0.copy()] + [np.zeros_like(p0) for _ in range(3)]
    with emulate(*launch_grid):
        for step in range(1, 4):
            g = rng.standard_normal(n).astype(dtype)
            for fn, s in ((cuda_optim.adam_update, sa), (np_optim.adam_update, sb)):
                vmax = s[3] if kw["amsgrad"] else None
                fn(s[0], g, s[1], s[2], vmax, 1e-2, 0.9, 0.99, 1e-8, step=step, **kw)
    for a, b in zip(sa, sb):
        np.testing.assert_allclose(a, b, **_tol(dtype))


RMS_CASES = [
    dict(weight_decay=0.0, momentum=0.0, centered=False),
    dict(weight_decay=0.1, momentum=0.9, centered=False),
    dict(weight_decay=0.0, momentum=0.0, centered=True),
    dict(weight_decay=0.02, momentum=0.5, centered=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", range(len(RMS_CASES)))
def test_rmsprop_kernel_parity(dtype, launch_grid, emulate, n, case):
    kw = RMS_CASES[case]
    rng = np.random.default_rng(20 + case)
    p0 = rng.standard_normal(n).astype(dtype)
    sa = [p0.copy()] + [np.zeros_like(p0) for _ in range(3)]
    sb = [p0.copy()] + [np.zeros_like(p0) for _ in range(3)]
    with emulate(*launch_grid):
        for _ in range(3):
            g = rng.standard_normal(n).astype(dtype)
            for fn, s in ((cuda_optim.rmsprop_update, sa), (np_optim.rmsprop_update, sb)):
                ga = s[2] if kw["centered"] else None
                mb = s[3] if kw["momentum"] > 0 else None
                fn(s[0], g, s[1], ga, mb, 1e-2, 0.9, 1e-8, **kw)
    for a, b in zip(sa, sb):
        np.testing.assert_allclose(a, b, **_tol(dtype))


def test_kernel_rejects_non_contiguous_param(emulate):
    p = np.zeros((4, 4), np.float32)[:, ::2]
    with emulate(None, 32):
        with pytest.raises(ValueError, match="sgd_update: param array must be C-contiguous"):
            cuda_optim.sgd_update(p, np.ones_like(p), None, 0.1, 0.0, 0.0, 0.0, False, True)


# ----------------------------------------------------------------------------- hand computed


def _param(values, backend="numpy", dtype=np.float64):
    return Parameter(Tensor(np.array(values, dtype=dtype), backend=backend).data)


def _set_grad(p, values):
    p.grad = Tensor(p.xp.asarray(np.array(values, dtype=p.dtype)))


def test_sgd_by_hand(backend):
    p = _param([1.0, -2.0], backend.name)
    data_ref = p.data
    opt = optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.01)
    _set_grad(p, [0.5, 1.0])
    opt.step()
    g1 = np.array([0.5 + 0.01 * 1.0, 1.0 + 0.01 * -2.0])  # first buf = g (no dampening)
    exp1 = np.array([1.0, -2.0]) - 0.1 * g1
    np.testing.assert_allclose(p.numpy(), exp1, rtol=1e-12)
    _set_grad(p, [0.25, -1.0])
    opt.step()
    g2 = np.array([0.25, -1.0]) + 0.01 * exp1
    buf = 0.9 * g1 + 0.5 * g2
    np.testing.assert_allclose(p.numpy(), exp1 - 0.1 * buf, rtol=1e-12)
    assert p.data is data_ref  # updated in place


def test_nesterov_by_hand():
    p = _param([1.0])
    opt = optim.SGD([p], lr=0.5, momentum=0.5, nesterov=True)
    _set_grad(p, [2.0])
    opt.step()  # buf = 2, g = 2 + 0.5*2 = 3
    np.testing.assert_allclose(p.numpy(), [1.0 - 1.5])
    _set_grad(p, [1.0])
    opt.step()  # buf = 0.5*2 + 1 = 2, g = 1 + 0.5*2 = 2
    np.testing.assert_allclose(p.numpy(), [-0.5 - 1.0])


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_adam_by_hand(backend, cls):
    p = _param([1.0, -3.0], backend.name)
    opt = getattr(optim, cls)([p], lr=0.1, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.2)
    x = np.array([1.0, -3.0])
    m = np.zeros(2)
    v = np.zeros(2)
    for t, gv in enumerate([[0.5, 2.0], [-1.0, 0.25], [0.3, 0.3]], start=1):
        _set_grad(p, gv)
        opt.step()
        g = np.array(gv)
        if cls == "AdamW":
            x = x * (1 - 0.1 * 0.2)
        else:
            g = g + 0.2 * x
        m = 0.8 * m + 0.2 * g
        v = 0.9 * v + 0.1 * g * g
        mhat, vhat = m / (1 - 0.8**t), v / (1 - 0.9**t)
        x = x - 0.1 * mhat / (np.sqrt(vhat) + 1e-6)
        np.testing.assert_allclose(p.numpy(), x, rtol=1e-6, atol=1e-9)


def test_amsgrad_by_hand():
    p = _param([0.0])
    opt = optim.Adam([p], lr=1.0, betas=(0.0, 0.5), eps=0.0, amsgrad=True)
    _set_grad(p, [2.0])
    opt.step()  # v=2, vmax=2, bc2=.5 -> denom sqrt(2)/sqrt(.5)=2; p -= 2/2
    np.testing.assert_allclose(p.numpy(), [-1.0])
    _set_grad(p, [0.5])
    opt.step()  # v=1.125, vmax=2, bc2=.75 -> denom sqrt(2/.75); m=.5
    np.testing.assert_allclose(p.numpy(), [-1.0 - 0.5 / math.sqrt(2 / 0.75)])


def test_rmsprop_by_hand():
    p = _param([1.0])
    opt = optim.RMSprop([p], lr=0.1, alpha=0.5, eps=0.0, momentum=0.5, centered=True)
    _set_grad(p, [2.0])
    opt.step()  # sq=2, ga=1, avg=sqrt(2-1)=1, buf=2, p=1-0.2
    np.testing.assert_allclose(p.numpy(), [0.8])
    _set_grad(p, [1.0])
    opt.step()  # sq=1.5, ga=1, avg=sqrt(.5), buf=1+1/sqrt(.5)
    np.testing.assert_allclose(p.numpy(), [0.8 - 0.1 * (1 + 1 / math.sqrt(0.5))])


# ----------------------------------------------------------------------------- torch parity

TORCH_CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.7, nesterov=True, weight_decay=0.03)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=0.02)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.3, amsgrad=True)),
    ("RMSprop", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-2, alpha=0.9, momentum=0.8, weight_decay=0.01)),
    ("RMSprop", dict(lr=1e-2, centered=True)),
    ("RMSprop", dict(lr=1e-3, centered=True, momentum=0.5, eps=1e-6, weight_decay=0.1)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", range(len(TORCH_CASES)))
def test_torch_parity(case, dtype):
    torch = pytest.importorskip("torch")
    name, kw = TORCH_CASES[case]
    rng = np.random.default_rng(100 + case)
    shapes = [(3, 4), (5,), (2, 3, 2)]
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours = [Parameter(a.copy()) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = getattr(optim, name)(ours, **kw)
    topt = getattr(torch.optim, name)(theirs, **kw)
    for _ in range(6):
        for p, t in zip(ours, theirs):
            g = rng.standard_normal(p.shape).astype(dtype)
            p.grad = Tensor(g)
            t.grad = torch.tensor(g)
        opt.step()
        topt.step()
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    for p, t in zip(ours, theirs):
        assert p.dtype == dtype
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), **tol)


def test_param_groups_and_lr_property():
    torch = pytest.importorskip("torch")
    a, b = np.ones(3), np.full(2, 2.0)
    pa, pb = Parameter(a.copy()), Parameter(b.copy())
    ta, tb = (torch.tensor(v.copy(), requires_grad=True) for v in (a, b))
    opt = optim.SGD([{"params": [pa]}, {"params": [pb], "lr": 0.5}], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([{"params": [ta]}, {"params": [tb], "lr": 0.5}], lr=0.1, momentum=0.9)
    for step in range(3):
        for p, t in ((pa, ta), (pb, tb)):
            p.grad = Tensor(np.full(p.shape, step + 1.0))
            t.grad = torch.full(t.shape, step + 1.0, dtype=torch.float64)
        opt.step()
        topt.step()
    np.testing.assert_allclose(pa.numpy(), ta.detach().numpy())
    np.testing.assert_allclose(pb.numpy(), tb.detach().numpy())
    assert opt.lr == 0.1
    opt.lr = 0.01
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01]


def test_skips_params_without_grad_and_zero_grad():
    p, q = Parameter(np.ones(3)), Parameter(np.ones(2))
    opt = optim.Adam([p, q], lr=0.1)
    p.grad = Tensor(np.ones(3))
    opt.step()
    np.testing.assert_array_equal(q.numpy(), np.ones(2))
    assert q not in opt.state or not opt.state[q]
    assert not np.allclose(p.numpy(), 1.0)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.numpy(), 0.0)
    opt.zero_grad()
    assert p.grad is None


@pytest.mark.parametrize(
    "name,kw",
    [
        ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
        ("Adam", dict(lr=0.01, amsgrad=True)),
        ("AdamW", dict(lr=0.01)),
        ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
    ],
)
def test_state_dict_round_trip(name, kw):
    rng = np.random.default_rng(5)
    init = [rng.standard_normal((4, 3)), rng.standard_normal(5)]
    grads = [[rng.standard_normal(a.shape) for a in init] for _ in range(6)]

    def run(params, opt, steps):
        for gs in steps:
            for p, g in zip(params, gs):
                p.grad = Tensor(g.copy())
            opt.step()

    ref = [Parameter(a.copy()) for a in init]
    ref_opt = getattr(optim, name)(ref, **kw)
    run(ref, ref_opt, grads)

    first = [Parameter(a.copy()) for a in init]
    opt1 = getattr(optim, name)(first, **kw)
    run(first, opt1, grads[:3])
    sd = opt1.state_dict()
    run(first, opt1, grads[3:4])  # the saved copy must not change afterwards
    # restart from the saved point: parameters after 3 steps
    third = [Parameter(a.copy()) for a in init]
    opt3 = getattr(optim, name)(third, **kw)
    run(third, opt3, grads[:3])
    opt4 = getattr(optim, name)(third, lr=99.0)
    opt4.load_state_dict(sd)
    assert opt4.lr == kw["lr"]
    run(third, opt4, grads[3:])
    for p, r in zip(third, ref):
        np.testing.assert_allclose(p.numpy(), r.numpy(), rtol=1e-14, atol=1e-14)


def test_errors():
    p = Parameter(np.ones(2))
    with pytest.raises(ValueError, match="SGD: invalid learning rate lr -0.1"):
        optim.SGD([p], lr=-0.1)
    with pytest.raises(ValueError, match="SGD: nesterov momentum requires"):
        optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="SGD: nesterov momentum requires"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"Adam: invalid betas \(0.9, 1.0\)"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="AdamW: invalid eps"):
        optim.AdamW([p], eps=-1.0)
    with pytest.raises(ValueError, match="RMSprop: invalid alpha"):
        optim.RMSprop([p], alpha=-0.5)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Tensors"):
        optim.SGD([np.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match="more than one group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="invalid learning rate"):
        opt.lr = -1.0
    with pytest.raises(ValueError, match="2 parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": [{"params": [0]}, {"params": []}]})


# ----------------------------------------------------------------------------- gpu


@pytest.mark.gpu
@pytest.mark.parametrize("name,kw", [(n, k) for n, k in TORCH_CASES])
def test_gpu_matches_numpy(name, kw):
    rng = np.random.default_rng(3)
    init = rng.standard_normal((33, 7)).astype(np.float32)
    grads = [rng.standard_normal(init.shape).astype(np.float32) for _ in range(4)]
    result = {}
    for be in ("numpy", "cuda"):
        p = Parameter(Tensor(init.copy(), backend=be).data)
        ref = p.data
        opt = getattr(optim, name)([p], **kw)
        for g in grads:
            p.grad = Tensor(g, backend=be)
            opt.step()
        assert p.data is ref
        result[be] = p.numpy()
    np.testing.assert_allclose(result["cuda"], result["numpy"], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- flat buffers

from gpucnn import backend as _backend  # noqa: E402
from gpucnn.optim import flat as _flat_mod  # noqa: E402

FLAT_CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02)),
    ("Adam", dict(lr=1e-2, weight_decay=0.1)),
    ("Adam", dict(lr=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.3, amsgrad=True)),
    ("RMSprop", dict(lr=1e-2, alpha=0.9, momentum=0.8, weight_decay=0.01)),
    ("RMSprop", dict(lr=1e-3, centered=True, momentum=0.5, eps=1e-6)),
    ("RMSprop", dict(lr=1e-3, centered=True)),
    # appended (the indices above are used by other tests)
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=0.05)),
    ("AdamW", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-2, momentum=0.5, weight_decay=0.02)),
]
FLAT_SHAPES = [(3, 4), (5,), (), (2, 3, 2), (0,), (7, 1)]
PRIMS = ("sgd_update", "adam_update", "rmsprop_update")


@pytest.fixture
def spy(monkeypatch):
    """Counts the optimizer primitive calls of the NumPy backend (``spy.calls``)."""
    be = _backend.get_backend("numpy")

    class Spy:
        calls = 0

        def wrap(self, name, fn):
            def counted(*a, **k):
                self.calls += 1
                return fn(*a, **k)

            monkeypatch.setattr(be, name, counted)

    s = Spy()
    for name in PRIMS:
        s.wrap(name, getattr(be, name))
    return s


def _make_params(dtype, seed=0, shapes=FLAT_SHAPES):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]


def _loss_backward(params, step):
    """A loss whose gradient depends on the parameters and on the step; real backward."""
    total = None
    for i, p in enumerate(params):
        c = Tensor(np.full(p.shape, 0.3 * (i + 1) - 0.1 * step, dtype=p.dtype))
        term = (p * p * c).sum() + (p * (step + 1.0)).sum()
        total = term if total is None else total + term
    total.backward()


def _groups(params, name, kw):
    """Two groups with different learning rates (the second gets twice the lr)."""
    half = len(params) // 2
    return [{"params": params[:half]}, {"params": params[half:], "lr": kw["lr"] * 2}]


def _run(name, kw, dtype, flat, steps=5, groups=True, seed=0):
    params = _make_params(dtype, seed)
    spec = _groups(params, name, kw) if groups else params
    opt = getattr(optim, name)(spec, flat=flat, **kw)
    for s in range(steps):
        opt.zero_grad()
        _loss_backward(params, s)
        opt.step()
    return params, opt


def _assert_same(pa, oa, pb, ob):
    for a, b in zip(pa, pb):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["state"].keys() == sb["state"].keys()
    for i in sa["state"]:
        assert sa["state"][i].keys() == sb["state"][i].keys()
        for k, v in sa["state"][i].items():
            if hasattr(v, "shape"):
                assert v.shape == pa[i].shape
                np.testing.assert_array_equal(v, sb["state"][i][k])
            else:
                assert v == sb["state"][i][k]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(FLAT_CASES)))
def test_flat_bit_identical_to_per_tensor(case, dtype, spy):
    name, kw = FLAT_CASES[case]
    spy.calls = 0
    pf, of = _run(name, kw, dtype, flat=True)
    flat_calls = spy.calls
    spy.calls = 0
    pt, ot = _run(name, kw, dtype, flat=False)
    assert flat_calls == 5 * 2  # one call per group per step
    assert spy.calls == 5 * len(FLAT_SHAPES)
    _assert_same(pf, of, pt, ot)
    init = _make_params(dtype)
    assert not np.array_equal(pf[0].numpy(), init[0].numpy())  # it did train


@pytest.mark.parametrize("case", [0, 1, 3, 4, 6, 7, 8])
def test_flat_chunked_numpy_pieces(case, spy, monkeypatch):
    """NumPy runs the flat update over cache-sized pieces: same bits, ceil(n/piece) calls."""
    name, kw = FLAT_CASES[case]
    monkeypatch.setitem(_flat_mod._CHUNK_BYTES, "numpy", 40)  # 5 float64 elements per piece
    spy.calls = 0
    pf, of = _run(name, kw, np.float64, flat=True, groups=False, steps=3)
    n = sum(p.numel() for p in pf)
    assert spy.calls == 3 * -(-n // 5)
    pt, ot = _run(name, kw, np.float64, flat=False, groups=False, steps=3)
    _assert_same(pf, of, pt, ot)


def test_flat_buffers_views_and_no_grad_allocation():
    params = _make_params(np.float32)
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    (bucket,) = opt._flat_params.layouts[0].buckets
    # p.data is a view of the flat buffer (values kept), the grad buffer is preallocated
    init = _make_params(np.float32)
    for p, q in zip(params, init):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
        assert np.shares_memory(p.data, bucket.flat) or p.numel() == 0
        assert np.shares_memory(p._flat_grad, bucket.grad_flat) or p.numel() == 0
    data_ids = [p.data for p in params]
    grad_arrays = None
    for s in range(4):
        opt.zero_grad()
        assert all(p.grad is None for p in params)
        _loss_backward(params, s)
        arrays = [p.grad.data for p in params]
        assert all(a is p._flat_grad for a, p in zip(arrays, params))  # written in place
        if grad_arrays is not None:
            assert all(a is b for a, b in zip(arrays, grad_arrays))  # same arrays every step
        grad_arrays = arrays
        opt.step()
        assert all(p.data is d for p, d in zip(params, data_ids))  # updated in place
        buf = opt.state[params[0]]["momentum_buffer"]
        assert np.shares_memory(buf, bucket.state_flat["momentum_buffer"])


def test_backward_accumulates_into_flat_grad():
    params = _make_params(np.float64, shapes=[(3,), (2, 2)])
    opt = optim.SGD(params, lr=0.1, flat=True)
    _loss_backward(params, 0)
    first = [p.grad.numpy().copy() for p in params]
    _loss_backward(params, 0)  # no zero_grad: accumulates in place into the buffer
    for p, f in zip(params, first):
        assert p.grad.data is p._flat_grad
        np.testing.assert_array_equal(p.grad.numpy(), 2 * f)
    opt.zero_grad(set_to_none=False)
    for p in params:
        assert p.grad.data is p._flat_grad
        np.testing.assert_array_equal(p.grad.numpy(), 0.0)


def test_flat_single_param_uses_its_own_array():
    p = Parameter(np.arange(6.0).reshape(2, 3))
    ref = p.data
    opt = optim.Adam([p], lr=0.1)
    (bucket,) = opt._flat_params.layouts[0].buckets
    assert p.data is ref and np.shares_memory(bucket.flat, ref)
    _loss_backward([p], 0)
    opt.step()
    assert p.data is ref


def test_flat_grad_none_falls_back_like_torch(spy):
    """A parameter without a gradient is not updated (torch.optim semantics); steps where
    every parameter has one but Adam's step counts differ also go per tensor."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    init = [rng.standard_normal(s) for s in [(3, 2), (4,), (2,)]]
    ours = [Parameter(a.copy()) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = optim.Adam(ours, lr=0.05, weight_decay=0.1)
    topt = torch.optim.Adam(theirs, lr=0.05, weight_decay=0.1)
    plan = [(0, 1, 2), (0, 2), (0, 1, 2), (1,), (0, 1, 2)]
    counts = []
    for with_grad in plan:
        opt.zero_grad()
        topt.zero_grad()
        for i in with_grad:
            g = rng.standard_normal(init[i].shape)
            ours[i].grad = Tensor(g.copy())
            theirs[i].grad = torch.tensor(g)
        spy.calls = 0
        opt.step()
        topt.step()
        counts.append(spy.calls)
    # flat when every param has a grad and the step counts agree (1,1,1 and 3,3,3 -> 4,4,4);
    # per tensor when a grad is None, or at step 3 where the counts are 2,1,2
    assert counts == [1, 2, 3, 1, 1]
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert [opt.state[p]["step"] for p in ours] == [4, 4, 4]


def test_flat_grad_none_param_not_updated_sgd(spy):
    params = _make_params(np.float64, shapes=[(3,), (2,), (4,)])
    before = [p.numpy().copy() for p in params]
    opt = optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1)
    for p in params[:2]:
        p.grad = Tensor(np.ones(p.shape))
    spy.calls = 0
    opt.step()
    assert spy.calls == 2
    np.testing.assert_array_equal(params[2].numpy(), before[2])
    assert params[2] not in opt.state or not opt.state[params[2]]
    assert not np.array_equal(params[0].numpy(), before[0])


def test_flat_manual_grads_copied_in(spy):
    """Gradients assigned by hand (other arrays, other dtype) give the same bits as per
    tensor, with one call per step; a wrong shape still raises the primitive's error."""
    rng = np.random.default_rng(3)
    grads = [[rng.standard_normal(s) for s in FLAT_SHAPES] for _ in range(4)]
    result = {}
    for flat in (True, False):
        params = _make_params(np.float32, seed=1)
        opt = optim.RMSprop(params, lr=0.01, momentum=0.5, centered=True, flat=flat)
        spy.calls = 0
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = Tensor(g)  # float64 grads for float32 params: cast like per tensor
            opt.step()
        result[flat] = (params, opt, spy.calls)
    assert result[True][2] == 4 and result[False][2] == 4 * len(FLAT_SHAPES)
    _assert_same(result[True][0], result[True][1], result[False][0], result[False][1])
    params, opt = result[True][0], result[True][1]
    params[0].grad = Tensor(np.ones((4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"rmsprop_update: grad shape \(4, 3\)"):
        opt.step()


def test_flat_rebound_data_is_reflattened(spy):
    """``p.data = new`` (as Module.to or user code does): the values are copied into the flat
    buffer and p.data becomes its view again; a new dtype rebuilds the buckets."""
    params = _make_params(np.float64, shapes=[(3,), (2, 2)])
    ref = _make_params(np.float64, shapes=[(3,), (2, 2)])
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    ref_opt = optim.SGD(ref, lr=0.1, momentum=0.9, flat=False)
    (bucket,) = opt._flat_params.layouts[0].buckets
    for s in range(3):
        for ps in (params, ref):
            if s == 1:
                ps[1].data = np.full((2, 2), 0.5)  # a fresh array, same shape and dtype
            ps[0].grad = Tensor(np.full(3, s + 1.0))
            ps[1].grad = Tensor(np.full((2, 2), -s - 0.5))
        spy.calls = 0
        opt.step()
        ref_opt.step()
        assert spy.calls == 1 + 2
    assert opt._flat_params.layouts[0].buckets[0] is bucket
    assert np.shares_memory(params[1].data, bucket.flat)
    for p, r in zip(params, ref):
        np.testing.assert_array_equal(p.numpy(), r.numpy())
    # another dtype: the group is laid out again, values and momentum kept (state cast to
    # the new dtype: the update runs in the parameter's dtype)
    params[0].data = params[0].data.astype(np.float32)
    p0 = params[0].numpy().copy()
    buf0 = opt.state[params[0]]["momentum_buffer"].astype(np.float32)
    for p in params:
        p.grad = Tensor(np.ones(p.shape, dtype=p.dtype))
    opt.step()
    assert len(opt._flat_params.layouts[0].buckets) == 2  # float32 and float64 buckets
    np_optim.sgd_update(p0, np.ones(3, np.float32), buf0, 0.1, 0.9, 0.0, 0.0, False, False)
    assert params[0].dtype == np.float32
    np.testing.assert_array_equal(params[0].numpy(), p0)
    np.testing.assert_array_equal(opt.state[params[0]]["momentum_buffer"], buf0)


def test_flat_frozen_params_and_mixed_dtypes(spy):
    a, b, c = _make_params(np.float32, shapes=[(3,), (4,), (2,)])
    d = Parameter(np.ones(2))  # float64: its own bucket
    b.requires_grad = False
    opt = optim.SGD([a, b, c, d], lr=0.1, momentum=0.5)
    fg = opt._flat_params.layouts[0]
    assert [len(bk.params) for bk in fg.buckets] == [2, 1] and fg.loose == [b]
    frozen = b.numpy().copy()
    for _ in range(2):
        for p in (a, c, d):
            p.grad = Tensor(np.ones(p.shape, dtype=p.dtype))
        spy.calls = 0
        opt.step()
        assert spy.calls == 2
    np.testing.assert_array_equal(b.numpy(), frozen)
    np.testing.assert_allclose(d.numpy(), 1.0 - 0.1 - 0.1 * 1.5)
    b.requires_grad = True  # unfrozen: laid out again
    b.grad = Tensor(np.ones(4, dtype=np.float32))
    for p in (a, c, d):
        p.grad = Tensor(np.ones(p.shape, dtype=p.dtype))
    spy.calls = 0
    opt.step()  # b joins a and c; b has no momentum buffer yet: per tensor this time
    assert spy.calls == 3 + 1
    np.testing.assert_allclose(b.numpy(), frozen - 0.1)


@pytest.mark.parametrize("name,kw", [FLAT_CASES[2], FLAT_CASES[5], FLAT_CASES[7]])
def test_flat_state_dict_resume_exact(name, kw):
    """state_dict keeps the per-parameter format (copies, not views); a resumed optimizer
    copies the loaded state into its flat buffers and continues bit for bit."""
    ref, ref_opt = _run(name, kw, np.float64, flat=True, steps=6)
    params = _make_params(np.float64)
    opt = getattr(optim, name)(_groups(params, name, kw), **kw)
    for s in range(3):
        opt.zero_grad()
        _loss_backward(params, s)
        opt.step()
    sd = opt.state_dict()
    for st in sd["state"].values():
        for v in st.values():
            if hasattr(v, "shape"):
                assert all(not np.shares_memory(v, b.flat) for b in _all_buckets(opt))
    values = [p.numpy().copy() for p in params]
    fresh = [Parameter(v.copy()) for v in values]
    opt2 = getattr(optim, name)(_groups(fresh, name, kw), **kw)
    opt2.load_state_dict(sd)
    for s in range(3, 6):
        opt2.zero_grad()
        _loss_backward(fresh, s)
        opt2.step()
    for p, r in zip(fresh, ref):
        np.testing.assert_array_equal(p.numpy(), r.numpy())
    arrays = [v for st in opt2.state.values() for v in st.values() if hasattr(v, "shape")]
    assert arrays and all(
        any(np.shares_memory(v, f) for b in _all_buckets(opt2) for f in b.state_flat.values())
        for v in arrays if v.size
    )


def _all_buckets(opt):
    return [b for fg in opt._flat_params.layouts for b in fg.buckets]


@pytest.mark.parametrize("grid_cap,block", [(1, 32), (None, 64)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [2, 5, 7])
def test_flat_emulated_cuda_launchers(case, dtype, grid_cap, block, emulate, monkeypatch):
    """The GPU path: the cuda_ops launchers (run by the emulator on NumPy arrays) once per
    bucket over the flat buffers, with GPU slice alignment (zero gaps between params), give the
    same bits as one launch per tensor."""
    name, kw = FLAT_CASES[case]
    be = _backend.get_backend("numpy")
    launches = []
    for prim in PRIMS:
        launcher = getattr(cuda_optim, prim)

        def counted(*a, _f=launcher, **k):
            launches.append(a[0].size)
            return _f(*a, **k)

        monkeypatch.setattr(be, prim, counted)
    monkeypatch.setitem(_flat_mod._CHUNK_BYTES, "numpy", None)
    monkeypatch.setitem(_flat_mod._ALIGN_BYTES, "numpy", 64)
    shapes = [(3, 5), (7,), (2, 2, 2), ()]
    out = {}
    with emulate(grid_cap, block):
        for flat in (True, False):
            launches.clear()
            params = _make_params(dtype, seed=2, shapes=shapes)
            opt = getattr(optim, name)(params, flat=flat, **kw)
            for s in range(3):
                opt.zero_grad()
                _loss_backward(params, s)
                opt.step()
            out[flat] = (params, opt, list(launches))
    step = 64 // np.dtype(dtype).itemsize
    padded = sum(-(-math.prod(s) // step) * step for s in shapes)
    assert out[True][2] == [padded] * 3  # one launch per step over the padded flat buffer
    assert len(out[False][2]) == 3 * len(shapes)
    _assert_same(out[True][0], out[True][1], out[False][0], out[False][1])


def test_flat_model_training_matches_per_tensor():
    """A small CNN (conv, batch norm, dense) trained by train_on_batch: the flat optimizer
    gives the same weights as per-tensor updates, and backward fills the grad buffers."""
    import gpucnn
    from gpucnn import Sequential
    from gpucnn import layers as L

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    weights = {}
    for flat in (True, False):
        gpucnn.manual_seed(0)
        m = Sequential([L.Conv2D(4, 3, input_shape=(1, 8, 8)), L.BatchNormalization(),
                        L.Flatten(), L.Dense(3)])
        m.build((1, 8, 8))
        opt = optim.SGD(m.trainable_parameters(), lr=0.05, momentum=0.9, flat=flat)
        m.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
        for _ in range(3):
            m.train_on_batch(x, y)
        if flat:
            ps = m.trainable_parameters()
            assert len(_all_buckets(opt)) == 1
            assert all(p.grad.data is p._flat_grad for p in ps)
        weights[flat] = [w.copy() for w in m.get_weights()]
    for a, b in zip(weights[True], weights[False]):
        np.testing.assert_array_equal(a, b)


def test_flat_state_replaced_from_outside_is_copied_in(spy):
    """State arrays replaced by other code (as move_optimizer_state does after Module.to)
    are copied into the flat state buffers at the next step: same bits, one call."""
    res, calls = {}, []
    for flat in (True, False):
        params = _make_params(np.float64, shapes=[(3,), (2, 2)])
        opt = optim.Adam(params, lr=0.1, amsgrad=True, flat=flat)
        for s in range(4):
            opt.zero_grad()
            _loss_backward(params, s)
            if s == 2:
                for st in opt.state.values():
                    st["exp_avg"] = st["exp_avg"] * 0.5  # new arrays
            spy.calls = 0
            opt.step()
            calls.append(spy.calls)
        res[flat] = (params, opt)
    assert calls == [1] * 4 + [2] * 4
    params, opt = res[True]
    (bucket,) = _all_buckets(opt)
    for p in params:
        assert np.shares_memory(opt.state[p]["exp_avg"], bucket.state_flat["exp_avg"])
    _assert_same(*res[True], *res[False])


# ----------------------------------------------------------------------------- the grad slot

ALL_OPTIMIZERS = [FLAT_CASES[i] for i in (1, 4, 5, 7)]


def test_grad_slot_is_declared_on_parameter():
    """``Parameter._flat_grad`` is a declared class attribute, None on a fresh Parameter (no
    instance attribute); plain Tensors have no slot; backward leaves an unset slot alone."""
    assert "_flat_grad" in vars(Parameter) and Parameter._flat_grad is None
    p = Parameter(np.ones(3))
    assert p._flat_grad is None and "_flat_grad" not in vars(p)
    assert not hasattr(Tensor(np.ones(3), requires_grad=True), "_flat_grad")
    (p * p).sum().backward()
    assert p._flat_grad is None and "_flat_grad" not in vars(p)
    np.testing.assert_array_equal(p.grad.numpy(), 2.0)


def test_leaf_grad_written_into_the_slot():
    """A Parameter whose slot holds an array gets its gradient written into it, accumulates
    there, and falls back to a copy when the array does not match; a plain Tensor is never
    written into, whatever attributes it carries."""
    x = Parameter(np.array([1.0, 2.0, 3.0]))
    buf = np.full(3, 99.0)
    x._flat_grad = buf  # what the flat mechanism does
    (x * x).sum().backward()
    assert x.grad.data is buf
    np.testing.assert_array_equal(buf, [2.0, 4.0, 6.0])  # overwritten, not added to
    (x * 3.0).sum().backward()
    assert x.grad.data is buf
    np.testing.assert_array_equal(buf, [5.0, 7.0, 9.0])  # accumulated in place
    x.grad = None
    (x * 1.0).sum().backward()
    assert x.grad.data is buf
    np.testing.assert_array_equal(buf, [1.0, 1.0, 1.0])
    # 0-d leaf: NumPy returns scalars for 0-d products; still written into the slot
    s = Parameter(np.array(2.0))
    s._flat_grad = np.zeros(())
    (s * s).backward()
    assert s.grad.data is s._flat_grad and s.grad.item() == 4.0
    # arrays of another dtype or shape are not used
    for bad in (np.zeros(3, dtype=np.float32), np.zeros(4)):
        y = Parameter(np.array([1.0, 2.0, 3.0]))
        y._flat_grad = bad
        (y * 2.0).sum().backward()
        assert y.grad.data is not bad and y.grad.dtype == np.float64
        np.testing.assert_array_equal(y.grad.numpy(), 2.0)
        np.testing.assert_array_equal(bad, 0.0)
    t = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    t._flat_grad = planted = np.zeros(2)  # an attribute planted on a plain Tensor: ignored
    (t * 2.0).sum().backward()
    assert t.grad.data is not planted
    np.testing.assert_array_equal(planted, 0.0)


@pytest.mark.parametrize("name,kw", ALL_OPTIMIZERS)
def test_flat_opt_out_leaves_data_and_slot_alone(name, kw):
    """``flat=False``: no layout, ``p.data`` stays the very array it was, the slot is never
    set, and backward allocates each gradient afresh; same bits as the flat path."""
    params = _make_params(np.float64)
    data = [p.data for p in params]
    opt = getattr(optim, name)(params, flat=False, **kw)
    assert opt._flat_params.layouts == []
    seen = []
    for s in range(3):
        opt.zero_grad()
        _loss_backward(params, s)
        seen.append([p.grad.data for p in params])
        opt.step()
        assert all(p.data is d for p, d in zip(params, data))
        assert all(p._flat_grad is None and "_flat_grad" not in vars(p) for p in params)
    assert all(a is not b for a, b in zip(seen[0], seen[1]))  # fresh gradient arrays
    ref, ref_opt = _run(name, kw, np.float64, flat=True, groups=False, steps=3)
    _assert_same(params, opt, ref, ref_opt)


def test_flat_turned_off_later_releases_the_slots(spy):
    """``opt.flat = False`` after construction: the next step clears the slots and drops the
    layout (per tensor from then on); back to True lays the group out again. Same bits as an
    optimizer that was never flat."""
    params = _make_params(np.float64)
    ref = _make_params(np.float64)
    opt = optim.Adam(params, lr=1e-2, amsgrad=True)
    ref_opt = optim.Adam(ref, lr=1e-2, amsgrad=True, flat=False)
    n = len(params)
    calls = []
    for s in range(6):
        if s == 2:
            opt.flat = False
        if s == 4:
            opt.flat = True
        for ps, o in ((params, opt), (ref, ref_opt)):
            o.zero_grad()
            _loss_backward(ps, s)
        spy.calls = 0
        opt.step()
        calls.append(spy.calls)
        ref_opt.step()
        slots = [p._flat_grad for p in params]
        if opt.flat:
            (bucket,) = _all_buckets(opt)
            assert all(a is b for a, b in zip(slots, bucket.grad_views))
        else:
            assert opt._flat_params.layouts == [] and all(a is None for a in slots)
    assert calls == [1, 1, n, n, 1, 1]
    _assert_same(params, opt, ref, ref_opt)


def test_plain_tensors_take_the_per_tensor_path(spy):
    """Plain Tensors (no slot) are accepted, as by torch.optim, and updated one by one:
    ``loose``, their ``data`` never rebound; Parameters beside them are still bucketed."""
    rng = np.random.default_rng(4)
    init = [rng.standard_normal(s) for s in [(3, 2), (4,), (2, 2), (5,)]]
    results = {}
    for flat in (True, False):
        ps = [Parameter(init[0].copy()), Tensor(init[1].copy(), requires_grad=True),
              Parameter(init[2].copy()), Tensor(init[3].copy(), requires_grad=True)]
        plain_data = [ps[1].data, ps[3].data]
        opt = optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01, flat=flat)
        for s in range(3):
            opt.zero_grad()
            _loss_backward(ps, s)
            spy.calls = 0
            opt.step()
            assert spy.calls == (1 + 2 if flat else 4)
        assert ps[1].data is plain_data[0] and ps[3].data is plain_data[1]
        assert not any(hasattr(t, "_flat_grad") for t in (ps[1], ps[3]))
        if flat:
            (layout,) = opt._flat_params.layouts
            assert layout.loose == [ps[1], ps[3]]
            (bucket,) = layout.buckets
            assert bucket.params == [ps[0], ps[2]]
            assert ps[0].grad.data is ps[0]._flat_grad
        results[flat] = (ps, opt)
    _assert_same(*results[True], *results[False])
    only_plain = [Tensor(np.ones(3), requires_grad=True)]
    opt = optim.Adam(only_plain, lr=0.1)
    (layout,) = opt._flat_params.layouts
    assert layout.buckets == [] and layout.loose == only_plain


def test_flat_slot_cleared_when_laid_out_again():
    """A layout rebuilt (a parameter frozen) clears the slot of the parameter it no longer
    buckets; releasing one optimizer keeps the slot another optimizer set."""
    a, b, c = _make_params(np.float64, shapes=[(3,), (4,), (2,)])
    opt = optim.SGD([a, b, c], lr=0.1, momentum=0.9)
    (old,) = _all_buckets(opt)
    assert all(p._flat_grad is v for p, v in zip(old.params, old.grad_views))
    b.requires_grad = False
    for p in (a, c):
        p.grad = Tensor(np.ones(p.shape))
    opt.step()
    (new,) = _all_buckets(opt)
    assert new is not old and new.params == [a, c] and b._flat_grad is None
    assert a._flat_grad is new.grad_views[0] and c._flat_grad is new.grad_views[1]
    # two optimizers over one parameter: the slot belongs to the one that set it last
    d = Parameter(np.ones(3))
    first = optim.SGD([d], lr=0.1)
    second = optim.SGD([d], lr=0.1)
    (bucket2,) = _all_buckets(second)
    assert d._flat_grad is bucket2.grad_views[0]
    first.flat = False
    d.grad = Tensor(np.ones(3))
    first.step()  # releases first's layout: second's slot is kept
    assert d._flat_grad is bucket2.grad_views[0]


def test_parameter_copies_do_not_carry_the_slot():
    """The slot belongs to an optimizer's buffers: copies and pickles of a Parameter have none
    (their data and gradient are copied as usual)."""
    import copy
    import pickle

    params = _make_params(np.float64, shapes=[(3,), (2, 2)])
    optim.SGD(params, lr=0.1, momentum=0.9)
    _loss_backward(params, 0)
    for p in params:
        for q in (copy.deepcopy(p), pickle.loads(pickle.dumps(p)), copy.copy(p)):
            assert q._flat_grad is None and "_flat_grad" not in vars(q)
            np.testing.assert_array_equal(q.numpy(), p.numpy())
            np.testing.assert_array_equal(q.grad.numpy(), p.grad.numpy())
        assert p._flat_grad is not None


@pytest.mark.parametrize("name,kw", ALL_OPTIMIZERS)
def test_flat_path_calls_the_per_tensor_reference(name, kw):
    """The flat path runs the optimizer's own per-tensor ``_update``, once per bucket, on the
    flat buffers; the per-tensor path once per parameter on ``p.data``."""
    calls = []
    base = getattr(optim, name)

    class Recorded(base):
        def _update(self, be, param, grad, state, group):
            calls.append((param, grad))
            super()._update(be, param, grad, state, group)

    Recorded.__name__ = name
    for flat in (True, False):
        calls.clear()
        params = _make_params(np.float32, shapes=[(3, 2), (4,), ()])
        opt = Recorded(params, flat=flat, **kw)
        _loss_backward(params, 0)
        opt.step()
        if flat:
            (bucket,) = _all_buckets(opt)
            assert len(calls) == 1
            assert calls[0][0] is bucket.flat and calls[0][1] is bucket.grad_flat
        else:
            assert len(calls) == 3
            assert all(c[0] is p.data for c, p in zip(calls, params))


# ----------------------------------------------------------------------------- Adagrad, NAdam

ADAGRAD_CASES = [
    dict(lr_decay=0.0, weight_decay=0.0, eps=1e-10),
    dict(lr_decay=0.05, weight_decay=0.1, eps=1e-6),
]
NADAM_CASES = [
    dict(weight_decay=0.0, decoupled=False),
    dict(weight_decay=0.1, decoupled=False),
    dict(weight_decay=0.05, decoupled=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", range(len(ADAGRAD_CASES)))
def test_adagrad_kernel_parity(dtype, launch_grid, emulate, n, case):
    kw = ADAGRAD_CASES[case]
    rng = np.random.default_rng(30 + case)
    p0 = rng.standard_normal(n).astype(dtype)
    sa = [p0.copy(), np.full_like(p0, 0.1)]
    sb = [p0.copy(), np.full_like(p0, 0.1)]
    with emulate(*launch_grid):
        for step in range(1, 4):
            g = rng.standard_normal(n).astype(dtype)
            for fn, s in ((cuda_optim.adagrad_update, sa), (np_optim.adagrad_update, sb)):
                fn(s[0], g, s[1], 0.05, step=step, **kw)
    for a, b in zip(sa, sb):
        np.testing.assert_allclose(a, b, **_tol(dtype))
    assert not np.allclose(sa[0], p0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", range(len(NADAM_CASES)))
def test_nadam_kernel_parity(dtype, launch_grid, emulate, n, case):
    kw = NADAM_CASES[case]
    rng = np.random.default_rng(40 + case)
    p0 = rng.standard_normal(n).astype(dtype)
    sa = [p0.copy(), np.zeros_like(p0), np.zeros_like(p0)]
    sb = [p0.copy(), np.zeros_like(p0), np.zeros_like(p0)]
    prod = 1.0
    with emulate(*launch_grid):
        for step in range(1, 4):
            mu = 0.9 * (1 - 0.5 * 0.96 ** (step * 4e-3))
            mu_next = 0.9 * (1 - 0.5 * 0.96 ** ((step + 1) * 4e-3))
            prod *= mu
            g = rng.standard_normal(n).astype(dtype)
            for fn, s in ((cuda_optim.nadam_update, sa), (np_optim.nadam_update, sb)):
                fn(s[0], g, s[1], s[2], 1e-2, 0.9, 0.99, 1e-8, kw["weight_decay"], mu, mu_next,
                   prod, step, kw["decoupled"])
    for a, b in zip(sa, sb):
        np.testing.assert_allclose(a, b, **_tol(dtype))
    assert not np.allclose(sa[0], p0)


def test_adagrad_by_hand(backend):
    p = _param([1.0, -2.0], backend.name)
    opt = optim.Adagrad([p], lr=0.5, lr_decay=0.1, weight_decay=0.2,
                        initial_accumulator_value=0.25, eps=0.0)
    x, acc = np.array([1.0, -2.0]), np.full(2, 0.25)
    for t, gv in enumerate([[0.5, 1.0], [-1.0, 0.25]], start=1):
        _set_grad(p, gv)
        opt.step()
        g = np.array(gv) + 0.2 * x
        acc = acc + g * g
        x = x - 0.5 / (1 + (t - 1) * 0.1) * g / np.sqrt(acc)
        np.testing.assert_allclose(p.numpy(), x, rtol=1e-12)
    assert opt.state[p]["step"] == 2


def test_nadam_by_hand():
    p = _param([1.0])
    opt = optim.NAdam([p], lr=0.1, betas=(0.5, 0.75), eps=0.0, momentum_decay=0.5)
    x, m, v, prod = 1.0, 0.0, 0.0, 1.0
    for t, g in enumerate([2.0, -1.0, 0.5], start=1):
        _set_grad(p, [g])
        opt.step()
        mu = 0.5 * (1 - 0.5 * 0.96 ** (t * 0.5))
        mu1 = 0.5 * (1 - 0.5 * 0.96 ** ((t + 1) * 0.5))
        prod *= mu
        m = 0.5 * m + 0.5 * g
        v = 0.75 * v + 0.25 * g * g
        d = math.sqrt(v / (1 - 0.75**t))
        x = x - 0.1 * (1 - mu) / (1 - prod) * g / d - 0.1 * mu1 / (1 - prod * mu1) * m / d
        np.testing.assert_allclose(p.numpy(), [x], rtol=1e-12)
    assert opt.state[p]["mu_product"] == pytest.approx(prod, rel=1e-15)


NEW_TORCH_CASES = [
    ("Adagrad", "Adagrad", dict()),
    ("Adagrad", "Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.05,
                                initial_accumulator_value=0.3, eps=1e-6)),
    ("NAdam", "NAdam", dict()),
    ("NAdam", "NAdam", dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1,
                            momentum_decay=1e-2)),
    ("Nadam", "NAdam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", range(len(NEW_TORCH_CASES)))
@pytest.mark.parametrize("flat", [True, False])
def test_adagrad_nadam_torch_parity(case, dtype, flat):
    """Step by step against torch.optim (its scalar state in float64 for the float64 case)."""
    torch = pytest.importorskip("torch")
    name, tname, kw = NEW_TORCH_CASES[case]
    rng = np.random.default_rng(200 + case)
    init = [rng.standard_normal(s).astype(dtype) for s in [(3, 4), (5,), (2, 3, 2)]]
    ours = [Parameter(a.copy()) for a in init]
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
        opt = getattr(optim, name)(ours, flat=flat, **kw)
        topt = getattr(torch.optim, tname)(theirs, **kw)
        tol = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
        for _ in range(6):
            for p, t in zip(ours, theirs):
                g = rng.standard_normal(p.shape).astype(dtype)
                p.grad = Tensor(g)
                t.grad = torch.tensor(g)
            opt.step()
            topt.step()
            for p, t in zip(ours, theirs):
                np.testing.assert_allclose(p.numpy(), t.detach().numpy(), **tol)
    finally:
        torch.set_default_dtype(old)
    assert all(p.dtype == dtype for p in ours)


@pytest.mark.parametrize(
    "name,kw",
    [("Adagrad", dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1)),
     ("NAdam", dict(lr=0.01, weight_decay=0.01)),
     ("NAdam", dict(lr=0.01, weight_decay=0.01, decoupled_weight_decay=True))],
)
def test_adagrad_nadam_state_dict_round_trip(name, kw):
    rng = np.random.default_rng(6)
    init = [rng.standard_normal((4, 3)), rng.standard_normal(5)]
    grads = [[rng.standard_normal(a.shape) for a in init] for _ in range(6)]

    def run(params, opt, steps):
        for gs in steps:
            for p, g in zip(params, gs):
                p.grad = Tensor(g.copy())
            opt.step()

    ref = [Parameter(a.copy()) for a in init]
    run(ref, getattr(optim, name)(ref, **kw), grads)
    first = [Parameter(a.copy()) for a in init]
    opt1 = getattr(optim, name)(first, **kw)
    run(first, opt1, grads[:3])
    sd = opt1.state_dict()
    opt2 = getattr(optim, name)(first, lr=99.0)
    opt2.load_state_dict(sd)
    assert opt2.lr == kw["lr"]
    run(first, opt2, grads[3:])
    for p, r in zip(first, ref):
        np.testing.assert_allclose(p.numpy(), r.numpy(), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "name,kw",
    [("Adagrad", dict(lr=0.05, lr_decay=0.01, weight_decay=0.02,
                      initial_accumulator_value=0.1)),
     ("NAdam", dict(lr=1e-2, weight_decay=0.05))],
)
def test_adagrad_nadam_flat_bit_identical(name, kw, dtype, spy, monkeypatch):
    """One primitive call per group per step on flat buffers (and in cache-sized pieces),
    the same bits as one call per tensor."""
    spy.calls = 0
    be = _backend.get_backend("numpy")
    for prim in ("adagrad_update", "nadam_update"):
        spy.wrap(prim, getattr(be, prim))
    pf, of = _run(name, kw, dtype, flat=True)
    flat_calls, spy.calls = spy.calls, 0
    pt, ot = _run(name, kw, dtype, flat=False)
    assert flat_calls == 5 * 2 and spy.calls == 5 * len(FLAT_SHAPES)
    _assert_same(pf, of, pt, ot)
    monkeypatch.setitem(_flat_mod._CHUNK_BYTES, "numpy", 40)  # pieces of 5 float64 elements
    pc, oc = _run(name, kw, dtype, flat=True)
    _assert_same(pc, oc, pt, ot)


def test_adagrad_nadam_errors():
    p = Parameter(np.ones(2))
    with pytest.raises(ValueError, match="Adagrad: invalid lr_decay -1"):
        optim.Adagrad([p], lr_decay=-1)
    with pytest.raises(ValueError, match="Adagrad: invalid initial_accumulator_value"):
        optim.Adagrad([p], initial_accumulator_value=-0.1)
    with pytest.raises(ValueError, match="NAdam: invalid momentum_decay"):
        optim.NAdam([p], momentum_decay=-1.0)
    with pytest.raises(ValueError, match=r"NAdam: invalid betas \(1.0, 0.9\)"):
        optim.NAdam([p], betas=(1.0, 0.9))
    assert optim.Nadam is optim.NAdam
    assert optim.Adagrad([p]).defaults["lr"] == 1e-2 and optim.NAdam([p]).lr == 2e-3


# ----------------------------------------------------------------------------- Keras style


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam"])
def test_learning_rate_keyword_and_unbound_optimizers(name):
    cls = getattr(optim, name)
    p = Parameter(np.ones(3))
    assert cls([p], learning_rate=0.125).lr == 0.125
    assert cls([p], lr=0.125, learning_rate=0.125).learning_rate == 0.125  # same value: fine
    with pytest.raises(ValueError, match=rf"{name}: lr=0.1 and learning_rate=0.2 disagree"):
        cls([p], lr=0.1, learning_rate=0.2)
    opt = cls(learning_rate=0.25)  # Keras style: no parameters yet
    assert not opt.bound and opt.lr == 0.25 and opt.param_groups == []
    opt.learning_rate = 0.5
    assert opt.lr == 0.5
    with pytest.raises(RuntimeError, match="has no parameters yet"):
        opt.step()
    assert opt.bind([p]) is opt and opt.bound
    assert opt.param_groups[0]["lr"] == 0.5
    with pytest.raises(RuntimeError, match="already has its parameters"):
        opt.bind([Parameter(np.ones(2))])
    opt.learning_rate = 0.01
    assert opt.param_groups[0]["lr"] == 0.01 and opt.lr == 0.01
    p.grad = Tensor(np.ones(3))
    opt.step()
    assert not np.allclose(p.numpy(), 1.0)


def test_learning_rate_in_param_groups_and_bad_params():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "learning_rate": 0.5}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert "learning_rate" not in opt.param_groups[1]
    with pytest.raises(ValueError, match="disagree"):
        optim.SGD([{"params": [a], "lr": 0.1, "learning_rate": 0.2}])
    with pytest.raises(TypeError, match="got the number 0.1; pass the learning rate as lr="):
        optim.SGD(0.1)
    with pytest.raises(TypeError, match="params must be an iterable"):
        optim.Adam(object())
