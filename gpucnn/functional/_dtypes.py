"""The dtype policy of every op in :mod:`gpucnn.functional` (one rule, checked in one place).

* **Floating ops** compute in float32 or float64 only, the dtypes every kernel of ours (and
  every NumPy twin) is written and tested for: ``conv2d``, ``linear``, ``matmul``, every
  pooling op, ``batch_norm``, ``dropout``/``dropout2d``, every activation, ``softmax`` /
  ``log_softmax``, every loss's input (and float targets), and the element-wise math
  ``mean``, ``exp``, ``log``, ``sqrt``. Integer and bool inputs are REFUSED with a
  ``TypeError`` naming the op and the dtype (PyTorch also refuses most of these: ``mean``,
  ``batch_norm``, ``softmax``, ``dropout`` on integers, ``linear``/``matmul`` on bools; where
  it computes in integers, e.g. ``linear`` on int64, the answer is rarely what a network
  wants, so we refuse rather than silently truncate). float16 is refused the same way: no
  kernel of ours takes it, and NumPy's float16 arithmetic does not accumulate as PyTorch's
  does, so a float16 result would be a silently different answer.
  Inputs of one op must share one dtype (``conv2d``, ``linear``, ``matmul``, ``prelu``):
  mixing float32 and float64 is a ``TypeError``, as in PyTorch; cast first.
* **Data-movement and selection ops** are exact in any dtype and accept every numeric and
  bool dtype, as PyTorch: ``reshape``, ``flatten``, ``transpose``, ``permute``, ``concat`` /
  ``cat``, ``stack``, ``pad``, ``where``, ``clip``, ``abs``, ``max``; ``sum`` of integers or
  bools gives int64 (PyTorch's rule) and of floats keeps the dtype. Strings and Python
  objects are refused by :class:`~gpucnn.tensor.Tensor` itself.
* Class-index targets of the losses are integers (or whole-valued floats), as before.

README sentence: "Ops that compute (convolution, linear/matmul, pooling, normalisation,
dropout, activations, softmax, losses, mean/exp/log/sqrt) take float32 or float64 and raise a
TypeError naming the op for integer, bool or float16 inputs; shape and selection ops
(reshape, transpose, concat, pad, where, clip, abs, max, sum) take any numeric or bool dtype."
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FLOAT_DTYPES", "require_float", "require_same_dtype"]

#: The dtypes every floating op computes in.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def require_float(op: str, x: Any, name: str = "tensor") -> Any:
    """``x`` (a Tensor or array) unchanged if its dtype is float32 or float64.

    Raises:
        TypeError: any other dtype (integer, bool, float16, complex...), naming ``op``,
            ``name`` and the dtype.
    """
    dt = np.dtype(x.dtype)
    if dt in FLOAT_DTYPES:
        return x
    if dt.kind in "iub":
        hint = "cast it with .astype('float32') (and scale integer images) first"
    elif dt == np.float16:
        hint = "float16 is not supported; cast it with .astype('float32')"
    else:
        hint = "cast it with .astype('float32')"
    raise TypeError(
        f"{op}: expected a floating-point {name}, got dtype {dt} (float32 or float64 only); {hint}"
    )


def require_same_dtype(op: str, a: Any, b: Any, names: tuple[str, str]) -> None:
    """Refuse two inputs of one op with different dtypes (PyTorch does too)."""
    if np.dtype(a.dtype) != np.dtype(b.dtype):
        raise TypeError(
            f"{op}: {names[0]} dtype {a.dtype} and {names[1]} dtype {b.dtype} differ; cast one "
            f"of them"
        )
