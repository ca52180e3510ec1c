"""Deflate over the raw pixel bytes: HDF5's built-in gzip filter (id 1), which every HDF5 build
and viewer decodes with no plugin.

HDF5's deflate filter (``H5Zdeflate.c``) inflates each chunk with zlib's ``inflate``, i.e. a
zlib stream (RFC 1950 header and Adler-32 trailer), which is what ``zlib_encode`` writes.
``cd_values`` = [level], used by its encoder only.
"""

from __future__ import annotations

from typing import Any

import imagecodecs

from ._bytes import ByteCodec
from .base import encoded
from .registry import register_codec

DEFLATE_FILTER_ID = 1


@register_codec
class DeflateCodec(ByteCodec):
    """Lossless deflate (gzip); ``level`` 1-9 (default 6, zlib's own)."""

    codec_id = "deflate"
    filter_id = DEFLATE_FILTER_ID
    level_range = (1, 9, 6)
    bench_grid = ({"level": 1}, {"level": 6}, {"level": 9})

    def _compress(self, data: bytes) -> bytes:
        return encoded(imagecodecs.zlib_encode(data, level=self.level))

    def _decompress(self, data: Any, size: int) -> bytes:
        return encoded(imagecodecs.zlib_decode(data, out=size))
