"""Data-parallel LeNet-5 on the embedded MNIST sample: one process per rank (GPU or CPU).

    mpiexec -n 2 python examples/train_ddp.py              # 2 ranks, batch 32 each
    mpiexec -n 2 python examples/train_ddp.py --smoke      # and check against 1 process
    python examples/train_ddp.py                            # a world of one works too

``fit`` distributes on its own once :func:`gpucnn.distributed.init` has found more than one
rank: rank 0's initial weights are broadcast, each rank trains on its shard of the data
(``--batch-size`` samples per rank and step: the global batch is ``ranks * batch``), the
gradients are averaged in buckets during backward, the epoch logs are averaged, and only
rank 0 prints. On the cuda backend each rank uses GPU ``local_rank % device_count`` and NCCL.

``--smoke`` trains a few steps in float64 on a 256-digit subset, then runs the same training
in one process at the doubled (global) batch (:func:`gpucnn.distributed.local_scope`) and
checks the weights agree to 1e-9; exit code 0 when they do, 1 otherwise, on every rank.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import gpucnn
import gpucnn.distributed as dist
from gpucnn.backend import to_numpy
from gpucnn.cli import add_backend_argument
from gpucnn.datasets import mnist_sample, train_test_split
from gpucnn.models import lenet5

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Data-parallel LeNet-5 on the embedded MNIST "
                                "sample (launch with mpiexec -n N).")
    add_backend_argument(p)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32, help="samples per rank and step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true",
                   help="a few float64 steps, checked against one process at the doubled "
                   "batch")
    return p


def make_model(seed: int, lr: float, float64: bool) -> gpucnn.Model:
    gpucnn.manual_seed(seed)
    model = lenet5(num_classes=10, in_channels=1, input_size=28)
    model.build((1, 28, 28))
    if float64:
        for t in [*model.parameters(), *model.buffers()]:
            t.data = t.data.astype(np.float64)
    model.compile(optimizer=gpucnn.optim.Adam(model.parameters(), lr=lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def weights(model: gpucnn.Model) -> list[np.ndarray]:
    return [to_numpy(p.data).copy() for p in model.parameters()]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.backend:
        gpucnn.backend.use(args.backend)
    comm = dist.init()
    x, y = mnist_sample()
    x = ((x - MNIST_MEAN) / MNIST_STD).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=1000, seed=0, stratify=True)
    if args.smoke:
        x_tr, y_tr = x_tr[:256].astype(np.float64), y_tr[:256]
        args.epochs, args.batch_size = 1, 16
    say = print if dist.is_main() else (lambda *a, **k: None)
    say(f"{comm.size} rank(s) ({comm.name} communicator, {gpucnn.backend.current()} backend), "
        f"batch {args.batch_size} per rank = {comm.size * args.batch_size} global")
    # Each rank seeds differently: rank 0's initial weights are the ones broadcast.
    model = make_model(args.seed + 1000 * comm.rank, args.lr, args.smoke)
    hist = model.fit(x_tr, y_tr, batch_size=args.batch_size, epochs=args.epochs,
                     seed=args.seed, verbose=2 if not args.smoke else 0)
    if not args.smoke:
        result = model.evaluate(x_te, y_te, batch_size=256)  # every rank: the same weights
        say(f"held-out (loss, accuracy): {result}")
        dist.shutdown()
        return 0
    with dist.local_scope():  # the single-process reference at the doubled batch
        ref = make_model(args.seed, args.lr, True)
        ref_hist = ref.fit(x_tr, y_tr, batch_size=comm.size * args.batch_size,
                           epochs=args.epochs, seed=args.seed, verbose=0)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(weights(model), weights(ref)))
    ok = diff < 1e-9 and abs(hist.history["loss"][-1] - ref_hist.history["loss"][-1]) < 1e-9
    ok = all(comm.allgather_object(ok))
    say(f"smoke: {comm.size} rank(s) at batch {args.batch_size} vs 1 process at batch "
        f"{comm.size * args.batch_size}: max |weight difference| {diff:.2e}, loss "
        f"{hist.history['loss'][-1]:.6f} vs {ref_hist.history['loss'][-1]:.6f}: "
        f"{'MATCH' if ok else 'MISMATCH'}")
    dist.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
