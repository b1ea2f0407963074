"""compile / fit / evaluate / predict: training on real digits, data handling, losses,
verbosity, reproducibility and bad-input errors."""

from __future__ import annotations

import functools
import gzip
import time

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import layers as L
from gpucnn import optim
from gpucnn.model import Model, Sequential
from gpucnn.tensor import Tensor


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from gpucnn.datasets import mnist_sample

        return mnist_sample()
    except ImportError:  # pragma: no cover - before the datasets module existed
        root = "/work/shared/data/mnist5k/"
        img = gzip.open(root + "images-idx3-ubyte.gz").read()
        lab = gzip.open(root + "labels-idx1-ubyte.gz").read()
        x = np.frombuffer(img, np.uint8, offset=16).reshape(-1, 1, 28, 28)
        return x.astype(np.float32) / 255, np.frombuffer(lab, np.uint8, offset=8).astype(np.int64)


@pytest.fixture(scope="module")
def digits() -> tuple:
    x, y = _mnist()
    order = np.random.default_rng(0).permutation(len(x))  # the sample is sorted by label
    x, y = x[order], y[order]
    return x[:2000], y[:2000], x[2000:2500], y[2000:2500]


def small_cnn() -> Sequential:
    return Sequential([
        L.Conv2D(8, 3, activation="relu", input_shape=(1, 28, 28)),
        L.MaxPooling2D(2),
        L.Conv2D(16, 3, activation="relu"),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(10),
    ])


def _toy(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x[:, 0] > x[:, 1]).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)


def _mlp(**compile_kw) -> Sequential:
    m = Sequential([L.Dense(16, activation="relu", input_shape=(6,)), L.Dropout(0.1),
                    L.Dense(3)])
    kw = {"optimizer": "adam", "loss": "sparse_categorical_crossentropy",
          "metrics": ["accuracy"], "lr": 0.01}
    kw.update(compile_kw)
    m.compile(**kw)
    return m


# ----------------------------------------------------------------------------- real training


def test_small_cnn_learns_mnist(digits) -> None:
    xtr, ytr, xte, yte = digits
    gpucnn.manual_seed(0)
    m = small_cnn()
    m.compile("adam", "sparse_categorical_crossentropy", ["accuracy"], lr=3e-3)
    before = m.evaluate(xte, yte, return_dict=True)
    t0 = time.perf_counter()
    h = m.fit(xtr, ytr, batch_size=32, epochs=2, verbose=0, seed=1)
    elapsed = time.perf_counter() - t0
    after = m.evaluate(xte, yte, batch_size=250, return_dict=True)
    assert h.history["loss"][1] < h.history["loss"][0] < before["loss"]
    assert after["accuracy"] > 0.85, after
    assert after["loss"] < 0.6
    if gpucnn.backend.current() == "numpy":  # the simulated device runs kernels on the CPU
        assert elapsed < 60
    pred = m.predict(xte[:100], batch_size=64)
    assert pred.shape == (100, 10) and pred.dtype == np.float32
    assert (pred.argmax(1) == yte[:100]).mean() > 0.8


def test_loader_input_and_validation_loader(digits) -> None:
    from gpucnn.data import DataLoader

    xtr, ytr, xte, yte = digits
    gpucnn.manual_seed(0)
    m = Sequential([L.Flatten(input_shape=(1, 28, 28)), L.Dense(32, activation="relu"),
                    L.Dense(10)])
    m.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    train = DataLoader((xtr, ytr), batch_size=50, shuffle=True, seed=3, prefetch=0)
    val = DataLoader((xte, yte), batch_size=100, prefetch=0)
    h = m.fit(train, epochs=2, verbose=0, validation_data=val)
    assert h.history["val_accuracy"][-1] > 0.75
    assert m.evaluate(val, return_dict=True)["accuracy"] == pytest.approx(
        h.history["val_accuracy"][-1])
    # a plain list of (x, y) batches works as well, and predict takes batches of x
    batches = [(xtr[i : i + 100], ytr[i : i + 100]) for i in range(0, 300, 100)]
    m.fit(batches, epochs=1, verbose=0)
    p = m.predict([xte[:10], xte[10:20]])
    np.testing.assert_allclose(p, m.predict(xte[:20]), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- semantics


def test_validation_split_takes_last_samples() -> None:
    x, y = _toy(80)
    m = _mlp()
    h = m.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_split=0.25)
    val = m.evaluate(x[60:], y[60:], return_dict=True)
    assert h.history["val_loss"][0] == pytest.approx(val["loss"], rel=1e-6)
    assert h.history["val_accuracy"][0] == pytest.approx(val["accuracy"])
    with pytest.raises(ValueError, match="validation_split"):
        m.fit(x, y, verbose=0, validation_split=1.5)


