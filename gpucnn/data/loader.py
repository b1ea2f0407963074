"""DataLoader: shuffled mini-batches, prefetched by a background thread, on either backend.

Batches come as :class:`gpucnn.Tensor` tuples (PyTorch's convention), each wrapping its batch
array without a copy; ``tensors=False`` gives the arrays themselves (``fit``'s data path).

One worker thread per iteration assembles the next ``prefetch`` batches (index, cast, copy to
the device, augment) while the caller trains on the current one; a bounded queue holds them.
An exception in the worker is re-raised in the caller at the batch where it happened.
Abandoning an iteration (``break``, ``del it``, garbage collection, interpreter exit) stops
and joins the thread: no thread outlives its iterator.

Randomness: the epoch's order comes from ``numpy.random.default_rng([seed, epoch])`` when a
``seed`` is given, else from :func:`gpucnn.random.generator` ("numpy"); each batch's augmentation
gets its own generator seeded from ``(epoch seed, batch index)``, so results do not depend on
thread timing and are reproducible under :func:`gpucnn.manual_seed`.

CUDA backend: each loader keeps, per device, one side CuPy stream (created on first use, in
the worker thread, and reused by every epoch: CuPy's memory pool keeps an arena per stream, so
a stream per epoch would strand memory) and, per batch shape and dtype, a ring of
``prefetch + 2`` page-locked (pinned) staging buffers. A host batch is copied into the next
ring slot and uploaded with an asynchronous copy on the side stream; an event recorded after
that copy guards the slot, and the worker waits on it (``Event.synchronize``) only when the
ring wraps onto a copy still in flight: there is no per-batch host synchronisation, so the
worker really runs up to ``prefetch`` queued batches (plus the one it is building) ahead. The
transform runs on the side stream too, and the caller's stream waits on an event recorded
after it (a GPU-side wait, not a host sync). Device memory from the side stream's pool is
recycled only after the caller's stream has passed an event recorded when the batch was
already out of use: the worker's stream waits on the event the caller records at each
``next()`` (and at ``iter()``, covering the previous epoch's batches), and a window of
``prefetch + 3`` batches is kept alive (none with ``prefetch=0``: a batch is then built in
``next()`` after that event, so memory freed before it is already out of use). "The caller's
stream" is the current stream of the iterating thread; keep a batch beyond its loop iteration
only if you do not queue more GPU work on it afterwards. Iterators of one loader that run at
the same time share its stream and rings (their workers take turns building batches). The ring
is released, after its stream has finished, only when the loader is garbage-collected.
"""

from __future__ import annotations

import collections
import math
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from gpucnn._checks import check_bool, check_int
from gpucnn.backend import device as _device
from gpucnn.backend.device import empty_pinned
from gpucnn.backend.device import is_array as _is_array
from gpucnn.backend.device import is_device_array as _is_device_array

__all__ = ["DataLoader", "TensorDataset"]



def _raw(a: Any) -> Any:
    from gpucnn.tensor import Tensor

    return a.data if isinstance(a, Tensor) else a


class TensorDataset:
    """Arrays sharing their first dimension, indexed together: ``ds[i] -> (x[i], y[i], ...)``.

    Accepts NumPy/CuPy arrays or Tensors (their arrays are used). ``ds[idx]`` with an index
    array returns a tuple of batched arrays, which :class:`DataLoader` uses directly.
    """

    def __init__(self, *arrays: Any) -> None:
        if not arrays:
            raise ValueError("TensorDataset needs at least one array")
        out = []
        for i, a in enumerate(arrays):
            if _is_array(_raw(a)):
                out.append(_raw(a))
                continue
            try:
                arr = np.asarray(a)
            except ValueError:
                raise ValueError(
                    f"TensorDataset: array {i} is ragged (nested lists of different lengths)"
                ) from None
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"TensorDataset: array {i} holds dtype {arr.dtype}, expected "
                                "numbers")
            out.append(arr)
        for i, a in enumerate(out):
            if a.ndim == 0:
                raise ValueError(f"TensorDataset: array {i} is a scalar; expected a first "
                                 "(sample) dimension")
        self.arrays = tuple(out)
        n = len(self.arrays[0])
        for i, a in enumerate(self.arrays):
            if len(a) != n:
                raise ValueError(
                    f"TensorDataset: array 0 has {n} samples but array {i} has {len(a)}"
                )

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, idx: Any) -> tuple:
        return tuple(a[idx] for a in self.arrays)


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def _put(q: queue.Queue, stop: threading.Event, item: Any) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _worker(make: Callable[[int], Any], nbatches: int, q: queue.Queue,
            stop: threading.Event, setup: Callable[[], Any] | None) -> None:
    """Thread body: holds no reference to the iterator, so dropping it triggers shutdown."""
    try:
        ctx = setup() if setup is not None else None
        for k in range(nbatches):
            if stop.is_set():
                return
            if not _put(q, stop, make(k) if ctx is None else make(k, ctx)):
                return
        _put(q, stop, _END)
    except BaseException as exc:  # re-raised in the consumer
        _put(q, stop, _Failure(exc))


