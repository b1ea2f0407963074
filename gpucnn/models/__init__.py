"""Model zoo: LeNet-5, a small LeNet, CIFAR and ImageNet ResNets, a small Inception, VGG-11.

Every builder takes ``num_classes`` and ``in_channels``, returns a built, registered
:class:`~gpucnn.Model` (``compile``/``fit``, ``model.save`` / :func:`gpucnn.saving.load_model`
work) whose output is logits ``(N, num_classes)`` for NCHW input. :func:`get_model` looks
builders up by name.

=================  =====================  ===============================================
name               input (C, H, W)        parameters (defaults)
=================  =====================  ===============================================
lenet5             (1, 28, 28)            61,706
seed_lenet         (3, 32, 32)            62,958
resnet20           (3, 32, 32)            269,722 (option-A shortcuts; B: 272,474)
resnet56           (3, 32, 32)            853,018 (option A; B: 855,770)
resnet18           (3, 224, 224)          11,689,512 (1000 classes)
resnet34           (3, 224, 224)          21,797,672 (1000 classes)
inception_small    (3, 32, 32)            77,390
vgg11              (3, 32, 32)            9,756,426 (batch norm, 10 classes)
=================  =====================  ===============================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpucnn.model import Model
from gpucnn.models.inception import (
    INCEPTION_SMALL_STEM,
    INCEPTION_SMALL_WIDTHS,
    inception_small,
)
from gpucnn.models.lenet import lenet5, seed_lenet
from gpucnn.models.resnet import (
    BasicBlock,
    CifarResNet,
    ResNet,
    cifar_resnet,
    resnet18,
    resnet20,
    resnet34,
    resnet56,
)
from gpucnn.models.vgg import VGG11_CONFIG, vgg11

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "INCEPTION_SMALL_STEM",
    "INCEPTION_SMALL_WIDTHS",
    "MODEL_NAMES",
    "ResNet",
    "VGG11_CONFIG",
    "cifar_resnet",
    "get_model",
    "inception_small",
    "lenet5",
    "resnet18",
    "resnet20",
    "resnet34",
    "resnet56",
    "seed_lenet",
    "vgg11",
]

_BUILDERS: dict[str, Callable[..., Model]] = {
    "lenet5": lenet5,
    "seed_lenet": seed_lenet,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "inception_small": inception_small,
    "vgg11": vgg11,
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def get_model(name: str, **kwargs: Any) -> Model:
    """Build the model called ``name`` (case-insensitive, ``-`` = ``_``) with ``kwargs``
    (``num_classes``, ``in_channels``, and the builder's own options).

    Raises:
        ValueError: unknown name (the message lists :data:`MODEL_NAMES`).
    """
    key = str(name).strip().lower().replace("-", "_")
    builder = _BUILDERS.get(key)
    if builder is None:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    return builder(**kwargs)
