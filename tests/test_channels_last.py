"""Channels-last input: data_format on the image layers, the global default, the model's
one transpose at input and output, parity with channels-first, and the layout errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpucnn
from gpucnn import config
from gpucnn import layers as L
from gpucnn.model import Sequential
from gpucnn.module import deserialize, serialize
from gpucnn.tensor import Tensor

CL, CF = "channels_last", "channels_first"


@pytest.fixture(autouse=True)
def _restore_format():
    before = config.image_data_format()
    yield
    config.set_image_data_format(before)


def _t(a: np.ndarray, grad: bool = False) -> Tensor:
    return Tensor(np.ascontiguousarray(a, dtype=np.float32), backend=gpucnn.backend.current(),
                  requires_grad=grad)


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _copy_weights(dst: Sequential, src: Sequential) -> None:
    dst.load_state_dict(src.state_dict())


# ----------------------------------------------------------------------------- the default


def test_global_default_and_env(monkeypatch) -> None:
    assert config.image_data_format() == CF
    assert L.Conv2D(2, 3).data_format == CF
    config.set_image_data_format("channels_last")
    assert config.image_data_format() == CL
    assert L.Conv2D(2, 3).data_format == CL  # None: the default at construction
    assert L.Conv2D(2, 3, data_format=CF).data_format == CF
    with pytest.raises(ValueError, match=r"set_image_data_format.*'channels_first'.*'NHWC'"):
        config.set_image_data_format("NHWC")
    monkeypatch.setenv("GPUCNN_IMAGE_DATA_FORMAT", "channels_last")
    assert config._from_env() == CL
    monkeypatch.setenv("GPUCNN_IMAGE_DATA_FORMAT", "nhwc")
    with pytest.raises(ValueError, match="GPUCNN_IMAGE_DATA_FORMAT"):
        config._from_env()
    monkeypatch.delenv("GPUCNN_IMAGE_DATA_FORMAT")
    assert config._from_env() == CF


@pytest.mark.parametrize("make", [
    lambda f: L.Conv2D(2, 3, data_format=f), lambda f: L.ZeroPadding2D(1, data_format=f),
    lambda f: L.MaxPooling2D(data_format=f), lambda f: L.AveragePooling2D(data_format=f),
    lambda f: L.GlobalAveragePooling2D(data_format=f),
    lambda f: L.GlobalMaxPooling2D(data_format=f),
    lambda f: L.AdaptiveAveragePooling2D(2, data_format=f),
    lambda f: L.AdaptiveMaxPooling2D(2, data_format=f),
    lambda f: L.BatchNormalization(data_format=f), lambda f: L.Flatten(data_format=f),
    lambda f: L.Reshape((4,), data_format=f), lambda f: L.SpatialDropout2D(0.1, data_format=f),
    lambda f: L.PReLU(data_format=f), lambda f: L.Softmax(data_format=f),
    lambda f: L.Concatenate(data_format=f), lambda f: L.ResidualBlock(4, data_format=f),
    lambda f: L.InceptionBlock(1, 1, 1, 1, 1, 1, data_format=f),
])
def test_every_image_layer_takes_data_format_and_round_trips(make) -> None:
    layer = make(CL)
    assert layer.data_format == CL
    clone = deserialize(serialize(layer))
    assert type(clone) is type(layer) and clone.data_format == CL
    assert make(None).data_format == CF
    with pytest.raises(ValueError, match=rf"{type(layer).__name__}: data_format must be"):
        make("NCHW")


# ----------------------------------------------------------------------------- models


def _pair(final: str = "gap") -> tuple[Sequential, Sequential]:
    """The same architecture channels-last (input (7, 7, 2)) and channels-first."""
    def build(f: str, shape: tuple) -> Sequential:
        head = ([L.GlobalAveragePooling2D(data_format=f)] if final == "gap"
                else [L.Flatten(data_format=f)])
        return Sequential([
            L.Conv2D(4, 3, padding="same", activation="relu", input_shape=shape, data_format=f),
            L.BatchNormalization(data_format=f),
            L.MaxPooling2D(2, padding="same", data_format=f),
            L.Conv2D(3, 2, data_format=f),
            *head,
            L.Dense(5),
        ])
    cl, cf = build(CL, (7, 7, 2)), build(CF, (2, 7, 7))
    _copy_weights(cl, cf)
    return cl, cf


@pytest.mark.parametrize("train", [False, True])
def test_channels_last_model_matches_channels_first_outputs_and_gradients(train: bool) -> None:
    cl, cf = _pair("gap")
    cl.train(train)
    cf.train(train)
    x = _rand(3, 2, 7, 7)
    xf, xl = _t(x, True), _t(x.transpose(0, 2, 3, 1), True)
    yf, yl = cf(xf), cl(xl)
    np.testing.assert_allclose(yl.numpy(), yf.numpy(), rtol=1e-5, atol=1e-5)
    (yf * yf).sum().backward()
    (yl * yl).sum().backward()
    np.testing.assert_allclose(xl.grad.numpy(), xf.grad.numpy().transpose(0, 2, 3, 1),
                               rtol=1e-4, atol=1e-5)
    for (name, pf), (_, pl) in zip(cf.named_parameters(), cl.named_parameters()):
        np.testing.assert_allclose(pl.grad.numpy(), pf.grad.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    if train:
        np.testing.assert_allclose(cl[1].running_var.numpy(), cf[1].running_var.numpy(),
                                   rtol=1e-5)


def test_flatten_channels_last_is_nhwc_order_and_matches_permuted_dense() -> None:
    cl, cf = _pair("flatten")
    # (H, W, C) flattening: the Dense weight's columns of the channels-first model, permuted
    oc, oh, ow = cf[3].output_shape(cf[2].output_shape(cf[1].output_shape(
        cf[0].output_shape((2, 7, 7)))))
    w = cf[5].weight.numpy().reshape(5, oc, oh, ow).transpose(0, 2, 3, 1).reshape(5, -1)
    cl[5].weight.data[...] = gpucnn.backend.to_backend(w, cl[5].weight.backend)
    x = _rand(2, 2, 7, 7, seed=1)
    cl.eval()
    cf.eval()
    np.testing.assert_allclose(cl(_t(x.transpose(0, 2, 3, 1))).numpy(), cf(_t(x)).numpy(),
                               rtol=1e-5, atol=1e-5)
    # standalone: exactly numpy's reshape of the NHWC array
    a = _rand(2, 3, 4, 5)
    np.testing.assert_array_equal(L.Flatten(data_format=CL)(_t(a)).numpy(), a.reshape(2, -1))


def test_shapes_are_reported_in_the_models_layout() -> None:
    cl, _ = _pair("flatten")
    assert cl.data_format == CL and cl.input_shape == (7, 7, 2)
    assert cl.output_shape((7, 7, 2)) == (5,)
    conv_only = Sequential([L.Conv2D(4, 3, input_shape=(9, 8, 2), data_format=CL),
                            L.MaxPooling2D(2, data_format=CL)])
    assert conv_only.output_shape((9, 8, 2)) == (3, 3, 4)
    text = conv_only.summary(print_fn=None)
    assert "input (None, 9, 8, 2)" in text
    assert "(None, 7, 6, 4)" in text and "(None, 3, 3, 4)" in text
    y = conv_only(_t(_rand(2, 9, 8, 2)))  # a 4-D output comes back NHWC
    assert y.shape == (2, 3, 3, 4)
    ref = Sequential([L.Conv2D(4, 3, input_shape=(2, 9, 8)), L.MaxPooling2D(2)])
    _copy_weights(ref, conv_only)
    np.testing.assert_allclose(
        y.numpy(), ref(_t(_rand(2, 9, 8, 2).transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1),
        rtol=1e-5, atol=1e-6)


def test_lazy_build_nested_models_and_the_global_default() -> None:
    config.set_image_data_format(CL)
    inner = Sequential([L.Conv2D(3, 3, padding="same"), L.BatchNormalization()])
    m = Sequential([inner, L.MaxPooling2D(), L.Flatten(), L.Dense(2)])  # no input_shape: lazy
    assert m.data_format == CL and not m.built
    y = m(_t(_rand(2, 6, 6, 4)))
    assert y.shape == (2, 2) and inner[0].weight.shape == (3, 4, 3, 3)
    assert m.input_shape == (6, 6, 4) and m.output_shape((6, 6, 4)) == (2,)
    m.summary(print_fn=None)


def test_fit_evaluate_predict_on_nhwc_arrays() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 6, 6, 1)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    m = Sequential([L.Conv2D(4, 3, activation="relu", input_shape=(6, 6, 1), data_format=CL),
                    L.Flatten(data_format=CL), L.Dense(2)])
    m.compile("adam", "sparse_categorical_crossentropy", ["accuracy"], lr=0.01)
    h = m.fit(x, y, batch_size=8, epochs=4, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert m.predict(x).shape == (24, 2)
    assert len(m.evaluate(x, y)) == 2


def test_checkpoint_round_trips_data_format(tmp_path) -> None:
    cl, _ = _pair("flatten")
    cl.compile("sgd", "sparse_categorical_crossentropy")
    path = tmp_path / "cl.npz"
    cl.save(path)
    back = gpucnn.load_model(path)
    assert back.data_format == CL and back.input_shape == (7, 7, 2)
    assert [getattr(m, "data_format", None) for m in back] == \
        [getattr(m, "data_format", None) for m in cl]
    x = _t(_rand(2, 7, 7, 2))
    cl.eval()
    back.eval()
    np.testing.assert_allclose(back(x).numpy(), cl(x).numpy(), rtol=1e-6)
    # unbuilt (lazy) model: the recorded input shape is in the model's layout
    lazy = Sequential([L.Conv2D(2, 3, data_format=CL), L.Flatten(data_format=CL), L.Dense(2)])
    lazy(_t(_rand(1, 5, 5, 3)))
    lazy.save(tmp_path / "lazy.npz")
    assert gpucnn.load_model(tmp_path / "lazy.npz").input_shape == (5, 5, 3)


def test_mixing_formats_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'max_pooling2d\w*' \(MaxPooling2D\) has data_format="
                                         r"'channels_first' but the model is 'channels_last'"):
        Sequential([L.Conv2D(2, 3, data_format=CL), L.MaxPooling2D()])
    m = Sequential([L.Conv2D(2, 3, input_shape=(2, 5, 5))])
    with pytest.raises(ValueError, match="cannot mix formats"):
        m.add(L.Flatten(data_format=CL))
    assert len(m) == 1 and m.data_format == CF  # the refused layer was not added


def test_format_neutral_first_layer_then_channels_last() -> None:
    m = Sequential([L.Dropout(0.1, input_shape=(6, 6, 3)), L.Conv2D(2, 3, data_format=CL)])
    assert m[1].weight.shape == (2, 3, 3, 3)
    assert m.output_shape((6, 6, 3)) == (4, 4, 2)


# ----------------------------------------------------------------------------- layers alone


def test_standalone_channels_last_layers_take_nhwc_and_pass_gradients() -> None:
    a = _rand(2, 5, 6, 3)
    conv = L.Conv2D(4, 3, padding="same", data_format=CL)
    x = _t(a, True)
    y = conv(x)
    assert y.shape == (2, 5, 6, 4) and conv.weight.shape == (4, 3, 3, 3)
    ref = L.Conv2D(4, 3, padding="same")
    ref.build((3, 5, 6))
    ref.load_state_dict(conv.state_dict())
    np.testing.assert_allclose(y.numpy(), ref(_t(a.transpose(0, 3, 1, 2))).numpy()
                               .transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)
    y.sum().backward()
    assert x.grad.shape == a.shape
    sm = L.Softmax(data_format=CL)(_t(a)).numpy()  # axis -1: the channels
    np.testing.assert_allclose(sm.sum(axis=-1), 1.0, rtol=1e-5)
    cat = L.Concatenate(axis=-1, data_format=CL)([_t(a), _t(a[..., :1])])
    assert cat.shape == (2, 5, 6, 4)
    r = L.Reshape((3, 10, 3), data_format=CL)(_t(a))
    np.testing.assert_array_equal(r.numpy(), a.reshape(2, 3, 10, 3))
    gap = L.GlobalAveragePooling2D(data_format=CL)(_t(a)).numpy()
    np.testing.assert_allclose(gap, a.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_batch_norm_axis_follows_the_format() -> None:
    assert L.BatchNormalization().axis == 1
    assert L.BatchNormalization(data_format=CL).axis == -1
    assert L.BatchNormalization(axis=3, data_format=CL).axis == -1
    with pytest.raises(ValueError, match=r"axis=-1 is the channel axis of channels_last"):
        L.BatchNormalization(axis=-1)
    with pytest.raises(ValueError, match=r"one of \(-1, 3\)"):
        L.BatchNormalization(axis=2, data_format=CL)
    bn = L.BatchNormalization(data_format=CL)
    a = _rand(4, 3, 3, 2) * 3 + 1
    y = bn(_t(a)).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    assert bn.running_mean.shape == (2,)


# ----------------------------------------------------------------------------- layout errors


def test_nhwc_input_to_an_nchw_model_says_so() -> None:
    with pytest.raises(ValueError, match=r"looks channels-last \(N, H, W, C\); pass data_"
                                         r"format='channels_last'.*x\.transpose\(0, 3, 1, 2\)"):
        Sequential([L.Conv2D(32, 3, activation="relu", input_shape=(100, 100, 1))])
    m = Sequential([L.Conv2D(4, 3, input_shape=(3, 8, 8)), L.Flatten(), L.Dense(2)])
    with pytest.raises(ValueError, match=r"looks channels-last.*x\.transpose\(0, 3, 1, 2\)"):
        m.predict(_rand(2, 8, 8, 3))
    lazy = Sequential([L.Conv2D(4, 3), L.Flatten(), L.Dense(2)])
    lazy(_t(_rand(1, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"looks channels-last"):
        lazy(_t(_rand(1, 8, 8, 3)))
    lazy_cl = Sequential([L.Conv2D(4, 3, data_format=CL), L.Flatten(data_format=CL),
                          L.Dense(2)])
    lazy_cl(_t(_rand(1, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"looks channels-first"):
        lazy_cl(_t(_rand(1, 3, 8, 8)))
    cl = Sequential([L.Conv2D(4, 3, input_shape=(8, 8, 3), data_format=CL)])
    with pytest.raises(ValueError, match=r"looks channels-first.*x\.transpose\(0, 2, 3, 1\)"):
        cl.predict(_rand(2, 3, 8, 8))


def test_missing_batch_dimension_says_so() -> None:
    m = Sequential([L.Conv2D(4, 3, input_shape=(8, 8, 1), data_format=CL),
                    L.Flatten(data_format=CL), L.Dense(2)])
    with pytest.raises(ValueError, match=r"batch dimension missing.*x\[None\]"):
        m.predict(_rand(8, 8, 1))
    with pytest.raises(ValueError, match=r"batch dimension missing"):
        L.Conv2D(2, 3)(_t(_rand(3, 8, 8)))


def test_torch_argument_order_is_detected() -> None:
    with pytest.warns(UserWarning, match=r"looks like PyTorch's Conv2d\(in_channels, "
                                         r"out_channels, kernel_size\).*Conv2D\(32, 3\)"):
        conv = L.Conv2D(1, 32, 3)
    with pytest.raises(ValueError, match=r"write Conv2D\(32, 3\)"):
        Sequential([conv]).build((1, 28, 28))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L.Conv2D(32, 3)  # Keras order: silent
        L.Conv2D(3, 7, 2)
