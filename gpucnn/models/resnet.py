"""Residual networks (He et al., "Deep Residual Learning for Image Recognition", 2016).

* CIFAR ResNets (section 4.2 of the paper): a 3x3 16-channel stem, three stages of ``n`` basic
  blocks with 16/32/64 channels (stride 2 at the start of stages 2 and 3), global average
  pooling and a linear classifier: depth ``6n + 2`` (:func:`resnet20` n=3, :func:`resnet56`
  n=9). Shortcuts that change shape use option A (the paper's CIFAR choice: stride-2
  subsampling plus zero-padded channels, no parameters) or option B (1x1 projection conv +
  batch norm).
* ImageNet ResNets with torchvision's layout (:func:`resnet18`, :func:`resnet34`): a 7x7/2 stem
  and 3x3/2 max pool, four stages of basic blocks (64/128/256/512 channels), projection
  shortcuts, global average pooling and a linear classifier. ``small_input=True`` swaps the
  stem for a 3x3/1 convolution without max pooling, for 32x32 images.

All convolutions are bias-free (batch norm follows each), He-normal initialised; batch norm uses
PyTorch's defaults (``epsilon=1e-5``, running-average weight 0.1, i.e. Keras momentum 0.9).
Models output logits and are registered, so ``model.save``/``load_model`` rebuild them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gpucnn.functional as F
from gpucnn.layers import BatchNormalization, Conv2D, Dense, GlobalAveragePooling2D, MaxPooling2D
from gpucnn.model import Model, Sequential
from gpucnn.module import Module, register_module
from gpucnn.tensor import Tensor

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "ResNet",
    "cifar_resnet",
    "resnet20",
    "resnet56",
    "resnet18",
    "resnet34",
]

_BN = {"momentum": 0.9, "epsilon": 1e-5}


def _bn() -> BatchNormalization:
    return BatchNormalization(**_BN)


def _check_shortcut(shortcut: str) -> str:
    s = str(shortcut).upper()
    if s not in ("A", "B"):
        raise ValueError(f"ResNet: shortcut must be 'A' (zero-padding identity) or 'B' "
                         f"(1x1 projection), got {shortcut!r}")
    return s


@register_module
class BasicBlock(Module):
    """Basic residual block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    ``conv1`` is 3x3 with stride ``stride``, ``conv2`` 3x3 stride 1, both ``out_channels``.
    Input (N, in_channels, H, W), output (N, out_channels, ceil(H/stride), ceil(W/stride)).
    When the shape changes, the shortcut is option ``"A"`` (take every ``stride``-th pixel and
    zero-pad the new channels evenly on both sides: no parameters) or ``"B"`` (1x1 conv with
    stride + batch norm); otherwise it is the identity. ``residual=False`` drops the shortcut
    (the paper's "plain" network: ``relu(bn2(conv2(...)))``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 shortcut: str = "B", residual: bool = True, name: str | None = None) -> None:
        super().__init__(name=name)
        self.residual = bool(residual)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.stride = int(stride)
        self.shortcut = _check_shortcut(shortcut)
        if self.shortcut == "A" and self.out_channels < self.in_channels:
            raise ValueError("BasicBlock: option-A shortcuts cannot reduce channels "
                             f"({in_channels} -> {out_channels})")
        self.conv1 = Conv2D(out_channels, 3, strides=stride, padding=1, use_bias=False)
        self.bn1 = _bn()
        self.conv2 = Conv2D(out_channels, 3, padding=1, use_bias=False)
        self.bn2 = _bn()
        self.downsample = self.stride != 1 or self.in_channels != self.out_channels
        if self.residual and self.downsample and self.shortcut == "B":
            self.proj = Conv2D(out_channels, 1, strides=stride, use_bias=False)
            self.proj_bn = _bn()
        # parameters depend only on the channel counts: create them now
        self.build((self.in_channels, 32, 32))

    def _shortcut(self, x: Tensor) -> Tensor:
        if not self.downsample:
            return x
        if self.shortcut == "B":
            return self.proj_bn(self.proj(x))
        s = self.stride
        if s != 1:
            x = x[:, :, ::s, ::s]
        extra = self.out_channels - self.in_channels
        if extra:
            x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if not self.residual:
            return F.relu(out)
        return F.relu(out + self._shortcut(x))

    def build(self, input_shape: Any, backend: str | None = None) -> None:
        """Create the parameters for per-sample input ``(C, H, W)`` (no dummy forward)."""
        shape = tuple(input_shape)
        mid = _build_chain([self.conv1, self.bn1], shape, backend)
        _build_chain([self.conv2, self.bn2], mid, backend)
        if self.residual and self.downsample and self.shortcut == "B":
            _build_chain([self.proj, self.proj_bn], shape, backend)

    def output_shape(self, input_shape: Any) -> tuple:
        return tuple(self.conv1.output_shape(tuple(input_shape)))

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "stride": self.stride, "shortcut": self.shortcut, "residual": self.residual,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"{self.in_channels} -> {self.out_channels}, stride={self.stride}, "
                f"shortcut={self.shortcut!r}")


