"""LeNet-5 (LeCun et al. 1998) and the small "seed" LeNet for 3x32x32 images.

Both are :class:`~gpucnn.Sequential` stacks whose first layer carries ``input_shape``, so they
are built at once (``count_params()``/``summary()`` work before any data) and serialise with
``model.save`` / :func:`gpucnn.saving.load_model`.
"""

from __future__ import annotations

from gpucnn.layers import AveragePooling2D, Conv2D, Dense, Flatten, MaxPooling2D
from gpucnn.model import Sequential

__all__ = ["lenet5", "seed_lenet"]


def lenet5(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    classic: bool = False,
    name: str | None = None,
) -> Sequential:
    """LeNet-5: C1 6@5x5, S2 pool 2, C3 16@5x5, S4 pool 2, F5 120, F6 84, output ``num_classes``.

    Input ``(N, in_channels, input_size, input_size)``, output logits ``(N, num_classes)``.
    ``input_size`` is 28 (MNIST: C1 pads by 2 so every later layer matches the original 32x32
    network) or 32 (no padding, the paper's layout). 61,706 parameters for 10 classes and one
    input channel (C1 156, C3 2,416, F5 48,120, F6 10,164, output 850).

    Modern choices by default: ReLU activations, max pooling, He-normal conv initialisation,
    a full C1->C3 connection table and a plain linear output (softmax inside the loss).
    ``classic=True`` uses tanh and average pooling instead (the paper's sub-sampling layers
    had a trainable coefficient and bias per map and its output layer was RBF units; neither
    is reproduced, so the parameter count is the same in both variants).
    """
    if input_size not in (28, 32):
        raise ValueError(f"lenet5: input_size must be 28 or 32, got {input_size!r}")
    act = "tanh" if classic else "relu"
    pool = AveragePooling2D if classic else MaxPooling2D
    init = "glorot_uniform" if classic else "he_normal"
    return Sequential(
        [
            Conv2D(6, 5, padding=2 if input_size == 28 else 0, activation=act,
                   kernel_initializer=init, input_shape=(in_channels, input_size, input_size),
                   name="c1"),
            pool(2, name="s2"),
            Conv2D(16, 5, activation=act, kernel_initializer=init, name="c3"),
            pool(2, name="s4"),
            Flatten(name="flatten"),
            Dense(120, activation=act, name="f5"),
            Dense(84, activation=act, name="f6"),
            Dense(num_classes, name="output"),
        ],
        name=name or "lenet5",
    )


def seed_lenet(num_classes: int = 10, in_channels: int = 3, name: str | None = None) -> Sequential:
    """A small LeNet for ``(N, in_channels, 32, 32)`` images: Conv 8@5x5, max pool 2,
    Conv 16@5x5, max pool 2, Dense 120, Dense 84, Dense ``num_classes`` (ReLU throughout,
    logits out). Parameters per layer for 3 channels and 10 classes: 608, 3,216, 48,120,
    10,164, 850 (62,958 in all)."""
    return Sequential(
        [
            Conv2D(8, 5, activation="relu", input_shape=(in_channels, 32, 32), name="conv1"),
            MaxPooling2D(2, name="pool1"),
            Conv2D(16, 5, activation="relu", name="conv2"),
            MaxPooling2D(2, name="pool2"),
            Flatten(name="flatten"),
            Dense(120, activation="relu", name="fc1"),
            Dense(84, activation="relu", name="fc2"),
            Dense(num_classes, name="fc3"),
        ],
        name=name or "seed_lenet",
    )
