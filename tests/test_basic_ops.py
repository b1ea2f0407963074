"""Shape, linear-algebra, element-wise and reduction ops: gradients and PyTorch parity."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn.functional as F
from gpucnn import Tensor
from gpucnn.testing.gradcheck import gradient_check

R = np.random.default_rng(3)


@pytest.mark.parametrize(
    "sa, sb",
    [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4)), ((2, 1, 3, 4), (5, 4, 2))],
)
def test_matmul_grad(sa: tuple, sb: tuple) -> None:
    gradient_check(F.matmul, [R.standard_normal(sa), R.standard_normal(sb)])


def test_linear_grad_with_and_without_bias() -> None:
    x, w, b = R.standard_normal((4, 3)), R.standard_normal((5, 3)), R.standard_normal(5)
    gradient_check(F.linear, [x, w, b])
    gradient_check(F.linear, [x, w])
    gradient_check(F.linear, [R.standard_normal((2, 4, 3)), w, b])


def test_linear_bad_shapes_name_the_op() -> None:
    x = Tensor(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"linear: input has 3 features.*expects 2"):
        F.linear(x, Tensor(np.ones((5, 2))))
    with pytest.raises(ValueError, match=r"linear: bias must have shape \(5,\)"):
        F.linear(x, Tensor(np.ones((5, 3))), Tensor(np.ones(4)))
    with pytest.raises(ValueError, match="matmul: inner dimensions"):
        F.matmul(x, Tensor(np.ones((2, 2))))


def test_shape_ops_grad() -> None:
    x = R.standard_normal((2, 3, 4))
    gradient_check(lambda t: F.reshape(t, (4, 6)), [x])
    gradient_check(lambda t: F.flatten(t), [x])
    gradient_check(lambda t: F.transpose(t, (2, 0, 1)), [x])
    gradient_check(lambda t: F.permute(t, 1, 2, 0), [x])
    gradient_check(lambda a, b: F.concat([a, b], axis=1), [x, R.standard_normal((2, 2, 4))])
    gradient_check(lambda a, b: F.stack([a, b], axis=1), [x, R.standard_normal((2, 3, 4))])
    gradient_check(lambda t: F.pad(t, (1, 2, 0, 1), value=0.5), [x])


def test_shape_op_errors() -> None:
    x = Tensor(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"reshape: cannot reshape \(2, 3, 4\) into \(5, 5\)"):
        F.reshape(x, (5, 5))
    with pytest.raises(ValueError, match="concat: tensor 1 has shape"):
        F.concat([x, Tensor(np.ones((2, 3, 5)))], axis=1)
    with pytest.raises(ValueError, match="transpose"):
        F.transpose(x, (0, 0, 1))
    with pytest.raises(ValueError, match="pad"):
        F.pad(x, (1,))


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2), -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_grad(axis: object, keepdims: bool) -> None:
    x = R.permutation(24).reshape(2, 3, 4).astype(float)  # tie-free for max
    gradient_check(lambda t: F.sum(t, axis=axis, keepdims=keepdims), [x])
    gradient_check(lambda t: F.mean(t, axis=axis, keepdims=keepdims), [x])
    gradient_check(lambda t: F.max(t, axis=axis, keepdims=keepdims), [x])


def test_elementwise_grad() -> None:
    x = R.uniform(0.5, 2.0, (3, 4))
    gradient_check(F.exp, [x])
    gradient_check(F.log, [x])
    gradient_check(F.sqrt, [x])
    gradient_check(F.abs, [x - 1.25])
    gradient_check(lambda t: F.clip(t, 0.8, 1.5), [x])
    cond = x > 1.0
    gradient_check(lambda a, b: F.where(cond, a, b), [x, R.standard_normal((4,))])


def test_max_splits_gradient_between_ties() -> None:
    x = Tensor(np.array([[1.0, 3.0, 3.0]]), requires_grad=True)
    F.max(x, axis=1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0.0, 0.5, 0.5]])


def test_nan_propagates() -> None:
    x = Tensor(np.array([1.0, np.nan, 2.0]))
    assert np.isnan(F.sum(x).item()) and np.isnan(F.max(x).item())


def test_torch_parity_linear_and_reductions() -> None:
    torch = pytest.importorskip("torch")
    x = R.standard_normal((6, 5))
    w = R.standard_normal((3, 5))
    b = R.standard_normal(3)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.linear(tx, tw, tb).amax(dim=1).mean()
    ty.backward()
    gx, gw, gb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.mean(F.max(F.linear(gx, gw, gb), axis=1))
    y.backward()
    np.testing.assert_allclose(y.item(), ty.item(), rtol=1e-12)
    for g, t in ((gx, tx), (gw, tw), (gb, tb)):
        np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-12)
