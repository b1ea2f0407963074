"""Adding your own CUDA kernel to gpucnn, worked end to end, runnable without a GPU.

The recipe, shown on the "swish" activation ``y = x * sigmoid(x)``:

1. Write the kernel source, one ``.cu`` with forward and backward, ``extern "C"`` entry points
   per dtype (``swish_fwd_f32`` / ``_f64``), arguments in the order inputs, outputs, sizes,
   a grid-stride loop (``GRID_STRIDE_LOOP`` from ``common.cuh``), 64-bit element counts.
2. Write its NumPy twin (vectorised, same formulas).
3. Check parity: the SAME ``.cu`` compiled for the host by
   :class:`gpucnn.testing.emulator.EmulatedModule` and launched with several grid and block
   sizes must match the twin in float32 and float64. On a GPU the example also compiles it
   with ``cupy.RawModule`` and compares the device result.
4. Wrap it in an autograd :class:`gpucnn.tensor.Function` (forward and backward use the twin on
   the NumPy backend and the kernel on the CUDA backend), check its gradient against central
   differences, and use it in a model.

    python examples/custom_kernel.py                  # writes swish.cu to ./custom_kernel_out
    python examples/custom_kernel.py --smoke --out /tmp/ck
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import gpucnn
from gpucnn import backend as _backend
from gpucnn.backend.threads import set_num_threads
from gpucnn.cli import add_backend_argument
from gpucnn.layers import Dense, Flatten
from gpucnn.model import Sequential
from gpucnn.module import Module
from gpucnn.tensor import Function, Tensor

SWISH_CU = r"""// swish.cu: swish activation y = x * sigmoid(x), forward and backward.
//
// Thread mapping: 1-D grid-stride loop, one thread per element (any grid size is correct).
// Layout: x, y, g, dx are C-contiguous and treated as flat arrays of n elements (64-bit n).
// NumPy twin: swish_forward / swish_backward in examples/custom_kernel.py.
#include "common.cuh"

__device__ __forceinline__ float sw_exp(float v) { return expf(v); }
__device__ __forceinline__ double sw_exp(double v) { return exp(v); }

// Stable logistic function: never takes exp of a large positive number.
template <typename T>
__device__ __forceinline__ T sw_sigmoid(T v) {
    if (v >= T(0)) return T(1) / (T(1) + sw_exp(-v));
    const T e = sw_exp(v);
    return e / (T(1) + e);
}

// y[i] = x[i] * sigmoid(x[i])
template <typename T>
__device__ void swish_fwd(const T* __restrict__ x, T* __restrict__ y, index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        const T v = x[i];
        y[i] = v * sw_sigmoid(v);
    }
}

// dx[i] = g[i] * (s + x s (1 - s)), s = sigmoid(x[i])
template <typename T>
__device__ void swish_bwd(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ dx,
                          index_t n) {
    GRID_STRIDE_LOOP(i, n) {
        const T v = x[i];
        const T s = sw_sigmoid(v);
        dx[i] = g[i] * (s + v * s * (T(1) - s));
    }
}

