"""Checking an uploaded image before anything is written: size, format, pixels (no decompression bomb).

The bytes are read from memory only. The header is read first: a file whose width x height exceeds
the limit is refused before a single pixel is decoded (a "zip bomb" PNG declares a huge canvas in a
few kilobytes), and PIL's own DecompressionBombError is caught too. The format comes from the file's
content, never from its name or the client's Content-Type, and must be on the allow-list.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}  # PIL format -> what we call it
MIN_SIDE = 16  # outputs/edit.py's MIN_SIDE: smaller images are refused there too


class UploadError(Exception):
    """A refused upload: `status` (413 or 422) and a one-line reason."""

    def __init__(self, status: int, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


@dataclass
class Upload:
    data: bytes
    format: str
    size: tuple[int, int]
    sha256: str

    def image(self) -> Any:
        """The decoded image, EXIF rotation applied (as `emogen edit` reads files)."""
        from PIL import Image, ImageOps

        with Image.open(io.BytesIO(self.data)) as image:
            image.load()
            return ImageOps.exif_transpose(image)


def check_upload(data: bytes, max_bytes: int, max_pixels: int) -> Upload:
    """`data` as an accepted image, or UploadError saying why not."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > max_bytes:
        raise UploadError(413, f"The image is {len(data):,} bytes, above the limit of {max_bytes:,}.",
                          "Send a smaller file (or start the server with a larger serve.max_upload_mb).")
    if not data:
        raise UploadError(422, "The image file is empty.")
    try:
        with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
            fmt, (w, h) = image.format, image.size
            if w * h > max_pixels:
                raise UploadError(422, f"The image is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,}.",
                                  "Resize it first (or start the server with a larger serve.max_pixels).")
            if min(w, h) < MIN_SIDE:
                raise UploadError(422, f"The image is {w}x{h} pixels, too small (at least {MIN_SIDE}x{MIN_SIDE}).")
            image.load()  # decodes at most max_pixels pixels: a truncated or corrupt file fails here
    except UploadError:
        raise
    except Image.DecompressionBombError:
        raise UploadError(422, "The image declares more pixels than any photo (a decompression bomb).") from None
    except UnidentifiedImageError:
        raise UploadError(422, f"The file is not an image in an accepted format ({', '.join(FORMATS.values())}).",
                          "Send a PNG, JPEG or WebP file.") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UploadError(422, f"The image does not decode ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}).",
                          "Send a complete PNG, JPEG or WebP file.") from None
    return Upload(data, FORMATS[fmt], (w, h), hashlib.sha256(data).hexdigest())
