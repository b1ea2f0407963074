"""gpucnn.amp.autocast and compile(mixed_precision=...): rounding at the GEMM-class op
boundaries (conv2d / linear / matmul), FP32 ops staying FP32, gradients into the FP32 master
weights, nesting, training with bfloat16 / float16 (loss scaling, a skipped step), exact
checkpoint resume with the scaler state, the error cases, and torch.autocast parity.

Runs on both passes: NumPy, and ``--simulate-cuda`` (tests start on the cuda backend)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import Parameter, Tensor, optim
from gpucnn import backend as B
from gpucnn import datasets as D
from gpucnn import layers as L
from gpucnn.amp import (
    GradScaler,
    autocast,
    check_mixed_precision_supported,
    get_autocast_dtype,
    is_autocast_enabled,
    round_to,
)
from gpucnn.backend.precision import round_bf16, round_fp16
from gpucnn.callbacks import Callback
from gpucnn.model import Sequential
from gpucnn.saving import load_model

DTYPES = ["bfloat16", "float16"]
HOST_ROUND = {"bfloat16": round_bf16, "float16": round_fp16}


def _dev(a: np.ndarray):
    """``a`` on the active backend (a device array on the simulated pass)."""
    return B.get().xp.asarray(a)


def _t(a: np.ndarray, grad: bool = False) -> Tensor:
    t = Tensor(_dev(np.ascontiguousarray(a)))
    if grad:
        t.requires_grad = True
    return t


def _host(t) -> np.ndarray:
    return B.to_numpy(t.data if isinstance(t, Tensor) else t)


def _rounded(a: np.ndarray, dtype: str) -> Tensor:
    return _t(HOST_ROUND[dtype](a))


def _representable(a: np.ndarray, dtype: str) -> bool:
    return bool(np.array_equal(HOST_ROUND[dtype](a), a, equal_nan=True))


# ----------------------------------------------------------------------------- rounding


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_to_matches_precision_helpers_on_the_active_backend(dtype, rng) -> None:
    a = np.concatenate([rng.standard_normal(500).astype(np.float32) * 10.0 ** rng.integers(
        -8, 8, 500), np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 7e4, -1e5, 1e-9],
                              dtype=np.float32)]).astype(np.float32)
    got = _host(round_to(_dev(a), dtype))
    want = HOST_ROUND[dtype](a)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32)[~np.isnan(a)],
                                  want.view(np.uint32)[~np.isnan(a)])
    assert np.isnan(got[np.isnan(a)]).all()


def test_round_to_matches_ml_dtypes_and_numpy_casts(rng) -> None:
    """An independent oracle: the casts of ml_dtypes (bfloat16) and NumPy (float16)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = (rng.standard_normal(4000) * 10.0 ** rng.integers(-6, 6, 4000)).astype(np.float32)
    with np.errstate(over="ignore"):
        want16 = a.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(_host(round_to(_dev(a), "bfloat16")),
                                  a.astype(ml_dtypes.bfloat16).astype(np.float32))
    np.testing.assert_array_equal(_host(round_to(_dev(a), "float16")), want16)
    assert autocast(ml_dtypes.bfloat16).dtype == "bfloat16"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_output_is_rounded_reference(dtype, bias, rng) -> None:
    x = rng.standard_normal((7, 3, 13)).astype(np.float32)
    w = rng.standard_normal((5, 13)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    with autocast(dtype):
        y = F.linear(_t(x), _t(w), _t(b) if bias else None)
    got = _host(y)
    assert got.dtype == np.float32 and got.shape == (7, 3, 5)
    assert _representable(got, dtype)
    # the hand-written reference: inputs rounded, the float32 op, the output rounded
    ref = F.linear(_rounded(x, dtype), _rounded(w, dtype), _rounded(b, dtype) if bias else None)
    np.testing.assert_array_equal(got, HOST_ROUND[dtype](_host(ref)))
    # and against float64 arithmetic on the rounded operands: one rounding of the output
    r64 = HOST_ROUND[dtype](x).astype(np.float64) @ HOST_ROUND[dtype](w).astype(np.float64).T
    if bias:
        r64 += HOST_ROUND[dtype](b)
    ulp = 2.0 ** (-8 if dtype == "bfloat16" else -11)
    np.testing.assert_allclose(got, r64, rtol=ulp * 1.01, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [((6, 9), (9, 4)), ((2, 6, 9), (9, 4)), ((3, 2, 5, 4),
                                    (3, 1, 4, 6)), ((9,), (9, 4)), ((6, 9), (9,))])
def test_matmul_output_is_rounded_reference(dtype, shapes, rng) -> None:
    a = rng.standard_normal(shapes[0]).astype(np.float32)
    b = rng.standard_normal(shapes[1]).astype(np.float32)
    with autocast(dtype):
        y = F.matmul(_t(a), _t(b))
        y2 = _t(a) @ _t(b)
    got = _host(y)
    assert _representable(got, dtype)
    ref = F.matmul(_rounded(a, dtype), _rounded(b, dtype))
    np.testing.assert_array_equal(got, HOST_ROUND[dtype](_host(ref)))
    np.testing.assert_array_equal(_host(y2), got)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(padding="same",
                                dilation=2), dict(groups=2, padding=1), dict(groups=4)])
