"""Timers and peak-memory probes for both frameworks on CPU and CUDA.

CPU: ``time.perf_counter`` around each call; peak memory is the rise of the process's peak
resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) over the warm-up call, or
``tracemalloc`` (NumPy allocations only) where that reset is refused. CUDA: CUDA events around
each call (CuPy events for gpucnn, ``torch.cuda.Event`` for PyTorch); peak memory from CuPy's
memory pool / ``torch.cuda.max_memory_allocated`` over the warm-up call.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

__all__ = ["Timer"]


def _read_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS so the next RSS rise reflects new allocations."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Timer:
    """Median-of-repeats timing after warm-up for ``side`` in ``("gpucnn", "torch")``."""

    def __init__(self, device: str, torch_mod: Any | None = None, cupy_mod: Any | None = None):
        self.device = device
        self.torch = torch_mod
        self.cupy = cupy_mod
        self.cpu_mem_method = "peak RSS rise (VmHWM)" if _reset_hwm() else "tracemalloc"

    # ------------------------------------------------------------------ sync / events
    def _sync(self, side: str) -> None:
        if self.device != "cuda":
            return
        if side == "torch":
            self.torch.cuda.synchronize()
        else:
            self.cupy.cuda.get_current_stream().synchronize()

    def _time_once(self, fn: Callable[[], Any], side: str) -> float:
        if self.device != "cuda":
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        if side == "torch":
            ev0 = self.torch.cuda.Event(enable_timing=True)
            ev1 = self.torch.cuda.Event(enable_timing=True)
            ev0.record()
            fn()
            ev1.record()
            ev1.synchronize()
            return ev0.elapsed_time(ev1) / 1e3
        cp = self.cupy
        ev0, ev1 = cp.cuda.Event(), cp.cuda.Event()
        ev0.record()
        fn()
        ev1.record()
        ev1.synchronize()
        return cp.cuda.get_elapsed_time(ev0, ev1) / 1e3

    # ------------------------------------------------------------------ memory
    def _mem_begin(self, side: str) -> Any:
        gc.collect()
        if self.device == "cuda":
            self._sync(side)
            if side == "torch":
                self.torch.cuda.reset_peak_memory_stats()
                return self.torch.cuda.memory_allocated()
            pool = self.cupy.get_default_memory_pool()
            pool.free_all_blocks()
            return pool.used_bytes()
        _malloc_trim()
        if side == "gpucnn":  # NumPy reports its allocations to tracemalloc
            tracemalloc.start()
        if self.cpu_mem_method.startswith("peak RSS"):
            _reset_hwm()
            return _read_status("VmRSS")
        return 0

    def _mem_end(self, side: str, base: Any) -> dict[str, int | None]:
        if self.device == "cuda":
            self._sync(side)
            if side == "torch":
                return {"peak_mem_bytes": int(self.torch.cuda.max_memory_allocated() - base)}
            pool = self.cupy.get_default_memory_pool()
            return {"peak_mem_bytes": int(pool.total_bytes() - base)}
        traced = None
        if side == "gpucnn":
            traced = int(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        if self.cpu_mem_method.startswith("peak RSS"):
            hwm = _read_status("VmHWM")
            rss = None if hwm is None or base is None else max(0, hwm - base)
            return {"peak_mem_bytes": rss, "numpy_traced_peak_bytes": traced}
        return {"peak_mem_bytes": traced}

    @property
    def mem_method(self) -> str:
        if self.device == "cuda":
            return "CuPy pool bytes (gpucnn) / torch.cuda.max_memory_allocated (PyTorch)"
        return (self.cpu_mem_method + " after malloc_trim, both sides; gpucnn also: peak of "
                "NumPy allocations traced by tracemalloc (numpy_traced_peak_bytes)")

    # ------------------------------------------------------------------ public
    def warm(self, fn: Callable[[], Any], side: str, warmup: int = 1) -> dict[str, Any]:
        """Run ``fn`` ``warmup`` times; return the peak-memory fields of the first call."""
        base = self._mem_begin(side)
        fn()
        self._sync(side)
        peak = self._mem_end(side, base)
        for _ in range(max(0, warmup - 1)):
            fn()
        self._sync(side)
        return peak

    def time_interleaved(
        self, fns: dict[str, Callable[[], Any]], repeats: int
    ) -> dict[str, dict[str, Any]]:
        """Time the (warmed-up) sides in alternation (g, t, g, t, ...), ``repeats`` each.

        Alternation makes both sides see the same background load on a shared machine.
        ``fns`` maps side (``"gpucnn"``/``"torch"``) to its step; returns per-side
        ``{"median_s", "min_s", "times_s", "repeats"}``.
        """
        times: dict[str, list[float]] = {side: [] for side in fns}
        for _ in range(max(1, repeats)):
            for side, fn in fns.items():
                times[side].append(self._time_once(fn, side))
        return {side: {"median_s": statistics.median(ts), "min_s": min(ts), "times_s": ts,
                       "repeats": len(ts)} for side, ts in times.items()}

    def run(
        self, fn: Callable[[], Any], side: str, repeats: int, warmup: int = 1
    ) -> dict[str, Any]:
        """Warm up (measuring peak memory over the first call), then time ``repeats`` calls."""
        peak = self.warm(fn, side, warmup)
        timed = self.time_interleaved({side: fn}, repeats)[side]
        return {**peak, "warmup": max(1, warmup), **timed}
