"""Regression tests of issue 17, "No silent wrong answer": one test per defect, each compared
with PyTorch where PyTorch defines the answer (the torch part is skipped without torch).

Every test runs on the session's backend (NumPy in the plain pass, the simulated CUDA device
with ``--simulate-cuda``).
"""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import Tensor
from gpucnn import backend as B
from gpucnn import layers as L
from gpucnn.data import DataLoader

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # pragma: no cover - torch is the optional oracle
    torch = None
    TF = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def T(a, requires_grad: bool = False) -> Tensor:  # noqa: ANN001
    """``a`` as a Tensor on the session's backend."""
    return Tensor(np.asarray(a), requires_grad=requires_grad, backend=B.current())


def host(t) -> np.ndarray:  # noqa: ANN001
    return t.numpy() if isinstance(t, Tensor) else np.asarray(t)


# --------------------------------------------------------------------------- max_pool2d ceil


@pytest.mark.parametrize("size", [(3, 3), (5, 4), (4, 7), (1, 3), (7, 7)])
def test_max_pool2d_2x2_ceil_mode_odd_size(size):
    """The 2x2/stride-2 fast path sliced past the edge with ceil_mode and an odd H or W:
    wrong values/indices/gradients for size 3, a raw broadcasting error for other sizes."""
    h, w = size
    x = np.arange(h * w, dtype=np.float64).reshape(1, 1, h, w)[..., ::-1].copy()
    xt = T(x, requires_grad=True)
    y, idx = F.max_pool2d(xt, 2, 2, ceil_mode=True, return_indices=True)
    y.backward(np.arange(1.0, y.numel() + 1).reshape(y.shape))
    if size == (3, 3):
        np.testing.assert_array_equal(host(y)[0, 0], [[5, 3], [8, 6]])
        np.testing.assert_array_equal(host(idx)[0, 0], [[3, 5], [6, 8]])
    if torch is not None:
        tx = torch.tensor(x, requires_grad=True)
        ty, ti = TF.max_pool2d(tx, 2, 2, ceil_mode=True, return_indices=True)
        ty.backward(torch.arange(1.0, ty.numel() + 1, dtype=torch.float64).reshape(ty.shape))
        np.testing.assert_array_equal(host(y), ty.detach().numpy())
        np.testing.assert_array_equal(host(idx), ti.numpy())
        np.testing.assert_array_equal(host(xt.grad), tx.grad.numpy())


# --------------------------------------------------------------------------- nll all ignored