def _shutdown(stop: threading.Event, q: queue.Queue, thread: threading.Thread) -> None:
    stop.set()
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass
    if thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout=10)


_MAX_RINGS = 16  # staging rings kept per loader and device (one per batch shape and dtype)


class _Slot:
    """One pinned staging buffer of a ring and the event recorded after its last copy."""

    __slots__ = ("buf", "event")

    def __init__(self, buf: Any, event: Any) -> None:
        self.buf = buf
        self.event = event


class _CudaState:
    """CUDA resources of one :class:`DataLoader` on one device, shared by all its iterators:
    the side stream, the pinned staging rings (one per shape and dtype) and the latest event
    recorded on the consumer's stream."""

    def __init__(self, device_id: int) -> None:
        self.device_id = device_id
        self.depth = 2  # ring slots per shape: raised to prefetch + 2 by each iterator
        self.consumer_event: Any = None  # set by the consumer thread at iter() and next()
        self.stream: Any = None
        self.rings: dict[tuple, collections.deque] = {}  # oldest slot first
        self.lock = threading.Lock()  # one batch built at a time (concurrent iterators)

    def setup(self) -> _CudaState:
        # Runs in the worker thread (the caller's for prefetch=0): make the device current
        # there; the stream is created once, on first use, and kept for every later epoch.
        _device.use_device(self.device_id)
        with self.lock:
            if self.stream is None:
                self.stream = _device.new_stream()
                # The rings outlive the loader until the last copies from them are done.
                fin = weakref.finalize(self, _drain, self.stream, self.rings)
                fin.atexit = False
        return self

    def _slot(self, shape: tuple, dtype: np.dtype) -> _Slot:
        """The next staging buffer for ``shape``/``dtype``; waits only on a wrapped slot."""
        key = (shape, dtype.str)
        ring = self.rings.pop(key, None)
        if ring is None:
            ring = collections.deque()
            self._evict()
        self.rings[key] = ring  # most recently used last
        if len(ring) < self.depth:
            slot = _Slot(empty_pinned(shape, dtype=dtype), _device.new_event())
        else:
            slot = ring.popleft()
            if not slot.event.done:  # the ring wrapped onto a copy still in flight
                slot.event.synchronize()
        ring.append(slot)
        return slot

    def _evict(self) -> None:
        """Bound the rings kept for batch shapes that vary: drop the least recently used
        ones whose copies have all finished (never waits)."""
        for key in list(self.rings):
            if len(self.rings) < _MAX_RINGS:
                return
            if all(slot.event.done for slot in self.rings[key]):
                del self.rings[key]

    def upload(self, a: Any) -> Any:
        """Async host->device copy of ``a`` on the side stream, through a pinned ring slot."""
        if _is_device_array(a):
            return a  # already on the device (indexed on the side stream by the caller)
        a = np.ascontiguousarray(a)
        slot = self._slot(a.shape, a.dtype)
        slot.buf[...] = a
        out = _device.upload_async(slot.buf, self.stream)
        slot.event.record(self.stream)  # the slot is free again once this completes
        return out


def _drain(stream: Any, rings: dict) -> None:
    """Finalizer of a :class:`_CudaState`: wait for its stream before its rings are freed."""
    try:
        stream.synchronize()
    except Exception:  # pragma: no cover - CUDA already torn down
        pass
    rings.clear()


