"""``cupy.cuda`` of the simulated device: devices, streams, events, graphs, runtime, kernels.

Work runs synchronously on the host, so streams and events only order bookkeeping; every
host wait (``synchronize``) is counted, and refused during stream capture, as CUDA does.
The current stream and device are per thread, as in CuPy; each stream has its own arena in
the memory pool and its own counters (:mod:`._state`).
``RawModule``/``RawKernel`` compile the source with the host emulator
(:mod:`gpucnn.testing.emulator`), and first with the real NVRTC when
``GPUCNN_SIMULATE_NVRTC=1``; launches check their arguments as the emulator does (device
arrays, NumPy scalars of the C width) and, during capture, are recorded for replay.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from gpucnn.testing.simcuda import _state as S
from gpucnn.testing.simcuda._array import ndarray

DEVICE_NAME = "Simulated CUDA device (gpucnn host emulator)"
COMPUTE_CAPABILITY = "90"
TOTAL_MEMORY = 80 * 1024**3

_tls = S.TLS  # per thread: the current stream (and the stack of ``with stream:``), device


def is_available() -> bool:
    """True: the simulated device is always there."""
    return True


# --------------------------------------------------------------------------- devices


class Device:
    """The one simulated device (id 0)."""

    def __init__(self, device: int | None = None) -> None:
        dev = 0 if device is None else int(device)
        if dev != 0:
            raise S.SimulatedDeviceError(f"the simulated device has only device 0, not {dev}")
        self.id = dev

    compute_capability = property(lambda self: COMPUTE_CAPABILITY)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("simcuda.Device", self.id))

    @property
    def mem_info(self) -> tuple[int, int]:
        """(free, total) bytes."""
        return TOTAL_MEMORY - S.POOL.total_bytes(), TOTAL_MEMORY

    def use(self) -> None:
        """Make this device current in this thread (there is only one)."""
        _tls.device = self.id

    def synchronize(self) -> None:
        """Wait for all work on the device (counted; refused while any stream captures)."""
        S.host_sync("Device.synchronize()", device_wide=True)

    def __enter__(self) -> Device:
        if not hasattr(_tls, "devices"):
            _tls.devices = []
        _tls.devices.append(getattr(_tls, "device", 0))
        _tls.device = self.id
        return self

    def __exit__(self, *exc: Any) -> None:
        _tls.device = _tls.devices.pop()

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id} (simulated)>"


class _Runtime:
    """``cupy.cuda.runtime`` functions gpucnn calls."""

    @staticmethod
    def getDeviceCount() -> int:  # noqa: N802 - CuPy's name
        return 1

    @staticmethod
    def getDevice() -> int:  # noqa: N802
        return getattr(_tls, "device", 0)

    @staticmethod
    def setDevice(device: int) -> None:  # noqa: N802
        Device(device).use()

    @staticmethod
    def deviceSynchronize() -> None:  # noqa: N802
        S.host_sync("cudaDeviceSynchronize", device_wide=True)

    @staticmethod
    def getDeviceProperties(device: int) -> dict:  # noqa: N802
        Device(device)
        return {
            "name": DEVICE_NAME.encode(),
            "totalGlobalMem": TOTAL_MEMORY,
            "major": int(COMPUTE_CAPABILITY[0]),
            "minor": int(COMPUTE_CAPABILITY[1]),
            "multiProcessorCount": 1,
            "sharedMemPerBlock": 48 * 1024,
            "maxThreadsPerBlock": 1024,
        }

    @staticmethod
    def driverGetVersion() -> int:  # noqa: N802
        return 13000

    @staticmethod
    def runtimeGetVersion() -> int:  # noqa: N802
        return 13000

    @staticmethod
    def memGetInfo() -> tuple[int, int]:  # noqa: N802
        return Device().mem_info

    is_hip = False


runtime = _Runtime()


# --------------------------------------------------------------------------- streams / events


class Event:
    """A CUDA event: recorded on a stream; ``synchronize`` is a counted host wait."""

    def __init__(self, block: bool = False, disable_timing: bool = False,
                 interprocess: bool = False) -> None:
        self.recorded = False
        self.time = 0.0
        self.stream: Any = None

    def record(self, stream: Any = None) -> None:
        """Record on ``stream`` (the current one by default); notes the host time."""
        self.recorded = True
        self.stream = stream if stream is not None else get_current_stream()
        self.time = time.perf_counter()

    def synchronize(self) -> None:
        """Wait on the host until the event completes (counted)."""
        S.host_sync("Event.synchronize()", self.stream)

    done = property(lambda self: True)


class Graph:
    """A captured CUDA graph: ``launch`` replays the recorded kernels and copies in order."""

    def __init__(self, nodes: list) -> None:
        self.nodes = list(nodes)

    def launch(self, stream: Any = None) -> None:
        """Replay every node (counted as one graph launch, not as separate kernels)."""
        S.count("launches", name="<graph>", stream=stream)
        for _label, fn in self.nodes:
            fn()

    def upload(self, stream: Any = None) -> None:
        """No-op (the graph is already "on the device")."""

    def __len__(self) -> int:
        return len(self.nodes)


class Stream:
    """A CUDA stream; ``with stream:`` makes it current. Capture records work into a graph."""

    null: Stream

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False,
                 priority: int | None = None) -> None:
        self.is_null = bool(null)
        self.non_blocking = non_blocking
        self.ptr = 0 if null else id(self)
        self._key = 0 if null else S.new_stream_key()  # its pool arena and counters

    def synchronize(self) -> None:
        """Wait on the host for every queued operation (counted)."""
        S.host_sync("Stream.synchronize()", self)

    def record(self, event: Event | None = None) -> Event:
        """Record ``event`` (a new one by default) on this stream."""
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        """Make later work on this stream wait for ``event`` (no host wait)."""

    done = property(lambda self: True)

    def use(self) -> Stream:
        """Make this stream the current one of this thread."""
        _tls.stream = None if self.is_null else self
        return self

    def __enter__(self) -> Stream:
        if not hasattr(_tls, "stack"):
            _tls.stack = []
        _tls.stack.append(getattr(_tls, "stream", None))  # per thread, as CuPy's
        _tls.stream = None if self.is_null else self
        return self

    def __exit__(self, *exc: Any) -> None:
        _tls.stream = _tls.stack.pop()

    def begin_capture(self, mode: Any = None) -> None:
        """Start capturing this stream's work into a graph (nothing runs until replay).

        The capture belongs to this stream and the calling thread: that thread's work and
        any work issued on this stream is recorded (or refused); other threads' work on other
        streams runs as usual. One capture per stream and per thread at a time."""
        if self.is_null:
            raise S.StreamCaptureError("the legacy default stream cannot be captured")
        me = threading.current_thread()
        with S.LOCK:
            if self._key in S.CAPTURES:
                raise S.StreamCaptureError("a stream capture is already in progress on this "
                                           "stream")
            if any(c.thread is me for c in S.CAPTURES.values()):
                raise S.StreamCaptureError("a stream capture is already in progress in this "
                                           "thread")
            S.CAPTURES[self._key] = S.CaptureState(self, me)

    def end_capture(self) -> Graph:
        """Stop capturing; returns the :class:`Graph` of what was recorded."""
        with S.LOCK:
            cap = S.CAPTURES.get(self._key)
            if cap is None:
                raise S.StreamCaptureError("end_capture() on a stream that is not capturing")
            if cap.thread is not threading.current_thread():
                raise S.StreamCaptureError(
                    "end_capture() from another thread than the one that began the capture "
                    "(cudaErrorStreamCaptureWrongThread)")
            del S.CAPTURES[self._key]
        return Graph(cap.nodes)

    def is_capturing(self) -> bool:
        """Whether this stream is being captured (by any thread)."""
        return self._key in S.CAPTURES

    def __repr__(self) -> str:
        return f"<Stream {self.ptr} (simulated)>"


Stream.null = Stream(null=True)


def get_current_stream(device_id: int | None = None) -> Stream:
    """This thread's current stream (the null stream unless one is in use)."""
    s = S.current_stream()
    return s if s is not None else Stream.null


