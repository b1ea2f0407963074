"""Checkpoints: round trips, atomic writes, corruption detection, exact resume of training."""

from __future__ import annotations

import functools
import os
import zipfile

import numpy as np
import pytest

import gpucnn
import gpucnn.functional as F
from gpucnn import layers as L
from gpucnn import optim, saving
from gpucnn.model import Model, Sequential
from gpucnn.module import register_module
from gpucnn.saving import CheckpointError, load_model
from gpucnn.tensor import Tensor


def _data(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, 6, 6)).astype(np.float32)
    y = (x[:, 0, :3].sum(axis=(1, 2)) > x[:, 1, 3:].sum(axis=(1, 2))).astype(np.int64)
    return x, y


def _model() -> Sequential:
    m = Sequential([
        L.Conv2D(4, 3, padding="same", input_shape=(2, 6, 6)),
        L.BatchNormalization(),
        L.ReLU(),
        L.Flatten(),
        L.Dropout(0.3),
        L.Dense(16, activation="relu"),
        L.Dropout(0.2),
        L.Dense(2),
    ])
    return m


def test_round_trip_weights_optimizer_rng_epoch(tmp_path) -> None:
    x, y = _data()
    m = _model()
    m.compile(functools.partial(optim.Adam, lr=0.01), "sparse_categorical_crossentropy",
              ["accuracy"])
    m.fit(x, y, batch_size=32, epochs=2, verbose=0)
    path = tmp_path / "model.npz"
    m.save(path)
    rng_state = gpucnn.random.get_state()
    gpucnn.manual_seed(123)  # a different process state
    m2 = load_model(path)
    assert gpucnn.random.get_state() == rng_state
    assert m2.completed_epochs == 2
    assert isinstance(m2, Sequential) and [type(a) for a in m2] == [type(a) for a in m]
    for (k1, v1), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2
        np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))
    assert isinstance(m2.optimizer, optim.Adam) and m2.optimizer.lr == 0.01
    s1, s2 = m.optimizer.state_dict(), m2.optimizer.state_dict()
    assert s1["state"].keys() == s2["state"].keys()
    for i in s1["state"]:
        assert s1["state"][i]["step"] == s2["state"][i]["step"] == 6
        for k, v in s1["state"][i].items():
            np.testing.assert_array_equal(
                gpucnn.backend.to_numpy(v), gpucnn.backend.to_numpy(s2["state"][i][k])
            )
    assert m2.evaluate(x, y, return_dict=True) == m.evaluate(x, y, return_dict=True)


def test_resume_equals_uninterrupted(tmp_path) -> None:
    """Same seed: N epochs straight == k epochs, save, load_model, continue to N."""
    x, y = _data(80)

    def fresh() -> Sequential:
        gpucnn.manual_seed(7)
        m = _model()
        m.compile(functools.partial(optim.SGD, lr=0.05, momentum=0.9), "sparse_categorical_"
                  "crossentropy", ["accuracy"])
        return m

    a = fresh()
    ha = a.fit(x, y, batch_size=16, epochs=3, verbose=0, validation_split=0.25)

    b = fresh()
    b.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_split=0.25)
    b.save(tmp_path / "ck.npz")
    del b
    gpucnn.manual_seed(999)  # the new process would start from another RNG state
    _ = gpucnn.randn(5)
    c = load_model(tmp_path / "ck.npz")
    hc = c.fit(x, y, batch_size=16, epochs=3, initial_epoch=c.completed_epochs, verbose=0,
               validation_split=0.25)
    for (k, va), vc in zip(a.state_dict().items(), c.state_dict().values()):
        np.testing.assert_array_equal(va, vc, err_msg=k)
    assert hc.epoch == [1, 2]
    assert hc.history["loss"] == ha.history["loss"][1:]