class _LoaderIterator:
    """One pass over a :class:`DataLoader`; see the module docstring."""

    def __init__(self, loader: DataLoader, order: np.ndarray, aug_seed: int, be: Any) -> None:
        self._nbatches = len(loader)
        self._i = 0
        self._tensors = loader.tensors
        self._cuda: _CudaState | None = None
        # prefetch=0 builds each batch in next(), after the caller's event: memory freed so far
        # is already safe to reuse, so no window is kept (the pool serves the next batch from
        # the one just dropped, as a caller uploading batch by batch would get).
        self._window: collections.deque = collections.deque(
            maxlen=loader.prefetch + 3 if loader.prefetch > 0 else 0
        )
        make = loader._batch_maker(order, aug_seed, be)
        setup = None
        if be.name == "cuda":
            self._cuda = loader._cuda_state(_device.current_device_id())
            self._cuda.depth = max(self._cuda.depth, max(loader.prefetch, 0) + 2)
            # Everything queued so far, the previous epochs' batches included, precedes this
            # event: the worker's first batch waits on it before reusing their pool memory.
            self._cuda.consumer_event = _device.record_event()
            setup = self._cuda.setup
        self._sync_make = make
        if loader.prefetch <= 0:
            self._thread = None
            if setup is not None:
                self._cuda_ctx = setup()
            return
        self._queue: queue.Queue = queue.Queue(maxsize=loader.prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_worker, args=(make, self._nbatches, self._queue, self._stop, setup),
            name="gpucnn-dataloader", daemon=True,
        )
        self._thread.start()
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._queue, self._thread)

    def __iter__(self) -> _LoaderIterator:
        return self

    def __next__(self) -> Any:
        if self._i >= self._nbatches:
            self.close()
            raise StopIteration
        if self._cuda is not None:
            # Everything queued on the batches handed out so far precedes this event; the
            # worker makes its stream wait on it before it reuses pool memory.
            self._cuda.consumer_event = _device.record_event()
        if self._thread is None:
            item = (self._sync_make(self._i) if self._cuda is None
                    else self._sync_make(self._i, self._cuda_ctx))
        else:
            item = self._queue.get()
            if isinstance(item, _Failure):
                self.close()
                raise item.exc
            if item is _END:  # pragma: no cover - guarded by the count above
                self.close()
                raise StopIteration
        self._i += 1
        batch, event = item
        if event is not None:
            _device.wait_event(event)
        self._window.append(batch)
        if self._tensors:
            from gpucnn.tensor import Tensor

            return tuple(Tensor(a) for a in batch)  # wraps each array: no copy, no sync
        return batch

    def __len__(self) -> int:
        return self._nbatches - self._i

    def close(self) -> None:
        """Stop and join the worker thread (idempotent)."""
        if self._thread is not None:
            self._finalizer()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class DataLoader:
    """Mini-batches ``(x, y)`` of a data set, shuffled, prefetched and augmented.

    Args:
        data: ``(x, y)`` (a tuple or list of arrays sharing the first dimension), a single
            array ``x``, a :class:`TensorDataset`, or any object with ``__len__`` and
            ``__getitem__(i) -> (x_i, y_i)`` (items are stacked with NumPy).
        batch_size: samples per batch.
        shuffle: a new random order every epoch (else the data order).
        drop_last: drop the last, smaller batch.
        seed: seed of the shuffle and augmentation streams (epoch ``e`` uses ``(seed, e)``);
            default: drawn from :func:`gpucnn.random.generator` at each epoch.
        transform: applied to each whole ``x`` batch on the device, e.g. a
            :class:`gpucnn.transforms.Compose`; a :class:`gpucnn.transforms.Transform` gets a
            per-batch generator, any other callable is called as ``transform(x)``.
        backend: ``"numpy"`` or ``"cuda"``; default: the active backend when iteration starts.
        prefetch: batches prepared ahead by the background thread (0: no thread).
        dtype: dtype of ``x`` batches (float32); ``None`` keeps the data's dtype. ``y`` and any
            further arrays keep theirs.
        sampler: the sample indices of each epoch instead of ``shuffle`` (an object with
            ``__len__``, ``__iter__`` over indices and optionally ``set_epoch``), e.g. a
            :class:`gpucnn.distributed.DistributedSampler` giving this rank's share.
        tensors: yield :class:`gpucnn.Tensor` batches (the default, as PyTorch's DataLoader
            does); ``False`` yields the raw backend arrays instead (what ``fit`` and other
            internal users take; the same arrays the Tensors would wrap).

    Iterating yields tuples of :class:`gpucnn.Tensor` (``requires_grad=False``) on the chosen
    backend, each wrapping the batch array without a copy: ``(x, y)`` for two arrays, ``(x,)``
    for one; with ``tensors=False``, tuples of the arrays themselves (NumPy or CuPy). ``x`` has
    ``dtype`` (float32), ``y`` keeps its dtype (e.g. int64 class ids, as
    ``F.cross_entropy`` takes them), so a PyTorch loop runs unchanged::

        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            out = net(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(); loss.backward(); opt.step()
            acc = (out.argmax(dim=1) == yb).float().mean().item()

    ``len(loader)`` is the number of batches.
    """

    def __init__(
        self,
        data: Any,
        batch_size: int = 32,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        transform: Callable | None = None,
        backend: str | None = None,
        prefetch: int = 2,
        dtype: Any = np.float32,
        sampler: Any = None,
        tensors: bool = True,
    ) -> None:
        batch_size = check_int("DataLoader", "batch_size", batch_size, 1)
        prefetch = check_int("DataLoader", "prefetch", prefetch, 0)
        check_int("DataLoader", "seed", seed, 0, allow_none=True)
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable or None, got {transform!r}")
        if dtype is not None:
            try:
                dt = np.dtype(dtype)
            except TypeError:
                raise TypeError(f"DataLoader: dtype must be a NumPy dtype or None, got "
                                f"{dtype!r}") from None
            if dt.kind not in "biuf":
                raise TypeError(f"DataLoader: dtype must be numeric, got {dt}")
        if not isinstance(backend, (str, type(None))) or \
                backend not in (None, "numpy", "cuda", "auto"):
            raise ValueError(f"DataLoader: backend must be 'numpy', 'cuda' or None, got "
                             f"{backend!r}")
        self.batch_size = int(batch_size)
        self.shuffle = check_bool("DataLoader", "shuffle", shuffle)
        self.drop_last = check_bool("DataLoader", "drop_last", drop_last)
        self.seed = seed
        self.transform = transform
        self.backend = None if backend == "auto" else backend
        self.prefetch = int(prefetch)
        self.dtype = None if dtype is None else np.dtype(dtype)
        if sampler is not None and (self.shuffle or not hasattr(sampler, "__iter__")):
            raise ValueError("DataLoader: sampler must be an iterable of indices with __len__, "
                             "and excludes shuffle=True (the sampler orders the epoch), got "
                             f"sampler={type(sampler).__name__}, shuffle={self.shuffle}")
        self.sampler = sampler
        self.tensors = check_bool("DataLoader", "tensors", tensors)
        self.epoch = 0
        #: the data set (PyTorch's ``loader.dataset``): ``data`` itself, or a
        #: :class:`TensorDataset` of the arrays given
        self.dataset: Any = None
        raw = _raw(data)
        if isinstance(data, TensorDataset):
            self.dataset = data
        elif _is_array(raw):
            self.dataset = TensorDataset(raw)
        elif isinstance(data, (tuple, list)) and data and all(_is_array(_raw(a)) for a in data):
            self.dataset = TensorDataset(*data)
        elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
            self.dataset = data
        else:
            raise TypeError(
                "DataLoader: data must be (x, y) arrays, an array, or a dataset with __len__ "
                f"and __getitem__; got {type(data).__name__}"
            )
        #: the arrays batched directly (a :class:`TensorDataset`'s), else None (a generic
        #: data set, indexed sample by sample)
        self.arrays: tuple | None = (self.dataset.arrays if isinstance(self.dataset,
                                                                       TensorDataset) else None)
        self._n = len(self.arrays[0]) if self.arrays is not None else len(self.dataset)
        self._cuda_states: dict[int, _CudaState] = {}  # per device, kept across epochs

    def _cuda_state(self, device_id: int) -> _CudaState:
        state = self._cuda_states.get(device_id)
        if state is None:
            state = self._cuda_states.setdefault(device_id, _CudaState(device_id))
        return state

    def __len__(self) -> int:
        n = self._n if self.sampler is None else len(self.sampler)
        if self.drop_last:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        """Number of samples in the data set."""
        return self._n

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch number the next iteration uses (the seeded order depends on it)."""
        self.epoch = int(epoch)

    def _epoch_streams(self) -> tuple[np.ndarray, int]:
        if self.seed is not None:
            ss = np.random.SeedSequence([int(self.seed), self.epoch])
            rng = np.random.default_rng(ss)
        else:
            from gpucnn import random as _random

            rng = _random.generator("numpy")
        order = rng.permutation(self._n) if self.shuffle else np.arange(self._n)
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(self.epoch)
            order = np.fromiter(iter(self.sampler), dtype=np.int64)
        aug_seed = int(rng.integers(0, 2**63 - 1)) if self.transform is not None else 0
        return order, aug_seed

    def __iter__(self) -> Iterator:
        be = _resolve_backend(self.backend)
        order, aug_seed = self._epoch_streams()
        self.epoch += 1
        return _LoaderIterator(self, order, aug_seed, be)

    # ------------------------------------------------------------------ batch assembly
    def _host_batch(self, idx: np.ndarray) -> list:
        if self.arrays is not None:
            return [a[idx] if isinstance(a, np.ndarray) else _device_index(a, idx)
                    for a in self.arrays]
        items = [self.dataset[int(i)] for i in idx]
        first = items[0]
        if not isinstance(first, (tuple, list)):
            return [self._stack([_sample_array(self, int(i), it) for i, it in zip(idx, items)],
                                idx, None)]
        nf = len(first)
        for i, it in zip(idx, items):
            if not isinstance(it, (tuple, list)) or len(it) != nf:
                raise ValueError(
                    f"DataLoader: sample {int(i)} of the dataset is "
                    f"{_what(it)}, but sample {int(idx[0])} is a tuple of {nf}; every "
                    f"sample must have the same fields"
                )
        return [self._stack([_sample_array(self, int(i), it[f]) for i, it in zip(idx, items)],
                            idx, f) for f in range(nf)]

    def _stack(self, arrays: list, idx: np.ndarray, field: int | None) -> np.ndarray:
        """Stack one field of a batch's samples; a sample of another shape is a ValueError
        naming the loader, the sample index and both shapes."""
        shape0 = arrays[0].shape
        for i, a in zip(idx, arrays):
            if a.shape != shape0:
                where = "" if field is None else f" field {field}"
                raise ValueError(
                    f"DataLoader: sample {int(i)}{where} has shape {a.shape}, but sample "
                    f"{int(idx[0])}{where} has shape {shape0}; samples of one batch must "
                    f"have the same shape"
                )
        return np.stack(arrays)

    def _batch_maker(self, order: np.ndarray, aug_seed: int, be: Any) -> Callable:
        bs, n, dtype, transform = self.batch_size, len(order), self.dtype, self.transform
        from gpucnn.transforms import Transform

        def augment(x: Any, k: int) -> Any:
            if transform is None:
                return x
            if not isinstance(transform, Transform):
                return transform(x)
            ss = np.random.SeedSequence([aug_seed, k])
            if be.name == "numpy":
                gen = np.random.default_rng(ss)
            else:
                gen = be.xp.random.default_rng(int(ss.generate_state(1, np.uint64)[0] >> 1))
            return transform(x, generator=gen)

        def cast(x: Any) -> Any:
            return x if dtype is None or x.dtype == dtype else x.astype(dtype)

        def make_numpy(k: int) -> tuple:
            idx = order[k * bs:min((k + 1) * bs, n)]
            parts = [_host(p) for p in self._host_batch(idx)]
            parts[0] = augment(cast(parts[0]), k)
            return tuple(parts), None

        def make_cuda(k: int, ctx: _CudaState) -> tuple:
            idx = order[k * bs:min((k + 1) * bs, n)]
            with ctx.lock, ctx.stream:
                if ctx.consumer_event is not None:
                    ctx.stream.wait_event(ctx.consumer_event)
                parts = [ctx.upload(p) for p in self._host_batch(idx)]
                parts[0] = augment(cast(parts[0]), k)
                event = ctx.stream.record()
            return tuple(parts), event

        return make_numpy if be.name == "numpy" else make_cuda


def _resolve_backend(name: str | None) -> Any:
    """The backend object a loader iterates on: ``name``, else the active one."""
    from gpucnn import backend as _backend

    return _backend.get_backend(name) if name else _backend.get()


def _host(a: Any) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    if _is_device_array(a):
        return a.get()
    return np.asarray(_raw(a))


def _what(item: Any) -> str:
    if isinstance(item, (tuple, list)):
        return f"a {type(item).__name__} of {len(item)}"
    return f"a {type(item).__name__}"


def _sample_array(loader: DataLoader, i: int, v: Any) -> np.ndarray:
    """One field of sample ``i`` as a host array; a ragged or non-numeric value is a
    ``ValueError`` / ``TypeError`` naming the loader and the index."""
    if isinstance(v, np.ndarray) or _is_device_array(v):
        a = _host(v)
    else:
        try:
            a = np.asarray(_raw(v))
        except ValueError:
            raise ValueError(
                f"DataLoader: sample {i} of the dataset is ragged (nested lists of different "
                f"lengths): {type(v).__name__}"
            ) from None
    if a.dtype.kind not in "biuf":
        raise TypeError(
            f"DataLoader: sample {i} of the dataset holds dtype {a.dtype}, expected numbers"
        )
    return a


def _device_index(a: Any, idx: np.ndarray) -> Any:
    """Index a device array with host indices (moved to the array's device)."""
    return _device.take(a, idx)

