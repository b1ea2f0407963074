"""Cache folder, mirror table, SHA-256 table and the verified, atomic file download.

Files live in ``<cache>/<dataset>/`` where ``<cache>`` is the ``root`` argument, else the
environment variable ``GPUCNN_DATA_DIR``, else ``~/.cache/gpucnn``. A download streams into a
temporary file in the destination folder, hashes it on the way, and is ``os.replace``'d onto
the final name only when the SHA-256 matches :data:`CHECKSUMS`; on a mismatch, a network error, a
short or oversized transfer or an interrupt (``KeyboardInterrupt`` included) the temporary file
is removed, so a partial or corrupt file is never left under the final name; the temporary files
of a download killed outright (``kill -9``) are removed by the next download of that file.

Mirrors: :data:`MIRRORS` maps a dataset to base URLs tried in order (``<base>/<file name>``).
The environment variable ``GPUCNN_DATASET_MIRROR`` (one base URL, or several separated by
commas) is tried before them; ``{dataset}`` in it is replaced by the dataset name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import urllib.error
import urllib.request
import zlib
from pathlib import Path

__all__ = [
    "CHECKSUMS",
    "MIRRORS",
    "ChecksumError",
    "DatasetError",
    "DatasetNotFoundError",
    "DownloadError",
    "cache_dir",
    "dataset_dir",
    "download_file",
    "fetch_file",
    "sha256_file",
]

#: Base URLs per dataset, tried in order after ``GPUCNN_DATASET_MIRROR``.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist",
        "https://storage.googleapis.com/cvdf-datasets/mnist",
    ],
    "fashion_mnist": [
        "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion",
    ],
    "cifar10": ["https://www.cs.toronto.edu/~kriz"],
    "cifar100": ["https://www.cs.toronto.edu/~kriz"],
}

#: SHA-256 of every downloadable file, per dataset.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
        ),
        "train-labels-idx1-ubyte.gz": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
        ),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
        ),
        "train-labels-idx1-ubyte.gz": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
        ),
    },
    "cifar10": {
        "cifar-10-python.tar.gz": (
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
        ),
    },
    "cifar100": {
        "cifar-100-python.tar.gz": (
            "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"
        ),
    },
}

_CHUNK = 1 << 20


class DatasetError(ValueError):
    """A dataset file is malformed (bad header, wrong size, truncated, wrong content)."""


class ChecksumError(DatasetError):
    """A file's SHA-256 does not match the table."""


class DatasetNotFoundError(FileNotFoundError):
    """Dataset files are missing and downloading was not requested."""


