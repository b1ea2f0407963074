"""gpucnn.train: the train/eval steps as functions of the model, the running sums and their
one host read, the loss table, the data adapters and the progress display."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import backend as B
from gpucnn import layers as L
from gpucnn import metrics as M
from gpucnn import optim
from gpucnn.model import Sequential
from gpucnn.tensor import Tensor
from gpucnn.train import accumulate, data, losses, progress, step


def _toy(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] > x[:, 1]).astype(np.int64) + (x[:, 2] > 0.5).astype(np.int64)


def _net(backend_name: str, lr: float = 0.1) -> Sequential:
    m = Sequential([L.Dense(5, activation="relu", input_shape=(4,)), L.Dense(3)])
    m = m.to(backend_name)
    m.compile(optim.SGD(m.parameters(), lr=lr), "sparse_categorical_crossentropy", ["accuracy"])
    return m


def _weights(m: Sequential) -> list[np.ndarray]:
    return [p.numpy().copy() for p in m.parameters()]


def test_train_step_is_forward_loss_backward_sgd(backend) -> None:
    """One train_step equals the hand-written step: the cross-entropy of the output, its
    gradients, ``w -= lr * grad``; it returns the batch size and the loss as a 0-d array, and
    with running sums adds the batch to them."""
    x, y = _toy()
    m = _net(backend.name)
    w0 = _weights(m)
    xt, yt = Tensor(B.to_backend(x, backend)), B.to_backend(y, backend)
    value = F.cross_entropy(m(xt), yt)
    value.backward()
    grads = [p.grad.numpy().copy() for p in m.parameters()]
    for p in m.parameters():
        p.grad = None
    expect = [w - 0.1 * g for w, g in zip(w0, grads)]

    m.train()
    n, lv = step.train_step(m, x, y, m._loss, None, "test")
    assert n == len(x) and np.shape(lv) == ()
    assert float(B.to_numpy(lv)) == pytest.approx(value.item(), rel=1e-6)
    for got, want in zip(_weights(m), expect):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    run = accumulate.Running([M.get("accuracy", "sparse_categorical_crossentropy", True)])
    run.reset()
    step.train_step(m, x[:8], y[:8], m._loss, run, "test")
    step.train_step(m, x[8:], y[8:], m._loss, run, "test")
    logs, _ = run.read()
    assert run.seen == len(x) and set(logs) == {"loss", "accuracy"}
    assert np.isfinite(logs["loss"]) and 0.0 <= logs["accuracy"] <= 1.0


def test_eval_step_and_eval_pass_change_nothing_and_match_evaluate(backend) -> None:
    x, y = _toy(20)
    m = _net(backend.name)
    w0 = _weights(m)
    m.eval()
    out = step.eval_step(m, x, None, None, None, "predict")
    np.testing.assert_allclose(out.numpy(), m.predict(x), rtol=1e-6)
    assert not out.requires_grad and all(p.grad is None for p in m.parameters())
    m.train()
    metric_objs = m._metric_objects(m._loss)
    logs = step.eval_pass(m, data.make_data(x, y, 8, "test"), m._loss, metric_objs, "test")
    assert m.training  # the mode is restored
    assert logs == pytest.approx(m.evaluate(x, y, batch_size=8, return_dict=True), rel=1e-6)
    for got, want in zip(_weights(m), w0):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="test: the data gave batches without targets"):
        step.eval_step(m, x, None, m._loss, accumulate.Running([]), "test")


def test_prepare_casts_to_the_models_backend_and_dtype(backend) -> None:
    m = _net(backend.name)
    xt = step.prepare_x(m, np.arange(8, dtype=np.uint8).reshape(2, 4))
    assert xt.backend == backend.name and xt.dtype == m.dtype
    np.testing.assert_array_equal(xt.numpy(), np.arange(8).reshape(2, 4))  # cast, not scaled
    ya = step.prepare_y(m, np.array([[1], [2]], np.int32), m._loss)
    assert ya.dtype == np.int64 and ya.shape == (2,)
    mse = losses.Loss("mse", True)
    assert step.prepare_y(m, [[0.5], [1.5]], mse).dtype == m.dtype


def test_the_loss_table() -> None:
    assert losses.LOSSES[0] == "sparse_categorical_crossentropy"
    for alias, name in losses.LOSS_ALIASES.items():
        assert losses.Loss(alias.upper(), True).name == name
    assert losses.Loss("sparse_categorical_crossentropy", True).sparse
    assert not losses.Loss("categorical_crossentropy", True).sparse

    def my_loss(out, y):
        return (out * 0).sum()

    custom = losses.Loss(my_loss, True)
    assert (custom.kind, custom.name) == ("custom", "my_loss")
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'; known: sparse_categorical"):
        losses.Loss("hinge", True)
    with pytest.raises(ValueError, match="expected a loss name or a callable"):
        losses.Loss(3, True)

    # logits vs probabilities: the same value through the softmax inside or outside the loss
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 2, 1, 0])
    probs = F.softmax(Tensor(logits), axis=1)
    onehot = Tensor(np.eye(3, dtype=np.float32)[y])
    for name, target in (("sparse_categorical_crossentropy", Tensor(y)),
                         ("categorical_crossentropy", onehot)):
        a = losses.Loss(name, True)(Tensor(logits), target).item()
        b = losses.Loss(name, False)(probs, target).item()
        assert a == pytest.approx(b, rel=1e-5), name
    z = Tensor(logits[:, :1])
    t = Tensor((y[:, None] > 0).astype(np.float32))
    assert losses.Loss("bce", True)(z, t).item() == pytest.approx(
        losses.Loss("bce", False)(F.sigmoid(z), t).item(), rel=1e-5)
    assert losses.Loss("mae", True)(Tensor(np.ones((2, 1), np.float32)),
                                    Tensor(np.zeros(2, np.float32))).item() == 1.0


def test_check_targets_names_the_loss_and_the_fix() -> None:
    sparse = losses.Loss("sparse_categorical_crossentropy", True)
    losses.check_targets(sparse, np.array([0, 2]), (2, 3), "w")
    with pytest.raises(ValueError, match=r"w: got 2 outputs but 3 targets"):
        losses.check_targets(sparse, np.array([0, 1, 2]), (2, 3), "w")
    with pytest.raises(ValueError, match=r"use 'categorical_crossentropy' for one-hot"):
        losses.check_targets(sparse, np.eye(3)[:2], (2, 3), "w")
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\).*got labels in \[0, 3\]"):
        losses.check_targets(sparse, np.array([0, 3]), (2, 3), "w")
    with pytest.raises(ValueError, match=r"use 'sparse_categorical_crossentropy' for integer"):
        losses.check_targets(losses.Loss("categorical_crossentropy", True), np.array([0, 1]),
                             (2, 3), "w")
    with pytest.raises(ValueError, match=r"'mse' expects targets with the output's shape"):
        losses.check_targets(losses.Loss("mse", True), np.zeros((2, 2)), (2, 1), "w")


def test_update_every() -> None:
    assert accumulate.update_every(None, "numpy") == 1
    assert accumulate.update_every(None, "cuda") == accumulate.DEFAULT_UPDATE_FREQ
    assert accumulate.update_every("batch", "cuda") == 1
    assert accumulate.update_every("epoch", "numpy") is None
    assert accumulate.update_every(np.int64(7), "cuda") == 7
    for bad in (0, -1, True, 1.5, "often"):
        with pytest.raises(ValueError, match="update_freq must be a positive int"):
            accumulate.update_every(bad, "numpy")


@pytest.mark.numpy_internal
def test_batch_logs_read_once_on_first_access_and_only_inside_the_hook(monkeypatch) -> None:
    reads: list = []
    real = accumulate.host_read
    monkeypatch.setattr(accumulate, "host_read", lambda v: reads.append(len(v)) or real(v))
    run = accumulate.Running([])
    run.reset()
    lv = run.add(Tensor(np.float32(2.0)), 4, None, None)
    logs = accumulate.BatchLogs(run, lv, 4, 0, ["loss"])
    assert "loss" in logs and len(logs) == 3 and logs["size"] == 4 and not logs.resolved
    assert reads == []
    assert logs["loss"] == 2.0 and logs["batch_loss"] == 2.0 and reads == [2]
    assert dict(logs) == {"loss": 2.0, "batch_loss": 2.0, "size": 4} and reads == [2]
    late = accumulate.BatchLogs(run, lv, 4, 1, ["loss"])
    late["note"] = "kept"
    late.close()
    assert late["size"] == 4 and late["note"] == "kept"
    with pytest.raises(RuntimeError, match="batch logs of step 1 were read after"):
        late["loss"]


def test_make_data_and_the_loader_it_feeds() -> None:
    x, y = _toy(10)
    d = data.make_data(x, y, 4, "fit")
    assert isinstance(d, data.ArrayData) and d.num_batches() == 3
    head, tail = d.split(6)
    assert len(head.x) == 6 and len(tail.y) == 4 and np.shares_memory(head.x, x)
    loader = d.loader("numpy", np.float32, False, None)
    assert loader.prefetch == data.LOADER_PREFETCH == 2  # on every device, simulated included
    got = list(data.iter_batches(d, "numpy", np.float32))
    assert [len(b[0]) for b in got] == [4, 4, 2] and got[0][1].dtype == y.dtype
    assert data.iter_batches(d, "numpy", np.float32) is not None
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    it = data.make_data(batches, None, 32, "fit")
    assert isinstance(it, data.IterData) and it.num_batches() == 2
    assert [len(b[1]) for b in data.iter_batches(it, "numpy", np.float32)] == [5, 5]
    assert data.make_data(batches, None, 32, "fit", steps=1).num_batches() == 1
    with pytest.raises(ValueError, match=r"x has 10 \(shape \(10, 4\)\), y has 9"):
        data.make_data(x, y[:9], 4, "fit")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        data.make_data(x, y, 0, "fit")
    with pytest.raises(TypeError, match="x must be an array"):
        data.make_data(object(), None, 4, "predict")


def test_arrays_are_prefetched_on_the_simulated_device_too(monkeypatch) -> None:
    """fit's DataLoader prefetches 2 batches whatever the device (no simulated-device case)."""
    from gpucnn.data import DataLoader
    from gpucnn.testing import simulated_device

    made: list = []
    real_init = DataLoader.__init__

    def spy(self, *a, **k):
        made.append(k.get("prefetch"))
        real_init(self, *a, **k)

    monkeypatch.setattr(DataLoader, "__init__", spy)
    x, y = _toy(16)
    with simulated_device():
        m = _net("cuda")
        m.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert made == [2]


