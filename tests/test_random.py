"""The Philox stream behind gpucnn.random.uniform: known answers, kernel parity, exact resume."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import backend as B
from gpucnn import random as R
from gpucnn.backend.numpy_ops import random as np_random

U64 = np.uint64


@pytest.mark.parametrize(
    "ctr, key, expected",
    [  # Known-answer vectors of Philox4x32-10 published with Random123 (Salmon et al., 2011)
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        (
            (0xFFFFFFFF,) * 4,
            (0xFFFFFFFF,) * 2,
            (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
        ),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_known_answers(ctr: tuple, key: tuple, expected: tuple) -> None:
    out = np_random.philox4x32_10(tuple(np.array([c], dtype=U64) for c in ctr), *key)
    assert tuple(int(o[0]) for o in out) == expected


def test_stream_words_are_philox_blocks() -> None:
    seed = 0x0123456789ABCDEF
    words = np_random.philox_words(5, 3, seed)
    for b in range(3):
        blk = np_random.philox4x32_10(
            (np.array([5 + b], U64), np.array([0], U64), np.array([0], U64), np.array([0], U64)),
            seed & 0xFFFFFFFF,
            seed >> 32,
        )
        assert list(words[4 * b : 4 * b + 4]) == [int(w[0]) for w in blk]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_offsets_slice_one_stream(dtype: type) -> None:
    full = np_random.random_uniform(40, dtype, 9, 0)
    per = 2 if dtype == np.float64 else 1
    part = np_random.random_uniform(12, dtype, 9, 8 * per)
    np.testing.assert_array_equal(part, full[8 : 8 + 12])
    assert full.dtype == dtype and 0.0 <= full.min() and full.max() < 1.0


def test_uniform_statistics() -> None:
    u = np_random.random_uniform(200_000, np.float64, 3, 0)
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    hist = np.bincount((u * 10).astype(int), minlength=10)
    assert hist.min() > 19_000 and hist.max() < 21_000


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        np_random.random_uniform(4, np.float32, 0, 3)
    with pytest.raises(TypeError, match="float32 or float64"):
        np_random.random_uniform(4, np.int32, 0, 0)
    with pytest.raises(ValueError, match="seed"):
        np_random.random_uniform(4, np.float32, -1, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, offset", [(1, 0), (37, 4), (1000, 1 << 40)])
def test_kernel_matches_twin(kernel_parity, launch_grid, dtype: type, n: int, offset: int) -> None:
    seed = 2**63 + 12345
    got, _ = kernel_parity(
        "random", "random_uniform", n, dtype, seed, offset, launch=launch_grid, exact=True
    )
    assert got.shape == (n,) and got.dtype == dtype


def test_uniform_advances_and_state_restores_exactly() -> None:
    gpucnn.manual_seed(11)
    a = R.uniform((3, 5))
    state = R.get_state()
    b = R.uniform(7, np.float64)
    c = R.uniform((2, 2))
    assert not np.array_equal(a.reshape(-1)[:4], c.reshape(-1))
    R.set_state(state)
    np.testing.assert_array_equal(R.uniform(7, np.float64), b)
    np.testing.assert_array_equal(R.uniform((2, 2)), c)
    gpucnn.manual_seed(11)
    np.testing.assert_array_equal(R.uniform((3, 5)), a)


def test_dropout_mask_resumes_exactly() -> None:
    x = gpucnn.Tensor(np.ones((4, 50), dtype=np.float32))
    gpucnn.manual_seed(5)
    F.dropout(x, 0.5)
    state = R.get_state()
    first = F.dropout(x, 0.5).numpy()
    R.set_state(state)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), first)


@pytest.mark.gpu
def test_cuda_stream_equals_numpy() -> None:
    gpucnn.manual_seed(3)
    a = R.uniform((64, 33), np.float32, "cuda")
    gpucnn.manual_seed(3)
    b = R.uniform((64, 33), np.float32, "numpy")
    np.testing.assert_array_equal(B.to_numpy(a), b)
