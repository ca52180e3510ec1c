"""Uncompressed: the chunk is the image's bytes, so any HDF5 reader needs no filter at all."""

from __future__ import annotations

from typing import Any

from ._bytes import ByteCodec
from .registry import register_codec


@register_codec
class RawCodec(ByteCodec):
    codec_id = "raw"

    def _compress(self, data: bytes) -> bytes:
        return data

    def _decompress(self, data: Any, size: int) -> Any:
        return data

    def _declared_size(self, data: Any) -> int:
        return len(data)
