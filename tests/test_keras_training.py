"""Keras-style training extras: optimizers built without parameters, Adagrad/NAdam by name,
Huber and KL-divergence losses, top-k / precision / recall metrics, class and sample weights,
TerminateOnNaN, to_categorical and checkpoints of the new optimizers. Both backends."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import Sequential, Tensor, optim
from gpucnn import callbacks as C
from gpucnn import layers as L
from gpucnn import metrics as M
from gpucnn.utils import to_categorical


def _data(n=48, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    y = rng.integers(0, classes, n)
    return x, y


def _model(classes=3, features=6, activation=None, seed=0):
    gpucnn.manual_seed(seed)
    return Sequential([L.Dense(8, activation="relu", input_shape=(features,)),
                       L.Dense(classes, activation=activation)])


# ----------------------------------------------------------------------------- optimizers


def test_compile_binds_an_optimizer_built_without_parameters():
    x, y = _data()
    m = _model()
    opt = optim.Adam(learning_rate=5e-3)
    m.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    assert m.optimizer is opt and opt.bound  # built model: bound at compile
    assert [id(p) for p in opt.param_groups[0]["params"]] == \
        [id(p) for p in m.trainable_parameters()]
    before = m.get_weights()
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, m.get_weights()))

    # an unbuilt model: bound when fit builds it
    gpucnn.manual_seed(0)
    lazy = Sequential([L.Dense(8), L.Dense(3)])
    opt2 = optim.NAdam(learning_rate=1e-2)
    lazy.compile(optimizer=opt2, loss="sparse_categorical_crossentropy")
    assert not opt2.bound
    lazy.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert lazy.optimizer is opt2 and opt2.bound and opt2.lr == 1e-2


def test_compile_learning_rate_keyword_and_new_optimizer_names():
    m = _model()
    m.compile("adagrad", "sparse_categorical_crossentropy", learning_rate=0.05)
    assert type(m.optimizer).__name__ == "Adagrad" and m.optimizer.lr == 0.05
    m.compile("nadam", "sparse_categorical_crossentropy")
    assert isinstance(m.optimizer, optim.NAdam) and m.optimizer.learning_rate == 1e-3
    m.compile("adagrad", "mse")
    assert m.optimizer.lr == 1e-3  # Keras default
    m.compile(optim.SGD(learning_rate=0.1), "mse", learning_rate=0.2)
    assert m.optimizer.lr == 0.2
    with pytest.raises(ValueError, match="compile: lr=0.1 and learning_rate=0.2 disagree"):
        m.compile("sgd", "mse", lr=0.1, learning_rate=0.2)
    m.compile("sgd", "mse", lr=0.3, learning_rate=0.3)
    assert m.optimizer.lr == 0.3


def test_schedule_of_an_unbound_optimizer_is_a_clear_error():
    opt = optim.Adagrad(learning_rate=0.1)
    with pytest.raises(ValueError, match="StepLR: the Adagrad has no parameters yet"):
        optim.StepLR(opt, step_size=1)
    m = _model()
    m.compile(opt, "sparse_categorical_crossentropy")  # built model: bound now
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    assert opt.lr == pytest.approx(0.05)


@pytest.mark.parametrize("name", ["adagrad", "nadam"])
def test_new_optimizers_train_and_checkpoint_round_trip(tmp_path, name):
    """fit 2 epochs == fit 1 epoch, save, load (optimizer state restored), fit 1 more."""
    x, y = _data(40)
    ref = _model()
    ref.compile(name, "sparse_categorical_crossentropy", lr=0.05)
    ref.fit(x, y, epochs=2, batch_size=10, verbose=0, shuffle=False)

    m = _model()
    m.compile(name, "sparse_categorical_crossentropy", lr=0.05)
    m.fit(x, y, epochs=1, batch_size=10, verbose=0, shuffle=False)
    path = tmp_path / "ckpt.gpucnn"
    m.save(path)
    back = gpucnn.load_model(path)
    assert type(back.optimizer) is type(m.optimizer)
    sa, sb = m.optimizer.state_dict(), back.optimizer.state_dict()
    for i, st in sa["state"].items():
        for k, v in st.items():
            np.testing.assert_array_equal(gpucnn.backend.to_numpy(sb["state"][i][k]),
                                          gpucnn.backend.to_numpy(v))
    back.fit(x, y, epochs=2, initial_epoch=1, batch_size=10, verbose=0, shuffle=False)
    for a, b in zip(ref.get_weights(), back.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("name", ["huber", "huber_loss"])
def test_compile_huber_is_the_mean_huber(name):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 6)).astype(np.float32)
    y = (rng.standard_normal((20, 3)) * 2).astype(np.float32)
    m = _model()
    m.compile("sgd", name)
    out = m.predict(x)
    d = np.abs(out - y)
    want = np.where(d < 1.0, 0.5 * d * d, d - 0.5).mean()
    assert m.evaluate(x, y, batch_size=20) == pytest.approx(want, rel=1e-5)
    m.fit(x, y, epochs=1, batch_size=10, verbose=0)


@pytest.mark.parametrize("name", ["kl_divergence", "kld", "kullback_leibler_divergence"])
@pytest.mark.parametrize("softmax", [True, False])
def test_compile_kl_divergence_keras_semantics(name, softmax):
    """Keras's KLD on probabilities (clipped to [1e-7, 1]); a logits model uses the output's
    log-softmax."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 6)).astype(np.float32)
    y = rng.dirichlet(np.ones(3), 12).astype(np.float32)
    y[0] = [1.0, 0.0, 0.0]
    m = _model(activation="softmax" if softmax else None)
    m.compile("adam", name)
    out = m.predict(x).astype(np.float64)
    if softmax:
        yp = np.clip(out, 1e-7, 1.0)
    else:
        yp = np.exp(out) / np.exp(out).sum(1, keepdims=True)
    yt = np.clip(y.astype(np.float64), 1e-7, 1.0)
    want = (yt * np.log(yt / yp)).sum(axis=-1).mean()
    assert m.evaluate(x, y, batch_size=5) == pytest.approx(want, rel=1e-5, abs=1e-6)
    hist = m.fit(x, y, epochs=2, batch_size=6, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    with pytest.raises(ValueError, match="loss 'kl_divergence' expects probability targets"):
        m.evaluate(x, y[:, :2])


# ----------------------------------------------------------------------------- metrics


def test_top_k_categorical_accuracy_by_hand():
    y_pred = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6]])
    labels = np.array([2, 1, 0, 1])
    np.testing.assert_array_equal(M.sparse_top_k_categorical_accuracy(labels, y_pred, k=2),
                                  [1.0, 1.0, 1.0, 1.0])  # ties count for the true class
    np.testing.assert_array_equal(M.sparse_top_k_categorical_accuracy(labels, y_pred, k=1),
                                  [0.0, 0.0, 0.0, 0.0])
    onehot = to_categorical(labels, 3)
    np.testing.assert_array_equal(M.top_k_categorical_accuracy(onehot, y_pred, k=1),
                                  [0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(M.top_k_categorical_accuracy(onehot, y_pred, k=2), 1.0)
    with pytest.raises(ValueError, match="top_k_categorical_accuracy: expects one-hot targets"):
        M.top_k_categorical_accuracy(labels, y_pred)


def test_top_k_metrics_in_fit_and_evaluate():
    x, y = _data(30, classes=5)
    m = _model(classes=5)
    m.compile("adam", "categorical_crossentropy",
              metrics=[M.TopKCategoricalAccuracy(k=2), "top_k_categorical_accuracy"])
    yh = to_categorical(y, 5)
    logs = m.evaluate(x, yh, batch_size=7, return_dict=True)
    out = m.predict(x)
    above = (out > out[np.arange(30), y][:, None]).sum(1)
    assert logs["top_k_categorical_accuracy"] == pytest.approx((above < 5).mean())  # k=5
    assert set(logs) == {"loss", "top_k_categorical_accuracy"}  # both share the Keras name
    m.compile("adam", "sparse_categorical_crossentropy",
              metrics=[M.SparseTopKCategoricalAccuracy(k=2, name="top2"),
                       "sparse_top_k_categorical_accuracy"])
    logs = m.evaluate(x, y, batch_size=7, return_dict=True)
    assert logs["top2"] == pytest.approx((above < 2).mean())
    assert logs["sparse_top_k_categorical_accuracy"] == pytest.approx(1.0)
    hist = m.fit(x, y, epochs=1, batch_size=10, verbose=0, validation_data=(x, y))
    assert "val_top2" in hist.history


def test_precision_recall_global_counts_not_batch_means():
    """Streamed over batches: tp / predicted positives of the whole pass (Keras), which here
    differs from the mean of per-batch precisions."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    m = _model(classes=1, activation="sigmoid")
    m.compile("sgd", "binary_crossentropy",
              metrics=["precision", M.Recall(), M.Precision(thresholds=0.3, name="p30")])
    p = m.predict(x).reshape(-1)
    y = (rng.uniform(size=40) < 0.5).astype(np.float32)
    y[:10] = (p[:10] > 0.5)  # first batch: perfect
    logs = m.evaluate(x, y, batch_size=10, return_dict=True)
    pred, true = p > 0.5, y != 0
    tp = (pred & true).sum()
    assert logs["precision"] == pytest.approx(tp / pred.sum())
    assert logs["recall"] == pytest.approx(tp / true.sum())
    pred30 = p > 0.3
    assert logs["p30"] == pytest.approx((pred30 & true).sum() / pred30.sum())
    per_batch = [((pred[i:i + 10] & true[i:i + 10]).sum() / max(pred[i:i + 10].sum(), 1))
                 for i in range(0, 40, 10)]
    assert abs(np.mean(per_batch) - logs["precision"]) > 1e-3  # the data makes them differ
    hist = m.fit(x, y, epochs=2, batch_size=10, verbose=0, validation_data=(x, y))
    assert 0.0 <= hist.history["val_precision"][-1] <= 1.0


def test_precision_recall_on_a_logits_model_and_edge_cases():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 6)).astype(np.float32)
    m = _model(classes=2)  # logits: the 0.5 threshold is the logit 0
    m.compile("sgd", "binary_crossentropy", metrics=["precision", "recall"])
    out = m.predict(x)
    y = (rng.uniform(size=(16, 2)) < 0.5).astype(np.float32)
    logs = m.evaluate(x, y, batch_size=4, return_dict=True)
    pred, true = out > 0, y != 0
    assert logs["precision"] == pytest.approx((pred & true).sum() / pred.sum())
    assert logs["recall"] == pytest.approx((pred & true).sum() / true.sum())
    r = M.get("recall")
    r.update(np.zeros(3), np.ones(3))  # no actual positives: 0, as Keras
    assert r.result() == 0.0
    with pytest.raises(ValueError, match="Precision: thresholds must be one number"):
        M.Precision(thresholds=[0.3, 0.5])
    with pytest.raises(ValueError, match=r"Precision: thresholds must be in \(0, 1\), got 1.5"):
        M.Precision(thresholds=1.5)
    with pytest.raises(TypeError, match="pass an instance"):
        M.get(M.Precision)


# ----------------------------------------------------------------------------- weights


def _frozen_sgd(model):
    return optim.SGD(model.parameters(), lr=0.0)


def _per_sample_xent(model, x, y):
    out = Tensor(model.predict(x).astype(np.float64))
    return F.cross_entropy(out, y, reduction="none").numpy()


@pytest.mark.parametrize("batch_size", [48, 10])
def test_sample_weight_keras_semantics(batch_size):
    """loss = sum(w_i * l_i) / N (Keras divides by the samples, not the weights)."""
    x, y = _data()
    w = np.random.default_rng(5).uniform(0.0, 3.0, len(x))
    m = _model()
    m.compile(_frozen_sgd(m), "sparse_categorical_crossentropy", metrics=["accuracy"])
    ls = _per_sample_xent(m, x, y)
    hist = m.fit(x, y, sample_weight=w, epochs=1, batch_size=batch_size, verbose=0,
                 shuffle=False)
    assert hist.history["loss"][0] == pytest.approx((w * ls).sum() / len(x), rel=1e-5)
    plain = m.evaluate(x, y, batch_size=batch_size, return_dict=True)
    assert plain["loss"] == pytest.approx(ls.mean(), rel=1e-5)
    weighted = m.evaluate(x, y, sample_weight=w, batch_size=batch_size, return_dict=True)
    assert weighted["loss"] == pytest.approx((w * ls).sum() / len(x), rel=1e-5)
    assert weighted["accuracy"] == plain["accuracy"]  # metrics are not weighted (Keras)


def test_sample_weight_with_validation_split_and_validation_weights():
    x, y = _data(40)
    w = np.linspace(0.5, 2.0, 40)
    m = _model()
    m.compile(_frozen_sgd(m), "sparse_categorical_crossentropy")
    ls = _per_sample_xent(m, x, y)
    hist = m.fit(x, y, sample_weight=w, validation_split=0.25, epochs=1, batch_size=8,
                 verbose=0)
    assert hist.history["loss"][0] == pytest.approx((w[:30] * ls[:30]).mean(), rel=1e-5)
    # as Keras, validation_split splits the weights too: the held-out part keeps its own
    assert hist.history["val_loss"][0] == pytest.approx((w[30:] * ls[30:]).mean(), rel=1e-5)
    hist = m.fit(x[:30], y[:30], validation_data=(x[30:], y[30:], w[30:]), epochs=1,
                 batch_size=8, verbose=0)
    assert hist.history["val_loss"][0] == pytest.approx((w[30:] * ls[30:]).mean(), rel=1e-5)


def test_class_weight_equals_the_matching_sample_weight_and_trains_alike():
    x, y = _data(36)
    cw = {0: 2.0, 2: 0.5}  # class 1: weight 1.0
    w = np.array([cw.get(int(c), 1.0) for c in y])
    results = []
    for kw in (dict(class_weight=cw), dict(sample_weight=w)):
        m = _model()
        m.compile(optim.SGD(m.parameters(), lr=0.1), "sparse_categorical_crossentropy")
        hist = m.fit(x, y, epochs=2, batch_size=12, verbose=0, shuffle=False, **kw)
        results.append((hist.history["loss"], m.get_weights()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    m = _model()  # one-hot targets: the class is the argmax
    m.compile(_frozen_sgd(m), "categorical_crossentropy")
    ls = _per_sample_xent(m, x, y)
    hist = m.fit(x, to_categorical(y, 3), class_weight=cw, epochs=1, batch_size=36, verbose=0)
    assert hist.history["loss"][0] == pytest.approx((w * ls).mean(), rel=1e-5)


def test_class_weight_binary_and_weight_errors():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((20, 6)).astype(np.float32)
    y = (rng.uniform(size=(20, 1)) < 0.4).astype(np.float32)
    m = _model(classes=1)
    m.compile(_frozen_sgd(m), "binary_crossentropy")
    z = m.predict(x).astype(np.float64)
    ls = (np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).reshape(-1)
    w = np.where(y.reshape(-1) > 0.5, 3.0, 1.0)
    hist = m.fit(x, y, class_weight={1: 3.0}, epochs=1, batch_size=20, verbose=0)
    assert hist.history["loss"][0] == pytest.approx((w * ls).mean(), rel=1e-5)
    with pytest.raises(ValueError, match=r"fit: sample_weight must have shape \(20,\)"):
        m.fit(x, y, sample_weight=np.ones(19), verbose=0)
    with pytest.raises(ValueError, match=r"got \(20, 2\)"):
        m.fit(x, y, sample_weight=np.ones((20, 2)), verbose=0)
    with pytest.raises(ValueError, match="sample_weight must be finite and >= 0"):
        m.fit(x, y, sample_weight=-np.ones(20), verbose=0)
    with pytest.raises(ValueError, match="not both"):
        m.fit(x, y, sample_weight=np.ones(20), class_weight={0: 1.0}, verbose=0)
    with pytest.raises(ValueError, match=r"class_weight keys must be class ids .* got 'a'"):
        m.fit(x, y, class_weight={"a": 1.0}, verbose=0)
    with pytest.raises(ValueError, match=r"class_weight\[1\] must be a finite number >= 0"):
        m.fit(x, y, class_weight={1: -2.0}, verbose=0)
    with pytest.raises(TypeError, match="class_weight must be a dict"):
        m.fit(x, y, class_weight=[1.0, 2.0], verbose=0)
    with pytest.raises(ValueError, match=r"sample_weight needs array x and y"):
        m.fit([(x, y)], sample_weight=np.ones(20), verbose=0)
    m.compile("sgd", lambda out, t: ((out - t) ** 2).mean())
    with pytest.raises(ValueError, match="need a built-in loss"):
        m.fit(x, y, sample_weight=np.ones(20), verbose=0)


def test_loader_batches_with_sample_weights():
    x, y = _data(24)
    w = np.linspace(0.0, 2.0, 24)
    m = _model()
    m.compile(_frozen_sgd(m), "sparse_categorical_crossentropy")
    ls = _per_sample_xent(m, x, y)
    batches = [(x[i:i + 8], y[i:i + 8], w[i:i + 8]) for i in range(0, 24, 8)]
    hist = m.fit(batches, epochs=1, verbose=0)
    assert hist.history["loss"][0] == pytest.approx((w * ls).mean(), rel=1e-5)
    assert m.evaluate(batches) == pytest.approx((w * ls).mean(), rel=1e-5)


# ----------------------------------------------------------------------------- TerminateOnNaN


def test_terminate_on_nan_stops_at_the_bad_batch(capsys):
    x, y = _data(40)
    x[12] = np.nan  # batch 1 of 4
    m = _model()
    m.compile("sgd", "sparse_categorical_crossentropy")
    cb = C.TerminateOnNaN()
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = m.fit(x, y, epochs=3, batch_size=10, verbose=0, shuffle=False,
                     callbacks=[cb, C.LambdaCallback(on_train_batch_end=lambda b, logs:
                                                     seen.append(b))])
    assert cb.stopped_batch == 1 and cb.stopped_epoch == 0
    assert seen == [0, 1] and len(hist.history["loss"]) == 1
    assert "Batch 1: invalid loss nan, terminating training" in capsys.readouterr().out
    x2, y2 = _data(20)
    m.fit(x2, y2, epochs=1, batch_size=10, verbose=0, callbacks=[cb])  # weights are NaN now
    assert cb.stopped_batch == 0


def test_terminate_on_nan_leaves_finite_training_alone():
    x, y = _data(20)
    m = _model()
    m.compile("sgd", "sparse_categorical_crossentropy")
    cb = C.TerminateOnNaN()
    hist = m.fit(x, y, epochs=2, batch_size=10, verbose=0, callbacks=[cb])
    assert cb.stopped_batch is None and len(hist.history["loss"]) == 2


# ----------------------------------------------------------------------------- to_categorical


def test_to_categorical_keras_semantics():
    out = to_categorical([0, 2, 1])
    np.testing.assert_array_equal(out, np.eye(3)[[0, 2, 1]])
    assert out.dtype == np.float32
    assert to_categorical(np.array([[1], [0]]), num_classes=4).shape == (2, 4)
    assert to_categorical(np.zeros((2, 3), int), 5).shape == (2, 3, 5)
    assert to_categorical(np.array([1.0, 2.0]), dtype="int64").dtype == np.int64
    assert to_categorical(Tensor(np.array([1, 0]))).tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert gpucnn.utils.to_categorical is to_categorical
    with pytest.raises(ValueError, match="to_categorical: labels must be >= 0, got -1"):
        to_categorical([0, -1])
    with pytest.raises(ValueError, match="non-integer values"):
        to_categorical([0.5, 1.0])
    with pytest.raises(ValueError, match="labels must be < num_classes=2, got 2"):
        to_categorical([0, 2], num_classes=2)
    with pytest.raises(TypeError, match="encode string labels first"):
        to_categorical(["cat", "dog"])
    with pytest.raises(ValueError, match="num_classes"):
        to_categorical([0, 1], num_classes=0)
