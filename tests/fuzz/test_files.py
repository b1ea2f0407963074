"""Fuzzing every file format gpucnn reads: checkpoints, IDX (MNIST), CIFAR pickles, downloads.

Each property feeds corrupted, foreign or malicious bytes to the real reader and requires a
clear refusal (a ``ValueError`` subclass naming the file and what is wrong) or, where the
corruption is in bytes the format does not protect, a result identical to the original. Nothing
in a payload may run (a marker file must never appear) and nothing may be allocated beyond what
the format allows (``tracemalloc`` peaks far below what a bomb declares). A save killed with
SIGKILL never loses the previous checkpoint and its temporary file is removed by the next save.

Hypothesis runs derandomized (the same examples on every run, no example database); the example
counts are in :data:`EXAMPLES` (times ``$GPUCNN_FUZZ_SCALE``, default 1).
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpucnn import datasets as D
from gpucnn import layers as L
from gpucnn import saving
from gpucnn.datasets import _download, cifar
from gpucnn.model import Sequential
from gpucnn.saving import CheckpointError, load_model

#: Generated examples per property.
EXAMPLES = {
    "checkpoint_truncation": 60,
    "checkpoint_flips": 120,
    "checkpoint_meta": 150,
    "checkpoint_arrays": 40,
    "idx_flips": 150,
    "idx_random": 100,
    "cifar_flips": 150,
    "cifar_objects": 100,
    "cifar_opcodes": 300,
    "download": 25,
}


#: ``GPUCNN_FUZZ_SCALE=10`` runs ten times as many examples (a longer, still reproducible run).
SCALE = max(1, int(os.environ.get("GPUCNN_FUZZ_SCALE", "1") or 1))


def fuzz(name: str) -> settings:
    return settings(
        max_examples=EXAMPLES[name] * SCALE,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large],
    )


REPO = Path(__file__).resolve().parents[2]
MB = 1 << 20


class Peak:
    """``with Peak() as p: ...`` then ``p.bytes``: the tracemalloc peak inside the block."""

    def __enter__(self) -> Peak:
        self.was = tracemalloc.is_tracing()
        if not self.was:
            tracemalloc.start()
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        self.bytes = tracemalloc.get_traced_memory()[1] - self.base
        if not self.was:
            tracemalloc.stop()


# ----------------------------------------------------------------------------- payloads

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpucnn-fuzz-pwned-{os.getpid()}"


def _marker(path: str) -> None:
    """What a malicious payload would run: leaves a file the tests check never appears."""
    Path(path).write_text("pwned")


class _Evil:
    def __reduce__(self) -> Any:
        return (_marker, (str(MARKER),))


class _EvilSystem:
    def __reduce__(self) -> Any:
        return (os.system, (f"touch {MARKER}",))


class _EvilEval:
    def __reduce__(self) -> Any:
        return (eval, (f"__import__('pathlib').Path({str(MARKER)!r}).write_text('x')",))


class _Reduce:
    """Pickles as ``fn(*args)`` (then ``BUILD state`` when given): forged NumPy calls."""

    def __init__(self, fn: Any, args: tuple, state: Any = None) -> None:
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self) -> Any:
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


@pytest.fixture(autouse=True)
def _no_marker():
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists(), "a payload was executed"


def _message_names(exc: BaseException, name: str) -> None:
    assert name in str(exc), f"the error does not name {name!r}: {exc}"


# ============================================================================= checkpoints


def _model() -> Sequential:
    return Sequential([L.Conv2D(2, 3, input_shape=(1, 5, 5)), L.Flatten(), L.Dense(3)])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("ckpt")
    m = _model()
    m.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    x = np.random.default_rng(0).normal(size=(8, 1, 5, 5)).astype(np.float32)
    m.fit(x, np.arange(8) % 3, epochs=1, verbose=0)
    path = d / "good.npz"
    m.save(path)
    meta, entries = saving.read_checkpoint(path)
    return {"dir": d, "raw": path.read_bytes(), "meta": meta, "entries": entries,
            "state": m.state_dict(), "n": [0]}


def _write(ck: dict, data: bytes, stem: str = "case") -> Path:
    ck["n"][0] += 1
    p = ck["dir"] / f"{stem}{ck['n'][0]}.npz"
    p.write_bytes(data)
    return p


def _same_as_original(model: Any, ck: dict) -> None:
    sd = model.state_dict()
    assert sd.keys() == ck["state"].keys()
    for k, v in ck["state"].items():
        np.testing.assert_array_equal(sd[k], v, err_msg=k)
    assert model.completed_epochs == ck["meta"]["epoch"]


def _load_refused_or_same(path: Path, ck: dict) -> None:
    try:
        m = load_model(path)
    except CheckpointError as exc:
        _message_names(exc, path.name)
    else:
        _same_as_original(m, ck)


def _zip_regions(raw: bytes) -> list[int]:
    """Byte offsets where the regions of the archive start: each member's local header, its
    data, the central directory, the end record."""
    out = [0, len(raw) - 22]
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        for info in zf.infolist():
            out.append(info.header_offset)
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:
                                                           info.header_offset + 30])
            data = info.header_offset + 30 + name_len + extra_len
            out += [data, data + 10, data + info.compress_size - 1]
        out.append(raw.rfind(b"PK\x01\x02", 0, len(raw) - 22))
        out.append(raw.find(b"PK\x01\x02"))
    return sorted({o for o in out if 0 <= o < len(raw)})


def test_checkpoint_truncated_at_every_region(ckpt) -> None:
    raw = ckpt["raw"]
    cuts = set()
    for r in _zip_regions(raw):
        cuts.update({r - 1, r, r + 1})
    for cut in sorted(c for c in cuts if 0 <= c < len(raw)):
        p = _write(ckpt, raw[:cut], "trunc")
        with pytest.raises(CheckpointError) as ei:
            load_model(p)
        _message_names(ei.value, p.name)


@fuzz("checkpoint_truncation")
@given(cut=st.integers(0, 1 << 20))
def test_checkpoint_truncated_anywhere(ckpt, cut) -> None:
    raw = ckpt["raw"]
    p = _write(ckpt, raw[: cut % len(raw)], "trunc")
    with pytest.raises(CheckpointError) as ei:
        load_model(p)
    _message_names(ei.value, p.name)


@fuzz("checkpoint_flips")
@given(flips=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(1, 255)),
                      min_size=1, max_size=4))
def test_checkpoint_byte_flips(ckpt, flips) -> None:
    raw = bytearray(ckpt["raw"])
    for pos, x in flips:
        raw[pos % len(raw)] ^= x
    _load_refused_or_same(_write(ckpt, bytes(raw), "flip"), ckpt)


def _resave(ck: dict, meta: Any, entries: dict, stem: str) -> Path:
    """A tampered file whose checksum was recomputed: only the structure checks can tell."""
    entries = dict(entries)
    entries.pop("__sha256__", None)
    entries["__meta__"] = np.array(json.dumps(meta))
    entries["__sha256__"] = np.array(saving._digest(entries))
    ck["n"][0] += 1
    p = ck["dir"] / f"{stem}{ck['n'][0]}.npz"
    np.savez(p, **entries)
    return p


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 40), 1 << 40) | st.integers(-3, 40)
    | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["o/0", "w/0.weight", "__array__", "Dense", "Sequential", "Adam",
                       "float32", "<f8", "V100000000", "O"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["__array__", "__dict__", "__tuple__", "__scalar__",
                                       "value", "class_name", "config", "units"]) | st.text(
                          max_size=6), inner, max_size=4),
    max_leaves=8,
)


def _paths(v: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, (*prefix, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, (*prefix, i))
    return out


def _mutate(meta: Any, path: tuple, new: Any, delete: bool) -> Any:
    if not path:
        return new
    meta = json.loads(json.dumps(meta))
    parent = meta
    for k in path[:-1]:
        parent = parent[k]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    elif delete:
        parent.pop(path[-1])
    else:
        parent[path[-1]] = new
    return meta


@fuzz("checkpoint_meta")
@given(data=st.data())
def test_checkpoint_tampered_metadata_with_recomputed_checksum(ckpt, data) -> None:
    meta = ckpt["meta"]
    paths = _paths(meta)
    mutated = meta
    for _ in range(data.draw(st.integers(1, 3), label="n_mutations")):
        paths = _paths(mutated)
        path = data.draw(st.sampled_from(paths), label="path")
        mutated = _mutate(mutated, path, data.draw(_json, label="value"),
                          data.draw(st.booleans(), label="delete") and bool(path))
    p = _resave(ckpt, mutated, ckpt["entries"], "meta")
    try:
        m = load_model(p)  # the loaded model may differ: the file says so, consistently
    except CheckpointError as exc:
        _message_names(exc, p.name)
    else:
        assert isinstance(m, Sequential) or hasattr(m, "state_dict")
    try:
        _model().load_weights(p)
    except (CheckpointError, KeyError, ValueError) as exc:
        _message_names(exc, p.name)


_dtypes = st.sampled_from(["<f4", "<f8", "<i8", "|u1", "<U3", "|b1", "<c8", ">f4"])


@fuzz("checkpoint_arrays")
@given(data=st.data())
def test_checkpoint_tampered_arrays_with_recomputed_checksum(ckpt, data) -> None:
    entries = dict(ckpt["entries"])
    keys = sorted(k for k in entries if not k.startswith("__"))
    key = data.draw(st.sampled_from(keys), label="key")
    what = data.draw(st.sampled_from(["shape", "dtype", "drop", "extra"]), label="what")
    if what == "shape":
        shape = tuple(data.draw(st.lists(st.integers(0, 5), max_size=4), label="shape"))
        entries[key] = np.zeros(shape, np.float32)
    elif what == "dtype":
        entries[key] = entries[key].astype(data.draw(_dtypes, label="dtype"))
    elif what == "drop":
        del entries[key]
    else:
        entries[f"x/{key}"] = entries[key]
    p = _resave(ckpt, ckpt["meta"], entries, "arr")
    try:
        load_model(p)
    except CheckpointError as exc:
        _message_names(exc, p.name)


def _zip_bytes(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip built by hand: ``(name, stored bytes, method, crc, uncompressed size)`` each."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, method, crc, size in members:
        off = out.tell()
        n = name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc,
                              len(data), size, len(n), 0) + n + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0,
                                  crc, len(data), size, len(n), 0, 0, 0, 0, 0, off) + n)
    cd = central.getvalue()
    start = out.tell()
    out.write(cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members),
                               len(cd), start, 0))
    return out.getvalue()


def _deflate_bomb(header: bytes, zeros: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``header`` + ``zeros`` zero bytes (~1 KB per MiB) and its CRC."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = co.compress(header) + co.flush(zlib.Z_FULL_FLUSH)
    cz = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = cz.compress(bytes(MB)) + cz.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(header)
    zero_mb = bytes(MB)
    for _ in range(zeros // MB):
        crc = zlib.crc32(zero_mb, crc)
    return head + block * (zeros // MB) + b"\x03\x00", crc


def _npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.fixture(scope="module")
def deflate_bomb_ckpt(ckpt) -> Path:
    """The genuine checkpoint's members plus a 1 MB deflate bomb: an .npy declaring 1 GiB."""
    header = _npy_header((1 << 28,))
    stream, crc = _deflate_bomb(header, 1 << 30)
    assert len(stream) < 2 * MB
    members = [("w/0.weight.npy", stream, zipfile.ZIP_DEFLATED, crc, len(header) + (1 << 30))]
    with zipfile.ZipFile(io.BytesIO(ckpt["raw"])) as zf:
        for info in zf.infolist():
            if info.filename != "w/0.weight.npy":
                members.append((info.filename, zf.read(info), 0, info.CRC, info.file_size))
    p = ckpt["dir"] / "bomb.npz"
    p.write_bytes(_zip_bytes(members))
    return p


