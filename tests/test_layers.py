"""Layers and blocks: shapes, parameter counts, FLOPs, numerics, configs, errors, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import initializers as I
from gpucnn import layers as L
from gpucnn.model import Sequential
from gpucnn.module import deserialize, serialize
from gpucnn.tensor import Tensor


def _x(*shape: int, seed: int = 0) -> Tensor:
    data = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return Tensor(data, backend=gpucnn.backend.current())  # where the layers' weights are


def lenet() -> Sequential:
    return Sequential([
        L.Conv2D(8, 5, activation="relu", input_shape=(3, 32, 32)),
        L.MaxPooling2D(2),
        L.Conv2D(16, 5, activation="relu"),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(120, activation="relu"),
        L.Dense(84, activation="relu"),
        L.Dense(10),
    ])


# ----------------------------------------------------------------------------- LeNet / summary


def test_lenet_parameter_counts_and_shapes() -> None:
    m = lenet()
    assert m.built
    counts = [layer.count_params() for layer in m]
    assert counts == [608, 0, 3216, 0, 0, 48120, 10164, 850]
    shapes, s = [], (3, 32, 32)
    for layer in m:
        s = layer.output_shape(s)
        shapes.append(s)
    assert shapes == [(8, 28, 28), (8, 14, 14), (16, 10, 10), (16, 5, 5), (400,), (120,),
                      (84,), (10,)]
    y = m(_x(2, 3, 32, 32))
    assert y.shape == (2, 10)
    assert m[0].weight.shape == (8, 3, 5, 5) and m[5].weight.shape == (120, 400)


def test_lenet_summary_table() -> None:
    lines: list[str] = []
    text = lenet().summary(print_fn=lines.append)
    assert lines == [text]
    for n in ("608", "3,216", "48,120", "10,164", "850"):
        assert n in text
    assert "Total params: 62,958" in text
    assert "Trainable params: 62,958" in text
    assert "Non-trainable params: 0" in text
    assert "(None, 8, 28, 28)" in text and "(None, 10)" in text
    conv1 = 2 * 8 * 28 * 28 * 75 + 2 * 8 * 28 * 28
    assert f"{conv1:,}" in text


def test_summary_counts_bn_and_frozen_layers() -> None:
    m = Sequential([L.Conv2D(4, 3, input_shape=(2, 8, 8)), L.BatchNormalization(), L.Flatten(),
                    L.Dense(3)])
    m[3].trainable = False
    text = m.summary(print_fn=None)
    # as Keras: batch-norm moving mean/variance (8) are non-trainable params, like frozen ones
    total = (4 * 2 * 9 + 4) + 8 + 8 + (3 * 144 + 3)
    assert f"Total params: {total:,}" in text
    assert f"Non-trainable params: {3 * 144 + 3 + 8:,}" in text
    assert m.count_params() == total - 8  # count_params: parameters only (PyTorch's count)


def test_summary_needs_shape_for_lazy_model() -> None:
    m = Sequential([L.Dense(3)])
    with pytest.raises(ValueError, match="input_shape"):
        m.summary(print_fn=None)
    assert "Total params: 18" in m.summary(input_shape=(5,), print_fn=None)


# ----------------------------------------------------------------------------- Conv2D


@pytest.mark.parametrize(
    "kernel,strides,padding,dilation,hw",
    [
        (3, 1, "valid", 1, (9, 7)),
        (3, 1, "same", 1, (9, 7)),
        (4, 1, "same", 1, (8, 8)),
        (3, 2, "same", 1, (9, 8)),
        (5, 3, "same", 1, (11, 10)),
        (3, 2, 1, 1, (8, 9)),
        ((3, 1), (2, 1), "valid", 1, (9, 5)),
        (3, 1, "same", 2, (9, 9)),
    ],
)
def test_conv2d_output_shape_matches_forward(kernel, strides, padding, dilation, hw) -> None:
    layer = L.Conv2D(3, kernel, strides=strides, padding=padding, dilation_rate=dilation)
    y = layer(_x(2, 2, *hw))
    assert y.shape[1:] == layer.output_shape((2, *hw))
    if padding == "same":
        s = (strides, strides) if isinstance(strides, int) else strides
        assert y.shape[2:] == (math.ceil(hw[0] / s[0]), math.ceil(hw[1] / s[1]))


def test_conv2d_same_stride2_matches_explicit_padding() -> None:
    x = _x(1, 2, 8, 8)
    layer = L.Conv2D(3, 3, strides=2, padding="same", use_bias=False)
    y = layer(x)
    # TF "same", stride 2, k 3, H 8: total pad 1 -> 0 top, 1 bottom
    ref = F.conv2d(F.pad(x, (0, 1, 0, 1)), layer.weight, None, 2, 0)
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-6)


def test_conv2d_numerics_groups_and_bias() -> None:
    torch = pytest.importorskip("torch")
    x = _x(2, 4, 7, 7)
    layer = L.Conv2D(6, 3, strides=2, padding=1, groups=2, activation="relu",
                     bias_initializer="ones")
    y = layer(x).numpy()
    ref = torch.relu(torch.nn.functional.conv2d(
        torch.tensor(x.numpy()), torch.tensor(layer.weight.numpy()),
        torch.tensor(layer.bias.numpy()), stride=2, padding=1, groups=2)).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    assert layer.weight.shape == (6, 2, 3, 3)
    assert layer.count_params() == 6 * 2 * 9 + 6


def test_conv2d_flops() -> None:
    layer = L.Conv2D(8, 5, activation="relu")
    n_out = 8 * 28 * 28
    assert layer.flops((3, 32, 32)) == 2 * n_out * 75 + n_out + n_out
    assert L.Conv2D(8, 5, use_bias=False).flops((3, 32, 32)) == 2 * n_out * 75


def test_conv2d_input_errors_name_layer() -> None:
    layer = L.Conv2D(4, 3, name="c1")
    layer(_x(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"Conv2D layer 'c1': expected input shape "
                                         r"\(None, 3, H, W\), received \(None, 1, 8, 8\)"):
        layer(_x(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"received \(None, 64\).*4-D"):
        L.Conv2D(4, 3, name="c2")(_x(2, 64))
    with pytest.raises(ValueError, match="output would be"):
        L.Conv2D(4, 5)(_x(1, 1, 3, 3))
    with pytest.raises(ValueError, match="padding"):
        L.Conv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match="filters"):
        L.Conv2D(0, 3)


# ----------------------------------------------------------------------------- Dense & friends


def test_dense_numerics_and_errors() -> None:
    layer = L.Dense(3, activation="tanh", name="fc")
    x = _x(4, 5)
    y = layer(x).numpy()
    ref = np.tanh(x.numpy() @ layer.weight.numpy().T + layer.bias.numpy())
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    assert layer.weight.shape == (3, 5)
    with pytest.raises(ValueError, match=r"Dense layer 'fc': expected input shape \(None, 5\), "
                                         r"received \(None, 6\)"):
        layer(_x(4, 6))
    with pytest.raises(ValueError, match="Flatten"):
        L.Dense(3)(_x(2, 3, 4, 4))
    assert L.Dense(3, use_bias=False).flops((5,)) == 30
    assert L.Dense(3, use_bias=False)(_x(2, 5)).shape == (2, 3)


def test_flatten_reshape() -> None:
    assert L.Flatten()(_x(2, 3, 4, 5)).shape == (2, 60)
    r = L.Reshape((4, -1))
    assert r(_x(2, 3, 4, 2)).shape == (2, 4, 6)
    assert r.output_shape((3, 4, 2)) == (4, 6)
    with pytest.raises(ValueError, match="Reshape"):
        L.Reshape((5, 5))(_x(2, 7))


def test_dropout_train_and_eval() -> None:
    gpucnn.manual_seed(3)
    layer = L.Dropout(0.25)
    x = Tensor(np.ones((200, 50), dtype=np.float32))
    y = layer(x).numpy()
    frac = (y == 0).mean()
    assert 0.2 < frac < 0.3
    np.testing.assert_allclose(y[y != 0], 1 / 0.75, rtol=1e-6)
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())
    with pytest.raises(ValueError, match="rate"):
        L.Dropout(1.0)


def test_activation_layers() -> None:
    x = _x(2, 3, 4, 4)
    a = x.numpy()
    np.testing.assert_allclose(L.ReLU()(x).numpy(), np.maximum(a, 0))
    np.testing.assert_allclose(L.LeakyReLU()(x).numpy(), np.where(a > 0, a, 0.3 * a),
                               rtol=1e-6)
    np.testing.assert_allclose(L.Activation("sigmoid")(x).numpy(), 1 / (1 + np.exp(-a)),
                               rtol=1e-5)
    sm = L.Softmax(axis=1)(x).numpy()
    np.testing.assert_allclose(sm.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(L.ELU()(x).numpy(), np.where(a > 0, a, np.expm1(a)), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="unknown activation"):
        L.Activation("swishy")


def test_prelu_per_channel_learns() -> None:
    layer = L.PReLU()
    x = Tensor(-np.ones((2, 3, 2, 2), dtype=np.float32))
    y = layer(x)
    assert layer.weight.shape == (3,) and layer.count_params() == 3
    np.testing.assert_allclose(y.numpy(), -0.25)
    y.sum().backward()
    np.testing.assert_allclose(layer.weight.grad.numpy(), -8.0)
    assert L.PReLU(shared=True).count_params() == 0  # built on first call
    shared = L.PReLU(shared=True)
    shared(x)
    assert shared.count_params() == 1


def test_add_and_concatenate() -> None:
    a, b = _x(2, 3, 4, 4, seed=1), _x(2, 5, 4, 4, seed=2)
    cat = L.Concatenate()
    y = cat([a, b])
    assert y.shape == (2, 8, 4, 4) and cat.output_shape([(3, 4, 4), (5, 4, 4)]) == (8, 4, 4)
    np.testing.assert_array_equal(y.numpy()[:, :3], a.numpy())
    add = L.Add()
    np.testing.assert_allclose(add([a, a, a]).numpy(), 3 * a.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="Add layer"):
        add([a, b])
    with pytest.raises(ValueError, match="except on axis 1"):
        L.Concatenate()([a, _x(2, 3, 5, 4)])


def test_zero_padding() -> None:
    layer = L.ZeroPadding2D(((1, 2), (0, 3)))
    y = layer(_x(1, 2, 3, 3))
    assert y.shape == (1, 2, 6, 6) == (1, *layer.output_shape((2, 3, 3)))
    assert float(y.numpy()[:, :, 0].sum()) == 0.0


# ----------------------------------------------------------------------------- batch norm


def test_batchnorm_keras_momentum_and_eval() -> None:
    bn = L.BatchNormalization(momentum=0.9, epsilon=1e-3)
    x = _x(8, 3, 4, 4)
    a = x.numpy()
    y = bn(x).numpy()
    mean, var = a.mean(axis=(0, 2, 3)), a.var(axis=(0, 2, 3))
    ref = (a - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-3)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * mean, rtol=1e-5, atol=1e-7)
    m = a.size // 3
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * var * m / (m - 1), rtol=1e-5)
    assert bn.count_params() == 6 and len(list(bn.buffers())) == 2
    bn.eval()
    ye = bn(x).numpy()
    rm, rv = bn.running_mean.numpy(), bn.running_var.numpy()
    np.testing.assert_allclose(
        ye, (a - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-3), rtol=1e-4,
        atol=1e-5)
    np.testing.assert_array_equal(bn.running_mean.numpy(), rm)  # eval does not update


def test_batchnorm_after_dense_and_errors() -> None:
    bn = L.BatchNormalization(name="bn")
    assert bn(_x(6, 5)).shape == (6, 5)
    with pytest.raises(ValueError, match=r"BatchNormalization layer 'bn'.*\(None, 5, \.\.\.\)"):
        bn(_x(6, 4))
    with pytest.raises(ValueError, match="axis"):
        L.BatchNormalization(axis=-1)


# ----------------------------------------------------------------------------- pooling


def _np_pool(a: np.ndarray, k: int, s: int, pads: tuple, fn: str) -> np.ndarray:
    pt, pb, pl, pr = pads
    fill = -np.inf if fn == "max" else np.nan
    p = np.pad(a, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    oh, ow = (p.shape[2] - k) // s + 1, (p.shape[3] - k) // s + 1
    out = np.empty(a.shape[:2] + (oh, ow), dtype=np.float64)
    for i in range(oh):
        for j in range(ow):
            win = p[:, :, i * s : i * s + k, j * s : j * s + k]
            out[:, :, i, j] = win.max(axis=(2, 3)) if fn == "max" else np.nanmean(win, (2, 3))
    return out


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("k,s,hw", [(2, 2, (7, 6)), (3, 2, (8, 7)), (3, 1, (5, 5))])
def test_pooling_against_reference(padding, k, s, hw) -> None:
    x = _x(2, 2, *hw)
    for cls, fn in ((L.MaxPooling2D, "max"), (L.AveragePooling2D, "avg")):
        layer = cls(k, strides=s, padding=padding)
        y = layer(x)
        assert y.shape[1:] == layer.output_shape((2, *hw))
        if padding == "same":
            pads_h = max((math.ceil(hw[0] / s) - 1) * s + k - hw[0], 0)
            pads_w = max((math.ceil(hw[1] / s) - 1) * s + k - hw[1], 0)
            pads = (pads_h // 2, pads_h - pads_h // 2, pads_w // 2, pads_w - pads_w // 2)
        else:
            pads = (0, 0, 0, 0)
        ref = _np_pool(x.numpy().astype(np.float64), k, s, pads, fn)
        np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-6, err_msg=cls.__name__)


def test_global_and_adaptive_pooling() -> None:
    x = _x(2, 3, 6, 4)
    a = x.numpy()
    np.testing.assert_allclose(L.GlobalAveragePooling2D()(x).numpy(), a.mean(axis=(2, 3)),
                               rtol=1e-5)
    np.testing.assert_allclose(L.GlobalMaxPooling2D()(x).numpy(), a.max(axis=(2, 3)))
    assert L.GlobalAveragePooling2D(keepdims=True)(x).shape == (2, 3, 1, 1)
    ad = L.AdaptiveAveragePooling2D((3, 2))
    y = ad(x)
    assert y.shape == (2, 3, 3, 2) and ad.output_shape((3, 6, 4)) == (3, 3, 2)
    np.testing.assert_allclose(y.numpy()[:, :, 0, 0], a[:, :, :2, :2].mean(axis=(2, 3)),
                               rtol=1e-5)
    mx = L.AdaptiveMaxPooling2D(1)(x)
    np.testing.assert_allclose(mx.numpy()[:, :, 0, 0], a.max(axis=(2, 3)))


def test_int_pair_arguments_are_checked_by_the_shared_helper() -> None:
    """Every int-or-pair argument goes through gpucnn.backend.geometry.pair: a ValueError for a
    wrong length, item type or value, a TypeError for what is neither an int nor a sequence;
    the message names the layer, the argument and the given value."""
    with pytest.raises(ValueError, match=r"Conv2D: kernel_size must be >= 1, got \(0, 3\)"):
        L.Conv2D(4, (0, 3))
    with pytest.raises(ValueError, match=r"Conv2D: strides must be an int or a pair of ints, "
                                         r"got \(1, 2, 3\)"):
        L.Conv2D(4, 3, strides=(1, 2, 3))
    with pytest.raises(ValueError, match=r"Conv2D: dilation_rate must be an int or a pair.*2.0"):
        L.Conv2D(4, 3, dilation_rate=(2.0, 1))
    with pytest.raises(TypeError, match=r"Conv2D: kernel_size must be an int or a pair.*1.5"):
        L.Conv2D(4, 1.5)
    with pytest.raises(ValueError, match=r"Conv2D: padding must be >= 0, got \(-1, -1\)"):
        L.Conv2D(4, 3, padding=-1)
    with pytest.raises(ValueError, match=r"MaxPooling2D: pool_size must be >= 1, got \(0, 0\)"):
        L.MaxPooling2D(0)
    with pytest.raises(ValueError, match=r"AveragePooling2D: strides must be >= 1, got \(1, 0\)"):
        L.AveragePooling2D(2, strides=(1, 0))
    with pytest.raises(ValueError, match=r"MaxPooling2D: padding must be >= 0"):
        L.MaxPooling2D(2, padding=(0, -1))
    with pytest.raises(TypeError, match=r"AdaptiveAveragePooling2D: output_size must be an int "
                                        r"or a pair of ints, got None"):
        L.AdaptiveAveragePooling2D(None)
    with pytest.raises(ValueError, match=r"AdaptiveMaxPooling2D: output_size must be >= 1"):
        L.AdaptiveMaxPooling2D((2, 0))
    with pytest.raises(ValueError, match=r"ZeroPadding2D: padding must be >= 0, got \(-1, -1\)"):
        L.ZeroPadding2D(-1)
    with pytest.raises(ValueError, match=r"ResidualBlock: strides must be an int or a pair"):
        L.ResidualBlock(8, strides=(1, 2, 1))
    conv = L.Conv2D(4, np.int64(3), strides=[1, 2], dilation_rate=np.array([2, 1]))
    assert (conv.kernel_size, conv.strides, conv.dilation_rate) == ((3, 3), (1, 2), (2, 1))
    assert all(type(v) is int for v in conv.kernel_size + conv.strides + conv.dilation_rate)


def test_pooling_errors() -> None:
    with pytest.raises(ValueError, match=r"MaxPooling2D layer 'mp'.*received \(None, 5\)"):
        L.MaxPooling2D(name="mp")(_x(2, 5))
    with pytest.raises(ValueError, match="pool size"):
        L.MaxPooling2D(4, padding=3)
    with pytest.raises(ValueError, match="output would be"):
        L.MaxPooling2D(4)(_x(1, 1, 3, 3))


# ----------------------------------------------------------------------------- configs


ALL_LAYERS = [
    L.Conv2D(4, (3, 2), strides=2, padding="same", dilation_rate=1, activation="relu",
             input_shape=(3, 8, 8)),
    L.Dense(5, activation="softmax", use_bias=False, kernel_initializer="he_uniform"),
    L.Flatten(), L.Reshape((2, -1)), L.Dropout(0.3), L.SpatialDropout2D(0.1),
    L.Activation("tanh"), L.ReLU(), L.LeakyReLU(0.1), L.PReLU(shared=True), L.ELU(0.5),
    L.Softmax(axis=1), L.Add(), L.Concatenate(axis=2), L.ZeroPadding2D((1, 2)),
    L.BatchNormalization(momentum=0.9, epsilon=1e-5), L.MaxPooling2D(3, 2, "same"),
    L.AveragePooling2D(2, padding=1), L.GlobalAveragePooling2D(keepdims=True),
    L.GlobalMaxPooling2D(), L.AdaptiveAveragePooling2D((2, 3)), L.AdaptiveMaxPooling2D(2),
    L.ResidualBlock(8, strides=2, projection=True), L.InceptionBlock(1, 2, 3, 4, 5, 6),
]


@pytest.mark.parametrize("layer", ALL_LAYERS, ids=lambda layer: type(layer).__name__)
def test_config_round_trip(layer) -> None:
    import json

    spec = json.loads(json.dumps(serialize(layer)))
    clone = deserialize(spec)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()


def test_sequential_config_round_trip() -> None:
    m = lenet()
    clone = deserialize(serialize(m))
    assert clone.built  # input_shape travels in the config
    assert [type(a) for a in clone] == [type(a) for a in m]
    assert clone.count_params() == m.count_params()


# ----------------------------------------------------------------------------- initializers


def test_initializers_statistics_and_seed() -> None:
    gpucnn.manual_seed(0)
    w = I.he_normal((64, 32, 3, 3))
    assert w.dtype == np.float32
    assert abs(w.std() - math.sqrt(2 / (32 * 9))) < 0.01
    u = I.glorot_uniform((200, 100))
    lim = math.sqrt(6 / 300)
    assert u.max() <= lim and u.min() >= -lim and u.max() > 0.9 * lim
    assert I.compute_fans((16, 8, 5, 5)) == (200, 400)
    gpucnn.manual_seed(5)
    a = L.Dense(4)
    a.build((3,))
    gpucnn.manual_seed(5)
    b = L.Dense(4)
    b.build((3,))
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    assert I.get("ZEROS") is I.zeros and I.get(I.ones) is I.ones
    with pytest.raises(ValueError, match="unknown initializer 'bogus'"):
        I.get("bogus")
    d = L.Dense(2, kernel_initializer=lambda shape, dtype, backend: np.full(shape, 0.5, dtype))
    d.build((3,))
    np.testing.assert_array_equal(d.weight.numpy(), 0.5)


# ----------------------------------------------------------------------------- blocks


def test_residual_block_identity_and_projection() -> None:
    ident = L.ResidualBlock(4)
    y = ident(_x(2, 4, 6, 6))
    assert y.shape == (2, 4, 6, 6) and not ident.has_projection
    assert ident.count_params() == 2 * (4 * 4 * 9) + 2 * 8
    proj = L.ResidualBlock(8, strides=2)
    y = proj(_x(2, 4, 6, 6))
    assert y.shape == (2, 8, 3, 3) == (2, *proj.output_shape((4, 6, 6)))
    assert proj.has_projection
    assert proj.count_params() == 8 * 4 * 9 + 8 * 8 * 9 + 2 * 16 + 8 * 4 + 16
    assert (y.numpy() >= 0).all()
    with pytest.raises(ValueError, match="projection=False"):
        L.ResidualBlock(8, projection=False)(_x(1, 4, 6, 6))


def test_residual_block_matches_manual_composition() -> None:
    blk = L.ResidualBlock(3)
    x = _x(4, 3, 5, 5)
    y = blk(x)
    with gpucnn.no_grad():
        h = F.relu(blk.bn1(blk.conv1(x)))
        ref = F.relu(blk.bn2(blk.conv2(h)) + x)
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-6)


def _float64(module) -> None:
    for t in list(module.parameters()) + list(module.buffers()):
        t.data = t.data.astype(np.float64)


@pytest.mark.numpy_internal  # float64 gradient checks are defined on the NumPy backend
def test_residual_block_gradient_check() -> None:
    from gpucnn.testing.gradcheck import gradient_check

    blk = L.ResidualBlock(2, strides=2)
    blk(_x(2, 3, 4, 4))
    blk.eval()  # running statistics: a smooth function of x and the weights
    _float64(blk)
    x = np.random.default_rng(4).normal(size=(2, 3, 4, 4))
    gradient_check(lambda x_: blk(x_), [x], atol=1e-5, rtol=1e-4)


def test_blocks_gradient_flow_in_training() -> None:
    net = Sequential([L.ResidualBlock(4, strides=2, input_shape=(3, 8, 8)),
                      L.InceptionBlock(2, 2, 3, 1, 2, 2), L.GlobalAveragePooling2D(), L.Dense(3)])
    y = net(_x(4, 3, 8, 8))
    F.cross_entropy(y, Tensor(np.array([0, 1, 2, 0]))).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert float(np.abs(p.grad.numpy()).sum()) > 0, name


def test_inception_block_shapes_params_flops() -> None:
    blk = L.InceptionBlock(4, 3, 5, 2, 3, 2)
    y = blk(_x(2, 6, 7, 7))
    assert y.shape == (2, 14, 7, 7) == (2, *blk.output_shape((6, 7, 7)))
    expected = (6 * 4 + 4) + (6 * 3 + 3) + (3 * 5 * 9 + 5) + (6 * 2 + 2) + (2 * 3 * 25 + 3) + (
        6 * 2 + 2)
    assert blk.count_params() == expected
    hw = 49
    conv_flops = 2 * hw * (6 * 4 + 6 * 3 + 3 * 5 * 9 + 6 * 2 + 2 * 3 * 25 + 6 * 2)
    bias_relu = 2 * hw * (4 + 3 + 5 + 2 + 3 + 2)
    pool = 6 * hw * 9
    assert blk.flops((6, 7, 7)) == conv_flops + bias_relu + pool
    a = y.numpy()
    assert (a >= 0).all()  # every branch ends in ReLU


def test_residual_block_torch_parity_training_mode() -> None:
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    blk = L.ResidualBlock(6, strides=2)
    xn = np.random.default_rng(9).normal(size=(3, 4, 7, 7)).astype(np.float32)
    x = Tensor(xn, requires_grad=True)
    y = blk(x)
    (y * y).sum().backward()

    def t(p):
        return torch.tensor(p.numpy(), requires_grad=True)

    xt = torch.tensor(xn, requires_grad=True)

    def bn(h, layer):
        return tf.batch_norm(h, None, None, t(layer.weight), t(layer.bias), True, 0.1, 1e-5)

    h = torch.relu(bn(tf.conv2d(xt, t(blk.conv1.weight), stride=2, padding=1), blk.bn1))
    h = bn(tf.conv2d(h, t(blk.conv2.weight), padding=1), blk.bn2)
    sc = bn(tf.conv2d(xt, t(blk.proj_conv.weight), stride=2), blk.proj_bn)
    yt = torch.relu(h + sc)
    (yt * yt).sum().backward()
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-3, atol=1e-3)