def test_progress_formatting(capsys) -> None:
    logs = {"loss": 0.123456, "accuracy": 0.5, "epoch": 3}
    assert progress.fmt_logs(logs) == "loss: 0.1235 - accuracy: 0.5000 - epoch: 3"
    assert progress.postfix({"loss": 0.5}, 1234.4) == {"loss": "0.5000", "img/s": "1234"}
    assert progress.line("evaluate", 1.25, {"loss": 1.0}) == "evaluate - 1.2s - loss: 1.0000"
    assert progress.line("Epoch 1/2", 2.0, {}, 99.6).endswith(" - 100 img/s")
    quiet = progress.Progress(0, 0, 2, 3)
    quiet.update({"loss": 1.0}, 4)
    quiet.close({"loss": 1.0}, 4)
    assert capsys.readouterr().out == ""
    p = progress.Progress(2, 1, 5, None)
    p.update(None, 8)
    p.close({"loss": 0.25}, 8)
    out = capsys.readouterr().out
    assert out.startswith("Epoch 2/5 - ") and "loss: 0.2500" in out and out.endswith("img/s\n")


def test_the_package_never_imports_the_model_module() -> None:
    """gpucnn.model imports gpucnn.train, never the other way round (no cycle)."""
    pkg = pathlib.Path(gpucnn.__file__).parent / "train"
    for path in sorted(pkg.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            assert not [n for n in names if n in ("gpucnn.model", "gpucnn.models")], path
    assert "train" not in gpucnn.__all__
