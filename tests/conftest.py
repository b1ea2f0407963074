"""Shared fixtures: one parametrised ``backend`` fixture over every usable backend, and the
host kernel emulator with one launch sweep and one twin-vs-kernel parity check.

``python -m pytest --simulate-cuda`` (or ``GPUCNN_SIMULATE_CUDA=1``) runs the suite with the
cuda backend on the simulated device of :mod:`gpucnn.testing.simcuda`: ``auto`` resolves to
it, ``gpu``-marked tests run on it, and backend-parametrised tests run their ``cuda`` case
(their ``numpy`` case ran in the plain pass). Tests about NumPy internals carry the
``numpy_internal`` marker and run on the NumPy backend in either pass.

Kernel tests (``cuda/*.cu`` run on the CPU by :mod:`gpucnn.testing.emulator`) use, instead of
their own copies:

``emulator`` (session)
    The :mod:`gpucnn.testing.emulator` module; the test is skipped, with the reason, where it
    cannot run (the module does not import, or there is no host C++17 compiler).
``launch_grid``
    Parametrised over :data:`LAUNCH_GRIDS`, the one sweep of 1-D launch shapes: a
    :class:`LaunchGrid` ``(grid_cap, block)`` (ids such as ``grid1x32``, ``grid3x256``,
    ``gridfullx64``; ``full`` = uncapped, as many blocks as the work needs). It holds one-block
    grids (every grid-stride loop runs many times), a few blocks, uncapped grids, warp-size,
    partial-warp (48), non-power-of-two (100), single-thread and 256-thread blocks. Pass it as
    ``emulator.emulated_runtime(*launch_grid)`` or as ``launch=`` of ``kernel_parity``.
``emulated``
    The emulated runtime of ``launch_grid``, active (``use_runtime``) for the whole test: the
    ``gpucnn.backend.cuda_ops`` launchers run their kernels through the emulator.
``emulate``
    ``emulate(grid_cap=None, block=DEFAULT_BLOCK)``: a context manager in which the launchers
    run on that one emulated launch shape (for a test about one specific launch; yields the
    runtime).
``kernel_parity``
    ``kernel_parity(family, fn, *args, launch=None, rtol=None, atol=None, exact=False,
    copy=True, label=None) -> (got, want)``: runs ``gpucnn.backend.numpy_ops.<family>.<fn>``
    (the NumPy twin) and ``gpucnn.backend.cuda_ops.<family>.<fn>`` under the emulator with the
    same arguments and asserts the results match: same structure (tuples, ``None``), shapes
    and dtypes; integer and bool outputs exactly; floats within :data:`PARITY_TOL` of their
    dtype (or ``rtol``/``atol``), or bit for bit with ``exact=True``. ``fn`` is a primitive's
    name or a callable ``fn(ops_module, *args)``. ``launch`` is a ``(grid_cap, block)`` pair
    (e.g. ``launch_grid``), a ready :class:`~gpucnn.backend.runtime.KernelRuntime`, or
    ``None`` for the default launch (uncapped grid, ``DEFAULT_BLOCK`` threads). Array
    arguments are copied (``order="K"``) for each side, so in-place primitives (bias add,
    optimizer steps, error accumulators) run on equal inputs and their array arguments are
    compared after the call too; ``copy=False`` hands both sides the very same objects (for
    exact layouts such as strided views; only for primitives that do not write their inputs).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest

os.environ.setdefault("GPUCNN_BACKEND", "auto")
# GPU parity tests compare CUDA float32 with NumPy float32 at tight tolerances: plain FP32
# GEMMs, no TF32 (tests/test_backend.py checks the TF32 switch itself).
os.environ.setdefault("GPUCNN_TF32", "0")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--simulate-cuda",
        action="store_true",
        default=False,
        help="run the suite with the cuda backend on the simulated CUDA device "
        "(GPUCNN_SIMULATE_CUDA=1: a CuPy stand-in, kernels through the host emulator)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--simulate-cuda"):
        os.environ["GPUCNN_SIMULATE_CUDA"] = "1"


def _simulating() -> bool:
    from gpucnn.backend.device import simulated

    return simulated()


def _usable_backends() -> list:
    from gpucnn import backend as B

    if _simulating():
        return [pytest.param("cuda", marks=pytest.mark.gpu)]  # numpy ran in the plain pass
    names: list = ["numpy"]
    names.append(
        pytest.param("cuda", marks=pytest.mark.gpu)
        if B.cuda_available()
        else pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skip(reason=f"no GPU: {B.cuda_unavailable_reason()}"),
            ],
        )
    )
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", _usable_backends(), indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest):
    """Each usable backend in turn (cuda is skipped, with the reason, where there is no GPU)."""
    from gpucnn.testing import backend_scope

    with backend_scope(request.param) as be:
        yield be


@pytest.fixture(autouse=True)
def _restore_backend(request: pytest.FixtureRequest):
    """Every test starts on the backend the session chose and leaves it so (or NumPy when the
    test is marked ``numpy_internal``)."""
    from gpucnn.testing import backend_scope

    if request.node.get_closest_marker("numpy_internal"):
        name = "numpy"
    else:  # the simulated pass: every test not about NumPy internals starts on cuda
        name = "cuda" if _simulating() else None
    with backend_scope(name):
        yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed() -> None:
    import gpucnn

    gpucnn.manual_seed(0)


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's reporter
    """On the simulated pass, what the device did: proof the cuda path really ran."""
    if not _simulating():
        return
    from gpucnn.testing import simcuda

    t = simcuda.totals()
    terminalreporter.write_line(
        "simulated CUDA device: "
        + ", ".join(f"{t.get(k, 0)} {k}" for k in ("launches", "cupy_kernels", "cublas",
                                                  "syncs", "h2d", "d2h", "allocations"))
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    from gpucnn import backend as B

    if B.cuda_available():
        return
    skip = pytest.mark.skip(reason=f"needs a GPU: {B.cuda_unavailable_reason()}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# ------------------------------------------------------------------ host kernel emulator


class LaunchGrid(NamedTuple):
    """A 1-D launch shape of :class:`~gpucnn.backend.runtime.KernelRuntime`: at most
    ``grid_cap`` blocks (``None``: as many as the work needs) of ``block`` threads."""

    grid_cap: int | None
    block: int

    @property
    def id(self) -> str:
        return f"grid{'full' if self.grid_cap is None else self.grid_cap}x{self.block}"


#: The one sweep of launch shapes of every emulated-kernel test (the ``launch_grid`` fixture).
LAUNCH_GRIDS = (
    LaunchGrid(1, 32),  # one warp-size block: every grid-stride loop runs many times
    LaunchGrid(1, 64),
    LaunchGrid(1, 256),  # one large block
    LaunchGrid(3, 32),  # a few blocks
    LaunchGrid(3, 64),
    LaunchGrid(3, 256),
    LaunchGrid(2, 48),  # a partial last warp
    LaunchGrid(2, 100),  # not a power of two: the bounds checks of tree reductions
    LaunchGrid(None, 1),  # uncapped (one thread per work item, as on a GPU), 1-thread blocks
    LaunchGrid(None, 32),
    LaunchGrid(None, 64),
    LaunchGrid(None, 256),  # uncapped with the default block
)

#: Default tolerances of ``kernel_parity`` per float dtype (integers compare exactly).
PARITY_TOL = {
    np.dtype(np.float32): dict(rtol=2e-6, atol=2e-6),
    np.dtype(np.float64): dict(rtol=1e-13, atol=1e-13),
}


@pytest.fixture(scope="session")
def emulator():  # noqa: ANN201 - the gpucnn.testing.emulator module
    """:mod:`gpucnn.testing.emulator`, or a skip saying why the kernel emulator cannot run."""
    emu = pytest.importorskip(
        "gpucnn.testing.emulator", reason="the kernel emulator (gpucnn.testing.emulator) "
        "does not import"
    )
    if not emu.compiler_available():
        pytest.skip(
            "no host C++17 compiler ($CXX, g++, c++ or clang++): the kernel emulator cannot run"
        )
    return emu


@pytest.fixture(params=LAUNCH_GRIDS, ids=lambda g: g.id)
def launch_grid(request: pytest.FixtureRequest) -> LaunchGrid:
    """Each launch shape of :data:`LAUNCH_GRIDS` in turn."""
    return request.param


@pytest.fixture
def emulated(emulator, launch_grid: LaunchGrid):  # noqa: ANN001, ANN201
    """The emulated runtime of ``launch_grid``, active for the whole test."""
    from gpucnn.backend.runtime import use_runtime

    with use_runtime(emulator.emulated_runtime(*launch_grid)) as rt:
        yield rt


@pytest.fixture
def emulate(emulator) -> Callable[..., Any]:  # noqa: ANN001
    """``emulate(grid_cap=None, block=DEFAULT_BLOCK)``: ``use_runtime`` of that emulated launch."""
    from gpucnn.backend.runtime import DEFAULT_BLOCK, use_runtime

    def at(grid_cap: int | None = None, block: int = DEFAULT_BLOCK) -> Any:
        return use_runtime(emulator.emulated_runtime(grid_cap=grid_cap, block=block))

    return at


def _assert_same(got: Any, want: Any, what: str, rtol: float | None, atol: float | None,
                 exact: bool) -> None:  # fmt: skip
    if want is None or got is None:
        assert got is None and want is None, f"{what}: got {type(got)}, want {type(want)}"
        return
    if isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)), f"{what}: got {type(got).__name__}, want a tuple"
        assert len(got) == len(want), f"{what}: got {len(got)} items, want {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, f"{what}[{i}]", rtol, atol, exact)
        return
    g, w = np.asarray(got), np.asarray(want)
    assert g.shape == w.shape and g.dtype == w.dtype, (
        f"{what}: kernel gave {g.dtype}{list(g.shape)}, twin {w.dtype}{list(w.shape)}"
    )
    if exact or w.dtype.kind not in "fc":
        np.testing.assert_array_equal(g, w, err_msg=what)
        return
    tol = dict(PARITY_TOL.get(w.dtype, PARITY_TOL[np.dtype(np.float32)]))
    if rtol is not None:
        tol["rtol"] = rtol
    if atol is not None:
        tol["atol"] = atol
    np.testing.assert_allclose(g, w, err_msg=what, **tol)


@pytest.fixture
def kernel_parity(emulator) -> Callable[..., tuple[Any, Any]]:  # noqa: ANN001
    """``check(family, fn, *args, launch=None, ...)``: NumPy twin vs emulated kernel (see the
    module docstring); returns ``(got, want)`` for further checks."""
    from gpucnn.backend.runtime import KernelRuntime, use_runtime

    def check(
        family: str,
        fn: str | Callable[..., Any],
        *args: Any,
        launch: Any = None,
        rtol: float | None = None,
        atol: float | None = None,
        exact: bool = False,
        copy: bool = True,
        label: str | None = None,
    ) -> tuple[Any, Any]:
        twin = importlib.import_module(f"gpucnn.backend.numpy_ops.{family}")
        cuda = importlib.import_module(f"gpucnn.backend.cuda_ops.{family}")
        if isinstance(launch, KernelRuntime):
            rt = launch
        elif launch is None:
            rt = emulator.emulated_runtime()
        else:
            rt = emulator.emulated_runtime(*launch)
        name = fn if isinstance(fn, str) else getattr(fn, "__name__", "call")
        what = f"{family}.{label or name} (grid_cap={rt.grid_cap}, block={rt.block})"

        def run(mod: Any) -> tuple[Any, tuple]:
            a = tuple(
                np.copy(v, order="K") if copy and isinstance(v, np.ndarray) else v for v in args
            )
            return (getattr(mod, fn)(*a) if isinstance(fn, str) else fn(mod, *a)), a

        want, want_args = run(twin)
        with use_runtime(rt):
            got, got_args = run(cuda)
        _assert_same(got, want, what, rtol, atol, exact)
        if copy:
            for i, (g, w) in enumerate(zip(got_args, want_args)):
                if isinstance(w, np.ndarray):
                    _assert_same(g, w, f"{what}: argument {i} after the call", rtol, atol, exact)
        return got, want

    return check