@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_every_target_ignored_has_zero_gradient(weighted):
    """Mean reduction with every target == ignore_index: the loss is NaN (0/0, as PyTorch)
    but the gradient must be 0, not NaN (it would poison the weights)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    target = np.array([-100, -100, -100])
    weight = np.array([1.0, 2.0, 0.5, 1.0], np.float32) if weighted else None
    for fn, tfn in ((F.nll_loss, "nll_loss"), (F.cross_entropy, "cross_entropy")):
        xt = T(x, requires_grad=True)
        loss = fn(xt, target, weight=weight)
        loss.backward()
        assert np.isnan(loss.item())
        np.testing.assert_array_equal(host(xt.grad), 0.0)
        if torch is not None:
            tx = torch.tensor(x, requires_grad=True)
            tw = None if weight is None else torch.tensor(weight)
            tl = getattr(TF, tfn)(tx, torch.tensor(target), weight=tw)
            tl.backward()
            assert np.isnan(tl.item())
            np.testing.assert_array_equal(tx.grad.numpy(), host(xt.grad))


def test_nll_loss_some_targets_ignored_matches_torch():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3)).astype(np.float64)
    target = np.array([2, -100, 0, -100])
    xt = T(x, requires_grad=True)
    loss = F.nll_loss(xt, target)
    loss.backward()
    if torch is not None:
        tx = torch.tensor(x, requires_grad=True)
        tl = TF.nll_loss(tx, torch.tensor(target))
        tl.backward()
        np.testing.assert_allclose(loss.item(), tl.item(), rtol=1e-12)
        np.testing.assert_allclose(host(xt.grad), tx.grad.numpy(), rtol=1e-12)


# --------------------------------------------------------------------------- dtype policy


def test_batch_norm_integer_and_bool_input_refused():
    """Integer input used to cast the batch statistics to the integer dtype (wrong output);
    bool input raised a raw NumPy error. Both are a TypeError naming batch_norm (PyTorch:
    "batch_norm" not implemented for 'Long')."""
    for dt in (np.int64, np.int32, bool, np.float16):
        x = T(np.ones((4, 3, 2, 2), dtype=dt))
        with pytest.raises(TypeError, match=rf"batch_norm: .*{np.dtype(dt).name}"):
            F.batch_norm(x, None, None, training=True)
    if torch is not None:
        with pytest.raises((RuntimeError, NotImplementedError)):
            TF.batch_norm(torch.ones(4, 3, dtype=torch.long), None, None, training=True)


def _ops_on(x4, x2):  # noqa: ANN001, ANN202
    """Every public op of gpucnn.functional that computes in floating point, on inputs of
    the dtype under test (4-D ``x4`` and 2-D ``x2``)."""
    idx = np.array([0, 1])
    return {
        "conv2d": lambda: F.conv2d(x4, T(np.ones((2, 3, 2, 2), x4.dtype))),
        "linear": lambda: F.linear(x2, T(np.ones((4, 3), x2.dtype))),
        "matmul": lambda: F.matmul(x2, T(np.ones((3, 4), x2.dtype))),
        "max_pool2d": lambda: F.max_pool2d(x4, 2),
        "avg_pool2d": lambda: F.avg_pool2d(x4, 2),
        "adaptive_avg_pool2d": lambda: F.adaptive_avg_pool2d(x4, 1),
        "adaptive_max_pool2d": lambda: F.adaptive_max_pool2d(x4, 1),
        "global_avg_pool2d": lambda: F.global_avg_pool2d(x4),
        "global_max_pool2d": lambda: F.global_max_pool2d(x4),
        "batch_norm": lambda: F.batch_norm(x4, None, None, training=True),
        "dropout": lambda: F.dropout(x4, 0.5),
        "dropout2d": lambda: F.dropout2d(x4, 0.5),
        "relu": lambda: F.relu(x4),
        "leaky_relu": lambda: F.leaky_relu(x4),
        "elu": lambda: F.elu(x4),
        "sigmoid": lambda: F.sigmoid(x4),
        "tanh": lambda: F.tanh(x4),
        "gelu": lambda: F.gelu(x4),
        "softplus": lambda: F.softplus(x4),
        "prelu": lambda: F.prelu(x4, T(np.ones(3, x4.dtype))),
        "softmax": lambda: F.softmax(x4),
        "log_softmax": lambda: F.log_softmax(x4),
        "cross_entropy": lambda: F.cross_entropy(x2, idx),
        "nll_loss": lambda: F.nll_loss(x2, idx),
        "binary_cross_entropy": lambda: F.binary_cross_entropy(x2, np.zeros((2, 3))),
        "binary_cross_entropy_with_logits": lambda: F.binary_cross_entropy_with_logits(
            x2, np.zeros((2, 3))),
        "mse_loss": lambda: F.mse_loss(x2, np.zeros((2, 3))),
        "mean": lambda: F.mean(x4),
        "exp": lambda: F.exp(x4),
        "log": lambda: F.log(x4),
        "sqrt": lambda: F.sqrt(x4),
    }


FLOAT_OPS = sorted(_ops_on(None, None))


@pytest.mark.parametrize("dtype", ["int64", "bool", "float16"])
@pytest.mark.parametrize("op", FLOAT_OPS)
def test_floating_ops_refuse_integer_bool_and_float16(op, dtype):
    """The dtype policy (gpucnn/functional/_dtypes.py): every floating op refuses int64,
    bool and float16 with a TypeError naming the op and the dtype, on every route."""
    x4 = T(np.ones((2, 3, 4, 4), dtype=dtype))
    x2 = T(np.ones((2, 3), dtype=dtype))
    with pytest.raises(TypeError) as exc:
        _ops_on(x4, x2)[op]()
    msg = str(exc.value)
    assert msg.startswith(f"{op}:") and dtype in msg, msg


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", FLOAT_OPS)
def test_floating_ops_accept_float32_and_float64(op, dtype):
    x4 = T(np.full((2, 3, 4, 4), 0.5, dtype=dtype))
    x2 = T(np.full((2, 3), 0.5, dtype=dtype))
    out = _ops_on(x4, x2)[op]()
    out = out[0] if isinstance(out, tuple) else out
    assert out.dtype == np.dtype(dtype)


def test_linear_on_bool_tensors_is_refused():
    """``linear`` on bools returned a bool matrix; PyTorch raises (addmm not implemented)."""
    b = T(np.ones((2, 3), bool))
    with pytest.raises(TypeError, match="linear: .*bool"):
        F.linear(b, T(np.ones((4, 3), bool)))
    if torch is not None:
        with pytest.raises((RuntimeError, NotImplementedError)):
            TF.linear(torch.ones(2, 3, dtype=torch.bool), torch.ones(4, 3, dtype=torch.bool))


def test_linear_mixed_float_dtypes_refused():
    with pytest.raises(TypeError, match="linear: input dtype float32 and weight dtype float64"):
        F.linear(T(np.ones((2, 3), np.float32)), T(np.ones((4, 3), np.float64)))


@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (2, 1, 1), (1, "same", 2)])
def test_conv2d_float16_refused_on_every_route(stride, padding, dilation):
    """float16 used to pass conv2d's check and fail later inside im2col on some routes."""
    x = T(np.ones((1, 2, 6, 6), np.float16))
    w = T(np.ones((3, 2, 3, 3), np.float16))
    with pytest.raises(TypeError, match="conv2d: .*float16"):
        F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
    with pytest.raises(TypeError, match="conv2d: .*float16"):
        F.conv2d(x, T(np.ones((3, 2, 1, 1), np.float16)))


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool", "uint8"])
def test_data_movement_ops_keep_integer_and_bool_dtypes(dtype):
    """Shape and selection ops are exact in any dtype (the other half of the policy)."""
    a = np.arange(24).reshape(2, 3, 4).astype(dtype)
    t = T(a)
    assert host(F.reshape(t, (6, 4))).dtype == a.dtype
    assert host(F.transpose(t)).dtype == a.dtype
    assert host(F.concat([t, t], axis=0)).dtype == a.dtype
    assert host(F.pad(t, (1, 1))).dtype == a.dtype
    np.testing.assert_array_equal(host(F.max(t, axis=1)), a.max(axis=1))
    s = F.sum(t)
    if torch is not None:
        ts = torch.tensor(a).sum()
        assert str(ts.dtype).replace("torch.", "") == host(s).dtype.name
        assert host(s).item() == ts.item()