def test_validation_split_rows_never_trained_on(monkeypatch) -> None:
    from gpucnn.train import step

    x, y = _toy(40)
    m = _mlp()
    seen: list[np.ndarray] = []
    orig = step.prepare_x
    # batches reach the step on the model's backend: the spy copies them to the host
    monkeypatch.setattr(step, "prepare_x", lambda model, xb: (
        seen.append(gpucnn.backend.to_numpy(xb).copy()), orig(model, xb))[1])
    m.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_split=0.25)
    # per epoch: 4 training batches (8, 8, 8, 6), then 2 validation batches (8, 2)
    assert len(seen) == 12
    for e in (0, 6):
        trained = np.concatenate(seen[e : e + 4])
        assert sorted(r.tobytes() for r in trained) == sorted(r.tobytes() for r in x[:30])
        assert np.array_equal(np.concatenate(seen[e + 4 : e + 6]), x[30:])


def test_shuffle_reproducible_and_epoch_dependent() -> None:
    x, y = _toy(64)

    def run(seed: int) -> list:
        gpucnn.manual_seed(0)
        m = _mlp()
        m.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=seed)
        return m.get_weights()

    a, b, c = run(1), run(1), run(2)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))


def test_evaluate_return_forms_and_predict_eval_mode() -> None:
    x, y = _toy()
    m = _mlp()
    m.fit(x, y, epochs=1, verbose=0)
    res = m.evaluate(x, y)
    assert isinstance(res, list) and len(res) == 2
    d = m.evaluate(x, y, return_dict=True)
    assert list(d) == ["loss", "accuracy"] and d["loss"] == pytest.approx(res[0])
    m2 = _mlp(metrics=None)
    assert isinstance(m2.evaluate(x, y), float)
    p1, p2 = m.predict(x, batch_size=7), m.predict(x, batch_size=64)
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)  # dropout off, batching invisible
    assert m.training  # restored after predict
    logits = m.predict(x)
    manual = F.cross_entropy(Tensor(logits), Tensor(y)).item()
    assert d["loss"] == pytest.approx(manual, rel=1e-5)


def test_train_on_batch_and_tensor_inputs() -> None:
    x, y = _toy()
    m = _mlp()
    l1 = m.train_on_batch(Tensor(x), Tensor(y))
    for _ in range(20):
        last = m.train_on_batch(x, y)
    assert last < l1


# ----------------------------------------------------------------------------- losses


def test_softmax_output_is_detected() -> None:
    x, y = _toy()
    m = Sequential([L.Dense(3, input_shape=(6,)), L.Softmax()])
    m.compile("sgd", "sparse_categorical_crossentropy")
    assert m._loss.from_logits is False
    probs = m.predict(x)
    expected = -np.log(probs[np.arange(len(y)), y]).mean()
    assert m.evaluate(x, y) == pytest.approx(expected, rel=1e-5)
    m2 = Sequential([L.Dense(3, activation="softmax", input_shape=(6,))])
    m2.compile("sgd", "sparse_categorical_crossentropy")
    assert m2._loss.from_logits is False
    m3 = Sequential([L.Dense(3, input_shape=(6,)), L.Activation("softmax"), L.Dropout(0.1)])
    m3.compile("sgd", "categorical_crossentropy")
    assert m3._loss.from_logits is False
    h = m.fit(x, y, epochs=3, verbose=0)
    assert np.isfinite(h.history["loss"]).all()


def test_categorical_binary_and_regression_losses() -> None:
    x, y = _toy()
    onehot = np.eye(3, dtype=np.float32)[y]
    m = _mlp(loss="categorical_crossentropy")
    d = m.evaluate(x, onehot, return_dict=True)
    logits = m.predict(x)
    ref = F.cross_entropy(Tensor(logits), Tensor(y)).item()
    assert d["loss"] == pytest.approx(ref, rel=1e-5)
    assert d["accuracy"] == pytest.approx((logits.argmax(1) == y).mean())

    yb = (x[:, 0] > 0).astype(np.float32)
    mb = Sequential([L.Dense(1, input_shape=(6,))])
    mb.compile("adam", "binary_crossentropy", ["accuracy"], lr=0.05)
    h = mb.fit(x, yb, epochs=15, verbose=0, shuffle=False)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert h.history["accuracy"][-1] > 0.8
    ms = Sequential([L.Dense(1, activation="sigmoid", input_shape=(6,))])
    ms.compile("adam", "binary_crossentropy", ["accuracy"])
    p = ms.predict(x)[:, 0]
    ref = -(yb * np.log(p) + (1 - yb) * np.log(1 - p)).mean()
    assert ms.evaluate(x, yb) [0] == pytest.approx(ref, rel=1e-4)

    yr = x @ np.arange(6, dtype=np.float32)
    mr = Sequential([L.Dense(1, input_shape=(6,))])
    mr.compile("sgd", "mse", ["mae"], lr=0.02)
    h = mr.fit(x, yr, epochs=20, verbose=0)
    assert h.history["loss"][-1] < 0.2 * h.history["loss"][0]
    assert "mae" in h.history

    def custom(out: Tensor, target: Tensor) -> Tensor:
        return ((out[:, 0] - target) ** 2).mean()

    mc = Sequential([L.Dense(1, input_shape=(6,))])
    mc.compile("sgd", custom, lr=0.02)
    h = mc.fit(x, yr, epochs=5, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]


