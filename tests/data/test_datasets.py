"""ImageDataset, the dataset registry, and loading + verifying the MNIST family from disk."""

import gzip
import hashlib
import re
import shutil
import struct
import tracemalloc
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import (
    DATASETS,
    IdxFile,
    ImageDataset,
    dataset_info,
    load_dataset,
    load_idx_dataset,
)
from cnnlab.data.datasets import _read_verified
from cnnlab.errors import ConfigError, DataError, DatasetNotFoundError, RegistryError

MNIST_TEST_IMAGES_SHA256 = "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"


# ------------------------------------------------------------------------ ImageDataset


def _tiny() -> ImageDataset:
    images = torch.tensor([[0, 255], [255, 255], [0, 0]], dtype=torch.uint8).view(3, 1, 1, 2)
    return ImageDataset(images, torch.tensor([0, 1, 1]), ["a", "b", "c"], "tiny", "memory")


def test_stats_hand_computed():
    stats = _tiny().stats()
    # pixels: 0, 1, 1, 1, 0, 0 -> mean 0.5, population std 0.5
    assert stats.size == 3 and stats.shape == (1, 1, 2)
    assert stats.class_counts == {"a": 1, "b": 2, "c": 0}
    assert stats.mean == pytest.approx((0.5,)) and stats.std == pytest.approx((0.5,))
    assert asdict(stats)["name"] == "tiny"


def test_stats_per_channel(synthetic_dataset, make_synthetic_dataset):
    rgb = make_synthetic_dataset(channels=3)
    rgb.images[:, 1] = 255
    stats = rgb.stats()
    assert stats.mean[1] == 1.0 and stats.std[1] == 0.0
    x = rgb.images[:, 0].double() / 255
    assert stats.mean[0] == pytest.approx(x.mean().item())
    assert stats.std[0] == pytest.approx(x.std(unbiased=False).item())


def test_subset_and_len():
    ds = _tiny()
    sub = ds.subset(np.array([2, 0]))
    assert len(sub) == 2 and sub.targets.tolist() == [1, 0] and sub.classes == ds.classes
    assert torch.equal(sub.images[1], ds.images[0])
    assert len(ds.subset(torch.tensor([], dtype=torch.int64))) == 0
    assert ds.subset(ds.targets == 1).targets.tolist() == [1, 1]  # a boolean mask works too
    with pytest.raises(IndexError):
        ds.subset([3])
    assert "tensor" not in repr(ds)  # the repr stays short


U8 = torch.uint8


@pytest.mark.parametrize(
    ("images", "targets", "message"),
    [
        (torch.zeros(2, 1, 4, 4), torch.zeros(2).long(), "images must be a uint8"),
        (torch.zeros(2, 4, 4, dtype=U8), torch.zeros(2).long(), "(N, C, H, W)"),
        (torch.zeros(2, 1, 4, 4, dtype=U8), torch.zeros(3).long(), "shape (2,)"),
        (torch.zeros(2, 1, 4, 4, dtype=U8), torch.tensor([0, 2]), "range from 0 to 2"),
    ],
)
def test_dataset_validates(images, targets, message):
    with pytest.raises(DataError, match=re.escape(message)):
        ImageDataset(images, targets, ["a", "b"])


# -------------------------------------------------------------------------- registry


def test_registry_and_info():
    assert DATASETS.names() == ["fashion-mnist", "kmnist", "mnist"]
    mnist = dataset_info("mnist")
    assert mnist.classes == tuple("0123456789") and mnist.shape == (1, 28, 28)
    assert (mnist.mean, mnist.std) == ((0.1307,), (0.3081,))
    assert dataset_info("fashion-mnist").classes[9] == "Ankle boot"
    assert dataset_info("kmnist").classes == (
        "o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"
    )
    assert mnist.raw_allowed and not dataset_info("kmnist").raw_allowed


def test_unknown_dataset_suggests():
    with pytest.raises(RegistryError, match="unknown dataset 'mnsit'; did you mean 'mnist'"):
        load_dataset("mnsit")


def test_bad_split():
    with pytest.raises(ConfigError, match=re.escape(
        "The 'split' parameter of load_dataset must be one of train, test. Got 'val' instead."
    )):
        load_dataset("mnist", "val")


# ------------------------------------------------------------------ load_idx_dataset