# --------------------------------------------------------------------------- empty window


@pytest.mark.parametrize("shape,kw", [
    ((1, 2, 2, 4), dict(kernel_size=2, stride=(4, 2), padding=(1, 0), dilation=(3, 1))),
    ((1, 1, 1, 1), dict(kernel_size=2, stride=1, padding=1, dilation=2)),
    ((1, 1, 2, 2), dict(kernel_size=2, stride=1, padding=1, dilation=3)),
])
def test_max_pool2d_window_entirely_in_padding_is_refused(shape, kw):
    """A dilated window with no input pixel: PyTorch gives -inf with an index OUTSIDE the
    plane, and its backward then writes out of bounds (a crash); we refuse the config with a
    ValueError naming max_pool2d instead of returning an out-of-plane index."""
    x = T(np.ones(shape, np.float32))
    with pytest.raises(ValueError, match="max_pool2d: .*lies entirely in the padding"):
        F.max_pool2d(x, return_indices=True, **kw)
    if torch is not None:  # what PyTorch does: an index past the plane
        _, ti = TF.max_pool2d(torch.ones(shape), return_indices=True, **kw)
        assert int(ti.max()) >= shape[2] * shape[3]


def test_max_pool2d_dilated_windows_touching_the_input_still_work():
    x = np.random.default_rng(3).standard_normal((1, 2, 5, 5)).astype(np.float32)
    y, i = F.max_pool2d(T(x), 2, 1, 1, dilation=2, return_indices=True)
    assert host(i).max() < 25
    if torch is not None:
        ty, ti = TF.max_pool2d(torch.tensor(x), 2, 1, 1, dilation=2, return_indices=True)
        np.testing.assert_array_equal(host(y), ty.numpy())
        np.testing.assert_array_equal(host(i), ti.numpy())


