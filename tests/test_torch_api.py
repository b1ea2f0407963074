"""The PyTorch-shaped Tensor (issue 16, "PyTorch users"): element-wise ``==``, identity hash,
``dim=``/``axis=``, ``size()``, the conversions, ``.device``, backend aliases, state-dict
errors (issue 17) and a PyTorch-style training loop.

Each test runs on the active backend: NumPy in the plain pass, the simulated CUDA device with
``--simulate-cuda``. Gradients are checked numerically in float64 (NumPy) and, on the cuda
backend, against the NumPy backend's gradients.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import Parameter, Tensor, optim
from gpucnn import backend as B
from gpucnn import layers as L
from gpucnn.testing.gradcheck import gradient_check


def _t(a, be=None, **kw) -> Tensor:
    """``a`` as a Tensor on backend ``be`` (default: the active one)."""
    return Tensor(np.asarray(a), backend=be or B.current(), **kw)


def _grads_match_numpy(f, arrays) -> None:
    """On the cuda backend: the gradients of ``sum(f(*inputs) * w)`` equal the NumPy
    backend's (float64), the same op differentiated on both backends."""
    if B.current() == "numpy":
        return  # the plain pass checks the NumPy gradients numerically instead
    grads, w = {}, None
    for be in ("numpy", B.current()):
        ts = [Tensor(np.asarray(a, np.float64), requires_grad=True, backend=be) for a in arrays]
        out = f(*ts)
        if w is None:
            w = np.random.default_rng(3).standard_normal(out.shape)
        (out * Tensor(w, backend=be)).sum().backward()
        grads[be] = [t.grad.numpy() for t in ts]
    for got, want in zip(grads[B.current()], grads["numpy"]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------- comparisons, hash


def test_eq_and_ne_are_elementwise_like_lt_gt() -> None:
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], np.float32)
    b = np.array([[1.0, 0.0, 3.0], [0.0, 2.0, 0.0]], np.float32)
    x, y = _t(a), _t(b)
    for got, want in ((x == y, a == b), (x != y, a != b), (x == 2.0, a == 2.0),
                      (2.0 != x, a != 2.0), (x < y, a < b), (x >= 2, a >= 2)):
        assert isinstance(got, Tensor) and got.dtype == np.bool_ and got.backend == x.backend
        np.testing.assert_array_equal(got.numpy(), want)
    # the Keras/PyTorch accuracy idiom gives the fraction of matches, not False
    assert (x == y).float().mean().item() == pytest.approx(3 / 6)
    np.testing.assert_array_equal(x.eq(y).numpy(), a == b)
    np.testing.assert_array_equal(x.ne(B.to_backend(b, x.backend)).numpy(), a != b)
    assert x.equal(_t(a)) and not x.equal(y)
    if x.backend == "cuda":  # as arithmetic: no silent host-device mixing
        with pytest.raises(RuntimeError, match="move the array with gpucnn.backend.to_backend"):
            x == b  # noqa: B015
        with pytest.raises(RuntimeError, match="different backends"):
            x == y.cpu()  # noqa: B015


def test_eq_with_other_types_is_false_not_an_error() -> None:
    x = _t([1.0, 2.0])
    assert (x == None) is False and (x != None) is True  # noqa: E711 - PyTorch's answer
    assert (x == "a") is False
    with pytest.raises(TypeError, match="expected a Tensor, an array or a number"):
        x.eq("a")


def test_hash_is_identity_so_tensors_work_as_keys_and_in_sets() -> None:
    a, b = _t([1.0]), _t([1.0])  # equal values, two tensors
    assert hash(a) == object.__hash__(a) and hash(a) != hash(b)
    d = {a: "a", b: "b"}
    assert d[a] == "a" and d[b] == "b" and len({a, b, a}) == 2
    assert a in [a] and a in {a} and b not in {a}


