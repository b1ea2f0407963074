"""Keras compatibility: a Keras tutorial runs with only its imports changed.

``from gpucnn.keras.models import Sequential``; ``from gpucnn.keras.layers import Conv2D,
MaxPooling2D, Flatten, Dense, Dropout``; ``from gpucnn.keras import Input``. These are
gpucnn's own objects; the image layers default to Keras's ``data_format="channels_last"``
(NHWC inputs, ``input_shape=(H, W, C)``), the kernels still run NCHW (one transpose at the
model's input and output). Submodules: ``layers``, ``models``, ``optimizers``, ``losses``,
``callbacks``, ``metrics``, ``utils``.
"""

from gpucnn.keras import callbacks, layers, losses, metrics, models, optimizers, utils
from gpucnn.keras.layers import Input, InputLayer
from gpucnn.keras.models import Model, Sequential, load_model

__all__ = [
    "Input",
    "InputLayer",
    "Model",
    "Sequential",
    "load_model",
    "callbacks",
    "layers",
    "losses",
    "metrics",
    "models",
    "optimizers",
    "utils",
]
