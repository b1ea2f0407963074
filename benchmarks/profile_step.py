"""cProfile one gpucnn training step (forward, loss, backward, SGD step) on the NumPy backend.

    python -m benchmarks.profile_step --model lenet5 --batch 128 --steps 5 [--top 25]

Prints the top functions by own time (``tottime``) and by cumulative time, so the owners of
the hot spots can see where a CPU training step goes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import numpy as np

from benchmarks import env as benv
from benchmarks import models as bm

__all__ = ["profile_step", "main"]


def profile_step(model: str = "lenet5", batch: int = 128, steps: int = 5,
                 top: int = 25) -> str:
    """Profile ``steps`` training steps of ``model`` after one warm-up; the report as text."""
    import torch

    import gpucnn
    import gpucnn.functional as F
    import gpucnn.optim as go

    gpucnn.backend.use("numpy")
    torch.manual_seed(0)
    net, source = bm.gpucnn_model(model, bm.torch_model(model), "numpy")
    rng = np.random.default_rng(0)
    x = gpucnn.Tensor(rng.standard_normal((batch, *bm.INPUT_SHAPES[model]), dtype=np.float32))
    y = gpucnn.Tensor(rng.integers(0, 10, size=batch).astype(np.int64))
    opt = go.SGD(list(net.parameters()), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    step()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(steps):
        step()
    prof.disable()
    wall = (time.perf_counter() - t0) / steps
    buf = io.StringIO()
    buf.write(f"{model} batch {batch}: {wall * 1e3:.1f} ms per step under cProfile "
              f"({steps} steps; BLAS threads {benv.blas_threads()}); network: {source}\n")
    st = pstats.Stats(prof, stream=buf).strip_dirs()
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__)
    p.add_argument("--model", default="lenet5", choices=sorted(bm.INPUT_SHAPES))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    print(profile_step(a.model, a.batch, a.steps, a.top))


if __name__ == "__main__":
    main()
