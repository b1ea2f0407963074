"""The ``gpucnn`` command line (also ``python -m gpucnn``).

    gpucnn info                                   # backend chosen and why, device, kernels
    gpucnn models                                 # the model zoo
    gpucnn summary --model resnet18 --input 3,32,32
    gpucnn train --model lenet5 --dataset mnist-sample --epochs 10 --batch-size 64 \\
                 --lr 2e-3 --backend auto --out runs/lenet5
    gpucnn train --help                           # every option, with its default

``--backend`` takes ``auto``, ``numpy``, ``cuda`` or the aliases ``cpu`` (= numpy) and ``gpu``
(= cuda); its default is ``$GPUCNN_BACKEND`` when set, else ``auto`` (the examples share this
option through :func:`add_backend_argument`).

Datasets: ``mnist-sample`` (5,000 embedded digits, split 4,000 / 1,000, no files needed),
``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100`` (from ``--data-dir`` or
``$GPUCNN_DATA_DIR`` / ``~/.cache/gpucnn``; ``--download`` fetches them, checksum verified).

Exit codes: 0 success, 1 a runtime failure (missing data, unusable backend, an output folder
that cannot be written), 2 a usage error (unknown model, dataset or option, a value out of
range; the message lists the valid names). Errors the library raises about one of its
arguments are reported under the flag that sets it (``download=True`` reads ``--download``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BACKEND_CHOICES", "DATASET_NAMES", "MODEL_DESCRIPTIONS", "HelpFormatter",
           "add_backend_argument", "backend_arg", "build_parser", "flag_message", "load_dataset",
           "main", "parser_flags", "set_blas_threads"]

DATASET_NAMES: tuple[str, ...] = ("mnist-sample", "mnist", "fashion-mnist", "cifar10", "cifar100")
_NEEDS_32 = ("seed_lenet", "vgg11")


#: What ``gpucnn models`` says about each model of the zoo (its input and parameter count are
#: read from the built model).
MODEL_DESCRIPTIONS: dict[str, str] = {
    "lenet5": "LeNet-5 (LeCun et al. 1998): conv 6@5x5, pool, conv 16@5x5, pool, dense 120, 84",
    "seed_lenet": "a small ReLU LeNet: conv 8@5x5, pool, conv 16@5x5, pool, dense 120, 84",
    "resnet20": "CIFAR ResNet-20 (He et al. 2015): 3 stages of 3 basic blocks, 16-32-64 channels",
    "resnet56": "CIFAR ResNet-56 (He et al. 2015): 3 stages of 9 basic blocks, 16-32-64 channels",
    "resnet18": "ImageNet ResNet-18 (torchvision layout): 4 stages of 2 basic blocks",
    "resnet34": "ImageNet ResNet-34 (torchvision layout): 4 stages of 3, 4, 6, 3 basic blocks",
    "inception_small": "a small Inception network (Szegedy et al. 2015): conv stem, 4 blocks",
    "vgg11": "VGG-11 (Simonyan & Zisserman 2015) with batch norm: 8 conv 3x3, classifier",
}
#: ``--backend`` values: the backends and their aliases.
BACKEND_CHOICES: tuple[str, ...] = ("auto", "numpy", "cuda", "cpu", "gpu")
#: Library parameter names that are spelled differently as a flag (the rest: ``a_b`` -> ``--a-b``).
_PARAM_TO_DEST = {"root": "data_dir", "learning_rate": "lr", "input_shape": "input"}


class UsageError(ValueError):
    """A bad name or option: reported with exit code 2."""


class RunError(RuntimeError):
    """A runtime failure outside the library (e.g. an unwritable ``--out``): exit code 1."""


# ----------------------------------------------------------------------------- options


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with every option's default: appended as ``(default: ...)`` unless the help
    text already states it (for defaults such as ``None`` that need words)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text:
            return text
        return super()._get_help_string(action)


def backend_arg(text: str) -> str:
    """argparse ``type`` of ``--backend``: ``"auto"``, ``"numpy"`` or ``"cuda"`` for ``text`` or
    an alias of it (``cpu``, ``gpu``, see :func:`gpucnn.backend.canonical_name`)."""
    from gpucnn.backend import canonical_name

    try:
        return canonical_name(text, op="--backend")
    except (TypeError, ValueError):
        env = os.environ.get("GPUCNN_BACKEND")
        src = " (the value of $GPUCNN_BACKEND)" if env is not None and text == env else ""
        raise argparse.ArgumentTypeError(
            f"unknown backend {text!r}{src}; choose from {', '.join(BACKEND_CHOICES)} "
            "(cpu = numpy, gpu = cuda)"
        ) from None


def add_backend_argument(parser: argparse.ArgumentParser, from_env: bool = True) -> None:
    """Add ``--backend`` to ``parser``: a backend name or alias (:func:`backend_arg`), by
    default ``$GPUCNN_BACKEND`` when set (``from_env``), else ``auto``."""
    env = os.environ.get("GPUCNN_BACKEND", "").strip() if from_env else ""
    parser.add_argument(
        "--backend", type=backend_arg, default=env or "auto",
        metavar="{" + ",".join(BACKEND_CHOICES) + "}",
        help="compute backend: auto = CUDA when usable, else NumPy; cpu = numpy, gpu = cuda "
             "(default: %(default)s" + (", from $GPUCNN_BACKEND)" if env else ")"),
    )


def flag_message(text: str, flags: dict[str, str]) -> tuple[str, bool]:
    """``text`` (a library error) with the Python arguments in it spelled as the command's
    flags: ``download=True`` -> ``--download``, ``root=...`` -> ``--data-dir DIR``,
    ``batch_size`` -> ``--batch-size``, ``fit: epochs must ...`` -> ``fit: --epochs must ...``.
    ``flags`` maps argparse ``dest`` names to their option strings. Returns the text and
    whether anything was rephrased."""

    def flag(name: str) -> str | None:
        return flags.get(_PARAM_TO_DEST.get(name, name))

    changed = False

    def keyword(m: re.Match) -> str:
        nonlocal changed
        f = flag(m.group(1))
        if f is None:
            return m.group(0)
        changed = True
        value = m.group(2)
        if value == "True":
            return f
        if value == "False":
            return f"(without {f})"
        if value in ("...", "<path>"):
            return f"{f} {f.lstrip('-').split('-')[-1].upper()}"
        return f"{f} {value}"

    text = re.sub(r"(?<![\w.$-])([a-z][a-z0-9_]*)=(True|False|None|\.\.\.|[^\s,;)]+)", keyword,
                  text)

    def ident(m: re.Match) -> str:
        nonlocal changed
        f = flag(m.group(1))
        if f is None:
            return m.group(0)
        changed = True
        return f

    # identifiers with an underscore cannot be ordinary words; a plain word only in the
    # "op: name ..." position the library's argument checks use
    text = re.sub(r"(?<![\w.$-])([a-z][a-z0-9]*_[a-z0-9_]+)\b(?![=(])", ident, text)
    text = re.sub(r"(?<=: )(epochs|lr|seed|download|threads|limit)\b(?= (?:must|should|is))",
                  ident, text)
    return text, changed


# ----------------------------------------------------------------------------- threads


def set_blas_threads(n: int) -> bool:
    """Limit NumPy's OpenBLAS to ``n`` threads; see :func:`gpucnn.backend.set_num_threads`."""
    from gpucnn.backend.threads import set_num_threads

    return set_num_threads(n)


