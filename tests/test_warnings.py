"""Silent training mistakes get a warning or a clear error: NaN/Inf in the inputs or the
loss (warned once per fit), unscaled uint8 images, string or non-integer labels, a model
with nothing to train. Both backends."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpucnn
from gpucnn import Sequential
from gpucnn import callbacks as C
from gpucnn import layers as L
from gpucnn.train.checks import TrainingWarning


def _data(n=40, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, features)).astype(np.float32), rng.integers(0, classes, n)


def _model(classes=3, features=6):
    gpucnn.manual_seed(0)
    return Sequential([L.Dense(8, activation="relu", input_shape=(features,)),
                       L.Dense(classes)])


def _training(record, category=TrainingWarning):
    return [w for w in record if issubclass(w.category, category)]


def test_clean_data_gives_no_warning():
    x, y = _data()
    m = _model()
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)
        m.fit(x, y, epochs=2, batch_size=10, verbose=0, validation_data=(x, y))
        m.evaluate(x, y)


def test_nan_inputs_warn_once_per_fit_and_terminate_on_nan_stops():
    x, y = _data()
    x[3, 2] = np.nan
    x[7, 0] = np.inf
    m = _model()
    m.compile("sgd", "sparse_categorical_crossentropy")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        m.fit(x, y, epochs=3, batch_size=10, verbose=0)
    msgs = [str(w.message) for w in _training(rec)]
    assert sum("x contains 2 NaN or Inf value(s)" in s for s in msgs) == 1
    assert sum("the loss is nan" in s for s in msgs) == 1  # once, though 3 epochs are NaN
    assert all(w.filename == __file__ for w in _training(rec))  # points at the fit call
    cb = C.TerminateOnNaN()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        hist = m.fit(x, y, epochs=3, batch_size=10, verbose=0, callbacks=[cb])
    assert cb.stopped_epoch == 0 and len(hist.history["loss"]) == 1
    assert len(_training(rec)) == 2  # the inputs, and the loss (suggesting TerminateOnNaN)


def test_nan_targets_and_validation_data_warn():
    x, y = _data()
    t = np.random.default_rng(1).standard_normal((40, 3)).astype(np.float32)
    t[5, 1] = np.nan
    m = _model()
    m.compile("sgd", "mse")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        m.fit(x, t, epochs=1, verbose=0)
    msgs = [str(w.message) for w in _training(rec)]
    assert any(s.startswith("fit: y contains 1 NaN or Inf") for s in msgs)
    xv = x.copy()
    xv[0, 0] = np.inf
    m2 = _model()
    m2.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.warns(TrainingWarning, match=r"fit\(validation_data\): x contains 1 NaN"):
        m2.fit(x, y, epochs=1, verbose=0, validation_data=(xv, y))


def test_diverging_loss_warns_once():
    x, y = _data()
    x *= 1e30  # finite inputs, overflowing activations
    m = _model()
    m.compile("sgd", "sparse_categorical_crossentropy", lr=1e10)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        m.fit(x, y, epochs=2, batch_size=10, verbose=0)
    msgs = [str(w.message) for w in _training(rec)]
    assert len(msgs) == 1 and "fit: the loss is" in msgs[0] and "learning rate" in msgs[0]


def test_uint8_images_in_0_255_warn_to_scale():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (20, 1, 6, 6)).astype(np.uint8)
    y = rng.integers(0, 2, 20)
    gpucnn.manual_seed(0)
    m = Sequential([L.Conv2D(2, 3, input_shape=(1, 6, 6)), L.Flatten(), L.Dense(2)])
    m.compile("adam", "sparse_categorical_crossentropy")
    with pytest.warns(TrainingWarning, match=r"x is uint8 with values up to 255.*x / 255\.0"):
        m.fit(x, y, epochs=1, batch_size=10, verbose=0)
    with pytest.warns(TrainingWarning, match=r"evaluate: x is uint8"):
        m.evaluate(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)
        m.fit((x > 127).astype(np.uint8), y, epochs=1, verbose=0)  # 0/1 masks: fine
        m.fit(x.astype(np.float32) / 255.0, y, epochs=1, verbose=0)


def test_string_and_non_integer_labels_are_clear_errors():
    x, _ = _data(6)
    m = _model()
    m.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(TypeError, match=r"fit: y holds strings .*np\.unique\(y, return_inverse"):
        m.fit(x, np.array(["cat", "dog", "cat", "fish", "dog", "cat"]), verbose=0)
    with pytest.raises(TypeError, match="y holds objects"):
        m.fit(x, np.array([1, "a", None, 2, 3, 4], dtype=object), verbose=0)
    with pytest.raises(ValueError, match="labels must be integer class ids, got non-integer"):
        m.fit(x, np.array([0.0, 1.5, 2.0, 1.0, 0.0, 0.2]), verbose=0)
    m.compile("adam", "categorical_crossentropy")
    with pytest.raises(ValueError, match="use 'sparse_categorical_crossentropy' for integer"):
        m.fit(x, np.array([0, 1, 2, 1, 0, 2]), verbose=0)
    with pytest.raises(TypeError, match="evaluate: y holds strings"):
        m.evaluate(x, np.array(list("abcdef")))


def test_model_without_trainable_parameters_is_a_clear_error():
    x, y = _data(8)
    m = _model()
    for layer in m.layers:
        layer.trainable = False
    m.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"fit: the model .* has no trainable parameters "
                                         r"\(all its weights are frozen"):
        m.fit(x, y, verbose=0)
    bare = Sequential([L.Flatten(input_shape=(6,))])
    bare.compile("adam", "mse")  # compiling is fine; fit says why it cannot train
    with pytest.raises(ValueError, match=r"no trainable parameters \(it has no weights\)"):
        bare.fit(x, x, verbose=0)
    lazy = Sequential([L.Flatten()])  # built by fit, then the same error
    lazy.compile("adam", "mse")
    with pytest.raises(ValueError, match="no trainable parameters"):
        lazy.fit([(x, x)], verbose=0)