def _build_chain(mods: Sequence[Module], shape: tuple, backend: str | None) -> tuple:
    """Build ``mods`` one after the other from per-sample ``shape``; the final shape."""
    for m in mods:
        m.check_input_shape(shape)
        if not m.built:
            m.build(shape, backend=backend)
        shape = tuple(m.output_shape(shape))
    return shape


class _Net(Model):
    """A Model (compile, fit, ...); shared plumbing: build from shapes layer by layer (no
    dummy forward pass)."""

    def _chain(self) -> list[Module]:
        raise NotImplementedError

    def build(self, input_shape: Any, backend: str | None = None) -> None:
        _build_chain(self._chain(), tuple(input_shape), backend or self._backend_name)
        object.__setattr__(self, "_build_input_shape", list(input_shape))

    def output_shape(self, input_shape: Any) -> tuple:
        shape = tuple(input_shape)
        for m in self._chain():
            shape = tuple(m.output_shape(shape))
        return shape


@register_module
class CifarResNet(_Net):
    """CIFAR ResNet of depth ``6n + 2`` for (N, in_channels, 32, 32) inputs (any H, W >= 4
    work); logits (N, num_classes). See the module doc. ``residual=False`` builds the
    paper's "plain" counterpart (same layers, no shortcuts)."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3,
                 shortcut: str = "A", residual: bool = True, name: str | None = None) -> None:
        super().__init__(name=name or (f"resnet{depth}" if residual else f"plain{depth}"))
        self.residual = bool(residual)
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CifarResNet: depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, "
                             f"110, ...), got {depth!r}")
        self.depth, self.num_classes, self.in_channels = depth, int(num_classes), int(in_channels)
        self.shortcut = _check_shortcut(shortcut)
        n = (depth - 2) // 6
        self.conv1 = Conv2D(16, 3, padding=1, use_bias=False)
        self.bn1 = _bn()
        c = 16
        for stage, width in enumerate((16, 32, 64)):
            blocks: list[Module] = []
            for j in range(n):
                stride = 2 if stage > 0 and j == 0 else 1
                blocks.append(BasicBlock(c, width, stride, self.shortcut, self.residual))
                c = width
            setattr(self, f"stage{stage + 1}", Sequential(blocks, name=f"stage{stage + 1}"))
        self.pool = GlobalAveragePooling2D()
        self.fc = Dense(self.num_classes)
        self.input_shape = (self.in_channels, 32, 32)
        self.build(self.input_shape)

    def _chain(self) -> list[Module]:
        return [self.conv1, self.bn1, self.stage1, self.stage2, self.stage3, self.pool, self.fc]

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.pool(x))

    def get_config(self) -> dict:
        return {"depth": self.depth, "num_classes": self.num_classes,
                "in_channels": self.in_channels, "shortcut": self.shortcut,
                "residual": self.residual, "name": self.name}


@register_module
class ResNet(_Net):
    """ImageNet-style ResNet with basic blocks (torchvision's ResNet-18/34 layout).

    Args:
        layers: blocks per stage (4 stages, 64/128/256/512 channels).
        num_classes: outputs of the final linear layer.
        in_channels: input channels.
        small_input: 3x3 stride-1 stem and no max pool (for 32x32 images) instead of the
            7x7/2 stem + 3x3/2 max pool.

    Input (N, in_channels, H, W) (224x224 nominally; any size giving a >= 1x1 final map),
    logits (N, num_classes).
    """

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), num_classes: int = 1000,
                 in_channels: int = 3, small_input: bool = False,
                 name: str | None = None) -> None:
        super().__init__(name=name)
        layers = [int(v) for v in layers]
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"ResNet: layers must be 4 positive block counts, got {layers}")
        self.layers, self.num_classes = layers, int(num_classes)
        self.in_channels, self.small_input = int(in_channels), bool(small_input)
        if self.small_input:
            self.conv1 = Conv2D(64, 3, padding=1, use_bias=False)
        else:
            self.conv1 = Conv2D(64, 7, strides=2, padding=3, use_bias=False)
            self.maxpool = MaxPooling2D(3, strides=2, padding=1)
        self.bn1 = _bn()
        c = 64
        for stage, (width, count) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks: list[Module] = []
            for j in range(count):
                stride = 2 if stage > 0 and j == 0 else 1
                blocks.append(BasicBlock(c, width, stride, "B"))
                c = width
            setattr(self, f"stage{stage + 1}", Sequential(blocks, name=f"stage{stage + 1}"))
        self.pool = GlobalAveragePooling2D()
        self.fc = Dense(self.num_classes)
        side = 32 if self.small_input else 224
        self.input_shape = (self.in_channels, side, side)
        self.build(self.input_shape)

    def _chain(self) -> list[Module]:
        stem = [self.conv1, self.bn1] + ([] if self.small_input else [self.maxpool])
        return [*stem, self.stage1, self.stage2, self.stage3, self.stage4, self.pool, self.fc]

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if not self.small_input:
            x = self.maxpool(x)
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return self.fc(self.pool(x))

    def get_config(self) -> dict:
        return {"layers": list(self.layers), "num_classes": self.num_classes,
                "in_channels": self.in_channels, "small_input": self.small_input,
                "name": self.name}


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3, shortcut: str = "A",
                 residual: bool = True, **kw: Any) -> CifarResNet:
    """CIFAR ResNet of any depth ``6n + 2`` (20, 32, 44, 56, 110, ...); ``residual=False``
    gives the plain network of the same depth."""
    return CifarResNet(depth, num_classes, in_channels, shortcut, residual, **kw)


def resnet20(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A",
             **kw: Any) -> CifarResNet:
    """ResNet-20 for 32x32 images: 269,722 parameters (option A, 10 classes); option B adds
    two 1x1 projections + batch norms (272,474)."""
    return CifarResNet(20, num_classes, in_channels, shortcut, **kw)


def resnet56(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A",
             **kw: Any) -> CifarResNet:
    """ResNet-56 for 32x32 images: 853,018 parameters (option A, 10 classes; B: 855,770)."""
    return CifarResNet(56, num_classes, in_channels, shortcut, **kw)


def resnet18(num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
             **kw: Any) -> ResNet:
    """ResNet-18 (torchvision layout): 11,689,512 parameters for 1000 classes, 3 channels."""
    return ResNet((2, 2, 2, 2), num_classes, in_channels, small_input, **kw)


def resnet34(num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
             **kw: Any) -> ResNet:
    """ResNet-34 (torchvision layout): 21,797,672 parameters for 1000 classes, 3 channels."""
    return ResNet((3, 4, 6, 3), num_classes, in_channels, small_input, **kw)
