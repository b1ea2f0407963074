"""ResNet-20 (He et al. 2016, option-A shortcuts, 0.27M parameters) on CIFAR-10.

Data: ``--data-dir DIR`` holding ``cifar-10-python.tar.gz`` or ``cifar-10-batches-py/`` (also
under ``DIR/cifar10/``), or ``--download`` to fetch the archive (SHA-256 verified) into
``--data-dir`` (default: ``$GPUCNN_DATA_DIR`` or ``~/.cache/gpucnn``). ``--synthetic`` trains
on generated 32x32 images instead (no files needed; for smoke tests).

Recipe (the paper's, shortened by default): SGD momentum 0.9, weight decay 1e-4, batch 128,
peak lr 0.1 with a short linear warm-up then cosine decay (stepped per batch), augmentation
random crop 32 with 4-pixel padding + horizontal flip, per-channel normalisation. The paper's
91.25% test accuracy needs ~160 epochs (hours on a GPU: use ``--backend cuda``; NumPy is far
too slow for the full run).

    python examples/train_cifar10.py --data-dir ~/data --epochs 30 --backend cuda
    python examples/train_cifar10.py --synthetic --smoke --out /tmp/c10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import gpucnn
from gpucnn import optim
from gpucnn import transforms as T
from gpucnn.backend.threads import set_num_threads
from gpucnn.callbacks import LambdaCallback, LearningRateScheduler
from gpucnn.cli import add_backend_argument, flag_message, parser_flags
from gpucnn.data import DataLoader
from gpucnn.models import resnet20

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train ResNet-20 on CIFAR-10.")
    add_backend_argument(p)  # a name or alias; default $GPUCNN_BACKEND, else auto
    p.add_argument("--data-dir", default=None, help="folder with the CIFAR-10 archive/batches")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 if missing")
    p.add_argument("--synthetic", action="store_true", help="use generated data instead")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--shortcut", choices=("A", "B"), default="A")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="cifar10_out")
    p.add_argument("--smoke", action="store_true",
                   help="one short epoch on 128 images (synthetic ones at 16x16), batch 16, "
                   "lr at most 0.02")
    p.add_argument("--threads", type=int, default=1, help="NumPy BLAS threads (0: unchanged)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None)
    return p


def synthetic_cifar(n_train: int, n_test: int, seed: int = 0, classes: int = 10,
                    size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Learnable stand-in for CIFAR-10: each class is a smooth random colour template;
    samples are the template, randomly shifted, plus noise, clipped to [0, 1].
    Images (N, 3, size, size), ``size`` a multiple of 4."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((classes, 3, 4, 4)).astype(np.float32)
    templates = coarse.repeat(size // 4, axis=2).repeat(size // 4, axis=3)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, classes, n)
        x = templates[y]
        shift = rng.integers(-3, 4, (n, 2))
        x = np.stack([np.roll(x[i], tuple(shift[i]), axis=(1, 2)) for i in range(n)])
        x = x + 0.15 * rng.standard_normal(x.shape).astype(np.float32)
        return np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64)

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    return x_tr, y_tr, x_te, y_te


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if args.synthetic:
        n = 128 if args.smoke else (args.limit or 5000)
        return synthetic_cifar(n, 64 if args.smoke else max(n // 5, 64), args.seed,
                               size=16 if args.smoke else 32)
    from gpucnn.datasets import load_cifar10

    x_tr, y_tr = load_cifar10(args.data_dir, train=True, download=args.download)
    x_te, y_te = load_cifar10(args.data_dir, train=False, download=args.download)
    limit = 128 if args.smoke else args.limit
    if limit:
        x_tr, y_tr = x_tr[:limit], y_tr[:limit]
        x_te, y_te = x_te[: max(limit // 4, 64)], y_te[: max(limit // 4, 64)]
    return x_tr, y_tr, x_te, y_te


def main(argv: list[str] | None = None) -> dict:
    """Run the example; returns ``{"accuracy", "loss", "history", "seconds", "files",
    "batch_losses"}``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    gpucnn.backend.use(args.backend)
    gpucnn.manual_seed(args.seed)
    if args.threads:
        set_num_threads(args.threads)
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    try:
        x_tr, y_tr, x_te, y_te = load_data(args)
    except (FileNotFoundError, OSError, ValueError) as exc:
        text, _ = flag_message(str(exc), parser_flags(parser))  # download=True: --download
        print(f"error: {text}\nhint: pass --data-dir DIR with the CIFAR-10 files, add --download, "
              "or use --synthetic", file=sys.stderr)
        raise SystemExit(2) from exc
    norm = T.Normalize(CIFAR_MEAN, CIFAR_STD)
    x_tr, x_te = norm(x_tr), norm(x_te)
    pad_fill = 0.0  # zero after normalisation = the mean colour
    side = int(x_tr.shape[-1])
    aug = T.Compose([T.RandomCrop(side, padding=side // 8, fill=pad_fill),
                     T.RandomHorizontalFlip()])
    epochs = 1 if args.smoke else args.epochs
    bs = min(args.batch_size, 16) if args.smoke else args.batch_size
    loader = DataLoader((x_tr, y_tr), batch_size=bs, shuffle=True, seed=args.seed,
                        transform=aug)
    data_name = "synthetic" if args.synthetic else "CIFAR-10"
    print(f"backend: {gpucnn.backend.current()} | {data_name}: train {len(x_tr)}, test "
          f"{len(x_te)} | epochs {epochs}, batch {bs}", flush=True)

    model = resnet20(num_classes=10, in_channels=3, shortcut=args.shortcut)
    lr = min(args.lr, 0.02) if args.smoke else args.lr  # tiny smoke batches: a gentler lr
    opt = optim.SGD(model.trainable_parameters(), lr=lr, momentum=0.9,
                    weight_decay=args.weight_decay)
    steps = max(2, epochs * len(loader))
    warm = max(1, min(len(loader), steps // 10))
    sched = optim.warmup(opt, optim.CosineAnnealingLR(opt, T_max=steps - warm),
                         warmup_steps=warm)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    print(f"ResNet-20 (shortcut {args.shortcut}): {model.count_params():,} parameters")

    batch_losses: list[float] = []
    callbacks = [
        LearningRateScheduler(sched, per_batch=True),  # warm-up and cosine count iterations
        LambdaCallback(on_train_batch_end=lambda b, logs: batch_losses.append(logs["batch_loss"])),
    ]
    t0 = time.perf_counter()
    hist = model.fit(loader, epochs=epochs, verbose=verbose, validation_data=(x_te, y_te),
                     callbacks=callbacks)
    seconds = time.perf_counter() - t0
    loss, acc = model.evaluate(x_te, y_te, batch_size=256)

    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    files = [out / "resnet20.npz", out / "history.json"]
    model.save(files[0])
    files[1].write_text(json.dumps({"history": history, "test_accuracy": float(acc),
                                    "test_loss": float(loss), "train_seconds": seconds,
                                    "args": vars(args)}, indent=1))
    print(f"saved: {', '.join(map(str, files))}")
    print(f"test accuracy ({data_name}): {acc:.4f}")
    return {"accuracy": float(acc), "loss": float(loss), "history": history,
            "seconds": seconds, "files": files,
            "batch_losses": batch_losses}


if __name__ == "__main__":
    main()
