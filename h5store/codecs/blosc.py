"""Blosc2, written as the frame HDF5 filter 32026 (hdf5plugin's Blosc2) reads.

Each chunk payload is the contiguous frame (cframe) of a one-chunk ``blosc2.SChunk`` holding the
image's bytes; plain h5py with ``import hdf5plugin`` decodes it to the same array.
"""

from __future__ import annotations

from typing import Any

import blosc2
import numpy as np

from ..errors import CodecError
from ._bytes import size_problem
from .base import Codec, HDF5Filter, ImageInfo, check_level
from .registry import register_codec

BLOSC2_FILTER_ID = 32026
# hdf5plugin.Blosc2's numbering of the compressors and of the pre-filter, which the HDF5
# filter's cd_values carry.
_FRAME_MAGIC = b"b2frame\x00"
_CNAMES = {"blosclz": 0, "lz4": 1, "lz4hc": 2, "zlib": 4, "zstd": 5}
_FILTERS = {
    "noshuffle": (0, blosc2.Filter.NOFILTER),
    "shuffle": (1, blosc2.Filter.SHUFFLE),
    "bitshuffle": (2, blosc2.Filter.BITSHUFFLE),
    "bytedelta": (3, blosc2.Filter.BYTEDELTA),
}


@register_codec
class Blosc2Codec(Codec):
    """Lossless Blosc2. ``cname`` compressor, ``clevel`` 0-9, ``filter`` applied before it."""

    codec_id = "blosc2"
    dtypes = frozenset({"uint8", "uint16"})
    channels = frozenset({1, 3, 4})
    bench_grid = (
        {"cname": "lz4", "clevel": 5, "filter": "shuffle"},
        {"cname": "zstd", "clevel": 5, "filter": "shuffle"},
        {"cname": "zstd", "clevel": 5, "filter": "bitshuffle"},
        {"cname": "zstd", "clevel": 5, "filter": "bytedelta"},
    )

    def __init__(self, cname: str = "zstd", clevel: int = 5, filter: str = "shuffle"):
        if cname not in _CNAMES:
            raise CodecError(f"blosc2 cname must be one of {sorted(_CNAMES)}, got {cname!r}")
        if filter not in _FILTERS:
            raise CodecError(f"blosc2 filter must be one of {sorted(_FILTERS)}, got {filter!r}")
        self.cname = cname
        self.clevel = check_level(clevel, 0, 9, "clevel")
        self.filter = filter

    @property
    def lossless(self) -> bool:
        return True

    def _cparams(self, typesize: int) -> dict[str, Any]:
        filters = [blosc2.Filter.NOFILTER] * 5 + [_FILTERS[self.filter][1]]
        if self.filter == "bytedelta":  # bytedelta works on shuffled bytes
            filters = [blosc2.Filter.NOFILTER] * 4 + [
                blosc2.Filter.SHUFFLE,
                blosc2.Filter.BYTEDELTA,
            ]
        return {
            "codec": blosc2.Codec[self.cname.upper()],
            "clevel": self.clevel,
            "typesize": typesize,
            "filters": filters,
            "nthreads": 1,  # h5store parallelises across images
        }

    def encode(self, image: np.ndarray) -> bytes:
        schunk = blosc2.SChunk(
            chunksize=image.nbytes, data=image, cparams=self._cparams(image.itemsize)
        )
        return schunk.to_cframe()

    def decode(self, data: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        little = np.dtype(dtype).newbyteorder("<")
        schunk = blosc2.schunk_from_cframe(bytes(data), copy=False)
        # Decompressed into a buffer of the stack's size, never of the size the frame declares
        expected = int(np.prod(shape)) * little.itemsize
        if schunk.nchunks != 1 or schunk.nbytes != expected:
            raise CodecError(
                f"codec {self.codec_id!r}: the stored frame holds {schunk.nbytes} bytes in "
                f"{schunk.nchunks} chunks, not the {expected} of a {tuple(shape)} "
                f"{np.dtype(dtype)} image: the payload is damaged"
            )
        raw = bytearray(expected)
        schunk.decompress_chunk(0, dst=raw)
        return np.frombuffer(raw, dtype=little).reshape(shape)

    def header_problem(self, data: Any, expected: ImageInfo) -> str | None:
        # The contiguous frame's header (a msgpack array): "b2frame\0" at byte 2, then its
        # header size, frame size and flags, then the uncompressed size as a big-endian int64
        # at byte 30 (parsing the frame costs 15 us; this, 0.2)
        head = bytes(data[:38])
        if len(head) < 38 or head[2:10] != _FRAME_MAGIC or head[29] != 0xD3:
            return "its header is unreadable (not a blosc2 contiguous frame)"
        return size_problem(int.from_bytes(head[30:38], "big"), len(data), expected)

    def hdf5_filter(self, shape: tuple[int, ...], dtype: np.dtype) -> HDF5Filter:
        # hdf5plugin's layout; its set_local callback fills in the leading zeros (filter and
        # blosc versions, typesize, chunk bytes) and the shape when the stack is created.
        shuffle = _FILTERS[self.filter][0]
        return HDF5Filter(BLOSC2_FILTER_ID, (0, 0, 0, 0, self.clevel, shuffle, _CNAMES[self.cname]))

    def get_config(self) -> dict[str, Any]:
        return {
            "id": self.codec_id,
            "cname": self.cname,
            "clevel": self.clevel,
            "filter": self.filter,
        }