def test_checkpoint_deflate_bomb_refused_before_inflating(deflate_bomb_ckpt) -> None:
    with Peak() as peak, pytest.raises(CheckpointError, match="compressed") as ei:
        load_model(deflate_bomb_ckpt)
    _message_names(ei.value, "bomb.npz")
    assert peak.bytes < 32 * MB, f"{peak.bytes / MB:.0f} MiB allocated for a refused file"


def test_checkpoint_overlapping_members_refused(ckpt) -> None:
    """Many zip entries pointing at the same stored bytes (a non-recursive zip bomb)."""
    body = _npy_header((1 << 18,)) + bytes(1 << 20)
    crc = zlib.crc32(body)
    one = _zip_bytes([("w/a.npy", body, 0, crc, len(body))])
    cd_at = one.rfind(b"PK\x01\x02")
    entry = one[cd_at:one.rfind(b"PK\x05\x06")]
    entries = b"".join(entry.replace(b"w/a.npy", f"w/{i}.npy".encode()[:7].ljust(7, b"_"))
                       for i in range(200))
    forged = (one[:cd_at] + entries + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 200, 200,
                                                  len(entries), cd_at, 0))
    p = _write(ckpt, forged, "overlap")
    with Peak() as peak, pytest.raises(CheckpointError) as ei:
        load_model(p)
    _message_names(ei.value, p.name)
    assert peak.bytes < 16 * MB


