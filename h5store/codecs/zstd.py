"""Zstandard over the raw pixel bytes, written as HDF5 filter 32015 reads it.

Source checked: silx-kit/hdf5plugin ``src/HDF5Plugin-Zstandard/zstd_h5plugin.c``: the decoder
sizes its output with ``ZSTD_getDecompressedSize`` and calls ``ZSTD_decompress`` on the whole
chunk, so the payload is one zstd frame that records its content size (``ZSTD_compress``, as
imagecodecs calls it, records it). ``cd_values`` = [level], used by its encoder only.
"""

from __future__ import annotations

from typing import Any

import imagecodecs

from ..errors import CodecError
from ._bytes import ByteCodec
from .base import encoded
from .registry import register_codec

ZSTD_FILTER_ID = 32015

_MAGIC = b"\x28\xb5\x2f\xfd"


@register_codec
class ZstdCodec(ByteCodec):
    """Lossless zstd; ``level`` 1-22 (default 3, zstd's own)."""

    codec_id = "zstd"
    filter_id = ZSTD_FILTER_ID
    level_range = (1, 22, 3)
    bench_grid = ({"level": 1}, {"level": 3}, {"level": 9})

    def _compress(self, data: bytes) -> bytes:
        return encoded(imagecodecs.zstd_encode(data, level=self.level))

    def _decompress(self, data: Any, size: int) -> bytes:
        return encoded(imagecodecs.zstd_decode(data, out=size))

    def _declared_size(self, data: Any) -> int:
        # RFC 8878 3.1.1.1: magic, frame header descriptor, window descriptor unless single
        # segment, dictionary id, then the frame content size (2 bytes: stored minus 256)
        head = bytes(data[:18])
        if len(head) < 6 or head[:4] != _MAGIC:
            raise CodecError("not a zstd frame")
        descriptor = head[4]
        single = (descriptor >> 5) & 1
        size_bytes = (1 if single else 0, 2, 4, 8)[descriptor >> 6]
        if not size_bytes:
            raise CodecError("the zstd frame does not record its content size")
        start = 5 + (not single) + (0, 1, 2, 4)[descriptor & 3]
        if len(head) < start + size_bytes:
            raise CodecError("truncated zstd frame header")
        size = int.from_bytes(head[start : start + size_bytes], "little")
        return size + 256 if size_bytes == 2 else size
