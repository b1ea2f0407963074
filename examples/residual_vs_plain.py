"""Skip connections, measured: a CIFAR-style ResNet and its "plain" twin (the same layers
without the shortcuts, as in He et al. 2016, figure 4) trained on the same data, in the same
order, from the same initial weights of the shared layers. Prints both training-loss curves
and their difference per epoch (and, with matplotlib, plots them).

Data: the embedded MNIST sample, average-pooled to 14x14 so the NumPy backend stays quick
(``--full-size`` keeps 28x28), or ``--synthetic`` random class templates.

    python examples/residual_vs_plain.py --depth 20 --epochs 3
    python examples/residual_vs_plain.py --smoke --out /tmp/rvp
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
from gpucnn.datasets import mnist_sample
from gpucnn.models import cifar_resnet


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="ResNet vs the same network without skip "
                                "connections, on the same data.")
    add_backend_argument(p)  # a name or alias; default $GPUCNN_BACKEND, else auto
    p.add_argument("--depth", type=int, default=20, help="6n + 2: 8, 14, 20, 32, 56, ...")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--samples", type=int, default=800, help="training images")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--full-size", action="store_true", help="keep 28x28 (slower)")
    p.add_argument("--synthetic", action="store_true", help="generated data instead of MNIST")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="residual_vs_plain_out")
    p.add_argument("--smoke", action="store_true",
                   help="depth 8, 256 images, batch 16, one epoch")
    p.add_argument("--threads", type=int, default=1, help="NumPy BLAS threads (0: unchanged)")
    return p


def load_data(n: int, full_size: bool, synthetic: bool, seed: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: ``n`` class-balanced images (N, 1, 14|28, 14|28), standardised."""
    rng = np.random.default_rng(seed)
    if synthetic:
        side = 28 if full_size else 14
        templates = rng.standard_normal((10, 1, side, side)).astype(np.float32)
        y = rng.integers(0, 10, n)
        x = templates[y] + 0.5 * rng.standard_normal((n, 1, side, side)).astype(np.float32)
        return x.astype(np.float32), y.astype(np.int64)
    x, y = mnist_sample()
    idx = rng.permutation(len(x))[:n]
    x, y = x[idx], y[idx]
    if not full_size:
        x = x.reshape(n, 1, 14, 2, 14, 2).mean(axis=(3, 5))
    x = (x - x.mean()) / x.std()
    return x.astype(np.float32), y


def train(residual: bool, args: argparse.Namespace, x: np.ndarray, y: np.ndarray,
          epochs: int, depth: int) -> tuple[list[float], list[float]]:
    """Train one network; returns (per-epoch mean losses, per-batch losses)."""
    gpucnn.manual_seed(args.seed)  # same initial weights for the layers both nets share
    model = cifar_resnet(depth, num_classes=10, in_channels=1, residual=residual)
    model.compile(optimizer="adam", lr=args.lr, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    batch_losses: list[float] = []
    rec = LambdaCallback(
        on_train_batch_end=lambda b, logs: batch_losses.append(float(logs["batch_loss"])))
    kind = "residual" if residual else "plain"
    print(f"--- {kind}-{depth} ({model.count_params():,} parameters)", flush=True)
    hist = model.fit(x, y, batch_size=args.batch_size, epochs=epochs, verbose=2,
                     callbacks=[rec], seed=args.seed)
    return [float(v) for v in hist.history["loss"]], batch_losses


def _plot(res: dict, out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'gpucnn[plot]')")
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind in ("plain", "residual"):
        b = np.asarray(res[kind]["batch_losses"])
        k = max(1, len(b) // 20)
        smooth = np.convolve(b, np.ones(k) / k, mode="valid")
        ax.plot(smooth, label=f"{kind}-{res['depth']}")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (moving average)")
    ax.legend()
    fig.tight_layout()
    path = out / "residual_vs_plain.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    """Run both trainings; returns ``{"depth", "plain", "residual", "difference", "files"}``
    (``plain``/``residual``: ``{"epoch_losses", "batch_losses"}``)."""
    args = build_parser().parse_args(argv)
    gpucnn.backend.use(args.backend)
    if args.threads:
        set_num_threads(args.threads)
    depth = 8 if args.smoke else args.depth
    n = 256 if args.smoke else args.samples
    if args.smoke:
        args.batch_size = min(args.batch_size, 16)
    epochs = 1 if args.smoke else args.epochs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = load_data(n, args.full_size, args.synthetic, args.seed)
    print(f"backend {gpucnn.backend.current()} | {n} images {x.shape[1:]} | depth {depth} | "
          f"{epochs} epoch(s)", flush=True)
    t0 = time.perf_counter()
    res: dict = {"depth": depth}
    for residual in (False, True):
        ep, b = train(residual, args, x, y, epochs, depth)
        res["residual" if residual else "plain"] = {"epoch_losses": ep, "batch_losses": b}
    diff = [p - r for p, r in zip(res["plain"]["epoch_losses"], res["residual"]["epoch_losses"])]
    res["difference"] = diff
    print(f"\ntraining loss per epoch (depth {depth}):")
    print(f"{'epoch':>5} {'plain':>10} {'residual':>10} {'plain - residual':>18}")
    for i, (p, r, d) in enumerate(zip(res["plain"]["epoch_losses"],
                                      res["residual"]["epoch_losses"], diff)):
        print(f"{i + 1:>5} {p:>10.4f} {r:>10.4f} {d:>+18.4f}")
    files = [out / "losses.json"]
    files[0].write_text(json.dumps(res, indent=1))
    plot = _plot(res, out)
    if plot is not None:
        files.append(plot)
    res["files"] = files
    print(f"({time.perf_counter() - t0:.1f} s) saved: {', '.join(map(str, files))}")
    return res


if __name__ == "__main__":
    main()
    sys.exit(0)