def test_compile_optimizer_forms() -> None:
    x, y = _toy()
    for name, cls in (("sgd", optim.SGD), ("adam", optim.Adam), ("adamw", optim.AdamW),
                      ("RMSprop", optim.RMSprop)):
        m = _mlp(optimizer=name, lr=None)
        assert isinstance(m.optimizer, cls)
    m = _mlp(optimizer="sgd", lr=None)
    assert m.optimizer.lr == 0.01
    lazy = Sequential([L.Dense(4), L.Dense(3)])
    lazy.compile(functools.partial(optim.SGD, lr=0.1, momentum=0.9),
                 "sparse_categorical_crossentropy")
    assert lazy.optimizer is None  # parameters do not exist yet
    lazy.fit(x, y, epochs=1, verbose=0)
    assert isinstance(lazy.optimizer, optim.SGD) and lazy.optimizer.defaults["momentum"] == 0.9
    built = Sequential([L.Dense(3, input_shape=(6,))])
    opt = optim.Adam(built.parameters(), lr=0.5)
    built.compile(opt, "sparse_categorical_crossentropy", lr=0.05)
    assert built.optimizer is opt and opt.lr == 0.05


def test_pytorch_style_model_subclass_fits_and_summarises() -> None:
    class Net(Model):  # layers in __init__, a forward: the Keras API comes with Model
        def __init__(self) -> None:
            super().__init__()
            self.conv = L.Conv2D(4, 3, padding="same", activation="relu")
            self.bn = L.BatchNormalization()
            self.head = L.Dense(3)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(F.flatten(self.bn(self.conv(x)), 1))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 2, 5, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=32)
    net = Net()
    net.compile("adam", "sparse_categorical_crossentropy", ["accuracy"], lr=0.01)
    h = net.fit(x, y, batch_size=8, epochs=5, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    text = net.summary(print_fn=None)
    assert "conv (Conv2D)" not in text  # rows use layer names
    assert f"{net.conv.name} (Conv2D)" in text and "(None, 4, 5, 5)" in text
    # as Keras: the batch-norm moving mean/variance (8) count as non-trainable params
    assert f"Total params: {net.count_params() + 8:,}" in text
    assert "Non-trainable params: 8" in text


# ----------------------------------------------------------------------------- verbosity


def test_verbosity_levels(capsys) -> None:
    x, y = _toy(48)
    m = _mlp()
    m.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""
    m.fit(x, y, batch_size=16, epochs=2, verbose=2, validation_split=0.25)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 2
    assert lines[0].startswith("Epoch 1/2") and "loss:" in lines[0] and "val_accuracy:" in \
        lines[0] and "img/s" in lines[0]
    m.fit(x, y, batch_size=16, epochs=1, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/1" in out and "img/s" in out and "loss: " in out and "accuracy: " in out
    with pytest.raises(ValueError, match="verbose"):
        m.fit(x, y, verbose=3)


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors() -> None:
    x, y = _toy()
    m = _mlp()
    with pytest.raises(ValueError, match=r"x has 64 \(shape \(64, 6\)\), y has 60"):
        m.fit(x, y[:60], verbose=0)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\).*got labels in \[0, 7\]"):
        m.fit(x, np.where(y == 2, 7, y), verbose=0)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        m.evaluate(x, -np.ones_like(y))
    with pytest.raises(ValueError, match=r"expected \(None, 6\), received \(N, 5\)"):
        m.fit(x[:, :5], y, verbose=0)
    with pytest.raises(ValueError, match="integer class ids"):
        m.fit(x, y + 0.5, verbose=0)
    with pytest.raises(ValueError, match="categorical_crossentropy"):
        m.fit(x, np.eye(3)[y], verbose=0)
    with pytest.raises(ValueError, match="unknown loss 'hinge'.*sparse_categorical"):
        m.compile("adam", "hinge")
    with pytest.raises(ValueError, match="unknown optimizer 'adadelta'.*sgd"):
        m.compile("adadelta", "mse")
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        m.compile("adam", "mse", metrics=["f1"])
    with pytest.raises(ValueError, match="a loss is required"):
        m.compile("adam")
    with pytest.raises(RuntimeError, match="not compiled"):
        Sequential([L.Dense(2)]).fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        m.fit(x, y, batch_size=0, verbose=0)
    cnn = small_cnn()
    cnn.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"expected \(None, 1, 28, 28\), received "
                                         r"\(N, 3, 28, 28\)"):
        cnn.fit(np.zeros((4, 3, 28, 28), np.float32), np.zeros(4, np.int64), verbose=0)
    lazy = Sequential([L.Conv2D(4, 3), L.Flatten(), L.Dense(2)])
    lazy.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"Conv2D layer .*received \(None, 6\)"):
        lazy.fit(x, y, verbose=0)