class DownloadError(OSError):
    """Every mirror failed (offline, DNS failure, HTTP error); the message says what to do."""


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``root``, else ``$GPUCNN_DATA_DIR``, else ``~/.cache/gpucnn``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("GPUCNN_DATA_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "gpucnn"


def dataset_dir(dataset: str, root: str | os.PathLike | None = None) -> Path:
    """``<cache>/<dataset>``: where the files of ``dataset`` are looked for and downloaded."""
    return cache_dir(root) / dataset


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _mirrors(dataset: str) -> list[str]:
    env = os.environ.get("GPUCNN_DATASET_MIRROR", "").strip()
    urls = [u.strip().replace("{dataset}", dataset) for u in env.split(",") if u.strip()]
    return urls + list(MIRRORS.get(dataset, []))


def _is_offline_error(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, (ConnectionError, socket.gaierror, socket.timeout, TimeoutError))


#: The most bytes one download may have (the largest file, CIFAR-100, is ~170 MB).
MAX_DOWNLOAD_BYTES = 1 << 30


def download_file(url: str, dest: str | os.PathLike, sha256: str | None, timeout: float = 60.0,
                  max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``sha256`` (hex) when given.

    The bytes go to a temporary file next to ``dest`` which replaces ``dest`` only after the
    transfer is complete (as long as its ``Content-Length``, at most ``max_bytes``) and the
    checksum matched, flushed to disk first; on any failure the temporary file is deleted and
    ``dest`` is untouched. Temporary files of earlier downloads of ``dest`` whose process was
    killed are removed first.

    Raises:
        ChecksumError: the downloaded bytes do not hash to ``sha256``.
        DownloadError: the server announces or sends more than ``max_bytes``.
        urllib.error.URLError / OSError: the transfer failed or was cut short.
    """
    from gpucnn.saving import remove_orphans, temp_done, temp_file

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(str(dest), ".part")
    fd, tmp_name = temp_file(str(dest), ".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            expected_len = resp.headers.get("Content-Length")
            try:
                expected = None if expected_len is None else int(expected_len)
            except ValueError:
                expected = None
            if expected is not None and expected > max_bytes:
                raise DownloadError(
                    f"{url}: the server announces {expected} bytes, more than {dest.name} "
                    f"can be ({max_bytes}); refused"
                )
            got = 0
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                got += len(chunk)
                if got > max_bytes:
                    raise DownloadError(
                        f"{url}: more than {max_bytes} bytes, more than {dest.name} can be; "
                        "refused"
                    )
                out.write(chunk)
                h.update(chunk)
            if expected is not None and got != expected:
                raise OSError(
                    f"incomplete download of {url}: got {got} of {expected_len} bytes"
                )
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if sha256 is not None and digest != sha256.lower():
            raise ChecksumError(
                f"checksum mismatch for {dest.name} downloaded from {url}: "
                f"expected sha256 {sha256}, got {digest}; the file was discarded"
            )
        if sha256 is None and dest.name.endswith(".gz"):
            _check_gzip(tmp, f"{dest.name} downloaded from {url}")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        temp_done(tmp_name)
    return dest


def _check_gzip(path: Path, what: str, limit: int = 8 << 30) -> None:
    """Inflate ``path`` to nowhere, in bounded steps: refuse a cut or corrupt gzip stream (the
    check a download without a known checksum still gets)."""
    d = zlib.decompressobj(wbits=31)
    fed, members, out = False, 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            while chunk:
                if not fed and members:  # between members: NUL padding is allowed
                    chunk = chunk.lstrip(b"\0")
                    if not chunk:
                        break
                fed = True
                try:
                    out += len(d.decompress(chunk, _CHUNK))
                except zlib.error as exc:
                    raise DatasetError(f"{what}: corrupt gzip data ({exc}); discarded") from exc
                if out > limit:
                    raise DatasetError(f"{what}: inflates to more than {limit} bytes; discarded")
                if d.eof:
                    members += 1
                    chunk, d, fed = d.unused_data, zlib.decompressobj(wbits=31), False
                else:
                    chunk = d.unconsumed_tail
    if fed or not members:
        raise DatasetError(f"{what}: the gzip stream is cut short; discarded")


def _missing_message(dataset: str, files: list[str], folder: Path, why: str) -> str:
    mirrors = _mirrors(dataset)
    base = mirrors[0] if mirrors else "<mirror>"
    lines = [f"{dataset}: {why}. Put these files into {folder}:"]
    lines += [f"  {folder / f}   (from {base}/{f})" for f in files]
    lines.append(
        "or pass download=True (needs network access; set GPUCNN_DATASET_MIRROR to use "
        "another mirror, GPUCNN_DATA_DIR or root=... to use another folder)."
    )
    return "\n".join(lines)


def fetch_file(
    dataset: str,
    filename: str,
    root: str | os.PathLike | None = None,
    download: bool = False,
    verify: bool = True,
) -> Path:
    """Path to ``filename`` of ``dataset``, verified against :data:`CHECKSUMS`.

    Looks in ``<cache>/<dataset>/`` and then directly in ``<cache>/``; if absent and
    ``download`` is true, downloads it into ``<cache>/<dataset>/`` from the mirrors in turn.

    Raises:
        DatasetNotFoundError: missing and ``download`` is false (says which file to put where).
        ChecksumError: a file on disk or a downloaded file has the wrong SHA-256.
        DownloadError: every mirror failed (offline, DNS failure, HTTP error).
    """
    expected = CHECKSUMS.get(dataset, {}).get(filename)
    folder = dataset_dir(dataset, root)
    for candidate in (folder / filename, cache_dir(root) / filename):
        if candidate.is_file():
            if verify and expected is not None:
                digest = sha256_file(candidate)
                if digest != expected:
                    raise ChecksumError(
                        f"checksum mismatch for {candidate}: expected sha256 {expected}, got "
                        f"{digest}; delete the file (and download it again)"
                    )
            return candidate
    if not download:
        raise DatasetNotFoundError(
            _missing_message(dataset, [filename], folder, f"{filename} not found")
        )
    errors: list[str] = []
    offline = True
    for base in _mirrors(dataset):
        url = f"{base.rstrip('/')}/{filename}"
        try:
            return download_file(url, folder / filename, expected if verify else None)
        except ChecksumError:
            raise
        except (urllib.error.URLError, OSError, ValueError) as exc:
            offline = offline and _is_offline_error(exc)
            errors.append(f"{url}: {exc}")
    why = "cannot download (no network?)" if offline else "every mirror failed"
    raise DownloadError(
        _missing_message(dataset, [filename], folder, why)
        + "\nErrors:\n  "
        + "\n  ".join(errors or ["no mirror configured"])
    )