def test_load_idx_dataset(fake_idx):
    images, labels = fake_idx(n=12, num_classes=3)
    ds = load_idx_dataset(images, labels)
    assert ds.images.shape == (12, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.targets.dtype == torch.int64 and ds.classes == ["0", "1", "2"]
    assert ds.name == images.name and ds.source == str(images)


def test_count_mismatch(fake_idx):
    images, labels = fake_idx(n=12, n_labels=11)
    with pytest.raises(DataError, match=re.escape(
        f"{images} holds 12 images but {labels} holds 11 labels"
    )):
        load_idx_dataset(images, labels)


def test_labels_out_of_range(fake_idx):
    images, labels = fake_idx(n=12, num_classes=10)
    with pytest.raises(DataError, match=re.escape(
        f"{labels}: 2 labels outside 0..7 (8 classes), the first is 8 at index 8"
    )):
        load_idx_dataset(images, labels, classes=[str(i) for i in range(8)])


def test_files_swapped(fake_idx):
    images, labels = fake_idx()
    with pytest.raises(DataError, match="expected uint8 images of shape \\(N, H, W\\)"):
        load_idx_dataset(labels, images)


# ---------------------------------------------------------------- load_dataset on disk


def test_load_real_mnist_train(mnist_dir):
    ds = load_dataset("mnist", "train", data_dir=mnist_dir, download=False)
    assert ds.images.shape == (60000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.classes == list("0123456789") and ds.name == "mnist"
    stats = ds.stats()
    assert list(stats.class_counts.values()) == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949
    ]
    assert stats.mean[0] == pytest.approx(0.1307, abs=1e-4)
    assert stats.std[0] == pytest.approx(0.3081, abs=1e-4)


def test_lookup_accepts_parent_dir_and_env(mnist_dir, tmp_path, monkeypatch):
    # data_dir=<parent> finds <parent>/mnist/; $CNNLAB_DATA_DIR is searched too.
    assert len(load_dataset("mnist", "test", data_dir=mnist_dir.parent, download=False)) == 10000
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(mnist_dir))
    ds = load_dataset("mnist", "test", data_dir=tmp_path / "empty", download=False)
    assert len(ds) == 10000 and ds.source == str(mnist_dir / "t10k-images-idx3-ubyte.gz")


def test_uncompressed_and_recompressed_files(mnist_dir, tmp_path):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        raw = gzip.decompress((mnist_dir / f"{name}.gz").read_bytes())
        target = tmp_path / (name if "images" in name else f"{name}.gz")
        target.write_bytes(raw if "images" in name else gzip.compress(raw, compresslevel=1))
    ds = load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    assert len(ds) == 10000 and ds.source.endswith("t10k-images-idx3-ubyte")


def test_checksum_mismatch(fake_idx, tmp_path):
    images, _ = fake_idx(tmp_path / "mnist")
    raw_sha = hashlib.sha256(gzip.decompress(images.read_bytes())).hexdigest()
    expected = (
        f"{images}: checksum mismatch: expected sha256 {MNIST_TEST_IMAGES_SHA256} of the "
        "uncompressed data or md5 9fb629c4189551a2d022fa330f9573f3 of the original "
        f"t10k-images-idx3-ubyte.gz, found sha256 {raw_sha} of the uncompressed data; "
    )
    with pytest.raises(DataError, match=re.escape(expected) + ".*delete it and download it"):
        load_dataset("mnist", "test", data_dir=tmp_path, download=False)


def test_fashion_mnist_accepts_only_gz(fake_idx, tmp_path):
    fake_idx(tmp_path, gz=False)  # uncompressed copies cannot be verified for this dataset
    with pytest.raises(DatasetNotFoundError, match=re.escape(
        "fashion-mnist test split not found: missing t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz;"
    )):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path, download=False)


def test_verify_by_canonical_gz_md5(fake_idx):
    # Both digests are computed while the file streams in: md5 of the .gz as stored, sha256
    # of the bytes it inflates to.
    images, _ = fake_idx()
    raw = gzip.decompress(images.read_bytes())
    md5 = hashlib.md5(images.read_bytes()).hexdigest()
    expected = np.frombuffer(raw, np.uint8, offset=16).reshape(20, 28, 28)
    array = _read_verified(images, IdxFile(images.name, sha256=None, gz_md5=md5))
    np.testing.assert_array_equal(array, expected)
    _read_verified(images, IdxFile(images.name, sha256=hashlib.sha256(raw).hexdigest()))
    with pytest.raises(DataError, match=f"expected md5 {'0' * 32} of the original"):
        _read_verified(images, IdxFile(images.name, sha256=None, gz_md5="0" * 32))


def test_registered_files_know_their_shape():
    images, labels = dataset_info("kmnist").files["train"]
    assert (images.shape, labels.shape) == ((60000, 28, 28), (60000,))
    assert images.max_data_bytes == 60000 * 28 * 28
    assert labels.max_download_bytes == 2 * (8 + 60000)
    assert dataset_info("mnist").files["test"][0].max_data_bytes == 10000 * 28 * 28


def test_bomb_with_a_registered_name_is_refused_at_its_header(gzip_bomb, tmp_path):
    # A 1 MB gzip inflating to 1 GiB, named as MNIST's test images and declaring the
    # training set's 60000 images: refused from the 16-byte header, before any inflating.
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, 60000, 28, 28)
    path = gzip_bomb(header, 2**30, name="t10k-images-idx3-ubyte.gz", directory=tmp_path / "mnist")
    shutil.copy(path, tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz")  # labels come later
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=re.escape(
            f"{path}: header declares 60000x28x28 = 47040000 bytes of data, more than the "
            "limit of 7840000 bytes; the file is corrupt, of another dataset, or a "
            "decompression bomb: re-download or re-copy the file"
        )) as info:
            load_dataset("mnist", "test", data_dir=tmp_path, download=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "max_bytes" not in str(info.value)  # the dataset's size is the limit, not a knob
    assert peak < 8 * 2**20


def test_registered_file_inflating_past_its_header_is_refused(gzip_bomb, tmp_path):
    # The header tells the truth about the size (10000 images) but the stream goes on.
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, 10000, 28, 28)
    path = gzip_bomb(header, 2**30, name="t10k-images-idx3-ubyte.gz", directory=tmp_path)
    shutil.copy(path, tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match=re.escape(
        f"{path}: trailing data: header declares 10000x28x28 = 7840000 bytes of data, found "
        "more than 7905536"
    )):
        load_dataset("mnist", "test", data_dir=tmp_path, download=False)


