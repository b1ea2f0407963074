"""The kernel runtime: where the CUDA-backend launchers get their array module and kernels.

Every launcher in :mod:`gpucnn.backend.cuda_ops` asks :func:`current_runtime` for ``xp`` and
for kernels, and launches with :meth:`KernelRuntime.launch`. On a GPU that is CuPy plus
``RawModule`` kernels; in tests :func:`use_runtime` swaps in the host emulator (``xp`` =
NumPy, kernels compiled by the host C++ compiler), so the very same launcher code, grid,
block and arguments run on the CPU. ``grid_cap`` and ``block`` let tests sweep grid sizes:
kernels use grid-stride loops, so every grid size must give the same result.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

DEFAULT_BLOCK = 256
MAX_GRID = 65535 * 8  # enough blocks to saturate any current GPU; loops cover the rest

KernelGetter = Callable[[str, str, Any], Any]


class KernelRuntime:
    """An array module plus a kernel source: ``kernel(family, name, defines)(grid, block, args)``.

    Args:
        xp: ``cupy`` on the GPU, ``numpy`` under the host emulator.
        get_kernel: ``(family, name, defines) -> callable(grid, block, args, shared_mem=0)``.
        grid_cap: upper bound on the number of blocks of 1-D launches (tests sweep it).
        block: threads per block of 1-D launches.
        name: a label for messages.
    """

    def __init__(
        self,
        xp: Any,
        get_kernel: KernelGetter,
        grid_cap: int | None = None,
        block: int = DEFAULT_BLOCK,
        name: str = "cuda",
    ) -> None:
        self.xp = xp
        self._get_kernel = get_kernel
        self.grid_cap = grid_cap
        self.block = block
        self.name = name

    def kernel(self, family: str, name: str, defines: Any = None) -> Any:
        """The compiled kernel ``name`` of ``cuda/<family>.cu``."""
        return self._get_kernel(family, name, defines)

    def grid_for(self, n: int, block: int | None = None) -> int:
        """Blocks for ``n`` work items: one thread per item, capped by ``grid_cap``/``MAX_GRID``."""
        block = block or self.block
        grid = max(1, -(-int(n) // block))
        cap = MAX_GRID if self.grid_cap is None else self.grid_cap
        return max(1, min(grid, cap))

    def launch(
        self,
        family: str,
        name: str,
        n: int,
        args: tuple,
        defines: Any = None,
        block: int | None = None,
        shared_mem: int = 0,
    ) -> None:
        """1-D launch of ``name`` over ``n`` work items (grid-stride kernels)."""
        if n <= 0:
            return
        block = block or self.block
        k = self.kernel(family, name, defines)
        k((self.grid_for(n, block),), (block,), args, shared_mem=shared_mem)


def _cupy_runtime() -> KernelRuntime:
    from gpucnn.backend.device import cupy_module, simulated
    from gpucnn.backend.kernels import get_kernel

    name = "cuda (simulated device)" if simulated() else "cuda"
    return KernelRuntime(cupy_module(), get_kernel, name=name)


_default: KernelRuntime | None = None
_override: contextvars.ContextVar[KernelRuntime | None] = contextvars.ContextVar(
    "gpucnn_kernel_runtime", default=None
)


def current_runtime() -> KernelRuntime:
    """The runtime launchers use now: a test override, else the CuPy runtime."""
    rt = _override.get()
    if rt is not None:
        return rt
    global _default
    if _default is None:
        _default = _cupy_runtime()
    return _default


@contextlib.contextmanager
def use_runtime(rt: KernelRuntime) -> Iterator[KernelRuntime]:
    """Run launchers against ``rt`` (e.g. the host emulator) inside the ``with`` block."""
    token = _override.set(rt)
    try:
        yield rt
    finally:
        _override.reset(token)


_own: contextvars.ContextVar[bool] = contextvars.ContextVar("gpucnn_own_kernels", default=False)


@contextlib.contextmanager
def own_kernels(enabled: bool = True) -> Iterator[None]:
    """Inside the ``with`` block, CUDA ops run only our kernels: convolution takes the
    implicit-GEMM algorithm (``cuda/conv_igemm.cu``) and dense products our GEMM
    (``cuda/gemm.cu``) instead of cuBLAS. A captured CUDA graph needs this (CuPy refuses cuBLAS
    during stream capture, cupy/cupy#6290); eager code under it runs the very same kernels as a
    graph replay, so the two agree bit for bit. No effect on the NumPy backend."""
    token = _own.set(bool(enabled))
    try:
        yield
    finally:
        _own.reset(token)


_hyper_slots: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "gpucnn_hyper_slots", default=None
)


@contextlib.contextmanager
def use_hyper_slots(slots: Any) -> Iterator[Any]:
    """Hand the optimizer launchers of :mod:`gpucnn.backend.cuda_ops.optim` a store of their
    per-step scalars (learning rate, bias corrections) inside the ``with`` block: the CUDA
    graph machinery (:mod:`gpucnn.cuda_graph`) counts, captures and refills them. ``slots``
    has ``take(values, dtype) -> device array | None`` and ``launch`` (bool: whether the
    update kernel is to be launched)."""
    token = _hyper_slots.set(slots)
    try:
        yield slots
    finally:
        _hyper_slots.reset(token)


def current_hyper_slots() -> Any:
    """The store :func:`use_hyper_slots` set here, or ``None``."""
    return _hyper_slots.get()


def own_kernels_active() -> bool:
    """Whether :func:`own_kernels` is in force here."""
    return _own.get()


def dtype_suffix(dtype: Any, op: str = "this op") -> str:
    """Kernel-name suffix for a floating dtype: ``f32`` or ``f64``.

    Raises:
        TypeError: any other dtype (float16 included: no kernel of ours takes it yet), naming
            ``op`` and the dtype given.
    """
    import numpy as np

    dt = np.dtype(dtype)
    if dt == np.float32:
        return "f32"
    if dt == np.float64:
        return "f64"
    raise TypeError(
        f"{op}: the CUDA backend has no kernel for dtype {dt}; expected float32 or float64 "
        f"(cast with .astype('float32'))"
    )
