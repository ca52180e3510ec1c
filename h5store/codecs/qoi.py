"""QOI, the "Quite OK Image" format (through imagecodecs): lossless, RGB and RGBA, uint8, very
fast to code.

No HDF5 filter is registered for QOI: stacks declare h5store's opaque filter id and their
attributes name the codec; each chunk is one complete QOI file.
"""

from __future__ import annotations

from typing import Any

import imagecodecs
import numpy as np

from ..errors import CodecError
from ._image import ImageCodec, check_end
from .registry import register_codec

_MAGIC = b"qoif"
_END = b"\x00" * 7 + b"\x01"
#: The reference decoder refuses images of more pixels than this.
_MAX_PIXELS = 400_000_000


@register_codec
class QoiCodec(ImageCodec):
    """QOI: lossless, no parameters."""

    codec_id = "qoi"
    mime_type = "image/qoi"
    dtypes = frozenset({"uint8"})
    channels = frozenset({3, 4})
    default_lossless = True
    bench_grid = ({},)

    def __init__(self) -> None:
        super().__init__(lossless=True)

    def check_image(self, height: int, width: int, channels: int, dtype: np.dtype) -> None:
        super().check_image(height, width, channels, dtype)
        if height * width >= _MAX_PIXELS:
            raise CodecError(f"codec 'qoi' holds images of fewer than {_MAX_PIXELS} pixels, got {height}x{width}")

    def _encode_lossless(self, image: np.ndarray) -> bytes:
        return imagecodecs.qoi_encode(image)

    def _decode(self, data: Any, channels: int | None) -> np.ndarray:
        return imagecodecs.qoi_decode(data)

    def _check_stream(self, data: bytes) -> None:
        # The decoder fills missing pixels silently, so truncation is caught by the end marker.
        if len(data) < 14 + len(_END) or data[:4] != _MAGIC:
            raise CodecError("not a QOI stream (no qoif header)")
        if data[12] not in (3, 4) or data[13] not in (0, 1):
            raise CodecError("corrupt QOI stream: bad channel count or colour space in its header")
        check_end(data, _END, "QOI")