# --------------------------------------------------------------------------- predict


def test_predict_on_zero_samples_keeps_the_output_shape():
    """``predict`` on zero samples returned shape (0,) instead of (0, classes)."""
    gpucnn.manual_seed(0)
    m = gpucnn.Sequential([L.Conv2D(4, 3, input_shape=(1, 6, 6)), L.Flatten(), L.Dense(5)])
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.zeros((0, 1, 6, 6), np.float32)
    out = m.predict(x)
    assert out.shape == (0, 5) and out.dtype == np.float32
    unbuilt = gpucnn.Sequential([L.Dense(3)])
    assert unbuilt.predict(np.zeros((0, 7), np.float32)).shape == (0, 3)


# --------------------------------------------------------------------------- empty inputs


def test_conv2d_1x1_backward_on_an_empty_batch():
    x = T(np.ones((0, 3, 5, 5), np.float32), requires_grad=True)
    w = T(np.ones((4, 3, 1, 1), np.float32), requires_grad=True)
    y = F.conv2d(x, w)
    assert y.shape == (0, 4, 5, 5)
    y.sum().backward()
    assert x.grad.shape == (0, 3, 5, 5)
    np.testing.assert_array_equal(host(w.grad), 0.0)


@pytest.mark.parametrize("shape,axis", [((2, 0), -1), ((0, 3), -1), ((2, 0, 3), 1)])
def test_softmax_on_an_empty_axis_gives_an_empty_result(shape, axis):
    for fn in (F.softmax, F.log_softmax):
        x = T(np.ones(shape, np.float32), requires_grad=True)
        y = fn(x, axis)
        assert y.shape == shape
        y.sum().backward()
        assert x.grad.shape == shape
        if torch is not None:
            tfn = TF.softmax if fn is F.softmax else TF.log_softmax
            assert tuple(tfn(torch.ones(shape), axis).shape) == shape


def test_batch_norm_training_on_an_empty_batch():
    """PyTorch returns an empty result and leaves the running statistics alone."""
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    x = T(np.ones((0, 3), np.float32), requires_grad=True)
    w = T(np.ones(3, np.float32), requires_grad=True)
    rmt, rvt = T(rm), T(rv)
    y = F.batch_norm(x, rmt, rvt, weight=w, training=True)
    assert y.shape == (0, 3)
    y.sum().backward()
    np.testing.assert_array_equal(host(rmt), 0.0)
    np.testing.assert_array_equal(host(rvt), 1.0)
    np.testing.assert_array_equal(host(w.grad), 0.0)
    if torch is not None:
        trm, trv = torch.zeros(3), torch.ones(3)
        assert tuple(TF.batch_norm(torch.ones(0, 3), trm, trv, training=True).shape) == (0, 3)
        assert trm.eq(0).all() and trv.eq(1).all()


def test_zero_input_channels_is_a_value_error():
    """Used to be a ZeroDivisionError from the initializer of Conv2D."""
    with pytest.raises(ValueError, match=r"conv2d: input \(2, 0, 5, 5\) has zero channels"):
        F.conv2d(T(np.ones((2, 0, 5, 5), np.float32)), T(np.ones((4, 0, 3, 3), np.float32)))


@pytest.mark.parametrize("name", ["he_normal", "he_uniform", "glorot_normal", "glorot_uniform",
                                  "lecun_normal", "lecun_uniform"])
