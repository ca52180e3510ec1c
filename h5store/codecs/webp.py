"""WebP (libwebp through imagecodecs), lossy and lossless, RGB and RGBA, uint8.

Lossy WebP must be asked for with ``lossless=False``: imagecodecs' ``webp_encode`` picks the
lossless coder whenever ``lossless`` is left unset, whatever the ``level``.

No HDF5 filter is registered for WebP: stacks declare h5store's opaque filter id and their
attributes name the codec and MIME type; each chunk is one complete RIFF/WebP file.
"""

from __future__ import annotations

from typing import Any

import imagecodecs
import numpy as np

from ..errors import CodecError
from ._image import ImageCodec
from .registry import register_codec


@register_codec
class WebpCodec(ImageCodec):
    """WebP. ``quality`` 1-100 (lossy), ``lossless`` (default False), ``effort`` 0-6 (libwebp's
    "method"; default 4, libwebp's own)."""

    codec_id = "webp"
    mime_type = "image/webp"
    dtypes = frozenset({"uint8"})
    channels = frozenset({3, 4})  # libwebp codes no grayscale
    max_side = 16383
    takes_quality = True
    effort_range = (0, 6, 4)
    bench_grid = (
        {"quality": 50},
        {"quality": 80},
        {"quality": 90},
        {"lossless": True, "effort": 1},
    )
    # libwebp quality at each anchor quality (python -m h5store.codecs._calibrate).
    quality_knobs = (
        0.0,
        1.655,
        11.09,
        23.98,
        33.72,
        42.47,
        52.03,
        65.73,
        77.7,
        81.84,
        86.83,
        93.18,
        100.0,
    )

    def _encode_lossless(self, image: np.ndarray) -> bytes:
        return imagecodecs.webp_encode(image, lossless=True, method=self.effort, numthreads=1)

    def _encode_lossy(self, image: np.ndarray, knob: float) -> bytes:
        return imagecodecs.webp_encode(
            image, level=knob, lossless=False, method=self.effort, numthreads=1
        )

    def _decode(self, data: Any, channels: int | None) -> np.ndarray:
        # Encoders drop an all-opaque alpha channel; ask for it back when the stack has one.
        return imagecodecs.webp_decode(data, hasalpha=True if channels == 4 else None)

    def _check_stream(self, data: bytes) -> None:
        if len(data) < 20 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
            raise CodecError("not a WebP stream (no RIFF/WEBP header)")
        if int.from_bytes(data[4:8], "little") + 8 != len(data):
            raise CodecError("WebP stream is truncated or has trailing bytes (RIFF size mismatch)")
