"""QOI, the "Quite OK Image" format (through imagecodecs): lossless, RGB and RGBA, uint8, very
fast to code.

No HDF5 filter is registered for QOI: stacks declare h5store's opaque filter id and their
attributes name the codec; each chunk is one complete QOI file.
"""

from __future__ import annotations

import struct
from typing import Any

import imagecodecs
import numpy as np

from ..errors import CodecError
from ._image import LosslessImageCodec, check_end
from .base import ImageInfo
from .registry import register_codec

_MAGIC = b"qoif"
_END = b"\x00" * 7 + b"\x01"
_UINT8 = np.dtype("uint8")


@register_codec
class QoiCodec(LosslessImageCodec):
    """QOI: lossless, no parameters."""

    codec_id = "qoi"
    mime_type = "image/qoi"
    file_extension = ".qoi"
    dtypes = frozenset({"uint8"})
    channels = frozenset({3, 4})
    max_pixels = 400_000_000 - 1  # the reference decoder refuses 400 million and more

    def _encode_lossless(self, image: np.ndarray) -> bytes:
        return imagecodecs.qoi_encode(image)

    def _decode(self, data: Any, channels: int | None) -> np.ndarray:
        return imagecodecs.qoi_decode(data)

    def header(self, data: Any) -> ImageInfo:
        head = bytes(data[:14])
        if len(head) < 14 or head[:4] != _MAGIC:
            raise CodecError("not a QOI stream (no qoif header)")
        width, height = struct.unpack(">II", head[4:12])
        return ImageInfo(height, width, head[12], _UINT8)

    def _check_stream(self, data: bytes) -> None:
        # The decoder fills missing pixels silently, so truncation is caught by the end marker.
        if len(data) < 14 + len(_END) or data[:4] != _MAGIC:
            raise CodecError("not a QOI stream (no qoif header)")
        if data[12] not in (3, 4) or data[13] not in (0, 1):
            raise CodecError("corrupt QOI stream: bad channel count or colour space in its header")
        check_end(data, _END, "QOI")
