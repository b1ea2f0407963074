"""Keras's ``utils`` module: ``to_categorical`` (:func:`gpucnn.utils.to_categorical`)."""

from gpucnn.utils import to_categorical

__all__ = ["to_categorical"]
