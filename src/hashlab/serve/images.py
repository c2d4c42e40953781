"""Uploaded images: base64, content types, size and pixel limits, decoding, PNG thumbnails.

An upload is refused before it is decoded when it is too large (413), not an image type (415)
or not base64 (400); its pixel count is read from the header and checked (413) before the
pixels are decoded; a damaged or truncated file is a 400. Only common still-image formats are
opened (``FORMATS``).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

import numpy as np
from PIL import Image

from hashlab.serve.errors import ApiError
from hashlab.serve.limits import ServeLimits

__all__ = ["FORMATS", "b64decode", "check_content_type", "decode_image", "model_array",
           "png_bytes", "thumbnail_png"]

#: the Pillow formats an upload may have
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
_DATA_URL = re.compile(r"data:[\w.+/-]*(;[\w=.+-]*)*;base64,", re.ASCII)


def b64decode(text: str, name: str, max_bytes: int) -> bytes:
    """Standard or URL-safe base64 (a ``data:...;base64,`` prefix is allowed): 400 when
    malformed, 413 when the decoded bytes would exceed ``max_bytes``."""
    if not isinstance(text, str):
        raise ApiError(400, "bad_base64", f"{name}: expected a base64 string")
    text = _DATA_URL.sub("", text.strip(), count=1)
    if len(text) // 4 * 3 > max_bytes + 3:
        raise ApiError(413, "too_large", f"{name}: more than {max_bytes} bytes")
    alphabet = b"-_" if "-" in text or "_" in text else None
    try:
        data = base64.b64decode(text.encode("ascii"), altchars=alphabet, validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ApiError(400, "bad_base64", f"{name}: not valid base64") from None
    if len(data) > max_bytes:
        raise ApiError(413, "too_large", f"{name}: more than {max_bytes} bytes")
    return data


def check_content_type(content_type: str | None, name: str) -> None:
    """415 unless an upload's declared type is an image (or unspecified / octet-stream)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind and not kind.startswith("image/") and kind != "application/octet-stream":
        raise ApiError(415, "unsupported_media_type",
                       f"{name}: content type {kind!r} is not an image (send image/png, "
                       "image/jpeg, ...)")


def decode_image(data: bytes, name: str, limits: ServeLimits, mode: str) -> Image.Image:
    """The decoded image converted to ``mode`` ("L" or "RGB"), within ``limits``."""
    if len(data) > limits.max_upload_bytes:
        raise ApiError(413, "too_large", f"{name}: {len(data)} bytes, more than the limit of "
                                         f"{limits.max_upload_bytes}")
    if not data:
        raise ApiError(400, "bad_image", f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            w, h = img.size
            if w * h > limits.max_pixels:
                raise ApiError(413, "too_many_pixels",
                               f"{name}: {w}x{h} = {w * h} pixels, more than the limit of "
                               f"{limits.max_pixels}")
            img.load()
            return img.convert(mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, "too_many_pixels", f"{name}: more pixels than allowed") from None
    except Image.UnidentifiedImageError:
        raise ApiError(400, "bad_image", f"{name}: not an image in a supported format "
                                         f"({', '.join(FORMATS)})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ApiError(400, "bad_image", f"{name}: damaged or truncated image "
                                         f"({type(exc).__name__}: {exc})") from None


def model_array(img: Image.Image, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 [H, W] or [H, W, 3] at the model's (c, h, w) input size (bicubic, as ``hashlab
    search --image`` does)."""
    _, h, w = shape
    return np.array(img.resize((w, h), Image.Resampling.BICUBIC), dtype=np.uint8)


def png_bytes(img: Image.Image | np.ndarray) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def thumbnail_png(img: Image.Image, size: int) -> bytes:
    """A PNG no larger than ``size`` on its longer side (what is kept of an added item)."""
    thumb = img.copy()
    thumb.thumbnail((size, size))
    return png_bytes(thumb)
