"""LZ4 over the raw pixel bytes, in the framing of HDF5 filter 32004.

Source checked: silx-kit/hdf5plugin ``src/LZ4/H5Zlz4.c`` (the HDF Group's LZ4 filter): a chunk
is an 8-byte big-endian original size, a 4-byte big-endian block size, then per block a 4-byte
big-endian compressed size and the LZ4 block, stored raw when compression would not shrink it
(its decoder treats compressed size == block size as raw). imagecodecs' ``lz4h5_encode`` writes
this framing; with the default block size (1 GiB) an image is one block, and its output was
byte-identical to hdf5plugin's encoder on the sample photos and on noise. ``cd_values`` = [0]
(default block size), used by the filter's encoder only.
"""

from __future__ import annotations

from typing import Any

import imagecodecs

from ._bytes import ByteCodec
from .base import encoded
from .registry import register_codec

LZ4_FILTER_ID = 32004


@register_codec
class Lz4Codec(ByteCodec):
    """Lossless LZ4: the fastest to decode; no parameters."""

    codec_id = "lz4"
    filter_id = LZ4_FILTER_ID
    bench_grid = ({},)

    def _compress(self, data: bytes) -> bytes:
        return encoded(imagecodecs.lz4h5_encode(data))

    def _decompress(self, data: Any, size: int) -> bytes:
        return encoded(imagecodecs.lz4h5_decode(data, out=size))

    def _declared_size(self, data: Any) -> int:
        return int.from_bytes(bytes(data[:8]), "big")  # the filter's original-size field
