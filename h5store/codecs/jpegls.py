"""JPEG-LS (CharLS through imagecodecs): lossless and near-lossless, gray, RGB and RGBA, uint8
and (lossless) uint16. Each chunk is one JPEG-LS file (SPIFF header, one frame).

Near-lossless mode (``lossless=False``) bounds every sample's error by NEAR; quality maps onto
NEAR by the same PSNR calibration as the other lossy codecs.

HDF5 filter: none declared (opaque id), because two incompatible decoders answer to filter
32012. The registered one (Frans van den Bergh and Derick Swanepoel's jpegls-hdf-filter,
continued as antonysigma/jpegls-hdf5-filter, ``jpegls-filter.cpp``) expects its own framing:
``cd_values`` = [row length, rows, bytes per sample] and a chunk of up to 24 little-endian
uint32 slice sizes followed by that many single-component JPEG-LS streams of row bands. Only
planetmarshall/h5jpegls (``src/h5jpegls.cpp``) also reads a plain stream, and only when given
four ``cd_values``; handed our plain stream, the registered decoder would read the SPIFF
header's bytes as slice sizes and copy past its buffer. A standard JPEG-LS stream per chunk is
what pre-encoded input and other tools need, so h5store keeps it and leaves 32012 undeclared.
"""

from __future__ import annotations

import struct
from typing import Any

import imagecodecs
import numpy as np

from ..errors import CodecError
from ._image import ImageCodec, check_end
from .base import ImageInfo, encoded
from .registry import register_codec

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_SOF55 = b"\xff\xf7"  # the JPEG-LS frame header
_UINT8, _UINT16 = np.dtype("uint8"), np.dtype("uint16")


@register_codec
class JpegLsCodec(ImageCodec):
    """JPEG-LS. ``lossless`` (default True), ``quality`` 1-100 for near-lossless mode."""

    codec_id = "jpegls"
    mime_type = "image/jls"
    dtypes = frozenset({"uint8", "uint16"})
    channels = frozenset({1, 3, 4})
    max_side = 65535
    takes_quality = True
    default_lossless = True
    bench_grid = ({"lossless": True}, {"lossless": False, "quality": 95})
    # CharLS NEAR (maximum sample error) at each anchor quality
    # (python -m h5store.codecs._calibrate).
    quality_knobs = (41, 21, 15, 13, 12, 11, 10, 9, 8, 7, 6, 5, 3)
    knob_scale = "int"
    knob_range = (60.0, 1.0)

    def _encode_lossless(self, image: np.ndarray) -> bytes:
        return encoded(imagecodecs.jpegls_encode(image))

    def _encode_lossy(self, image: np.ndarray, knob: float) -> bytes:
        return encoded(imagecodecs.jpegls_encode(image, level=int(knob)))

    def _decode(self, data: Any, channels: int | None) -> np.ndarray:
        return imagecodecs.jpegls_decode(data)

    def header(self, data: Any) -> ImageInfo:
        # The marker segments before the frame header (SPIFF's APP8 ones) are walked, as
        # CharLS walks them, to the first SOF55: precision, lines, columns, components.
        n, pos = len(data), 2
        if bytes(data[:2]) != _SOI:
            raise CodecError("not a JPEG-LS stream (no SOI marker)")
        for _ in range(64):
            segment = bytes(data[pos : pos + 10])
            if len(segment) < 4 or segment[0] != 0xFF:
                break
            if segment[:2] == _SOF55 and len(segment) == 10:
                precision, height, width, components = struct.unpack_from(">BHHB", segment, 4)
                if not height or not width:
                    raise CodecError("the JPEG-LS frame header declares no size")
                dtype = _UINT8 if precision <= 8 else _UINT16
                return ImageInfo(height, width, components, dtype)
            pos += 2 + int.from_bytes(segment[2:4], "big")
            if pos >= n:
                break
        raise CodecError("no JPEG-LS frame header among the first marker segments")

    def _check_stream(self, data: bytes) -> None:
        # CharLS spends seconds on some truncated streams before failing; refuse them first.
        if not data.startswith(_SOI) or _SOF55 not in data[:4096]:
            raise CodecError("not a JPEG-LS stream (no SOI marker and JPEG-LS frame header)")
        check_end(data, _EOI, "JPEG-LS")