@pytest.mark.gpu
def test_fit_on_cuda_matches_numpy(digits) -> None:
    xtr, ytr, _, _ = digits

    def run(backend: str) -> list:
        gpucnn.manual_seed(0)
        m = small_cnn()
        m.to(backend)
        m.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"], lr=0.05)
        h = m.fit(xtr[:256], ytr[:256], batch_size=64, epochs=1, verbose=0, seed=0)
        assert all(p.backend == backend for p in m.parameters())
        return [h.history["loss"][0], *m.get_weights()]

    ref, got = run("numpy"), run("cuda")
    assert got[0] == pytest.approx(ref[0], rel=1e-4)
    for a, b in zip(ref[1:], got[1:]):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)


def test_lenet5_training_step_stays_float32(monkeypatch) -> None:
    """No silent float64 upcast anywhere in a LeNet-5 SGD-momentum step: every forward
    output, every gradient handed backwards, the parameter grads and the optimizer state."""
    gpucnn.manual_seed(0)
    net = gpucnn.models.lenet5()
    opt = optim.SGD(list(net.parameters()), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    be = gpucnn.backend.current()  # the model's parameters live there
    x = Tensor(rng.standard_normal((4, 1, 28, 28), dtype=np.float32), backend=be)
    y = Tensor(rng.integers(0, 10, 4), backend=be)
    loss = F.cross_entropy(net(x), y)
    graph, stack, seen = [], [loss], set()
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        graph.append(t)
        if t._node is not None:
            stack.extend(t._node[2])
    assert len(graph) > 15  # the walk reached the parameters (fused conv+act: one node each)
    assert all(t.dtype == np.float32 for t in graph), {str(t.dtype) for t in graph}
    grad_dtypes: list = []
    for cls in {t._node[0] for t in graph if t._node is not None}:

        def wrapped(ctx, g, _bw=cls.backward):  # noqa: ANN001, ANN202
            grads = _bw(ctx, g)
            for a in (g, *(grads if isinstance(grads, tuple) else (grads,))):
                if a is not None:
                    grad_dtypes.append(a.dtype)
            return grads

        monkeypatch.setattr(cls, "backward", staticmethod(wrapped))
    loss.backward()
    opt.step()
    opt.step()  # second step: the momentum-buffer update path
    assert grad_dtypes and set(grad_dtypes) == {np.dtype(np.float32)}
    for p in net.parameters():
        assert p.dtype == np.float32 and p.grad.dtype == np.float32
        assert opt.state[p]["momentum_buffer"].dtype == np.float32


# ----------------------------------------------------------------------------- host reads


def _plain_mlp(seed: int = 0, out_act: str | None = None) -> Sequential:
    gpucnn.manual_seed(seed)
    return Sequential([L.Dense(8, activation="relu", input_shape=(6,)),
                       L.Dense(3, activation=out_act)])


def _old_way_history(x, y, batch_size: int, epochs: int, metric_fns: dict) -> dict:
    """fit's numbers computed as before the device-side sums: every step reads the loss with
    ``float(value.item())`` and sums the per-sample metric values into Python floats."""
    from gpucnn import metrics as M

    m = _plain_mlp()
    m.build((6,))
    opt = optim.Adam(m.trainable_parameters(), lr=0.01)
    hist: dict = {"loss": [], **{k: [] for k in metric_fns}}
    for _ in range(epochs):
        total, seen, sums = 0.0, 0, dict.fromkeys(metric_fns, 0.0)
        for s in range(0, len(x), batch_size):
            xb, yb = x[s : s + batch_size], y[s : s + batch_size]
            out = m(Tensor(xb))
            value = F.cross_entropy(out, yb)
            opt.zero_grad()
            value.backward()
            opt.step()
            n = len(xb)
            total += float(value.item()) * n
            seen += n
            for k, fn in metric_fns.items():
                sums[k] += float(fn(yb, out.data).sum())
        hist["loss"].append(total / seen)
        for k in metric_fns:
            hist[k].append(sums[k] / seen)
    assert M  # the metric functions come from gpucnn.metrics
    return hist


@pytest.mark.numpy_internal
@pytest.mark.parametrize("update_freq", [None, 1, 3, "epoch"])
def test_history_unchanged_by_device_side_sums(update_freq) -> None:
    """History (and evaluate) give exactly the numbers of reading every step into Python
    floats, whatever the read frequency."""
    from gpucnn import metrics as M

    x, y = _toy(50)
    ref = _old_way_history(x, y, 8, 2, {"accuracy": M.sparse_categorical_accuracy,
                                        "top5": M.sparse_top_k_categorical_accuracy})
    m = _plain_mlp()
    m.compile("adam", "sparse_categorical_crossentropy", ["accuracy", "top5"], lr=0.01)
    h = m.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, update_freq=update_freq)
    assert h.history == ref  # exact equality, not approx
    logits = m.predict(x, batch_size=8)
    total = sum(float(F.cross_entropy(Tensor(logits[s:s + 8]), y[s:s + 8]).item()) * len(
        y[s:s + 8]) for s in range(0, 50, 8))
    d = m.evaluate(x, y, batch_size=8, return_dict=True)
    assert d["loss"] == total / 50
    assert d["accuracy"] == float((logits.argmax(1) == y).sum()) / 50


