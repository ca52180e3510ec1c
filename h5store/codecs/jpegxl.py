"""JPEG XL (libjxl through imagecodecs), lossy and lossless, gray, RGB and RGBA.

Lossy quality maps onto libjxl's butteraugli ``distance`` (imagecodecs' ``level`` is a libjxl
quality that it converts to a distance itself; the distance is the knob libjxl documents).
Lossy mode holds uint8 only. DESIGN section 9 recorded garbage (PSNR 4 dB) from
``jpegxl_encode(level=90)`` on uint16; coded by distance, uint16 came out plausible here (31-35
dB), but the quality scale is calibrated on 8-bit photographs and lossy 16-bit output is not
verified, so only ``lossless=True`` (exact on uint8 and uint16 alike) takes uint16.

No HDF5 filter is registered for JPEG XL: stacks declare h5store's opaque filter id and their
attributes name the codec and MIME type; each chunk is one JPEG XL codestream or container.
"""

from __future__ import annotations

from typing import Any

import imagecodecs
import numpy as np

from ..errors import CodecError
from ._image import ImageCodec, check_boxes
from .registry import register_codec

_CODESTREAM = b"\xff\x0a"
_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"


@register_codec
class JpegXlCodec(ImageCodec):
    """JPEG XL. ``quality`` 1-100 (lossy), ``lossless`` (default False), ``effort`` 1-9
    (libjxl's own; default 7)."""

    codec_id = "jpegxl"
    mime_type = "image/jxl"
    file_extension = ".jxl"
    dtypes = frozenset({"uint8", "uint16"})
    channels = frozenset({1, 3, 4})
    max_side = 2**18  # libjxl's limit for level 5 codestreams
    takes_quality = True
    effort_range = (1, 9, 7)
    bench_grid = (
        {"quality": 50},
        {"quality": 80},
        {"quality": 90},
        {"lossless": True, "effort": 3},
    )
    # libjxl distance at each anchor quality (python -m h5store.codecs._calibrate).
    quality_knobs = (
        25.0,
        17.08,
        8.944,
        6.219,
        4.811,
        4.007,
        3.418,
        2.777,
        2.05,
        1.666,
        1.22,
        0.7708,
        0.3669,
    )
    knob_scale = "log"
    knob_range = (25.0, 0.05)

    def _encode_lossless(self, image: np.ndarray) -> bytes:
        return imagecodecs.jpegxl_encode(image, lossless=True, effort=self.effort, numthreads=1)

    def _encode_lossy(self, image: np.ndarray, knob: float) -> bytes:
        return imagecodecs.jpegxl_encode(image, distance=knob, effort=self.effort, numthreads=1)

    def _decode(self, data: Any, channels: int | None) -> np.ndarray:
        return imagecodecs.jpegxl_decode(data, numthreads=1)

    def _check_stream(self, data: bytes) -> None:
        # A bare codestream has no end marker: libjxl refuses truncated ones (every cut of a
        # sample stream failed) but ignores bytes after a complete one, which then stay stored.
        if data.startswith(_CONTAINER):
            check_boxes(data, 0, "JPEG XL")
        elif not data.startswith(_CODESTREAM):
            raise CodecError("not a JPEG XL stream (no codestream or container signature)")
