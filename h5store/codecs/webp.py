"""WebP (libwebp through imagecodecs), lossy and lossless, RGB and RGBA, uint8.

Lossy WebP must be asked for with ``lossless=False``: imagecodecs' ``webp_encode`` picks the
lossless coder whenever ``lossless`` is left unset, whatever the ``level``.

No HDF5 filter is registered for WebP: stacks declare h5store's opaque filter id and their
attributes name the codec and MIME type; each chunk is one complete RIFF/WebP file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import imagecodecs
import numpy as np

from ..errors import CodecError
from ._embed import embed_webp, strip_webp
from ._image import ImageCodec
from .base import ImageInfo, describe_geometry
from .registry import register_codec


def _webp_size(data: Any) -> tuple[int, int]:
    """(height, width) from a WebP file's first chunk: VP8X's canvas, or the VP8 (lossy) or
    VP8L (lossless) bitstream header (only the first 30 bytes are read)."""
    head = bytes(data[:30])
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        raise CodecError("not a WebP stream (no RIFF/WEBP header)")
    kind = head[12:16]
    if kind == b"VP8X":
        return 1 + int.from_bytes(head[27:30], "little"), 1 + int.from_bytes(head[24:27], "little")
    if kind == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + ((bits >> 14) & 0x3FFF), 1 + (bits & 0x3FFF)
    if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return (
            int.from_bytes(head[28:30], "little") & 0x3FFF,
            int.from_bytes(head[26:28], "little") & 0x3FFF,
        )
    raise CodecError(f"WebP stream with a first chunk {kind!r} that declares no size")


@register_codec
class WebpCodec(ImageCodec):
    """WebP. ``quality`` 1-100 (lossy), ``lossless`` (default False), ``effort`` 0-6 (libwebp's
    "method"; default 4, libwebp's own)."""

    codec_id = "webp"
    mime_type = "image/webp"
    file_extension = ".webp"
    embeds_metadata = True
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

    def header_problem(self, data: Any, expected: ImageInfo) -> str | None:
        # Only the size: whether a stream carries alpha does not decide the channels (encoders
        # drop an all-opaque alpha, which the decoder restores for a 4-channel stack).
        try:
            height, width = _webp_size(data)
        except Exception as exc:
            return f"its header is unreadable ({exc})"
        if (height, width) != (expected.height, expected.width):
            return (
                f"its header declares a {height}x{width} image, "
                f"not the stack's {describe_geometry(expected)}"
            )
        return None

    def _check_stream(self, data: bytes) -> None:
        if len(data) < 20 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
            raise CodecError("not a WebP stream (no RIFF/WEBP header)")
        if int.from_bytes(data[4:8], "little") + 8 != len(data):
            raise CodecError("WebP stream is truncated or has trailing bytes (RIFF size mismatch)")

    def embed_metadata(
        self, data: bytes, metadata: Mapping[str, Any], size: tuple[int, int] | None = None
    ) -> bytes:
        """An EXIF chunk, in the extended (VP8X) container; the image chunk kept as it is."""
        return embed_webp(data, metadata, size)

    def strip_metadata(self, data: bytes) -> bytes:
        return strip_webp(data)