@pytest.mark.numpy_internal
def test_metric_batch_sums_equal_per_sample_sums(rng) -> None:
    """The fused, buffer-reusing batch sums of the built-in metrics are exactly the sums of
    their per-sample functions (and the fallback handles what they do not)."""
    from gpucnn import metrics as M

    def check(metric, loss_name, from_logits, batches) -> None:
        m = M.get(metric, loss_name, from_logits)
        total, count = 0.0, 0
        for _ in range(2):  # reset reuses the accumulator and the buffers
            m.reset()
            total, count = 0.0, 0
            for t, p in batches:
                m.update(t, p)
                total += float(m.fn(t, p).sum())
                count += p.shape[0]
        assert m.count == count and m.result() == total / count, (metric, loss_name)

    p3 = [rng.standard_normal((n, 3)).astype(np.float32) for n in (8, 8, 5)]
    lab = [rng.integers(0, 3, len(p)) for p in p3]
    check("accuracy", "sparse_categorical_crossentropy", True, list(zip(lab, p3)))
    check("accuracy", None, True, [(t.astype(np.int32), p) for t, p in zip(lab, p3)])
    check("accuracy", None, True, [(t.astype(np.float32), p) for t, p in zip(lab, p3)])
    check("accuracy", None, True, [(t.reshape(-1, 1), p) for t, p in zip(lab, p3)])
    onehot = [np.eye(3, dtype=np.float32)[t] for t in lab]
    check("accuracy", "categorical_crossentropy", True, list(zip(onehot, p3)))
    for feats in (1, 3):
        pb = [rng.standard_normal((n, feats)).astype(np.float32) for n in (8, 3)]
        tb = [(rng.random(p.shape) > 0.5).astype(np.float32) for p in pb]
        for logits in (True, False):
            check("accuracy", "binary_crossentropy", logits, list(zip(tb, pb)))
            check("binary_accuracy", None, logits, list(zip(tb, pb)))
    reg = [(rng.standard_normal((n, 2)).astype(np.float32),
            rng.standard_normal((n, 2)).astype(np.float32)) for n in (8, 8, 3)]
    for name in ("mae", "mse", "mean_absolute_error", "mean_squared_error"):
        check(name, "mse", True, reg)
    check("top5", None, True, list(zip(lab, p3)))
    check(lambda t, p: p[:, 0] * 0 + 0.25, None, True, list(zip(lab, p3)))  # custom


def _emulated_xent(monkeypatch, emulate):  # noqa: ANN001
    """The NumPy backend's fused cross-entropy swapped for the CUDA launchers, run by the
    host emulator (the shared ``emulate`` fixture), so fit meets the kernel and its
    device-side target check."""
    from gpucnn import backend as B
    from gpucnn.backend.cuda_ops import softmax_xent as cuda_sx

    be = B.get_backend("numpy")
    launched = []

    def fwd(*a, **k):
        launched.append(a[5] if len(a) > 5 else k.get("err"))
        return cuda_sx.softmax_xent_forward(*a, **k)

    monkeypatch.setattr(be, "softmax_xent_forward", fwd)
    monkeypatch.setattr(be, "softmax_xent_backward", cuda_sx.softmax_xent_backward)
    return emulate, launched


@pytest.mark.numpy_internal
def test_fit_reads_the_host_only_every_update_freq_steps(monkeypatch, emulate) -> None:  # noqa: ANN001
    """With deferred (device-style) target checks and the CUDA kernels, every host read of
    fit/evaluate goes through gpucnn.train.accumulate.host_read: every update_freq steps, at
    the last step of the epoch, once per validation pass; plus one more only for a callback
    reading its batch logs. Nothing else reads a loss or metric value."""
    import gpucnn.functional.loss as loss_mod
    import gpucnn.train.accumulate as acc_mod
    from gpucnn import callbacks as C
    from gpucnn import metrics as M

    monkeypatch.setattr(loss_mod, "_DEFER_HOST_CHECKS", True)
    runtime, launched = _emulated_xent(monkeypatch, emulate)
    events: list = []
    real_read, real_read_host = acc_mod.host_read, loss_mod.read_host
    inner: list = []

    def spy(values):
        events.append("read")
        return real_read(values)

    def inner_spy(values=()):
        inner.append(len(events))
        return real_read_host(values)

    monkeypatch.setattr(acc_mod, "host_read", spy)
    monkeypatch.setattr(loss_mod, "read_host", inner_spy)

    def forbidden(*a, **k):
        raise AssertionError("a host read outside train.accumulate.host_read")

    monkeypatch.setattr(Tensor, "item", forbidden)
    monkeypatch.setattr(M.MeanMetric, "total", property(forbidden))
    x, y = _toy(50)
    m = _plain_mlp()
    m.compile("adam", "sparse_categorical_crossentropy", ["accuracy"], lr=0.01)

    class Steps(C.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            events.append(f"s{batch}")

        def on_train_batch_end(self, batch, logs=None):
            assert logs["size"] in (8, 2)  # host-known: no read
            if batch == 4:
                events.append(round(logs["batch_loss"], 6) > 0)  # a read, inside the hook

    with runtime():
        h = m.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, update_freq=3,
                  validation_data=(x[:20], y[:20]), callbacks=[Steps()])
    assert launched and all(e is not None for e in launched)  # the kernel got the check buffer
    epoch = ["s0", "s1", "s2", "read", "s3", "s4", "read", True, "s5", "read", "s6", "read",
             "read"]  # steps 2, 4 (the callback's read), 5, 6 (the last); validation
    assert events == epoch + epoch
    assert len(inner) == events.count("read")  # every read went through _host_read
    assert len(h.history["loss"]) == 2 and np.isfinite(h.history["val_loss"]).all()
    events.clear()
    with runtime():
        m.evaluate(x, y, batch_size=8)
    assert events == ["read"]