def test_checkpoint_npy_declaring_more_than_it_holds(ckpt) -> None:
    body = _npy_header((1 << 28,)) + bytes(64)  # declares 1 GiB, holds 64 bytes
    p = _write(ckpt, _zip_bytes([("w/a.npy", body, 0, zlib.crc32(body), len(body))]), "decl")
    with Peak() as peak, pytest.raises(CheckpointError, match="declares") as ei:
        load_model(p)
    _message_names(ei.value, p.name)
    assert peak.bytes < 8 * MB


def _foreign_payloads() -> dict[str, bytes]:
    evil_npy = io.BytesIO()
    np.save(evil_npy, np.array([_Evil(), _EvilSystem()], dtype=object), allow_pickle=True)
    evil_zip = io.BytesIO()
    with zipfile.ZipFile(evil_zip, "w") as zf:
        zf.writestr("__meta__.npy", evil_npy.getvalue())
        zf.writestr("__sha256__.npy", evil_npy.getvalue())
    other = io.BytesIO()
    np.savez(other, a=np.arange(3), b=np.ones((2, 2)))
    text_zip = io.BytesIO()
    with zipfile.ZipFile(text_zip, "w") as zf:
        zf.writestr("readme.txt", "hello")
        zf.writestr("dir/", "")
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w:gz") as t:
        info = tarfile.TarInfo("x")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))
    structured = io.BytesIO()
    with zipfile.ZipFile(structured, "w") as zf:
        buf = io.BytesIO()
        np.save(buf, np.zeros(3, dtype=[("a", "<f4"), ("b", "<i8")]))
        zf.writestr("w/0.weight.npy", buf.getvalue())
    return {
        "empty": b"",
        "text": b"not a checkpoint at all\n",
        "pickle_evil": pickle.dumps({"w": _Evil()}),
        "pickle_system": pickle.dumps(_EvilSystem()),
        "npy_object_array": evil_npy.getvalue(),
        "zip_object_arrays": evil_zip.getvalue(),
        "other_npz": other.getvalue(),
        "zip_text_members": text_zip.getvalue(),
        "zip_structured": structured.getvalue(),
        "targz": tar.getvalue(),
        "gzip": gzip.compress(b"\0" * 1000),
        "json": json.dumps({"format": "gpucnn-checkpoint", "version": 1}).encode(),
        "zip_end_only": struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0, 0, 0, 0, 0),
        "random": np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    }


