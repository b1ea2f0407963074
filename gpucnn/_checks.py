"""Shared argument checks: numbers, integers and axes of the public API.

Every check raises ``TypeError`` (wrong kind of value: a string, ``None``, a float where an
int is needed, a tuple) or ``ValueError`` (right kind, out of range: negative, NaN, infinite)
and names the op or layer and the offending value, so a bad argument never surfaces as a raw
NumPy or Python error from deep inside an op. ``bool`` is never accepted as a number.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["check_number", "check_int", "check_axis", "check_axes", "check_bool"]


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fmt(v: Any) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _range_text(minimum: Any, maximum: Any, min_open: bool, max_open: bool) -> str:
    if minimum is not None and maximum is not None:
        return (f"in {'(' if min_open else '['}{_fmt(minimum)}, {_fmt(maximum)}"
                f"{')' if max_open else ']'}")
    if minimum is not None:
        return f"{'>' if min_open else '>='} {_fmt(minimum)}"
    return f"{'<' if max_open else '<='} {_fmt(maximum)}"


def check_number(
    op: str,
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    min_open: bool = False,
    max_open: bool = False,
    integer: bool = False,
    allow_none: bool = False,
    finite: bool = True,
) -> Any:
    """``value`` as a Python ``float`` (or ``int`` with ``integer=True``) after checking it.

    Args:
        op: the op, layer or method named in the message.
        name: the argument's name.
        minimum, maximum: bounds (inclusive unless ``min_open`` / ``max_open``).
        integer: require an integral value (``1.5``, ``2.0`` and ``True`` are refused).
        allow_none: return ``None`` for ``None`` instead of refusing it.
        finite: refuse NaN and infinities (NaN is always refused).

    Raises:
        TypeError: not a real number (str, None, tuple, bool...), or not an int when
            ``integer``.
        ValueError: NaN, an infinity (when ``finite``) or out of range.
    """
    if value is None and allow_none:
        return None
    if integer:
        if not _is_int(value):
            raise TypeError(f"{op}: {name} must be an int, got {value!r} ({type(value).__name__})")
        out: Any = int(value)
    else:
        if not _is_real(value):
            raise TypeError(
                f"{op}: {name} must be a real number, got {value!r} ({type(value).__name__})"
            )
        out = float(value)
        if math.isnan(out):
            want = ("a number" if minimum is None and maximum is None
                    else _range_text(minimum, maximum, min_open, max_open))
            raise ValueError(f"{op}: {name} must be {want}, got nan")
        if finite and math.isinf(out):
            raise ValueError(f"{op}: {name} must be finite, got {out}")
    low_bad = minimum is not None and (out <= minimum if min_open else out < minimum)
    high_bad = maximum is not None and (out >= maximum if max_open else out > maximum)
    if low_bad or high_bad:
        raise ValueError(
            f"{op}: {name} must be {_range_text(minimum, maximum, min_open, max_open)}, "
            f"got {value!r}"
        )
    return out


def check_int(
    op: str, name: str, value: Any, minimum: int | None = None, maximum: int | None = None,
    *, allow_none: bool = False,
) -> Any:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (see :func:`check_number`)."""
    return check_number(op, name, value, minimum, maximum, integer=True, allow_none=allow_none)


def check_bool(op: str, name: str, value: Any) -> bool:
    """``value`` as a ``bool``: Python/NumPy bools and the ints 0 and 1 only."""
    if isinstance(value, bool) or (hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0
                                   and value.dtype.kind == "b"):
        return bool(value)
    if _is_int(value) and int(value) in (0, 1):
        return bool(value)
    raise TypeError(f"{op}: {name} must be a bool, got {value!r} ({type(value).__name__})")


def check_axis(op: str, axis: Any, ndim: int, name: str = "axis", shape: Any = None) -> int:
    """One axis of an ``ndim``-D tensor (of ``shape``, named in the message when given),
    normalised to ``[0, ndim)``."""
    if not _is_int(axis):
        raise TypeError(f"{op}: {name} must be an int, got {axis!r} ({type(axis).__name__})")
    a = int(axis)
    if not -max(ndim, 1) <= a < max(ndim, 1):
        raise ValueError(
            f"{op}: {name} {a} is out of range for a {ndim}-D tensor"
            f"{'' if shape is None else ' ' + str(tuple(shape))} (expected "
            f"{-max(ndim, 1)} <= {name} < {max(ndim, 1)})"
        )
    return a % max(ndim, 1)


def check_axes(
    op: str, axis: Any, ndim: int, name: str = "axis", shape: Any = None
) -> tuple[int, ...]:
    """``None`` (every axis), one int or a tuple/list of distinct ints, normalised."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        if len(axis) == 0:
            # PyTorch reduces over EVERY dim for dim=() (a documented trap), NumPy over none:
            # the two disagree, so refuse it rather than pick one silently.
            raise ValueError(f"{op}: {name} is an empty tuple; pass None to reduce over every "
                             "axis")
        axes = tuple(check_axis(op, a, ndim, name, shape) for a in axis)
        if len(set(axes)) != len(axes):
            raise ValueError(f"{op}: {name} {tuple(axis)!r} repeats an axis")
        return axes if ndim else ()
    if not _is_int(axis):
        raise TypeError(
            f"{op}: {name} must be an int, a tuple of ints or None, got {axis!r} "
            f"({type(axis).__name__})"
        )
    a = check_axis(op, axis, ndim, name, shape)
    return (a,) if ndim else ()  # a 0-d tensor reduces over no axis (PyTorch: dim 0 or -1)
