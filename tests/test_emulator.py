"""The host kernel emulator must run correct kernels correctly and catch wrong ones."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

KERNELS = Path(__file__).resolve().parent / "emulator_kernels"


@pytest.fixture(scope="module")
def basics(emulator):
    return emulator.EmulatedModule(KERNELS / "basics.cu")


def _vadd_inputs(n=1000):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    return a, b, np.zeros(n, np.float32)


def test_kernels_found_and_signature(basics):
    assert "vadd" in basics.kernel_names and "scalars" in basics.kernel_names
    assert basics.get_function("vadd").signature == ("pf4", "pf4", "pf4", "i4")
    assert basics.fibers  # the source has barriers
    with pytest.raises(AttributeError, match="no_such"):
        basics.get_function("no_such")


def test_vadd_correct_vs_planted_bugs(emulator, basics):
    a, b, c = _vadd_inputs()
    n = np.int32(a.size)
    basics.get_function("vadd")((4,), (128,), (a, b, c, n))
    np.testing.assert_array_equal(c, a + b)
    # off-by-one: the write past the end lands in the guard zone and is reported
    c2 = np.zeros_like(c)
    with pytest.raises(emulator.EmulatorError, match="past the end of argument 2"):
        basics.get_function("vadd_off_by_one")((4,), (128,), (a, b, c2, n))
    # a start index without blockIdx: right with one block, wrong with several
    k = basics.get_function("vadd_no_block_offset")
    c3 = np.zeros_like(c)
    k((1,), (128,), (a, b, c3, n))
    np.testing.assert_array_equal(c3, a + b)
    c4 = np.zeros_like(c)
    k((4,), (128,), (a, b, c4, n))
    assert not np.array_equal(c4, a + b)


def test_block_reduction_needs_barriers(basics):
    x = np.ones(256 * 3, np.float32)
    out = np.zeros(3, np.float32)
    basics.get_function("block_sum")((3,), (256,), (x, out, np.int32(x.size)))
    np.testing.assert_array_equal(out, [256, 256, 256])
    racy = np.zeros(3, np.float32)
    basics.get_function("block_sum_racy")((3,), (256,), (x, racy, np.int32(x.size)))
    assert not np.any(racy == 256), racy


def test_warp_shuffles_and_ballot(basics):
    n = 96
    x = np.linspace(-1.0, 2.0, n, dtype=np.float32)
    down = np.zeros(n // 32, np.float32)
    xor = np.zeros(n, np.float32)
    bcast = np.zeros(n, np.float32)
    ballot = np.zeros(n // 32, np.uint32)
    basics.get_function("warp_ops")((1,), (n,), (x, down, xor, bcast, ballot, np.int32(n)))
    sums = x.reshape(-1, 32).sum(axis=1)
    np.testing.assert_allclose(down, sums, rtol=1e-5)
    np.testing.assert_allclose(xor, np.repeat(sums, 32), rtol=1e-5)
    np.testing.assert_array_equal(bcast, np.repeat(x.reshape(-1, 32)[:, 5], 32))
    bits = (x.reshape(-1, 32) > 0).astype(np.uint64) << np.arange(32, dtype=np.uint64)
    np.testing.assert_array_equal(ballot, bits.sum(axis=1).astype(np.uint32))


def test_atomics_histogram(basics):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 1000, 5000).astype(np.int32)
    nbins = 17
    hist = np.zeros(nbins, np.uint32)
    fsum = np.zeros(1, np.float32)
    dsum = np.zeros(1, np.float64)
    usum = np.zeros(1, np.uint64)
    imax = np.array([-1], np.int32)
    imin = np.array([10**6], np.int32)
    cas = np.zeros(1, np.int32)
    basics.get_function("atomics")(
        (7,), (64,), (x, np.int32(x.size), hist, np.int32(nbins), fsum, dsum, usum, imax, imin, cas)
    )
    np.testing.assert_array_equal(hist, np.bincount(x % nbins, minlength=nbins))
    assert dsum[0] == x.sum() and usum[0] == x.sum() and cas[0] == x.size
    np.testing.assert_allclose(fsum[0], x.sum(), rtol=1e-5)
    assert imax[0] == x.max() and imin[0] == x.min()


def test_dynamic_shared_memory(basics):
    n, block = 1000, 128
    x = np.arange(n, dtype=np.float32)
    y = np.zeros(n, np.float32)
    k = basics.get_function("reverse_blocks")
    grid = -(-n // block)
    k((grid,), (block,), (x, y, np.int32(n)), shared_mem=block * 4)
    expected = np.concatenate([c[::-1] for c in np.split(x, range(block, n, block))])
    np.testing.assert_array_equal(y, expected)
    with pytest.raises(ValueError, match="shared_mem"):
        k((grid,), (block,), (x, y, np.int32(n)), shared_mem=64 * 1024)


@pytest.mark.parametrize(
    "grid,block", [((2, 3, 4), (4, 2, 3)), ((3, 2), (8, 4)), (5, (2, 2, 2)), ((1, 1, 2), 7)]
)
def test_multidimensional_indices(basics, grid, block):
    g = (grid,) if isinstance(grid, int) else grid
    b = (block,) if isinstance(block, int) else block
    g, b = g + (1,) * (3 - len(g)), b + (1,) * (3 - len(b))
    out = np.full(int(np.prod(g) * np.prod(b)), -1, np.int32)
    basics.get_function("indices3d")(grid, block, (out,))
    expected = []
    for bz in range(g[2]):
        for by in range(g[1]):
            for bx in range(g[0]):
                for tz in range(b[2]):
                    for ty in range(b[1]):
                        for tx in range(b[0]):
                            expected.append(((((bx * 8 + by) * 8 + bz) * 8 + tx) * 8 + ty) * 8 + tz)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("block", [32, 1])
def test_grid_stride_every_grid_size(basics, block):
    a, b, _ = _vadd_inputs(300)
    k = basics.get_function("vadd")
    max_grid = -(-a.size // block)
    grids = sorted({1, 2, 3, 5, 7, max_grid // 2, max_grid - 1, max_grid, max_grid + 3})
    for g in grids:
        c = np.zeros_like(a)
        k((g,), (block,), (a, b, c, np.int32(a.size)))
        np.testing.assert_array_equal(c, a + b, err_msg=f"grid={g} block={block}")


def test_fast_path_grid_sweep(emulator):
    mod = emulator.EmulatedModule(KERNELS / "nobarrier.cu")
    assert not mod.fibers
    k = mod.get_function("fill_ids")
    n = 777
    for g in range(1, n + 1, 37):
        y = np.full(n, -1, np.int32)
        k((g,), (max(1, n // g),), (y, np.int32(n)))
        np.testing.assert_array_equal(y, np.arange(n))


def test_forced_fibers_same_result(emulator):
    mod = emulator.EmulatedModule(KERNELS / "nobarrier.cu", fibers=True)
    y = np.zeros(100, np.int32)
    mod.get_function("fill_ids")((3,), (16,), (y, np.int32(100)))
    np.testing.assert_array_equal(y, np.arange(100))


def test_scalar_widths(basics):
    oi = np.zeros(4, np.int64)
    of = np.zeros(3, np.float64)
    args = (
        oi,
        of,
        np.int32(-7),
        np.uint32(2**32 - 1),
        np.int64(-(2**40)),
        np.uint64(2**63 + 5),
        np.float32(1.5),
        np.float64(2.25),
    )
    basics.get_function("scalars")((1,), (1,), args)
    np.testing.assert_array_equal(
        oi, [-7, 2**32 - 1, -(2**40), np.uint64(2**63 + 5).view(np.int64)]
    )
    np.testing.assert_array_equal(of, [1.5, 2.25, 1.5 + 2 + 3])


def test_argument_type_errors(basics):
    a, b, c = _vadd_inputs(64)
    k = basics.get_function("vadd")
    with pytest.raises(TypeError, match="Python int"):
        k((1,), (64,), (a, b, c, 64))
    with pytest.raises(TypeError, match="Python float"):
        basics.get_function("scale_inplace")((1,), (64,), (a, c, 2.0, np.int32(64)))
    with pytest.raises(TypeError, match="int32"):
        k((1,), (64,), (a, b, c, np.int64(64)))  # wrong width
    with pytest.raises(TypeError, match="float64 array"):
        k((1,), (64,), (a.astype(np.float64), b, c, np.int32(64)))
    with pytest.raises(TypeError, match="takes 4 arguments"):
        k((1,), (64,), (a, b, c))
    with pytest.raises(ValueError, match="C-contiguous"):
        k((1,), (32,), (a[::2], b[::2], c[:32], np.int32(32)))
    with pytest.raises(ValueError, match="block"):
        k((1,), (2048,), (a, b, c, np.int32(64)))


def test_divergent_barrier_reported(emulator, basics):
    y = np.zeros(40, np.float32)
    with pytest.raises(emulator.EmulatorError, match="exited while"):
        basics.get_function("divergent_barrier")((1,), (64,), (y, np.int32(40)))


def test_in_place_aliasing_and_views(basics):
    x = np.arange(10, dtype=np.float32)
    basics.get_function("scale_inplace")((1,), (8,), (x, x, np.float32(3), np.int32(10)))
    np.testing.assert_array_equal(x, 3 * np.arange(10))
    big = np.zeros(20, np.float32)
    view = big[5:15]  # a C-contiguous view: written in place, neighbours untouched
    basics.get_function("scale_inplace")((2,), (4,), (x, view, np.float32(2), np.int32(10)))
    np.testing.assert_array_equal(big[5:15], 6 * np.arange(10))
    assert not big[:5].any() and not big[15:].any()


def test_write_to_read_only_array_reported(emulator, basics):
    x = np.arange(10, dtype=np.float32)
    x.flags.writeable = False
    with pytest.raises(emulator.EmulatorError, match="read-only"):
        basics.get_function("scale_inplace")((1,), (16,), (x, x, np.float32(2), np.int32(10)))


def test_compile_error_names_file(emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCNN_EMULATOR_CACHE", str(tmp_path))
    with pytest.raises(emulator.EmulatorCompileError, match=r"broken\.cu[\s\S]*undefined_symbol"):
        emulator.EmulatedModule(KERNELS / "broken.cu")


def test_compiled_library_cached(emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCNN_EMULATOR_CACHE", str(tmp_path))
    first = emulator.EmulatedModule(KERNELS / "nobarrier.cu")
    assert not first.from_cache and first.library.parent == tmp_path
    mtime = os.stat(first.library).st_mtime_ns
    second = emulator.EmulatedModule(KERNELS / "nobarrier.cu")
    assert second.from_cache and second.library == first.library
    assert os.stat(second.library).st_mtime_ns == mtime
    third = emulator.EmulatedModule(KERNELS / "nobarrier.cu", defines={"UNUSED": 1})
    assert not third.from_cache and third.library != first.library
    assert not list(tmp_path.glob(".tmp-*"))


def test_emulated_runtime_launch(emulator):
    from gpucnn.backend.runtime import current_runtime, use_runtime

    with use_runtime(emulator.emulated_runtime(grid_cap=2, block=32)) as rt:
        assert current_runtime() is rt and rt.xp is np and rt.name == "emulator"
        assert rt.grid_for(10_000) == 2


def test_launch_grid_sweep_runs_grid_stride_loops(emulated, launch_grid):
    """The shared sweep (conftest ``launch_grid``/``emulated``): the runtime launches with that
    shape, and a grid-stride kernel covers every element whatever the grid."""
    from gpucnn.backend.runtime import MAX_GRID, current_runtime

    rt = current_runtime()
    grid_cap, block = launch_grid
    assert rt is emulated and (rt.grid_cap, rt.block) == (grid_cap, block)
    n = 1000
    assert rt.grid_for(n) == min(-(-n // block), grid_cap or MAX_GRID)
    a, b, c = _vadd_inputs(n)
    rt.launch(str(KERNELS / "basics.cu"), "vadd", n, (a, b, c, np.int32(n)))
    np.testing.assert_array_equal(c, a + b)


def test_kernel_parity_helper_catches_differences(kernel_parity):
    """The shared twin-vs-kernel check (conftest ``kernel_parity``) fails on every kind of
    difference: values, integers, dtypes, structure, and in-place writes to arguments."""
    from gpucnn.backend.numpy_ops import bias as twin

    x = np.arange(6, dtype=np.float32)
    got, want = kernel_parity("bias", lambda m: x * 2)
    np.testing.assert_array_equal(got, want)
    off = lambda m: x * 2 if m is twin else x * 2 * np.float32(1 + 1e-5)  # noqa: E731
    with pytest.raises(AssertionError, match="bias.<lambda>"):
        kernel_parity("bias", off)
    kernel_parity("bias", off, rtol=1e-4)  # inside an explicit tolerance
    with pytest.raises(AssertionError):
        kernel_parity("bias", off, rtol=1, atol=1, exact=True)
    with pytest.raises(AssertionError):  # integers compare exactly, whatever the tolerance
        kernel_parity("bias", lambda m: np.arange(3) + (m is not twin), rtol=1, atol=1)
    with pytest.raises(AssertionError, match="float64"):
        kernel_parity("bias", lambda m: x if m is twin else x.astype(np.float64))
    with pytest.raises(AssertionError, match="NoneType"):
        kernel_parity("bias", lambda m: (x, None) if m is twin else (x, x), label="pair")

    def bump(m, a):  # noqa: ANN001, ANN202 - an in-place "primitive" that differs
        a += 1 if m is twin else 2

    with pytest.raises(AssertionError, match="argument 0 after the call"):
        kernel_parity("bias", bump, x)
    assert x[0] == 0  # each side ran on its own copy


def test_subwarp_shuffle_and_syncthreads_count(basics):
    x = np.linspace(-3, 4, 64, dtype=np.float32)
    seg = np.zeros(64, np.float32)
    count = np.zeros(1, np.int32)
    basics.get_function("segments_and_count")((1,), (64,), (x, seg, count))
    np.testing.assert_allclose(seg, np.repeat(x.reshape(-1, 8).sum(axis=1), 8), rtol=1e-5)
    assert count[0] == int((x > 0).sum())


def test_shuffle_with_exited_lane_reported(emulator, basics):
    y = np.zeros(32, np.float32)
    with pytest.raises(emulator.EmulatorError, match="exited"):
        basics.get_function("shuffle_after_exit")((1,), (32,), (y,))


def test_static_shared_memory_starts_poisoned(emulator):
    """Reading shared memory nobody wrote gives NaN (as garbage on a GPU), not zeros."""
    mod = emulator.EmulatedModule(KERNELS / "sharedinit.cu")
    x = np.arange(64, dtype=np.float32)
    good = np.zeros(1, dtype=np.float32)
    bad = np.zeros(1, dtype=np.float32)
    mod.get_function("sum_correct")((1,), (64,), (x, good, np.int32(64)))
    mod.get_function("sum_reads_unwritten")((1,), (64,), (x, bad, np.int32(64)))
    assert good[0] == x.sum()
    assert np.isnan(bad[0])
