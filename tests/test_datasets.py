"""Dataset loaders, verified downloads (from a local HTTP server), the embedded sample, splits."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import pickle
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from gpucnn import datasets as D
from gpucnn.datasets import _download

# ----------------------------------------------------------------------------- helpers


def _idx_bytes(arr: np.ndarray) -> bytes:
    """IDX bytes built by hand (independent of gpucnn's writer)."""
    import struct

    buf = io.BytesIO()
    code = {np.uint8: 0x08}[arr.dtype.type]
    buf.write(struct.pack(f">HBB{arr.ndim}I", 0, code, arr.ndim, *arr.shape))
    buf.write(arr.tobytes())
    return gzip.compress(buf.getvalue(), mtime=0)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _mnist_files(n: int = 12, seed: int = 0) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    files = {
        "train-images-idx3-ubyte.gz": _idx_bytes(images),
        "train-labels-idx1-ubyte.gz": _idx_bytes(labels),
        "t10k-images-idx3-ubyte.gz": _idx_bytes(images[:5]),
        "t10k-labels-idx1-ubyte.gz": _idx_bytes(labels[:5]),
    }
    return files, images, labels


class _Server:
    """A static HTTP server on 127.0.0.1 (port 0) in a thread, serving a dict of files."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.hits: list[str] = []
        self.truncate: set[str] = set()  # names sent half-way under a full Content-Length
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                outer.hits.append(self.path)
                body = outer.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in outer.truncate:
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    servers: list[_Server] = []

    def make(files: dict[str, bytes]) -> _Server:
        s = _Server(files)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def patch_tables(monkeypatch):
    """Point a dataset's mirrors at a URL and its checksum table at the given files."""

    def apply(dataset: str, url: str, files: dict[str, bytes]) -> None:
        monkeypatch.setitem(_download.MIRRORS, dataset, [url])
        monkeypatch.setitem(_download.CHECKSUMS, dataset, {k: _sha(v) for k, v in files.items()})

    monkeypatch.delenv("GPUCNN_DATASET_MIRROR", raising=False)
    monkeypatch.delenv("GPUCNN_DATA_DIR", raising=False)
    return apply


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- embedded sample


def test_mnist_sample_shapes_and_balance():
    x, y = D.mnist_sample()
    assert x.shape == (5000, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (5000,) and y.dtype == np.int64
    assert 0.0 == x.min() and x.max() == 1.0
    assert np.array_equal(np.bincount(y), np.full(10, 500))
    xu, yu = D.mnist_sample(normalize=False)
    assert xu.dtype == np.uint8 and np.allclose(xu / 255.0, x)
    xu[0] = 0  # a fresh, writable array: the cache is not touched
    assert D.mnist_sample(normalize=False)[0][0].max() > 0


def test_sample_matches_shared_file_bytes():
    shared = Path("/work/shared/data/mnist5k/images-idx3-ubyte.gz")
    if not shared.exists():
        pytest.skip("shared copy not present")
    ref = np.frombuffer(gzip.decompress(shared.read_bytes())[16:], np.uint8).reshape(-1, 28, 28)
    assert np.array_equal(D.mnist_sample(normalize=False)[0][:, 0], ref)


# ----------------------------------------------------------------------------- IDX parsing


def test_write_read_idx_roundtrip(tmp_path):
    for dt in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
        a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dt)
        for name in ("a.idx", "a.idx.gz"):
            D.write_idx(tmp_path / name, a)
            b = D.read_idx(tmp_path / name)
            assert b.dtype == a.dtype and np.array_equal(a, b)


def test_idx_bad_magic(tmp_path):
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(b"\x12\x34\x08\x01" + b"\x00" * 12))
    with pytest.raises(D.DatasetError, match=r"bad\.gz.*magic"):
        D.read_idx(p)


def test_idx_wrong_ndim(tmp_path):
    p = tmp_path / "labels.gz"
    D.write_idx(p, np.zeros(5, np.uint8))
    with pytest.raises(D.DatasetError, match=r"labels\.gz.*3 dimensions"):
        D.read_idx(p, ndim=3)


