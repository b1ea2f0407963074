"""A small Inception network (after Szegedy et al., "Going Deeper with Convolutions", 2015).

A stack of :class:`gpucnn.layers.InceptionBlock` s (four branches concatenated on channels:
1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3/1 max pool -> 1x1; every conv with bias and ReLU) after a
3x3 conv + batch-norm stem, with one 3x3/2 max pool between the blocks, then global average
pooling and a linear classifier.
"""

from __future__ import annotations

from gpucnn.layers import (
    Activation,
    BatchNormalization,
    Conv2D,
    Dense,
    GlobalAveragePooling2D,
    InceptionBlock,
    MaxPooling2D,
)
from gpucnn.model import Sequential
from gpucnn.module import Module

__all__ = ["INCEPTION_SMALL_STEM", "INCEPTION_SMALL_WIDTHS", "inception_small"]

INCEPTION_SMALL_STEM = 32
# (c1, c3_reduce, c3, c5_reduce, c5, pool_proj) per InceptionBlock; "pool" = 3x3/2 max pool
INCEPTION_SMALL_WIDTHS: tuple = (
    (16, 16, 24, 4, 8, 8),
    (24, 24, 32, 8, 16, 16),
    "pool",
    (32, 32, 48, 8, 16, 16),
    (40, 32, 56, 8, 16, 16),
)


def inception_small(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    name: str | None = None,
) -> Sequential:
    """The small Inception network as a built :class:`~gpucnn.Sequential`.

    Input (N, in_channels, input_size, input_size) (32 for CIFAR, 28 for MNIST), logits
    (N, num_classes). Block widths: :data:`INCEPTION_SMALL_WIDTHS` (output channels
    56, 88, 112, 128); 77,390 parameters for 3 input channels and 10 classes.
    """
    layers: list[Module] = [
        Conv2D(INCEPTION_SMALL_STEM, 3, padding=1, use_bias=False,
               input_shape=(in_channels, input_size, input_size), name="stem_conv"),
        BatchNormalization(momentum=0.9, epsilon=1e-5, name="stem_bn"),
        Activation("relu", name="stem_relu"),
    ]
    for i, spec in enumerate(INCEPTION_SMALL_WIDTHS):
        if spec == "pool":
            layers.append(MaxPooling2D(3, strides=2, padding=1, name=f"pool{i}"))
        else:
            layers.append(InceptionBlock(*spec, name=f"inception{i}"))
    layers += [GlobalAveragePooling2D(name="gap"), Dense(num_classes, name="fc")]
    return Sequential(layers, name=name or "inception_small")
