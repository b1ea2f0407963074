"""MNIST and Fashion-MNIST (gzipped IDX files, standard names) and the embedded 5,000-digit sample.

Every loader returns ``(images, labels)``: images ``(N, 1, 28, 28)`` float32 in [0, 1] (or the
raw uint8 with ``normalize=False``), labels ``(N,)`` int64.
"""

from __future__ import annotations

import functools
import os
from importlib import resources

import numpy as np

from gpucnn.datasets._download import DatasetError, fetch_file
from gpucnn.datasets.idx import parse_idx, read_idx

__all__ = [
    "FASHION_MNIST_CLASSES",
    "load_fashion_mnist",
    "load_mnist",
    "mnist_sample",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_FILES = {
    True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# SHA-256 of the embedded sample (gpucnn/datasets/data/), checked when it is first read.
_SAMPLE_SHA256 = {
    "images-idx3-ubyte.gz": "35c4442b3738be6b58df4ff21f19341f0368e1c3d24840252fb3ff06ba646387",
    "labels-idx1-ubyte.gz": "abdbe68beb8b8e1983d8086fdcb07e198f851fb0c1af91276c18f154ef0b67d8",
}


def _finish(images: np.ndarray, labels: np.ndarray, name: str, normalize: bool
            ) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim != 3:
        raise DatasetError(f"{name}: expected images (N, H, W), got shape {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"{name}: {images.shape[0]} images but labels of shape {labels.shape}"
        )
    x = images[:, None, :, :]
    x = x.astype(np.float32) / np.float32(255.0) if normalize else np.array(x, copy=True)
    return x, labels.astype(np.int64)


#: The most images an MNIST-format file may hold (the real ones: 60,000 train, 10,000 test):
#: a header declaring more is refused before any data is read or inflated.
_MAX_IMAGES = 100_000


def _load_idx_pair(dataset: str, root: str | os.PathLike | None, train: bool, download: bool,
                   normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    paths = [fetch_file(dataset, f, root, download) for f in _FILES[train]]
    images = read_idx(paths[0], ndim=3, max_bytes=_MAX_IMAGES * 28 * 28)
    labels = read_idx(paths[1], ndim=1, max_bytes=_MAX_IMAGES)
    name = f"{dataset} ({paths[0].name}, {paths[1].name})"
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise DatasetError(
            f"{paths[0]}: expected uint8 images (N, 28, 28), got {images.dtype} "
            f"{images.shape}"
        )
    if labels.dtype != np.uint8 or (labels.size and int(labels.max()) > 9):
        raise DatasetError(
            f"{paths[1]}: expected uint8 labels 0..9, got {labels.dtype} "
            f"{'max ' + str(labels.max()) if labels.size else 'no labels'}"
        )
    return _finish(images, labels, name, normalize)


def load_mnist(
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = False,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST digits: 60,000 training or 10,000 test images.

    Files (``train-images-idx3-ubyte.gz`` ...) are read from ``<root>/mnist/`` (or ``<root>/``),
    ``root`` defaulting to ``$GPUCNN_DATA_DIR`` or ``~/.cache/gpucnn``; ``download=True``
    fetches missing ones (SHA-256 verified).

    Returns:
        ``(images, labels)``: ``(N, 1, 28, 28)`` float32 in [0, 1] (uint8 0..255 if
        ``normalize=False``) and ``(N,)`` int64.
    """
    return _load_idx_pair("mnist", root, train, download, normalize)


def load_fashion_mnist(
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = False,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (Zalando): like :func:`load_mnist`, files in ``<root>/fashion_mnist/``.

    Class names are in :data:`FASHION_MNIST_CLASSES`.
    """
    return _load_idx_pair("fashion_mnist", root, train, download, normalize)


@functools.lru_cache(maxsize=1)
def _sample_uint8() -> tuple[np.ndarray, np.ndarray]:
    import hashlib

    folder = resources.files("gpucnn.datasets") / "data"
    arrays = []
    for fname, ndim in (("images-idx3-ubyte.gz", 3), ("labels-idx1-ubyte.gz", 1)):
        raw = (folder / fname).read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != _SAMPLE_SHA256[fname]:
            raise DatasetError(
                f"embedded MNIST sample {fname}: checksum mismatch (sha256 {digest}); "
                "the gpucnn installation is damaged, reinstall it"
            )
        arrays.append(parse_idx(raw, f"gpucnn/datasets/data/{fname}", ndim))
    images, labels = arrays
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def mnist_sample(normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped inside gpucnn (500 per class), read offline.

    Returns:
        ``(images, labels)``: ``(5000, 1, 28, 28)`` float32 in [0, 1] (uint8 if
        ``normalize=False``) and ``(5000,)`` int64; fresh arrays on every call.
    """
    images, labels = _sample_uint8()
    return _finish(images, labels, "embedded MNIST sample", normalize)

