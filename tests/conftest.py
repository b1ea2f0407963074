"""Shared fixtures: one parametrised ``backend`` fixture over every usable backend."""

from __future__ import annotations

import os

import numpy as np
import pytest

import gpucnn
from gpucnn import backend as B

os.environ.setdefault("GPUCNN_BACKEND", "auto")
# GPU parity tests compare CUDA float32 with NumPy float32 at tight tolerances: plain FP32
# GEMMs, no TF32 (tests/test_backend.py checks the TF32 switch itself).
os.environ.setdefault("GPUCNN_TF32", "0")


def _usable_backends() -> list:
    names = ["numpy"]
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


@pytest.fixture(params=_usable_backends())
def backend(request: pytest.FixtureRequest) -> B.Backend:
    """Each usable backend in turn (cuda is skipped, with the reason, where there is no GPU)."""
    prev = B._active
    be = B.use(request.param)
    yield be
    if prev is not None:
        B.use(prev)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed() -> None:
    gpucnn.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if B.cuda_available():
        return
    skip = pytest.mark.skip(reason=f"needs a GPU: {B.cuda_unavailable_reason()}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
