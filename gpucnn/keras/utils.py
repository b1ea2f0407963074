"""Keras's ``utils`` module: ``to_categorical`` (:func:`gpucnn.utils.to_categorical`)."""

from __future__ import annotations

from typing import Any

__all__ = ["to_categorical"]


def to_categorical(*args: Any, **kwargs: Any) -> Any:
    """One-hot encode integer class labels: :func:`gpucnn.utils.to_categorical`."""
    try:
        from gpucnn.utils import to_categorical as impl
    except ImportError as exc:  # gpucnn.utils not in this version
        raise ImportError(
            "gpucnn.keras.utils.to_categorical needs gpucnn.utils.to_categorical, which this "
            f"gpucnn does not have ({exc})"
        ) from exc
    return impl(*args, **kwargs)