def test_bool_float_int_of_one_element_tensors() -> None:
    assert bool(_t([1.0])) is True and bool(_t(0.0)) is False
    assert float(_t([[2.5]])) == 2.5 and int(_t(np.int64(7))) == 7
    x = _t([1.0, 2.0])
    with pytest.raises(RuntimeError, match="more than one value is ambiguous"):
        bool(x)
    with pytest.raises(RuntimeError, match="more than one value is ambiguous"):
        if x == x:
            pass
    with pytest.raises(RuntimeError, match="no values is ambiguous"):
        bool(_t(np.zeros(0)))
    with pytest.raises(ValueError, match=r"float\(\): only one-element tensors .* shape \(2,\)"):
        float(x)
    with pytest.raises(ValueError, match=r"int\(\): only one-element"):
        int(x)
    assert (x == 2.0).any().item() and not (x == 2.0).all().item()
    assert 2.0 in x and 5.0 not in x
    with pytest.raises(TypeError, match="len"):
        len(_t(1.0))
    assert [v.item() for v in x] == [1.0, 2.0]


def test_library_code_keeps_parameters_apart_by_identity() -> None:
    """Parameters with EQUAL values are still different parameters everywhere: the module
    traversal, optimizer groups and state, duplicate detection and state dicts."""

    class Two(gpucnn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = Parameter(np.zeros(1, np.float32))
            self.b = Parameter(np.zeros(1, np.float32))  # == a, element-wise

        def forward(self, x: Tensor) -> Tensor:
            return x * self.a - x * self.b * 2.0  # gradients 1 and -2

    m = Two().to(B.current())
    ps = list(m.parameters())
    assert len(ps) == 2 and ps[0] is m.a and ps[1] is m.b
    assert m.count_params() == 2
    for name, kw in (("SGD", {"momentum": 0.9}), ("Adam", {})):
        for flat in (False, True):
            m.a.data[...] = 0.0
            m.b.data[...] = 0.0
            opt = getattr(optim, name)(m.parameters(), lr=0.1, flat=flat, **kw)
            for _ in range(2):
                opt.zero_grad()
                m(_t(np.ones(1, np.float32))).sum().backward()
                opt.step()
            assert m.a.item() != m.b.item()  # each got its own gradient and state
            sd = opt.state_dict()
            assert sorted(sd["state"]) == [0, 1] and sd["param_groups"][0]["params"] == [0, 1]
    with pytest.raises(ValueError):
        optim.SGD([m.a, m.a], lr=0.1)  # the same parameter twice is refused ...
    optim.SGD([m.a, Parameter(np.zeros(1, np.float32))], lr=0.1)  # ... equal values are not
    sd = m.state_dict()
    assert list(sd) == ["a", "b"]
    m.load_state_dict({"a": np.ones(1), "b": np.full(1, 2.0)})
    assert (m.a.item(), m.b.item()) == (1.0, 2.0)


# ----------------------------------------------------------------------- dim= and axis=


def test_dim_and_axis_spell_the_same_argument() -> None:
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    x, tx = _t(a), torch.tensor(a)
    pairs = [
        (x.sum(dim=1), x.sum(axis=1), tx.sum(dim=1)),
        (x.sum(dim=(0, 2), keepdim=True), x.sum(axis=(0, 2), keepdims=True),
         tx.sum(dim=(0, 2), keepdim=True)),
        (x.mean(dim=-1), F.mean(x, axis=-1), tx.mean(dim=-1)),
        (F.sum(x, dim=0), F.sum(x, 0), tx.sum(0)),
        (x.argmax(dim=1), F.argmax(x, axis=1), tx.argmax(dim=1)),
        (x.argmax(), x.argmax(axis=None), tx.argmax()),
        (x.argmax(dim=2, keepdim=True), x.argmax(2, keepdims=True), tx.argmax(2, keepdim=True)),
        (F.softmax(x, dim=1), F.softmax(x, axis=1), torch.softmax(tx, dim=1)),
        (x.log_softmax(dim=0), F.log_softmax(x, 0), torch.log_softmax(tx, 0)),
        (F.cat([x, x], dim=2), gpucnn.cat([x, x], axis=2), torch.cat([tx, tx], dim=2)),
        (F.concat([x, x], dim=0), F.concat([x, x], axis=0), torch.cat([tx, tx], 0)),
        (gpucnn.stack([x, x], dim=1), F.stack([x, x], axis=1), torch.stack([tx, tx], 1)),
        (F.stack([x, x], dim=-1), F.stack([x, x], -1), torch.stack([tx, tx], -1)),
        (x.max(axis=1), F.max(x, 1), tx.amax(dim=1)),
    ]
    for by_dim, by_axis, want in pairs:
        assert by_dim.shape == by_axis.shape == tuple(want.shape)
        assert by_dim.dtype == by_axis.dtype
        np.testing.assert_allclose(by_dim.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(by_axis.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    assert x.argmax(dim=1).dtype == np.int64


@pytest.mark.parametrize("call", [
    lambda x: x.sum(axis=0, dim=1), lambda x: F.mean(x, 0, dim=1),
    lambda x: x.max(1, dim=0), lambda x: x.argmax(axis=0, dim=1),
    lambda x: F.softmax(x, 0, dim=1), lambda x: F.log_softmax(x, axis=1, dim=0),
    lambda x: F.cat([x, x], 1, axis=0), lambda x: F.stack([x, x], 1, dim=0),
    lambda x: F.concat([x, x], 0, dim=1), lambda x: x.sum(dim=0, keepdims=True, keepdim=True),
])
def test_giving_both_spellings_is_a_type_error(call) -> None:
    with pytest.raises(TypeError, match="got both"):
        call(_t(np.ones((2, 3), np.float32)))


def test_max_with_dim_returns_values_and_indices_like_pytorch() -> None:
    torch = pytest.importorskip("torch")
    a = np.array([[1.0, 5.0, 5.0, -2.0], [7.0, 0.0, 3.0, 7.0], [-1.0, -3.0, -2.0, -9.0]],
                 np.float32)
    x, tx = _t(a), torch.tensor(a)
    for kw in ({"dim": 1}, {"dim": 0, "keepdim": True}, {"dim": -1, "keepdim": False}):
        got, want = x.max(**kw), tx.max(**kw)
        values, indices = got  # a (values, indices) pair, with names
        assert isinstance(got, F.MaxResult) and got.values is values and got.indices is indices
        np.testing.assert_array_equal(values.numpy(), want.values.numpy())
        np.testing.assert_array_equal(indices.numpy(), want.indices.numpy())
        assert indices.dtype == np.int64 and values.shape == tuple(want.values.shape)
    values = x.max(axis=1)  # NumPy/Keras spelling (and positional): the values only
    assert isinstance(values, Tensor) and values.shape == (3,)
    _, pred = x.max(dim=1)
    np.testing.assert_array_equal(pred.numpy(), a.argmax(axis=1))


def test_max_with_dim_gradient() -> None:
    a = np.random.default_rng(1).permutation(24).reshape(2, 3, 4) * 0.25  # tie-free
    gradient_check(lambda t: F.max(t, dim=1).values, [a])
    gradient_check(lambda t: t.max(dim=-1, keepdim=True)[0], [a])
    _grads_match_numpy(lambda t: t.max(dim=2).values, [a])


def test_softmax_of_a_zero_d_tensor_is_one_like_pytorch() -> None:
    torch = pytest.importorskip("torch")
    for v in (3.0, -1e30, 0.0):
        x = _t(np.float32(v), requires_grad=True)
        for fn, tfn in ((F.softmax, torch.softmax), (F.log_softmax, torch.log_softmax)):
            for axis in (0, -1):
                y = fn(x, axis)
                want = tfn(torch.tensor(v), axis).item()
                assert y.shape == () and y.item() == want
        y = F.softmax(x, dim=0) * 2.0 + F.log_softmax(x)
        y.backward()
        assert x.grad.item() == 0.0  # a constant result
    with pytest.raises(ValueError, match="out of range"):
        F.softmax(_t(np.float32(1.0)), 1)


# ----------------------------------------------------------------------- shape and conversions


def test_size_numel_dim_and_shape() -> None:
    x = _t(np.zeros((2, 3, 4), np.float32))
    assert x.size() == (2, 3, 4) and x.size(1) == 3 and x.size(-1) == 4
    assert x.numel() == 24 and x.nelement() == 24 and x.dim() == 3 and x.ndim == 3
    assert isinstance(x.shape, tuple) and x.shape == (2, 3, 4)
    with pytest.raises(ValueError, match=r"size: dim 3 is out of range for a 3-D tensor"):
        x.size(3)
    with pytest.raises(TypeError, match="size: dim must be an int"):
        x.size("a")
    s = _t(np.float32(1.0))
    assert s.size() == () and s.numel() == 1 and s.dim() == 0
    with pytest.raises(IndexError, match="0-d tensor has no dimensions"):
        s.size(0)


def test_unsqueeze_squeeze_permute_against_torch() -> None:
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(2).standard_normal((2, 1, 3, 1)).astype(np.float32)
    x, tx = _t(a), torch.tensor(a)
    cases = [
        (x.unsqueeze(0), tx.unsqueeze(0)), (x.unsqueeze(-1), tx.unsqueeze(-1)),
        (x.unsqueeze(2), tx.unsqueeze(2)), (x.squeeze(), tx.squeeze()),
        (x.squeeze(1), tx.squeeze(1)), (x.squeeze(0), tx.squeeze(0)),  # size 2: kept
        (x.squeeze(-1), tx.squeeze(-1)), (x.squeeze((1, 3)), tx.squeeze((1, 3))),
        (x.permute(3, 0, 2, 1), tx.permute(3, 0, 2, 1)),
        (x.permute((0, 2, 1, 3)), tx.permute((0, 2, 1, 3))),
    ]
    cases += [
        (F.unsqueeze(x, axis=1), tx.unsqueeze(1)), (F.squeeze(x, axis=3), tx.squeeze(3)),
        (x.squeeze(axis=(1, 3)), tx.squeeze((1, 3))),
        (x.transpose(0, 2), tx.transpose(0, 2)), (x.transpose(-1, 1), tx.transpose(-1, 1)),
        (x[:, 0, :, 0].transpose(0, 1), tx[:, 0, :, 0].transpose(0, 1)),  # PyTorch's swap
        (x.transpose(), tx.permute(3, 2, 1, 0)), (x.transpose(3, 1, 2, 0), tx.permute(3, 1, 2, 0)),
        (x.transpose((1, 0, 3, 2)), tx.permute(1, 0, 3, 2)),
    ]
    for got, want in cases:
        assert got.shape == tuple(want.shape)
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    with pytest.raises(TypeError, match="squeeze: got both"):
        x.squeeze(1, axis=1)
    with pytest.raises(ValueError, match="unsqueeze: dim 5 is out of range"):
        x.unsqueeze(5)
    with pytest.raises(ValueError, match="permute: got 3 dims"):
        x.permute(0, 1, 2)
    with pytest.raises(ValueError, match="permute: axes .* not a permutation"):
        x.permute(0, 0, 1, 2)


def test_shape_ops_and_clone_gradients() -> None:
    a = np.random.default_rng(4).standard_normal((2, 1, 3))
    gradient_check(lambda t: t.unsqueeze(1) * 1.5, [a])
    gradient_check(lambda t: t.squeeze(1) ** 2, [a])
    gradient_check(lambda t: t.permute(2, 0, 1) * t.permute(2, 0, 1), [a])
    gradient_check(lambda t: t.clone() * t, [a])
    gradient_check(lambda t: t.double() * 2.0, [a])
    for f in (lambda t: t.unsqueeze(-1) * 3.0, lambda t: t.permute(1, 2, 0) ** 2,
              lambda t: t.clone() * t, lambda t: t.squeeze() * 2.0):
        _grads_match_numpy(f, [a])


def test_clone_copies_and_conversions_change_dtype() -> None:
    x = _t(np.array([1.7, -2.2, 0.0]), requires_grad=True)
    c = x.clone()
    c.data[0] = 9.0
    assert x.numpy()[0] == pytest.approx(1.7) and c.requires_grad and not c.is_leaf
    assert x.float().dtype == np.float32 and x.double().dtype == np.float64
    assert x.long().dtype == np.int64 and x.int().dtype == np.int32
    assert x.bool().dtype == np.bool_
    np.testing.assert_array_equal(x.long().numpy(), [1, -2, 0])  # truncation, as PyTorch
    assert not x.long().requires_grad  # integer casts are cut from the graph
    assert x.float().requires_grad  # float casts are differentiable
    assert x.to(np.float32).dtype == np.float32 and x.to(x) is x


def test_device_cpu_cuda_and_to() -> None:
    x = _t([1.0, 2.0], requires_grad=True)
    if x.backend == "numpy":
        assert x.device == "cpu" and str(x.device) == "cpu" and x.device.type == "cpu"
        assert x.device.index is None and repr(x.device) == "device(type='cpu')"
    else:
        assert x.device == "cuda:0" and str(x.device) == "cuda:0" and x.device.type == "cuda"
        assert x.device.index == 0 and repr(x.device) == "device(type='cuda', index=0)"
    c = x.cpu()
    assert c.backend == "numpy" and c.device == "cpu" and f"{c.device}" == "cpu"
    assert x.to("cpu").backend == "numpy" and x.to("numpy").backend == "numpy"
    assert x.to(x.device) is x and x.to(x.backend) is x
    if B.cuda_available():
        g = c.cuda()
        assert g.backend == "cuda" and g.device == "cuda:0" and g.is_cuda
        assert c.to("gpu").backend == "cuda" and c.to("cuda:0").backend == "cuda"
        # differentiable across backends: the gradient moves back
        (g * g).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
        with pytest.raises(ValueError, match="not the current CUDA device"):
            c.to("cuda:3")
    else:
        with pytest.raises(B.BackendUnavailable):
            c.cuda()
    with pytest.raises(ValueError, match=r"Tensor.to: unknown backend 'tpu'; valid names"):
        x.to("tpu")
    with pytest.raises(TypeError, match="Tensor.to: expected a backend name"):
        x.to(object())


def test_from_numpy_shares_memory_and_keeps_dtype() -> None:
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = gpucnn.from_numpy(a)
    assert t.dtype == np.float64 and t.backend == "numpy" and t.shape == (2, 3)
    a[0, 0] = 42.0
    assert t.numpy()[0, 0] == 42.0
    with pytest.raises(TypeError, match="from_numpy: expected a numpy.ndarray, got list"):
        gpucnn.from_numpy([1, 2])


def test_top_level_cat_and_stack_are_differentiable() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    x, y = _t(a), _t(b)
    np.testing.assert_allclose(gpucnn.cat([x, y]).numpy(),
                               torch.cat([torch.tensor(a), torch.tensor(b)]).numpy())
    np.testing.assert_allclose(gpucnn.stack((x, y), dim=2).numpy(),
                               torch.stack([torch.tensor(a), torch.tensor(b)], 2).numpy())
    gradient_check(lambda s, t: gpucnn.cat([s, t * 2.0], dim=1), [a, b])
    gradient_check(lambda s, t: gpucnn.stack([s, t, s], dim=0), [a, b])
    _grads_match_numpy(lambda s, t: gpucnn.cat([s, t], 0), [a, b])
    _grads_match_numpy(lambda s, t: gpucnn.stack([s * t, t], -1), [a, b])
    with pytest.raises(TypeError, match="cat: expected a list or tuple of Tensors|concat"):
        gpucnn.cat(x)


# ----------------------------------------------------------------------- backend aliases


def test_backend_aliases_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    assert B.canonical_name("cpu") == "numpy" and B.canonical_name("GPU") == "cuda"
    assert B.canonical_name("np") == "numpy" and B.canonical_name("auto") == "auto"
    assert B.canonical_name(gpucnn.Device("cpu")) == "numpy"
    assert gpucnn.zeros(2, backend="cpu").backend == "numpy"
    assert gpucnn.ones(2, backend="cpu").backend == "numpy"
    assert gpucnn.tensor([1.0], backend="cpu").backend == "numpy"
    assert Tensor([1.0], backend="cpu").backend == "numpy"
    assert isinstance(B.to_backend(np.zeros(2), "cpu"), np.ndarray)
    m = gpucnn.Sequential([L.Dense(2, input_shape=(3,))]).to("cpu")
    assert m.backend == "numpy"
    before = B.current()
    try:
        assert B.use("cpu").name == "numpy" and B.current() == "numpy"
        monkeypatch.setattr(B, "_active", None)
        monkeypatch.setenv("GPUCNN_BACKEND", "cpu")
        assert B.current() == "numpy"
        if B.cuda_available():
            assert B.use("gpu").name == "cuda"
            assert gpucnn.zeros(2, backend="gpu").backend == "cuda"
            monkeypatch.setattr(B, "_active", None)
            monkeypatch.setenv("GPUCNN_BACKEND", "GPU")
            assert B.current() == "cuda"
    finally:
        B.use(before)
    for bad, call in (("tpu", B.use), ("tpu", lambda n: gpucnn.zeros(2, backend=n)),
                      ("cuda:x", lambda n: _t([1.0]).to(n)), ("tpu", m.to)):
        with pytest.raises(ValueError, match=r"unknown backend .*valid names are .*numpy.*"
                                             r"cuda.*'cpu' = 'numpy', 'gpu'"):
            call(bad)
    with pytest.raises(TypeError, match="the backend must be a string, got None"):
        B.canonical_name(None)


# ----------------------------------------------------------------------- state dict errors


def _net() -> gpucnn.Sequential:
    m = gpucnn.Sequential([L.Dense(4, input_shape=(3,)), L.Dense(2)])
    m.build((3,))
    return m


def test_load_state_dict_names_missing_unexpected_and_misshaped_keys() -> None:
    m = _net()
    sd = m.state_dict()
    names = list(sd)
    del sd[names[0]]
    sd["extra.w"] = np.zeros((5, 6))
    with pytest.raises(gpucnn.StateDictError) as info:
        m.load_state_dict(sd)
    msg = str(info.value)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert f"missing keys ['{names[0]}'] (model shapes: {names[0]} (3, 4))" in msg \
        or f"missing keys ['{names[0]}'] (model shapes: {names[0]} (4, 3))" in msg
    assert "unexpected keys ['extra.w'] (state dict shapes: extra.w (5, 6))" in msg
    assert not msg.startswith("'")  # not KeyError's quoted repr
    # strict=False skips the keys but still refuses a wrong shape, naming both shapes
    res = m.load_state_dict(sd, strict=False)
    assert res == {"missing_keys": [names[0]], "unexpected_keys": ["extra.w"]}
    bad = m.state_dict()
    shape = bad[names[1]].shape
    bad[names[1]] = np.zeros((shape[0] + 1,))
    before = m.state_dict()
    for strict in (True, False):
        with pytest.raises(ValueError, match=rf"shape mismatch: '{names[1]}' has shape "
                                             rf"\({shape[0] + 1},\) in the state dict but "
                                             rf"\({shape[0]},\) in the model"):
            m.load_state_dict(bad, strict=strict)
    for k, v in m.state_dict().items():  # nothing was half-loaded
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(TypeError, match="expected a dict"):
        m.load_state_dict([1, 2])


def test_load_weights_with_a_misshaped_file_names_the_file_and_shapes(tmp_path) -> None:
    m = _net()
    path = tmp_path / "w.npz"
    m.save_weights(path)
    other = gpucnn.Sequential([L.Dense(5, input_shape=(3,)), L.Dense(2)])
    other.build((3,))
    with pytest.raises(ValueError, match=r"w.npz: .*shape mismatch: .*\(4,\) in the state dict "
                                         r"but \(5,\) in the model"):
        other.load_weights(path)
    small = gpucnn.Sequential([L.Dense(4, input_shape=(3,))])
    small.build((3,))
    with pytest.raises(KeyError, match=r"w.npz: .*unexpected keys \['1.weight', '1.bias'\]"):
        small.load_weights(path)
    small.load_weights(path, strict=False)
    np.testing.assert_array_equal(small.state_dict()["0.weight"], m.state_dict()["0.weight"])


# ----------------------------------------------------------------------- a PyTorch-style loop


def test_pytorch_style_training_loop_runs_and_accuracy_matches_numpy() -> None:
    """The loop of a PyTorch tutorial, with gpucnn imports: ``model.train()``, a DataLoader,
    ``zero_grad``/``backward``/``step``, ``argmax(dim=1) == y``, ``.to("cpu")``, ``size(0)``."""
    from gpucnn.data import DataLoader

    gpucnn.manual_seed(0)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((96, 4)).astype(np.float32)
    ys = (xs[:, 0] + xs[:, 1] > 0).astype(np.int64)
    device = "cuda" if B.current() == "cuda" else "cpu"
    model = gpucnn.Sequential([L.Dense(8, activation="relu", input_shape=(4,)), L.Dense(2)])
    model = model.to(device)
    opt = optim.SGD(model.parameters(), lr=0.5)
    loader = DataLoader((xs, ys), batch_size=32, shuffle=True, seed=1)  # yields Tensors

    for _epoch in range(5):
        model.train()
        correct, total, accs = 0, 0, []
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            out = model(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            pred = out.detach()
            acc = (pred.argmax(dim=1) == y).float().mean().item()
            # the same computation in NumPy (float32, as .float() makes it)
            want = float((pred.numpy().argmax(axis=1) == y.numpy()).astype(np.float32).mean())
            assert isinstance(acc, float) and acc == want
            accs.append(acc)
            correct += (pred.argmax(dim=1) == y).sum().item()
            total += y.size(0)
        assert correct / total == pytest.approx(np.mean(accs))
    model.eval()
    with gpucnn.no_grad():
        out = model(Tensor(xs).to(device))
        acc = (out.argmax(dim=1) == Tensor(ys).to(device)).float().mean().item()
    assert acc == float((out.to("cpu").numpy().argmax(axis=1) == ys).astype(np.float32).mean())
    assert acc > 0.8  # it learned the rule


def test_unchanged_pytorch_loop_over_a_dataloader() -> None:
    """Issue 16's loop, exactly as PyTorch writes it (only the imports differ): the loader's
    Tensors go through ``.to(device)``, a conv net, ``F.cross_entropy`` with int64 Tensor
    targets, ``argmax(dim=1) == yb`` and ``.float().mean().item()``."""
    from gpucnn.data import DataLoader

    gpucnn.manual_seed(0)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((64, 1, 6, 6)).astype(np.float32)
    ys = (xs[:, 0, :3].sum(axis=(1, 2)) > xs[:, 0, 3:].sum(axis=(1, 2))).astype(np.int64)
    device = "cpu" if B.current() == "numpy" else B.current()
    net = gpucnn.Sequential([L.Conv2D(4, 3, activation="relu", input_shape=(1, 6, 6)),
                             L.Flatten(), L.Dense(2)]).to(device)
    opt = optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
    loader = DataLoader((xs, ys), batch_size=16, shuffle=True, seed=2)

    losses, accs = [], []
    for _epoch in range(6):
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            out = net(xb); loss = F.cross_entropy(out, yb)  # noqa: E702 - the issue's loop
            opt.zero_grad(); loss.backward(); opt.step()  # noqa: E702
            acc = (out.argmax(dim=1) == yb).float().mean().item()
            assert isinstance(xb, Tensor) and xb.backend == next(net.parameters()).backend
            assert yb.dtype == np.int64 and not xb.requires_grad
            assert isinstance(acc, float) and 0.0 <= acc <= 1.0
            losses.append(loss.item())
            accs.append(acc)
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4]), losses  # it learns
    assert np.mean(accs[-4:]) > np.mean(accs[:4])
    # the targets come back to the host as PyTorch users move them
    xb, yb = next(iter(loader))
    host = yb.to("cpu")
    assert host.backend == "numpy" and yb.to("numpy").backend == "numpy"
    assert np.asarray(host).dtype == np.int64 and np.array_equal(np.sort(host.numpy()),
                                                                  np.sort(host.tolist()))
    assert Tensor(yb).data is yb.data  # Tensor(t) of a loader Tensor: no copy
    assert (yb == yb).all().item() and yb.view_as(yb).shape == yb.shape


def test_numpy_asarray_of_a_tensor_and_view_as() -> None:
    """``np.asarray(t)`` of a CPU tensor is its array (no copy), as for a CPU torch tensor, so
    ``np.concatenate`` of loader batches works; a device tensor refuses the implicit copy."""
    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    t = Tensor(a, backend="numpy")
    assert np.asarray(t) is a and np.asarray(t, dtype=np.float32).dtype == np.float32
    assert np.array(t) is not a and np.array_equal(np.array(t), a)  # np.array copies
    assert np.concatenate([t, t]).dtype == np.int64
    assert t.view_as(Tensor(np.zeros(6))).shape == (6,)
    if B.current() != "numpy":
        with pytest.raises(TypeError, match=r"t.numpy\(\) or t.cpu\(\)"):
            np.asarray(_t(a))