# ----------------------------------------------------------------------------- data


def load_dataset(name: str, data_dir: str | None = None, download: bool = False,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """``(x_train, y_train, x_test, y_test, num_classes)`` of dataset ``name``; images
    (N, C, H, W) float32 in [0, 1], labels int64. ``mnist-sample`` is split 4,000 / 1,000
    (stratified, ``seed``)."""
    from gpucnn import datasets as D

    key = _dataset_key(name)
    if key == "mnist-sample":
        x, y = D.mnist_sample()
        x_tr, x_te, y_tr, y_te = D.train_test_split(x, y, test_size=1000, seed=seed,
                                                    stratify=True)
        return x_tr, y_tr, x_te, y_te, 10
    loader, classes = {
        "mnist": (D.load_mnist, 10),
        "fashion-mnist": (D.load_fashion_mnist, 10),
        "cifar10": (D.load_cifar10, 10),
        "cifar100": (D.load_cifar100, 100),
    }[key]
    x_tr, y_tr = loader(data_dir, train=True, download=download)
    x_te, y_te = loader(data_dir, train=False, download=download)
    return x_tr, y_tr, x_te, y_te, classes


def _dataset_key(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    key = {"fashion": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10",
           "cifar-100": "cifar100", "mnistsample": "mnist-sample"}.get(key, key)
    if key not in DATASET_NAMES:
        raise UsageError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASET_NAMES)}")
    return key


