"""AVIF (libavif with the AOM coder, through imagecodecs), lossy and lossless, gray, RGB and
RGBA, uint8.

libavif's default speed took 1.3 s for one 224 px image here; the default ``effort`` 2 is speed
8, about 25 ms, which keeps the benchmark grid affordable. ``lossless=True`` is libavif's
quality 100 (identity matrix, no chroma subsampling), exact on every image it accepts.

No HDF5 filter is registered for AVIF: stacks declare h5store's opaque filter id and their
attributes name the codec and MIME type; each chunk is one complete AVIF file.
"""

from __future__ import annotations

from typing import Any

import imagecodecs
import numpy as np

from ..errors import CodecError
from ._image import ImageCodec, check_boxes, with_opaque_alpha
from .registry import register_codec

_LOSSLESS_LEVEL = 100  # libavif's AVIF_QUALITY_LOSSLESS


@register_codec
class AvifCodec(ImageCodec):
    """AVIF. ``quality`` 1-100 (lossy), ``lossless`` (default False), ``effort`` 0-10 (10 minus
    libavif's speed; default 2 = speed 8)."""

    codec_id = "avif"
    mime_type = "image/avif"
    file_extension = ".avif"
    dtypes = frozenset({"uint8"})
    channels = frozenset({1, 3, 4})
    # libavif's decoder limits: it encodes larger images that it then refuses to decode.
    max_side = 32768
    max_pixels = 16384 * 16384
    takes_quality = True
    effort_range = (0, 10, 2)
    bench_grid = ({"quality": 50}, {"quality": 80}, {"quality": 90})
    # libavif quality (0-99 lossy) at each anchor quality (python -m h5store.codecs._calibrate).
    quality_knobs = (
        0.0,
        7.18,
        23.43,
        33.68,
        38.51,
        43.56,
        46.08,
        49.96,
        55.9,
        61.69,
        67.98,
        80.21,
        91.06,
    )
    knob_range = (0.0, 99.0)

    def _encode(self, image: np.ndarray, level: int) -> bytes:
        return imagecodecs.avif_encode(image, level=level, speed=10 - self.effort, numthreads=1)

    def _encode_lossless(self, image: np.ndarray) -> bytes:
        return self._encode(image, _LOSSLESS_LEVEL)

    def _encode_lossy(self, image: np.ndarray, knob: float) -> bytes:
        return self._encode(image, int(round(knob)))

    def _decode(self, data: Any, channels: int | None) -> np.ndarray:
        return with_opaque_alpha(imagecodecs.avif_decode(data, numthreads=1), channels)

    def _check_stream(self, data: bytes) -> None:
        if len(data) < 12 or data[4:8] != b"ftyp":
            raise CodecError("not an AVIF stream (no ftyp box)")
        check_boxes(data, 0, "AVIF")
