"""The shared machinery of codecs that compress an image's raw bytes (little-endian, row-major)
with a general-purpose compressor: the chunk is exactly what that compressor's HDF5 filter
reads, so plain HDF5 tools decode it into the image."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import CodecError
from .base import Codec, HDF5Filter, check_setting


class ByteCodec(Codec):
    """Lossless compression of the pixel bytes; ``level`` where the compressor has one."""

    dtypes = frozenset({"uint8", "uint16"})
    channels = frozenset({1, 3, 4})
    #: (lowest, highest, default) compression level; None when the compressor has none.
    level_range: ClassVar[tuple[int, int, int] | None] = None
    #: The HDF5 filter that decompresses the payload; None for none at all (raw bytes).
    filter_id: ClassVar[int | None] = None

    def __init__(self, level: int | None = None):
        self.level = check_setting(level, self.level_range, "level", self.codec_id)

    @property
    def lossless(self) -> bool:
        return True

    def _compress(self, data: bytes) -> bytes:
        raise NotImplementedError

    def _decompress(self, data: Any) -> bytes:
        raise NotImplementedError

    def encode(self, image: np.ndarray) -> bytes:
        return self._compress(image.astype(image.dtype.newbyteorder("<"), copy=False).tobytes())

    def decode(self, data: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        little = np.dtype(dtype).newbyteorder("<")
        try:
            raw = self._decompress(data)
        except Exception as exc:
            raise CodecError(
                f"codec {self.codec_id!r}: the stored payload does not decompress ({exc})"
            ) from None
        expected = int(np.prod(shape)) * little.itemsize
        if len(raw) != expected:
            raise CodecError(
                f"codec {self.codec_id!r}: the stored payload holds {len(raw)} bytes, not the "
                f"{expected} of a {tuple(shape)} {np.dtype(dtype)} image: the payload is damaged"
            )
        # A copy, so callers get a writable array that owns its memory.
        return np.frombuffer(raw, dtype=little).reshape(shape).astype(np.dtype(dtype).name)

    def hdf5_filter(self, shape: tuple[int, ...], dtype: np.dtype) -> HDF5Filter | None:
        # cd_values = [level] (0: the filter's default) serve only the filter's encoder.
        if self.filter_id is None:
            return None
        return HDF5Filter(self.filter_id, (self.level or 0,))

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"id": self.codec_id}
        if self.level is not None:
            config["level"] = self.level
        return config