extern "C" __global__ void swish_fwd_f32(const float* x, float* y, long long n) {
    swish_fwd<float>(x, y, n);
}
extern "C" __global__ void swish_fwd_f64(const double* x, double* y, long long n) {
    swish_fwd<double>(x, y, n);
}
extern "C" __global__ void swish_bwd_f32(const float* x, const float* g, float* dx, long long n) {
    swish_bwd<float>(x, g, dx, n);
}
extern "C" __global__ void swish_bwd_f64(const double* x, const double* g, double* dx,
                                         long long n) {
    swish_bwd<double>(x, g, dx, n);
}
"""


# ----------------------------------------------------------------------------- NumPy twin


def _sigmoid(xp: Any, x: Any) -> Any:
    e = xp.exp(-xp.abs(x))  # stable on both sides, as the kernel
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype)


def swish_forward(x: np.ndarray) -> np.ndarray:
    """NumPy twin of ``swish_fwd_*``: ``x * sigmoid(x)``, same shape and dtype."""
    return (x * _sigmoid(np, x)).astype(x.dtype)


def swish_backward(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """NumPy twin of ``swish_bwd_*``: ``g * (s + x s (1 - s))``."""
    s = _sigmoid(np, x)
    return (g * (s + x * s * (1 - s))).astype(x.dtype)


# ----------------------------------------------------------------------------- launching


def _suffix(dtype: Any) -> str:
    dt = np.dtype(dtype)
    if dt == np.float32:
        return "f32"
    if dt == np.float64:
        return "f64"
    raise TypeError(f"swish: float32 or float64 expected, got {dt}")


def launch(module: Any, name: str, arrays: list, n: int, grid: int, block: int) -> None:
    """Launch ``name`` from ``module`` (a cupy.RawModule or an EmulatedModule) with the
    argument convention of the kernels: arrays, then ``n`` as a 64-bit integer."""
    module.get_function(name)((grid,), (block,), (*arrays, np.int64(n)))


_cuda_module: Any = None
_source_path: Path | None = None


def cuda_module() -> Any:
    """``cupy.RawModule`` of the written ``swish.cu`` (compiled once per process)."""
    global _cuda_module
    if _cuda_module is None:
        from gpucnn.backend.device import cupy_module
        from gpucnn.backend.kernels import kernel_include_dir

        cupy = cupy_module()  # CuPy (or the simulated device under GPUCNN_SIMULATE_CUDA=1)

        inc = kernel_include_dir("common.cuh")
        assert _source_path is not None, "call write_source() first"
        _cuda_module = cupy.RawModule(code=_source_path.read_text(),
                                      options=("--std=c++14", f"-I{inc}"))
    return _cuda_module


class SwishFunction(Function):
    """Autograd op: the NumPy twin on the NumPy backend, the kernel on the CUDA backend."""

    @staticmethod
    def forward(ctx: Any, x: Any) -> Any:
        ctx.save_for_backward(x)
        if _backend.backend_of(x).name == "numpy":
            return swish_forward(x)
        xc = x if x.flags.c_contiguous else x.copy()
        y = _backend.backend_of(x).xp.empty_like(xc)
        n = xc.size
        launch(cuda_module(), f"swish_fwd_{_suffix(x.dtype)}", [xc, y], n,
               max(1, min((n + 255) // 256, 4096)), 256)
        return y

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:
        (x,) = ctx.saved_tensors
        if _backend.backend_of(x).name == "numpy":
            return swish_backward(x, g)
        xp = _backend.backend_of(x).xp
        xc, gc = xp.ascontiguousarray(x), xp.ascontiguousarray(g)
        dx = xp.empty_like(xc)
        n = xc.size
        launch(cuda_module(), f"swish_bwd_{_suffix(x.dtype)}", [xc, gc, dx], n,
               max(1, min((n + 255) // 256, 4096)), 256)
        return dx


def swish(x: Tensor) -> Tensor:
    """``x * sigmoid(x)`` for a float tensor of any shape."""
    if not isinstance(x, Tensor):
        raise TypeError(f"swish: expected a Tensor, got {type(x).__name__}")
    _suffix(x.dtype)
    return SwishFunction.apply(x)


class Swish(Module):
    """Layer form of :func:`swish` (parameter-free)."""

    def forward(self, x: Tensor) -> Tensor:
        return swish(x)


# ----------------------------------------------------------------------------- checks


def write_source(folder: Path) -> Path:
    """Write ``swish.cu`` into ``folder`` and return its path."""
    global _source_path, _cuda_module
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "swish.cu"
    path.write_text(SWISH_CU)
    _source_path, _cuda_module = path, None
    return path


def emulator_parity(path: Path, sizes: tuple = (1, 37, 1000)) -> float:
    """Run the kernels in the host emulator over grids 1, 3, ceil(n/block) and blocks 32,
    256, float32 and float64; returns the largest relative error against the NumPy twin
    (raises AssertionError past 1e-5 / 1e-12)."""
    from gpucnn.testing.emulator import EmulatedModule

    mod = EmulatedModule(path)
    worst = 0.0
    rng = np.random.default_rng(0)
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        sfx = _suffix(dtype)
        for n in sizes:
            x = (rng.standard_normal(n) * 6).astype(dtype)
            g = rng.standard_normal(n).astype(dtype)
            want_y, want_dx = swish_forward(x), swish_backward(x, g)
            for block in (32, 256):
                for grid in (1, 3, max(1, -(-n // block))):
                    y = np.full(n, np.nan, dtype)
                    dx = np.full(n, np.nan, dtype)
                    launch(mod, f"swish_fwd_{sfx}", [x, y], n, grid, block)
                    launch(mod, f"swish_bwd_{sfx}", [x, g, dx], n, grid, block)
                    for got, want, what in ((y, want_y, "forward"), (dx, want_dx, "backward")):
                        err = float(np.max(np.abs(got - want) / (1 + np.abs(want))))
                        if not err <= tol:
                            raise AssertionError(
                                f"swish {what} {sfx}: emulated kernel differs from the NumPy "
                                f"twin by {err:.3g} (n={n}, grid={grid}, block={block})")
                        worst = max(worst, err)
    return worst


def gpu_parity() -> float | None:
    """The kernel on the real GPU against the twin (``None`` when CUDA is not usable)."""
    if not _backend.cuda_available():
        return None
    from gpucnn.backend.device import cupy_module

    cupy = cupy_module()

    worst = 0.0
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal(10_001) * 6).astype(dtype)
        g = rng.standard_normal(10_001).astype(dtype)
        xd, gd = cupy.asarray(x), cupy.asarray(g)
        y, dx = cupy.empty_like(xd), cupy.empty_like(xd)
        sfx = _suffix(dtype)
        launch(cuda_module(), f"swish_fwd_{sfx}", [xd, y], x.size, 7, 128)
        launch(cuda_module(), f"swish_bwd_{sfx}", [xd, gd, dx], x.size, 7, 128)
        worst = max(worst, float(np.max(np.abs(cupy.asnumpy(y) - swish_forward(x)))),
                    float(np.max(np.abs(cupy.asnumpy(dx) - swish_backward(x, g)))))
    return worst


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Add a custom CUDA kernel (swish) to gpucnn.")
    add_backend_argument(p)  # a name or alias; default $GPUCNN_BACKEND, else auto
    p.add_argument("--out", default="custom_kernel_out", help="where swish.cu is written")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="small checks and one short epoch")
    p.add_argument("--threads", type=int, default=1, help="NumPy BLAS threads (0: unchanged)")
    return p


def main(argv: list[str] | None = None) -> dict:
    """Write the kernel, check it, train a small model with it; returns a summary dict."""
    args = build_parser().parse_args(argv)
    gpucnn.backend.use(args.backend)
    if args.threads:
        set_num_threads(args.threads)
    gpucnn.manual_seed(0)
    out = Path(args.out)

    path = write_source(out)
    print(f"1. wrote {path}")
    try:
        from gpucnn.testing.emulator import compiler_available
        has_cxx = compiler_available()
    except ImportError:
        has_cxx = False
    if has_cxx:
        t = time.perf_counter()
        err = emulator_parity(path, (1, 37, 300) if args.smoke else (1, 37, 1000, 4099))
        print(f"2. emulator parity (grids 1/3/full, blocks 32/256, f32+f64): max rel. error "
              f"{err:.2e} ({time.perf_counter() - t:.1f} s)")
    else:
        err = None
        print("2. emulator parity skipped: no host C++ compiler (g++/clang++) found")
    gerr = gpu_parity()
    print("3. GPU parity: " + ("skipped (no usable CUDA device: "
                               f"{_backend.cuda_unavailable_reason()})" if gerr is None
                               else f"max abs. error {gerr:.2e}"))

    from gpucnn.testing.gradcheck import gradient_check

    gradient_check(swish, [np.random.default_rng(2).standard_normal((3, 5)) * 3])
    print("4. gradient check of SwishFunction (float64 central differences): ok")

    from gpucnn.datasets import mnist_sample

    x, y = mnist_sample()
    n = 256 if args.smoke else 2000
    x, y = x[:: len(x) // n][:n], y[:: len(y) // n][:n]
    model = Sequential([Flatten(input_shape=(1, 28, 28)), Dense(64), Swish(), Dense(10)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], lr=3e-3)
    losses: list[float] = []
    from gpucnn.callbacks import LambdaCallback

    rec = LambdaCallback(on_train_batch_end=lambda b, logs: losses.append(logs["batch_loss"]))
    epochs = 1 if args.smoke else args.epochs
    hist = model.fit(x, y, batch_size=32, epochs=epochs, verbose=2, callbacks=[rec], seed=0)
    print(f"5. trained Flatten-Dense(64)-Swish-Dense(10) on {n} MNIST digits with the custom "
          f"op on {gpucnn.backend.current()}: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return {"source": path, "emulator_error": err, "gpu_error": gerr,
            "history": {k: list(v) for k, v in hist.history.items()}, "batch_losses": losses,
            "files": [path]}


if __name__ == "__main__":
    main()
    sys.exit(0)
