"""IDX reading and writing: round trips, and every way a file can be broken."""

import gzip
import re
import struct

import numpy as np
import pytest

from cnnlab.data import read_idx, write_idx
from cnnlab.errors import DataError, DatasetNotFoundError


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-3, 0, 5], dtype=np.int8),
        np.array([[-30000, 2], [7, 30000]], dtype=np.int16),
        np.array([-(2**31), 2**31 - 1], dtype=np.int32),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
        np.array([np.pi, -np.e], dtype=np.float64),
    ],
    ids=lambda a: str(a.dtype),
)
def test_round_trip(tmp_path, array, suffix):
    path = write_idx(tmp_path / f"x-idx{suffix}", array)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_header_layout_matches_mnist(tmp_path):
    path = write_idx(tmp_path / "imgs", np.zeros((3, 28, 28), np.uint8))
    assert path.read_bytes()[:16] == struct.pack(">BBBBIII", 0, 0, 8, 3, 3, 28, 28)


def test_reads_a_renamed_gzip_file(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"  # gzip data without the .gz suffix
    path.write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, 2) + b"\x01\x02"))
    np.testing.assert_array_equal(read_idx(path), [1, 2])


def test_real_mnist_test_images(mnist_dir):
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8


def _raw(tmp_path, data: bytes, name="bad-idx3-ubyte"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_wrong_magic(tmp_path):
    path = _raw(tmp_path, b"<htm" + b"l>" * 10)
    with pytest.raises(DataError, match=re.escape(f"{path}: not an IDX file: magic 3c68746d")):
        read_idx(path)


def test_unknown_dtype_code(tmp_path):
    path = _raw(tmp_path, bytes([0, 0, 0x07, 1]) + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataError, match="expected 0000 then a dtype code among 08, 09, 0b"):
        read_idx(path)


def test_zero_dimensions(tmp_path):
    path = _raw(tmp_path, bytes([0, 0, 8, 0]))
    with pytest.raises(DataError, match="declares 0 dimensions"):
        read_idx(path)


def test_shorter_than_magic(tmp_path):
    path = _raw(tmp_path, b"\x00\x00")
    with pytest.raises(DataError, match="truncated: 2 bytes, shorter than the 4-byte IDX magic"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = _raw(tmp_path, bytes([0, 0, 8, 3]) + struct.pack(">I", 10))
    with pytest.raises(DataError, match="truncated: the header needs 16 bytes for 3 dimensions"):
        read_idx(path)


def test_truncated_data(tmp_path):
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, 10, 28, 28)
    path = _raw(tmp_path, header + bytes(100), name="train-images-idx3-ubyte")
    expected = (
        f"{path}: truncated: header declares 10x28x28 = 7840 bytes of data, found 100; "
        "re-download or re-copy the file"
    )
    with pytest.raises(DataError, match=re.escape(expected)):
        read_idx(path)


def test_trailing_data(tmp_path):
    path = _raw(tmp_path, struct.pack(">BBBBI", 0, 0, 0x0C, 1, 2) + bytes(8 + 3))
    with pytest.raises(DataError, match=re.escape("trailing data: header declares 2 = 8 bytes")):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    good = write_idx(tmp_path / "x.gz", np.arange(5000, dtype=np.int32)).read_bytes()
    broken = bytearray(good)
    broken[len(broken) // 2 : len(broken) // 2 + 16] = bytes(16)
    path = _raw(tmp_path, bytes(broken), name="y.gz")
    with pytest.raises(DataError, match=re.escape(f"{path}: corrupt gzip data")):
        read_idx(path)


def test_truncated_gzip(tmp_path):
    good = write_idx(tmp_path / "x.gz", np.arange(5000, dtype=np.int32)).read_bytes()
    path = _raw(tmp_path, good[: len(good) // 2], name="y.gz")
    with pytest.raises(DataError, match=r"corrupt gzip data .*re-download or re-copy the file"):
        read_idx(path)


def test_gz_suffix_on_raw_data(tmp_path):
    path = _raw(tmp_path, bytes([0, 0, 8, 1, 0, 0, 0, 0]), name="labels.gz")
    with pytest.raises(DataError, match=r"not a gzip file .*drop the \.gz suffix"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no such file"):
        read_idx(tmp_path / "nothing.gz")


def test_write_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(DataError, match="cannot write dtype int64 as IDX; convert"):
        write_idx(tmp_path / "x", np.arange(3))
    with pytest.raises(DataError, match="IDX needs 1 to 255 dimensions"):
        write_idx(tmp_path / "x", np.uint8(3))
    assert list(tmp_path.iterdir()) == []
