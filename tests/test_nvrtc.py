"""Every ``cuda/*.cu`` compiles with the real NVRTC (CuPy's compiler) for sm_80 and sm_90.

``nvcc -ptx`` (tests/test_nvcc.py) uses the host's libc headers and GCC builtins; NVRTC has
neither, so a file nvcc accepts can still fail in ``cupy.RawModule`` on a GPU. This test hands
NVRTC exactly what the loader hands ``RawModule`` (:func:`gpucnn.backend.kernels.module_source`
and :func:`~gpucnn.backend.kernels.module_options`), plus the options CuPy itself adds (its
include paths, ``-ftz=true``, ``-arch=sm_XX``, ``--device-as-default-execution-space``), and
fails on any error or warning with the file, line and NVRTC log.

NVRTC needs no GPU: ``cupy-cuda13x`` imports without a driver and the ``nvidia-cuda-nvrtc``
wheel ships ``libnvrtc.so.13``. Skipped where they are absent, except when
``GPUCNN_REQUIRE_NVRTC=1`` (set by ``.ci/run``), where a missing NVRTC fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpucnn.backend.kernels import all_kernel_sources, module_options, module_source
from gpucnn.testing.nvrtc import NvrtcUnavailable, compile_with_nvrtc, nvrtc_version

ARCHS = ("sm_80", "sm_90")
SOURCES = all_kernel_sources()


def _require() -> None:
    try:
        nvrtc_version()
    except NvrtcUnavailable as exc:
        if os.environ.get("GPUCNN_REQUIRE_NVRTC") == "1":
            pytest.fail(f"GPUCNN_REQUIRE_NVRTC=1 but NVRTC is unusable: {exc}")
        pytest.skip(str(exc))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_nvrtc_compiles_cleanly(source: Path, arch: str) -> None:
    _require()
    result = compile_with_nvrtc(module_source(source), source.name, module_options(source), arch)
    assert result.ok and not result.log.strip(), (
        f"NVRTC {'.'.join(map(str, nvrtc_version()))} "
        f"{'rejected' if not result.ok else 'warned about'} {source} for {arch}\n"
        f"options: {' '.join(result.options)}\n{result.log}"
    )
    assert result.binary_size > 0


def test_nvrtc_reports_file_line_and_log() -> None:
    """A source NVRTC rejects comes back with its name, the line and the log (not a bare code)."""
    _require()
    bad = '#include <math.h>\nextern "C" __global__ void k(float* y) { y[0] = __builtin_inff(); }\n'
    result = compile_with_nvrtc(bad, "planted.cu", ("--std=c++14",), "sm_90")
    assert not result.ok
    assert "planted.cu(1)" in result.log and "math.h" in result.log


def test_nvrtc_warning_is_reported() -> None:
    _require()
    src = 'extern "C" __global__ void k(float* y) { int unused_var; y[0] = 1.0f; }\n'
    result = compile_with_nvrtc(src, "warn.cu", ("--std=c++14",), "sm_80")
    assert result.ok and "unused_var" in result.log


def test_loader_source_carries_header_digest(tmp_path: Path) -> None:
    """CuPy keys its disk cache on the source text: a header edit must change that text."""
    (tmp_path / "common.cuh").write_text("#define A 1\n")
    cu = tmp_path / "fam.cu"
    cu.write_text('#include "common.cuh"\nextern "C" __global__ void k() {}\n')
    before = module_source(cu)
    (tmp_path / "common.cuh").write_text("#define A 2\n")
    after = module_source(cu)
    assert before != after and before.startswith(cu.read_text())
    plain = tmp_path / "plain.cu"
    plain.write_text('extern "C" __global__ void k() {}\n')
    assert module_source(plain) == plain.read_text()