@pytest.mark.parametrize("kind", sorted(_foreign_payloads()))
def test_checkpoint_foreign_payloads_refused_nothing_run(ckpt, kind) -> None:
    p = _write(ckpt, _foreign_payloads()[kind], f"foreign_{kind}_")
    for load in (load_model, lambda q: _model().load_weights(q), saving.read_checkpoint):
        with pytest.raises(CheckpointError) as ei:
            load(p)
        _message_names(ei.value, p.name)


# ----------------------------------------------------------------------------- kill -9

_SAVER = textwrap.dedent("""
    import os, sys
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from gpucnn import layers as L, saving
    from gpucnn.model import Sequential

    path, mode = sys.argv[1], sys.argv[2]
    m = Sequential([L.Dense(256, input_shape=(512,)), L.Dense(10)])
    if mode == "exit-midway":  # die half-way through writing the archive
        def die(f, entries):
            f.write(b"PK\\x03\\x04 half an archive")
            f.flush()
            os._exit(3)
        saving._write_npz = die
        m.save(path)
    i = 0
    while True:
        i += 1
        m.set_weights([np.full_like(w, i) for w in m.get_weights()])
        m.save(path)
        print(i, flush=True)
""")


def _orphans(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _saver(tmp_path: Path, mode: str) -> subprocess.Popen:
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    env = {**os.environ, "GPUCNN_BACKEND": "numpy"}
    env.pop("GPUCNN_SIMULATE_CUDA", None)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "ck.npz"), mode,
                             str(REPO)], stdout=subprocess.PIPE, text=True, env=env)


def _fill(value: float) -> Sequential:
    m = Sequential([L.Dense(256, input_shape=(512,)), L.Dense(10)])
    m.set_weights([np.full_like(w, value) for w in m.get_weights()])
    return m


@pytest.mark.parametrize("delay_ms", [0, 3, 11, 29])
def test_kill_9_during_saves_keeps_previous_checkpoint(tmp_path, delay_ms) -> None:
    path = tmp_path / "ck.npz"
    _fill(-1.0).save(path)  # the checkpoint there before the process starts
    proc = _saver(tmp_path, "loop")
    assert proc.stdout is not None
    done = int(proc.stdout.readline())  # at least one save completed
    time.sleep(delay_ms / 1000)
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read().split()
    proc.wait(10)  # reaped: its pid is gone
    done = int(rest[-1]) if rest else done
    w = load_model(path).get_weights()  # intact: the last finished save or the one in flight
    value = float(w[0].flat[0])
    assert value in (done, done + 1) and all(np.all(a == value) for a in w)
    _fill(7.0).save(path)  # the next save removes what the killed one left
    assert _orphans(tmp_path) == []
    assert float(load_model(path).get_weights()[0].flat[0]) == 7.0


def test_writer_dying_midway_leaves_previous_checkpoint_and_next_save_cleans(tmp_path) -> None:
    path = tmp_path / "ck.npz"
    _fill(2.0).save(path)
    proc = _saver(tmp_path, "exit-midway")
    assert proc.wait(60) == 3
    orphans = _orphans(tmp_path)
    assert len(orphans) == 1 and f".{proc.pid}." in orphans[0]  # what kill -9 leaves
    assert float(load_model(path).get_weights()[0].flat[0]) == 2.0
    _fill(3.0).save(path)
    assert _orphans(tmp_path) == []
    assert float(load_model(path).get_weights()[0].flat[0]) == 3.0


# ============================================================================= IDX


