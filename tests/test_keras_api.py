"""The Keras compatibility namespace (gpucnn.keras), Input / InputLayer, get_layer,
predict_on_batch, summary(line_length=) and the Keras parameter counts."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
from gpucnn import config
from gpucnn import layers as L
from gpucnn.model import Model, Sequential
from gpucnn.module import deserialize, serialize
from gpucnn.tensor import Tensor


@pytest.fixture(autouse=True)
def _restore_format():
    before = config.image_data_format()
    yield
    config.set_image_data_format(before)


def _t(a: np.ndarray) -> Tensor:
    return Tensor(np.ascontiguousarray(a, dtype=np.float32), backend=gpucnn.backend.current())


# ----------------------------------------------------------------------------- the tutorial


def test_keras_tutorial_runs_with_only_its_imports_changed() -> None:
    # --- the tutorial, imports changed from keras.* to gpucnn.keras.*
    from gpucnn.keras.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
    from gpucnn.keras.models import Sequential

    rng = np.random.default_rng(0)
    x_train = rng.random((4, 100, 100, 1), dtype=np.float32)
    labels = rng.integers(0, 3, size=4)
    y_train = np.eye(3, dtype=np.float32)[labels]  # (to_categorical: see the test below)

    model = Sequential()
    model.add(Conv2D(32, (3, 3), activation="relu", input_shape=(100, 100, 1)))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Conv2D(16, (3, 3), activation="relu"))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Flatten())
    model.add(Dense(32, activation="relu"))
    model.add(Dropout(0.5))
    model.add(Dense(3, activation="softmax"))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=2, epochs=1, verbose=0)
    loss, acc = model.evaluate(x_train, y_train, verbose=0)
    probs = model.predict(x_train[:2])
    # --- end of the tutorial
    assert np.isfinite(history.history["loss"][0]) and np.isfinite(loss) and 0 <= acc <= 1
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.input_shape == (100, 100, 1) and model.data_format == "channels_last"
    text = model.summary(print_fn=None)
    assert "(None, 98, 98, 32)" in text and "(None, 23, 23, 16)" in text
    assert "(None, 8464)" in text


def test_to_categorical_is_reexported() -> None:
    pytest.importorskip("gpucnn.utils")
    from gpucnn.keras.utils import to_categorical

    np.testing.assert_array_equal(to_categorical([0, 2], 3), np.eye(3)[[0, 2]])


def test_keras_layers_are_gpucnn_layers_with_a_channels_last_default() -> None:
    from gpucnn import keras

    conv = keras.layers.Conv2D(4, 3)
    assert type(conv) is L.Conv2D and conv.data_format == "channels_last"
    assert isinstance(conv, keras.layers.Conv2D) and issubclass(L.Conv2D, keras.layers.Conv2D)
    assert keras.layers.Conv2D(4, 3, data_format="channels_first").data_format == \
        "channels_first"
    assert keras.layers.Concatenate().axis == -1
    assert keras.layers.BatchNormalization().axis == -1
    assert keras.layers.MaxPool2D is keras.layers.MaxPooling2D
    assert keras.layers.Dense is L.Dense and keras.layers.Dropout is L.Dropout
    assert serialize(conv)["class_name"] == "Conv2D"
    assert deserialize(serialize(conv)).data_format == "channels_last"
    sig = __import__("inspect").signature(keras.layers.Conv2D)
    assert sig.parameters["data_format"].default == "channels_last"
    assert keras.models.Sequential is Sequential and keras.Input is L.Input
    assert keras.optimizers.Adam is gpucnn.optim.Adam
    assert keras.callbacks.EarlyStopping is gpucnn.callbacks.EarlyStopping
    assert "categorical_crossentropy" in keras.losses.LOSSES
    assert "Adam" in dir(keras.optimizers)
    with pytest.raises(AttributeError, match=r"gpucnn.keras.optimizers has no 'Adamm'"):
        keras.optimizers.Adamm  # noqa: B018


# ----------------------------------------------------------------------------- Input


def test_input_sets_the_input_shape_and_is_not_a_layer(tmp_path) -> None:
    from gpucnn import keras

    m = keras.models.Sequential([keras.Input(shape=(12, 12, 1)),
                                 keras.layers.Conv2D(4, 3, activation="relu"),
                                 keras.layers.Flatten(), keras.layers.Dense(2)])
    assert m.built and m.input_shape == (12, 12, 1) and len(m.layers) == 3
    assert m.layers[0].weight.shape == (4, 1, 3, 3)
    assert "input_layer" not in m.summary(print_fn=None)
    clone = Sequential.from_config(m.get_config())
    assert clone.built and clone.input_shape == (12, 12, 1)
    m.compile("adam", "sparse_categorical_crossentropy")
    m.save(tmp_path / "m.npz")
    back = gpucnn.load_model(tmp_path / "m.npz")
    x = np.random.default_rng(0).random((2, 12, 12, 1), dtype=np.float32)
    np.testing.assert_allclose(back.predict(x), m.predict(x), rtol=1e-6)
    # channels-first, InputLayer's Keras 2 name, batch_shape
    cf = Sequential([L.InputLayer(input_shape=(3, 8, 8)), L.Conv2D(2, 3)])
    assert cf.output_shape((3, 8, 8)) == (2, 6, 6)
    assert L.InputLayer(batch_shape=(None, 5)).shape == (5,)
    assert L.Input(shape=(3, 4))(_t(np.ones((2, 3, 4)))).shape == (2, 3, 4)


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="InputLayer: shape is required"):
        L.Input()
    with pytest.raises(ValueError, match=r"positive ints.*\(0, 3\)"):
        L.Input(shape=(0, 3))
    with pytest.raises(ValueError, match="only one of shape, input_shape"):
        L.InputLayer(shape=(2,), input_shape=(2,))
    m = Sequential([L.Dense(2, input_shape=(3,))])
    with pytest.raises(ValueError, match="must be the first element"):
        m.add(L.Input(shape=(3,)))
    with pytest.raises(TypeError, match=r"no functional API.*Sequential\(\[Input"):
        Model(L.Input(shape=(3,)), L.Dense(2))
    with pytest.raises(TypeError, match="no functional API"):
        Model(inputs=1, outputs=2)
    assert Model("named").name == "named"


# ----------------------------------------------------------------------------- introspection


def _mlp() -> Sequential:
    return Sequential([L.Dense(4, input_shape=(3,), name="hidden"), L.ReLU(name="act"),
                       L.Dense(2, name="out")])


def test_get_layer() -> None:
    m = _mlp()
    assert m.get_layer("out") is m[2] and m.get_layer(index=0) is m[0]
    assert m.get_layer(index=-1) is m[2]
    with pytest.raises(ValueError, match=r"no such layer: 'nope'.*\['hidden', 'act', 'out'\]"):
        m.get_layer("nope")
    with pytest.raises(ValueError, match="index 3 but .* has only 3 layers"):
        m.get_layer(index=3)
    with pytest.raises(ValueError, match="only a layer name or a layer index"):
        m.get_layer("out", 1)
    with pytest.raises(ValueError, match="either a layer name or a layer index"):
        m.get_layer()
    with pytest.raises(TypeError, match="index must be an int"):
        m.get_layer(index="0")

    class Net(Model):
        def __init__(self) -> None:
            super().__init__()
            self.body = L.Dense(3, name="body")

        def forward(self, x: Tensor) -> Tensor:
            return self.body(x)

    assert Net().get_layer("body").units == 3


def test_predict_on_batch_matches_predict_and_keeps_the_mode() -> None:
    m = Sequential([L.Dense(4, input_shape=(3,)), L.Dropout(0.5), L.Dense(2)])
    x = np.random.default_rng(1).random((5, 3), dtype=np.float32)
    assert m.training
    out = m.predict_on_batch(x)
    assert isinstance(out, np.ndarray) and out.shape == (5, 2)
    np.testing.assert_allclose(out, m.predict(x), rtol=1e-6)
    np.testing.assert_allclose(m.predict_on_batch(x.tolist()), out, rtol=1e-6)
    assert m.training


# ----------------------------------------------------------------------------- summary


@pytest.mark.parametrize("width", [60, 92, 140])
def test_summary_line_length_scales_the_columns(width: int) -> None:
    m = Sequential([L.Conv2D(2, 3, input_shape=(1, 6, 6)), L.Flatten(), L.Dense(3)])
    text = m.summary(print_fn=None, line_length=width)
    rules = [ln for ln in text.splitlines() if set(ln) <= {"─", "═"}]
    assert rules and all(len(r) == width for r in rules)
    header = next(ln for ln in text.splitlines() if ln.startswith("Layer (type)"))
    assert header.index("Output Shape") == round(0.36 * width)
    with pytest.raises(ValueError, match="line_length"):
        m.summary(print_fn=None, line_length=0)


def test_summary_counts_moving_statistics_and_frozen_params_as_non_trainable() -> None:
    m = Sequential([L.Conv2D(4, 3, input_shape=(2, 6, 6)), L.BatchNormalization(),
                    L.Flatten(), L.Dense(3)])
    m[0].trainable = False
    text = m.summary(print_fn=None)
    conv, bn, dense = 4 * 2 * 9 + 4, 2 * 4, 3 * 64 + 3
    moving = 2 * 4
    assert f"Total params: {conv + bn + moving + dense:,}" in text
    assert f"Trainable params: {bn + dense:,}" in text and m.count_params(True) == bn + dense
    assert f"Non-trainable params: {conv + moving:,}" in text
    row = next(ln for ln in text.splitlines() if ln.startswith(m[1].name))
    assert row.split()[-2] == f"{bn + moving}"  # Keras shows 4 * C for batch norm
    assert m.count_params() == conv + bn + dense  # parameters only, as PyTorch
