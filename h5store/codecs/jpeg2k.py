"""JPEG 2000 (OpenJPEG through imagecodecs): lossless (reversible 5/3 wavelet), gray, RGB and
RGBA, uint8 and uint16. Each chunk is one JP2 file (signature box, header, codestream box last).

No lossy mode. The only lossy knob imagecodecs exposes (``level``) is OpenJPEG's fixed-quality
mode, a target PSNR in dB rather than a 0-100 quality; it calibrates well on average (the
target that gives JPEG's PSNR is about 0.3 dB above it), but on low-variance content OpenJPEG's
rate allocator drops every detail: on 37,303 smooth 32x33 crops of the sample photos, 5,428
came back as one flat colour (some not even the right one: 23 dB where 37.75 was asked for).
A lossy mode that blanks smooth images is not one to offer.

HDF5 filter: none declared (opaque id). Filter id 32031 is registered for JPEG 2000 to
hmaarrfk/hdf5_jpeg2000 (HDFGroup/hdf5_plugins pull request 215, January 2026), but its source
was not available to check, and the registration thread records that its ``cd_values`` were
not yet defined; declaring 32031 without knowing the framing its decoder expects could make a
viewer decode wrong pixels.
"""

from __future__ import annotations

import struct
from typing import Any

import imagecodecs
import numpy as np

from ..errors import CodecError
from ._image import LosslessImageCodec, check_boxes, check_end
from .base import ImageInfo
from .registry import register_codec

_JP2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_CODESTREAM = b"\xff\x4f\xff\x51"  # SOC then SIZ
_EOC = b"\xff\xd9"
_UINT8, _UINT16 = np.dtype("uint8"), np.dtype("uint16")


def check_codestream_or_jp2(data: bytes, what: str, allow_jp2: bool) -> None:
    """A JPEG 2000 family stream is complete when it ends with the codestream's EOC marker
    (OpenJPEG and OpenJPH decode truncated streams without complaint)."""
    if allow_jp2 and data.startswith(_JP2):
        check_boxes(data, 0, what)
    elif not data.startswith(_CODESTREAM):
        jp2 = "JP2 signature or " if allow_jp2 else ""
        raise CodecError(f"not a {what} stream (no {jp2}SOC/SIZ codestream header)")
    check_end(data, _EOC, what)


def codestream_geometry(data: Any) -> ImageInfo:
    """The image size, components and sample depth of a JPEG 2000 family stream's SIZ marker
    segment (``data``: bytes or a memoryview; a JP2 file's top-level boxes are walked to its
    codestream box, which the decoders read; only headers are read)."""
    start = 0
    if bytes(data[: len(_JP2)]) == _JP2:
        start, n = None, len(data)
        pos = 0
        for _ in range(64):  # a JP2 file h5store stores has four top-level boxes
            if pos + 8 > n:
                break
            size = int.from_bytes(bytes(data[pos : pos + 4]), "big")
            if bytes(data[pos + 4 : pos + 8]) == b"jp2c":
                start = pos + 8
                break
            if size < 8:
                break
            pos += size
        if start is None:
            raise CodecError("JP2 file without a codestream box")
    siz = bytes(data[start : start + 43])
    if len(siz) < 43 or siz[:4] != _CODESTREAM:
        raise CodecError("no SOC/SIZ codestream header")
    width, height, x0, y0 = struct.unpack_from(">IIII", siz, 8)
    components, depth = int.from_bytes(siz[40:42], "big"), (siz[42] & 0x7F) + 1
    if width <= x0 or height <= y0:
        raise CodecError("the SIZ marker declares an empty image")
    return ImageInfo(height - y0, width - x0, components, _UINT8 if depth <= 8 else _UINT16)


@register_codec
class Jpeg2kCodec(LosslessImageCodec):
    """JPEG 2000: lossless, no parameters."""

    codec_id = "jpeg2k"
    mime_type = "image/jp2"
    file_extension = ".jp2"
    other_extensions = (".j2k",)
    dtypes = frozenset({"uint8", "uint16"})
    channels = frozenset({1, 3, 4})

    def _encode_lossless(self, image: np.ndarray) -> bytes:
        return imagecodecs.jpeg2k_encode(image, reversible=True, codecformat="JP2", numthreads=1)

    def _decode(self, data: Any, channels: int | None) -> np.ndarray:
        return imagecodecs.jpeg2k_decode(data, numthreads=1)

    def _check_stream(self, data: bytes) -> None:
        check_codestream_or_jp2(data, "JPEG 2000", allow_jp2=True)

    def header(self, data: Any) -> ImageInfo:
        return codestream_geometry(data)