def _idx(arr: np.ndarray, gz: bool = True) -> bytes:
    raw = struct.pack(f">HBB{arr.ndim}I", 0, 0x08, arr.ndim, *arr.shape) + arr.tobytes()
    return gzip.compress(raw, mtime=0) if gz else raw


IDX_ARRAY = np.random.default_rng(3).integers(0, 256, size=(3, 5, 4), dtype=np.uint8)


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_idx_truncated_at_every_byte(gz) -> None:
    raw = _idx(IDX_ARRAY, gz)
    for cut in range(len(raw)):
        with pytest.raises(D.DatasetError) as ei:
            D.parse_idx(raw[:cut], "cut.idx")
        _message_names(ei.value, "cut.idx")


@fuzz("idx_flips")
@given(flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)),
                      min_size=1, max_size=3), gz=st.booleans())
def test_idx_byte_flips(flips, gz) -> None:
    raw = bytearray(_idx(IDX_ARRAY, gz))
    for pos, x in flips:
        raw[pos % len(raw)] ^= x
    try:
        out = D.parse_idx(bytes(raw), "flip.idx", ndim=3)
    except D.DatasetError as exc:
        _message_names(exc, "flip.idx")
        return
    if gz:  # the gzip CRC protects the data: accepted means unchanged (a header flag/mtime)
        np.testing.assert_array_equal(out, IDX_ARRAY)
    else:  # raw IDX has no checksum: the header must still account for every byte
        assert out.nbytes == len(raw) - 4 - 4 * out.ndim


@fuzz("idx_random")
@given(raw=st.binary(max_size=300) | st.builds(
    lambda head, body: head + body,
    st.sampled_from([b"\x00\x00\x08\x01", b"\x00\x00\x08\x03", b"\x00\x00\x0e\x02",
                     b"\x1f\x8b\x08\x00", b"\x00\x00\x08\xff"]),
    st.binary(max_size=200)))
def test_idx_random_bytes(raw) -> None:
    for data in (raw, gzip.compress(raw, mtime=0)):
        try:
            out = D.parse_idx(data, "rand.idx")
        except D.DatasetError as exc:
            _message_names(exc, "rand.idx")
        else:
            assert isinstance(out, np.ndarray) and out.nbytes <= len(raw)


def test_idx_gzip_bomb_refused_without_inflating(tmp_path) -> None:
    """A 1 MB gzip poses as labels for 10 images and inflates to 1 GiB."""
    header = struct.pack(">HBBI", 0, 0x08, 1, 10)
    stream, crc = _deflate_bomb(header, 1 << 30)
    size = (len(header) + (1 << 30)) & 0xFFFFFFFF
    bomb = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + stream + struct.pack("<II", crc, size)
    p = tmp_path / "train-labels-idx1-ubyte.gz"
    p.write_bytes(bomb)
    with Peak() as peak, pytest.raises(D.DatasetError, match="more") as ei:
        D.read_idx(p, ndim=1)
    _message_names(ei.value, p.name)
    assert peak.bytes < 8 * MB, f"{peak.bytes / MB:.0f} MiB inflated for a refused file"


def test_idx_header_declaring_gigabytes_refused_before_reading(tmp_path) -> None:
    for shape, limit in (((60000, 28, 28), 1000), ((1 << 16, 1 << 14, 4), None),
                         ((3000, 1000, 1000), D.idx.MAX_BYTES)):
        raw = struct.pack(">HBB3I", 0, 0x08, 3, *shape) + bytes(100)
        for data in (raw, gzip.compress(raw)):
            with Peak() as peak, pytest.raises(D.DatasetError) as ei:
                D.parse_idx(data, "huge.idx", max_bytes=limit)
            _message_names(ei.value, "huge.idx")
            assert peak.bytes < 4 * MB


def test_mnist_loader_refuses_more_images_than_mnist_has(tmp_path, monkeypatch) -> None:
    raw = struct.pack(">HBB3I", 0, 0x08, 3, 1_000_000, 28, 28)
    files = {"train-images-idx3-ubyte.gz": gzip.compress(raw + bytes(1000)),
             "train-labels-idx1-ubyte.gz": _idx(np.zeros(5, np.uint8))}
    (tmp_path / "mnist").mkdir()
    for k, v in files.items():
        (tmp_path / "mnist" / k).write_bytes(v)
    monkeypatch.setitem(_download.CHECKSUMS, "mnist",
                        {k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    with Peak() as peak, pytest.raises(D.DatasetError, match="train-images") as ei:
        D.load_mnist(tmp_path)
    assert "allowed" in str(ei.value) and peak.bytes < 8 * MB


# ============================================================================= CIFAR


def _batch(n: int = 2, protocol: int = 2, seed: int = 0) -> tuple[bytes, np.ndarray, list]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    d = {b"batch_label": b"fuzz", b"data": data, b"labels": labels,
         b"filenames": [b"f%d.png" % i for i in range(n)]}
    return pickle.dumps(d, protocol=protocol), data, labels


def _parse(raw: bytes, name: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    return cifar._parse_batch(raw, name, "labels", 10, 10_000)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_truncated_at_every_byte(protocol) -> None:
    raw, _, _ = _batch(1, protocol)
    for cut in range(len(raw)):
        with pytest.raises(D.DatasetError) as ei:
            _parse(raw[:cut], "cut_batch")
        _message_names(ei.value, "cut_batch")


@fuzz("cifar_flips")
@given(flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)),
                      min_size=1, max_size=3), protocol=st.sampled_from([2, 4, 5]))
