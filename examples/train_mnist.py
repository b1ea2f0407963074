"""THE MAIN JOB: LeNet-5 on the MNIST sample that ships with gpucnn.

The 5,000 embedded digits are split (stratified, fixed seed) into 4,000 training and 1,000
held-out test images. Training uses per-batch augmentation (small random rotations and
translations), Adam with a one-epoch linear warm-up then cosine decay of the learning rate
(stepped every batch), and prints one line per epoch. The final line is the held-out accuracy.

    python examples/train_mnist.py                    # default settings (>= 97% held-out)
    python examples/train_mnist.py --backend numpy --epochs 5 --out /tmp/mnist
    python examples/train_mnist.py --smoke            # one short epoch on a subset

Outputs in ``--out`` (default ``./mnist_out``): ``lenet5.npz`` (``model.save``; reload with
``gpucnn.saving.load_model``), ``history.json``, and with matplotlib (``pip install
'gpucnn[plot]'``; drawn by :mod:`gpucnn.viz`) ``training_curves.png``, ``conv1_filters.png``,
``c1_feature_maps.png`` and ``c3_feature_maps.png`` (what both conv layers make of the first
held-out digit) and ``confusion_matrix.png`` (on the held-out set).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import gpucnn
from gpucnn import optim
from gpucnn import transforms as T
from gpucnn.backend.threads import set_num_threads
from gpucnn.callbacks import LambdaCallback, LearningRateScheduler
from gpucnn.cli import add_backend_argument
from gpucnn.data import DataLoader
from gpucnn.datasets import mnist_sample, train_test_split
from gpucnn.models import lenet5

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
SPLIT_SEED = 0
DEFAULTS = {"epochs": 25, "batch_size": 64, "lr": 2e-3, "seed": 0, "degrees": 10.0,
            "shift": 2}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train LeNet-5 on the embedded MNIST sample "
                                "(4,000 train / 1,000 held-out test).")
    add_backend_argument(p)  # a name or alias; default $GPUCNN_BACKEND, else auto
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="peak learning rate (Adam)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="seed of the initial weights, shuffling and augmentation (the "
                   "train/test split is fixed)")
    p.add_argument("--degrees", type=float, default=DEFAULTS["degrees"],
                   help="random rotation range in degrees (0: none)")
    p.add_argument("--shift", type=int, default=DEFAULTS["shift"],
                   help="random translation in pixels, by pad + random crop (0: none)")
    p.add_argument("--no-augment", action="store_true", help="disable augmentation")
    p.add_argument("--threads", type=int, default=1,
                   help="NumPy BLAS threads (default 1: with 2 cores, BLAS threads fight the "
                   "data-loader thread and slow training down; 0 leaves the setting alone)")
    p.add_argument("--out", default="mnist_out", help="output folder (default ./mnist_out)")
    p.add_argument("--smoke", action="store_true",
                   help="quick check: one short epoch on 512 training images")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                   help="0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a "
                   "terminal, else 2)")
    return p


def load_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: the 5,000-image sample split 4,000 / 1,000
    (stratified by class, fixed ``seed``), images normalised with the MNIST mean and std,
    float32 (N, 1, 28, 28); labels int64."""
    x, y = mnist_sample()
    x = ((x - MNIST_MEAN) / MNIST_STD).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=1000, seed=seed, stratify=True)
    return x_tr, y_tr, x_te, y_te


def make_augmentation(degrees: float, shift: int) -> T.Compose | None:
    """Random rotation (bilinear) then random translation (zero-pad by ``shift`` + crop 28);
    the fill is the normalised background value."""
    bg = (0.0 - MNIST_MEAN) / MNIST_STD
    ts: list = []
    if degrees > 0:
        ts.append(T.RandomRotation(degrees, fill=bg))
    if shift > 0:
        ts.append(T.RandomCrop(28, padding=shift, fill=bg))
    return T.Compose(ts) if ts else None


