"""Keras-named layers with Keras's default ``data_format="channels_last"``.

The image layers here are :mod:`gpucnn.layers`'s with only that default changed (a call
builds the gpucnn layer, so saving, ``get_config`` and ``isinstance`` work as for it); the
others are gpucnn's own. ``Concatenate`` defaults to ``axis=-1`` and ``BatchNormalization``
to the channels-last channel axis, as in Keras.
"""

from __future__ import annotations

from gpucnn import layers as _L
from gpucnn.keras._defaults import channels_last as _cl
from gpucnn.layers import (
    ELU,
    Activation,
    Add,
    Dense,
    Dropout,
    Input,
    InputLayer,
    Layer,
    LeakyReLU,
    ReLU,
)

__all__ = [
    "Layer",
    "Input",
    "InputLayer",
    "Conv2D",
    "Convolution2D",
    "ZeroPadding2D",
    "MaxPooling2D",
    "MaxPool2D",
    "AveragePooling2D",
    "AvgPool2D",
    "GlobalAveragePooling2D",
    "GlobalAvgPool2D",
    "GlobalMaxPooling2D",
    "GlobalMaxPool2D",
    "AdaptiveAveragePooling2D",
    "AdaptiveMaxPooling2D",
    "BatchNormalization",
    "Flatten",
    "Reshape",
    "SpatialDropout2D",
    "PReLU",
    "Softmax",
    "Concatenate",
    "ResidualBlock",
    "InceptionBlock",
    "Dense",
    "Dropout",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "Add",
]

Conv2D = _cl(_L.Conv2D)
ZeroPadding2D = _cl(_L.ZeroPadding2D)
MaxPooling2D = _cl(_L.MaxPooling2D)
AveragePooling2D = _cl(_L.AveragePooling2D)
GlobalAveragePooling2D = _cl(_L.GlobalAveragePooling2D)
GlobalMaxPooling2D = _cl(_L.GlobalMaxPooling2D)
AdaptiveAveragePooling2D = _cl(_L.AdaptiveAveragePooling2D)
AdaptiveMaxPooling2D = _cl(_L.AdaptiveMaxPooling2D)
BatchNormalization = _cl(_L.BatchNormalization)
Flatten = _cl(_L.Flatten)
Reshape = _cl(_L.Reshape)
SpatialDropout2D = _cl(_L.SpatialDropout2D)
PReLU = _cl(_L.PReLU)
Softmax = _cl(_L.Softmax)
Concatenate = _cl(_L.Concatenate, axis=-1)
ResidualBlock = _cl(_L.ResidualBlock)
InceptionBlock = _cl(_L.InceptionBlock)

# Keras's aliases
Convolution2D = Conv2D
MaxPool2D = MaxPooling2D
AvgPool2D = AveragePooling2D
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalMaxPool2D = GlobalMaxPooling2D
