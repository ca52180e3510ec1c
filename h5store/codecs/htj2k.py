"""High-throughput JPEG 2000 (HTJ2K, JPEG 2000 part 15; OpenJPH through imagecodecs): lossless,
gray, RGB and RGBA, uint8 and uint16. Very fast in both directions.

Each chunk is one bare HTJ2K codestream (SOC ... EOC), which is exactly what HDF5 filter 32033
reads. Source checked: silx-kit/h5z-htj2k, ``H5Zhtj2k.c`` and ``src/backend_openjph.cpp``
(the filter hdf5plugin ships): the decoder requires the codestream magic FF 4F, decodes with
OpenJPH into pixel-interleaved samples of the codestream's size and component count, and reads
only ``cd_values[0]`` (filter version, 1) and ``cd_values[1]`` (data type: 1 = uint8,
2 = little-endian uint16) when decompressing; width, height and component count
(``cd_values[2:5]``) serve its encoder. Its ``set_local`` refuses chunks whose third non-unity
dimension is not 3, so 1- and 3-channel stacks declare 32033 and RGBA stacks keep h5store's
opaque id. Tested, not assumed: ``tests/test_codecs.py`` reads such stacks with plain h5py +
hdf5plugin.

No lossy mode: irreversible (9/7) HTJ2K from this OpenJPH wraps samples that overshoot the range
instead of clipping them (a 254 next to dark pixels came back as 0, in imagecodecs' decoder and
in the filter's alike), so a lossy stack would show speckles in every viewer.
"""

from __future__ import annotations

from typing import Any

import imagecodecs
import numpy as np

from ._image import LosslessImageCodec
from .base import HDF5Filter, ImageInfo, encoded
from .jpeg2k import check_codestream_or_jp2, codestream_geometry
from .registry import register_codec

HTJ2K_FILTER_ID = 32033
_FILTER_VERSION = 1
_FILTER_DTYPES = {"uint8": 0x0001, "uint16": 0x0002}  # little-endian, unsigned


@register_codec
class Htj2kCodec(LosslessImageCodec):
    """HTJ2K: lossless, no parameters."""

    codec_id = "htj2k"
    mime_type = "image/jphc"  # a bare HTJ2K codestream (ISO/IEC 15444-15)
    dtypes = frozenset({"uint8", "uint16"})
    channels = frozenset({1, 3, 4})

    def _encode_lossless(self, image: np.ndarray) -> bytes:
        return encoded(imagecodecs.htj2k_encode(image, reversible=True))

    def _decode(self, data: Any, channels: int | None) -> np.ndarray:
        return imagecodecs.htj2k_decode(data)

    def _check_stream(self, data: bytes) -> None:
        check_codestream_or_jp2(data, "HTJ2K", allow_jp2=False)

    def header(self, data: Any) -> ImageInfo:
        return codestream_geometry(data)

    def hdf5_filter(self, shape: tuple[int, ...], dtype: np.dtype) -> HDF5Filter | None:
        channels = 1 if len(shape) == 2 else shape[2]
        if channels not in (1, 3):
            return super().hdf5_filter(shape, dtype)
        code = _FILTER_DTYPES[np.dtype(dtype).name]
        return HDF5Filter(HTJ2K_FILTER_ID, (_FILTER_VERSION, code, shape[1], shape[0], channels))