def test_cifar_byte_flips(flips, protocol) -> None:
    raw = bytearray(_batch(2, protocol)[0])
    for pos, x in flips:
        raw[pos % len(raw)] ^= x
    with Peak() as peak:
        try:
            x, y = _parse(bytes(raw), "flip_batch")
        except D.DatasetError as exc:
            _message_names(exc, "flip_batch")
        else:  # pickles carry no checksum: a flipped pixel is undetectable, a bad shape is not
            assert x.dtype == np.uint8 and x.shape[1:] == (3, 32, 32)
            assert y.dtype == np.int64 and y.shape == (x.shape[0],)
            assert np.all((0 <= y) & (y < 10))
    assert peak.bytes < 4 * MB


_pyvalues = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.binary(max_size=20)
    | st.text(max_size=10)
    | st.builds(lambda n, dt: np.zeros(n, dt), st.integers(0, 5),
                st.sampled_from(["u1", "<i8", ">f4", "c8", "?"]))
    | st.builds(lambda n: np.zeros((n, 3072), np.uint8), st.integers(0, 2)),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.sampled_from([b"data", b"labels", "data", "labels", b"x"]), inner,
                      max_size=3),
    max_leaves=10,
)


@fuzz("cifar_objects")
@given(obj=_pyvalues, protocol=st.sampled_from([2, 3, 4, 5]))
def test_cifar_arbitrary_pickled_values(obj, protocol) -> None:
    try:
        _parse(pickle.dumps(obj, protocol=protocol), "obj_batch")
    except D.DatasetError as exc:
        _message_names(exc, "obj_batch")


_OPCODES = sorted({op.code.encode("latin1") for op in __import__("pickletools").opcodes})
_SEEDS = [pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [1]}, protocol=p)
          for p in (2, 4, 5)] + [pickle.dumps(np.arange(5), protocol=2)]


@fuzz("cifar_opcodes")
@given(seed=st.sampled_from(_SEEDS), edits=st.lists(st.tuples(
    st.sampled_from(["set", "insert_op", "delete", "splice"]), st.integers(0, 1 << 20),
    st.integers(0, 255), st.sampled_from(_OPCODES), st.binary(max_size=5)),
    min_size=1, max_size=4))
def test_cifar_pickle_opcode_mutations(seed, edits) -> None:
    """Structural mutations of pickles (opcodes inserted, bytes set, cut, spliced): the
    mutation that found NumPy's dtype.__setstate__ segfault."""
    s = bytearray(seed)
    for kind, pos, byte, op, arg in edits:
        pos %= len(s) or 1
        if kind == "set" and s:
            s[pos] = byte
        elif kind == "insert_op":
            s[pos:pos] = op + arg
        elif kind == "delete":
            del s[pos:pos + 1 + byte % 20]
        else:
            s[pos:pos] = s[byte % (len(s) or 1):][: 1 + byte % 50]
    with Peak() as peak:
        try:
            _parse(bytes(s), "op_batch")
        except D.DatasetError as exc:
            _message_names(exc, "op_batch")
    assert peak.bytes < 4 * MB


def _np_fn(name: str) -> Any:
    core = np._core if hasattr(np, "_core") else np.core
    return {"_reconstruct": core.multiarray._reconstruct, "scalar": core.multiarray.scalar,
            "_frombuffer": core.numeric._frombuffer}[name]


