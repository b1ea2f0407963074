"""The CuPy kernel loader: one RawModule per (file, defines, device), NVRTC errors with context."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from gpucnn.backend import kernels


class _FakeCompileError(Exception):
    def get_message(self) -> str:
        return "im2col.cu(12): error: identifier 'oops' is undefined"


def _fake_cupy(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> list:
    built: list = []
    device = {"id": 0}

    class RawModule:
        def __init__(self, code: str, options: tuple) -> None:
            self.code, self.options = code, options
            built.append(self)

        def compile(self) -> None:
            if fail:
                raise _FakeCompileError("compile failed")

        def get_function(self, name: str) -> tuple:
            return (self, name)

    monkeypatch.delenv("GPUCNN_SIMULATE_CUDA", raising=False)  # the real loader path
    cupy = types.ModuleType("cupy")
    cupy.RawModule = RawModule
    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDevice=lambda: device["id"])
    )
    cupy._device = device
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(kernels, "_modules", {})
    return built


def test_module_cached_per_file_defines_and_device(monkeypatch: pytest.MonkeyPatch) -> None:
    built = _fake_cupy(monkeypatch)
    k1 = kernels.get_kernel("im2col", "im2col_f32")
    k2 = kernels.get_kernel("im2col", "col2im_f32")
    assert len(built) == 1 and k1[0] is k2[0]
    opts = built[0].options
    assert f"-I{kernels.kernel_source_path('im2col').parent}" in opts  # finds common.cuh
    assert "#include" in built[0].code  # the real source text was handed to NVRTC
    kernels.get_kernel("im2col", "im2col_f32", defines={"BLOCK": 128})
    assert len(built) == 2 and "-DBLOCK=128" in built[1].options
    kernels.get_kernel("im2col", "im2col_f32", defines={"BLOCK": 128})
    assert len(built) == 2
    sys.modules["cupy"]._device["id"] = 1  # another device: its own module
    kernels.get_kernel("im2col", "im2col_f32")
    assert len(built) == 3


def test_compile_error_names_file_and_log(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cupy(monkeypatch, fail=True)
    with pytest.raises(kernels.KernelCompileError) as exc:
        kernels.get_kernel("im2col", "im2col_f32")
    msg = str(exc.value)
    assert "im2col.cu" in msg and "identifier 'oops' is undefined" in msg
    assert kernels._modules == {}  # a failed compile is not cached


def test_define_normalisation() -> None:
    assert kernels.normalize_defines({"B": 2, "A": "x"}) == (("A", "x"), ("B", "2"))
    assert kernels.normalize_defines(None) == ()
    assert kernels.define_flags((("A", "1"),)) == ["-DA=1"]


def test_env_dir_searched_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mine.cu").write_text("// a user kernel\n")
    monkeypatch.setenv("GPUCNN_KERNEL_DIR", str(tmp_path))
    assert kernels.kernel_dirs()[0] == tmp_path
    assert kernels.kernel_source_path("mine") == tmp_path / "mine.cu"
