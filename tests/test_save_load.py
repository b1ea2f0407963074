"""``gpucnn.save`` / ``gpucnn.load`` (issue 16): PyTorch-style files of state dicts and other
nested values, in the checkpoint format (atomic, checksummed, never a pickle)."""

from __future__ import annotations

import json
import math
import os
import zipfile

import numpy as np
import pytest

import gpucnn
from gpucnn import Parameter, Tensor, optim, saving
from gpucnn import backend as B
from gpucnn import layers as L
from gpucnn.saving import CheckpointError


def _model() -> gpucnn.Sequential:
    gpucnn.manual_seed(0)
    m = gpucnn.Sequential([L.Conv2D(3, 3, input_shape=(1, 6, 6)), L.BatchNormalization(),
                           L.Flatten(), L.Dense(2)])
    m.build((1, 6, 6))
    return m.to(B.current())


def _x(n: int = 4) -> Tensor:
    x = np.random.default_rng(1).standard_normal((n, 1, 6, 6)).astype(np.float32)
    return Tensor(x, backend=B.current())


def test_model_state_dict_round_trip(tmp_path) -> None:
    m = _model()
    m(_x())  # training mode: the batch-norm running statistics move
    sd = m.state_dict()
    path = tmp_path / "model.pt"
    gpucnn.save(sd, path)
    back = gpucnn.load(path)
    assert list(back) == list(sd)
    for k, v in sd.items():
        assert isinstance(back[k], np.ndarray) and back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)
    fresh = _model()
    fresh.load_state_dict(back)
    m.eval()
    fresh.eval()
    np.testing.assert_array_equal(fresh(_x()).numpy(), m(_x()).numpy())
    # the file is a plain zip of .npy members that NumPy reads without pickles
    with zipfile.ZipFile(path) as zf:
        assert all(n.endswith(".npy") for n in zf.namelist())
    with np.load(path, allow_pickle=False) as z:
        assert json.loads(str(z["__meta__"]))["kind"] == "object"


def test_optimizer_state_dict_round_trip_resumes_exactly(tmp_path) -> None:
    def step(m, opt) -> None:
        opt.zero_grad()
        gpucnn.functional.cross_entropy(m(_x()), np.array([0, 1, 1, 0])).backward()
        opt.step()

    m = _model()
    opt = optim.Adam(m.parameters(), lr=1e-2, amsgrad=True)
    for _ in range(2):
        step(m, opt)
    path = tmp_path / "ckpt"
    gpucnn.save({"model": m.state_dict(), "optimizer": opt.state_dict(), "epoch": 2}, path)
    ck = gpucnn.load(path)
    assert ck["epoch"] == 2 and set(ck) == {"model", "optimizer", "epoch"}
    assert sorted(ck["optimizer"]["state"]) == sorted(opt.state_dict()["state"])
    m2 = _model()
    m2.load_state_dict(ck["model"])
    opt2 = optim.Adam(m2.parameters(), lr=0.5)
    opt2.load_state_dict(ck["optimizer"])
    assert opt2.lr == pytest.approx(1e-2)
    step(m, opt)
    step(m2, opt2)
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_nested_values_keep_their_types(tmp_path) -> None:
    be = B.current()
    t = Tensor(np.arange(6, dtype=np.float64).reshape(2, 3), requires_grad=True, backend=be)
    p = Parameter(np.ones(3, np.float32))
    value = {
        "t": t, "p": p, "i": Tensor(np.array([1, 2], np.int64), backend=be),
        "array": np.arange(4, dtype=np.int16), "empty": np.zeros((0, 3), np.float32),
        "list": [1, 2.5, "s", None, True, [np.float32(0.5)]], "tuple": (1, (2, "x")),
        3: "int key", (1, "a"): "tuple key", None: 0, "nan": math.nan, "inf": -math.inf,
        "np_int": np.int64(2**40), "big": 2**70,
    }
    path = tmp_path / "v.gpucnn"
    gpucnn.save(value, path)
    back = gpucnn.load(path)
    assert set(back) == set(value)
    assert type(back["t"]) is Tensor and back["t"].requires_grad and back["t"].backend == be
    assert back["t"].dtype == np.float64 and back["t"].is_leaf
    np.testing.assert_array_equal(back["t"].numpy(), t.numpy())
    assert type(back["p"]) is Parameter and back["p"].requires_grad
    assert back["i"].dtype == np.int64 and not back["i"].requires_grad
    assert back["array"].dtype == np.int16 and back["empty"].shape == (0, 3)
    assert back["list"][:5] == [1, 2.5, "s", None, True]
    assert isinstance(back["list"][5][0], np.float32) and back["list"][5][0] == 0.5
    assert back["tuple"] == (1, (2, "x")) and back[3] == "int key"
    assert back[(1, "a")] == "tuple key" and back[None] == 0
    assert math.isnan(back["nan"]) and back["inf"] == -math.inf
    assert back["np_int"] == 2**40 and isinstance(back["np_int"], np.int64)
    assert back["big"] == 2**70
    back["t"].data[0, 0] = 99.0  # its own memory
    assert t.numpy()[0, 0] == 0.0
    gpucnn.save(t, path)  # a bare Tensor, and a bare list, work too
    assert gpucnn.load(path).shape == (2, 3)
    gpucnn.save([1, "a"], path)
    assert gpucnn.load(path) == [1, "a"]


