"""load_image on every accepted, odd and hostile kind of input; preprocess following a model card."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from attnviz.errors import ImageError
from attnviz.images import input_geometry, load_image, preprocess, read_image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def gradient_rgb(width: int = 40, height: int = 30) -> Image.Image:
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    array = np.stack([xs, ys, 255 - xs], axis=-1).astype(np.uint8)
    return Image.fromarray(array, "RGB")


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def one_bit_png_bomb(side: int = 40000) -> bytes:
    """A valid 1-bit grey PNG of side x side zero pixels, built by hand in ~0.3 s (~200 KB)."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    rows_per_chunk = 1000
    chunk = row * rows_per_chunk
    parts = [compressor.compress(chunk) for _ in range(side // rows_per_chunk)]
    parts.append(compressor.compress(row * (side % rows_per_chunk)))
    parts.append(compressor.flush())
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_allowed_formats_decode_to_rgb(fmt):
    original = gradient_rgb()
    loaded = read_image(encode(original, fmt))
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == (40, 30)
    assert loaded.format == fmt
    if fmt in ("PNG", "BMP", "TIFF"):  # lossless: pixel-exact
        assert np.array_equal(np.asarray(loaded.image), np.asarray(original))
    else:
        error = np.abs(np.asarray(loaded.image, dtype=int) - np.asarray(original, dtype=int)).mean()
        assert error < 40  # GIF palette / lossy codecs, but the picture is the same


def test_path_and_file_object_sources(tmp_path):
    data = encode(gradient_rgb(), "PNG")
    path = tmp_path / "picture.png"
    path.write_bytes(data)
    assert load_image(path).size == (40, 30)
    assert load_image(str(path)).size == (40, 30)
    assert load_image(io.BytesIO(data)).size == (40, 30)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_one_bit_png_bomb_is_refused_fast_without_allocating():
    bomb = one_bit_png_bomb()
    assert len(bomb) < 1_000_000
    started = time.perf_counter()
    with pytest.raises(ImageError, match="40000 x 40000|megapixel"):
        load_image(bomb)
    assert time.perf_counter() - started < 1.0


def test_pixel_cap_is_a_parameter():
    data = encode(gradient_rgb(200, 200), "PNG")
    with pytest.raises(ImageError, match="megapixel"):
        load_image(data, max_pixels=100 * 100)
    assert load_image(data, max_pixels=200 * 200).size == (200, 200)


def test_byte_cap(tmp_path):
    data = encode(gradient_rgb(), "BMP")
    with pytest.raises(ImageError, match="larger than"):
        load_image(data, max_bytes=len(data) - 1)
    path = tmp_path / "big.bmp"
    path.write_bytes(data)
    with pytest.raises(ImageError, match="larger than"):
        load_image(path, max_bytes=100)


def test_exif_orientation_is_applied():
    original = gradient_rgb(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    loaded = read_image(encode(original, "JPEG", exif=exif.tobytes(), quality=95))
    assert loaded.image.size == (30, 40)
    assert any("EXIF" in note for note in loaded.notes)
    # The displayed top-left is the stored bottom-left.
    expected = np.asarray(original.transpose(Image.Transpose.ROTATE_270))
    assert np.abs(np.asarray(loaded.image, dtype=int) - expected.astype(int)).mean() < 8


def test_animated_gif_uses_first_frame_and_says_so():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    loaded = read_image(buffer.getvalue())
    assert np.asarray(loaded.image)[8, 8].tolist() == [255, 0, 0]
    assert any("3 frames" in note for note in loaded.notes)
    assert load_image(buffer.getvalue()).info["attnviz_notes"] == loaded.notes


def test_multi_page_tiff_uses_first_page():
    pages = [Image.new("RGB", (8, 8), (10, 20, 30)), Image.new("RGB", (8, 8), (200, 200, 200))]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    loaded = read_image(data)
    assert np.asarray(loaded.image)[0, 0].tolist() == [10, 20, 30]
    assert any("2 frames" in note for note in loaded.notes)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(mode):
    img = Image.new(mode, (4, 4), (0, 0, 0, 0) if mode == "RGBA" else (0, 0))
    img.putpixel((1, 1), (0, 0, 0, 255) if mode == "RGBA" else (0, 255))
    loaded = read_image(encode(img, "PNG"))
    pixels = np.asarray(loaded.image)
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[1, 1].tolist() == [0, 0, 0]
    assert any("white" in note for note in loaded.notes)


def test_palette_with_transparent_index_is_composited_on_white():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((2, 2), 1)
    loaded = read_image(encode(img, "PNG", transparency=0))
    pixels = np.asarray(loaded.image)
    assert pixels[0, 0].tolist() == [255, 255, 255]  # index 0 is transparent
    assert pixels[2, 2].tolist() == [255, 0, 0]


def test_sixteen_bit_png_is_scaled_to_eight_bits():
    values = np.array([[0, 257 * 128], [65535, 257 * 10]], dtype=np.uint16)
    img = Image.fromarray(values)  # mode I;16
    assert img.mode.startswith("I;16")
    loaded = read_image(encode(img, "PNG"))
    assert loaded.image.mode == "RGB"
    assert np.asarray(loaded.image)[:, :, 0].tolist() == [[0, 128], [255, 10]]
    assert any("16-bit" in note for note in loaded.notes)


def test_float_tiff_is_scaled_to_eight_bits():
    values = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    loaded = read_image(encode(Image.fromarray(values, "F"), "TIFF"))
    assert np.asarray(loaded.image)[:, :, 1].tolist() == [[0, 128], [255, 64]]
    wide = np.array([[-10.0, 0.0], [10.0, 30.0]], dtype=np.float32)
    stretched = np.asarray(load_image(encode(Image.fromarray(wide, "F"), "TIFF")))[:, :, 0]
    assert stretched.tolist() == [[0, 64], [128, 255]]


def test_int32_tiff_is_scaled():
    values = np.array([[0, 1000], [65535, 2000]], dtype=np.int32)
    loaded = read_image(encode(Image.fromarray(values, "I"), "TIFF"))
    assert np.asarray(loaded.image)[1, 0, 0] == 255
    assert np.asarray(loaded.image)[0, 1, 0] == 4


def test_cmyk_jpeg_and_one_bit_png_become_rgb():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red
    red = np.asarray(load_image(encode(cmyk, "JPEG", quality=95)))[4, 4]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    bits = Image.new("1", (8, 8), 1)
    assert np.asarray(load_image(encode(bits, "PNG"))).min() == 255


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10"/>', "SVG"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "AVIF"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
        (b"<!DOCTYPE html><html><body>not a picture</body></html>", "HTML"),
        (b"\xef\xbb\xbf<html lang='en'>", "HTML"),
        ("Just some notes, caf\u00e9 and all.\n".encode(), "text file"),
        (bytes(range(256)) * 4, "not a recognised image"),
    ],
    ids=["empty", "svg-xml", "svg", "heic", "avif", "pdf", "html", "html-bom", "text", "random"],
)
def test_rejected_kinds_have_a_reason(data, reason):
    with pytest.raises(ImageError, match=reason):
        load_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
def test_truncated_files_are_rejected(fmt):
    data = encode(gradient_rgb(64, 64), fmt)
    with pytest.raises(ImageError, match="truncated|corrupt") as caught:
        load_image(data[: len(data) // 2])
    assert "\n" not in str(caught.value)


def test_corrupt_files_are_rejected():
    data = bytearray(encode(gradient_rgb(64, 64), "PNG"))
    data[40:80] = b"\xff" * 40  # inside IDAT: the CRC and the zlib stream break
    with pytest.raises(ImageError, match="corrupt"):
        load_image(bytes(data))
    with pytest.raises(ImageError, match="corrupt"):
        load_image(b"\xff\xd8\xff\xe0" + b"\x00" * 100)  # JPEG magic, garbage after
    with pytest.raises(ImageError, match="corrupt"):
        load_image(b"BM" + b"\x00" * 60)


def test_preprocess_follows_the_card():
    image = gradient_rgb(64, 48)
    card = {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "in_chans": 3}
    x = preprocess(image, card)
    assert tuple(x.shape) == (1, 3, 32, 32)
    assert x.dtype.is_floating_point
    assert float(x.min()) >= -2.0 - 1e-5 and float(x.max()) <= 2.0 + 1e-5
    # red grows left to right in the gradient
    assert float(x[0, 0, :, -1].mean()) > float(x[0, 0, :, 0].mean()) + 1.0
    assert image.size == (64, 48)  # the original is kept for display
    grey = preprocess([image, image], {"input_size": 28, "mean": [0.1307], "std": [0.3081], "in_chans": 1})
    assert tuple(grey.shape) == (2, 1, 28, 28)


def test_input_geometry_forms():
    assert input_geometry({"input_size": 32}) == (3, 32, 32)
    assert input_geometry({"input_size": [28, 28], "in_chans": 1}) == (1, 28, 28)
    assert input_geometry({"input_size": [1, 28, 28]}) == (1, 28, 28)
    with pytest.raises(ImageError):
        input_geometry({"input_size": [1, 2, 3, 4]})


@pytest.mark.parametrize("size", [(1, 1), (3000, 2), (2, 2500), (48, 30)])
def test_letterbox_fits_any_aspect_ratio_into_a_square(size):
    from attnviz.images import LETTERBOX_FILL, letterbox

    picture = Image.new("RGB", size, (200, 10, 10))
    boxed = letterbox(picture, 224)
    assert boxed.size == (224, 224)
    pixels = np.asarray(boxed)
    painted = (pixels == (200, 10, 10)).all(axis=2)
    assert painted.any()  # the picture is in there, at least one pixel on each side
    rows, cols = np.nonzero(painted)
    long_side = max(size)
    assert cols.max() - cols.min() + 1 == max(1, round(size[0] * 224 / long_side))
    assert rows.max() - rows.min() + 1 == max(1, round(size[1] * 224 / long_side))
    if size[0] != size[1]:
        assert tuple(pixels[0, 0]) == LETTERBOX_FILL or tuple(pixels[-1, -1]) == LETTERBOX_FILL
