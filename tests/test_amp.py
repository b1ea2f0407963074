"""gpucnn.amp.GradScaler: parity with torch.amp.GradScaler, growth/backoff, state dicts,
the disabled pass-through, errors, and one host read per step on the simulated device."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpucnn
from gpucnn import Parameter, Tensor, optim
from gpucnn import backend as B
from gpucnn.amp import GradScaler
from gpucnn.backend.device import is_device_array

# The poisoned steps overflow on purpose (NumPy says so).
pytestmark = pytest.mark.filterwarnings(
    "ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning"
)

SHAPES = [(3, 4), (5,), (2, 3, 2)]

# Per step: None (clean), or how the loss coefficients are poisoned: inf, nan, or "big"
# (finite coefficients whose scaled gradients overflow float32 to inf).
EVENTS = [None, None, "inf", None, None, None, "nan", "big", None, None, None, None, None,
          None, "inf", None, None, None, None, None]


def _dev(a: np.ndarray):
    """``a`` on the active backend (a device array on the simulated pass)."""
    return B.get().xp.asarray(a)


def _coeffs(rng: np.random.Generator, event: str | None) -> list[np.ndarray]:
    cs = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    if event == "inf":
        cs[1][2] = np.inf
    elif event == "nan":
        cs[2][1, 0, 1] = np.nan
    elif event == "big":
        cs[0][0, 0] = np.float32(1e35)  # x scale 2**k overflows float32
    return cs


def _run_ours(opt_name, kw, flat, events, scaler_kw, unscale_every=3, seed=0, scaler=None,
              params=None, opt=None, start=0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    if params is None:
        params = [Parameter(_dev(a)) for a in init]
        opt = getattr(optim, opt_name)(params, flat=flat, **kw)
        scaler = GradScaler(**scaler_kw)
    scales, rets = [], []
    crng = np.random.default_rng(seed + 1)
    for i, ev in enumerate(events):
        cs = _coeffs(crng, ev)
        if i < start:
            continue
        opt.zero_grad()
        loss = sum(((p * Tensor(_dev(c))).sum() for p, c in zip(params, cs)), Tensor(_dev(
            np.zeros((), np.float32))))
        scaler.scale(loss).backward()
        if i % unscale_every == 1:
            scaler.unscale_(opt)
        rets.append(scaler.step(opt))
        scaler.update()
        scales.append(scaler.get_scale())
    return params, opt, scaler, scales, rets


def _run_torch(torch, opt_name, kw, events, scaler_kw, unscale_every=3, seed=0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    params = [torch.tensor(a, requires_grad=True) for a in init]
    opt = getattr(torch.optim, opt_name)(params, **kw)
    scaler = torch.amp.GradScaler("cpu", **scaler_kw)
    scales, rets = [], []
    crng = np.random.default_rng(seed + 1)
    for i, ev in enumerate(events):
        cs = _coeffs(crng, ev)
        opt.zero_grad()
        loss = sum((p * torch.tensor(c)).sum() for p, c in zip(params, cs))
        scaler.scale(loss).backward()
        if i % unscale_every == 1:
            scaler.unscale_(opt)
        rets.append(scaler.step(opt))
        scaler.update()
        scales.append(scaler.get_scale())
    return params, scales, rets


TORCH_CASES = [
    ("SGD", dict(lr=0.1), True),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01), True),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True), False),
    ("Adam", dict(lr=1e-2), True),
    ("Adam", dict(lr=1e-2, weight_decay=0.1, amsgrad=True), False),
    ("AdamW", dict(lr=1e-2), True),
]
# float32: SGD's update is exact to an ulp or so; Adam's divides and square roots differ from
# torch's by a few ulps per step (tests/test_optim.py's float32 tolerance).
def _tol(name: str) -> dict:
    return dict(rtol=1e-6, atol=1e-7) if name == "SGD" else dict(rtol=1e-5, atol=1e-6)


SCALER_KW = dict(init_scale=2.0**20, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)


@pytest.mark.parametrize("case", range(len(TORCH_CASES)))
def test_torch_parity_scales_skips_and_weights(case):
    torch = pytest.importorskip("torch")
    name, kw, flat = TORCH_CASES[case]
    ours, opt, _, scales, rets = _run_ours(name, kw, flat, EVENTS, SCALER_KW)
    theirs, tscales, trets = _run_torch(torch, name, kw, EVENTS, SCALER_KW)
    assert scales == tscales
    assert rets == trets  # None: a skipped step, and torch.optim's own return otherwise
    skipped = [i for i, ev in enumerate(EVENTS) if ev is not None]
    if name.startswith("Adam"):  # the steps that ran: Adam counts them
        assert all(opt.state[p]["step"] == len(EVENTS) - len(skipped) for p in ours)
    assert [i for i, s in enumerate(scales) if i and s < scales[i - 1]] == [
        i for i in skipped if i
    ]
    for p, t in zip(ours, theirs):
        assert p.dtype == np.float32
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), **_tol(name))


def test_torch_parity_odd_scale_factors():
    """A scale that is not a power of two (inverse rounded to float32 as torch does)."""
    torch = pytest.importorskip("torch")
    skw = dict(init_scale=3000.0, growth_factor=3.0, backoff_factor=0.3, growth_interval=2)
    ours, _, _, scales, _ = _run_ours("Adam", dict(lr=1e-2), True, EVENTS, skw)
    theirs, tscales, _ = _run_torch(torch, "Adam", dict(lr=1e-2), EVENTS, skw)
    np.testing.assert_array_equal(np.float32(scales), np.float32(tscales))
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), **_tol("Adam"))


def _one_param_step(scaler, opt, p, grad):
    opt.zero_grad()
    p.grad = Tensor(_dev(np.asarray(grad, np.float32)))
    ret = scaler.step(opt)
    scaler.update()
    return ret


def test_growth_after_growth_interval_clean_steps_and_backoff():
    p = Parameter(_dev(np.ones(4, np.float32)))
    opt = optim.SGD([p], lr=0.0)
    scaler = GradScaler(init_scale=8.0, growth_factor=2.0, backoff_factor=0.25, growth_interval=4)
    seen = []
    for _ in range(9):
        _one_param_step(scaler, opt, p, np.ones(4))
        seen.append(scaler.get_scale())
    assert seen == [8.0, 8.0, 8.0, 16.0, 16.0, 16.0, 16.0, 32.0, 32.0]
    assert scaler.state_dict()["_growth_tracker"] == 1
    assert _one_param_step(scaler, opt, p, [1.0, np.inf, 1.0, 1.0]) is None
    assert scaler.get_scale() == 8.0 and scaler.state_dict()["_growth_tracker"] == 0
    # the tracker restarts: growth_interval clean steps again before the next growth
    for _ in range(3):
        _one_param_step(scaler, opt, p, np.ones(4))
    assert scaler.get_scale() == 8.0
    _one_param_step(scaler, opt, p, np.ones(4))
    assert scaler.get_scale() == 16.0


def test_defaults_are_torchs():
    s = GradScaler()
    assert s.get_scale() == 2.0**16 and s.is_enabled()
    assert (s.get_growth_factor(), s.get_backoff_factor(), s.get_growth_interval()) == (
        2.0, 0.5, 2000)
    assert GradScaler("cuda").get_scale() == 2.0**16
    assert GradScaler(device="cpu", init_scale=4.0).get_scale() == 4.0
    s.set_growth_factor(3.0)
    s.set_backoff_factor(0.25)
    s.set_growth_interval(7)
    assert s.state_dict() == {"scale": 2.0**16, "growth_factor": 3.0, "backoff_factor": 0.25,
                              "growth_interval": 7, "_growth_tracker": 0}


def test_unscale_divides_grads_where_the_flat_optimizer_reads_them():
    """unscale_ leaves the true gradients in p.grad (views of the flat bucket buffer) and the
    flat and per-tensor optimizers take the same step from them."""
    rng = np.random.default_rng(3)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    results = []
    for flat in (True, False):
        ps = [Parameter(_dev(a)) for a in init]
        opt = optim.Adam(ps, lr=0.1, flat=flat)
        scaler = GradScaler(init_scale=1024.0)
        loss = sum((p * Tensor(_dev(g))).sum() for p, g in zip(ps, grads))
        scaler.scale(loss).backward()
        for p, g in zip(ps, grads):
            np.testing.assert_allclose(p.grad.numpy(), g * 1024.0, rtol=1e-6)
        scaler.unscale_(opt)
        for p, g in zip(ps, grads):
            np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-6)
        assert scaler.step(opt) is None  # Adam.step() returns None (closure-less)
        scaler.update()
        results.append([p.numpy() for p in ps])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_step_returns_the_optimizers_return():
    p = Parameter(_dev(np.ones(2, np.float32)))
    opt = optim.SGD([p], lr=0.1)
    scaler = GradScaler()
    calls = []
    real = opt.step

    def step(*args, **kwargs):
        calls.append((args, kwargs))
        real()
        return "ret"

    opt.step = step
    p.grad = Tensor(_dev(np.ones(2, np.float32)))
    assert scaler.step(opt, 1, flag=True) == "ret"
    assert calls == [((1,), {"flag": True})]
    scaler.update()
    p.grad = Tensor(_dev(np.array([np.nan, 1.0], np.float32)))
    assert scaler.step(opt) is None and len(calls) == 1
    scaler.update()


def test_state_dict_round_trip_through_save_load_continues_exactly(tmp_path):
    half = len(EVENTS) // 2
    kw = dict(lr=1e-2)
    ref, _, _, ref_scales, _ = _run_ours("Adam", kw, True, EVENTS, SCALER_KW)

    params, opt, scaler, scales, _ = _run_ours("Adam", kw, True, EVENTS[:half], SCALER_KW)
    path = tmp_path / "ckpt.npz"
    gpucnn.save({"params": [p.numpy() for p in params], "optimizer": opt.state_dict(),
                 "scaler": scaler.state_dict()}, path)
    ck = gpucnn.load(path)
    assert ck["scaler"] == scaler.state_dict()
    assert all(isinstance(v, (int, float)) for v in ck["scaler"].values())

    params2 = [Parameter(_dev(np.asarray(a))) for a in ck["params"]]
    opt2 = optim.Adam(params2, **kw)
    opt2.load_state_dict(ck["optimizer"])
    scaler2 = GradScaler()
    scaler2.load_state_dict(ck["scaler"])
    assert scaler2.state_dict() == scaler.state_dict()
    _, _, _, scales2, _ = _run_ours("Adam", kw, True, EVENTS, SCALER_KW, scaler=scaler2,
                                    params=params2, opt=opt2, start=half)
    assert scales + scales2 == ref_scales
    for a, b in zip(ref, params2):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_disabled_is_a_pass_through():
    p = Parameter(_dev(np.ones(3, np.float32)))
    opt = optim.SGD([p], lr=0.5)
    scaler = GradScaler(enabled=False)
    assert not scaler.is_enabled() and scaler.get_scale() == 1.0
    loss = (p * 2.0).sum()
    assert scaler.scale(loss) is loss
    loss.backward()
    scaler.unscale_(opt)
    scaler.unscale_(opt)  # no error when disabled
    np.testing.assert_array_equal(p.grad.numpy(), [2.0, 2.0, 2.0])
    assert scaler.step(opt) is None
    scaler.update()
    np.testing.assert_array_equal(p.numpy(), [0.0, 0.0, 0.0])
    # a disabled scaler does not skip non-finite steps either: it is not there
    p.grad = Tensor(_dev(np.array([np.inf, 0.0, 0.0], np.float32)))
    scaler.step(opt)
    assert math.isinf(float(p.numpy()[0]))
    assert scaler.state_dict() == {}
    scaler.load_state_dict({})  # ignored, as torch


def test_scale_backprops_and_accepts_sequences():
    p = Parameter(_dev(np.ones(2, np.float32)))
    scaler = GradScaler(init_scale=4.0)
    a, b = scaler.scale([(p * 3.0).sum(), (p * 1.0).sum()])
    assert a.item() == 24.0 and b.item() == 8.0
    a.backward()
    np.testing.assert_array_equal(p.grad.numpy(), [12.0, 12.0])
    with pytest.raises(TypeError, match="GradScaler.scale"):
        scaler.scale(3.0)


def test_double_unscale_and_misordered_calls_raise():
    p = Parameter(_dev(np.ones(2, np.float32)))
    opt = optim.SGD([p], lr=0.1)
    scaler = GradScaler()
    p.grad = Tensor(_dev(np.ones(2, np.float32)))
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="unscale_\\(\\) has already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    scaler.update()
    with pytest.raises(RuntimeError, match="no inf checks were recorded"):
        scaler.update()
    with pytest.raises(RuntimeError, match="Closure"):
        scaler.step(opt, closure=lambda: 0.0)
    p.grad = Tensor(_dev(np.ones(2, np.float32)))
    scaler.unscale_(opt)  # a new iteration after update()
    scaler.update(new_scale=8.0)
    assert scaler.get_scale() == 8.0


def test_float16_grads_are_refused():
    p = Parameter(_dev(np.ones(2, np.float16)))
    opt = optim.SGD([p], lr=0.1, flat=False)
    p.grad = Tensor(_dev(np.ones(2, np.float16)))
    with pytest.raises(ValueError, match="FP16"):
        GradScaler().unscale_(opt)


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(init_scale=0.0), "init_scale"),
        (dict(init_scale=-1.0), "init_scale"),
        (dict(init_scale=float("inf")), "init_scale"),
        (dict(init_scale=None), "init_scale"),
        (dict(growth_factor=1.0), "growth_factor"),
        (dict(growth_factor=0.5), "growth_factor"),
        (dict(backoff_factor=1.0), "backoff_factor"),
        (dict(backoff_factor=0.0), "backoff_factor"),
        (dict(growth_interval=0), "growth_interval"),
        (dict(growth_interval=2.5), "growth_interval"),
        (dict(growth_interval=True), "growth_interval"),
    ],
)
def test_bad_arguments_name_the_class_and_argument(kw, name):
    with pytest.raises(ValueError, match=f"GradScaler: {name}"):
        GradScaler(**kw)


def test_bad_new_scale_and_state():
    s = GradScaler()
    with pytest.raises(ValueError, match="GradScaler: new_scale"):
        s.update(new_scale=0.0)
    with pytest.raises(RuntimeError, match="empty"):
        s.load_state_dict({})
    bad = dict(GradScaler().state_dict(), growth_factor=0.9)
    with pytest.raises(ValueError, match="GradScaler: growth_factor"):
        s.load_state_dict(bad)
    with pytest.raises(ValueError, match="GradScaler: backoff_factor"):
        s.set_backoff_factor(2.0)


# ------------------------------------------------------------------ host reads (simulated device)


@pytest.mark.parametrize("flat", [True, False])
def test_one_host_read_per_step_on_the_simulated_device(flat):
    """unscale_ reads nothing back; step() reads the one inf flag (whatever the number of
    parameters), on clean and on skipped steps; update() reads nothing more."""
    from gpucnn.testing import simulated_device

    rng = np.random.default_rng(5)
    shapes = [(4, 3), (7,), (2, 2, 2), (5, 1), (3,), (6, 2)]
    with simulated_device() as sim:
        xp = B.get().xp
        ps = [Parameter(xp.asarray(rng.standard_normal(s).astype(np.float32))) for s in shapes]
        opt = optim.SGD(ps, lr=0.1, momentum=0.9, flat=flat)
        scaler = GradScaler(init_scale=256.0, growth_interval=2)
        grads = [xp.asarray(rng.standard_normal(s).astype(np.float32)) for s in shapes]

        def set_grads(bad: bool) -> None:
            loss = sum((p * Tensor(g)).sum() for p, g in zip(ps, grads))
            if bad:
                loss = loss * float("inf")
            opt.zero_grad()
            scaler.scale(loss).backward()

        def delta(fn) -> dict:
            before = sim.counters(thread="current").snapshot()
            fn()
            after = sim.counters(thread="current").snapshot()
            return {k: after[k] - before[k] for k in ("syncs", "d2h")}

        # the optimizer's own step, for reference (warm: momentum buffers exist)
        set_grads(False)
        opt.step()
        set_grads(False)
        plain = delta(opt.step)
        for bad in (False, True, False, False):
            set_grads(bad)
            assert delta(lambda: scaler.unscale_(opt)) == {"syncs": 0, "d2h": 0}
            got = delta(lambda: (scaler.step(opt), scaler.update()))
            want = 1 if bad else 1 + plain["syncs"]
            assert got["syncs"] == want, (bad, got, plain)
            assert got["d2h"] == (1 if bad else 1 + plain["d2h"]), (bad, got, plain)
        # step() without an explicit unscale_: still one read
        set_grads(False)
        got = delta(lambda: (scaler.step(opt), scaler.update()))
        assert got["syncs"] == 1 + plain["syncs"]
        assert is_device_array(ps[0].data)
        # 256: clean, inf (128), clean, clean (256), clean
        assert scaler.get_scale() == 256.0


def test_flat_buckets_are_unscaled_in_one_piece_and_partial_buckets_per_tensor():
    rng = np.random.default_rng(7)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    ps = [Parameter(_dev(a)) for a in init]
    opt = optim.SGD(ps, lr=0.1)
    scaler = GradScaler(init_scale=64.0)
    scaler.scale(sum((p * Tensor(_dev(g))).sum() for p, g in zip(ps, grads))).backward()
    arrays = scaler._grad_arrays(opt)
    assert len(arrays) == 1 and arrays[0].size >= sum(int(np.prod(s)) for s in SHAPES)
    # one parameter without a gradient: the bucket goes per tensor (as the optimizer does)
    opt.zero_grad()
    scaler.scale(sum((p * Tensor(_dev(g))).sum() for p, g in zip(ps[:2], grads))).backward()
    assert ps[2].grad is None and len(scaler._grad_arrays(opt)) == 2
    before = ps[2].numpy()
    scaler.step(opt)
    scaler.update()
    for p, a, g in zip(ps[:2], init, grads):
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-6)
        np.testing.assert_allclose(p.numpy(), a - 0.1 * g, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ps[2].numpy(), before)


@pytest.mark.parametrize("flat", [True, False])
def test_a_model_trains_bit_for_bit_as_without_scaling(flat):
    """Power-of-two scales are exact: a Sequential trained with the scaler (no overflow) ends
    with the very weights of the same loop without it."""
    import gpucnn.functional as F
    from gpucnn import layers as L

    rng = np.random.default_rng(11)
    x = _dev(rng.standard_normal((16, 6)).astype(np.float32))
    y = _dev(rng.integers(0, 3, 16).astype(np.int64))
    weights = []
    for enabled in (True, False):
        gpucnn.manual_seed(0)
        net = gpucnn.Sequential([L.Dense(8, activation="relu"), L.Dense(3)])
        net.build((6,))
        opt = optim.Adam(net.parameters(), lr=1e-2, flat=flat)
        scaler = GradScaler(init_scale=2.0**10, growth_interval=2, enabled=enabled)
        for _ in range(5):
            opt.zero_grad()
            loss = F.cross_entropy(net(Tensor(x)), Tensor(y))
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        assert scaler.get_scale() == (2.0**12 if enabled else 1.0)
        weights.append([p.numpy() for p in net.parameters()])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