def _model_key(name: str) -> str:
    from gpucnn.models import MODEL_NAMES

    key = str(name).strip().lower().replace("-", "_")
    if key not in MODEL_NAMES:
        raise UsageError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    return key


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        dims = tuple(int(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise UsageError(f"--input must be C,H,W (three positive ints, e.g. 3,32,32), got "
                         f"{text!r}")
    return dims  # type: ignore[return-value]


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int,
                small_input: bool | None = None) -> Any:
    """Model ``name`` for per-sample ``input_shape`` (C, H, W) and ``num_classes``."""
    from gpucnn.models import get_model

    key = _model_key(name)
    c, h, w = input_shape
    kw: dict[str, Any] = {"num_classes": num_classes, "in_channels": c}
    if key == "lenet5":
        if (h, w) not in ((28, 28), (32, 32)):
            raise UsageError(f"lenet5 takes 28x28 or 32x32 inputs, got {h}x{w}")
        kw["input_size"] = h
    elif key == "inception_small":
        if h != w:
            raise UsageError(f"inception_small takes square inputs, got {h}x{w}")
        kw["input_size"] = h
    elif key in ("resnet18", "resnet34"):
        kw["small_input"] = (h <= 64) if small_input is None else small_input
    elif key == "seed_lenet" and (h, w) != (32, 32):
        raise UsageError(f"seed_lenet takes 32x32 inputs, got {h}x{w}")
    elif key == "vgg11":
        if (h, w) not in ((32, 32), (224, 224)):
            raise UsageError(f"vgg11 takes 32x32 or 224x224 inputs, got {h}x{w}")
        kw["input_size"] = h
    return get_model(key, **kw)


# ----------------------------------------------------------------------------- commands


def cmd_info(args: argparse.Namespace) -> int:
    import gpucnn
    from gpucnn import backend as B
    from gpucnn.backend import kernels

    print(f"gpucnn {gpucnn.__version__} | Python {platform.python_version()} | NumPy "
          f"{np.__version__} | {platform.system()} {platform.machine()}")
    from gpucnn.backend.threads import blas_core_text

    print(f"NumPy BLAS kernels: {blas_core_text()}")
    env = os.environ.get("GPUCNN_BACKEND")
    requested = args.backend or env or "auto"
    try:
        B.use(requested)
        chosen = B.current()
    except Exception as exc:  # BackendUnavailable or a bad GPUCNN_BACKEND value
        print(f"backend: requested {requested!r} but it is not usable: {exc}")
        chosen = None
    ok = B.cuda_available()
    reason = B.cuda_unavailable_reason()
    src = "--backend" if args.backend else ("$GPUCNN_BACKEND" if env else "default 'auto'")
    if chosen is not None:
        why = ("CUDA is usable" if chosen == "cuda" else
               (f"CUDA is not usable: {reason}" if not ok else "NumPy was asked for"))
        shown = B.get().description if chosen == "cuda" else chosen
        print(f"backend: {shown} (requested {requested!r} via {src}; {why})")
    print(f"cuda available: {ok}" + ("" if ok else f" ({reason})"))
    if B.simulated():
        print("cuda device: SIMULATED (GPUCNN_SIMULATE_CUDA=1): a CuPy stand-in whose kernels "
              "run through the host emulator on the CPU; no GPU is used")
    from gpucnn.backend import device

    try:
        version = device.device_version()
    except Exception as exc:
        print(f"cupy: not importable ({type(exc).__name__}: {exc}); install 'gpucnn[cuda12]' or "
              "'gpucnn[cuda13]' on a machine with an NVIDIA GPU")
    else:
        print(f"cupy: {version}")
        try:
            for line in device.device_report():
                print(line)
        except Exception as exc:
            print(f"cuda devices: unavailable ({type(exc).__name__}: {exc})")
    try:
        sources = kernels.all_kernel_sources()
        folder = sources[0].parent if sources else "(none found)"
        print(f"kernel sources: {folder} ({len(sources)} files: "
              f"{', '.join(p.name for p in sources)})")
    except Exception as exc:
        print(f"kernel sources: not found ({exc})")
    cupy_cache = os.environ.get("CUPY_CACHE_DIR") or str(Path.home() / ".cupy" / "kernel_cache")
    print(f"cupy kernel cache: {cupy_cache}"
          + (" ($CUPY_CACHE_DIR)" if os.environ.get("CUPY_CACHE_DIR") else ""))
    try:
        from gpucnn.testing.emulator import cache_dir, compiler_available

        print(f"emulator kernel cache: {cache_dir()} (host compiler "
              f"{'found' if compiler_available() else 'not found'})")
    except Exception as exc:
        print(f"emulator: unavailable ({exc})")
    try:
        from gpucnn.datasets import cache_dir as data_cache

        print(f"dataset cache: {data_cache()}")
    except Exception as exc:
        print(f"dataset cache: unknown ({exc})")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """One line per model of the zoo: name, default input (C, H, W), parameters (with the
    builder's default classes) and what it is. The models are built on NumPy to count them."""
    from gpucnn import backend as B
    from gpucnn.models import MODEL_NAMES, get_model

    prev = B._active  # not current(): that would pick (and probe) a backend for nothing
    B.use("numpy")
    try:
        print(f"{'model':<16} {'input':<10} {'parameters':>11}  {'classes':>7}  description")
        for name in MODEL_NAMES:
            model = get_model(name)
            shape = tuple(int(d) for d in model.input_shape)
            classes = model.output_shape(shape)[-1]
            what = MODEL_DESCRIPTIONS.get(name, type(model).__name__)
            print(f"{name:<16} {'x'.join(map(str, shape)):<10} {model.count_params():>11,}  "
                  f"{classes:>7}  {what}")
    finally:
        if prev is None:
            B._active = None  # still unchosen: the next use picks it from $GPUCNN_BACKEND
        else:
            B.use(prev)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    import gpucnn

    if args.num_classes < 1:
        raise UsageError(f"--num-classes must be >= 1, got {args.num_classes}")
    gpucnn.backend.use(args.backend)
    shape = _parse_shape(args.input)
    model = build_model(args.model, shape, args.num_classes,
                        small_input=True if args.small_input else None)
    model.summary(input_shape=shape)
    return 0


def _normalise(x_tr: np.ndarray, x_te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x_tr.mean(axis=(0, 2, 3), keepdims=True)
    std = x_tr.std(axis=(0, 2, 3), keepdims=True) + 1e-7
    return ((x_tr - mean) / std).astype(np.float32), ((x_te - mean) / std).astype(np.float32)


def cmd_train(args: argparse.Namespace) -> int:
    import gpucnn
    from gpucnn import optim
    from gpucnn import transforms as T
    from gpucnn.callbacks import Callback
    from gpucnn.data import DataLoader

    model_key = _model_key(args.model)
    ds_key = _dataset_key(args.dataset)
    for what, v, low in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                         ("--limit", args.limit, 1), ("--test-limit", args.test_limit, 1),
                         ("--seed", args.seed, 0), ("--threads", args.threads, 0)):
        if v is not None and v < low:
            raise UsageError(f"{what} must be >= {low}, got {v}")
    if not args.lr > 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    if not args.weight_decay >= 0:
        raise UsageError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    gpucnn.backend.use(args.backend)
    gpucnn.manual_seed(args.seed)
    if args.threads:
        set_blas_threads(args.threads)
    x_tr, y_tr, x_te, y_te, classes = load_dataset(ds_key, args.data_dir, args.download,
                                                   args.seed)
    if args.limit:
        x_tr, y_tr = x_tr[: args.limit], y_tr[: args.limit]
    if args.test_limit:
        x_te, y_te = x_te[: args.test_limit], y_te[: args.test_limit]
    if model_key in _NEEDS_32 and x_tr.shape[2:] == (28, 28):
        pad = ((0, 0), (0, 0), (2, 2), (2, 2))  # 28x28 digits -> 32x32 for these models
        x_tr, x_te = np.pad(x_tr, pad), np.pad(x_te, pad)
    x_tr, x_te = _normalise(x_tr, x_te)
    shape = tuple(int(s) for s in x_tr.shape[1:])
    model = build_model(model_key, shape, classes)  # type: ignore[arg-type]
    out = Path(args.out)
    try:  # before training, not after it: a run must not end in an unwritable folder
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"--out {args.out}: cannot create the output folder ({exc})") from exc

    aug = None
    if args.augment:
        fill = float(x_tr.min())
        if shape[0] == 3:
            aug = T.Compose([T.RandomCrop(shape[1:], padding=4, fill=fill),
                             T.RandomHorizontalFlip()])
        else:
            aug = T.Compose([T.RandomRotation(10, fill=fill),
                             T.RandomCrop(shape[1:], padding=2, fill=fill)])
    loader = DataLoader((x_tr, y_tr), batch_size=args.batch_size, shuffle=True,
                        seed=args.seed, transform=aug, tensors=False)  # fit takes arrays
    params = model.trainable_parameters()
    if args.optimizer == "sgd":
        opt = optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    elif args.optimizer == "adamw":
        opt = optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay or 1e-2)
    else:
        opt = optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    sched = None
    steps = args.epochs * len(loader)
    if args.schedule == "cosine" and steps > 1:
        warm = max(1, min(len(loader), steps // 10))
        sched = optim.warmup(opt, optim.CosineAnnealingLR(opt, T_max=max(1, steps - warm)),
                             warmup_steps=warm) if steps > warm else None
    elif args.schedule == "step" and steps > 1:
        sched = optim.StepLR(opt, step_size=max(1, steps // 3), gamma=0.1)

    class _PerBatch(Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if sched is not None:
                sched.step()

    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  mixed_precision=args.mixed_precision)
    print(f"train {model_key} on {ds_key}: {len(x_tr)} train / {len(x_te)} test images "
          f"{shape}, {classes} classes | {model.count_params():,} parameters | backend "
          f"{gpucnn.backend.current()} | {args.optimizer} lr {args.lr} ({args.schedule}) | "
          f"augmentation {'on' if aug else 'off'}"
          f"{' | ' + args.mixed_precision if args.mixed_precision else ''}"
          f"{' | CUDA graph' if args.cuda_graph else ''}", flush=True)
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    t0 = time.perf_counter()
    hist = model.fit(loader, epochs=args.epochs, verbose=verbose,
                     validation_data=(x_te, y_te), callbacks=[_PerBatch()],
                     cuda_graph=args.cuda_graph)
    seconds = time.perf_counter() - t0
    loss, acc = model.evaluate(x_te, y_te, batch_size=256)
    model_path = out / f"{model_key}.npz"
    model.save(model_path)
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    (out / "history.json").write_text(json.dumps(
        {"model": model_key, "dataset": ds_key, "history": history, "test_loss": float(loss),
         "test_accuracy": float(acc), "train_seconds": seconds,
         "backend": gpucnn.backend.current(), "args": vars(args)}, indent=1, default=str))
    print(f"saved {model_path} and {out / 'history.json'}")
    print(f"test accuracy: {acc:.4f} (loss {loss:.4f}) after {seconds:.1f} s")
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The ``gpucnn`` parser: sub-commands train, summary, info, models, onnx; every option has
    help text and shows its default (:class:`HelpFormatter`)."""
    fmt = HelpFormatter
    p = argparse.ArgumentParser(prog="gpucnn", formatter_class=fmt,
                                description="gpucnn: train and inspect CNNs (CUDA kernels via "
                                "CuPy, NumPy fallback).")
    sub = p.add_subparsers(dest="command", metavar="{train,summary,info,models,onnx}")
    sub.required = True

    info = sub.add_parser("info", help="backend, device, versions, kernel locations",
                          description="The backend chosen and why, the device, versions and "
                          "where kernels and caches live.", formatter_class=fmt)
    info.add_argument("--backend", type=backend_arg, default=None,
                      metavar="{" + ",".join(BACKEND_CHOICES) + "}",
                      help="backend to try (default: $GPUCNN_BACKEND when set, else auto)")
    info.set_defaults(func=cmd_info)

    models = sub.add_parser("models", help="list the model zoo, one line per model",
                            description="Each model of the zoo: name, default input, "
                            "parameters, classes and what it is.", formatter_class=fmt)
    models.set_defaults(func=cmd_models)

    summ = sub.add_parser("summary", help="print a model's layer table",
                          description="A model's layer table (Keras-style summary).",
                          formatter_class=fmt)
    summ.add_argument("--model", required=True, help="a model name (see: gpucnn models)")
    summ.add_argument("--input", default="3,32,32", help="per-sample input C,H,W")
    summ.add_argument("--num-classes", type=int, default=10, help="size of the output layer")
    summ.add_argument("--small-input", action="store_true",
                      help="resnet18/34: 3x3 stem without max pool (default: on for H <= 64)")
    add_backend_argument(summ)
    summ.set_defaults(func=cmd_summary)

    tr = sub.add_parser("train", help="train a model on a dataset",
                        description="Train a model of the zoo on a dataset with Adam/AdamW/SGD "
                        "and a per-batch learning-rate schedule, evaluate it on the test split "
                        "and save the model and its history into --out.", formatter_class=fmt)
    tr.add_argument("--model", default="lenet5", help="a model name (see: gpucnn models)")
    tr.add_argument("--dataset", default="mnist-sample",
                    help=f"one of {', '.join(DATASET_NAMES)}")
    tr.add_argument("--data-dir", default=None,
                    help="folder with the dataset files (default: $GPUCNN_DATA_DIR, else "
                         "~/.cache/gpucnn)")
    tr.add_argument("--download", action="store_true",
                    help="download a missing dataset, SHA-256 verified (default: off)")
    tr.add_argument("--epochs", type=int, default=10, help="passes over the training set")
    tr.add_argument("--batch-size", type=int, default=64, help="images per step")
    tr.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    tr.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam",
                    help="adam, adamw (weight decay 1e-2 unless --weight-decay) or sgd "
                         "(momentum 0.9)")
    tr.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay")
    tr.add_argument("--schedule", choices=("cosine", "step", "none"), default="cosine",
                    help="learning-rate schedule, stepped per batch (cosine has a warm-up)")
    tr.add_argument("--augment", action="store_true",
                    help="random crops (+ flips for colour, rotations for grey images) "
                         "(default: off)")
    tr.add_argument("--limit", type=int, default=None,
                    help="use the first N training images (default: all)")
    tr.add_argument("--test-limit", type=int, default=None,
                    help="use the first N test images (default: all)")
    tr.add_argument("--seed", type=int, default=0,
                    help="seed of the weights, shuffling, augmentation and split")
    add_backend_argument(tr)
    tr.add_argument("--threads", type=int, default=1,
                    help="NumPy BLAS threads (0 leaves the setting alone)")
    tr.add_argument("--out", default="gpucnn_run",
                    help="output folder for the model (.npz) and history.json")
    tr.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                    help="0 silent, 1 a progress bar, 2 one line per epoch (default: 1 on a "
                         "terminal, else 2)")
    tr.add_argument("--mixed-precision", choices=("float16", "bfloat16"), default=None,
                    help="train with FP16/BF16 GEMM-class ops (compile(mixed_precision=...); "
                         "float16 adds dynamic loss scaling)")
    tr.add_argument("--cuda-graph", action="store_true",
                    help="cuda backend: capture the training step as one CUDA graph and replay "
                         "it per batch (fit(cuda_graph=True))")
    tr.set_defaults(func=cmd_train)

    from gpucnn.onnx.cli import add_onnx_parser

    add_onnx_parser(sub, fmt)
    return p


def parser_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``dest`` -> long option string of ``parser``'s options (for :func:`flag_message`)."""
    return {a.dest: max(a.option_strings, key=len) for a in parser._actions
            if a.option_strings and a.dest != "help"}


def _flags(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """:func:`parser_flags` of the sub-command ``command``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return parser_flags(action.choices[command])
    return {}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code: 0 success, 1 a runtime failure, 2 a usage
    error (argparse's own errors exit with 2). A ``ValueError``/``TypeError`` from the library
    that names one of the command's parameters is reported under its flag, with exit code 2;
    other exceptions propagate (a bug shows its traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = _flags(parser, args.command)

    def fail(exc: BaseException, code: int) -> int:
        text, _ = flag_message(str(exc), flags)
        print(f"gpucnn {args.command}: error: {text}", file=sys.stderr)
        return code

    try:
        return int(args.func(args))
    except UsageError as exc:
        return fail(exc, 2)
    except RunError as exc:
        return fail(exc, 1)
    except Exception as exc:
        from gpucnn.backend import BackendUnavailable
        from gpucnn.cuda_graph import CudaGraphError
        from gpucnn.datasets import DatasetError, DatasetNotFoundError, DownloadError
        from gpucnn.onnx._common import ExportError

        # ImportError: ``gpucnn onnx`` without the onnx extra (the message says how to install).
        if isinstance(exc, (BackendUnavailable, DatasetError, DatasetNotFoundError,
                            DownloadError, FileNotFoundError, ExportError, ImportError,
                            CudaGraphError)):
            return fail(exc, 1)
        if isinstance(exc, (ValueError, TypeError)) and flag_message(str(exc), flags)[1]:
            return fail(exc, 2)
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
