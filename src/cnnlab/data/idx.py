"""Read and write IDX files (the MNIST family's format), gzip-compressed or raw.

An IDX file is a 4-byte magic (two zero bytes, a dtype code, the number of dimensions), one
big-endian uint32 per dimension, then the data in C order. Every way a file can be wrong
raises :class:`~cnnlab.errors.DataError` naming the file, the problem and the fix.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from cnnlab._io import atomic_path
from cnnlab.errors import DataError, DatasetNotFoundError

__all__ = ["atomic_path", "parse_idx", "read_idx", "read_idx_bytes", "write_idx"]

# IDX dtype code -> numpy dtype (multi-byte types are big-endian on disk).
_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_KINDS = {(dt.kind, dt.itemsize): code for code, dt in _CODES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_FIX = "re-download or re-copy the file"


def read_idx_bytes(path: str | os.PathLike[str]) -> bytes:
    """The uncompressed bytes of an IDX file, gunzipped when it is gzip data.

    Gzip is recognised by its magic bytes (a raw IDX file starts with two zero bytes), so a
    renamed file still reads; a ``.gz`` name on non-gzip data is an error.

    Raises:
        DatasetNotFoundError: the file does not exist (also a ``FileNotFoundError``).
        DataError: the file cannot be read, or its gzip stream is corrupt or truncated.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{path}: no such file; check the path") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}; check its permissions") from e
    if blob[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip data ({e}); {_FIX}") from e
    if path.suffix == ".gz":
        raise DataError(
            f"{path}: not a gzip file (starts with {blob[:4].hex() or 'nothing'}, expected 1f8b); "
            f"{_FIX}, or drop the .gz suffix if it is a raw IDX file"
        )
    return blob


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode uncompressed IDX bytes into an array of native byte order (no copy for uint8).

    Args:
        data: the file's uncompressed bytes.
        source: the file name used in error messages.

    Raises:
        DataError: bad magic, unknown dtype code, zero dimensions, or a data size that does
            not match the header (truncated or trailing bytes).
    """
    if len(data) < 4:
        raise DataError(
            f"{source}: truncated: {len(data)} bytes, shorter than the 4-byte IDX magic; {_FIX}"
        )
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in _CODES:
        raise DataError(
            f"{source}: not an IDX file: magic {data[:4].hex()}, expected 0000 then a dtype code "
            f"among {', '.join(f'{c:02x}' for c in _CODES)} and the number of dimensions; "
            f"{_FIX}, and check it is an IDX file (not an HTML error page or another format)"
        )
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions; {_FIX}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{source}: truncated: the header needs {header} bytes for {ndim} dimensions, "
            f"found {len(data)}; {_FIX}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _CODES[code]
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow on garbage dims
    found = len(data) - header
    if found != expected:
        problem = "truncated" if found < expected else "trailing data"
        raise DataError(
            f"{source}: {problem}: header declares {'x'.join(map(str, dims))} = {expected} bytes "
            f"of data, found {found}; {_FIX}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a writable numpy array of native byte order.

    Raises:
        DatasetNotFoundError: the file does not exist.
        DataError: the file is unreadable, corrupt, truncated or has trailing data.
    """
    array = parse_idx(read_idx_bytes(path), str(path))
    # A frombuffer view of immutable bytes is read-only; torch.from_numpy warns on those.
    return array if array.flags.writeable else array.copy()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    The write is atomic (temporary file + rename). Returns the path written.

    Raises:
        DataError: the dtype has no IDX code (use uint8, int8, int16, int32, float32 or
            float64) or the shape cannot be stored (0 or more than 255 dimensions).
    """
    path = Path(path)
    array = np.asarray(array)
    code = _KINDS.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise DataError(
            f"{path}: cannot write dtype {array.dtype} as IDX; convert the array to uint8, int8, "
            "int16, int32, float32 or float64"
        )
    if not 1 <= array.ndim <= 255:
        raise DataError(
            f"{path}: IDX needs 1 to 255 dimensions, got an array of shape {array.shape}"
        )
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    data = header + np.ascontiguousarray(array, dtype=_CODES[code]).tobytes()
    if path.suffix == ".gz":
        # mtime=0 makes the output reproducible byte for byte.
        data = gzip.compress(data, compresslevel=6, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path
