"""IDX files (the MNIST format): a big-endian header, then the raw array; optionally gzipped.

Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), the number of dimensions, then one big-endian uint32 per dimension.
"""

from __future__ import annotations

import gzip
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


def _decompress(raw: bytes, name: str) -> bytes:
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DatasetError(f"{name}: corrupt or truncated gzip stream ({exc})") from exc


def parse_idx(raw: bytes, name: str = "<bytes>", ndim: int | None = None) -> np.ndarray:
    """Parse IDX bytes (gzipped or not) into an array in native byte order.

    Args:
        raw: the file's bytes.
        name: the file name used in error messages.
        ndim: expected number of dimensions (3 for images, 1 for labels), checked if given.

    Raises:
        DatasetError: bad magic number, wrong dimension count, or a size that does not match
            the header (the message names the file and both sizes).
    """
    data = _decompress(raw, name)
    if len(data) < 4:
        raise DatasetError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero, code, nd = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _TYPES:
        raise DatasetError(
            f"{name}: bad IDX magic number 0x{int.from_bytes(data[:4], 'big'):08x} "
            f"(expected 0x00000801 labels or 0x00000803 images, or another IDX type code)"
        )
    if ndim is not None and nd != ndim:
        raise DatasetError(
            f"{name}: expected an IDX file with {ndim} dimensions (magic 0x000008"
            f"{ndim:02x}), got magic 0x{int.from_bytes(data[:4], 'big'):08x} with {nd}"
        )
    header = 4 + 4 * nd
    if len(data) < header:
        raise DatasetError(f"{name}: header truncated ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{nd}I", data[4:header])
    dtype = _TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        raise DatasetError(
            f"{name}: size does not match the header: shape {tuple(shape)} needs {expected} "
            f"data bytes, the file has {got}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) from disk; see :func:`parse_idx`."""
    path = Path(path)
    return parse_idx(path.read_bytes(), str(path), ndim)


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
    path.write_bytes(body)
    return path
