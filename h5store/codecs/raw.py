"""Uncompressed: the chunk is the image's bytes, so any HDF5 reader needs no filter at all."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Codec, HDF5Filter


class RawCodec(Codec):
    codec_id = "raw"
    dtypes = frozenset({"uint8", "uint16"})
    channels = frozenset({1, 3, 4})

    @property
    def lossless(self) -> bool:
        return True

    def encode(self, image: np.ndarray) -> bytes:
        return image.astype(image.dtype.newbyteorder("<"), copy=False).tobytes()

    def decode(self, data: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).copy()

    def hdf5_filter(self, shape: tuple[int, ...], dtype: np.dtype) -> HDF5Filter | None:
        return None

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id}