def test_resume_is_sensitive_to_rng_state(tmp_path) -> None:
    """Control for the test above: without restoring the RNG state the runs differ."""
    x, y = _data(80)
    gpucnn.manual_seed(7)
    a = _model()
    a.compile("sgd", "sparse_categorical_crossentropy", lr=0.05)
    a.fit(x, y, batch_size=16, epochs=2, verbose=0)
    gpucnn.manual_seed(7)
    b = _model()
    b.compile("sgd", "sparse_categorical_crossentropy", lr=0.05)
    b.fit(x, y, batch_size=16, epochs=1, verbose=0)
    b.save(tmp_path / "ck.npz")
    gpucnn.manual_seed(999)
    c = load_model(tmp_path / "ck.npz", restore_rng=False)
    c.fit(x, y, batch_size=16, epochs=2, initial_epoch=1, verbose=0)
    diffs = [not np.array_equal(u, v) for u, v in zip(a.get_weights(), c.get_weights())]
    assert any(diffs)


def test_atomic_write_survives_crash(tmp_path, monkeypatch) -> None:
    x, y = _data(32)
    m = _model()
    m.compile("sgd", "sparse_categorical_crossentropy", lr=0.1)
    path = tmp_path / "ck.npz"
    m.save(path)
    before = m.predict(x)
    m.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(m.predict(x), before)

    def crash(f, entries):
        f.write(b"PK\x03\x04 partial archive")
        f.flush()
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(saving, "_write_npz", crash)
    with pytest.raises(OSError, match="simulated"):
        m.save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ck.npz"]  # temporary file cleaned up
    np.testing.assert_array_equal(load_model(path).predict(x), before)  # previous checkpoint


def test_truncated_and_corrupt_files_raise(tmp_path) -> None:
    m = _model()
    path = tmp_path / "ck.npz"
    m.save_weights(path)
    raw = path.read_bytes()
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="trunc.npz"):
        load_model(trunc)
    flipped = bytearray(raw)
    flipped[len(raw) // 3] ^= 0xFF
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="flipped.npz"):
        m.load_weights(bad)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError, match="junk.npz"):
        m.load_weights(junk)
    with pytest.raises(FileNotFoundError):
        m.load_weights(tmp_path / "missing.npz")


def test_checksum_catches_consistent_zip_with_changed_payload(tmp_path) -> None:
    m = _model()
    path = tmp_path / "ck.npz"
    m.save_weights(path)
    with np.load(path) as z:
        entries = {k: z[k] for k in z.files}
    entries["w/0.weight"] = entries["w/0.weight"] + 1  # a valid zip, stale checksum
    tampered = tmp_path / "tampered.npz"
    np.savez(tampered, **entries)
    with zipfile.ZipFile(tampered) as zf:
        assert zf.testzip() is None
    with pytest.raises(CheckpointError, match="tampered.npz: checksum mismatch"):
        m.load_weights(tampered)


def test_weights_only_round_trip_and_kind_check(tmp_path) -> None:
    x, _ = _data(8)
    m = _model()
    path = tmp_path / "w.npz"
    m.save_weights(path)
    with pytest.raises(CheckpointError, match="weights only"):
        load_model(path)
    m2 = Sequential(_model().layers[:0])
    for layer in _model():
        m2.add(layer)
    m2.load_weights(path)
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))
    other = Sequential([L.Dense(3, input_shape=(5,))])
    with pytest.raises(KeyError, match="w.npz"):
        other.load_weights(path)


def test_lazily_built_model_saves_its_input_shape(tmp_path) -> None:
    x, y = _data(16)
    m = Sequential([L.Conv2D(3, 3), L.Flatten(), L.Dense(2)])
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=1, verbose=0)
    m.save(tmp_path / "lazy.npz")
    m2 = load_model(tmp_path / "lazy.npz")
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))


@register_module
class TwoPath(Model):
    def __init__(self, width: int = 4, name: str | None = None) -> None:
        super().__init__(name=name)
        self.width = width
        self.a = L.Dense(width)
        self.b = L.Dense(width)
        self.head = L.Dense(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.relu(self.a(x)) + self.b(x))

    def get_config(self) -> dict:
        return {"width": self.width, "name": self.name}


