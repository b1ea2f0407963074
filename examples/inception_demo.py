"""Inception blocks in action: print the summary of ``gpucnn.models.inception_small`` (stem,
four InceptionBlocks of parallel 1x1 / 3x3 / 5x5 / pool branches, global average pooling)
and train it briefly on the embedded MNIST sample (or ``--synthetic`` data).

    python examples/inception_demo.py --epochs 2
    python examples/inception_demo.py --smoke --out /tmp/inc
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import gpucnn
from gpucnn.backend.threads import set_num_threads
from gpucnn.callbacks import LambdaCallback
from gpucnn.cli import add_backend_argument
from gpucnn.datasets import mnist_sample, train_test_split
from gpucnn.models import inception_small


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the small Inception network briefly.")
    add_backend_argument(p)  # a name or alias; default $GPUCNN_BACKEND, else auto
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--samples", type=int, default=1500, help="training images")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--synthetic", action="store_true", help="generated data instead of MNIST")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="inception_out")
    p.add_argument("--smoke", action="store_true",
                   help="one epoch on 192 images (14x14), batch 16")
    p.add_argument("--threads", type=int, default=1, help="NumPy BLAS threads (0: unchanged)")
    return p


def load_data(n: int, n_test: int, synthetic: bool, side: int, seed: int) -> tuple:
    """``(x_train, x_test, y_train, y_test)``, images (N, 1, side, side) standardised."""
    rng = np.random.default_rng(seed)
    if synthetic:
        templates = rng.standard_normal((10, 1, side, side)).astype(np.float32)
        y = rng.integers(0, 10, n + n_test)
        x = templates[y] + 0.7 * rng.standard_normal((len(y), 1, side, side))
        return x[:n].astype(np.float32), x[n:].astype(np.float32), y[:n], y[n:]
    x, y = mnist_sample()
    if side == 14:
        x = x.reshape(len(x), 1, 14, 2, 14, 2).mean(axis=(3, 5))
    x = ((x - 0.1307) / 0.3081).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=n_test, seed=seed, stratify=True)
    return x_tr[:n], x_te, y_tr[:n], y_te


def main(argv: list[str] | None = None) -> dict:
    """Print the summary, train, evaluate; returns ``{"accuracy", "history",
    "batch_losses", "summary", "files"}``."""
    args = build_parser().parse_args(argv)
    gpucnn.backend.use(args.backend)
    if args.threads:
        set_num_threads(args.threads)
    gpucnn.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    side = 14 if args.smoke else 28
    n = 192 if args.smoke else args.samples
    if args.smoke:
        args.batch_size = min(args.batch_size, 16)
    epochs = 1 if args.smoke else args.epochs
    x_tr, x_te, y_tr, y_te = load_data(n, 64 if args.smoke else 500, args.synthetic, side,
                                       args.seed)

    model = inception_small(num_classes=10, in_channels=1, input_size=side)
    summary = model.summary(print_fn=print)
    model.compile(optimizer="adam", lr=args.lr, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    losses: list[float] = []
    rec = LambdaCallback(on_train_batch_end=lambda b, logs: losses.append(logs["batch_loss"]))
    t0 = time.perf_counter()
    hist = model.fit(x_tr, y_tr, batch_size=args.batch_size, epochs=epochs, verbose=2,
                     validation_data=(x_te, y_te), callbacks=[rec], seed=args.seed)
    seconds = time.perf_counter() - t0
    _, acc = model.evaluate(x_te, y_te, batch_size=250)
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    files = [out / "inception_small.npz", out / "history.json"]
    model.save(files[0])
    files[1].write_text(json.dumps({"history": history, "test_accuracy": float(acc),
                                    "seconds": seconds}, indent=1))
    print(f"trained {epochs} epoch(s) on {len(x_tr)} images in {seconds:.1f} s; held-out "
          f"accuracy {acc:.4f} on {len(y_te)}; saved {', '.join(map(str, files))}")
    return {"accuracy": float(acc), "history": history, "batch_losses": losses,
            "summary": summary, "files": files}


if __name__ == "__main__":
    main()
    sys.exit(0)
