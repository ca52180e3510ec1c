"""The shared machinery of codecs that compress an image's raw bytes (little-endian, row-major)
with a general-purpose compressor: the chunk is exactly what that compressor's HDF5 filter
reads, so plain HDF5 tools decode it into the image."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import CodecError
from .base import Codec, HDF5Filter, ImageInfo, check_setting, describe_geometry

#: deflate's largest compression ratio (1032:1, of long runs); LZ4 and zstd record their size.
_MAX_RATIO = 1032


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

    def _decompress(self, data: Any, size: int) -> bytes:
        """The payload decompressed: ``size`` bytes are expected, and the decompressor is given
        no room for more (a crafted payload cannot make it allocate what it declares)."""
        raise NotImplementedError

    def _declared_size(self, data: Any) -> int | None:
        """The decompressed size the payload's own header records (None where it records none;
        ``data`` may be a memoryview)."""
        return None

    def header_problem(self, data: Any, expected: ImageInfo) -> str | None:
        try:
            declared = self._declared_size(data)
        except Exception as exc:
            return f"its header is unreadable ({exc})"
        return size_problem(declared, len(data), expected)

    def encode(self, image: np.ndarray) -> bytes:
        return self._compress(image.astype(image.dtype.newbyteorder("<"), copy=False).tobytes())

    def decode(self, data: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        little = np.dtype(dtype).newbyteorder("<")
        expected = int(np.prod(shape)) * little.itemsize
        try:
            raw = self._decompress(data, expected)
        except Exception as exc:
            raise CodecError(
                f"codec {self.codec_id!r}: the stored payload does not decompress ({exc})"
            ) from None
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


def size_problem(declared: int | None, stored: int, expected: ImageInfo) -> str | None:
    """Why a payload of ``stored`` bytes whose header records ``declared`` decompressed bytes
    (None: records none) cannot hold an image of ``expected`` geometry. Checked before a
    buffer of the index's size is allocated: a crafted index claiming 100000 x 100000 must
    not make a read allocate 30 GB for a 1 kB payload."""
    want = expected.height * expected.width * expected.channels * expected.dtype.itemsize
    if declared is None:
        if want <= _MAX_RATIO * (stored + 1):
            return None
        holds = f"at most {_MAX_RATIO * (stored + 1)}"
    elif declared == want:
        return None
    else:
        holds = str(declared)
    return (
        f"it holds {holds} bytes, not the {want} of the stack's "
        f"{describe_geometry(expected)} images"
    )