class Unregistered(Model):
    def __init__(self) -> None:
        super().__init__()
        self.d = L.Dense(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.d(x)


def test_custom_registered_module_and_blocks(tmp_path) -> None:
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    m = TwoPath(6)
    m.compile("rmsprop", "sparse_categorical_crossentropy")
    m.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    m.save(tmp_path / "c.npz")
    m2 = load_model(tmp_path / "c.npz")
    assert isinstance(m2, TwoPath) and m2.width == 6
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))

    xi = np.random.default_rng(2).normal(size=(2, 3, 8, 8)).astype(np.float32)
    net = Sequential([L.ResidualBlock(4, strides=2, input_shape=(3, 8, 8)),
                      L.InceptionBlock(2, 2, 3, 1, 2, 2), L.GlobalAveragePooling2D(), L.Dense(3)])
    net.save(tmp_path / "blocks.npz")
    net2 = load_model(tmp_path / "blocks.npz")
    assert net2.state_dict().keys() == net.state_dict().keys()
    np.testing.assert_array_equal(net2.predict(xi), net.predict(xi))

    u = Unregistered()
    u(Tensor(x))
    with pytest.raises(ValueError, match="register_module"):
        u.save(tmp_path / "u.npz")
    u.save_weights(tmp_path / "u.npz")  # weights still work
    u2 = Unregistered()
    u2.build((5,))
    u2.load_weights(tmp_path / "u.npz")
    np.testing.assert_array_equal(u2.predict(x), u.predict(x))


def test_encode_decode_preserves_types() -> None:
    arrays: dict = {}
    value = {0: {"step": 3, "m": np.arange(3.0)}, "t": (0.9, 0.999), "n": None,
             "s": np.float32(2.5)}
    enc = saving._encode(value, arrays, "o/")
    back = saving._decode(enc, arrays)
    assert back[0]["step"] == 3 and back["t"] == (0.9, 0.999) and back["n"] is None
    assert isinstance(back["s"], np.float32)
    np.testing.assert_array_equal(back[0]["m"], np.arange(3.0))


@pytest.mark.gpu
def test_load_on_cuda_backend(tmp_path) -> None:
    x, y = _data(32)
    m = _model()
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=1, verbose=0)
    m.save(tmp_path / "ck.npz")
    mc = load_model(tmp_path / "ck.npz", backend="cuda")
    assert all(p.backend == "cuda" for p in mc.parameters())
    np.testing.assert_allclose(mc.predict(x), m.predict(x), rtol=1e-4, atol=1e-5)
    mc.fit(x, y, epochs=1, verbose=0)  # the optimizer state moved with it
    mc.save(tmp_path / "from_cuda.npz")
    mn = load_model(tmp_path / "from_cuda.npz", backend="numpy")
    np.testing.assert_allclose(mn.predict(x), mc.predict(x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------- issue 17: no silent wrong answer


def _tamper(path, out, edit_meta=None, edit_entries=None) -> None:
    """Rewrite a checkpoint with changed metadata/arrays and a *recomputed* checksum."""
    import json

    with np.load(path) as z:
        entries = {k: z[k] for k in z.files}
    meta = json.loads(str(entries["__meta__"]))
    if edit_meta is not None:
        meta = edit_meta(meta)
    if edit_entries is not None:
        edit_entries(entries)
    del entries["__sha256__"]
    entries["__meta__"] = np.array(json.dumps(meta))
    entries["__sha256__"] = np.array(saving._digest(entries))
    np.savez(out, **entries)


def _set(key, value):
    def edit(meta):
        meta[key] = value
        return meta
    return edit


def test_tampered_checkpoint_with_recomputed_checksum_is_a_checkpoint_error(tmp_path) -> None:
    """Each of these ended in a bare KeyError/AttributeError/ValueError before (issue 17)."""
    x, y = _data(16)
    m = _model()
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=1, verbose=0)
    good = tmp_path / "good.npz"
    m.save(good)

    def drop_weight(entries):
        del entries["w/0.weight"]

    def drop_moment(entries):
        del entries["o/0"]

    def shrink_weight(entries):
        entries["w/0.weight"] = entries["w/0.weight"][:1]

    def optimizer_garbage(meta):
        meta["optimizer"]["state"] = {"__dict__": [[{"__array__": "o/0"}, 1]]}
        return meta

    cases = {
        "missing_weight": (None, drop_weight, "no entry w/0.weight"),
        "missing_moment": (None, drop_moment, "optimizer.*missing array entry 'o/0'"),
        "wrong_shape": (None, shrink_weight, "weights do not match the architecture"),
        "meta_list": (lambda meta: [meta], None, "expected a JSON object"),
        "version_text": (_set("version", "one"), None, "version 'one'"),
        "kind": (_set("kind", "pickle"), None, "kind 'pickle'"),
        "weights_int": (_set("weights", 5), None, "'weights' is not a list"),
        "epoch": (_set("epoch", "3"), None, "epoch '3'"),
        "shape": (_set("build_input_shape", [2, -6, 6]), None, "build_input_shape"),
        "huge_shape": (_set("build_input_shape", [60000, 60000, 60000]), None,
                       "build_input_shape"),
        "architecture": (_set("architecture", {"class_name": "Nope"}), None, "architecture"),
        "compile": (_set("compile", {"loss": "no_such_loss"}), None, "re-compile"),
        "optimizer_keys": (optimizer_garbage, None, "optimizer"),
        "rng": (_set("random_state", {"numpy": 5}), None, "RNG state"),
    }
    for name, (edit_meta, edit_entries, why) in cases.items():
        out = tmp_path / f"{name}.npz"
        _tamper(good, out, edit_meta, edit_entries)
        rng_before = gpucnn.random.get_state()
        with pytest.raises(CheckpointError, match=rf"{name}\.npz: .*{why}"):
            load_model(out)
        assert gpucnn.random.get_state() == rng_before, name  # never half-restored


def test_compressed_checkpoint_member_refused_before_inflating(tmp_path) -> None:
    """A deflate bomb: a compressed member declaring far more than the file holds."""
    import tracemalloc

    m = _model()
    path = tmp_path / "ck.npz"
    m.save_weights(path)
    with np.load(path) as z:
        entries = {k: z[k] for k in z.files}
    entries["w/0.weight"] = np.zeros(1 << 26, np.float32)  # 256 MiB of zeros
    del entries["__sha256__"]
    entries["__sha256__"] = np.array(saving._digest(entries))
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, **entries)
    assert bomb.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="bomb.npz: member .* is compressed"):
            m.load_weights(bomb)
        assert tracemalloc.get_traced_memory()[1] < 16 << 20
    finally:
        tracemalloc.stop()