@pytest.mark.parametrize("shape", [(4, 0, 3, 3), (0, 4), (0,), (3, 0)])
def test_initializers_of_empty_weights(name: str, shape: tuple) -> None:
    """A zero fan used to divide by zero; an empty weight is returned as PyTorch leaves it."""
    a = gpucnn.initializers.get(name)(shape)
    assert tuple(a.shape) == shape and a.dtype == np.float32


def test_dense_with_zero_input_features() -> None:
    """Linear(0, 3) as PyTorch: the output is the bias alone, and the bias still learns."""
    layer = gpucnn.layers.Dense(3)
    y = layer(T(np.ones((2, 0), np.float32)))
    assert y.shape == (2, 3)
    y.sum().backward()
    np.testing.assert_array_equal(host(layer.bias.grad), 2.0)


def test_linear_on_a_0d_input():
    with pytest.raises(ValueError, match="linear: input must have at least 1 dim"):
        F.linear(T(np.float32(1.0)), T(np.ones((4, 1), np.float32)))
    if torch is not None:
        with pytest.raises(RuntimeError):
            TF.linear(torch.tensor(1.0), torch.ones(4, 1))


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("axis", [1.5, "a", (0, (1,)), None, (1,)])
def test_softmax_non_integer_or_tuple_axis(axis):
    x = T(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match=rf"softmax: axis must be an int, got {axis!r}"[:30]):
        F.softmax(x, axis)


@pytest.mark.parametrize("axis", [1.5, "a", (0, (1,)), (0, 0)])
def test_reductions_non_integer_or_bad_tuple_axis(axis):
    x = T(np.ones((2, 3), np.float32))
    for fn in (F.sum, F.mean, F.max):
        with pytest.raises((TypeError, ValueError), match=rf"{fn.__name__}: axis"):
            fn(x, axis)


def test_reduction_axis_out_of_range():
    x = T(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"sum: axis 5 is out of range for a 2-D tensor"):
        F.sum(x, 5)
    if torch is not None:
        with pytest.raises(IndexError):
            torch.ones(2, 3).sum(5)


@pytest.mark.parametrize("call,msg", [
    (lambda x: F.batch_norm(x, None, None, training=True, eps="a"), "batch_norm: eps"),
    (lambda x: F.batch_norm(x, None, None, training=True, eps=None), "batch_norm: eps"),
    (lambda x: F.batch_norm(x, None, None, training=True, eps=float("nan")), "batch_norm: eps"),
    (lambda x: F.batch_norm(x, None, None, training=True, momentum=None), "batch_norm: momentum"),
    (lambda x: F.cross_entropy(x[:, :, 0, 0], np.array([0, 1]), label_smoothing="a"),
     "cross_entropy: label_smoothing"),
    (lambda x: F.cross_entropy(x[:, :, 0, 0], np.array([0, 1]), label_smoothing=None),
     "cross_entropy: label_smoothing"),
    (lambda x: F.cross_entropy(x[:, :, 0, 0], np.array([0, 1]), ignore_index=1.5),
     "cross_entropy: ignore_index"),
    (lambda x: F.leaky_relu(x, "a"), "leaky_relu: negative_slope"),
    (lambda x: F.leaky_relu(x, None), "leaky_relu: negative_slope"),
    (lambda x: F.elu(x, None), "elu: alpha"),
    (lambda x: F.softplus(x, "a"), "softplus: beta"),
    (lambda x: F.dropout(x, "a"), "dropout: probability p"),
    (lambda x: F.dropout(x, None), "dropout: probability p"),
    (lambda x: F.adaptive_avg_pool2d(x, 1.5), "adaptive_avg_pool2d: output_size"),
    (lambda x: F.adaptive_max_pool2d(x, (1.5, 2)), "adaptive_max_pool2d: output_size"),
    (lambda x: F.pad(x, (1, 1), value=None), "pad: value"),
    (lambda x: F.clip(x, "a"), "clip: min"),
    (lambda x: F.flatten(x, "a"), "flatten: start_dim"),
    (lambda x: F.concat([x, x], axis=1.5), "concat: axis"),
    (lambda x: F.reshape(x, "ab"), "reshape: shape"),
])
def test_string_or_none_numeric_arguments(call, msg):
    """Strings / None / NaN / non-integers for numeric arguments: a TypeError or ValueError
    naming the op and the argument, not a raw ``float()`` / NumPy error."""
    x = T(np.ones((2, 3, 4, 4), np.float32))
    with pytest.raises((TypeError, ValueError), match=msg):
        call(x)


