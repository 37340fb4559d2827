"""Reading an image file into RGB pixels, as torchvision's ImageFolder loader does.

ImageNet val holds CMYK JPEGs, grayscale JPEGs and a PNG saved as ``.JPEG``; Pillow detects the real
format from the bytes and ``convert("RGB")`` handles every mode the same way torchvision's
``pil_loader`` does, so the decoded pixels match the usual PyTorch evaluation.  EXIF orientation is
ignored, as torchvision ignores it.  A file Pillow cannot decode (or a truncated one: Pillow's
``LOAD_TRUNCATED_IMAGES`` stays off) raises `BadImageError` naming the file.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from resnet_port.errors import InputError


class BadImageError(InputError):
    """An image file that cannot be decoded; `validate --skip-bad` skips and reports these."""


_DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


def decode_image(path: str | Path, data: bytes | None = None) -> Image.Image:
    """The image at ``path`` (or its bytes ``data``, read from an archive: ``path`` then only names
    it) as an 8-bit RGB Pillow image, fully decoded (the file is closed)."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            image.load()
            # A truncated JPEG can load lazily without complaint; convert() forces every row.
            return image.convert("RGB")
    except _DECODE_ERRORS as exc:
        raise BadImageError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc
