"""Datasets: MNIST, Fashion-MNIST, CIFAR-10/100 loaders, the embedded MNIST sample, splits.

Loaders return ``(images, labels)`` as NumPy arrays: images ``(N, C, H, W)`` float32 in [0, 1]
(uint8 with ``normalize=False``), labels ``(N,)`` int64. Files are cached under ``root``, else
``$GPUCNN_DATA_DIR``, else ``~/.cache/gpucnn``; ``download=True`` fetches missing files from the
mirrors in :data:`MIRRORS` (``$GPUCNN_DATASET_MIRROR`` first), each verified against the SHA-256
in :data:`CHECKSUMS`. :func:`mnist_sample` needs no network: 5,000 digits ship with gpucnn.

Malformed files are refused with a :class:`DatasetError` naming the file and what is wrong,
before anything beyond what the format allows is inflated or allocated (IDX headers bound the
gzip stream, CIFAR batches and archive members are size-checked, pickles are read with checked
stand-ins only); downloads and :func:`write_idx` never leave a half-written file.
"""

from gpucnn.datasets._download import (
    CHECKSUMS,
    MIRRORS,
    ChecksumError,
    DatasetError,
    DatasetNotFoundError,
    DownloadError,
    cache_dir,
    download_file,
    fetch_file,
    sha256_file,
)
from gpucnn.datasets.cifar import CIFAR10_CLASSES, load_cifar10, load_cifar100, safe_unpickle
from gpucnn.datasets.idx import parse_idx, read_idx, write_idx
from gpucnn.datasets.mnist import (
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    load_mnist,
    mnist_sample,
)
from gpucnn.datasets.split import train_dev_test_split, train_test_split

__all__ = [
    "CHECKSUMS",
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "MIRRORS",
    "ChecksumError",
    "DatasetError",
    "DatasetNotFoundError",
    "DownloadError",
    "cache_dir",
    "download_file",
    "fetch_file",
    "load_cifar10",
    "load_cifar100",
    "load_fashion_mnist",
    "load_mnist",
    "mnist_sample",
    "parse_idx",
    "read_idx",
    "safe_unpickle",
    "sha256_file",
    "train_dev_test_split",
    "train_test_split",
    "write_idx",
]
