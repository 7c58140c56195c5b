"""Image input that never crashes: untrusted bytes -> an RGB picture, or one clear sentence.

``load_image(source)`` is the contract function (``docs/ARCHITECTURE.md``): it returns a PIL RGB
image or raises ``attnviz.errors.ImageError`` whose message is one human sentence.
``read_image(source)`` does the same work and returns a ``LoadedImage`` that also carries the notes
a user should see (``"animated GIF with 12 frames: using the first"``, ``"transparent areas were
filled with white"``...); ``load_image`` stores the same notes in ``image.info["attnviz_notes"]``.

Safety, in the order the checks run:
1. bytes cap (``max_bytes``, 20 MB by default) before anything is read into memory;
2. the format is sniffed from magic bytes *before* PIL sees the data, and only the allow-listed
   decoders (JPEG, PNG, WebP, GIF, BMP, TIFF) are handed to ``Image.open(formats=...)``. SVG,
   HEIC/HEIF/AVIF, PDF, HTML, text and unknown data are rejected with a reason;
3. ``Image.open`` reads only the header; the pixel count (``max_pixels``, 25 MP) is checked right
   after it and before ``load()``, so a 40000 x 40000 PNG bomb is refused without allocating it.
   ``Image.DecompressionBombWarning`` is turned into an error for the whole decode (PIL also checks
   frame sizes while seeking GIF/TIFF frames);
4. truncated and corrupt data fail in ``load()`` and become a sentence.

Normalisation: EXIF orientation is applied; frame 0 of animations / multi-page files is used (and
said); alpha (RGBA, LA, PA, P or L/RGB with a transparent colour) is composited on white; 16-bit
images are scaled by 1/257 (65535 -> 255) and 32-bit integer and float images by their value range
(see ``_scale_to_uint8``) before conversion to RGB.

``preprocess(image, card)`` turns a picture into a model's input ``[1, C, H, W]`` following the model
card (``input_size``, ``mean``, ``std``, ``in_chans``); the original image is left untouched for
display at full resolution.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from attnviz.errors import ImageError

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 25_000_000

# PIL format names of the decoders we accept (allow-list passed to Image.open(formats=...)).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_FORMAT_LABEL = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "GIF": "GIF", "BMP": "BMP", "TIFF": "TIFF"}
SUPPORTED_TEXT = "JPEG, PNG, WebP, GIF, BMP or TIFF"

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}


@dataclass
class LoadedImage:
    """A decoded picture: ``image`` is RGB (8 bit); ``notes`` are sentences worth showing the user."""

    image: Image.Image
    notes: list[str] = field(default_factory=list)
    format: str = ""
    original_mode: str = ""
    original_size: tuple[int, int] = (0, 0)


def sniff_format(head: bytes) -> str:
    """PIL format name for allow-listed magic bytes; raises ``ImageError`` with a reason otherwise."""
    if not head:
        raise ImageError("the file is empty")
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    # Rejections with a reason, most specific first.
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            kind = "AVIF" if brand.startswith(b"avi") else "HEIC/HEIF"
            raise ImageError(f"{kind} images are not supported; please convert it to JPEG or PNG")
        raise ImageError("this looks like a video or MP4-family file, not a still image")
    if head.startswith(b"%PDF"):
        raise ImageError("this is a PDF document, not an image; export the page as PNG or JPEG")
    text_start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()  # skip a UTF-8 BOM and white space
    if text_start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        raise ImageError("this is an HTML web page, not an image (save the picture itself, not the page)")
    if text_start.startswith(b"<svg") or (text_start.startswith(b"<?xml") and b"<svg" in text_start):
        raise ImageError("SVG vector images are not supported; please export it as PNG or JPEG")
    if text_start.startswith((b"8bps", b"\x00\x00\x01\x00", b"\x00\x00\x02\x00")):
        raise ImageError(f"this image format is not supported; please use {SUPPORTED_TEXT}")
    if _looks_like_text(head):
        raise ImageError("this is a text file, not an image")
    raise ImageError(f"the file is not a recognised image; supported formats are {SUPPORTED_TEXT}")


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sniffed window is still text.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in text)
    return printable >= 0.95 * max(1, len(text))


def _read_source(source: Any, max_bytes: int) -> tuple[bytes, str]:
    """The raw bytes (never more than ``max_bytes + 1`` read) and a display name."""
    limit_mb = max_bytes / (1024 * 1024)
    too_big = f"the file is larger than the {limit_mb:g} MB limit"
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        try:
            if not path.is_file():
                raise ImageError("no such file" if not path.exists() else "this is a folder, not a file")
            if path.stat().st_size > max_bytes:
                raise ImageError(too_big)
            with path.open("rb") as handle:
                data = handle.read(max_bytes + 1)
        except OSError as err:
            raise ImageError(f"the file cannot be read ({err.strerror or err})") from err
    elif hasattr(source, "read"):  # a file object, e.g. an upload
        name = str(getattr(source, "name", "<upload>"))
        data = source.read(max_bytes + 1)
        if isinstance(data, str):
            raise ImageError("this is a text stream, not an image")
    else:
        raise ImageError(f"cannot read an image from a {type(source).__name__}")
    if len(data) > max_bytes:
        raise ImageError(too_big)
    return data, name


def read_image(source: Any, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Decode untrusted ``source`` (bytes, path or binary file object) to an 8-bit RGB ``LoadedImage``.

    Raises ``ImageError`` (one sentence, no file name: callers prefix it) for anything unsafe or
    undecodable. See the module docstring for the checks and conversions.
    """
    data, _ = _read_source(source, max_bytes)
    fmt = sniff_format(data[:64])
    notes: list[str] = []
    with warnings.catch_warnings():
        # PIL warns about (and for > 2x its limit, raises on) huge images; both become our error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(
                    f"the image is {width} x {height} pixels, more than the {max_pixels / 1e6:g} megapixel limit"
                )
            if width < 1 or height < 1:
                raise ImageError("the image has no pixels")
            frames = int(getattr(img, "n_frames", 1) or 1)
            if frames > 1:
                img.seek(0)
                what = "animated image" if fmt in ("GIF", "WEBP", "PNG") else "multi-page image"
                notes.append(f"{what} with {frames} frames: using the first frame")
            img.load()
            original_mode = img.mode
            orientation = _exif_orientation(img)
            if orientation != 1:
                try:
                    img = ImageOps.exif_transpose(img)
                    notes.append("rotated according to its EXIF orientation")
                except Exception:  # a malformed EXIF block must not lose the picture
                    notes.append("the EXIF orientation could not be applied; shown as stored")
            rgb = _to_rgb(img, notes)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageError(
                f"the image declares too many pixels (a possible decompression bomb); the limit is "
                f"{max_pixels / 1e6:g} megapixels"
            ) from err
        except MemoryError as err:
            raise ImageError("the image is too large to decode in memory") from err
        except Image.UnidentifiedImageError as err:
            raise ImageError(f"the {_FORMAT_LABEL[fmt]} file is corrupt and cannot be decoded") from err
        except OSError as err:
            if "truncated" in str(err).lower():
                raise ImageError(f"the {_FORMAT_LABEL[fmt]} file is truncated (the download may be incomplete)") from err
            raise ImageError(f"the {_FORMAT_LABEL[fmt]} file is corrupt and cannot be decoded") from err
        except Exception as err:  # untrusted data: every decoder failure becomes one sentence
            raise ImageError(f"the {_FORMAT_LABEL[fmt]} file is corrupt and cannot be decoded") from err
    rgb.info["attnviz_notes"] = list(notes)
    return LoadedImage(image=rgb, notes=notes, format=fmt, original_mode=original_mode, original_size=(width, height))


