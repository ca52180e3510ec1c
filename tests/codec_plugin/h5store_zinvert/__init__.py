"""A lossless test codec: the inverted pixels, deflated. Its stream is not one any other codec
reads, so a store can only be read where this package is installed. Exported, a payload is a
``.zinv`` file, which carries metadata as a trailer: JSON, its length, and ``ZMD1``."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from h5store import Codec, CodecError


class ZInvertCodec(Codec):
    codec_id = "zinvert"
    dtypes = frozenset({"uint8"})
    channels = frozenset({1, 3})
    file_extension = ".zinv"
    embeds_metadata = True

    def __init__(self, level: int = 6):
        if not isinstance(level, int) or not 0 <= level <= 9:
            raise CodecError(f"zinvert: level must be an integer in [0, 9], got {level!r}")
        self.level = level

    @property
    def lossless(self) -> bool:
        return True

    def encode(self, image: np.ndarray) -> bytes:
        return zlib.compress(np.invert(image).tobytes(), self.level)

    def decode(self, data: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        try:
            raw = zlib.decompress(data)
        except zlib.error as exc:
            raise CodecError(f"zinvert: the payload does not inflate ({exc})") from None
        return np.invert(np.frombuffer(raw, dtype=np.uint8).reshape(shape))

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "level": self.level}

    def embed_metadata(
        self, data: bytes, metadata: Mapping[str, Any], size: tuple[int, int] | None = None
    ) -> bytes:
        text = json.dumps({**metadata, "size": size}).encode()
        return data + text + struct.pack("<I", len(text)) + _TRAILER

    def strip_metadata(self, data: bytes) -> bytes:
        if not data.endswith(_TRAILER):
            return data
        (length,) = struct.unpack("<I", data[-8:-4])
        return data[: -8 - length]


_TRAILER = b"ZMD1"