def test_stack_of_nothing():
    with pytest.raises(ValueError, match="stack: needs at least one tensor"):
        F.stack([])


@pytest.mark.parametrize("data,msg", [
    ([[1, 2], [3]], r"ragged.*data\[0\] has length 2 but data\[1\] has length 1"),
    ([[1, 2], 3], r"ragged.*data\[0\] is a sequence but data\[1\] is a scalar"),
    ([[[1], [2]], [[1], [2, 3]]], r"ragged.*data\[1\]\[0\] has length 1"),
])
def test_ragged_list_to_tensor(data, msg):
    with pytest.raises(ValueError, match=rf"Tensor: .*{msg}"):
        Tensor(data)


@pytest.mark.parametrize("data", ["abc", None, [object()], [None], np.array(["a"])])
def test_non_numeric_data_to_tensor(data):
    with pytest.raises(TypeError, match="Tensor: data must"):
        Tensor(data)


class _RaggedDataset:
    def __init__(self, bad: int, kind: str) -> None:
        self.bad, self.kind = bad, kind

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):  # noqa: ANN204
        if i != self.bad:
            return np.ones(3, np.float32), 1
        if self.kind == "shape":
            return np.ones(4, np.float32), 1
        if self.kind == "ragged":
            return [[1.0, 2.0], [3.0]], 1
        return (np.ones(3, np.float32),)  # a missing field


@pytest.mark.parametrize("kind,msg", [
    ("shape", r"DataLoader: sample 4 field 0 has shape \(4,\), but sample 0"),
    ("ragged", r"DataLoader: sample 4 of the dataset is ragged"),
    ("fields", r"DataLoader: sample 4 of the dataset is a tuple of 1, but sample 0 is a "
               r"tuple of 2"),
])
@pytest.mark.parametrize("prefetch", [0, 2])
def test_ragged_sample_in_the_data_loader(kind, msg, prefetch):
    """A ragged sample names the loader and the sample index (raised in the consumer even
    when a prefetch thread assembled the batch)."""
    loader = DataLoader(_RaggedDataset(4, kind), batch_size=6, prefetch=prefetch,
                        backend=B.current())
    with pytest.raises(ValueError, match=msg):
        list(loader)


@pytest.mark.parametrize("kw", [
    dict(batch_size="a"), dict(batch_size=None), dict(batch_size=1.5), dict(batch_size=0),
    dict(prefetch=None), dict(prefetch="2"), dict(prefetch=-1), dict(seed="x"),
])
def test_data_loader_argument_checks(kw):
    name = next(iter(kw))
    with pytest.raises((TypeError, ValueError), match=f"DataLoader: {name}"):
        DataLoader((np.ones((4, 2)), np.ones(4)), **kw)


@pytest.mark.parametrize("kw", [
    dict(epochs="a"), dict(epochs=None), dict(batch_size=None), dict(batch_size="a"),
    dict(initial_epoch="a"), dict(initial_epoch=None), dict(initial_epoch=1.5),
    dict(initial_epoch=-1), dict(validation_split="a"), dict(validation_split=None),
    dict(validation_split=float("nan")), dict(steps_per_epoch=0), dict(seed="x"),
])
def test_fit_argument_checks(kw):
    m = gpucnn.Sequential([L.Dense(2, input_shape=(3,))])
    m.compile(optimizer="sgd", loss="mse")
    name = next(iter(kw))
    with pytest.raises((TypeError, ValueError), match=f"fit: {name}"):
        m.fit(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32), verbose=0, **kw)
