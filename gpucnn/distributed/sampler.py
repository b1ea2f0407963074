"""DistributedSampler: each rank's disjoint, seeded, per-epoch shuffled share of a data set."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from gpucnn._checks import check_bool, check_int

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """The indices of one rank's share of ``n`` samples, for
    :class:`gpucnn.data.DataLoader`'s ``sampler=``.

    Every epoch the ranks agree on one order (``shuffle``: the permutation of
    ``default_rng(SeedSequence([seed, epoch]))``, the same one a shuffled
    :class:`~gpucnn.data.DataLoader` with that seed draws; else ``0..n-1``), padded by
    repeating its start to a multiple of ``num_replicas`` (or cut to one, ``drop_last``),
    and rank ``r`` takes every ``num_replicas``-th index from position ``r``. So the ranks'
    shares are disjoint (padding aside), every rank runs the same number of steps, and step
    ``k`` of the ranks at batch ``B`` together covers the samples of step ``k`` of one
    process at batch ``num_replicas * B``.

    Args:
        n: the number of samples (or a data set with ``__len__``).
        num_replicas: the number of ranks (default :func:`~gpucnn.distributed.world_size`).
        rank: this rank (default :func:`~gpucnn.distributed.rank`).
        shuffle: a new order every epoch.
        seed: the shuffle seed; must be the same on every rank.
        drop_last: cut the order to a multiple of ``num_replicas`` instead of padding it.
    """

    def __init__(self, n: Any, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        from gpucnn.distributed import world

        if not isinstance(n, (int, np.integer)) and hasattr(n, "__len__"):
            n = len(n)
        self.n = check_int("DistributedSampler", "n", n, 0)
        if num_replicas is None:
            num_replicas = world.world_size()
        self.num_replicas = check_int("DistributedSampler", "num_replicas", num_replicas, 1)
        if rank is None:
            rank = world.rank()
        self.rank = check_int("DistributedSampler", "rank", rank, 0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"DistributedSampler: rank must be in [0, {self.num_replicas}), "
                             f"got {self.rank}")
        self.shuffle = check_bool("DistributedSampler", "shuffle", shuffle)
        self.seed = check_int("DistributedSampler", "seed", seed, 0)
        self.drop_last = check_bool("DistributedSampler", "drop_last", drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order :meth:`indices` gives (call it before each epoch)."""
        self.epoch = check_int("DistributedSampler.set_epoch", "epoch", epoch, 0)

    @property
    def total_size(self) -> int:
        """The length of the padded (or cut) order shared by all ranks."""
        w = self.num_replicas
        return (self.n // w) * w if self.drop_last else math.ceil(self.n / w) * w

    def __len__(self) -> int:
        return self.total_size // self.num_replicas

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch (int64)."""
        if self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch]))
            order = rng.permutation(self.n)
        else:
            order = np.arange(self.n)
        total = self.total_size
        if total > self.n:
            if self.n == 0:
                return np.zeros(0, dtype=np.int64)
            order = np.resize(order, total)  # repeats the order's start cyclically
        return order[self.rank:total:self.num_replicas].astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __repr__(self) -> str:
        return (f"DistributedSampler(n={self.n}, num_replicas={self.num_replicas}, "
                f"rank={self.rank}, shuffle={self.shuffle}, seed={self.seed}, "
                f"epoch={self.epoch})")
