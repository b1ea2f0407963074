"""Keras-named layers (NCHW; PyTorch weight layouts), built lazily from their first input.

``from gpucnn import layers``; ``layers.Conv2D(8, 5, activation="relu", input_shape=(3, 32,
32))``. Every layer has ``output_shape(input_shape)``, ``flops(input_shape)`` (per sample,
multiply-add = 2) and ``get_config()``; all are registered for :func:`gpucnn.load_model`.

Channels-last: the image layers take ``data_format="channels_first" | "channels_last" |
None`` (``None``: :func:`gpucnn.config.image_data_format`, read at construction).
``Conv2D(32, 3, input_shape=(100, 100, 1), data_format="channels_last")`` reads
``input_shape`` as (H, W, C); a channels-last ``Sequential`` takes and returns NHWC arrays,
transposing once at its input and output (the kernels stay NCHW). ``Input(shape=...)`` /
``InputLayer`` declare a ``Sequential``'s input shape. :mod:`gpucnn.keras` has the same
layers with Keras's channels-last default.
"""

from gpucnn.layers.base import Layer
from gpucnn.layers.blocks import InceptionBlock, ResidualBlock
from gpucnn.layers.conv import Conv2D, ZeroPadding2D
from gpucnn.layers.core import (
    ELU,
    Activation,
    Add,
    Concatenate,
    Dense,
    Dropout,
    Flatten,
    Input,
    InputLayer,
    LeakyReLU,
    PReLU,
    ReLU,
    Reshape,
    Softmax,
    SpatialDropout2D,
)
from gpucnn.layers.normalization import BatchNormalization
from gpucnn.layers.pooling import (
    AdaptiveAveragePooling2D,
    AdaptiveMaxPooling2D,
    AveragePooling2D,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    MaxPooling2D,
)

__all__ = [
    "Layer",
    "Input",
    "InputLayer",
    "Conv2D",
    "ZeroPadding2D",
    "Dense",
    "Flatten",
    "Reshape",
    "Dropout",
    "SpatialDropout2D",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Softmax",
    "Add",
    "Concatenate",
    "BatchNormalization",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "AdaptiveAveragePooling2D",
    "AdaptiveMaxPooling2D",
    "ResidualBlock",
    "InceptionBlock",
]