def test_next_save_removes_orphaned_temporary_files(tmp_path) -> None:
    import subprocess
    import sys
    import time

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "ck.npz"
    orphan = tmp_path / f".ck.npz.{dead.pid}.abcd1234.tmp"  # a writer killed with SIGKILL
    legacy = tmp_path / ".ck.npz.x1y2z3w4.tmp"  # an older gpucnn's name (no pid)
    stale = tmp_path / f".ck.npz.{os.getppid()}.old_0000.tmp"  # pid alive, untouched for 2 h
    live = tmp_path / f".ck.npz.{os.getppid()}.live0000.tmp"  # a live writer's, recent
    other = tmp_path / f".ck.npz.npz.{dead.pid}.abcd1234.tmp"  # ck.npz.npz's, not ours
    for p in (orphan, legacy, stale, live, other):
        p.write_bytes(b"half a checkpoint")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    _model().save_weights(path)
    assert sorted(os.listdir(tmp_path)) == sorted(["ck.npz", live.name, other.name])
    _model().load_weights(path)


def test_tampered_architecture_cannot_allocate_more_than_the_file_holds(tmp_path) -> None:
    """A checkpoint whose architecture asks for far larger weights (checksum recomputed) is
    refused before those weights are allocated, naming the layer and the file."""
    import json
    import tracemalloc

    from gpucnn.layers.base import weight_budget

    good = tmp_path / "good.npz"
    _model().save(good)

    def bigger(meta):
        arch = json.dumps(meta["architecture"])
        units = json.dumps(meta["architecture"]).count('"units"')
        assert units, arch
        meta["architecture"] = json.loads(arch.replace('"units": ', '"units": 1000000', 1))
        return meta

    out = tmp_path / "big.npz"
    _tamper(good, out, bigger, None)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"big\.npz.*Dense.*needs \d+ bytes, more than"):
            load_model(out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak
    load_model(good)  # the budget is what the file holds: the genuine model still loads
    with weight_budget(16, "a test"):
        with pytest.raises(ValueError, match="Dense layer .*more than a test holds"):
            L.Dense(8).build((3,))