def _plots(hist: Any, model: Any, x_te: np.ndarray, y_te: np.ndarray, out: Path) -> list[Path]:
    """The pictures (:mod:`gpucnn.viz`), when matplotlib is importable: training curves, the
    C1 filters, the feature maps of both conv layers (C1, C3) for the first held-out digit,
    and the confusion matrix on the held-out set. Prints where they went, or one line saying
    they were skipped."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed: no plots. Install it with: "
              "pip install 'gpucnn[plot]'  (or: pip install matplotlib)")
        return []
    from gpucnn import viz

    written = [out / "training_curves.png", out / "conv1_filters.png"]
    viz.plot_history(hist, written[0], title="LeNet-5 on the MNIST sample (training accuracy "
                     "on augmented batches)")
    viz.plot_filters(model.layers[0], written[1])
    digit = x_te[0]
    pred = model.predict(x_te, batch_size=500).argmax(axis=1)
    maps = []
    for name in ("c1", "c3"):
        maps.append(out / f"{name}_feature_maps.png")
        viz.plot_feature_maps(model, digit, name, maps[-1])
    cm = out / "confusion_matrix.png"
    viz.plot_confusion_matrix(y_te, pred, cm)
    print(f"pictures: feature maps of c1 and c3 for held-out digit 0 (label {int(y_te[0])}, "
          f"predicted {int(pred[0])}): {maps[0]}, {maps[1]}; confusion matrix on the "
          f"{len(y_te)} held-out digits: {cm}")
    return [*written, *maps, cm]


def main(argv: list[str] | None = None) -> dict:
    """Run the example; returns ``{"accuracy", "loss", "history", "seconds", "files",
    "batch_losses"}``."""
    args = build_parser().parse_args(argv)
    gpucnn.backend.use(args.backend)
    gpucnn.manual_seed(args.seed)
    if args.threads:
        set_num_threads(args.threads)
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    x_tr, y_tr, x_te, y_te = load_split(SPLIT_SEED)  # the same split whatever --seed is
    epochs = args.epochs
    if args.smoke:
        x_tr, y_tr, x_te, y_te = x_tr[:512], y_tr[:512], x_te[:256], y_te[:256]
        epochs = 1
    aug = None if args.no_augment else make_augmentation(args.degrees, args.shift)
    loader = DataLoader((x_tr, y_tr), batch_size=args.batch_size, shuffle=True, seed=args.seed,
                        transform=aug)
    print(f"backend: {gpucnn.backend.current()} | train {len(x_tr)} / held-out test "
          f"{len(x_te)} | epochs {epochs}, batch {args.batch_size}, peak lr {args.lr} | "
          f"augmentation: {aug if aug is not None else 'none'}", flush=True)

    model = lenet5(num_classes=10, in_channels=1, input_size=28)
    opt = optim.Adam(model.trainable_parameters(), lr=args.lr)
    steps = max(1, epochs * len(loader))
    warm = min(len(loader), max(steps // 4, 1))
    if steps > warm:
        sched = optim.warmup(opt, optim.CosineAnnealingLR(opt, T_max=steps - warm),
                             warmup_steps=warm)
    else:
        sched = optim.LinearWarmup(opt, warmup_steps=steps)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    batch_losses: list[float] = []
    callbacks = [
        LearningRateScheduler(sched, per_batch=True),  # warm-up and cosine count iterations
        LambdaCallback(on_train_batch_end=lambda b, logs: batch_losses.append(logs["batch_loss"])),
    ]
    t0 = time.perf_counter()
    hist = model.fit(loader, epochs=epochs, verbose=verbose,
                     validation_data=(x_te, y_te), callbacks=callbacks)
    seconds = time.perf_counter() - t0
    loss, acc = model.evaluate(x_te, y_te, batch_size=500)

    files = [out / "lenet5.npz", out / "history.json"]
    model.save(files[0])
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    files[1].write_text(json.dumps({"history": history, "test_accuracy": float(acc),
                                    "test_loss": float(loss), "train_seconds": seconds,
                                    "args": vars(args)}, indent=1))
    files += _plots(hist, model, x_te, y_te, out)
    print(f"saved: {', '.join(str(f) for f in files)}")
    print(f"training time {seconds:.1f} s on {gpucnn.backend.current()}")
    print(f"held-out test accuracy: {acc:.4f} ({int(round(acc * len(y_te)))}/{len(y_te)})",
          flush=True)
    return {"accuracy": float(acc), "loss": float(loss), "history": history,
            "seconds": seconds, "files": files,
            "batch_losses": batch_losses}


if __name__ == "__main__":
    res = main()
    sys.exit(0 if math.isfinite(res["loss"]) else 1)