def load_image(source: Any, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``source`` to a PIL RGB image or raise ``ImageError`` (see ``read_image``).

    The notes about the conversion are in ``image.info["attnviz_notes"]``.
    """
    return read_image(source, max_bytes=max_bytes, max_pixels=max_pixels).image


def _exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 = as stored; also 1 when missing or unreadable)."""
    try:
        value = img.getexif().get(0x0112, 1)
        return int(value) if value in range(1, 9) else 1
    except Exception:
        return 1


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """8-bit RGB copy of ``img``; transparency composited on white, deep images scaled to 8 bit."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        rgb = Image.fromarray(_scale_to_uint8(img, notes), mode="L").convert("RGB")
    else:
        has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
        if has_alpha:
            rgba = img.convert("RGBA")
            alpha = np.asarray(rgba.getchannel("A"))
            if alpha.min() < 255:
                notes.append("transparent areas were filled with white")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(background, rgba).convert("RGB")
        elif mode == "RGB":
            rgb = img.copy()
        else:  # 1, L, P, CMYK, YCbCr, LAB, HSV: PIL's own conversions
            rgb = img.convert("RGB")
    return rgb


def _scale_to_uint8(img: Image.Image, notes: list[str]) -> np.ndarray:
    """Map a 16-bit, 32-bit integer or float single-channel image to uint8.

    - 16-bit (I;16*): value / 257, so the full 0..65535 range maps to 0..255.
    - 32-bit integer (I): as is when it fits 0..255, / 257 when it fits 0..65535, else min-max.
    - float (F): x 255 when it lies in [0, 1], as is when it lies in [0, 255], else min-max; NaN -> 0.
    """
    values = np.asarray(img).astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode.startswith("I;16"):
        scaled = values / 257.0
        notes.append("16-bit image scaled to 8 bits")
    elif img.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
        notes.append("floating-point image in [0, 1] scaled to 8 bits")
    elif low >= 0.0 and high <= 255.0:
        scaled = values
        notes.append("high-bit-depth image with 8-bit values converted to 8 bits")
    elif img.mode == "I" and low >= 0.0 and high <= 65535.0:
        scaled = values / 257.0
        notes.append("16-bit image scaled to 8 bits")
    else:
        span = high - low
        scaled = (values - low) * (255.0 / span) if span > 0 else np.zeros_like(values)
        notes.append(f"values from {low:g} to {high:g} were stretched to 8 bits")
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Preprocessing to a model's input


def _card_value(card: Any, key: str, default: Any = None) -> Any:
    if isinstance(card, Mapping):
        return card.get(key, default)
    return getattr(card, key, default)


def input_geometry(card: Any) -> tuple[int, int, int]:
    """(channels, height, width) from a card's ``in_chans`` and ``input_size`` (int, [H, W] or [C, H, W])."""
    size = _card_value(card, "input_size", 32)
    in_chans = _card_value(card, "in_chans", None)
    if isinstance(size, (int, np.integer)):
        height = width = int(size)
        chans = in_chans
    else:
        size = [int(v) for v in size]
        if len(size) == 3:
            chans, height, width = size
            chans = in_chans or chans
        elif len(size) == 2:
            (height, width), chans = size, in_chans
        else:
            raise ImageError(f"the model card's input_size {size} is not [H, W] or [C, H, W]")
    return int(chans or 3), height, width


def preprocess(images: Image.Image | Sequence[Image.Image], card: Any) -> Any:
    """Model input ``[N, C, H, W]`` (float32) for one PIL image or a list of them.

    ``card`` is a model card (dict with ``input_size``, ``mean``, ``std``, ``in_chans``) or any object
    with those attributes. The picture is resized to ``input_size`` as a whole (bilinear with
    anti-aliasing; the aspect ratio is not kept) so that a heat map at input resolution maps one to
    one onto the full original, which callers keep for display. ``in_chans = 1`` models get the ITU-R
    601 luma (PIL's "L"). Values: ``(pixel / 255 - mean) / std`` per channel.
    """
    import torch

    if isinstance(images, Image.Image):
        images = [images]
    chans, height, width = input_geometry(card)
    mean = np.asarray(_card_value(card, "mean", [0.0] * chans), dtype=np.float32).reshape(-1)
    std = np.asarray(_card_value(card, "std", [1.0] * chans), dtype=np.float32).reshape(-1)
    if mean.size == 1 and chans > 1:
        mean = np.repeat(mean, chans)
    if std.size == 1 and chans > 1:
        std = np.repeat(std, chans)
    if mean.size != chans or std.size != chans:
        raise ImageError(f"the model card's mean/std do not have {chans} channel values")
    arrays = []
    for image in images:
        picture = image.convert("L" if chans == 1 else "RGB")
        if picture.size != (width, height):
            picture = picture.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(picture, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[:, :, None]
        arrays.append(((array - mean) / std).transpose(2, 0, 1))
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays)))


LETTERBOX_FILL = (241, 243, 246)  # a light neutral grey: padding reads as "not part of the picture"


def letterbox(image: Any, side: int, fill: tuple[int, int, int] = LETTERBOX_FILL) -> Image.Image:
    """``image`` (PIL or uint8 array) fitted inside a ``side`` x ``side`` square, centred, aspect kept.

    Any picture the loader accepts fits, 1x1 and 4000x2 included (each side of the fitted picture is at
    least one pixel), so a page can show it at any width without an empty thumbnail. Small pictures are
    enlarged with nearest-neighbour sampling (CIFAR's 32 px stay crisp pixels), large ones reduced with
    Lanczos.
    """
    if not isinstance(side, int) or side < 1:
        raise ImageError(f"letterbox side must be a positive integer, got {side!r}")
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    picture = picture.convert("RGB")
    scale = side / max(picture.size)
    size = (max(1, min(side, round(picture.width * scale))), max(1, min(side, round(picture.height * scale))))
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
    fitted = picture.resize(size, resample)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(fitted, ((side - size[0]) // 2, (side - size[1]) // 2))
    return canvas