def test_backend_and_map_location_choose_where_values_go(tmp_path) -> None:
    be = B.current()
    value = {"t": Tensor(np.ones(3, np.float32), backend=be), "a": np.zeros(2)}
    path = tmp_path / "m.npz"
    gpucnn.save(value, path)
    for kw in ({"backend": "cpu"}, {"map_location": "cpu"}, {"backend": "numpy"},
               {"map_location": gpucnn.Device("cpu")}):
        got = gpucnn.load(path, **kw)
        assert got["t"].backend == "numpy" and isinstance(got["a"], np.ndarray)
    got = gpucnn.load(path)  # default: where each was saved
    assert got["t"].backend == be and isinstance(got["a"], np.ndarray)
    if B.cuda_available():
        got = gpucnn.load(path, map_location="cuda")
        assert got["t"].backend == "cuda" and B.backend_of(got["a"]).name == "cuda"
        got = gpucnn.load(path, backend="gpu")
        assert got["t"].device == "cuda:0"
    with pytest.raises(TypeError, match="got both backend='cpu' and map_location='cpu'"):
        gpucnn.load(path, backend="cpu", map_location="cpu")
    with pytest.raises(ValueError, match="load: unknown backend 'tpu'"):
        gpucnn.load(path, backend="tpu")


def test_unsupported_values_are_refused_by_name(tmp_path) -> None:
    path = tmp_path / "bad.npz"
    for bad, kind in ((object(), "object"), ({1, 2}, "set"), ({"f": len}, "builtin_function"),
                      ({"x": np.array([None, 1], dtype=object)}, "dtype object"),
                      ({"x": np.ones(2, np.complex64)}, "dtype complex64"),
                      ({Tensor(np.ones(1)): 1}, "a dict keyed by a Tensor")):
        with pytest.raises((TypeError, ValueError), match=kind):
            gpucnn.save(bad, path)
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="nested more than 100 deep"):
        gpucnn.save(cyclic, path)
    assert not path.exists()


def test_a_failed_write_leaves_the_previous_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "sd.npz"
    gpucnn.save({"w": np.ones(3)}, path)

    def boom(f, entries) -> None:
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(saving, "_write_npz", boom)
    with pytest.raises(OSError, match="disk full"):
        gpucnn.save({"w": np.zeros(3)}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(gpucnn.load(path)["w"], np.ones(3))
    assert os.listdir(tmp_path) == ["sd.npz"]  # no temporary file left behind


def _rewrite(src, dst, edit_meta=None, edit_entries=None) -> None:
    """A copy of ``src`` with its metadata/entries edited and the checksum recomputed (a
    deliberately forged file)."""
    entries = dict(saving._read_entries(os.fspath(src)))
    meta = json.loads(str(entries["__meta__"]))
    if edit_meta is not None:
        meta = edit_meta(meta)
    if edit_entries is not None:
        edit_entries(entries)
    del entries["__sha256__"]
    entries["__meta__"] = np.array(json.dumps(meta))
    entries["__sha256__"] = np.array(saving._digest(entries))
    np.savez(dst, **entries)


def test_foreign_corrupt_and_tampered_files_are_checkpoint_errors(tmp_path) -> None:
    good = tmp_path / "good.npz"
    gpucnn.save({"w": Tensor(np.arange(4.0)), "n": 3}, good)
    # corrupt bytes: the checksum (or the zip's CRC) catches them
    raw = bytearray(good.read_bytes())
    off = raw.find(np.arange(4.0).tobytes())
    raw[off] ^= 0xFF
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="flipped.npz"):
        gpucnn.load(bad)
    # foreign files
    np.savez(tmp_path / "plain.npz", a=np.ones(2))
    with pytest.raises(CheckpointError, match="not a gpucnn checkpoint"):
        gpucnn.load(tmp_path / "plain.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CheckpointError, match="text.npz"):
        gpucnn.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        gpucnn.load(tmp_path / "missing.npz")

    def obj(value):
        def edit(meta):
            meta["object"] = value
            return meta
        return edit

    forged = {
        "missing_array": (obj({"__array__": "a/9"}), "missing array entry 'a/9'"),
        "bad_tensor": (obj({"__tensor__": {"__array__": "a/0"}, "requires_grad": "yes",
                            "parameter": False}), "bad encoded tensor"),
        "tensor_extra": (obj({"__tensor__": {"__array__": "a/0"}, "requires_grad": True,
                              "parameter": False, "code": "x"}), "bad encoded tensor"),
        "bad_backend": (obj({"__array__": "a/0", "backend": "tpu"}), "bad encoded array"),
        "unknown_tag": (obj({"__pickle__": "cos\nsystem"}), "unknown encoded entry"),
        "bad_scalar": (obj({"__scalar__": "|V8", "value": 1}), "bad encoded scalar"),
        "no_object": (lambda m: {k: v for k, v in m.items() if k != "object"},
                      "without its 'object' entry"),
        "deep": (obj(json.loads("[" * 150 + "]" * 150)), "nested more than 100 deep"),
    }
    for name, (edit, why) in forged.items():
        out = tmp_path / f"{name}.npz"
        _rewrite(good, out, edit_meta=edit)
        with pytest.raises(CheckpointError, match=rf"{name}\.npz: .*{why}"):
            gpucnn.load(out)


def test_model_checkpoints_and_object_files_are_not_mixed_up(tmp_path) -> None:
    m = _model()
    weights, full, obj = tmp_path / "w.npz", tmp_path / "m.npz", tmp_path / "o.npz"
    m.save_weights(weights)
    m.save(full)
    gpucnn.save(m.state_dict(), obj)
    for path in (weights, full):
        with pytest.raises(CheckpointError, match="not a value saved with gpucnn.save"):
            gpucnn.load(path)
    with pytest.raises(CheckpointError, match="read it with gpucnn.load"):
        gpucnn.load_model(obj)
    with pytest.raises(CheckpointError, match="model.load_state_dict"):
        m.load_weights(obj)