@pytest.mark.numpy_internal
def test_batch_logs_are_keras_running_means_read_on_access() -> None:
    from gpucnn import callbacks as C

    x, y = _toy(40)
    seen: list = []
    kept: list = []

    class Rec(C.Callback):
        def on_train_batch_end(self, batch, logs=None):
            assert list(logs) == ["loss", "accuracy", "batch_loss", "size"]
            seen.append(dict(logs))
            kept.append(logs)

    m = _plain_mlp()
    m.compile("adam", "sparse_categorical_crossentropy", ["accuracy"], lr=0.01)
    h = m.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False, update_freq="epoch",
              callbacks=[Rec()])
    assert [s["size"] for s in seen] == [16, 16, 8]
    running = (seen[0]["batch_loss"] * 16 + seen[1]["batch_loss"] * 16) / 32
    assert seen[1]["loss"] == pytest.approx(running, rel=1e-12)
    assert seen[-1]["loss"] == h.history["loss"][0]
    assert seen[-1]["accuracy"] == h.history["accuracy"][0]
    assert kept[0]["loss"] == seen[0]["loss"]  # read inside the hook: kept
    lazy: list = []
    m.fit(x, y, batch_size=16, epochs=1, verbose=0, update_freq="epoch",
          callbacks=[C.LambdaCallback(on_train_batch_end=lambda b, logs: lazy.append(logs))])
    assert lazy[0]["size"] == 16
    with pytest.raises(RuntimeError, match="read after on_train_batch_end returned"):
        lazy[0]["loss"]
    with pytest.raises(ValueError, match="update_freq must be"):
        m.fit(x, y, verbose=0, update_freq=0)


@pytest.mark.numpy_internal
@pytest.mark.parametrize("kernel", [False, True], ids=["numpy-twin", "emulated-kernel"])
def test_out_of_range_targets_in_fit_raise_from_the_deferred_check(monkeypatch, request, kernel) -> None:  # noqa: ANN001, E501
    """Device-style (deferred) target checks: fit raises the op's error, naming the bad value
    and the range, at the next host read after the bad batch (not at its end)."""
    import contextlib

    import gpucnn.functional.loss as loss_mod
    from gpucnn import callbacks as C

    monkeypatch.setattr(loss_mod, "_DEFER_HOST_CHECKS", True)
    if kernel:
        runtime = _emulated_xent(monkeypatch, request.getfixturevalue("emulate"))[0]
    else:
        runtime = contextlib.nullcontext
    x, y = _toy(64)
    bad = y.copy()
    bad[9] = 7  # batch 1 of 8
    steps: list = []
    rec = C.LambdaCallback(on_train_batch_end=lambda b, logs: steps.append(b))
    m = _plain_mlp()
    m.compile("adam", "sparse_categorical_crossentropy", lr=0.01)
    with runtime(), pytest.raises(ValueError, match=r"cross_entropy: target value 7 is out of "
                                                  r"range; class indices must be in \[0, 2\]"):
        m.fit(x, bad, batch_size=8, epochs=1, verbose=0, shuffle=False, update_freq=4,
              callbacks=[rec])
    assert steps == [0, 1, 2]  # raised at the read of step 3, before its callbacks
    with runtime():  # the check was reset: clean data trains
        h = m.fit(x, y, batch_size=8, epochs=1, verbose=0, update_freq=4)
    assert np.isfinite(h.history["loss"]).all()
    ms = _plain_mlp(out_act="softmax")  # probabilities: the nll_loss path, array-op check
    ms.compile("adam", "sparse_categorical_crossentropy")
    neg = y.copy()
    neg[3] = -2
    with pytest.raises(ValueError, match=r"nll_loss: target value -2 is out of range"):
        ms.fit(x, neg, batch_size=8, epochs=1, verbose=0, update_freq="epoch")
    with pytest.raises(ValueError, match=r"nll_loss: target value -2 is out of range"):
        ms.evaluate(x, neg)
    with runtime(), pytest.raises(ValueError, match="labels must be integer class ids.*found by "
                                                    "the device-side check"):
        m.fit(x, y + 0.5, verbose=0)