def get_elapsed_time(start_event: Event, end_event: Event) -> float:
    """Milliseconds between two recorded events: the host time of the simulated work between
    them (work runs synchronously here), nothing like a GPU's time."""
    return (end_event.time - start_event.time) * 1e3


# --------------------------------------------------------------------------- memory


MemoryPool = S.MemoryPool
PinnedMemoryPool = S.PinnedMemoryPool


# --------------------------------------------------------------------------- compiler / kernels


class CompileException(Exception):
    """NVRTC (or, here, the host emulator's compiler) rejected a source."""

    def __init__(self, msg: str, source: str = "", name: str = "", options: Any = (),
                 backend: str = "nvrtc") -> None:
        super().__init__(msg)
        self._msg, self.source, self.name, self.options = msg, source, name, options

    def get_message(self) -> str:
        """The compiler log."""
        return self._msg


compiler = SimpleNamespace(CompileException=CompileException)
graph = SimpleNamespace(Graph=Graph)

_DEFINE_RE = re.compile(r"^-D([A-Za-z_]\w*)(?:=(.*))?$")


def _source_dir() -> Path:
    d = Path(tempfile.gettempdir()) / "gpucnn-simcuda"
    d.mkdir(parents=True, exist_ok=True)
    return d


class RawModule:
    """``cupy.RawModule(code=..., options=...)``: compiled by the host emulator (and NVRTC)."""

    def __init__(self, code: str | None = None, *, path: str | None = None,
                 options: tuple = (), backend: str = "nvrtc", translate_cucomplex: bool = False,
                 enable_cooperative_groups: bool = False, name_expressions: Any = None,
                 jitify: bool = False) -> None:
        if (code is None) == (path is None):
            raise TypeError("RawModule: give exactly one of code= and path=")
        if name_expressions or jitify:
            raise S.SimulatedDeviceError("name_expressions/jitify are not simulated")
        self.code = code if code is not None else Path(path).read_text()  # type: ignore[arg-type]
        self.options = tuple(options)
        self._module: Any = None

    def compile(self, log_stream: Any = None) -> None:
        """Compile now (NVRTC first when ``GPUCNN_SIMULATE_NVRTC=1``, then the host compiler)."""
        if self._module is not None:
            return
        from gpucnn.testing.emulator import EmulatedModule, EmulatorCompileError

        includes = [o[2:] for o in self.options if o.startswith("-I")]
        defines = []
        for o in self.options:
            m = _DEFINE_RE.match(o)
            if m:
                defines.append((m.group(1), m.group(2) if m.group(2) is not None else "1"))
        digest = hashlib.sha256(self.code.encode()).hexdigest()[:16]
        if os.environ.get("GPUCNN_SIMULATE_NVRTC", "").strip() == "1":
            from gpucnn.testing.nvrtc import compile_with_nvrtc

            res = compile_with_nvrtc(self.code, f"{digest}.cu", self.options, "sm_90")
            if not res.ok:
                raise CompileException(res.log, self.code, f"{digest}.cu", self.options)
        src = _source_dir() / f"mod-{digest}.cu"
        if not src.is_file():
            tmp = src.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(self.code)
            os.replace(tmp, src)
        try:
            self._module = EmulatedModule(src, defines or None, include_dirs=includes)
        except EmulatorCompileError as exc:
            raise CompileException(str(exc), self.code, src.name, self.options) from exc

    def get_function(self, name: str) -> RawKernel:
        """The kernel ``name`` (an ``extern "C" __global__`` function)."""
        self.compile()
        return RawKernel._from_emulated(self._module.get_function(name), name)


