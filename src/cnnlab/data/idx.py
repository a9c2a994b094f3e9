"""Read and write IDX files (the MNIST family's format), gzip-compressed or raw.

An IDX file is a 4-byte magic (two zero bytes, a dtype code, the number of dimensions), one
big-endian uint32 per dimension, then the data in C order. Every way a file can be wrong
raises :class:`~cnnlab.errors.DataError` naming the file, the problem and the fix.

Files are read as a stream: the header comes first, its promised data size is checked
against a limit before anything is allocated, and the data is decompressed chunk by chunk
into an array of exactly that size. A gzip bomb (a small file that inflates to gigabytes)
therefore costs at most the size its header declares, never what it would inflate to.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn, Protocol

import numpy as np

from cnnlab._io import atomic_path
from cnnlab.errors import DataError, DatasetNotFoundError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Hasher",
    "atomic_path",
    "parse_idx",
    "read_idx",
    "read_idx_bytes",
    "write_idx",
]

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
DEFAULT_MAX_BYTES = 2 * 2**30  # data bytes a header may declare unless the caller says more
_CHUNK = 1 << 20  # bytes decompressed per step: memory beyond the output stays at about this
_TRAILING_PEEK = 1 << 16  # trailing bytes counted exactly in messages; past this, "more than"


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class Hasher(Protocol):
    """What :func:`read_idx` needs of a checksum: ``hashlib.sha256()`` and friends fit."""

    def update(self, data: bytes, /) -> None: ...


class _HashingReader:
    """A read-only file wrapper that feeds every byte read through it to ``hasher``."""

    def __init__(self, file: _Readable, hasher: Hasher | None) -> None:
        self._file = file
        self._hasher = hasher

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if self._hasher is not None:
            self._hasher.update(data)
        return data

    def seek(self, offset: int, whence: int = 0, /) -> int:
        # GzipFile seeks only to rewind, which read_idx never does; a rewind would hash twice.
        raise io.UnsupportedOperation("seek")

    def drain(self) -> None:
        """Read (and hash) what is left, so the checksum covers the whole file."""
        while self.read(_CHUNK):
            pass


@contextmanager
def _open_data(path: Path, file_hash: Hasher | None, source: str
               ) -> Iterator[tuple[_Readable, _HashingReader, int | None]]:
    """Open ``path`` for its uncompressed bytes: (data stream, file reader, raw file size).

    The raw size is None for gzip data, whose uncompressed size is known only at its end.
    """
    try:
        file = path.open("rb")
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{source}: no such file; check the path") from None
    except OSError as e:
        raise _unreadable(source, e) from e
    with file:
        try:
            start = file.read(4)
            file.seek(0)
            size = os.fstat(file.fileno()).st_size
        except OSError as e:
            raise _unreadable(source, e) from e
        reader = _HashingReader(file, file_hash)
        if start[:2] == _GZIP_MAGIC:
            # GzipFile inflates at most what each read asks for (and handles multi-member
            # files, zero padding and the CRC check): the bomb stays on disk.
            with gzip.GzipFile(fileobj=reader, mode="rb") as stream:
                yield stream, reader, None
            return
        if path.suffix == ".gz":
            raise DataError(
                f"{source}: not a gzip file (starts with {start.hex() or 'nothing'}, expected "
                f"1f8b); {_FIX}, or drop the .gz suffix if it is a raw IDX file"
            )
        yield reader, reader, size


def _unreadable(source: str, e: OSError) -> DataError:
    return DataError(f"{source}: cannot read: {e.strerror or e}; check its permissions")


def _read(stream: _Readable, size: int, source: str) -> bytes:
    """Up to ``size`` bytes (fewer only at the end of the data); failures as DataError."""
    try:
        return stream.read(size)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:  # truncated, bad deflate, bad CRC
        raise DataError(f"{source}: corrupt gzip data ({e}); {_FIX}") from e
    except OSError as e:
        raise DataError(f"{source}: cannot read: {e.strerror or e}; {_FIX}") from e


def _shape(dims: tuple[int, ...]) -> str:
    return "x".join(map(str, dims))


def read_idx(
    path: str | os.PathLike[str],
    *,
    max_bytes: int | None = None,
    data_hash: Hasher | None = None,
    file_hash: Hasher | None = None,
    source: str | None = None,
) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a writable numpy array of native byte order.

    Gzip is recognised by its magic bytes (a raw IDX file starts with two zero bytes), so a
    renamed file still reads; a ``.gz`` name on non-gzip data is an error. Memory use is the
    array's size plus about a megabyte, whatever the file inflates to.

    Args:
        path: the file.
        max_bytes: the most data bytes (after the header) the header may declare; a larger
            declaration is refused before anything is decompressed. ``None``:
            :data:`DEFAULT_MAX_BYTES` (2 GiB).
        data_hash: updated with every uncompressed byte (header included), as it streams.
        file_hash: updated with every byte of the file as stored (the ``.gz`` itself).
        source: what messages call the file; by default its path.

    Raises:
        DatasetNotFoundError: the file does not exist (also a ``FileNotFoundError``).
        DataError: the file is unreadable, not IDX, corrupt gzip, declares more data than
            ``max_bytes``, or holds less (truncated) or more (trailing data) than it declares.
    """
    path = Path(path)
    source = str(path) if source is None else source
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    with _open_data(path, file_hash, source) as (stream, reader, raw_size):
        magic = _read(stream, 4, source)
        _check_magic(magic, source)
        dims_bytes = _read(stream, 4 * magic[3], source)
        dims, dtype, header = _check_header(magic, dims_bytes, source)
        if data_hash is not None:
            data_hash.update(magic + dims_bytes)
        expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow on garbage dims
        if expected > limit:
            hint = (f"; if the file is genuine, pass max_bytes={expected} or more"
                    if max_bytes is None else "")
            raise DataError(
                f"{source}: header declares {_shape(dims)} = {expected} bytes of data, more than "
                f"the limit of {limit} bytes; the file is corrupt, of another dataset, or a "
                f"decompression bomb: {_FIX}{hint}"
            )
        if raw_size is not None and raw_size - header != expected:
            _size_error(source, dims, expected, raw_size - header)  # known before reading
        data = np.empty(expected, np.uint8)
        view = data.data  # a writable memoryview of the array
        filled = 0
        while filled < expected:
            chunk = _read(stream, min(_CHUNK, expected - filled), source)
            if not chunk:
                _size_error(source, dims, expected, filled)
            view[filled : filled + len(chunk)] = chunk
            if data_hash is not None:
                data_hash.update(chunk)
            filled += len(chunk)
        # Anything after the promised data is an error; read a little of it, never all.
        extra = _read(stream, _TRAILING_PEEK + 1, source)
        if extra:
            _size_error(source, dims, expected, expected + len(extra),
                        at_least=len(extra) > _TRAILING_PEEK)
        reader.drain()
    array = data.view(dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _check_magic(magic: bytes, source: str) -> None:
    if len(magic) < 4:
        raise DataError(
            f"{source}: truncated: {len(magic)} bytes, shorter than the 4-byte IDX magic; {_FIX}"
        )
    if magic[:2] != b"\x00\x00" or magic[2] not in _CODES:
        raise DataError(
            f"{source}: not an IDX file: magic {magic.hex()}, expected 0000 then a dtype code "
            f"among {', '.join(f'{c:02x}' for c in _CODES)} and the number of dimensions; "
            f"{_FIX}, and check it is an IDX file (not an HTML error page or another format)"
        )
    if magic[3] == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions; {_FIX}")


def _check_header(magic: bytes, dims_bytes: bytes, source: str
                  ) -> tuple[tuple[int, ...], np.dtype, int]:
    """The dimensions, dtype and header length of a magic already checked by _check_magic."""
    ndim = magic[3]
    header = 4 + 4 * ndim
    if len(dims_bytes) < 4 * ndim:
        raise DataError(
            f"{source}: truncated: the header needs {header} bytes for {ndim} dimensions, "
            f"found {4 + len(dims_bytes)}; {_FIX}"
        )
    return struct.unpack(f">{ndim}I", dims_bytes), _CODES[magic[2]], header


def _size_error(source: str, dims: tuple[int, ...], expected: int, found: int,
                at_least: bool = False) -> NoReturn:
    problem = "truncated" if found < expected else "trailing data"
    raise DataError(
        f"{source}: {problem}: header declares {_shape(dims)} = {expected} bytes of data, "
        f"found {'more than ' if at_least else ''}{found - 1 if at_least else found}; {_FIX}"
    )


def read_idx_bytes(path: str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """The uncompressed bytes of an IDX file, gunzipped when it is gzip data, unchecked.

    Decompressed as a stream and refused past ``max_bytes`` (default
    :data:`DEFAULT_MAX_BYTES`), so a gzip bomb is cut off. :func:`read_idx` is the better
    reader: it checks the header's promise before decompressing anything.

    Raises:
        DatasetNotFoundError: the file does not exist (also a ``FileNotFoundError``).
        DataError: the file cannot be read, its gzip stream is corrupt or truncated, or it
            inflates to more than ``max_bytes``.
    """
    path = Path(path)
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    data = bytearray()
    with _open_data(path, None, str(path)) as (stream, _, _):
        while chunk := _read(stream, _CHUNK, str(path)):
            data += chunk
            if len(data) > limit:
                raise DataError(
                    f"{path}: inflates to more than the limit of {limit} bytes; the file is "
                    f"corrupt or a decompression bomb: {_FIX}, or pass a larger max_bytes if "
                    "it is genuine"
                )
    return bytes(data)


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
