"""Benchmark networks: PyTorch twins (``torch.nn``) and gpucnn networks of the SAME architecture.

Architectures (all NCHW, float32, 10 classes):

* ``lenet5``: conv 1->6 5x5 pad 2, ReLU, max-pool 2; conv 6->16 5x5, ReLU, max-pool 2;
  flatten (400); linear 400->120, ReLU; 120->84, ReLU; 84->10. Input (N, 1, 28, 28).
* ``resnet20``: CIFAR ResNet (He et al. 2016, section 4.2): conv 3->16 3x3 + BN + ReLU; three
  stages of 3 basic blocks at 16/32/64 channels (32x32, 16x16, 8x8; stride 2 at the first
  block of stages 2-3); option-A shortcuts where the shape changes (stride-2 subsampling and
  zero-padded channels, no parameters: the paper's CIFAR choice and
  ``gpucnn.models.resnet20``'s default); global average pooling; linear 64->10.
  Input (N, 3, 32, 32). 269,722 parameters.
* ``resnet18``: CIFAR-style ResNet-18: conv 3->64 3x3 stride 1 + BN + ReLU (no max-pool);
  four stages of 2 basic blocks at 64/128/256/512 channels (32, 16, 8, 4 pixels); projection
  shortcuts (1x1 conv + BN); global average pooling; linear 512->10. Input (N, 3, 32, 32).
  11,173,962 parameters (``gpucnn.models.resnet18(num_classes=10, small_input=True)``).

Convolutions in the ResNets have no bias (BN follows). The gpucnn network is either
``gpucnn.models.<name>()`` when that exists and has the twin's parameter count, or a
functional network defined here that reads its parameters from the twin's ``state_dict``
names (so both start from identical weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Missing", "torch_model", "GpucnnNet", "gpucnn_model", "forward_flops", "INPUT_SHAPES"]

LIBRARY_KWARGS: dict[str, dict[str, Any]] = {
    "lenet5": {"num_classes": 10},
    "resnet20": {"num_classes": 10, "shortcut": "A"},
    "resnet18": {"num_classes": 10, "small_input": True},
}
INPUT_SHAPES = {"lenet5": (1, 28, 28), "resnet20": (3, 32, 32), "resnet18": (3, 32, 32)}


class Missing(RuntimeError):
    """A gpucnn piece a benchmark needs is not there (yet)."""


class _Functional:
    """``gpucnn.functional`` whose missing names raise :class:`Missing`."""

    def __getattr__(self, name: str) -> Any:
        import gpucnn.functional

        fn = getattr(gpucnn.functional, name, None)
        if fn is None:
            raise Missing(f"gpucnn.functional.{name} does not exist yet")
        return fn


F = _Functional()


# ---------------------------------------------------------------------------- PyTorch twins
def torch_model(name: str) -> Any:
    """The ``torch.nn.Module`` twin of benchmark network ``name``."""
    import torch.nn as nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, option: str) -> None:
            super().__init__()
            self.option, self.stride, self.extra = option, stride, cout - cin
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if (stride != 1 or cin != cout) and option == "B":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x: Any) -> Any:
            out = self.bn1(self.conv1(x)).relu()
            out = self.bn2(self.conv2(out))
            if self.option == "A" and (self.stride != 1 or self.extra):
                sc = x[:, :, ::self.stride, ::self.stride]
                e = self.extra
                sc = nn.functional.pad(sc, (0, 0, 0, 0, e // 2, e - e // 2))
            else:
                sc = self.shortcut(x)
            return (out + sc).relu()

    class ResNet(nn.Module):
        def __init__(self, widths: tuple[int, ...], blocks: int, option: str,
                     num_classes: int = 10) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(widths[0])
            layers = []
            cin = widths[0]
            for i, w in enumerate(widths):
                stage = []
                for b in range(blocks):
                    stride = 2 if (i > 0 and b == 0) else 1
                    stage.append(BasicBlock(cin, w, stride, option))
                    cin = w
                layers.append(nn.Sequential(*stage))
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x: Any) -> Any:
            x = self.bn1(self.conv1(x)).relu()
            x = self.layers(x)
            return self.fc(x.mean(dim=(2, 3)))

    if name == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        )
    if name == "resnet20":
        return ResNet((16, 32, 64), 3, "A")
    if name == "resnet18":
        return ResNet((64, 128, 256, 512), 2, "B")
    raise ValueError(f"unknown benchmark model {name!r}")


def forward_flops(model: Any, input_shape: tuple[int, ...]) -> float:
    """FLOPs (2 per multiply-add) of the conv and linear layers of one forward pass."""
    import torch
    import torch.nn as nn

    total = [0.0]

    def hook(mod: Any, inp: Any, out: Any) -> None:
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            total[0] += 2.0 * out.numel() * k
        elif isinstance(mod, nn.Linear):
            total[0] += 2.0 * out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(input_shape))
    for h in handles:
        h.remove()
    return total[0]


# ---------------------------------------------------------------------------- gpucnn side
class GpucnnNet:
    """A gpucnn network built from ``gpucnn.functional`` with the twin's parameter names.

    ``params``: name -> Parameter (weights and biases, BN gammas/betas);
    ``buffers``: name -> raw array (BN running statistics). ``net(x)`` runs the forward pass
    in training mode (BN batch statistics, as the PyTorch twin in ``train()``).
    """

    def __init__(self, name: str, state: dict[str, np.ndarray], backend: str) -> None:
        import gpucnn

        self.name = name
        self.params: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        for key, val in state.items():
            if key.endswith(("running_mean", "running_var")):
                self.buffers[key] = gpucnn.backend.to_backend(
                    np.ascontiguousarray(val, dtype=np.float32), backend
                )
            elif key.endswith("num_batches_tracked"):
                continue
            else:
                self.params[key] = gpucnn.Parameter(
                    gpucnn.backend.to_backend(np.ascontiguousarray(val, np.float32), backend)
                )
        self._forward: Callable[[Any], Any] = {
            "lenet5": self._lenet5, "resnet20": self._resnet, "resnet18": self._resnet,
        }[name]

    def parameters(self) -> list[Any]:
        return list(self.params.values())

    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self.params.values()))

    def __call__(self, x: Any) -> Any:
        return self._forward(x)

    # -- building blocks
    def _conv(self, x: Any, key: str, stride: int = 1, padding: int = 0) -> Any:
        return F.conv2d(x, self.params[key + ".weight"], self.params.get(key + ".bias"),
                        stride=stride, padding=padding)

    def _bn(self, x: Any, key: str) -> Any:
        return F.batch_norm(x, self.buffers[key + ".running_mean"],
                            self.buffers[key + ".running_var"], self.params[key + ".weight"],
                            self.params[key + ".bias"], training=True, momentum=0.1, eps=1e-5)

    def _linear(self, x: Any, key: str) -> Any:
        return F.linear(x, self.params[key + ".weight"], self.params[key + ".bias"])

    def _lenet5(self, x: Any) -> Any:
        x = F.max_pool2d(F.relu(self._conv(x, "0", padding=2)), 2)
        x = F.max_pool2d(F.relu(self._conv(x, "3")), 2)
        x = F.flatten(x, 1)
        x = F.relu(self._linear(x, "7"))
        x = F.relu(self._linear(x, "9"))
        return self._linear(x, "11")

    def _block(self, x: Any, key: str, stride: int) -> Any:
        out = F.relu(self._bn(self._conv(x, key + ".conv1", stride, 1), key + ".bn1"))
        out = self._bn(self._conv(out, key + ".conv2", 1, 1), key + ".bn2")
        if key + ".shortcut.0.weight" in self.params:
            sc = self._bn(self._conv(x, key + ".shortcut.0", stride, 0), key + ".shortcut.1")
        else:  # option A (or identity)
            sc = x[:, :, ::stride, ::stride] if stride != 1 else x
            extra = out.shape[1] - x.shape[1]
            if extra:
                sc = F.pad(sc, (0, 0, 0, 0, extra // 2, extra - extra // 2))
        return F.relu(out + sc)

    def _resnet(self, x: Any) -> Any:
        x = F.relu(self._bn(self._conv(x, "conv1", 1, 1), "bn1"))
        stages = sorted({int(k.split(".")[1]) for k in self.params if k.startswith("layers.")})
        for s in stages:
            blocks = sorted({int(k.split(".")[2]) for k in self.params
                             if k.startswith(f"layers.{s}.")})
            for b in blocks:
                x = self._block(x, f"layers.{s}.{b}", 2 if (s > 0 and b == 0) else 1)
        return self._linear(F.mean(x, axis=(2, 3)), "fc")


def gpucnn_model(
    name: str, twin: Any, backend: str, prefer_library: bool = True
) -> tuple[Any, str]:
    """The gpucnn network for ``name`` and where it came from.

    Uses ``gpucnn.models.<name>()`` when it exists and its parameter count equals the twin's
    (``prefer_library``), else :class:`GpucnnNet` initialised from the twin's weights.
    Returns ``(net, source)``; ``net(x)`` gives logits and ``net.parameters()`` the params.
    """
    n_twin = sum(p.numel() for p in twin.parameters())
    if prefer_library:
        try:
            import gpucnn.models as gm

            builder = getattr(gm, name)
            net = builder(**LIBRARY_KWARGS[name])
            if backend != "numpy" and hasattr(net, "to"):
                net = net.to(backend) or net
            if hasattr(net, "train"):
                net.train()
            n = int(sum(p.numel() for p in net.parameters()))
            if n == n_twin:
                return net, f"gpucnn.models.{name} ({n} parameters, same as the twin)"
            reason = f"gpucnn.models.{name} has {n} parameters, the twin {n_twin}"
        except Exception as exc:  # not there yet, or a different API
            reason = f"gpucnn.models.{name} unusable ({type(exc).__name__}: {exc})"
    else:
        reason = "library models not requested"
    state = {k: v.detach().cpu().numpy() for k, v in twin.state_dict().items()}
    net = GpucnnNet(name, state, backend)
    return net, f"functional twin in benchmarks/models.py ({reason})"
