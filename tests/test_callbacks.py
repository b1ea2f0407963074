"""Callbacks: History, EarlyStopping, ModelCheckpoint, LearningRateScheduler, ReduceLROnPlateau,
CSVLogger, hook order."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import gpucnn
from gpucnn import callbacks as C
from gpucnn import layers as L
from gpucnn import optim
from gpucnn.model import Sequential
from gpucnn.saving import load_model


def _data(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return x, y


def _model(lr: float = 0.05) -> Sequential:
    m = Sequential([L.Dense(8, activation="relu", input_shape=(6,)), L.Dense(2)])
    m.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"], lr=lr)
    return m


class FakeModel:
    """Stands in for a model in scripted callback tests."""

    def __init__(self) -> None:
        self.stop_training = False
        self.w = 0
        self.optimizer = optim.SGD([gpucnn.Parameter(np.zeros(1, np.float32))], lr=1.0)

    def get_weights(self) -> list:
        return [self.w]

    def set_weights(self, ws: list) -> None:
        self.w = ws[0]

    def save_weights(self, path: str) -> None:
        self.saved_to = path


def _drive(cb: C.Callback, values: list[float], key: str = "val_loss") -> FakeModel:
    m = FakeModel()
    cb.set_model(m)
    cb.on_train_begin({})
    for epoch, v in enumerate(values):
        m.w = epoch
        logs = {key: v}
        cb.on_epoch_end(epoch, logs)
        if m.stop_training:
            break
    cb.on_train_end({})
    return m


def test_history_records_every_epoch() -> None:
    x, y = _data()
    h = _model().fit(x, y, epochs=3, verbose=0, validation_data=(x, y))
    assert h.epoch == [0, 1, 2]
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 for v in h.history.values())


def test_early_stopping_patience_semantics() -> None:
    es = C.EarlyStopping(patience=2)
    m = _drive(es, [1.0, 0.9, 0.95, 0.97, 0.5])
    assert m.stop_training and es.stopped_epoch == 3  # 2 epochs without improvement
    es0 = C.EarlyStopping(patience=0)
    _drive(es0, [1.0, 0.9, 0.95])
    assert es0.stopped_epoch == 2
    # min_delta: 0.89 is not better than 0.9 by more than 0.05
    es_d = C.EarlyStopping(patience=1, min_delta=0.05)
    _drive(es_d, [1.0, 0.9, 0.89])
    assert es_d.stopped_epoch == 2


def test_early_stopping_max_mode_and_restore() -> None:
    es = C.EarlyStopping(monitor="val_accuracy", patience=1, restore_best_weights=True)
    assert es.mode == "max"
    m = _drive(es, [0.5, 0.8, 0.7, 0.6], key="val_accuracy")
    assert es.stopped_epoch == 2 and m.w == 1  # weights of the best epoch restored


def test_early_stopping_in_fit() -> None:
    x, y = _data()
    m = _model(lr=0.0)  # nothing improves
    es = C.EarlyStopping(monitor="loss", patience=2)
    h = m.fit(x, y, epochs=20, verbose=0, shuffle=False, callbacks=[es])
    assert len(h.epoch) == 3 and es.stopped_epoch == 2


def test_early_stopping_restores_model_weights_in_fit() -> None:
    x, y = _data()
    m = _model(lr=0.2)
    snapshots = []
    rec = C.LambdaCallback(on_epoch_end=lambda e, logs: snapshots.append(m.get_weights()))
    es = C.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    xv, yv = _data(32, seed=5)
    yv = 1 - yv  # validation gets worse as training improves
    h = m.fit(x, y, epochs=10, verbose=0, validation_data=(xv, yv), callbacks=[rec, es])
    best = int(np.argmin(h.history["val_loss"]))
    for a, b in zip(m.get_weights(), snapshots[best]):
        np.testing.assert_array_equal(a, b)


def test_missing_monitor_warns() -> None:
    es = C.EarlyStopping(monitor="val_nope")
    with pytest.warns(UserWarning, match="val_nope"):
        _drive(es, [1.0])


def test_model_checkpoint_every_epoch_and_best_only(tmp_path) -> None:
    x, y = _data()
    m = _model()
    ck = C.ModelCheckpoint(str(tmp_path / "m-{epoch:02d}-{val_loss:.3f}.npz"))
    h = m.fit(x, y, epochs=2, verbose=0, validation_data=(x, y), callbacks=[ck])
    assert len(ck.saved) == 2
    assert ck.saved[0].endswith(f"m-01-{h.history['val_loss'][0]:.3f}.npz")
    m2 = load_model(ck.saved[1])
    np.testing.assert_allclose(m2.predict(x), m.predict(x), rtol=1e-6)

    best = C.ModelCheckpoint(str(tmp_path / "best.npz"), save_best_only=True,
                             save_weights_only=True)
    _drive(best, [1.0, 2.0, 0.5])
    assert len(best.saved) == 2 and best.best == 0.5


def test_model_checkpoint_bad_key(tmp_path) -> None:
    x, y = _data()
    ck = C.ModelCheckpoint(str(tmp_path / "m-{val_acc:.2f}.npz"))
    with pytest.raises(KeyError, match="val_acc"):
        _model().fit(x, y, epochs=1, verbose=0, callbacks=[ck])


def test_learning_rate_scheduler_function_forms() -> None:
    x, y = _data()
    m = _model()
    seen = []
    rec = C.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(m.optimizer.lr))
    lrs = C.LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))
    h = m.fit(x, y, epochs=3, verbose=0, callbacks=[lrs, rec])
    assert seen == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert h.history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    m2 = _model(lr=0.2)
    m2.fit(x, y, epochs=2, verbose=0, callbacks=[C.LearningRateScheduler(lambda e, lr: lr / 2)])
    assert m2.optimizer.lr == pytest.approx(0.05)


def test_learning_rate_scheduler_with_optim_schedule() -> None:
    x, y = _data()
    m = _model(lr=1.0)
    sched = optim.StepLR(m.optimizer, step_size=1, gamma=0.5)
    h = m.fit(x, y, epochs=3, verbose=0, callbacks=[C.LearningRateScheduler(sched)])
    assert h.history["lr"] == pytest.approx([1.0, 0.5, 0.25])
    assert m.optimizer.lr == pytest.approx(0.125)


def test_reduce_lr_on_plateau() -> None:
    cb = C.ReduceLROnPlateau(factor=0.5, patience=1, min_lr=0.2)
    m = _drive(cb, [1.0, 1.0, 1.0, 1.0, 1.0])
    assert m.optimizer.lr == pytest.approx(0.2)  # 1 -> 0.5 -> 0.25 -> floor 0.2
    cb2 = C.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1)
    m2 = _drive(cb2, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert m2.optimizer.lr == pytest.approx(0.5 * 0.5)


def test_csv_logger(tmp_path) -> None:
    x, y = _data()
    path = tmp_path / "log.csv"
    _model().fit(x, y, epochs=2, verbose=0, callbacks=[C.CSVLogger(path)])
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["epoch", "accuracy", "loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1"]
    _model().fit(x, y, epochs=1, verbose=0, callbacks=[C.CSVLogger(path, append=True)])
    rows = list(csv.reader(open(path)))
    assert len(rows) == 4 and rows[0][0] == "epoch" and rows[3][0] == "0"
    _model().fit(x, y, epochs=1, verbose=0, callbacks=[C.CSVLogger(path)])
    assert len(list(csv.reader(open(path)))) == 2  # overwritten


def test_hook_order_and_batch_counts() -> None:
    x, y = _data(50)
    events: list[str] = []

    class Rec(C.Callback):
        def on_train_begin(self, logs=None):
            events.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            events.append(f"epoch_begin{epoch}")

        def on_batch_end(self, batch, logs=None):
            events.append("batch")

        def on_epoch_end(self, epoch, logs=None):
            events.append(f"epoch_end{epoch}")

        def on_train_end(self, logs=None):
            events.append("train_end")

    _model().fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[Rec()])
    assert events == (["train_begin", "epoch_begin0"] + ["batch"] * 4 + ["epoch_end0",
                      "epoch_begin1"] + ["batch"] * 4 + ["epoch_end1", "train_end"])


def test_stop_training_from_batch_hook() -> None:
    x, y = _data(64)
    m = _model()
    stopper = C.LambdaCallback(on_batch_end=lambda b, logs: setattr(m, "stop_training", True))
    h = m.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[stopper])
    assert h.epoch == [0]


def test_bad_callbacks_rejected() -> None:
    x, y = _data()
    with pytest.raises(TypeError, match="Callback instances"):
        _model().fit(x, y, verbose=0, callbacks=[lambda: None])
    with pytest.raises(ValueError, match="mode"):
        C.EarlyStopping(mode="up")


def test_learning_rate_scheduler_per_batch_steps_every_batch() -> None:
    gpucnn.manual_seed(0)
    model = Sequential([L.Dense(3, input_shape=(4,))])
    opt = optim.SGD(model.parameters(), lr=1.0)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
    y = np.arange(40) % 3
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    hist = model.fit(x, y, batch_size=10, epochs=2, verbose=0, shuffle=False,
                     callbacks=[C.LearningRateScheduler(sched, per_batch=True)])
    assert opt.lr == pytest.approx(0.5**8)  # 4 batches x 2 epochs
    assert hist.history["lr"] == pytest.approx([0.5**4, 0.5**8])
    with pytest.raises(ValueError, match="per_batch=True needs a gpucnn.optim schedule"):
        C.LearningRateScheduler(lambda epoch: 0.1, per_batch=True)


@pytest.mark.numpy_internal
def test_batch_hooks_that_do_not_read_logs_cost_no_host_read(monkeypatch) -> None:
    """Batch logs are read from the device only when a callback reads a value: a per-batch
    schedule, key lookups and added keys cost nothing; fit reads once per epoch here."""
    import gpucnn.train.accumulate as acc_mod

    reads: list = []
    real = acc_mod.host_read
    monkeypatch.setattr(acc_mod, "host_read", lambda v: reads.append(len(v)) or real(v))
    x, y = _data(40)
    model = Sequential([L.Dense(2, input_shape=(6,))])
    opt = optim.SGD(model.parameters(), lr=1.0)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)

    class Peek(C.Callback):
        def on_train_batch_end(self, batch, logs=None):
            assert "loss" in logs and "batch_loss" in logs and len(logs) == 4
            logs["note"] = batch  # callbacks may add keys
            assert logs["note"] == batch and logs.get("size") in (16, 8)

    hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0, update_freq="epoch",
                     callbacks=[C.LearningRateScheduler(sched, per_batch=True), Peek()])
    assert reads == [3, 3]  # [loss, accuracy, batch loss] once per epoch, at its last step
    assert opt.lr == pytest.approx(0.5**6) and len(hist.history["loss"]) == 2
