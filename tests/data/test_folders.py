"""Image folders and the guarded single-image decoder."""

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import image_to_array, load_image_folder, read_image
from cnnlab.errors import ConfigError, DataError, DatasetNotFoundError


def test_loads_sorted_classes_and_skips_odd_files(image_folder):
    ds = load_image_folder(image_folder, progress=False)
    assert ds.classes == ["cat", "dog"]  # sorted; hidden class dir ignored
    assert len(ds) == 4  # c1.png, c2.bmp, d1.png, D2.PNG
    assert ds.targets.tolist() == [0, 0, 1, 1]
    # One RGB file makes the dataset RGB; greyscale images become three equal channels.
    assert ds.images.shape == (4, 3, 8, 8) and ds.images.dtype == torch.uint8
    assert ds.images[0, :, 0, 0].tolist() == [200, 200, 200]
    assert ds.images[2, :, 0, 0].tolist() == [255, 0, 0]  # "D2.PNG" < "d1.png" (byte order)
    assert ds.name == "pets" and ds.source == str(image_folder)


def test_channels_forced_and_inferred(image_folder):
    grey = load_image_folder(image_folder, channels=1, progress=False)
    assert grey.images.shape == (4, 1, 8, 8)
    assert grey.images[2, 0, 0, 0].item() == round(0.299 * 255)  # red in luma
    (image_folder / "dog" / "D2.PNG").unlink()
    assert load_image_folder(image_folder, progress=False).images.shape == (3, 1, 8, 8)


def test_resize(image_folder):
    Image.new("L", (20, 10), 90).save(image_folder / "cat" / "wide.png")
    with pytest.raises(DataError, match=re.escape(
        "images differ in size (HxW, count: 8x8 (4), 10x20 (1)); pass a size to resize them "
        "all to, e.g. size=(8, 8)"
    )):
        load_image_folder(image_folder, progress=False)
    ds = load_image_folder(image_folder, size=(6, 5), progress=False)
    assert ds.images.shape == (5, 3, 6, 5)


def test_corrupt_file_is_named(image_folder):
    (image_folder / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError) as info:
        load_image_folder(image_folder, progress=False)
    message = str(info.value)
    assert message.startswith(f"{image_folder}: 1 of 5 images cannot be read: ")
    assert str(image_folder / "cat" / "broken.png") in message
    assert message.endswith("Fix or remove these files")


def test_many_corrupt_files_are_listed_up_to_ten(image_folder):
    for i in range(12):
        (image_folder / "dog" / f"bad{i:02d}.jpg").write_bytes(b"")
    pattern = r"12 of 16 images cannot be read: .*bad09\.jpg.*; and 2 more"
    with pytest.raises(DataError, match=pattern):
        load_image_folder(image_folder, progress=False)


def test_missing_root(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no such directory; expected a folder"):
        load_image_folder(tmp_path / "nope")


def test_empty_root(tmp_path):
    (tmp_path / "loose.png").write_bytes(b"")
    with pytest.raises(DataError, match=re.escape(
        f"{tmp_path}: no class sub-directories; put the images of each class in their own "
        f"folder: {tmp_path}/<class>/<image>.png"
    )):
        load_image_folder(tmp_path)


def test_class_without_images(image_folder):
    (image_folder / "emu").mkdir()
    (image_folder / "emu" / "notes.txt").write_text("no pictures yet")
    with pytest.raises(DataError, match=r"class directories without images \(.*\): emu; add "):
        load_image_folder(image_folder, progress=False)


@pytest.mark.parametrize(("kwargs", "name"), [({"channels": 2}, "channels"),
                                              ({"size": (0, 4)}, "size")])
def test_bad_options(image_folder, kwargs, name):
    with pytest.raises(ConfigError, match=f"The '{name}' parameter .* Got .* instead."):
        load_image_folder(image_folder, **kwargs)


# ----------------------------------------------------------------------- read_image


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_read_image_from_bytes_and_path(tmp_path):
    data = _png_bytes(Image.new("RGB", (7, 5), (1, 2, 3)))
    assert read_image(data).size == (7, 5)
    (tmp_path / "x.png").write_bytes(data)
    assert read_image(tmp_path / "x.png").getpixel((0, 0)) == (1, 2, 3)


def test_read_image_errors_name_the_source(tmp_path):
    with pytest.raises(DataError, match=re.escape("<bytes>: not a readable image (supported: PNG")):
        read_image(b"hello")
    with pytest.raises(DataError, match=r"^upload\.png: not a readable image"):
        read_image(b"", name="upload.png")
    truncated = _png_bytes(Image.effect_noise((64, 64), 50))[:200]
    with pytest.raises(DataError, match=r"^<bytes>: corrupt or truncated image"):
        read_image(truncated)
    with pytest.raises(DataError, match=f"{tmp_path / 'none.png'}: no such file"):
        read_image(tmp_path / "none.png")


def test_pixel_limit():
    data = _png_bytes(Image.new("L", (100, 50)))
    with pytest.raises(DataError, match=re.escape(
        "<bytes>: image of 100x50 = 5,000 pixels exceeds the limit of 4,999; scale it down"
    )):
        read_image(data, max_pixels=4999)


@pytest.mark.parametrize("side", [12, 20])  # Pillow warns above its limit, raises above 2x
def test_decompression_bomb_is_a_data_error(monkeypatch, side):
    data = _png_bytes(Image.new("L", (side, side)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="refused as a decompression bomb"):
        read_image(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(fmt: str):
    image = Image.new("L", (20, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, exif=exif)
    assert read_image(buffer.getvalue()).size == (10, 20)
    plain = io.BytesIO()  # no EXIF: taken as it is
    image.save(plain, format=fmt)
    assert read_image(plain.getvalue()).size == (20, 10)


def test_image_to_array_modes():
    rgba = Image.new("RGBA", (3, 2), (0, 0, 0, 0))  # fully transparent: shows as white
    assert image_to_array(rgba, 1).tolist() == [[[255] * 3] * 2]
    deep = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))  # 16-bit greyscale
    assert image_to_array(deep, 1).max() == 255
    rgb = image_to_array(Image.new("L", (4, 6), 9), 3, size=(3, 2))
    assert rgb.shape == (3, 3, 2) and rgb.dtype == np.uint8
