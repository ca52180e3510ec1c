"""Zstandard over the raw pixel bytes, written as HDF5 filter 32015 reads it.

Source checked: silx-kit/hdf5plugin ``src/HDF5Plugin-Zstandard/zstd_h5plugin.c``: the decoder
sizes its output with ``ZSTD_getDecompressedSize`` and calls ``ZSTD_decompress`` on the whole
chunk, so the payload is one zstd frame that records its content size (``ZSTD_compress``, as
imagecodecs calls it, records it). ``cd_values`` = [level], used by its encoder only.
"""

from __future__ import annotations

from typing import Any

import imagecodecs

from ._bytes import ByteCodec
from .registry import register_codec

ZSTD_FILTER_ID = 32015


@register_codec
class ZstdCodec(ByteCodec):
    """Lossless zstd; ``level`` 1-22 (default 3, zstd's own)."""

    codec_id = "zstd"
    filter_id = ZSTD_FILTER_ID
    level_range = (1, 22, 3)
    bench_grid = ({"level": 1}, {"level": 3}, {"level": 9})

    def _compress(self, data: bytes) -> bytes:
        return imagecodecs.zstd_encode(data, level=self.level)

    def _decompress(self, data: Any) -> bytes:
        return imagecodecs.zstd_decode(data)
