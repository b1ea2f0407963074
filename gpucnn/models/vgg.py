"""VGG-11 (Simonyan & Zisserman 2015, configuration "A"), optionally with batch norm.

Eight 3x3 convolutions (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M; M = 2x2 max
pool), each followed by batch norm (``batch_norm=True``) and ReLU, then a classifier.
"""

from __future__ import annotations

from gpucnn.layers import (
    Activation,
    AdaptiveAveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPooling2D,
)
from gpucnn.model import Sequential
from gpucnn.module import Module

__all__ = ["VGG11_CONFIG", "vgg11"]

VGG11_CONFIG: tuple = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg11(
    num_classes: int = 10,
    in_channels: int = 3,
    batch_norm: bool = True,
    input_size: int = 32,
    dropout: float = 0.5,
    name: str | None = None,
) -> Sequential:
    """VGG-11 as a :class:`~gpucnn.Sequential` (built at once).

    ``input_size=32`` (CIFAR): after five pools the map is 512x1x1; the classifier is
    Flatten, Dense 512 + ReLU + Dropout, Dense 512 + ReLU + Dropout, Dense ``num_classes``
    (9,756,426 parameters with batch norm, 10 classes). ``input_size=224`` (ImageNet, as
    torchvision): 7x7 adaptive average pool, then Dense 4096, 4096, ``num_classes`` with
    dropout (132,863,336 parameters without batch norm for 1000 classes; slow on NumPy).

    Input (N, in_channels, input_size, input_size); logits (N, num_classes).
    """
    if input_size not in (32, 224):
        raise ValueError(f"vgg11: input_size must be 32 (CIFAR) or 224 (ImageNet), "
                         f"got {input_size!r}")
    layers: list[Module] = []
    c_in = (in_channels, input_size, input_size)
    for v in VGG11_CONFIG:
        if v == "M":
            layers.append(MaxPooling2D(2))
            continue
        kw = {"input_shape": c_in} if not layers else {}
        layers.append(Conv2D(int(v), 3, padding=1, **kw))
        if batch_norm:
            layers.append(BatchNormalization(momentum=0.9, epsilon=1e-5))
        layers.append(Activation("relu"))
    width = 512 if input_size == 32 else 4096
    if input_size == 224:
        layers.append(AdaptiveAveragePooling2D(7))
    layers += [
        Flatten(),
        Dense(width, activation="relu"),
        Dropout(dropout),
        Dense(width, activation="relu"),
        Dropout(dropout),
        Dense(num_classes),
    ]
    return Sequential(layers, name=name or ("vgg11_bn" if batch_norm else "vgg11"))