@pytest.mark.gpu
def test_simulated_device_fit_syncs_only_at_reads() -> None:
    """On the simulated CUDA device (GPUCNN_SIMULATE_CUDA=1), which counts every host sync:
    device-resident batches, two epochs of 10 steps, update_freq=5: 4 syncs; device targets
    out of range raise at the next read."""
    from gpucnn.backend.device import simulated

    if not simulated():
        pytest.skip("counts syncs on the simulated device only")
    from gpucnn import backend as B
    from gpucnn.testing.simcuda import _state

    xp = B.get_backend("cuda").xp
    x, y = _toy(160)
    batches = [(xp.asarray(x[i:i + 16]), xp.asarray(y[i:i + 16])) for i in range(0, 160, 16)]
    m = _plain_mlp()
    m.to("cuda")
    m.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"], lr=0.05)
    m.fit(batches, epochs=1, verbose=0, update_freq=5)  # warm-up (buffers, checks)
    _state.reset()
    h = m.fit(batches, epochs=2, verbose=0, update_freq=5)
    assert _state.counters().syncs == 4 and len(h.history["loss"]) == 2
    _state.reset()
    m.evaluate(batches)
    assert _state.counters().syncs == 1
    bad = [(bx, by) for bx, by in batches]
    bad[1] = (bad[1][0], xp.asarray(np.full(16, 9, np.int64)))
    with pytest.raises(ValueError, match=r"cross_entropy: target value 9 is out of range"):
        m.fit(bad, epochs=1, verbose=0, update_freq=5)


def test_model_to_moves_optimizer_state_and_training_continues_identically(monkeypatch) -> None:
    """Model.to moves the optimizer's state arrays with the weights (through
    gpucnn.model.move_optimizer_state, not the checkpoint module): a model trained an epoch,
    moved to the cuda backend (where there is one) and back to numpy, then trained on, ends
    bit-identical to one that never moved."""
    import gpucnn.model as model_mod
    from gpucnn import backend as B
    from gpucnn.backend.device import is_array

    x, y = _toy(64)

    def trained() -> Sequential:
        m = _plain_mlp().to("numpy")
        m.compile(optim.Adam(m.parameters(), lr=0.01), "sparse_categorical_crossentropy")
        m.fit(x, y, batch_size=16, epochs=1, verbose=0, seed=0)
        return m

    def state_backends(m: Sequential) -> set[str]:
        return {B.backend_of(v).name for st in m.optimizer.state.values() for v in st.values()
                if is_array(v)}

    moved, ref = trained(), trained()
    calls: list[str] = []
    real = model_mod.move_optimizer_state
    monkeypatch.setattr(model_mod, "move_optimizer_state",
                        lambda opt, be: (calls.append(be), real(opt, be)))
    target = "cuda" if B.cuda_available() else "numpy"
    assert moved.to(target) is moved
    assert {p.backend for p in moved.parameters()} == {target}
    assert state_backends(moved) == {target}
    moved.to("cpu")
    assert calls == [target, "numpy"]
    assert {p.backend for p in moved.parameters()} == {"numpy"}
    assert state_backends(moved) == {"numpy"}
    for m in (moved, ref):
        m.fit(x, y, batch_size=16, epochs=3, initial_epoch=1, verbose=0, seed=0)
    for a, b in zip(moved.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)
    s1, s2 = moved.optimizer.state_dict()["state"], ref.optimizer.state_dict()["state"]
    for k in s2:
        for name, v in s2[k].items():
            np.testing.assert_array_equal(B.to_numpy(s1[k][name]) if is_array(v) else s1[k][name],
                                          B.to_numpy(v) if is_array(v) else v)


# ----------------------------------------------------------------------------- one training loop


def test_fit_feeds_arrays_through_the_dataloader_in_the_documented_order(monkeypatch) -> None:
    """fit/evaluate/predict on arrays iterate a gpucnn.data.DataLoader; fit's epoch e visits
    the samples in ``default_rng([seed, e]).permutation(n)`` order, with the last partial
    batch, and validation_split holds out the last samples."""
    from gpucnn.data import DataLoader
    from gpucnn.train import step

    iters: list = []
    real_iter = DataLoader.__iter__

    def spy(self):
        iters.append((self.batch_size, self.shuffle, self.num_samples))
        return real_iter(self)

    monkeypatch.setattr(DataLoader, "__iter__", spy)
    x, y = _toy(40)
    x[:, 5] = np.arange(40)  # each sample carries its index
    m = _plain_mlp()
    m.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"])
    seen: list = []
    orig = step.prepare_x
    monkeypatch.setattr(step, "prepare_x", lambda model, xb: (
        seen.append(gpucnn.backend.to_numpy(xb)[:, 5].astype(int)), orig(model, xb))[1])
    m.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=5, validation_split=0.25)
    # per epoch: the training loader (30 samples, shuffled) then the validation one (10)
    assert iters == [(8, True, 30), (8, False, 10)] * 2
    for e in range(2):
        batches = seen[e * 6:e * 6 + 4]
        assert [len(b) for b in batches] == [8, 8, 8, 6]
        np.testing.assert_array_equal(np.concatenate(batches),
                                      np.random.default_rng([5, e]).permutation(30))
        np.testing.assert_array_equal(np.concatenate(seen[e * 6 + 4:e * 6 + 6]),
                                      np.arange(30, 40))
    iters.clear()
    m.evaluate(x, y, batch_size=16)
    m.predict(x, batch_size=16)
    assert iters == [(16, False, 40), (16, False, 40)]


