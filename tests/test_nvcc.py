"""Every ``cuda/*.cu`` compiles to PTX with nvcc for sm_80 and sm_90, warnings as errors.

Same language level as the NVRTC build in gpucnn/backend/kernels.py (C++14). The host
emulator's compiler accepts code that NVRTC/nvcc would not; this catches it. Skipped
(with the reason) where nvcc is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gpucnn.backend.kernels import all_kernel_sources

ARCHS = ("sm_80", "sm_90")
SOURCES = all_kernel_sources()


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for d in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if d and (Path(d) / "bin" / "nvcc").is_file():
            return str(Path(d) / "bin" / "nvcc")
    return None


def test_kernel_sources_found():
    assert SOURCES, "no cuda/*.cu kernel sources found"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_nvcc_ptx(source: Path, arch: str, tmp_path: Path) -> None:
    nvcc = _nvcc()
    if nvcc is None:
        reason = "nvcc not found (PATH, $CUDA_HOME, /usr/local/cuda): PTX compile check skipped"
        print(reason)
        pytest.skip(reason)
    out = tmp_path / f"{source.stem}.{arch}.ptx"
    cmd = [
        nvcc, "-ptx", f"-arch={arch}", "-std=c++14", "-Werror", "all-warnings",
        f"-I{source.parent}", "-o", str(out), str(source),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"nvcc rejected {source.name} for {arch}:\n{' '.join(cmd)}\n{proc.stderr}{proc.stdout}"
    )
    assert out.stat().st_size > 0
