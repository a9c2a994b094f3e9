"""IDX reading and writing: round trips, and every way a file can be broken."""

import gzip
import hashlib
import re
import struct
import time
import tracemalloc

import numpy as np
import pytest

from cnnlab.data import read_idx, read_idx_bytes, write_idx
from cnnlab.data.idx import DEFAULT_MAX_BYTES
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


# ------------------------------------------------ streaming: bombs, lying headers, limits


def _header(*dims: int) -> bytes:
    return struct.pack(f">BBBB{len(dims)}I", 0, 0, 8, len(dims), *dims)


def _peak_mib(call) -> float:
    """Peak traced memory (MiB) during ``call()``; numpy and bytes allocations are traced."""
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


def test_gzip_bomb_stops_at_the_promised_size(gzip_bomb):
    # ~1 MB of gzip inflating to 1 GiB behind a header promising MNIST's 60000x28x28
    # (45 MiB): reading it used to take over 2 GiB; now the promised array plus chunks.
    path = gzip_bomb(_header(60000, 28, 28), zeros=2**30)
    assert path.stat().st_size < 2 * 2**20

    def read():
        with pytest.raises(DataError, match=re.escape(
            f"{path}: trailing data: header declares 60000x28x28 = 47040000 bytes of data, "
            "found more than 47105536; re-download or re-copy the file"
        )):
            read_idx(path)

    start = time.perf_counter()
    peak = _peak_mib(read)
    assert 44 < peak < 100  # the 45 MiB array is traced (so the figure is real), no more
    assert time.perf_counter() - start < 20  # stops at 45 MiB, not after inflating 1 GiB


def test_header_promising_an_absurd_size_is_refused_before_reading(gzip_bomb):
    path = gzip_bomb(_header(2**32 - 1, 2**32 - 1, 255), zeros=2**24)
    expected = (2**32 - 1) ** 2 * 255

    def read():
        with pytest.raises(DataError, match=re.escape(
            f"{path}: header declares 4294967295x4294967295x255 = {expected} bytes of data, "
            f"more than the limit of {DEFAULT_MAX_BYTES} bytes; the file is corrupt, of another "
            "dataset, or a decompression bomb: re-download or re-copy the file; if the file is "
            f"genuine, pass max_bytes={expected} or more"
        )):
            read_idx(path)

    assert _peak_mib(read) < 4  # nothing allocated for the data


def test_max_bytes_is_settable(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros((10, 4), np.uint8))
    with pytest.raises(DataError, match=re.escape(
        "header declares 10x4 = 40 bytes of data, more than the limit of 39 bytes; the file is "
        "corrupt, of another dataset, or a decompression bomb: re-download or re-copy the file"
    )) as info:
        read_idx(path, max_bytes=39)
    assert "pass max_bytes" not in str(info.value)  # the caller chose the limit
    assert read_idx(path, max_bytes=40).shape == (10, 4)
    # The limit counts bytes, not elements: 5 int32 values are 20 bytes.
    ints = write_idx(tmp_path / "i", np.arange(5, dtype=np.int32))
    with pytest.raises(DataError, match="= 20 bytes of data, more than the limit of 19 bytes"):
        read_idx(ints, max_bytes=19)


def test_truncated_gzip_stream(tmp_path):
    # A complete, valid gzip stream whose content is shorter than its header promises.
    path = _raw(tmp_path, gzip.compress(_header(10, 28, 28) + bytes(100)), name="x.gz")
    with pytest.raises(DataError, match=re.escape(
        f"{path}: truncated: header declares 10x28x28 = 7840 bytes of data, found 100; "
        "re-download or re-copy the file"
    )):
        read_idx(path)


def test_trailing_data_in_gzip_is_counted_when_short(tmp_path):
    path = _raw(tmp_path, gzip.compress(_header(2) + b"\x01\x02" + bytes(9)), name="x.gz")
    with pytest.raises(DataError, match=re.escape(
        f"{path}: trailing data: header declares 2 = 2 bytes of data, found 11; "
    )):
        read_idx(path)


def test_multi_member_gzip_reads_whole(tmp_path):
    # Concatenated gzip members are one stream (what `cat a.gz b.gz` makes).
    data = _header(2, 3) + bytes(range(6))
    path = _raw(tmp_path, gzip.compress(data[:9]) + gzip.compress(data[9:]), name="x.gz")
    np.testing.assert_array_equal(read_idx(path), np.arange(6, dtype=np.uint8).reshape(2, 3))


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_hashes_are_updated_while_streaming(tmp_path, suffix):
    array = np.arange(3 * 1000 * 700, dtype=np.uint8).reshape(3, 1000, 700)  # > 1 chunk
    path = write_idx(tmp_path / f"x{suffix}", array)
    data_hash, file_hash = hashlib.sha256(), hashlib.md5()
    np.testing.assert_array_equal(read_idx(path, data_hash=data_hash, file_hash=file_hash),
                                  array)
    stored = path.read_bytes()
    raw = gzip.decompress(stored) if suffix else stored
    assert data_hash.hexdigest() == hashlib.sha256(raw).hexdigest()
    assert file_hash.hexdigest() == hashlib.md5(stored).hexdigest()


def test_source_names_the_file_in_messages(tmp_path):
    path = _raw(tmp_path, b"\x00\x00")
    with pytest.raises(DataError, match=r"^the downloaded file: truncated: 2 bytes"):
        read_idx(path, source="the downloaded file")


def test_read_idx_bytes_is_capped(gzip_bomb, tmp_path):
    path = gzip_bomb(_header(60000, 28, 28), zeros=2**26)
    with pytest.raises(DataError, match=re.escape(
        f"{path}: inflates to more than the limit of {2**20} bytes; the file is corrupt or a "
        "decompression bomb"
    )):
        read_idx_bytes(path, max_bytes=2**20)
    small = write_idx(tmp_path / "s.gz", np.arange(4, dtype=np.uint8))
    assert read_idx_bytes(small) == _header(4) + bytes(range(4))