def test_fit_evaluate_predict_train_on_batch_share_the_steps(monkeypatch) -> None:
    from gpucnn.train import step

    calls: list = []
    real_train, real_eval = step.train_step, step.eval_step

    def train_spy(model, xb, yb, loss, run, where, *a):
        calls.append(("train", where, len(xb)))
        return real_train(model, xb, yb, loss, run, where, *a)

    def eval_spy(model, xb, yb, loss, run, where, *a):
        calls.append(("eval", where, len(xb)))
        return real_eval(model, xb, yb, loss, run, where, *a)

    monkeypatch.setattr(step, "train_step", train_spy)
    monkeypatch.setattr(step, "eval_step", eval_spy)
    x, y = _toy(20)
    m = _plain_mlp()
    m.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"])
    m.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x[:5], y[:5]))
    assert calls == [("train", "fit", 8), ("train", "fit", 8), ("train", "fit", 4),
                     ("eval", "fit(validation)", 5)]
    calls.clear()
    loss = m.train_on_batch(x[:6], y[:6])
    assert isinstance(loss, float) and np.isfinite(loss)
    res = m.evaluate(x, y, batch_size=16, return_dict=True)
    out = m.predict(x, batch_size=16)
    assert calls == [("train", "train_on_batch", 6), ("eval", "evaluate", 16),
                     ("eval", "evaluate", 4), ("eval", "predict", 16), ("eval", "predict", 4)]
    assert out.shape == (20, 3) and set(res) == {"loss", "accuracy"}


def test_device_dataset_is_never_copied_to_the_host() -> None:
    """Device arrays passed to fit/evaluate stay on the device: the only device->host copies
    are the packed progress reads (fit: every update_freq steps and the epoch's last step;
    evaluate: one), and predict's outputs (one per batch)."""
    from gpucnn.testing import simulated_device

    x, y = _toy(32)
    with simulated_device() as sim:
        m = _plain_mlp()
        m.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        xd, yd = sim.asarray(x), sim.asarray(y)
        with sim.counting() as c:
            h = m.fit(xd, yd, batch_size=8, epochs=2, verbose=0, update_freq=3)
        assert c.d2h == 2 * 2, c.sites["d2h"]  # steps 3 and 4 of each epoch
        assert len(h.history["loss"]) == 2 and np.isfinite(h.history["loss"]).all()
        with sim.counting() as c:
            res = m.evaluate(xd, yd, batch_size=16, return_dict=True)
        assert c.d2h == 1, c.sites["d2h"]
        with sim.counting() as c:
            out = m.predict(xd, batch_size=16)
        assert c.d2h == 2, c.sites["d2h"]  # the outputs
        with sim.counting() as c:  # a validation split of device arrays stays there too
            m.fit(xd, yd, batch_size=8, epochs=1, verbose=0, update_freq="epoch",
                  validation_split=0.25)
        assert c.d2h == 2, c.sites["d2h"]  # the epoch's read, the validation pass's read
    assert out.shape == (32, 3) and np.isfinite(res["loss"])


def test_fit_epoch_on_the_device_uploads_each_batch_once_and_allocates_nothing() -> None:
    """The whole epoch, the DataLoader's uploads included (test_sim_budgets counts inside a
    step, the loader builds the next batch between steps): host syncs only at the progress
    reads, one upload per array per batch, no device allocation once the pool is warm."""
    from gpucnn.callbacks import Callback
    from gpucnn.testing import simulated_device

    class PerEpoch(Callback):
        def __init__(self, sim) -> None:  # noqa: ANN001 - the simcuda module
            super().__init__()
            self.sim, self.rows = sim, []

        def on_epoch_begin(self, epoch, logs=None) -> None:  # noqa: ANN001
            self.before = self.sim.counters().snapshot()

        def on_epoch_end(self, epoch, logs=None) -> None:  # noqa: ANN001
            after = self.sim.counters().snapshot()
            self.rows.append({k: after[k] - self.before[k]
                              for k in ("syncs", "allocations", "h2d", "d2h")})

    x, y = _toy(40)
    with simulated_device() as sim:
        m = _plain_mlp()
        m.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        rec = PerEpoch(sim)
        m.fit(x, y, batch_size=8, epochs=3, verbose=0, update_freq=2, callbacks=[rec])
    for r in rec.rows:  # 5 steps: reads at steps 2, 4 and 5
        assert r["syncs"] == 3 and r["d2h"] == 3, rec.rows
    for r in rec.rows[1:]:  # (the first epoch also uploads the model's first-step state)
        assert r["h2d"] == 2 * 5 and r["allocations"] == 0, rec.rows
