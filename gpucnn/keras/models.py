"""Keras's ``models`` module: :class:`~gpucnn.Sequential`, :class:`~gpucnn.Model`,
:func:`~gpucnn.load_model`. A Sequential takes the data format of its layers (channels-last
with :mod:`gpucnn.keras.layers`)."""

from gpucnn.model import Model, Sequential
from gpucnn.saving import load_model

__all__ = ["Model", "Sequential", "load_model"]