def _malicious_pickles() -> dict[str, bytes]:
    import codecs

    rec, u1 = _np_fn("_reconstruct"), np.dtype("u1")
    shared = [[0] * 1000] * 1000  # pickled once, referenced a million times
    return {
        "reduce_marker": pickle.dumps({b"data": _Evil(), b"labels": []}),
        "os_system": pickle.dumps({b"data": _EvilSystem(), b"labels": []}, protocol=2),
        "eval": pickle.dumps(_EvilEval(), protocol=4),
        # NumPy's allowed _reconstruct without state: uninitialised "images" (issue 17)
        "reconstruct_no_state": pickle.dumps(
            {b"data": _Reduce(rec, (np.ndarray, (0,), b"b")), b"labels": []}, protocol=2),
        "reconstruct_shape_no_state": pickle.dumps(
            {b"data": _Reduce(rec, (np.ndarray, (10_000, 3072), u1)),
             b"labels": [0] * 10}, protocol=2),
        # ~300 bytes declaring a 3 GB batch
        "declares_3GB": pickle.dumps(
            {b"data": _Reduce(rec, (np.ndarray, (0,), b"b"),
                              (1, (1_000_000, 3072), u1, False, b"")), b"labels": [0]},
            protocol=2),
        "ndarray_called": pickle.dumps(
            {b"data": _Reduce(np.ndarray, ((1_000_000, 3072), u1)), b"labels": []}),
        "frombuffer_short": pickle.dumps(
            {b"data": _Reduce(_np_fn("_frombuffer"),
                              (bytearray(10), u1, (1_000_000, 3072), "C")), b"labels": []}),
        "object_dtype": pickle.dumps(
            {b"data": np.array([_Evil()], dtype=object), b"labels": [0]}, protocol=2),
        "scalar_object": pickle.dumps(
            {b"data": _Reduce(_np_fn("scalar"), (np.dtype("O"), _Evil())), b"labels": []}),
        "void_dtype": pickle.dumps(
            {b"data": np.zeros(2, dtype="V3000000"), b"labels": [0, 0]}, protocol=2),
        "codec_hex_bomb": pickle.dumps(
            {b"data": _Reduce(codecs.encode, (_Reduce(codecs.encode, ("a" * 100, "hex")),
                                              "hex")), b"labels": []}, protocol=2),
        "codec_zlib": pickle.dumps({b"x": _Reduce(codecs.encode, (b"x" * 10, "zlib"))}),
        "labels_shared_lists": pickle.dumps(
            {b"data": np.zeros((1, 3072), np.uint8), b"labels": [shared] * 1000}),
        "memo_index_bomb": b"\x80\x04N" + b"r" + struct.pack("<I", 1 << 28) + b".",
        "persistent_id": b"\x80\x02X\x01\x00\x00\x00aQ.",
        "masked_array": pickle.dumps({b"data": np.ma.masked_array([1, 2]), b"labels": [0]}),
        "global_builtins_open": b"cbuiltins\nopen\n(X\x05\x00\x00\x00/etc/tR.",
        "deep_nesting": b"\x80\x02" + b"]" * 100_000 + b".",
    }


@pytest.mark.parametrize("kind", sorted(_malicious_pickles()))
def test_cifar_malicious_pickles_refused(tmp_path, kind) -> None:
    raw = _malicious_pickles()[kind]
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(raw)
    with Peak() as peak, pytest.raises(D.DatasetError) as ei:
        D.load_cifar10(tmp_path, train=False)
    _message_names(ei.value, "test_batch")
    assert peak.bytes < 16 * MB, f"{kind}: {peak.bytes / MB:.0f} MiB allocated"


def test_cifar_3gb_declaration_is_a_few_hundred_bytes() -> None:
    raw = _malicious_pickles()["declares_3GB"]
    assert len(raw) < 400
    with pytest.raises(D.DatasetError, match=r"3072000000 bytes"):
        _parse(raw)


def _targz(members: dict[str, bytes], declared: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    if not declared:
        return buf.getvalue()
    # forge the size field of a header (and its checksum) in the uncompressed tar
    tar_raw = bytearray(gzip.decompress(buf.getvalue()))
    for name, size in declared.items():
        at = tar_raw.find(f"cifar-10-batches-py/{name}".encode())
        tar_raw[at + 124:at + 136] = b"%011o\0" % size
        tar_raw[at + 148:at + 156] = b" " * 8
        tar_raw[at + 148:at + 156] = b"%06o\0 " % sum(tar_raw[at:at + 512])
    return gzip.compress(bytes(tar_raw))


def _cifar_archive(tmp_path: Path, blob: bytes, monkeypatch) -> None:
    (tmp_path / "cifar10").mkdir(exist_ok=True)
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(blob)
    monkeypatch.setitem(_download.CHECKSUMS, "cifar10",
                        {"cifar-10-python.tar.gz": hashlib.sha256(blob).hexdigest()})


def test_cifar_archive_member_declaring_3gb_refused_before_inflating(tmp_path, monkeypatch):
    raw, _, _ = _batch(1)
    blob = _targz({"test_batch": raw}, declared={"test_batch": 3 << 30})
    _cifar_archive(tmp_path, blob, monkeypatch)
    with Peak() as peak, pytest.raises(D.DatasetError, match="declares") as ei:
        D.load_cifar10(tmp_path, train=False)
    _message_names(ei.value, "cifar-10-python.tar.gz")
    assert peak.bytes < 8 * MB


def test_cifar_archive_gzip_bomb_stops_at_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "_MAX_ARCHIVE_BYTES", 32 * MB)
    blob = _targz({"readme.html": bytes(64 * MB), "test_batch": _batch(1)[0]})
    _cifar_archive(tmp_path, blob, monkeypatch)
    with Peak() as peak, pytest.raises(D.DatasetError, match="refused") as ei:
        D.load_cifar10(tmp_path, train=False)
    _message_names(ei.value, "cifar-10-python.tar.gz")
    assert peak.bytes < 8 * MB


