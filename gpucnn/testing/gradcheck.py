"""Numerical gradient checks: float64 central differences against ``Tensor.backward``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpucnn.tensor import Tensor

__all__ = ["numerical_grad", "gradient_check"]


def numerical_grad(
    f: Callable[..., Tensor], inputs: Sequence[Tensor], index: int, eps: float = 1e-6
) -> np.ndarray:
    """d(sum(f(*inputs) * w))/d(inputs[index]) by central differences, element by element.

    ``f`` must return a tensor; the weights ``w`` are fixed (see :func:`gradient_check`).
    """
    x = inputs[index]
    data = x.data
    grad = np.zeros(data.shape, dtype=np.float64)
    flat = data.reshape(-1)
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i].item()
        flat[i] = old + eps
        fp = float(f(*inputs).data.sum())
        flat[i] = old - eps
        fm = float(f(*inputs).data.sum())
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return grad


def gradient_check(
    f: Callable[..., Tensor],
    inputs: Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    seed: int = 0,
) -> None:
    """Assert that analytic gradients of ``f`` match float64 central differences.

    Args:
        f: function of tensors returning a tensor (any shape).
        inputs: arrays or tensors; each floating one is checked (made float64, NumPy).
        eps, atol, rtol: step and tolerances.
        seed: seeds the random output weights ``w`` so every output element matters.

    Raises:
        AssertionError naming the input index and the worst element on mismatch.
    """
    tensors = []
    for a in inputs:
        arr = a.numpy() if isinstance(a, Tensor) else np.asarray(a)
        if arr.dtype.kind == "f":
            tensors.append(Tensor(arr.astype(np.float64), requires_grad=True))
        else:
            tensors.append(Tensor(arr))
    out = f(*tensors)
    rng = np.random.default_rng(seed)
    w = np.asarray(rng.standard_normal(out.shape), dtype=np.float64)

    def weighted(*ts: Tensor) -> Tensor:
        return f(*ts) * Tensor(w)

    for t in tensors:
        t.grad = None
    weighted(*tensors).sum().backward()
    for i, t in enumerate(tensors):
        if not t.requires_grad:
            continue
        analytic = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
        numeric = numerical_grad(weighted, tensors, i, eps=eps)
        if not np.allclose(analytic, numeric, atol=atol, rtol=rtol):
            err = np.abs(analytic - numeric)
            j = np.unravel_index(int(np.argmax(err)), err.shape)
            raise AssertionError(
                f"gradient mismatch for input {i} (shape {t.shape}): at {j} analytic "
                f"{analytic[j]:.8g} vs numeric {numeric[j]:.8g}; max abs error {err.max():.3g}"
            )
