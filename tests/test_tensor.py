"""Autograd core: accumulation, topological order, broadcasting, no_grad, dtypes, backends."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import Parameter, Tensor
from gpucnn.testing.gradcheck import gradient_check


def test_default_dtypes() -> None:
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(3.0).dtype == np.float32
    assert Tensor(np.zeros(3)).dtype == np.float64  # arrays keep their dtype
    assert Tensor([1, 2]).dtype.kind == "i"  # integer lists stay integer (class labels)
    assert gpucnn.zeros(2, 3).dtype == np.float32


def test_gradient_accumulates_when_used_twice() -> None:
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = (x * x + x * 3.0).sum()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 3)
    # a second backward on a new graph adds to .grad, as PyTorch does
    (x * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 5)


def test_diamond_graph_topological_order() -> None:
    x = Tensor(np.array(2.0), requires_grad=True)
    a = x * 3.0
    b = a * a  # 9x^2
    c = a + b  # 3x + 9x^2
    d = c * a  # (3x + 9x^2) * 3x = 9x^2 + 27x^3
    d.backward()
    assert x.grad.item() == pytest.approx(18 * 2 + 81 * 4)


def test_deep_chain_does_not_recurse() -> None:
    x = Tensor(np.ones(3), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones(3))


@pytest.mark.parametrize(
    "sa, sb", [((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((), (2,))]
)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_broadcast_gradients(sa: tuple, sb: tuple, op: str) -> None:
    r = np.random.default_rng(0)
    a = r.uniform(1, 2, sa)
    b = r.uniform(1, 2, sb)
    fn = {
        "add": lambda x, y: x + y,
        "sub": lambda x, y: x - y,
        "mul": lambda x, y: x * y,
        "div": lambda x, y: x / y,
    }[op]
    gradient_check(fn, [a, b])


def test_pow_neg_and_scalars_on_both_sides() -> None:
    r = np.random.default_rng(1)
    gradient_check(lambda x: 2.0 - x**3 / 4.0 + (-x) * 0.5 + 1.0 / x, [r.uniform(1, 2, (3, 2))])


def test_no_grad_and_detach() -> None:
    x = Tensor(np.ones(2), requires_grad=True)
    with gpucnn.no_grad():
        y = x * 2.0
        assert not gpucnn.is_grad_enabled()
        with gpucnn.enable_grad():
            z = x * 2.0
    assert not y.requires_grad and y.is_leaf
    assert z.requires_grad
    d = (x * 3.0).detach()
    assert not d.requires_grad and d.is_leaf


def test_backward_errors() -> None:
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2.0).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(1)).backward()
    with pytest.raises(ValueError, match="does not match"):
        (x * 2.0).backward(np.ones(3))
    y = (x * 2.0).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="already freed"):
        y.backward()


def test_retain_graph_allows_second_backward() -> None:
    x = Tensor(np.ones(2), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 4.0])


def test_getitem_basic_and_advanced() -> None:
    r = np.random.default_rng(2)
    gradient_check(lambda x: x[1:, ::2] * 1.0, [r.standard_normal((3, 5))])
    idx = np.array([0, 2, 0, 1])  # repeated index: gradients must add
    gradient_check(lambda x: x[idx] * 1.0, [r.standard_normal((3, 2))])


def test_item_numpy_and_repr() -> None:
    t = Tensor([[1.5]])
    assert t.item() == 1.5 and isinstance(t.numpy(), np.ndarray)
    with pytest.raises(ValueError, match="1"):
        Tensor([1.0, 2.0]).item()
    assert gpucnn.backend.current() in repr(t)


def test_cast_is_differentiable() -> None:
    x = Tensor(np.ones(3), requires_grad=True)
    y = x.astype(np.float32)
    assert y.dtype == np.float32
    (y * 2.0).sum().backward()
    assert x.grad.dtype == np.float64


def test_mixing_backends_raises() -> None:
    class FakeCupyArray:  # anything not a NumPy array is treated as a device array
        __module__ = "cupy._core.core"
        shape = (2,)
        dtype = np.dtype(np.float32)
        ndim = 1
        size = 2

    a = Tensor(np.ones(2, dtype=np.float32))
    b = Tensor.__new__(Tensor)
    b.data, b.requires_grad, b.grad, b._node = FakeCupyArray(), False, None, None
    with pytest.raises(RuntimeError, match="different backends"):
        F.basic._MatMul.apply(a, b)


def test_manual_seed_makes_draws_repeatable() -> None:
    gpucnn.manual_seed(7)
    a = gpucnn.randn(4, 3).numpy()
    gpucnn.manual_seed(7)
    b = gpucnn.randn(4, 3).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, gpucnn.randn(4, 3).numpy())


def test_tensor_ops_on_backend(backend) -> None:  # noqa: ANN001
    x = gpucnn.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    assert x.backend == backend.name
    y = (x @ x).sum()
    y.backward()
    xn = x.numpy()
    np.testing.assert_allclose(x.grad.numpy(), np.ones((2, 2)) @ xn.T + xn.T @ np.ones((2, 2)))


def test_leaf_grad_written_into_preallocated_buffer() -> None:
    """A Parameter whose ``_flat_grad`` slot a flat optimizer set gets its gradient written
    into that array, accumulates there, and falls back to a copy when the buffer does not match."""
    x = Parameter(np.array([1.0, 2.0, 3.0]))
    buf = np.full(3, 99.0)
    x._flat_grad = buf
    (x * x).sum().backward()
    assert x.grad.data is buf
    np.testing.assert_array_equal(buf, [2.0, 4.0, 6.0])  # overwritten, not added to
    (x * 3.0).sum().backward()
    assert x.grad.data is buf
    np.testing.assert_array_equal(buf, [5.0, 7.0, 9.0])  # accumulated in place
    x.grad = None
    (x * 1.0).sum().backward()
    assert x.grad.data is buf
    np.testing.assert_array_equal(buf, [1.0, 1.0, 1.0])
    # 0-d leaf: NumPy returns scalars for 0-d products; still written into the buffer
    s = Parameter(np.array(2.0))
    s._flat_grad = np.zeros(())
    (s * s).backward()
    assert s.grad.data is s._flat_grad and s.grad.item() == 4.0
    # buffers of another dtype or shape are not used
    for bad in (np.zeros(3, dtype=np.float32), np.zeros(4)):
        y = Parameter(np.array([1.0, 2.0, 3.0]))
        y._flat_grad = bad
        (y * 2.0).sum().backward()
        assert y.grad.data is not bad and y.grad.dtype == np.float64
        np.testing.assert_array_equal(y.grad.numpy(), 2.0)
        np.testing.assert_array_equal(bad, 0.0)
