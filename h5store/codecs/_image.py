"""The shared machinery of codecs whose chunk is one standard image stream (WebP, AVIF, JPEG XL,
JPEG 2000, HTJ2K, JPEG-LS, QOI): the uniform parameters (``quality``, ``lossless``, ``effort``),
their validation and plain-data configuration, decode checks, and probing of pre-encoded
streams. A codec module supplies the class attributes and four small hooks."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import CodecError
from ._quality import knob_for_quality
from .base import Codec, ImageInfo, check_quality, check_setting, decoded_image, image_info


class ImageCodec(Codec):
    """An image-stream codec with a lossless mode, a lossy mode, or both.

    Parameters, the same for every such codec:

    * ``quality`` (1-100): lossy modes only (``takes_quality``); mapped onto the codec's own
      knob so that equal numbers mean equal PSNR on photographs (see ``_quality``). Validated
      but unused in lossless mode.
    * ``lossless``: the switch, for codecs that have both modes.
    * ``effort``: encoder effort where the codec has one (higher = slower, smaller).

    Lossy modes hold uint8 only: their quality scale is calibrated on 8-bit photographs, and
    lossy 16-bit coding is not what uint16 users (medical, scientific) store; every lossless
    mode that the library codes exactly also takes uint16.
    """

    #: Whether the codec has a mathematically lossless mode.
    has_lossless: ClassVar[bool] = True
    #: The mode a codec is in when ``lossless`` is not given.
    default_lossless: ClassVar[bool] = False
    #: The dtypes the lossy mode holds.
    lossy_dtypes: ClassVar[frozenset[str]] = frozenset({"uint8"})
    #: (lowest, highest, default) encoder effort; None when the codec has no such setting.
    effort_range: ClassVar[tuple[int, int, int] | None] = None
    #: The codec's lossy knob at each of ``_quality.ANCHOR_QUALITIES`` (from ``_calibrate``).
    quality_knobs: ClassVar[tuple[float, ...]] = ()
    #: How to interpolate and sweep the knob: "linear", "log" or "int".
    knob_scale: ClassVar[str] = "linear"
    #: (low, high) range of the lossy knob, swept by ``_calibrate``; the first value is the
    #: lowest quality.
    knob_range: ClassVar[tuple[float, float]] = (0.0, 100.0)
    #: Most pixels (height x width) the codec's decoder accepts; None for no limit of its own.
    max_pixels: ClassVar[int | None] = None

    def __init__(self, quality: int = 90, lossless: bool | None = None, effort: int | None = None):
        self.quality = check_quality(quality)
        if lossless is None:
            lossless = self.default_lossless
        if not isinstance(lossless, (bool, np.bool_)):
            raise CodecError(f"{self.codec_id} lossless must be True or False, got {lossless!r}")
        if lossless and not self.has_lossless:
            raise CodecError(f"codec {self.codec_id!r} has no lossless mode")
        if not lossless and not self.takes_quality:
            raise CodecError(f"codec {self.codec_id!r} is lossless only")
        self._lossless = bool(lossless)
        self.effort = check_setting(effort, self.effort_range, "effort", self.codec_id)
        if not self._lossless:
            self.dtypes = type(self).dtypes & self.lossy_dtypes

    @property
    def lossless(self) -> bool:
        return self._lossless

    @property
    def knob(self) -> float:
        """The codec's own lossy setting for this quality."""
        return knob_for_quality(self.quality, self.quality_knobs, self.knob_scale)

    def check_image(self, height: int, width: int, channels: int, dtype: np.dtype) -> None:
        super().check_image(height, width, channels, dtype)
        if self.max_pixels is not None and height * width > self.max_pixels:
            raise CodecError(
                f"codec {self.codec_id!r} holds images of up to {self.max_pixels} pixels, "
                f"got {height}x{width}"
            )

    # ----------------------------------------------------------------- hooks for each codec

    def _encode_lossless(self, image: np.ndarray) -> bytes:
        raise NotImplementedError

    def _encode_lossy(self, image: np.ndarray, knob: float) -> bytes:
        raise NotImplementedError

    def _decode(self, data: Any, channels: int | None) -> np.ndarray:
        """Decode a stream; ``channels`` is the channel count the stack expects (None when
        probing), for formats that drop an opaque alpha channel."""
        raise NotImplementedError

    def _check_stream(self, data: bytes) -> None:
        """Raise CodecError unless ``data`` is structurally one complete stream of this format
        (signature, and an end marker or size fields that detect truncation)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- the Codec interface

    def encode(self, image: np.ndarray) -> bytes:
        try:
            if self._lossless:
                return self._encode_lossless(image)
            return self._encode_lossy(image, self.knob)
        except CodecError:
            raise
        except Exception as exc:  # the library refused the image
            raise CodecError(
                f"codec {self.codec_id!r} cannot encode a {image.shape} {image.dtype} image: {exc}"
            ) from None

    def decode(self, data: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        channels = 1 if len(shape) == 2 else shape[2]
        try:
            image = self._decode(data, channels)
        except Exception as exc:
            raise CodecError(
                f"codec {self.codec_id!r}: the stored stream does not decode ({exc})"
            ) from None
        return decoded_image(image, shape, dtype, self.codec_id)

    def probe(self, data: bytes) -> ImageInfo:
        data = bytes(data)
        self._check_stream(data)
        try:
            image = self._decode(data, None)
        except Exception as exc:
            raise CodecError(f"corrupt {self.codec_id} stream: {exc}") from None
        return image_info(image)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"id": self.codec_id}
        if self.has_lossless and self.takes_quality:
            config["lossless"] = self._lossless
        if not self._lossless:
            config["quality"] = self.quality
        if self.effort is not None:
            config["effort"] = self.effort
        return config


class LosslessImageCodec(ImageCodec):
    """An image-stream codec that is lossless only and takes no parameters (``lossless=True`` is
    accepted, so the switch means the same for every image codec)."""

    default_lossless = True

    def __init__(self, lossless: bool = True) -> None:
        super().__init__(lossless=lossless)


def with_opaque_alpha(image: np.ndarray, channels: int | None) -> np.ndarray:
    """Formats whose encoders drop an all-opaque alpha channel give back RGB; restore the
    alpha the stack holds."""
    if channels == 4 and image.ndim == 3 and image.shape[2] == 3:
        alpha = np.full(image.shape[:2] + (1,), np.iinfo(image.dtype).max, dtype=image.dtype)
        return np.concatenate([image, alpha], axis=2)
    return image


def check_end(data: bytes, marker: bytes, what: str) -> None:
    if not data.endswith(marker):
        raise CodecError(
            f"{what} stream is truncated or has trailing bytes (no end marker at its end)"
        )


def check_boxes(data: bytes, start: int, what: str) -> list[bytes]:
    """Walk the ISO base media file format boxes (AVIF, JPEG XL and JP2 containers) from
    ``start``; raise CodecError unless they tile the stream exactly. Returns the box types."""
    pos, n, kinds = start, len(data), []
    while pos < n:
        if pos + 8 > n:
            raise CodecError(f"{what} stream is truncated inside a box header at byte {pos}")
        size = int.from_bytes(data[pos : pos + 4], "big")
        header = 8
        if size == 1:
            if pos + 16 > n:
                raise CodecError(f"{what} stream is truncated inside a box header at byte {pos}")
            size, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:  # the last box runs to the end of the stream
            size = n - pos
        if size < header or pos + size > n:
            raise CodecError(
                f"{what} stream is truncated or corrupt: box at byte {pos} claims {size} bytes"
            )
        kinds.append(data[pos + 4 : pos + 8])
        pos += size
    return kinds
