"""A non-editable ``pip install .`` into a fresh venv finds every kernel source from elsewhere."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_every_kernel_source(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUCNN_", "PYTHON"))}
    # A plain, non-editable install with build isolation, as a user would run it.
    r = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(ROOT)],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    expected = sorted(p.name for p in (ROOT / "cuda").glob("*.cu"))
    code = (
        "import gpucnn, pathlib\n"
        "from gpucnn.backend.kernels import all_kernel_sources, kernel_source_path\n"
        "srcs = all_kernel_sources()\n"
        "assert 'site-packages' in str(srcs[0]), srcs[0]\n"
        "for s in srcs: assert kernel_source_path(s.stem) == s\n"
        "assert (srcs[0].parent / 'common.cuh').is_file()\n"
        "print(' '.join(sorted(s.name for s in srcs)))\n"
    )
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, env=env,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == expected


def test_missing_kernel_names_searched_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpucnn.backend.kernels import KernelSourceNotFound, kernel_source_path

    monkeypatch.setenv("GPUCNN_KERNEL_DIR", "/nonexistent/kernels")
    with pytest.raises(KernelSourceNotFound) as exc:
        kernel_source_path("no_such_family")
    msg = str(exc.value)
    assert "no_such_family.cu" in msg and "/nonexistent/kernels" in msg and "_cuda" in msg


def test_gpu_extras_bring_the_cuda_toolkit_pieces() -> None:
    """On a driver-only host CuPy needs the CUDA headers and NVRTC: its [ctk] extra."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parent.parent
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(r.startswith("cupy-cuda12x[ctk]") for r in extras["cuda12"]), extras["cuda12"]
    assert any(r.startswith("cupy-cuda13x[ctk]") for r in extras["cuda13"]), extras["cuda13"]