def test_idx_size_mismatch(tmp_path):
    p = tmp_path / "short.gz"
    raw = gzip.decompress(_idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    p.write_bytes(gzip.compress(raw[:-7]))
    with pytest.raises(D.DatasetError, match=r"short\.gz.*size does not match.*2352.*2345"):
        D.read_idx(p)


def test_idx_truncated_gzip(tmp_path):
    p = tmp_path / "trunc.gz"
    p.write_bytes(_idx_bytes(np.arange(5000, dtype=np.uint32).astype(np.uint8))[:-30])
    with pytest.raises(D.DatasetError, match=r"trunc\.gz.*truncated"):
        D.read_idx(p)


# ------------------------------------------------------------------------ MNIST from disk / HTTP


def test_load_mnist_from_folder(tmp_path, patch_tables):
    files, images, labels = _mnist_files()
    (tmp_path / "mnist").mkdir()
    for k, v in files.items():
        (tmp_path / "mnist" / k).write_bytes(v)
    patch_tables("mnist", "http://unused.invalid", files)
    x, y = D.load_mnist(tmp_path)
    assert x.shape == (12, 1, 28, 28) and x.dtype == np.float32
    assert np.allclose(x[:, 0] * 255, images) and np.array_equal(y, labels)
    xt, yt = D.load_mnist(tmp_path, train=False, normalize=False)
    assert xt.dtype == np.uint8 and np.array_equal(xt[:, 0], images[:5])


def test_load_mnist_env_dir(tmp_path, patch_tables, monkeypatch):
    files, images, _ = _mnist_files()
    for k, v in files.items():  # directly under the cache dir is accepted too
        (tmp_path / k).write_bytes(v)
    patch_tables("fashion_mnist", "http://unused.invalid", files)
    monkeypatch.setenv("GPUCNN_DATA_DIR", str(tmp_path))
    x, _ = D.load_fashion_mnist(normalize=False)
    assert np.array_equal(x[:, 0], images)


def test_missing_files_message(tmp_path, patch_tables):
    patch_tables("mnist", "http://unused.invalid", _mnist_files()[0])
    with pytest.raises(D.DatasetNotFoundError) as ei:
        D.load_mnist(tmp_path)
    msg = str(ei.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "mnist") in msg
    assert "download=True" in msg


def test_download_mnist_from_local_server(tmp_path, server, patch_tables):
    files, images, labels = _mnist_files()
    srv = server(files)
    patch_tables("mnist", srv.url, files)
    x, y = D.load_mnist(tmp_path, download=True)
    assert np.array_equal(y, labels) and np.allclose(x[:, 0] * 255, images)
    assert _leftovers(tmp_path) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    n = len(srv.hits)
    D.load_mnist(tmp_path, download=True)  # cached: no new request
    assert len(srv.hits) == n


def test_env_mirror_tried_first(tmp_path, server, patch_tables, monkeypatch):
    files, _, labels = _mnist_files()
    srv = server(files)
    patch_tables("mnist", f"http://127.0.0.1:{_closed_port()}", files)
    monkeypatch.setenv("GPUCNN_DATASET_MIRROR", srv.url)
    _, y = D.load_mnist(tmp_path, train=False, download=True)
    assert np.array_equal(y, labels[:5])


def test_second_mirror_used_after_404(tmp_path, server, monkeypatch, patch_tables):
    files, _, labels = _mnist_files()
    empty, good = server({}), server(files)
    patch_tables("mnist", "x", files)
    monkeypatch.setitem(_download.MIRRORS, "mnist", [empty.url, good.url])
    _, y = D.load_mnist(tmp_path, download=True)
    assert np.array_equal(y, labels) and empty.hits and good.hits


def test_checksum_mismatch_leaves_nothing(tmp_path, server, patch_tables, monkeypatch):
    files, _, _ = _mnist_files()
    srv = server(files)
    patch_tables("mnist", srv.url, files)
    monkeypatch.setitem(
        _download.CHECKSUMS["mnist"], "train-images-idx3-ubyte.gz", "0" * 64
    )
    with pytest.raises(D.ChecksumError, match="train-images-idx3-ubyte.gz.*expected sha256 0+"):
        D.load_mnist(tmp_path, download=True)
    assert _leftovers(tmp_path) == []


def test_checksum_mismatch_on_disk(tmp_path, patch_tables):
    files, _, _ = _mnist_files()
    patch_tables("mnist", "http://unused.invalid", files)
    (tmp_path / "mnist").mkdir()
    for k, v in files.items():
        (tmp_path / "mnist" / k).write_bytes(v)
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    with pytest.raises(D.ChecksumError, match="train-labels-idx1-ubyte.gz"):
        D.load_mnist(tmp_path)


def test_interrupted_transfer_leaves_nothing(tmp_path, server, patch_tables):
    files, _, _ = _mnist_files()
    srv = server(files)
    srv.truncate.add("train-images-idx3-ubyte.gz")
    patch_tables("mnist", srv.url, files)
    with pytest.raises(D.DownloadError, match=r"train-images.*(incomplete|IncompleteRead)"):
        D.load_mnist(tmp_path, download=True)
    assert _leftovers(tmp_path) == []


def test_keyboard_interrupt_removes_temp_file(tmp_path, server, monkeypatch):
    files, _, _ = _mnist_files()
    srv = server(files)
    calls = {"n": 0}
    real_urlopen = _download.urllib.request.urlopen

    class Boom:
        def __init__(self, resp):
            self.resp, self.headers = resp, resp.headers

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.resp.close()

        def read(self, n):
            calls["n"] += 1
            if calls["n"] > 1:
                raise KeyboardInterrupt
            return self.resp.read(10)

    monkeypatch.setattr(
        _download.urllib.request, "urlopen", lambda url, timeout: Boom(real_urlopen(url))
    )
    with pytest.raises(KeyboardInterrupt):
        D.download_file(f"{srv.url}/train-images-idx3-ubyte.gz", tmp_path / "f.gz", None)
    assert _leftovers(tmp_path) == []


def test_offline_error_is_clear(tmp_path, patch_tables):
    files, _, _ = _mnist_files()
    patch_tables("mnist", f"http://127.0.0.1:{_closed_port()}", files)
    with pytest.raises(D.DownloadError) as ei:
        D.load_mnist(tmp_path, download=True)
    msg = str(ei.value)
    assert "no network" in msg and str(tmp_path / "mnist") in msg
    assert "train-images-idx3-ubyte.gz" in msg and "refused" in msg.lower()
    assert _leftovers(tmp_path) == []


def test_dns_failure_is_clear(tmp_path, patch_tables):
    files, _, _ = _mnist_files()
    patch_tables("mnist", "http://gpucnn-no-such-host.invalid", files)
    with pytest.raises(D.DownloadError, match="no network"):
        D.load_mnist(tmp_path, download=True)


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("GPUCNN_DATA_DIR", raising=False)
    assert D.cache_dir() == Path.home() / ".cache" / "gpucnn"
    monkeypatch.setenv("GPUCNN_DATA_DIR", str(tmp_path))
    assert D.cache_dir() == tmp_path
    assert D.cache_dir(tmp_path / "x") == tmp_path / "x"


def test_real_checksum_table_is_well_formed():
    for name, files in _download.CHECKSUMS.items():
        assert name in _download.MIRRORS
        for digest in files.values():
            assert len(digest) == 64 and int(digest, 16) >= 0


# ----------------------------------------------------------------------------- CIFAR


def _cifar_batch(n: int, seed: int, label_keys: tuple = (b"labels",), protocol: int = 2
                 ) -> tuple[bytes, np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    d: dict = {b"batch_label": b"testing batch", b"data": data,
               b"filenames": [b"img%d.png" % i for i in range(n)]}
    labels = {}
    classes = {b"labels": 10, b"fine_labels": 100, b"coarse_labels": 20}
    for k in label_keys:
        labels[k] = [int(v) for v in rng.integers(0, classes.get(k, 100), size=n)]
        d[k] = labels[k]
    return pickle.dumps(d, protocol=protocol), data, labels


def _cifar10_members(seed: int = 0) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    members, xs, ys = {}, [], []
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        raw, data, labels = _cifar_batch(4, seed + i, protocol=2 if i % 2 else 4)
        members[name] = raw
        xs.append(data)
        ys.append(labels[b"labels"])
    return members, np.concatenate(xs), np.concatenate(ys)


def _targz(folder: str, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def test_cifar10_from_extracted_folder(tmp_path):
    members, xs, ys = _cifar10_members()
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for k, v in members.items():
        (folder / k).write_bytes(v)
    x, y = D.load_cifar10(tmp_path)
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.allclose(x * 255, xs[:20].reshape(20, 3, 32, 32)) and np.array_equal(y, ys[:20])
    xt, yt = D.load_cifar10(tmp_path, train=False, normalize=False)
    assert xt.dtype == np.uint8 and np.array_equal(xt.reshape(4, -1), xs[20:])


def test_cifar10_download_targz(tmp_path, server, patch_tables):
    members, xs, ys = _cifar10_members(3)
    archive = {"cifar-10-python.tar.gz": _targz("cifar-10-batches-py", members)}
    srv = server(archive)
    patch_tables("cifar10", srv.url, archive)
    x, y = D.load_cifar10(tmp_path, download=True, normalize=False)
    assert np.array_equal(x.reshape(20, -1), xs[:20]) and np.array_equal(y, ys[:20])
    assert _leftovers(tmp_path) == ["cifar-10-python.tar.gz"]


def test_cifar100_fine_and_coarse(tmp_path, patch_tables):
    tr, data, labels = _cifar_batch(6, 1, (b"fine_labels", b"coarse_labels"))
    te, _, _ = _cifar_batch(3, 2, (b"fine_labels", b"coarse_labels"))
    archive = {"cifar-100-python.tar.gz": _targz("cifar-100-python", {"train": tr, "test": te})}
    (tmp_path / "cifar100").mkdir()
    (tmp_path / "cifar100" / "cifar-100-python.tar.gz").write_bytes(
        archive["cifar-100-python.tar.gz"]
    )
    patch_tables("cifar100", "http://unused.invalid", archive)
    x, y = D.load_cifar100(tmp_path)
    assert x.shape == (6, 3, 32, 32) and np.array_equal(y, labels[b"fine_labels"])
    _, yc = D.load_cifar100(tmp_path, label_mode="coarse")
    assert np.array_equal(yc, labels[b"coarse_labels"])
    with pytest.raises(ValueError, match="label_mode"):
        D.load_cifar100(tmp_path, label_mode="medium")


def test_cifar_missing_key(tmp_path):
    raw, _, _ = _cifar_batch(2, 0, (b"fine_labels",))
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(raw)
    with pytest.raises(D.DatasetError, match=r"test_batch.*missing key 'labels'"):
        D.load_cifar10(tmp_path, train=False)


def test_cifar_wrong_shape(tmp_path):
    d = {b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(pickle.dumps(d))
    with pytest.raises(D.DatasetError, match=r"test_batch.*\(N, 3072\).*\(2, 3000\)"):
        D.load_cifar10(tmp_path, train=False)
    d = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]}
    (folder / "test_batch").write_bytes(pickle.dumps(d))
    with pytest.raises(D.DatasetError, match=r"'labels' has shape \(3,\), expected \(2,\)"):
        D.load_cifar10(tmp_path, train=False)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar_refuses_arbitrary_globals(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(D.DatasetError, match=r"test_batch.*refused to load global"):
        D.load_cifar10(tmp_path, train=False)
    with pytest.raises(D.DatasetError, match="not a dict|refused|not a valid"):
        D.safe_unpickle(pickle.dumps(print), "x")


def test_cifar_truncated_archive(tmp_path, patch_tables):
    members, _, _ = _cifar10_members()
    blob = _targz("cifar-10-batches-py", members)[:-200]
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(blob)
    patch_tables("cifar10", "http://unused.invalid", {"cifar-10-python.tar.gz": blob})
    with pytest.raises(D.DatasetError, match=r"cifar-10-python.tar.gz.*(corrupt|truncated)"):
        D.load_cifar10(tmp_path)


def test_cifar_missing_everything(tmp_path):
    pattern = r"(?s)cifar-10-python.tar.gz.*cifar-10-batches"
    with pytest.raises(D.DatasetNotFoundError, match=pattern):
        D.load_cifar10(tmp_path)


# ----------------------------------------------------------------------------- splits


def test_train_test_split_partition():
    x = np.arange(100)
    y = x % 3
    xtr, xte, ytr, yte = D.train_test_split(x, y, test_size=0.25, seed=1)
    assert len(xte) == 25 and len(xtr) == 75
    assert np.array_equal(np.sort(np.concatenate([xtr, xte])), x)
    assert np.array_equal(ytr, xtr % 3) and np.array_equal(yte, xte % 3)
    again = D.train_test_split(x, y, test_size=0.25, seed=1)
    assert np.array_equal(again[1], xte)
    assert not np.array_equal(D.train_test_split(x, y, test_size=0.25, seed=2)[1], xte)
    assert len(D.train_test_split(x, y, test_size=10, seed=1)[1]) == 10


def test_stratified_split_preserves_proportions():
    y = np.repeat(np.arange(4), [40, 30, 20, 10])
    x = np.arange(100)
    _, xte, _, yte = D.train_test_split(x, y, test_size=0.2, seed=0, stratify=True)
    assert np.array_equal(np.bincount(yte, minlength=4), [8, 6, 4, 2])
    # 7 of 100: largest remainders decide; counts sum exactly to 7
    _, _, _, yte = D.train_test_split(x, y, test_size=7, seed=0, stratify=True)
    assert len(yte) == 7 and np.all(np.abs(np.bincount(yte, minlength=4) - [2.8, 2.1, 1.4, .7])
                                     < 1)


def test_train_dev_test_split():
    x, y = D.mnist_sample(normalize=False)
    out = D.train_dev_test_split(x, y, dev_size=0.1, test_size=0.2, seed=3, stratify=True)
    xtr, xdv, xte, ytr, ydv, yte = out
    assert (len(xtr), len(xdv), len(xte)) == (3500, 500, 1000)
    assert np.array_equal(np.bincount(ydv), np.full(10, 50))
    assert np.array_equal(np.bincount(yte), np.full(10, 100))
    flat = np.concatenate([xtr, xdv, xte]).reshape(5000, -1)
    assert len(np.unique(flat, axis=0)) == len(np.unique(x.reshape(5000, -1), axis=0))


def test_split_bad_sizes():
    x = np.arange(10)
    with pytest.raises(ValueError, match="test_size"):
        D.train_test_split(x, x, test_size=1.5)
    with pytest.raises(ValueError, match="test_size"):
        D.train_test_split(x, x, test_size=10)
    with pytest.raises(ValueError, match="y has 9"):
        D.train_test_split(x, x[:9])
    with pytest.raises(ValueError, match="leave no training"):
        D.train_dev_test_split(x, x, dev_size=5, test_size=5)


# ------------------------------------------------------------- issue 17: no silent wrong answer


def _core_fn(name: str):
    core = np._core if hasattr(np, "_core") else np.core
    return getattr(core.multiarray, name)


class _Forged:
    """Pickles as ``fn(*args)`` (then ``BUILD state`` when given)."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def _batch_folder(tmp_path: Path, raw: bytes) -> None:
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_batch").write_bytes(raw)


def test_cifar_reconstruct_without_state_refused(tmp_path):
    """NumPy's allowed _reconstruct without the BUILD state: uninitialised 'images'."""
    rec = _core_fn("_reconstruct")
    for args in ((np.ndarray, (0,), b"b"), (np.ndarray, (4, 3072), np.dtype("u1"))):
        raw = pickle.dumps({b"data": _Forged(rec, args), b"labels": [0, 1, 2, 3]}, protocol=2)
        _batch_folder(tmp_path, raw)
        with pytest.raises(D.DatasetError, match=r"test_batch: not a valid CIFAR batch"):
            D.load_cifar10(tmp_path, train=False)


def test_cifar_pickle_declaring_3gb_refused_without_allocating(tmp_path):
    import tracemalloc

    rec = _core_fn("_reconstruct")
    state = (1, (1_000_000, 3072), np.dtype("u1"), False, b"")
    raw = pickle.dumps({b"data": _Forged(rec, (np.ndarray, (0,), b"b"), state),
                        b"labels": [0]}, protocol=2)
    assert len(raw) < 400
    direct = pickle.dumps({b"data": _Forged(np.ndarray, ((1_000_000, 3072), np.dtype("u1"))),
                           b"labels": [0]})
    for blob, why in ((raw, "3072000000 bytes"), (direct, "refused to call numpy.ndarray")):
        _batch_folder(tmp_path, blob)
        tracemalloc.start()
        try:
            with pytest.raises(D.DatasetError, match=why):
                D.load_cifar10(tmp_path, train=False)
            assert tracemalloc.get_traced_memory()[1] < 8 << 20
        finally:
            tracemalloc.stop()


def test_cifar_python2_pickle_still_loads(tmp_path):
    """The real CIFAR files are Python 2 pickles: str array data, numpy.core names."""
    import struct

    data = bytes(range(256)) * 12
    raw = (b"\x80\x02}q\x01(U\x04dataq\x02cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\n"
           b"ndarray\nq\x04K\x00\x85U\x01b\x87Rq\x05(K\x01K\x01M\x00\x0c\x86cnumpy\ndtype\nq\x06"
           b"U\x02u1K\x00K\x01\x87Rq\x07(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
           b"\x89T" + struct.pack("<I", 3072) + data + b"tbU\x06labelsq\x08]q\tK\x03au.")
    _batch_folder(tmp_path, raw)
    x, y = D.load_cifar10(tmp_path, train=False, normalize=False)
    assert np.array_equal(x.reshape(-1), np.frombuffer(data, np.uint8)) and y.tolist() == [3]
    x[0, 0, 0, 0] = 1  # a fresh, writable array


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_every_pickle_protocol_loads(tmp_path, protocol):
    raw, data, labels = _cifar_batch(3, 4, protocol=protocol)
    _batch_folder(tmp_path, raw)
    x, y = D.load_cifar10(tmp_path, train=False, normalize=False)
    assert np.array_equal(x.reshape(3, -1), data) and y.tolist() == labels[b"labels"]


def test_cifar_labels_out_of_range_or_nested_refused(tmp_path):
    shared = [[0] * 100] * 100
    for labels, why in (([0, 10], r"outside 0\.\.9"), ([0, -1], "outside"),
                        ([shared, shared], "flat list"), ([True, False], "flat list")):
        _batch_folder(tmp_path, pickle.dumps({b"data": np.zeros((2, 3072), np.uint8),
                                              b"labels": labels}))
        with pytest.raises(D.DatasetError, match=why):
            D.load_cifar10(tmp_path, train=False)


def test_cifar_c_unpickler_memo_bomb_refused():
    import struct
    import tracemalloc

    from gpucnn.datasets import cifar

    bomb = b"\x80\x04N" + b"r" + struct.pack("<I", 1 << 28) + b"."  # C pickle: 4 GiB memo
    tracemalloc.start()
    try:
        with pytest.raises(D.DatasetError, match="bomb.*expected a dict"):
            cifar._parse_batch(bomb, "bomb", "labels", 10, 10)
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()


def test_cifar_archive_member_larger_than_a_batch_refused(tmp_path, patch_tables, monkeypatch):
    from gpucnn.datasets import cifar

    monkeypatch.setattr(cifar, "_max_bytes", lambda member: 10_000)  # a batch of <= 10 kB
    raw, _, _ = _cifar_batch(40, 0)
    blob = _targz("cifar-10-batches-py", {"test_batch": raw})
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(blob)
    patch_tables("cifar10", "http://unused.invalid", {"cifar-10-python.tar.gz": blob})
    with pytest.raises(D.DatasetError, match="declares .* refused before inflating"):
        D.load_cifar10(tmp_path, train=False)


def test_idx_gzip_bomb_refused_without_inflating(tmp_path):
    import struct
    import tracemalloc
    import zlib

    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [co.compress(struct.pack(">HBBI", 0, 0x08, 1, 10))]
    zeros = bytes(1 << 20)
    parts += [co.compress(zeros) for _ in range(64)]  # 64 MiB of zeros after 10 labels
    p = tmp_path / "bomb.gz"
    p.write_bytes(b"".join(parts) + co.flush())
    tracemalloc.start()
    try:
        with pytest.raises(D.DatasetError, match=r"bomb\.gz.*has more; refused without"):
            D.read_idx(p)
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()


def test_idx_header_declaring_too_much_refused(tmp_path):
    import struct

    p = tmp_path / "huge.gz"
    p.write_bytes(gzip.compress(struct.pack(">HBB3I", 0, 0x08, 3, 100_000, 1000, 1000)))
    with pytest.raises(D.DatasetError, match=r"huge\.gz.*more than the 2147483648 allowed"):
        D.read_idx(p)
    with pytest.raises(D.DatasetError, match=r"huge\.gz.*bytes of gzip can hold"):
        D.read_idx(p, max_bytes=None)


def test_idx_concatenated_gzip_members_and_trailing_garbage(tmp_path):
    raw = gzip.decompress(_idx_bytes(np.arange(10, dtype=np.uint8)))
    p = tmp_path / "multi.gz"
    p.write_bytes(gzip.compress(raw[:7]) + gzip.compress(raw[7:]) + b"\0\0")
    assert np.array_equal(D.read_idx(p), np.arange(10))
    p.write_bytes(gzip.compress(raw) + b"junk")
    with pytest.raises(D.DatasetError, match=r"multi\.gz.*trailing garbage"):
        D.read_idx(p)


def test_mnist_bad_labels_or_image_size_refused(tmp_path, patch_tables):
    files, _, _ = _mnist_files()
    files["train-labels-idx1-ubyte.gz"] = _idx_bytes(np.full(12, 11, np.uint8))
    (tmp_path / "mnist").mkdir()
    for k, v in files.items():
        (tmp_path / "mnist" / k).write_bytes(v)
    patch_tables("mnist", "http://unused.invalid", files)
    with pytest.raises(D.DatasetError, match=r"train-labels-idx1-ubyte\.gz.*labels 0\.\.9"):
        D.load_mnist(tmp_path)
    files["t10k-images-idx3-ubyte.gz"] = _idx_bytes(np.zeros((5, 20, 20), np.uint8))
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(
        files["t10k-images-idx3-ubyte.gz"])
    patch_tables("mnist", "http://unused.invalid", files)
    with pytest.raises(D.DatasetError, match=r"t10k-images.*\(N, 28, 28\)"):
        D.load_mnist(tmp_path, train=False)


def test_download_orphaned_part_file_removed(tmp_path, server):
    import subprocess
    import sys

    files, _, _ = _mnist_files()
    srv = server(files)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dest = tmp_path / "train-labels-idx1-ubyte.gz"
    (tmp_path / f".{dest.name}.{dead.pid}.ab_cd123.part").write_bytes(b"half")
    (tmp_path / f".{dest.name}.q1w2e3r4.part").write_bytes(b"older gpucnn")
    D.download_file(f"{srv.url}/{dest.name}", dest, _sha(files[dest.name]))
    assert _leftovers(tmp_path) == [dest.name]


def test_download_oversized_refused(tmp_path, server):
    files, _, _ = _mnist_files()
    srv = server(files)
    with pytest.raises(D.DownloadError, match="announces .* refused"):
        D.download_file(f"{srv.url}/train-images-idx3-ubyte.gz", tmp_path / "f.gz", None,
                        max_bytes=100)
    assert _leftovers(tmp_path) == []


def test_unverified_download_of_cut_gzip_refused(tmp_path, server):
    files, _, _ = _mnist_files()
    name = "train-images-idx3-ubyte.gz"
    srv = server({name: files[name][:-20]})  # a complete transfer of a cut file
    with pytest.raises(D.DatasetError, match=f"{name}.*cut short; discarded"):
        D.download_file(f"{srv.url}/{name}", tmp_path / name, None)
    assert _leftovers(tmp_path) == []


def test_write_idx_is_atomic(tmp_path, monkeypatch):
    p = tmp_path / "a.idx.gz"
    D.write_idx(p, np.arange(5, dtype=np.uint8))

    def boom(fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="simulated"):
        D.write_idx(p, np.arange(7, dtype=np.uint8))
    monkeypatch.undo()
    assert _leftovers(tmp_path) == ["a.idx.gz"]
    assert np.array_equal(D.read_idx(p), np.arange(5))


def test_cifar_malformed_dtype_state_refused_not_crashing(tmp_path):
    """115 bytes, allowed globals only: NumPy's own dtype.__setstate__ segfaults on this state
    (found by fuzzing); it must never reach NumPy. Run in a child so a regression is a failure,
    not a crash of the test session."""
    import subprocess
    import sys

    code = (
        "import pickle, numpy as np\n"
        "from gpucnn.datasets import DatasetError\n"
        "from gpucnn.datasets.cifar import safe_unpickle\n"
        "class F:\n"
        "    def __reduce__(self):\n"
        "        return (np.dtype, ('i8', False, True), (3, '<', None, -56321, -1, 0))\n"
        "raw = pickle.dumps({b'data': F(), b'labels': []}, protocol=2)\n"
        "try:\n"
        "    safe_unpickle(raw, 'test_batch')\n"
        "except DatasetError as exc:\n"
        "    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GPUCNN_SIMULATE_CUDA"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, f"crashed ({r.returncode}): {r.stderr[-500:]}"
    assert "test_batch: not a valid CIFAR batch pickle (refused dtype state" in r.stdout
