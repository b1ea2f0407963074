"""Learning-rate schedules against torch.optim.lr_scheduler, by hand, and their state dicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpucnn import Parameter, optim
from gpucnn.optim import lr_scheduler as S


def _ours(lrs=(0.1,)):
    groups = [{"params": [Parameter(np.ones(2))], "lr": lr} for lr in lrs]
    return optim.SGD(groups, lr=lrs[0], momentum=0.9)


def _theirs(torch, lrs=(0.1,)):
    groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


CASES = {
    "step": (lambda m, o: m.StepLR(o, step_size=7, gamma=0.5)),
    "multistep": (lambda m, o: m.MultiStepLR(o, milestones=[3, 10, 10, 25], gamma=0.3)),
    "exponential": (lambda m, o: m.ExponentialLR(o, gamma=0.95)),
    "cosine": (lambda m, o: m.CosineAnnealingLR(o, T_max=20, eta_min=1e-3)),
    "cosine_zero": (lambda m, o: m.CosineAnnealingLR(o, T_max=13)),
    "linear": (lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=8)),
    "linear_down": (lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.2, total_iters=5)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_against_torch(name):
    torch = pytest.importorskip("torch")
    lrs = (0.1, 0.03)
    opt, topt = _ours(lrs), _theirs(torch, lrs)
    sched = CASES[name](S, opt)
    tsched = CASES[name](torch.optim.lr_scheduler, topt)
    np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12)
    for _ in range(60):
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-10)
        np.testing.assert_allclose(
            [g["lr"] for g in opt.param_groups], [g["lr"] for g in topt.param_groups], rtol=1e-10
        )
    assert opt.lr == opt.param_groups[0]["lr"]


def test_sequential_warmup_cosine_against_torch():
    torch = pytest.importorskip("torch")
    opt, topt = _ours(), _theirs(torch)
    warm = S.LinearWarmup(opt, warmup_steps=5, start_factor=0.1)
    cos = S.CosineAnnealingLR(opt, T_max=30, eta_min=1e-4)
    sched = S.SequentialLR(opt, [warm, cos], milestones=[5])
    L = torch.optim.lr_scheduler
    twarm = L.LinearLR(topt, start_factor=0.1, end_factor=1.0, total_iters=5)
    tcos = L.CosineAnnealingLR(topt, T_max=30, eta_min=1e-4)
    tsched = L.SequentialLR(topt, [twarm, tcos], milestones=[5])
    seen = [sched.get_last_lr()[0]]
    np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12)
    for _ in range(40):
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
        seen.append(sched.get_last_lr()[0])
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-10)
    # warm-up rises linearly to the base lr, then the cosine starts from it
    np.testing.assert_allclose(seen[:6], [0.01, 0.028, 0.046, 0.064, 0.082, 0.1], rtol=1e-12)


def test_warmup_helper_equals_sequential():
    opt_a, opt_b = _ours(), _ours()
    cos_a = S.CosineAnnealingLR(opt_a, T_max=10)
    a = S.warmup(opt_a, cos_a, warmup_steps=3, start_factor=0.25)
    w = S.LinearWarmup(opt_b, 3, start_factor=0.25)
    b = S.SequentialLR(opt_b, [w, S.CosineAnnealingLR(opt_b, T_max=10)], milestones=[3])
    for _ in range(15):
        assert a.get_last_lr() == pytest.approx(b.get_last_lr(), rel=1e-14)
        a.step()
        b.step()


def test_closed_forms_by_hand():
    opt = _ours((1.0,))
    s = S.StepLR(opt, step_size=3, gamma=0.5)
    lrs = [s.get_last_lr()[0]]
    for _ in range(7):
        s.step()
        lrs.append(s.get_last_lr()[0])
    assert lrs == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25])
    opt = _ours((2.0,))
    c = S.CosineAnnealingLR(opt, T_max=4, eta_min=0.0)
    got = [c.get_last_lr()[0]]
    for _ in range(4):
        c.step()
        got.append(c.get_last_lr()[0])
    want = [1.0 + math.cos(math.pi * t / 4) for t in range(5)]
    assert got == pytest.approx(want, abs=1e-12)
    e = S.ExponentialLR(_ours((1.0,)), gamma=0.9)
    e.step(5)  # jump with the closed form
    assert e.get_last_lr()[0] == pytest.approx(0.9**5)


PLATEAU = [
    dict(),
    dict(mode="max", factor=0.5, patience=2, threshold=0.1, threshold_mode="abs"),
    dict(factor=0.5, patience=1, cooldown=2, min_lr=0.02),
    dict(factor=0.3, patience=0, threshold=0.05, threshold_mode="rel", eps=1e-3),
]


@pytest.mark.parametrize("case", range(len(PLATEAU)))
def test_plateau_against_torch(case):
    torch = pytest.importorskip("torch")
    kw = PLATEAU[case]
    opt, topt = _ours((0.1, 0.05)), _theirs(torch, (0.1, 0.05))
    sched = S.ReduceLROnPlateau(opt, **kw)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    rng = np.random.default_rng(case)
    metrics = np.concatenate([np.linspace(1, 0.5, 5), 0.5 + 0.05 * rng.random(40)])
    if kw.get("mode") == "max":
        metrics = -metrics
    changes = 0
    for m in metrics:
        before = sched.get_last_lr()
        sched.step(float(m))
        tsched.step(float(m))
        changes += sched.get_last_lr() != before
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12)
    assert changes > 0


def test_plateau_by_hand():
    opt = _ours((1.0,))
    s = S.ReduceLROnPlateau(opt, factor=0.5, patience=2, min_lr=0.3)
    for m in [1.0, 1.0, 1.0]:
        s.step(m)
    assert s.get_last_lr() == [1.0]  # two bad epochs: not yet more than patience
    s.step(1.0)
    assert s.get_last_lr() == [0.5]
    for _ in range(3):
        s.step(2.0)
    assert s.get_last_lr() == [0.3]  # clipped at min_lr


@pytest.mark.parametrize("name", sorted(CASES) + ["sequential", "plateau"])
def test_state_dict_round_trip(name):
    def make(opt):
        if name == "sequential":
            w = S.LinearWarmup(opt, 4, start_factor=0.2)
            return S.SequentialLR(opt, [w, S.ExponentialLR(opt, gamma=0.9)], milestones=[4])
        if name == "plateau":
            return S.ReduceLROnPlateau(opt, patience=1, factor=0.5)
        return CASES[name](S, opt)

    def advance(s, k):
        out = []
        for _ in range(k):
            if name == "plateau":
                s.step(1.0)  # never improves: reduces every other step
            else:
                s.step()
            out.append(s.get_last_lr())
        return np.array(out)

    opt_a = _ours()
    a = make(opt_a)
    advance(a, 3)
    sd = a.state_dict()
    opt_sd = opt_a.state_dict()
    ref = advance(a, 20)

    opt_b = _ours()
    b = make(opt_b)
    opt_b.load_state_dict(opt_sd)
    b.load_state_dict(sd)
    np.testing.assert_allclose(advance(b, 20), ref, rtol=1e-14)
    assert len(np.unique(ref)) > 1
    assert "optimizer" not in sd


def test_errors():
    opt = _ours()
    with pytest.raises(TypeError, match="is not a gpucnn Optimizer"):
        S.StepLR(object(), step_size=2)
    with pytest.raises(ValueError, match="StepLR: step_size must be a positive integer"):
        S.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="CosineAnnealingLR: T_max"):
        S.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="LinearLR: start_factor"):
        S.LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError, match="ReduceLROnPlateau: factor must be < 1.0"):
        S.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="ReduceLROnPlateau: mode"):
        S.ReduceLROnPlateau(opt, mode="up")
    a = S.StepLR(opt, 2)
    with pytest.raises(ValueError, match="SequentialLR: expects len"):
        S.SequentialLR(opt, [a], milestones=[3])
    with pytest.raises(ValueError, match="another optimizer"):
        S.SequentialLR(opt, [a, S.StepLR(_ours(), 2)], milestones=[3])
