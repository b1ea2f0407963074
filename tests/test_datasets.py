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
    for k in label_keys:
        labels[k] = [int(v) for v in rng.integers(0, 100, size=n)]
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