def test_missing_files_no_download(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(env_dir))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", "train", data_dir=tmp_path / "d", download=False)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    cache = tmp_path / "xdg-cache" / "cnnlab" / "mnist"
    workdir = Path.cwd() / "data" / "mnist"  # an empty directory (tests/conftest.py)
    assert message == (
        "mnist train split not found: missing train-images-idx3-ubyte.gz (or "
        "train-images-idx3-ubyte), train-labels-idx1-ubyte.gz (or train-labels-idx1-ubyte); "
        f"looked in {tmp_path / 'd'}, {tmp_path / 'd' / 'mnist'}, {env_dir}, "
        f"{env_dir / 'mnist'}, {workdir}, {cache}; downloading is off ($CNNLAB_OFFLINE=1 or "
        "download=False). Fix: copy the files into one of these directories, or point "
        "--data-dir DIR (or $CNNLAB_DATA_DIR) at a directory that holds them"
    )


def test_copy_of_real_files_in_cache_dir(mnist_dir, tmp_path):
    cache = tmp_path / "xdg-cache" / "cnnlab" / "mnist"
    cache.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(mnist_dir / name, cache / name)
    assert len(load_dataset("mnist", "test", download=False)) == 10000


# ------------------------------------------------- the working directory's data/<name>


def _copy_test_split(mnist_dir, target):
    target.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(mnist_dir / name, target / name)


def test_found_in_working_directory_data(mnist_dir, tmp_path, monkeypatch):
    # From a clone's root, the shipped data/mnist/ is found without data_dir, and read in
    # place: no download is tried (the cache stays absent) and nothing is written there.
    monkeypatch.delenv("CNNLAB_OFFLINE", raising=False)  # downloads allowed, yet not needed
    _copy_test_split(mnist_dir, tmp_path / "repo" / "data" / "mnist")
    monkeypatch.chdir(tmp_path / "repo")
    ds = load_dataset("mnist", "test", mirrors=["http://127.0.0.1:9/"], allow_http_loopback=True)
    assert len(ds) == 10000
    assert ds.source == str(tmp_path / "repo" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz")
    assert sorted(p.name for p in (tmp_path / "repo" / "data" / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert not (tmp_path / "xdg-cache").exists()


def test_working_directory_data_comes_after_env_and_before_cache(mnist_dir, fake_idx, tmp_path,
                                                                 monkeypatch):
    # Fake (checksum-failing) files in ./data/mnist: which directory won shows in the error.
    fake_idx(tmp_path / "repo" / "data" / "mnist")
    monkeypatch.chdir(tmp_path / "repo")
    _copy_test_split(mnist_dir, tmp_path / "xdg-cache" / "cnnlab" / "mnist")
    with pytest.raises(DataError, match=re.escape(
        f"{tmp_path / 'repo' / 'data' / 'mnist' / 't10k-images-idx3-ubyte.gz'}: checksum mismatch"
    )):
        load_dataset("mnist", "test", download=False)  # ./data/mnist before the cache
    _copy_test_split(mnist_dir, tmp_path / "env")
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(tmp_path / "env"))
    ds = load_dataset("mnist", "test", download=False)  # $CNNLAB_DATA_DIR before ./data/mnist
    assert ds.source == str(tmp_path / "env" / "t10k-images-idx3-ubyte.gz")


def test_working_directory_data_itself_is_not_searched(fake_idx, tmp_path, monkeypatch):
    # Loose files directly in ./data/ could belong to any dataset of the family: not used.
    fake_idx(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=re.escape(
        f"looked in {tmp_path / 'data' / 'mnist'}, {tmp_path / 'xdg-cache' / 'cnnlab' / 'mnist'};"
    )):
        load_dataset("mnist", "test", download=False)


def test_download_never_goes_into_working_directory_data(tmp_path, monkeypatch):
    # Downloads go to the cache (here: a mirror that refuses), never into ./data/<name>.
    monkeypatch.delenv("CNNLAB_OFFLINE", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=re.escape("download failed: http://127.0.0.1:9/")):
        load_dataset("mnist", "test", progress=False, mirrors=["http://127.0.0.1:9/"],
                     timeout=2, allow_http_loopback=True)
    assert not (tmp_path / "data").exists()
    assert list((tmp_path / "xdg-cache" / "cnnlab" / "mnist").iterdir()) == []
