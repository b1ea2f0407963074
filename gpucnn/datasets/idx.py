"""IDX files (the MNIST format): a big-endian header, then the raw array; optionally gzipped.

Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), the number of dimensions, then one big-endian uint32 per dimension.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from gpucnn.datasets._download import DatasetError

__all__ = ["parse_idx", "read_idx", "write_idx"]

_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


#: Default cap on the array bytes an IDX header may declare (``max_bytes``): 2 GiB.
MAX_BYTES = 1 << 31
#: Deflate cannot expand data more than ~1032 times: a header declaring more than this many
#: bytes per compressed byte is refused before inflating anything.
_MAX_RATIO = 1100
_CHUNK = 1 << 20


class _Gunzip:
    """Bounded reads from gzip bytes: ``read(n)`` inflates at most ``n`` bytes (members
    concatenated, CRC and length of each verified at its end)."""

    def __init__(self, raw: bytes, name: str) -> None:
        self.name = name
        self.rest = memoryview(raw)  # input not yet fed to the decompressor
        self.feed = b""  # input to feed before ``rest`` (the start of the next member)
        self.d = zlib.decompressobj(wbits=31)

    def _error(self, why: str) -> DatasetError:
        return DatasetError(f"{self.name}: corrupt or truncated gzip stream ({why})")

    def _next_member(self) -> bool:
        """After a member's end: start the next one; False at the end of the data."""
        left = self.d.unused_data
        if not left.strip(b"\0") and not bytes(self.rest).strip(b"\0"):
            return False  # the end (NUL padding allowed, as gzip(1) does)
        if (left + self.rest[:2].tobytes())[:2] != b"\x1f\x8b":
            raise self._error("trailing garbage after the gzip data")
        self.feed, self.d = left, zlib.decompressobj(wbits=31)
        return True

    def read(self, n: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < n:
            if self.d.eof and not self._next_member():
                break
            data, self.feed = self.d.unconsumed_tail or self.feed, b""
            if not data:
                if not len(self.rest):
                    raise self._error("the data ends before the end of the stream")
                data, self.rest = self.rest[:_CHUNK].tobytes(), self.rest[_CHUNK:]
            try:
                out = self.d.decompress(data, n - got)
            except zlib.error as exc:
                raise self._error(str(exc)) from exc
            parts.append(out)
            got += len(out)
        return b"".join(parts)

    def at_end(self) -> bool:
        """Whether the data ends here: no more output, every member complete (CRC checked)."""
        return not self.read(1) and self.d.eof


def _looks_gzip(raw: bytes) -> bool:
    return raw[:2] == b"\x1f\x8b"


def parse_idx(raw: bytes, name: str = "<bytes>", ndim: int | None = None,
              max_bytes: int | None = MAX_BYTES) -> np.ndarray:
    """Parse IDX bytes (gzipped or not) into an array in native byte order.

    A gzipped file is inflated in bounded steps: the header first, then exactly the bytes it
    declares; a header declaring more than ``max_bytes`` (or more than the compressed data
    could possibly hold) and a stream holding more than its header declares are refused
    without inflating past that point (a gzip bomb never fills memory).

    Args:
        raw: the file's bytes.
        name: the file name used in error messages.
        ndim: expected number of dimensions (3 for images, 1 for labels), checked if given.
        max_bytes: the most array bytes a header may declare (``None``: no cap).

    Raises:
        DatasetError: bad magic number, wrong dimension count, a size that does not match
            the header (the message names the file and both sizes), a corrupt or truncated
            gzip stream, or a declared size over ``max_bytes``.
    """
    gz = _Gunzip(raw, name) if _looks_gzip(raw) else None
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if gz is not None:
            return gz.read(n)
        out = raw[pos:pos + n]
        pos += len(out)
        return out

    head = take(4)
    if len(head) < 4:
        raise DatasetError(f"{name}: too short for an IDX header ({len(head)} bytes)")
    zero, code, nd = struct.unpack(">HBB", head)
    if zero != 0 or code not in _TYPES:
        raise DatasetError(
            f"{name}: bad IDX magic number 0x{int.from_bytes(head, 'big'):08x} "
            f"(expected 0x00000801 labels or 0x00000803 images, or another IDX type code)"
        )
    if ndim is not None and nd != ndim:
        raise DatasetError(
            f"{name}: expected an IDX file with {ndim} dimensions (magic 0x000008"
            f"{ndim:02x}), got magic 0x{int.from_bytes(head, 'big'):08x} with {nd}"
        )
    header = 4 + 4 * nd
    dims = take(4 * nd)
    if len(dims) < 4 * nd:
        raise DatasetError(f"{name}: header truncated ({4 + len(dims)} of {header} bytes)")
    shape = struct.unpack(f">{nd}I", dims)
    dtype = _TYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    if max_bytes is not None and expected > max_bytes:
        raise DatasetError(
            f"{name}: the header declares shape {tuple(shape)} ({expected} data bytes), more "
            f"than the {max_bytes} allowed; refused before reading the data"
        )
    if gz is not None and expected > _MAX_RATIO * len(raw) + header:
        raise DatasetError(
            f"{name}: size does not match the header: shape {tuple(shape)} needs {expected} "
            f"data bytes, more than {len(raw)} bytes of gzip can hold (truncated file?)"
        )
    if gz is None:
        got = len(raw) - header
        if got != expected:
            raise DatasetError(
                f"{name}: size does not match the header: shape {tuple(shape)} needs "
                f"{expected} data bytes, the file has {got}"
            )
        body = memoryview(raw)[header:]
    else:
        body = gz.read(expected)
        if len(body) != expected:
            raise DatasetError(
                f"{name}: size does not match the header: shape {tuple(shape)} needs "
                f"{expected} data bytes, the file has {len(body)}"
            )
        if not gz.at_end():
            raise DatasetError(
                f"{name}: size does not match the header: shape {tuple(shape)} needs "
                f"{expected} data bytes, the file has more; refused without inflating the rest"
            )
    arr = np.frombuffer(body, dtype=dtype).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike, ndim: int | None = None,
             max_bytes: int | None = MAX_BYTES) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) from disk; see :func:`parse_idx`."""
    path = Path(path)
    if max_bytes is not None:
        size = path.stat().st_size
        if size > max_bytes + 4 + 4 * 255 + (1 << 16):
            raise DatasetError(
                f"{path}: {size} bytes, more than an IDX file of at most {max_bytes} data "
                "bytes can be; refused without reading it"
            )
    return parse_idx(path.read_bytes(), str(path), ndim, max_bytes)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` (uint8/int8/int16/int32/float32/float64) as IDX; gzipped if the name
    ends in ``.gz`` (or ``compress`` is true). Used by tests and to export subsets."""
    path = Path(path)
    array = np.asarray(array)
    codes = {v.newbyteorder("=") if v.byteorder != "|" else v: k for k, v in _TYPES.items()}
    key = array.dtype.newbyteorder("=") if array.dtype.byteorder not in "|" else array.dtype
    if key not in codes:
        raise TypeError(f"write_idx: unsupported dtype {array.dtype}")
    code = codes[key]
    body = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    body += np.ascontiguousarray(array, dtype=_TYPES[code]).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        body = gzip.compress(body, mtime=0)
    from gpucnn.saving import write_bytes_atomic

    write_bytes_atomic(path, body)
    return path