class RawKernel:
    """``cupy.RawKernel``: a launchable kernel; device arrays in, NumPy scalars by value."""

    def __init__(self, code: str, name: str, options: tuple = (), backend: str = "nvrtc",
                 translate_cucomplex: bool = False, enable_cooperative_groups: bool = False,
                 jitify: bool = False) -> None:
        self.name = name
        self._mod = RawModule(code=code, options=options)
        self._kernel: Any = None

    @classmethod
    def _from_emulated(cls, kernel: Any, name: str) -> RawKernel:
        k = cls.__new__(cls)
        k.name, k._mod, k._kernel = name, None, kernel
        return k

    def _emulated(self) -> Any:
        if self._kernel is None:
            self._kernel = self._mod.get_function(self.name)._kernel
        return self._kernel

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        return self._emulated().max_dynamic_shared_size_bytes

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, v: int) -> None:
        self._emulated().max_dynamic_shared_size_bytes = int(v)

    def __call__(self, grid: Any, block: Any, args: tuple, *, shared_mem: int = 0,
                 enable_cooperative_groups: bool = False) -> None:
        kern = self._emulated()
        host = []
        for i, a in enumerate(args):
            if isinstance(a, ndarray):
                host.append(a._a)
            elif isinstance(a, np.ndarray):
                raise TypeError(
                    f"{self.name}: argument {i} is a NumPy array; a kernel takes device "
                    f"arrays (Unsupported type {type(a)})"
                )
            else:
                host.append(a)
        S.count("launches", name=self.name)
        if S.capturing():
            frozen = tuple(host)
            S.record_node(lambda: kern(grid, block, frozen, shared_mem=shared_mem), self.name)
            return
        kern(grid, block, tuple(host), shared_mem=shared_mem)
