"""What one ``hashlab serve`` process accepts: sizes, counts, batching and time limits."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

__all__ = ["ServeLimits"]


@dataclass(frozen=True)
class ServeLimits:
    """Limits of the HTTP API (every one is checked before the work it bounds).

    ``max_upload_bytes``: one image file (413 beyond); ``max_pixels``: one image's width x
    height, read from its header before decoding (413); ``max_request_bytes``: a whole request
    body (413, checked on ``Content-Length`` and while reading); ``max_images``: images of one
    ``/v1/encode`` request; ``max_k``: the largest ``k`` of a search (422 beyond).
    Micro-batching of the encoder: at most ``max_batch`` images per forward pass, waiting at
    most ``max_delay_ms`` after the first one for more; at most ``max_queue`` images waiting
    (503 ``busy`` beyond); a request waits at most ``request_timeout_s`` for its codes (504).
    ``max_metadata_bytes``: an item's metadata as JSON; ``thumbnail_px``: the longer side of the
    image stored with an added item.
    """

    max_upload_bytes: int = 10 * 2**20
    max_pixels: int = 40_000_000
    max_request_bytes: int = 64 * 2**20
    max_images: int = 64
    max_k: int = 1000
    max_batch: int = 32
    max_delay_ms: float = 5.0
    max_queue: int = 256
    request_timeout_s: float = 30.0
    max_metadata_bytes: int = 16 * 2**10
    thumbnail_px: int = 256

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f"ServeLimits.{f.name}: expected a finite number, got {value!r}")
            if f.type == "int" and not isinstance(value, int):
                raise ValueError(f"ServeLimits.{f.name}: expected an int, got {value!r}")
            if f.name == "max_delay_ms" and value < 0:
                raise ValueError(f"ServeLimits.{f.name}: must be >= 0, got {value!r}")
            if f.name != "max_delay_ms" and (value < 1 if f.type == "int" else value <= 0):
                raise ValueError(f"ServeLimits.{f.name}: must be positive, got {value!r}")
