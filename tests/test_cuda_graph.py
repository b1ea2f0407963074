"""CUDA graphs (issue 13): a training step captured once and replayed, on the simulated device.

The simulated CUDA device (:mod:`gpucnn.testing.simcuda`) refuses inside a capture what CUDA
and CuPy refuse (cuBLAS through CuPy, host synchronisation, pageable copies, allocations the
pool cannot serve) and replays the recorded kernels on ``Graph.launch``. Here a LeNet-5 and a
ResNet-20 step are captured with zero cuBLAS calls, syncs, copies and allocations inside the
capture, and the weights after replays equal eager training on the same kernels
(``own_kernels``) bit for bit; so does ``fit(cuda_graph=True)`` with a partial last batch and
a learning-rate schedule. Both test passes switch the simulated device on for these tests.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import layers as L
from gpucnn.backend.runtime import own_kernels
from gpucnn.cuda_graph import CapturedStep, CudaGraphError, capture
from gpucnn.testing import simulated_device

SIM_PASS = os.environ.get("GPUCNN_SIMULATE_CUDA") == "1"


@pytest.fixture
def sim():
    with simulated_device() as s:
        yield s


def _state(model) -> dict:  # noqa: ANN001
    return {k: np.asarray(v).copy() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def _train_step(model, opt):  # noqa: ANN001, ANN202
    """The PyTorch-style step: zero_grad, cross-entropy of ``model``, backward, ``opt.step``."""

    def step(x, y):  # noqa: ANN001, ANN202
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def _loop(make_model, make_opt, xs, ys, graph: bool, warmup: int = 2):  # noqa: ANN001
    """A PyTorch-style loop over the batches: captured (``graph``) or eager on our kernels.
    Returns (model state, losses, optimizer, the CapturedStep or None)."""
    gpucnn.manual_seed(0)
    model = make_model().to("cuda")
    opt = make_opt(model.parameters())
    step = _train_step(model, opt)
    fn = capture(step, optimizer=opt, warmup=warmup) if graph else None
    losses = []
    for x, y in zip(xs, ys):
        xt, yt = gpucnn.Tensor(x).to("cuda"), gpucnn.Tensor(y).to("cuda")
        if graph:
            loss = fn(xt, yt)
        else:
            with own_kernels():
                loss = step(xt, yt)
        losses.append(float(loss.item()))
    return _state(model), losses, opt, fn


def _batches(steps: int, shape: tuple, classes: int = 10, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((steps, *shape)).astype(np.float32)
    ys = rng.integers(0, classes, (steps, shape[0]))
    return xs, ys


def _assert_clean_capture(fn: CapturedStep) -> None:
    c = fn.capture_counts
    assert c is not None
    for kind in ("cublas", "syncs", "allocations", "h2d", "d2h"):
        assert c.get(kind, 0) == 0, (kind, c)
    assert c.get("launches", 0) > 0 and c.get("pool_reuses", 0) > 0, c


def test_lenet5_step_is_captured_and_replays_bit_exact(sim) -> None:  # noqa: ANN001
    xs, ys = _batches(9, (8, 1, 28, 28))
    make = gpucnn.models.lenet5
    adam = lambda p: gpucnn.optim.Adam(p, lr=1e-3)  # noqa: E731
    eager, eager_losses, eopt, _ = _loop(make, adam, xs, ys, graph=False)
    graph, graph_losses, gopt, fn = _loop(make, adam, xs, ys, graph=True)
    assert fn.graph is not None and fn.replays >= 3, fn
    _assert_clean_capture(fn)
    _same(eager, graph)
    assert eager_losses == graph_losses
    # the host state advanced once per replay too (Adam's step count: checkpoints, resume)
    steps_e = [s["step"] for s in eopt.state_dict()["state"].values()]
    steps_g = [s["step"] for s in gopt.state_dict()["state"].values()]
    assert steps_e == steps_g == [9] * len(steps_e)


@pytest.mark.gpu
def test_capture_on_the_cuda_backend_replays_bit_exact() -> None:
    """On the session's cuda backend: real CuPy in the gpu-check (`python -m
    gpucnn.testing.gpu_check`), the simulated device in the simulated pass. Deterministic
    kernels (no atomics) give eager and replayed training the same bits on a GPU too."""
    xs, ys = _batches(8, (16, 1, 28, 28), seed=2)
    make = gpucnn.models.lenet5
    adam = lambda p: gpucnn.optim.Adam(p, lr=1e-3)  # noqa: E731
    eager, el, _, _ = _loop(make, adam, xs, ys, graph=False)
    graph, gl, _, fn = _loop(make, adam, xs, ys, graph=True)
    assert fn.graph is not None and fn.replays >= 1
    _same(eager, graph)
    assert el == gl


@pytest.mark.skipif(not SIM_PASS, reason="ResNet-20 on the emulator is slow: the simulated pass")
def test_resnet20_step_is_captured_and_replays_bit_exact(sim) -> None:  # noqa: ANN001
    """Batch norm (running statistics updated in place), projection-free shortcuts, split-K
    weight gradients (their workspace comes from the pool: no allocation in the capture)."""
    xs, ys = _batches(7, (2, 3, 16, 16))
    make = gpucnn.models.resnet20
    sgd = lambda p: gpucnn.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,  # noqa: E731
                                     weight_decay=5e-4)
    eager, el, _, _ = _loop(make, sgd, xs, ys, graph=False)
    sim.reset_counters()
    graph, gl, _, fn = _loop(make, sgd, xs, ys, graph=True)
    assert fn.graph is not None and fn.replays >= 1
    _assert_clean_capture(fn)
    kernels = sim.counters().kernels
    assert kernels.get("<graph>", 0) == fn.replays + 1
    assert not any(k.startswith("im2col") for k in kernels), "capture and eager run igemm"
    _same(eager, graph)
    assert el == gl


def _mlp() -> gpucnn.Sequential:
    m = gpucnn.Sequential([L.Flatten(), L.Dense(16), L.ReLU(), L.Dense(3)])
    m.build((5,))
    return m


OPTIMIZERS = {
    "sgd": lambda p: gpucnn.optim.SGD(p, lr=0.1),
    "sgd_nesterov": lambda p: gpucnn.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "adam_amsgrad": lambda p: gpucnn.optim.Adam(p, lr=1e-2, amsgrad=True, weight_decay=1e-3),
    "adamw": lambda p: gpucnn.optim.AdamW(p, lr=1e-2),
    "rmsprop": lambda p: gpucnn.optim.RMSprop(p, lr=1e-2, momentum=0.5, centered=True),
    "adagrad": lambda p: gpucnn.optim.Adagrad(p, lr=0.1, lr_decay=0.01),
    "nadam": lambda p: gpucnn.optim.NAdam(p, lr=1e-2),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_replays_its_step_dependent_scalars(sim, name: str) -> None:  # noqa: ANN001
    """Learning rate, bias corrections, Adagrad's decayed rate and NAdam's coefficients change
    every step: the replayed updates read them from device memory rewritten per step."""
    xs, ys = _batches(8, (4, 5), classes=3, seed=1)
    eager, el, _, _ = _loop(_mlp, OPTIMIZERS[name], xs, ys, graph=False)
    graph, gl, _, fn = _loop(_mlp, OPTIMIZERS[name], xs, ys, graph=True)
    assert fn.replays >= 2
    _assert_clean_capture(fn)
    _same(eager, graph)
    assert el == gl


def test_fit_cuda_graph_equals_eager_fit_with_partial_batches_and_schedule(sim) -> None:  # noqa: ANN001
    """fit(cuda_graph=True): full batches replayed, the partial last batch and validation
    eager; a per-epoch learning-rate schedule reaches the replays."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((44, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 44)

    def run(graph: bool) -> tuple:
        gpucnn.manual_seed(0)
        m = gpucnn.models.lenet5()
        m.compile(gpucnn.optim.SGD(lr=0.05, momentum=0.9), "sparse_categorical_crossentropy",
                  ["accuracy"])  # fmt: skip
        sched = gpucnn.callbacks.LearningRateScheduler(lambda epoch: 0.05 * 0.5**epoch)
        kw = dict(batch_size=8, epochs=3, verbose=0, seed=1, callbacks=[sched],
                  validation_data=(x[:8], y[:8]))  # fmt: skip
        if graph:
            h = m.fit(x, y, cuda_graph=True, **kw)
        else:
            with own_kernels():
                h = m.fit(x, y, **kw)
        return _state(m), h.history

    eager, he = run(False)
    graph, hg = run(True)
    _same(eager, graph)
    for k in ("loss", "accuracy"):
        assert he[k] == hg[k], k


def test_fit_cuda_graph_bfloat16_equals_eager(sim) -> None:  # noqa: ANN001
    """compile(mixed_precision="bfloat16"): the rounding at the GEMM-class ops' boundaries is
    captured with the step (no scaler needed); float16's scaler is refused."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((24, 5)).astype(np.float32)
    y = rng.integers(0, 3, 24)

    def run(graph: bool, policy: str = "bfloat16") -> dict:
        gpucnn.manual_seed(0)
        m = _mlp()
        m.compile(gpucnn.optim.Adam(lr=1e-2), "sparse_categorical_crossentropy",
                  mixed_precision=policy)  # fmt: skip
        if graph:
            m.fit(x, y, batch_size=4, epochs=2, verbose=0, seed=0, cuda_graph=True)
        else:
            with own_kernels():
                m.fit(x, y, batch_size=4, epochs=2, verbose=0, seed=0)
        return _state(m)

    _same(run(False), run(True))
    with pytest.raises(CudaGraphError, match="mixed_precision='float16'"):
        run(True, "float16")


def test_capture_right_after_one_warmup_step_is_served_by_the_spare_block(sim, monkeypatch) -> None:  # noqa: ANN001, E501
    """With no settling steps, the arena after one warm-up step cannot serve the next step
    (best-fit splits, no merging): the spare block freed into it before the capture does."""
    import gpucnn.cuda_graph as cg

    monkeypatch.setattr(cg, "_SETTLE", 0)
    xs, ys = _batches(4, (8, 1, 28, 28), seed=3)
    make = gpucnn.models.lenet5
    adam = lambda p: gpucnn.optim.Adam(p, lr=1e-3)  # noqa: E731
    eager, _, _, _ = _loop(make, adam, xs, ys, graph=False)
    graph, _, _, fn = _loop(make, adam, xs, ys, graph=True, warmup=1)
    assert fn.calls == 4 and fn.replays == 2  # captured at the second call
    _assert_clean_capture(fn)
    _same(eager, graph)


def test_a_replay_waits_for_nothing_and_copies_only_the_scalars(sim) -> None:  # noqa: ANN001
    """Per replay of a captured step fed device batches: one graph launch, one host-to-device
    copy (the optimizer scalars, from pinned memory), no host sync, no allocation."""
    xs, ys = _batches(6, (4, 5), classes=3)
    model = _mlp().to("cuda")
    opt = gpucnn.optim.Adam(model.parameters(), lr=1e-2)
    fn = capture(_train_step(model, opt), optimizer=opt, warmup=1)
    xp = gpucnn.backend.get_backend("cuda").xp
    batches = [(xp.asarray(x), xp.asarray(y)) for x, y in zip(xs, ys)]
    for x, y in batches:
        if fn.graph is not None:
            sim.reset_counters()
            fn(x, y)
            c = sim.counters()
            assert (c.syncs, c.allocations, c.h2d) == (0, 0, 1), c.snapshot()
            assert c.kernels.get("<graph>") == 1 and c.cublas == 0
        else:
            fn(x, y)
    assert fn.replays >= 2


def test_capture_refuses_a_new_batch_shape(sim) -> None:  # noqa: ANN001
    xs, ys = _batches(4, (4, 5), classes=3)
    model = _mlp().to("cuda")
    opt = gpucnn.optim.SGD(model.parameters(), lr=0.1)

    step = capture(optimizer=opt, warmup=1)(_train_step(model, opt))  # the decorator form
    for x, y in zip(xs, ys):
        step(x, y)  # host arrays are copied into the static buffers too
    assert step.graph is not None
    with pytest.raises(CudaGraphError, match=r"shape, dtype.*\(4, 5\).*\(3, 5\)"):
        step(xs[0][:3], ys[0][:3])


def test_dropout_in_a_capture_names_the_layer(sim) -> None:  # noqa: ANN001
    model = gpucnn.Sequential([L.Flatten(), L.Dense(8), L.Dropout(0.5, name="drop"),
                               L.Dense(3)])  # fmt: skip
    model.build((5,))
    model = model.to("cuda")
    opt = gpucnn.optim.SGD(model.parameters(), lr=0.1)
    fn = capture(_train_step(model, opt), optimizer=opt, warmup=1)
    xs, ys = _batches(6, (4, 5), classes=3)
    with pytest.raises(CudaGraphError, match=r"layer 'drop' \(Dropout\).*random numbers"):
        for x, y in zip(xs, ys):
            fn(x, y)
    assert not fn.stream.is_capturing()  # the failed capture was ended


def test_capture_without_the_optimizer_is_refused(sim) -> None:  # noqa: ANN001
    model = _mlp().to("cuda")
    opt = gpucnn.optim.Adam(model.parameters())
    fn = capture(_train_step(model, opt), warmup=1)
    xs, ys = _batches(3, (4, 5), classes=3)
    with pytest.raises(CudaGraphError, match="optimizer=..."):
        for x, y in zip(xs, ys):
            fn(x, y)


def test_host_read_inside_the_step_is_refused(sim) -> None:  # noqa: ANN001
    model = _mlp().to("cuda")

    def step(x):  # noqa: ANN001, ANN202
        return float(model(x).sum().item())

    fn = capture(step, warmup=1)
    x = np.ones((4, 5), np.float32)
    with pytest.raises(CudaGraphError, match="cannot be captured.*not permitted while a stream"):
        for _ in range(12):  # warm-up (while the pool settles), then the capture
            fn(x)
    assert fn.calls > 1 and fn.graph is None


def test_own_kernels_linear_runs_our_gemm_and_matches_numpy(sim) -> None:  # noqa: ANN001
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 7)).astype(np.float32)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)

    def grads(backend: str) -> list:
        xp = gpucnn.backend.get_backend(backend).xp
        xt, wt, bt = (gpucnn.Tensor(xp.asarray(a), requires_grad=True) for a in (x, w, b))
        y = F.linear(xt, wt, bt)
        (y * y).sum().backward()
        return [np.asarray(y.data if backend == "numpy" else y.data.get())] + [
            np.asarray(t.grad.data if backend == "numpy" else t.grad.data.get())
            for t in (xt, wt, bt)
        ]

    ref = grads("numpy")
    sim.reset_counters()
    with own_kernels():
        got = grads("cuda")
    c = sim.counters()
    assert c.cublas == 0 and c.kernels.get("gemm_f32_simt", 0) == 3, dict(c.kernels)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop", "adagrad", "nadam"])
def test_dev_update_kernels_equal_the_by_value_kernels(sim, name: str) -> None:  # noqa: ANN001
    """The ``*_dev`` kernels (scalars read from memory) give the by-value kernels' bits."""
    be = gpucnn.backend.get_backend("cuda")
    rng = np.random.default_rng(4)
    p0, g0 = (rng.standard_normal(37).astype(np.float32) for _ in range(2))

    def run(hyper: bool) -> list:
        xp = be.xp
        p, g = xp.asarray(p0), xp.asarray(g0)
        s = [xp.asarray(np.abs(rng_state)) for rng_state in (p0 * 0.1, g0 * 0.2, p0 * 0.3)]
        lr, b1, b2, step = 0.01, 0.9, 0.999, 3
        t = np.float32
        if name == "adam":
            vals = (lr, t(1 - b1**step), t(1 - b2**step))
            args = (p, g, s[0], s[1], s[2], lr, b1, b2, 1e-8, 0.01, step, False, True)
            fn = be.adam_update
        elif name == "sgd":
            vals, fn = (lr,), be.sgd_update
            args = (p, g, s[0], lr, 0.9, 0.0, 0.01, True, False)
        elif name == "rmsprop":
            vals, fn = (lr,), be.rmsprop_update
            args = (p, g, s[0], s[1], s[2], lr, 0.99, 1e-8, 0.01, 0.9, False)
        elif name == "adagrad":
            vals, fn = (t(lr / (1 + (step - 1) * 0.01)),), be.adagrad_update
            args = (p, g, s[0], lr, 0.01, 0.01, 1e-10, step)
        else:
            from gpucnn.backend.checks import nadam_coefficients

            vals = (lr, *nadam_coefficients(lr, b2, 0.45, 0.46, 0.2, step))
            vals, fn = tuple(t(v) for v in vals), be.nadam_update
            args = (p, g, s[0], s[1], lr, b1, b2, 1e-8, 0.01, 0.45, 0.46, 0.2, step, True)
        kw = {"hyper": xp.asarray(np.array(vals, np.float32))} if hyper else {}
        fn(*args, **kw)
        return [a.get() for a in (p, *s)]

    for a, b in zip(run(False), run(True)):
        assert np.array_equal(a, b)


def test_fit_cuda_graph_refusals(sim) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 5)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    m = _mlp()
    m.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(CudaGraphError, match="sample_weight or class_weight"):
        m.fit(x, y, epochs=1, verbose=0, cuda_graph=True, sample_weight=np.ones(8))
    with pytest.raises(TypeError, match="cuda_graph"):
        m.fit(x, y, epochs=1, verbose=0, cuda_graph="yes")


def test_cuda_graph_needs_the_cuda_backend() -> None:
    x = np.zeros((4, 5), np.float32)
    y = np.zeros(4, np.int64)
    with gpucnn.testing.backend_scope("numpy"):
        model = _mlp()
        model.compile("sgd", "sparse_categorical_crossentropy")
        with pytest.raises(CudaGraphError, match="needs the cuda backend.*'numpy'"):
            model.fit(x, y, epochs=1, verbose=0, cuda_graph=True)
        with pytest.raises(CudaGraphError, match="need the cuda backend, got 'numpy'"):
            CapturedStep(lambda a: a, backend="numpy")
    with pytest.raises(ValueError, match="warmup must be an int >= 1"):
        CapturedStep(lambda a: a, warmup=0)


def test_cuda_graph_is_an_attribute_of_the_package() -> None:
    """``gpucnn.cuda_graph.capture`` (the README's spelling) works after ``import gpucnn``."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import gpucnn; print(gpucnn.cuda_graph.capture)"],
                         capture_output=True, text=True, check=True).stdout
    assert "capture" in out
