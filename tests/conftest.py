"""Shared fixtures: one parametrised ``backend`` fixture over every usable backend.

``python -m pytest --simulate-cuda`` (or ``GPUCNN_SIMULATE_CUDA=1``) runs the suite with the
cuda backend on the simulated device of :mod:`gpucnn.testing.simcuda`: ``auto`` resolves to
it, ``gpu``-marked tests run on it, and backend-parametrised tests run their ``cuda`` case
(their ``numpy`` case ran in the plain pass). Tests about NumPy internals carry the
``numpy_internal`` marker and run on the NumPy backend in either pass.
"""

from __future__ import annotations

import os

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