def test_cifar_oversized_batch_file_refused_without_reading(tmp_path) -> None:
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    with open(folder / "test_batch", "wb") as f:
        f.truncate(cifar._max_bytes("test_batch") + 1)  # sparse: costs no disk
    with Peak() as peak, pytest.raises(D.DatasetError, match="refused without reading"):
        D.load_cifar10(tmp_path, train=False)
    assert peak.bytes < 8 * MB


@pytest.mark.parametrize("cut_frac", [0.1, 0.5, 0.9, 0.999])
def test_cifar_truncated_archive(tmp_path, monkeypatch, cut_frac) -> None:
    blob = _targz({"test_batch": _batch(3)[0]})
    blob = blob[: int(len(blob) * cut_frac)]
    _cifar_archive(tmp_path, blob, monkeypatch)
    with pytest.raises(D.DatasetError) as ei:
        D.load_cifar10(tmp_path, train=False)
    _message_names(ei.value, "cifar-10-python.tar.gz")


# ============================================================================= downloads


class _Server:
    """Serves one body on 127.0.0.1; ``length`` overrides Content-Length (None: omit it)."""

    def __init__(self) -> None:
        self.body, self.length = b"", None
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                if outer.length is not None:
                    self.send_header("Content-Length", str(outer.length))
                self.end_headers()
                try:
                    self.wfile.write(outer.body)
                except OSError:
                    pass
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def http_server():
    s = _Server()
    yield s
    s.close()


GOOD = _idx(IDX_ARRAY)


@fuzz("download")
@given(cut=st.integers(0, len(GOOD) - 1), flip=st.none() | st.tuples(
    st.integers(0, len(GOOD) - 1), st.integers(1, 255)), honest_length=st.booleans())
def test_download_truncated_or_corrupted_never_cached(http_server, tmp_path_factory, cut, flip,
                                                      honest_length) -> None:
    body = bytearray(GOOD if flip else GOOD[:cut])
    if flip:
        body[flip[0]] ^= flip[1]
    http_server.body = bytes(body)
    http_server.length = len(body) if honest_length else len(GOOD)
    folder = tmp_path_factory.mktemp("dl")
    dest = folder / "train-labels-idx1-ubyte.gz"
    with pytest.raises((D.ChecksumError, OSError)) as ei:
        D.download_file(f"{http_server.url}/x.gz", dest, hashlib.sha256(GOOD).hexdigest())
    assert "x.gz" in str(ei.value) or dest.name in str(ei.value)
    assert list(folder.iterdir()) == []  # nothing cached, no temporary file left
    # without a known checksum the gzip stream itself is checked
    try:
        D.download_file(f"{http_server.url}/x.gz", dest, None)
    except (D.DatasetError, OSError) as exc:
        assert "x.gz" in str(exc) or dest.name in str(exc)
        assert list(folder.iterdir()) == []
    else:  # only bytes gzip does not protect (its header's mtime/OS fields) were changed
        assert gzip.decompress(dest.read_bytes()) == gzip.decompress(GOOD)
        assert [p.name for p in folder.iterdir()] == [dest.name]


def test_download_larger_than_allowed_refused(http_server, tmp_path) -> None:
    http_server.body, http_server.length = bytes(5 * MB), None  # no Content-Length
    with pytest.raises(D.DownloadError, match="more than"):
        D.download_file(f"{http_server.url}/big", tmp_path / "big", None, max_bytes=MB)
    http_server.length = 5 * MB
    with pytest.raises(D.DownloadError, match="announces"):
        D.download_file(f"{http_server.url}/big", tmp_path / "big", None, max_bytes=MB)
    assert list(tmp_path.iterdir()) == []


def test_download_killed_leaves_part_file_removed_by_next_download(http_server,
                                                                   tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dest = tmp_path / "train-labels-idx1-ubyte.gz"
    orphan = tmp_path / f".{dest.name}.{dead.pid}.abcd_123.part"  # what kill -9 leaves
    orphan.write_bytes(GOOD[:10])
    live = tmp_path / f".{dest.name}.{os.getppid()}.live_123.part"  # a live writer's
    live.write_bytes(b"")
    http_server.body, http_server.length = GOOD, len(GOOD)
    D.download_file(f"{http_server.url}/x.gz", dest, hashlib.sha256(GOOD).hexdigest())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([dest.name, live.name])
    np.testing.assert_array_equal(D.read_idx(dest), IDX_ARRAY)
