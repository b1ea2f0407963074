"""DataLoader benchmarks (group ``loader``): images per second, and a training loop it feeds.

Data: the embedded MNIST sample (``gpucnn.datasets.mnist_sample()``, 5,000 digits, 1x28x28
float32) as host NumPy arrays; on CUDA it is tiled to 60,000 images (an MNIST-sized epoch of
469 steps) so that per-epoch start-up (thread, stream, pinned buffers) is not what is timed.
Batch 128, shuffled, the last short batch kept. Augmentation ("crop+rot+noise"):
``RandomCrop(28, padding=2)``, ``RandomRotation(10)``, ``GaussianNoise(0.05)`` applied to whole
batches by the loader (on the device on CUDA).

Cases (every timed call is one whole epoch; CUDA events around it on GPU, whose host-side
gaps count, so this is the epoch's wall time on the GPU timeline):

* ``loader_epoch[aug=...,prefetch=P]``: iterate the loader alone (no training) with and
  without augmentation, ``prefetch`` 0 (batches made in the caller) and 2 (background thread;
  on CUDA also pinned staging memory and a side-stream upload): images per second.
* ``train_epoch[lenet5,loader+aug,prefetch=P]``: a LeNet-5 (``gpucnn.models.lenet5()``,
  SGD lr 0.01 momentum 0.9, cross-entropy) epoch fed by the augmenting loader, timed in
  alternation with its *baseline*: the same number of steps of an identical network over
  pre-made batches (augmented beforehand on the host by the same pipeline, then placed on the
  backend once: on CUDA the batches are already on the GPU). ``ratio_vs_baseline`` =
  loader-fed time / pre-loaded time; the GPU target is <= 1.10 at prefetch 2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.cases import Case, Ctx

__all__ = ["CompareCase", "loader_cases", "AUGMENT", "TRAIN_TARGET_CASE", "GPU_TARGET_RATIO"]

AUGMENT = "crop+rot+noise"
BATCH = 128
GPU_TARGET_RATIO = 1.10
# name prefix of the case the GPU target reads (loader-fed epoch, augmentation, prefetch 2)
TRAIN_TARGET_CASE = "train_epoch[lenet5,loader+aug,prefetch=2"


@dataclass
class CompareCase(Case):
    """A gpucnn-only case timed in alternation with a gpucnn ``build_baseline`` step.

    The runner stores the baseline's timings under ``row["baseline"]`` (labelled
    ``baseline_label``) and ``row["ratio_vs_baseline"]`` = case time / baseline time.
    """

    build_baseline: Callable[[], Callable[[], Any]] | None = None
    baseline_label: str = "baseline"


def _augmentation() -> Any:
    import gpucnn.transforms as T

    return T.Compose([T.RandomCrop(28, padding=2), T.RandomRotation(10),
                      T.GaussianNoise(0.05)])


def _data(ctx: Ctx) -> tuple[np.ndarray, np.ndarray]:
    """Host ``(x (N,1,28,28) float32, y (N,) int64)``: 256 images (2 batches) with --quick,
    the 5,000 sample on CPU, the sample tiled to 60,000 on CUDA."""
    from gpucnn.datasets import mnist_sample

    x, y = mnist_sample()
    if ctx.quick:
        return np.ascontiguousarray(x[:256]), np.ascontiguousarray(y[:256])
    if ctx.device == "cuda":
        reps = 12  # 60,000 images: 469 steps of 128
        return np.ascontiguousarray(np.tile(x, (reps, 1, 1, 1))), np.tile(y, reps)
    return x, y


def _loader(ctx: Ctx, data: tuple[np.ndarray, np.ndarray], augment: bool, prefetch: int,
            backend: str | None = None, seed: int = 0) -> Any:
    from gpucnn.data import DataLoader

    return DataLoader(data, batch_size=BATCH, shuffle=True, seed=seed,
                      transform=_augmentation() if augment else None,
                      backend=backend or ctx.backend, prefetch=prefetch)


def _params(ctx: Ctx, n: int, augment: bool, prefetch: int, **more: Any) -> dict[str, Any]:
    return {"dataset": "mnist_sample" + (" x12" if n == 60000 else ""), "images": n,
            "batch": BATCH, "shuffle": True, "augment": AUGMENT if augment else "none",
            "prefetch": prefetch, "backend": ctx.backend,
            "steps": -(-n // BATCH), **more}


def _sync(ctx: Ctx) -> None:
    if ctx.backend == "cuda":
        ctx.xp().cuda.get_current_stream().synchronize()


def _epoch_case(ctx: Ctx, data: tuple[np.ndarray, np.ndarray], augment: bool, prefetch: int,
                reps: int) -> Case:
    n = len(data[0])

    def build() -> Callable[[], Any]:
        loader = _loader(ctx, data, augment, prefetch)

        def epoch() -> int:
            seen = 0
            for batch in loader:
                seen += int(batch[0].shape[0])
            if seen != n:
                raise RuntimeError(f"loader epoch gave {seen} images, expected {n}")
            return seen
        return epoch

    tag = AUGMENT if augment else "none"
    return Case(group="loader", name=f"loader_epoch[aug={tag},prefetch={prefetch}]",
                params=_params(ctx, n, augment, prefetch), build_gpucnn=build, build_torch=None,
                images=n, repeats=reps, extra={"unit": "one epoch"})


def _net_and_step(ctx: Ctx) -> tuple[Any, Callable[[Any, Any], Any]]:
    """A fresh LeNet-5 on the context's backend (seeded: both sides start equal) and its
    training step ``step(x_array, y_array) -> loss``."""
    import gpucnn
    import gpucnn.functional as F
    import gpucnn.optim as go
    from gpucnn.models import lenet5

    gpucnn.manual_seed(0)
    net = lenet5(num_classes=10)
    if ctx.backend != "numpy":
        net.to(ctx.backend)
    net.train()
    opt = go.SGD(list(net.parameters()), lr=0.01, momentum=0.9)

    def step(x: Any, y: Any) -> Any:
        opt.zero_grad()
        loss = F.cross_entropy(net(gpucnn.Tensor(x)), gpucnn.Tensor(y))
        loss.backward()
        opt.step()
        return loss
    return net, step


def _train_case(ctx: Ctx, data: tuple[np.ndarray, np.ndarray], prefetch: int,
                reps: int) -> CompareCase:
    n = len(data[0])
    steps = -(-n // BATCH)
    case = CompareCase(
        group="loader", name=f"train_epoch[lenet5,loader+aug,prefetch={prefetch}]",
        params=_params(ctx, n, True, prefetch, model="lenet5",
                       optimizer="SGD(lr=0.01, momentum=0.9)", loss="cross_entropy"),
        build_gpucnn=lambda: None, build_torch=None, images=n, repeats=reps,
        baseline_label="pre-loaded batches",
        extra={"unit": "one epoch", "baseline": f"{steps} steps over batches made beforehand "
               f"(same augmentation, applied on the host) and placed on the {ctx.backend} "
               "backend before timing"},
    )

    def build_fed() -> Callable[[], Any]:
        _, step = _net_and_step(ctx)
        loader = _loader(ctx, data, True, prefetch)

        def epoch() -> Any:
            loss = None
            for x, y in loader:
                loss = step(x, y)
            return loss
        return epoch

    def build_pre() -> Callable[[], Any]:
        import gpucnn

        _, step = _net_and_step(ctx)
        host = _loader(ctx, data, True, 0, backend="numpy")
        batches = [tuple(gpucnn.backend.to_backend(np.ascontiguousarray(a), ctx.backend)
                         for a in b) for b in host]
        _sync(ctx)
        if len(batches) != steps:
            raise RuntimeError(f"pre-made {len(batches)} batches, expected {steps}")

        def epoch() -> Any:
            loss = None
            for x, y in batches:
                loss = step(x, y)
            return loss
        return epoch

    case.build_gpucnn = build_fed
    case.build_baseline = build_pre
    return case


def loader_cases(ctx: Ctx, reps: int) -> list[Case]:
    """The ``loader`` group: four loader-only epochs and two loader-fed training epochs."""
    data = _data(ctx)
    cases: list[Case] = []
    for augment in (False, True):
        for prefetch in (0, 2):
            cases.append(_epoch_case(ctx, data, augment, prefetch, reps))
    for prefetch in (0, 2):
        cases.append(_train_case(ctx, data, prefetch, reps))
    return cases
