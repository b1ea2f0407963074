"""Optimizers: fused-kernel parity (emulated), hand-computed steps, torch.optim parity, state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpucnn import Parameter, Tensor, optim
from gpucnn.backend.cuda_ops import optim as cuda_optim
from gpucnn.backend.numpy_ops import optim as np_optim
from gpucnn.backend.runtime import use_runtime

LAUNCH = [(1, 32), (3, 64), (None, 256)]
SIZES = [1, 37, 300]


def _emulated(grid_cap, block):
    emu = pytest.importorskip("gpucnn.testing.emulator")
    if not emu.compiler_available():
        pytest.skip("no host C++ compiler for the kernel emulator")
    return use_runtime(emu.emulated_runtime(grid_cap=grid_cap, block=block))


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
@pytest.mark.parametrize("grid_cap,block", LAUNCH)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", range(len(SGD_CASES)))
def test_sgd_kernel_parity(dtype, grid_cap, block, n, case):
    kw = SGD_CASES[case]
    rng = np.random.default_rng(case)
    p0 = rng.standard_normal(n).astype(dtype)
    pa, pb = p0.copy(), p0.copy()
    ba, bb = np.zeros_like(p0), np.zeros_like(p0)
    with _emulated(grid_cap, block):
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
@pytest.mark.parametrize("grid_cap,block", LAUNCH)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", range(len(ADAM_CASES)))
def test_adam_kernel_parity(dtype, grid_cap, block, n, case):
    kw = ADAM_CASES[case]
    rng = np.random.default_rng(10 + case)
    p0 = rng.standard_normal(n).astype(dtype)
    sa = [p0.copy()] + [np.zeros_like(p0) for _ in range(3)]
    sb = [p0.copy()] + [np.zeros_like(p0) for _ in range(3)]
    with _emulated(grid_cap, block):
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
@pytest.mark.parametrize("grid_cap,block", LAUNCH)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", range(len(RMS_CASES)))
def test_rmsprop_kernel_parity(dtype, grid_cap, block, n, case):
    kw = RMS_CASES[case]
    rng = np.random.default_rng(20 + case)
    p0 = rng.standard_normal(n).astype(dtype)
    sa = [p0.copy()] + [np.zeros_like(p0) for _ in range(3)]
    sb = [p0.copy()] + [np.zeros_like(p0) for _ in range(3)]
    with _emulated(grid_cap, block):
        for _ in range(3):
            g = rng.standard_normal(n).astype(dtype)
            for fn, s in ((cuda_optim.rmsprop_update, sa), (np_optim.rmsprop_update, sb)):
                ga = s[2] if kw["centered"] else None
                mb = s[3] if kw["momentum"] > 0 else None
                fn(s[0], g, s[1], ga, mb, 1e-2, 0.9, 1e-8, **kw)
    for a, b in zip(sa, sb):
        np.testing.assert_allclose(a, b, **_tol(dtype))


def test_kernel_rejects_non_contiguous_param():
    p = np.zeros((4, 4), np.float32)[:, ::2]
    with _emulated(None, 32):
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