def test_conv2d_output_is_rounded_reference(dtype, kw, rng) -> None:
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    g = kw.get("groups", 1)
    w = (rng.standard_normal((8, 4 // g, 3, 3)) * 0.3).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    with autocast(dtype):
        y = F.conv2d(_t(x), _t(w), _t(b), **kw)
        y_unbatched = F.conv2d(_t(x[0]), _t(w), _t(b), **kw)
    got = _host(y)
    assert got.dtype == np.float32 and _representable(got, dtype)
    ref = F.conv2d(_rounded(x, dtype), _rounded(w, dtype), _rounded(b, dtype), **kw)
    np.testing.assert_array_equal(got, HOST_ROUND[dtype](_host(ref)))
    np.testing.assert_array_equal(_host(y_unbatched), got[0])


def test_float16_overflow_becomes_inf_as_a_cast() -> None:
    x = _t(np.array([[300.0, 300.0]], dtype=np.float32))
    w = _t(np.array([[300.0, 300.0]], dtype=np.float32))
    with autocast("float16"):
        y = _host(F.linear(x, w))  # 180000 > 65504
    assert np.isinf(y).all()
    with autocast("bfloat16"):
        y = _host(F.linear(x, w))
    assert y[0, 0] == 180224.0  # 180000 in bfloat16


# ----------------------------------------------------------------------------- fp32 ops


def test_fp32_ops_are_untouched_inside_autocast(rng) -> None:
    z = rng.standard_normal((6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 6)
    img = rng.standard_normal((3, 4, 5, 5)).astype(np.float32)

    def run() -> list[np.ndarray]:
        zt = _t(z)
        bn = L.BatchNormalization()
        bn.build((4, 5, 5), backend=B.current())
        bn.train()
        outs = [F.softmax(zt, axis=1), F.log_softmax(zt, axis=1), F.sum(zt), F.mean(zt),
                F.cross_entropy(zt, Tensor(_dev(labels))), F.exp(zt), bn(_t(img))]
        outs += [bn.running_mean, bn.running_var]
        return [_host(o) for o in outs]

    plain = run()
    with autocast("bfloat16"):
        inside = run()
    for p, q in zip(plain, inside):
        assert q.dtype == np.float32
        np.testing.assert_array_equal(p, q)
    # the loss of an autocast output is computed in float32 on its (bf16) values
    with autocast("bfloat16"):
        logits = F.linear(_t(z), _t(np.eye(5, dtype=np.float32)))
        loss = F.cross_entropy(logits, Tensor(_dev(labels)))
    ref = F.cross_entropy(_rounded(z, "bfloat16"), Tensor(_dev(labels)))
    assert _host(loss).dtype == np.float32
    np.testing.assert_array_equal(_host(loss), _host(ref))


def test_float64_operands_are_left_alone(rng) -> None:
    x = rng.standard_normal((4, 6))
    w = rng.standard_normal((3, 6))
    with autocast("bfloat16"):
        y = F.linear(_t(x), _t(w))
        assert is_autocast_enabled()
    assert _host(y).dtype == np.float64
    np.testing.assert_array_equal(_host(y), _host(F.linear(_t(x), _t(w))))


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_reach_fp32_master_weights(dtype, rng) -> None:
    x = rng.standard_normal((8, 2, 6, 6)).astype(np.float32)
    wc = Parameter(_dev((rng.standard_normal((3, 2, 3, 3)) * 0.3).astype(np.float32)))
    bc = Parameter(_dev(rng.standard_normal(3).astype(np.float32)))
    wl = Parameter(_dev((rng.standard_normal((4, 27)) * 0.2).astype(np.float32)))
    c = rng.standard_normal((8, 4)).astype(np.float32)
    xt = _t(x, grad=True)
    with autocast(dtype):
        h = F.relu(F.conv2d(xt, wc, bc, stride=2, padding=1))
        y = F.linear(F.flatten(h), wl)
        loss = F.sum(y * _t(c))
    loss.backward()
    for p in (wc, bc, wl, xt):
        g = _host(p.grad)
        assert p.data.dtype == np.float32 and g.dtype == np.float32
        assert g.shape == p.shape
        assert np.abs(g).sum() > 0
        assert _representable(g, dtype)  # a low-precision gradient, in float32
    # the linear weight's gradient: round(round(c)^T @ round(flatten(h)))
    hr = _host(F.flatten(h))
    ref = HOST_ROUND[dtype](c).astype(np.float64).T @ hr.astype(np.float64)
    ulp = 2.0 ** (-8 if dtype == "bfloat16" else -11)
    np.testing.assert_allclose(_host(wl.grad), ref, rtol=ulp * 1.01, atol=1e-5)


def test_autocast_gradient_equals_reference_graph(rng) -> None:
    """The cast's backward: the gradient in float32, rounded like the low-precision one."""
    x = rng.standard_normal((5, 7)).astype(np.float32)
    w = rng.standard_normal((3, 7)).astype(np.float32)
    c = rng.standard_normal((5, 3)).astype(np.float32)
    p = Parameter(_dev(w))
    with autocast("bfloat16"):
        F.sum(F.linear(_t(x), p) * _t(c)).backward()
    # the same product in float32 on rounded operands and a rounded incoming gradient
    q = Parameter(_dev(round_bf16(w)))
    y = F.linear(_rounded(x, "bfloat16"), q)
    y.backward(_dev(round_bf16(c)))
    np.testing.assert_array_equal(_host(p.grad), round_bf16(_host(q.grad)))


# ----------------------------------------------------------------------------- the context


def test_nesting_disable_and_decorator(rng) -> None:
    x = _t(rng.standard_normal((3, 5)).astype(np.float32))
    w = _t(rng.standard_normal((2, 5)).astype(np.float32))
    exact = _host(F.linear(x, w))
    assert not is_autocast_enabled() and get_autocast_dtype() is None
    with autocast("bfloat16") as ac:
        assert ac.dtype == "bfloat16" and get_autocast_dtype() == "bfloat16"
        with autocast(enabled=False):
            assert not is_autocast_enabled()
            np.testing.assert_array_equal(_host(F.linear(x, w)), exact)
            with autocast("float16"):
                assert get_autocast_dtype() == "float16"
                assert _representable(_host(F.linear(x, w)), "float16")
            assert not is_autocast_enabled()
        assert get_autocast_dtype() == "bfloat16"
        assert _representable(_host(F.linear(x, w)), "bfloat16")
    assert get_autocast_dtype() is None
    with pytest.raises(RuntimeError), autocast("float16"):
        raise RuntimeError("boom")
    assert get_autocast_dtype() is None  # restored after an exception

    @autocast("bfloat16")
    def fwd(a, b):
        assert get_autocast_dtype() == "bfloat16"
        return F.linear(a, b)

    np.testing.assert_array_equal(_host(fwd(x, w)), round_bf16(_host(
        F.linear(_t(round_bf16(_host(x))), _t(round_bf16(_host(w)))))))
    assert get_autocast_dtype() is None
    assert autocast(np.float16).dtype == "float16"


def test_state_is_per_thread() -> None:
    seen: list = []
    with autocast("bfloat16"):
        th = threading.Thread(target=lambda: seen.append(get_autocast_dtype()))
        th.start()
        th.join()
    assert seen == [None]


@pytest.mark.parametrize("bad", ["float32", "int8", "fp8", np.float64, None])
def test_autocast_rejects_other_dtypes(bad) -> None:
    with pytest.raises(ValueError, match=r"autocast: dtype must be one of float16, bfloat16"):
        autocast(bad)
    with pytest.raises(TypeError, match="enabled must be a bool"):
        autocast("float16", enabled="yes")


# ----------------------------------------------------------------------------- compile errors


def test_compile_rejects_unknown_policy() -> None:
    m = Sequential([L.Dense(2, input_shape=(3,))])
    with pytest.raises(ValueError) as ei:
        m.compile("sgd", "mse", mixed_precision="fp8")
    msg = str(ei.value)
    assert "mixed_precision" in msg and "'fp8'" in msg
    for name in ("'float16'", "'bfloat16'", "'mixed_float16'", "'mixed_bfloat16'", "None"):
        assert name in msg
    m.compile("sgd", "mse", mixed_precision="mixed_bfloat16")
    assert m.mixed_precision == "bfloat16" and m.loss_scaler is None
    assert m._compile_config["mixed_precision"] == "bfloat16"
    m.compile("sgd", "mse", mixed_precision="mixed_float16")
    assert m.mixed_precision == "float16" and isinstance(m.loss_scaler, GradScaler)
    assert m.loss_scaler.get_scale() == 2.0**16 and m.loss_scaler.get_growth_interval() == 2000
    m.compile("sgd", "mse", mixed_precision="float32")
    assert m.mixed_precision is None and m.loss_scaler is None


def test_check_mixed_precision_supported_with_fake_capabilities() -> None:
    for cap in [(8, 0), (8, 6), (9, 0), (10, 0), None]:
        check_mixed_precision_supported("bfloat16", cap)
        check_mixed_precision_supported("float16", cap)
    check_mixed_precision_supported("float16", (7, 0))
    with pytest.raises(ValueError) as ei:
        check_mixed_precision_supported("bfloat16", (7, 5), "compile(mixed_precision=...)")
    msg = str(ei.value)
    assert "compile(mixed_precision=...)='bfloat16'" in msg
    assert "7.5" in msg and "8.0" in msg and "supports: float16" in msg
    with pytest.raises(ValueError) as ei:
        check_mixed_precision_supported("float16", (6, 1))
    msg = str(ei.value)
    assert "6.1" in msg and "7.0" in msg and "supports: none" in msg
    with pytest.raises(ValueError, match="dtype must be one of"):
        check_mixed_precision_supported("float32", (9, 0))


def test_compile_checks_the_device_capability(monkeypatch) -> None:
    if B.current() != "cuda":
        pytest.skip("the capability check applies to the cuda backend (run --simulate-cuda)")
    from gpucnn.amp import autocast_mode, device_capability

    assert device_capability() >= (7, 0)  # the simulated device says 9.0
    m = Sequential([L.Dense(2, input_shape=(3,))])
    m.compile("sgd", "mse", mixed_precision="bfloat16")
    monkeypatch.setattr(autocast_mode, "device_capability", lambda: (7, 5))
    with pytest.raises(ValueError, match=r"compute capability 7\.5.*8\.0"):
        m.compile("sgd", "mse", mixed_precision="bfloat16")
    m.compile("sgd", "mse", mixed_precision="float16")


# ----------------------------------------------------------------------------- training


def _lenet() -> Sequential:
    return Sequential([
        L.Conv2D(6, 3, activation="relu", input_shape=(1, 14, 14)),
        L.MaxPooling2D(2),
        L.Conv2D(12, 3, activation="relu"),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(32, activation="relu"),
        L.Dense(10),
    ])


def _mnist(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = D.mnist_sample()
    idx = np.arange(0, 5000, 5000 // n)[:n]
    return np.ascontiguousarray(x[idx, :, ::2, ::2]), y[idx]  # 14x14 digits


@pytest.mark.parametrize("policy", ["bfloat16", "mixed_float16"])
def test_lenet_learns_mnist_in_mixed_precision(policy) -> None:
    # On the simulated device the convolutions run the tensor-core kernels through the
    # emulator's lane-by-lane MMA bodies (slow): fewer, smaller steps there.
    sim = B.get().simulated
    x, y = _mnist(32 if sim else 192)
    gpucnn.manual_seed(0)
    m = _lenet()
    m.compile("adam", "sparse_categorical_crossentropy", ["accuracy"], lr=5e-3,
              mixed_precision=policy)
    h = m.fit(x, y, batch_size=16 if sim else 32, epochs=6 if sim else 4, verbose=0)
    loss = h.history["loss"]
    assert all(b < a for a, b in zip(loss, loss[1:])), loss
    assert loss[-1] < 0.75 * loss[0]
    for p in m.parameters():
        assert p.data.dtype == np.float32  # FP32 master weights
    if policy == "mixed_float16":
        assert m.loss_scaler is not None and m.loss_scaler.get_scale() > 0
    out = m.predict(x[:8])
    assert out.dtype == np.float32 and _representable(out, m.mixed_precision)
    res = m.evaluate(x, y, return_dict=True)
    assert np.isfinite(res["loss"])
    lv = m.train_on_batch(x[:16], y[:16])
    assert np.isfinite(lv)


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")
def test_float16_fit_skips_the_step_with_an_inf_gradient() -> None:
    x, y = _mnist(96)
    x[40, 0, 3, 3] = np.inf  # batch 2 of 6 (batch_size 16, no shuffle)
    gpucnn.manual_seed(1)
    m = _lenet()
    m.compile("sgd", "sparse_categorical_crossentropy", lr=0.05, mixed_precision="float16")
    m.loss_scaler = GradScaler(init_scale=2.0**8, growth_interval=1000)
    seen: list = []

    class Watch(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append([B.to_numpy(p.data).copy() for p in m.parameters()])

        def on_train_batch_end(self, batch, logs=None):
            seen[-1] = (seen[-1], [B.to_numpy(p.data).copy() for p in m.parameters()],
                        m.loss_scaler.get_scale())

    m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[Watch()])
    assert len(seen) == 6
    scales = [s for _, _, s in seen]
    assert scales == [256.0, 256.0, 128.0, 128.0, 128.0, 128.0]
    for step, (before, after, _) in enumerate(seen):
        same = all(np.array_equal(a, b) for a, b in zip(before, after))
        assert same == (step == 2), step
    assert all(np.isfinite(p).all() for p in seen[-1][1])
    assert m.loss_scaler.state_dict()["_growth_tracker"] == 3


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_checkpoint_resume_with_scaler_is_exact(tmp_path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(48, 2, 6, 6)).astype(np.float32)
    y = (x[:, 0].sum(axis=(1, 2)) > x[:, 1].sum(axis=(1, 2))).astype(np.int64)

    def fresh() -> Sequential:
        gpucnn.manual_seed(11)
        m = Sequential([L.Conv2D(4, 3, padding="same", input_shape=(2, 6, 6)),
                        L.BatchNormalization(), L.ReLU(), L.Flatten(), L.Dropout(0.2),
                        L.Dense(8, activation="relu"), L.Dense(2)])
        m.compile(optim.Adam(learning_rate=1e-2), "sparse_categorical_crossentropy",
                  ["accuracy"], mixed_precision="float16")
        # grows every 2 clean steps, so the scale moves (and overflows, backing off)
        m.loss_scaler = GradScaler(init_scale=2.0**12, growth_interval=2)
        return m

    a = fresh()
    ha = a.fit(x, y, batch_size=8, epochs=3, verbose=0)

    b = fresh()
    b.fit(x, y, batch_size=8, epochs=1, verbose=0)
    mid = b.loss_scaler.state_dict()
    assert mid["scale"] != 2.0**12 or mid["_growth_tracker"] != 0
    b.save(tmp_path / "ck.npz")
    del b
    gpucnn.manual_seed(999)
    c = load_model(tmp_path / "ck.npz")
    assert c.mixed_precision == "float16"
    assert c.loss_scaler.state_dict() == mid  # scale, growth tracker, factors, interval
    hc = c.fit(x, y, batch_size=8, epochs=3, initial_epoch=c.completed_epochs, verbose=0)
    for (k, va), vc in zip(a.state_dict().items(), c.state_dict().values()):
        assert va.dtype == np.float32
        np.testing.assert_array_equal(va, vc, err_msg=k)
    assert c.loss_scaler.state_dict() == a.loss_scaler.state_dict()
    assert hc.history["loss"] == ha.history["loss"][1:]


def test_bfloat16_checkpoint_has_no_scaler_and_recompiles_the_policy(tmp_path) -> None:
    m = Sequential([L.Dense(3, input_shape=(4,)), L.Dense(2)])
    m.compile("sgd", "mse", mixed_precision="mixed_bfloat16")
    m.fit(np.ones((8, 4), np.float32), np.zeros((8, 2), np.float32), verbose=0)
    m.save(tmp_path / "m.npz")
    m2 = load_model(tmp_path / "m.npz")
    assert m2.mixed_precision == "bfloat16" and m2.loss_scaler is None
    np.testing.assert_array_equal(m2.predict(np.ones((2, 4), np.float32)),
                                  m.predict(np.ones((2, 4), np.float32)))
    plain = Sequential([L.Dense(2, input_shape=(4,))])
    plain.compile("sgd", "mse")
    plain.save(tmp_path / "p.npz")
    assert load_model(tmp_path / "p.npz").mixed_precision is None
    assert "mixed_precision" not in plain._compile_config


# ----------------------------------------------------------------------------- torch


def _torch_bf16_tolerance(ours: np.ndarray, theirs: np.ndarray, mag: np.ndarray) -> None:
    """Both results are bf16 roundings of FP32 sums of the same exact products (bf16 x bf16
    fits in float32), summed in different orders: the sums differ by a few float32 ulps of
    the sum of magnitudes ``mag``, so the results differ by at most one bf16 ulp (2**-7
    relative to the larger of the two, 2**-8 of the value's binade) plus that absolute
    term."""
    tol = 2.0**-7 * np.maximum(np.abs(ours), np.abs(theirs)) + 1e-5 * mag
    assert (np.abs(ours - theirs) <= tol).all()
    assert np.mean(ours == theirs) > 0.9  # mostly bit-identical


def test_matches_torch_autocast_bfloat16(rng) -> None:
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((16, 40)).astype(np.float32)
    w = rng.standard_normal((24, 40)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    with autocast("bfloat16"):
        ours = _host(F.linear(_t(x), _t(w), _t(b)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        th = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w),
                                        torch.from_numpy(b))
    assert th.dtype == torch.bfloat16
    mag = np.abs(round_bf16(x)) @ np.abs(round_bf16(w)).T + np.abs(b)
    _torch_bf16_tolerance(ours, th.float().numpy(), mag)

    xi = rng.standard_normal((2, 3, 10, 10)).astype(np.float32)
    wi = (rng.standard_normal((5, 3, 3, 3)) * 0.5).astype(np.float32)
    bi = rng.standard_normal(5).astype(np.float32)
    with autocast("bfloat16"):
        ours = _host(F.conv2d(_t(xi), _t(wi), _t(bi), padding=1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        th = torch.nn.functional.conv2d(torch.from_numpy(xi), torch.from_numpy(wi),
                                        torch.from_numpy(bi), padding=1)
    assert th.dtype == torch.bfloat16
    mag = torch.nn.functional.conv2d(torch.from_numpy(np.abs(round_bf16(xi))),
                                     torch.from_numpy(np.abs(round_bf16(wi))),
                                     torch.from_numpy(np.abs(bi)), padding=1).numpy()
    _torch_bf16_tolerance(ours, th.float().numpy(), mag)


def test_fit_takes_ml_dtypes_bfloat16_inputs() -> None:
    """bfloat16 arrays (the optional ``ml_dtypes``) are numbers to fit: widened to float32
    exactly, so training on them equals training on their float32 values."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(5)
    x16 = rng.standard_normal((16, 6)).astype(ml_dtypes.bfloat16)
    y = rng.integers(0, 3, 16)

    def run(x: np.ndarray) -> list:
        gpucnn.manual_seed(0)
        m = gpucnn.Sequential([gpucnn.layers.Dense(3)])
        m.build((6,))
        m.compile("sgd", "sparse_categorical_crossentropy", mixed_precision="bfloat16")
        m.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        return [np.asarray(v) for v in m.state_dict().values()]

    for a, b in zip(run(x16), run(x16.astype(np.float32))):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_autocast_conv_runs_the_tensor_core_kernels(dtype) -> None:
    """On CUDA an autocast convolution hands its 16-bit operands to the tensor-core
    implicit-GEMM kernels (forward, backward-data, backward-weight); the values agree with the
    NumPy policy up to the order of the FP32 sums (then one rounding to the low format)."""
    from gpucnn.testing import backend_scope, simulated_device

    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    w = (rng.standard_normal((6, 4, 3, 3)) * 0.3).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)

    def run() -> list:
        ts = [_t(a, grad=True) for a in (x, w, b)]
        with autocast(dtype):
            y = F.conv2d(*ts, padding=1)
        (y * y).sum().backward()
        return [_host(y)] + [_host(t.grad) for t in ts]

    with backend_scope("numpy"):
        ref = run()
    suffix = {"float16": "f16", "bfloat16": "bf16"}[dtype]
    with simulated_device() as sim, backend_scope("cuda"):
        sim.reset_counters()
        got = run()
        launched = dict(sim.counters().kernels)
    for k in ("fwd", "bwd_data", "bwd_weight"):
        assert launched.get(f"conv_igemm_tc_{k}_{suffix}", 0) == 1, launched
    ulp = 2.0**-7 if dtype == "bfloat16" else 2.0**-10
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=2 * ulp, atol=2 * ulp * np.abs(r).max())
