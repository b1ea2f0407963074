"""Mini-batch loading: :class:`DataLoader` (shuffle, prefetch thread, device upload, augmentation)
and :class:`TensorDataset`. Augmentations live in :mod:`gpucnn.transforms`."""

from gpucnn.data.loader import DataLoader, TensorDataset

__all__ = ["DataLoader", "TensorDataset"]
