"""Training-step cases of issue 13, on a GPU only: a graph-captured LeNet-5 step and the
ResNet-20 step in TF32 and BF16, each beside PyTorch eager (+ cuDNN) on the same device.

* ``train_step_graph[lenet5,batch=128]``: :func:`gpucnn.cuda_graph.capture` of the step (our
  kernels only, replayed) vs PyTorch eager; target: throughput >= 1.5x PyTorch's.
* ``train_step_tf32[resnet20,batch=256]``: eager step with ``set_tf32(True)`` vs PyTorch with
  ``allow_tf32`` (cuDNN convolutions); target: time <= 1.3x PyTorch's.
* ``train_step_bf16[resnet20,batch=256]``: the forward and loss under
  ``gpucnn.amp.autocast("bfloat16")`` vs ``torch.autocast("cuda", torch.bfloat16)``; target as
  TF32.

Built only when the context's device is ``cuda`` (``python -m benchmarks.run --device cuda
--only train``); the timed callable of the graph case is a replay (its warm-up and capture
happen in the builder).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import models as bm

__all__ = ["graph_train_cases"]


def graph_train_cases(ctx: Any, reps: int, case_type: Any, prefer_library: bool) -> list:
    """The three cases (``case_type``: :class:`benchmarks.cases.Case`); none off the GPU."""
    if ctx.device != "cuda":
        return []
    q = ctx.quick
    return [
        _case(ctx, case_type, "lenet5", 8 if q else 128, reps, "graph", prefer_library),
        _case(ctx, case_type, "resnet20", 4 if q else 256, reps, "tf32", prefer_library),
        _case(ctx, case_type, "resnet20", 4 if q else 256, reps, "bf16", prefer_library),
    ]


def _case(ctx: Any, case_type: Any, name: str, batch: int, reps: int, mode: str,
          prefer_library: bool) -> Any:  # fmt: skip
    shape = bm.INPUT_SHAPES[name]
    x0 = ctx.randn(batch, *shape)
    y0 = ctx.rng.integers(0, 10, size=batch).astype(np.int64)
    ctx.torch.manual_seed(ctx.seed)
    twin_cpu = bm.torch_model(name)
    fwd = bm.forward_flops(twin_cpu, (1, *shape)) * batch
    n_params = int(sum(p.numel() for p in twin_cpu.parameters()))
    case = case_type(
        group="train", name=f"train_step_{mode}[{name},batch={batch}]",
        params={"model": name, "batch": batch, "input": list(shape), "mode": mode,
                "parameters": n_params,
                "optimizer": "SGD(lr=0.01, momentum=0.9)", "loss": "cross_entropy"},
        build_gpucnn=lambda: None, build_torch=None, flops=3.0 * fwd, images=batch,
        repeats=reps, extra={"forward_flops": fwd},
    )  # fmt: skip

    def build_g() -> Callable[[], Any]:
        import gpucnn
        import gpucnn.functional as F
        import gpucnn.optim as go
        from gpucnn.backend import set_tf32

        net, source = bm.gpucnn_model(name, twin_cpu, ctx.backend, prefer_library)
        case.extra["gpucnn_model"] = source
        x = ctx.g(x0)
        y = gpucnn.Tensor(gpucnn.backend.to_backend(y0, ctx.backend))
        opt = go.SGD(list(net.parameters()), lr=0.01, momentum=0.9)
        set_tf32(mode != "graph")  # the graph runs our FP32 kernels; TF32/BF16 cases cuBLAS

        def step(xt: Any = x, yt: Any = y) -> Any:
            opt.zero_grad()
            if mode == "bf16":
                with gpucnn.amp.autocast("bfloat16"):
                    loss = F.cross_entropy(net(xt), yt)
            else:
                loss = F.cross_entropy(net(xt), yt)
            loss.backward()
            opt.step()
            return loss

        if mode != "graph":
            return step
        captured = gpucnn.cuda_graph.capture(step, optimizer=opt)
        while captured.graph is None:  # warm-up and capture, not timed
            captured(x, y)
        case.extra["graph_warmup_calls"] = captured.calls
        return lambda: captured(x, y)

    def build_t() -> Callable[[], Any]:
        torch = ctx.torch
        net = bm.torch_model(name)
        net.load_state_dict(twin_cpu.state_dict())
        net = net.to(ctx.tdev).train()
        x, y = ctx.t(x0), torch.from_numpy(y0).to(ctx.tdev)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        ce = torch.nn.functional.cross_entropy
        torch.backends.cuda.matmul.allow_tf32 = mode != "graph"
        torch.backends.cudnn.allow_tf32 = mode != "graph"

        def step() -> Any:
            opt.zero_grad()
            if mode == "bf16":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = ce(net(x), y)
            else:
                loss = ce(net(x), y)
            loss.backward()
            opt.step()
            return loss
        return step

    case.build_gpucnn = build_g
    case.build_torch = build_t
    return case
