"""Baseline JPEG (libjpeg-turbo through imagecodecs), laid out for HDF5 filter 32019.

The HDF Group's JPEG filter decodes each chunk with libjpeg into
``output_height x output_width x output_components`` bytes without comparing that to the chunk
shape, so every stream stored here must be exactly the stack's height, width and channel count:
encoded ones by construction, pre-encoded ones after :func:`parse_jpeg_header`.

Optimised JPEG: imagecodecs' wheel has no mozjpeg (``imagecodecs.MOZJPEG.available`` is False),
so there is no trellis quantisation or mozjpeg scan tuning. ``optimize=True`` is what remains:
libjpeg-turbo computes Huffman tables for each image instead of using the standard ones, giving
the same pixels in a smaller stream that is still baseline (SOF0), so filter 32019 decodes it.
The benchmark grid includes it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any

import imagecodecs
import numpy as np

from ..errors import CodecError
from ._embed import embed_jpeg, strip_jpeg
from .base import Codec, HDF5Filter, ImageInfo, check_quality, damaged_payload, geometry
from .registry import register_codec

JPEG_FILTER_ID = 32019
SUBSAMPLINGS = ("444", "422", "420")
# Start-of-frame markers libjpeg decodes into 8-bit samples: baseline, extended sequential and
# progressive Huffman coding. Lossless, hierarchical and arithmetic-coded frames are refused.
_DECODABLE_SOF = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive"}
_UINT8 = np.dtype("uint8")
_SEGMENT = struct.Struct(">BBH")  # 0xFF, marker, segment length
_FRAME = struct.Struct(">BHHB")  # precision, height, width, components
_OTHER_SOF = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


# Headers walked already, keyed by their bytes up to and including the scan's length field.
# One encoder writes the same header for every image of one size and quality, and a walk over
# identical bytes ends identically, so a batch of pre-encoded images walks one header.
_KNOWN_HEADERS: dict[bytes, ImageInfo] = {}
_KNOWN_HEADERS_MAX = 64
_KNOWN_HEADER_MAX_BYTES = 4096
_EOI = b"\xff\xd9"
#: (header, length needed, frame) of the last stream probed alone, for the next one
_LAST_HEADER: tuple[bytes, int, ImageInfo] | None = None


def _remember_header(header: bytes, need: int, info: ImageInfo) -> None:
    global _LAST_HEADER
    _LAST_HEADER = (header, need, info)


def parse_jpeg_header(data: bytes) -> ImageInfo:
    """Walk the marker segments of one JPEG stream; raise CodecError unless it is a complete
    8-bit, 1- or 3-component stream that libjpeg (and so filter 32019) decodes."""
    return _parse_jpeg_header(data if isinstance(data, bytes) else bytes(data))[0]


def _parse_jpeg_header(data: bytes) -> tuple[ImageInfo, bytes | None, int]:
    """The stream's frame, and what decides it: every stream that starts with the returned
    header bytes, ends with EOI and is at least the returned length long has the same frame
    (header None: the walk depended on more than the header)."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        raise CodecError("not a JPEG stream (no SOI marker)")
    if not data.endswith(_EOI):
        raise CodecError(
            "JPEG stream is truncated or has trailing bytes (no EOI marker at its end)"
        )
    scan = data.find(b"\xff\xda", 2)
    key = data[: scan + 4] if 0 < scan and scan + 4 <= min(n, _KNOWN_HEADER_MAX_BYTES) else None
    # The one check of the walk that reads past the key: does the scan segment fit?
    need = scan + 2 + int.from_bytes(key[-2:], "big") if key is not None else n + 1
    info = _KNOWN_HEADERS.get(key) if key is not None else None
    if info is not None and need <= n:
        return info, key, need
    info, scan_at = _walk_jpeg_header(data)
    # Only a walk that ended at the first 0xFFDA depended on nothing but the key's bytes (an
    # earlier 0xFFDA sits inside some segment, e.g. an Exif thumbnail).
    if scan_at != scan or key is None:
        return info, None, 0
    if len(_KNOWN_HEADERS) < _KNOWN_HEADERS_MAX:
        _KNOWN_HEADERS[key] = info
    return info, key, need


def _jpeg_frame(data: Any) -> tuple[ImageInfo, int]:
    """The frame header of a stored stream (bytes or a memoryview) and where it ends: libjpeg
    sizes its output from the first frame header, and refuses a second one."""
    if bytes(data[:2]) != b"\xff\xd8":
        raise CodecError("not a JPEG stream (no SOI marker)")
    return _walk_jpeg_header(data, frame_only=True)


def _walk_jpeg_header(data: Any, frame_only: bool = False) -> tuple[ImageInfo, int]:
    """The frame of a stream whose SOI and EOI were checked, and where its first scan starts
    (``frame_only``: where the frame header ends, read no further)."""
    n = len(data)
    unpack = _SEGMENT.unpack_from
    pos = 2
    info = None
    while True:
        if pos + 4 > n:
            raise CodecError(f"corrupt JPEG stream: expected a marker at byte {pos}")
        ff, marker, length = unpack(data, pos)
        if ff != 0xFF:
            raise CodecError(f"corrupt JPEG stream: expected a marker at byte {pos}")
        if marker == 0xFF:  # a fill byte before a marker
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        if marker in (0xD8, 0xD9):
            raise CodecError(f"corrupt JPEG stream: unexpected marker 0xFF{marker:02X} at {pos}")
        if length < 2 or pos + 2 + length > n:
            raise CodecError(f"corrupt JPEG stream: bad segment length at byte {pos}")
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            if info is None:
                raise CodecError("corrupt JPEG stream: scan before frame header")
            return info, pos
        if marker in _DECODABLE_SOF:
            if info is not None:
                raise CodecError("JPEG stream has more than one frame header")
            if length < 8:
                raise CodecError("corrupt JPEG stream: short frame header")
            precision, height, width, components = _FRAME.unpack_from(data, pos + 4)
            if precision != 8:
                raise CodecError(f"JPEG stream has {precision}-bit samples; only 8-bit is stored")
            if height == 0 or width == 0:
                raise CodecError("JPEG stream does not declare its height and width")
            if components not in (1, 3):
                raise CodecError(f"JPEG stream has {components} components; 1 or 3 are stored")
            info = ImageInfo(height, width, components, _UINT8)
            if frame_only:
                return info, pos + 2 + length
        elif marker in _OTHER_SOF:
            raise CodecError(
                f"JPEG coding process 0xFF{marker:02X} is not decodable by filter 32019"
            )
        pos += 2 + length


@register_codec
class JpegCodec(Codec):
    """Lossy JPEG. ``quality`` 1-100, chroma ``subsampling`` ("444", "422", "420"),
    ``optimize`` for optimised Huffman tables (smaller files, same pixels, still baseline)."""

    codec_id = "jpeg"
    mime_type = "image/jpeg"
    file_extension = ".jpg"
    other_extensions = (".jpeg",)
    embeds_metadata = True
    dtypes = frozenset({"uint8"})
    channels = frozenset({1, 3})
    takes_quality = True
    max_side = 65535
    bench_grid = (
        *({"quality": q} for q in (50, 70, 80, 90, 95, 98)),
        {"quality": 90, "optimize": True},
    )

    def __init__(self, quality: int = 90, subsampling: str = "420", optimize: bool = False):
        self.quality = check_quality(quality)
        if subsampling not in SUBSAMPLINGS:
            raise CodecError(f"JPEG subsampling must be one of {SUBSAMPLINGS}, got {subsampling!r}")
        self.subsampling = subsampling
        self.optimize = bool(optimize)

    @property
    def lossless(self) -> bool:
        return False

    def encode(self, image: np.ndarray) -> bytes:
        return imagecodecs.jpeg8_encode(
            image, level=self.quality, subsampling=self.subsampling, optimize=self.optimize
        )

    def decode(self, data: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return imagecodecs.jpeg8_decode(data)

    def header(self, data: Any) -> ImageInfo:
        return _jpeg_frame(data)[0]

    def decode_bounded(
        self, data: Any, shape: tuple[int, ...], dtype: np.dtype, out: np.ndarray | None
    ) -> np.ndarray:
        # libjpeg-turbo compares its frame header with out's shape before it decodes a byte
        return imagecodecs.jpeg8_decode(data, out=np.empty(shape, _UINT8) if out is None else out)

    def header_checker(self, expected: ImageInfo):
        # The streams of one stack repeat the bytes up to the end of their frame header (the
        # Huffman tables, which optimize=True makes per image, come after it), so a stream
        # that starts with the bytes of one walked already needs a comparison, not a walk.
        header_problem = self.header_problem
        walked = [b""]  # (replacing its item is atomic between threads)

        def check(data: Any) -> str | None:
            prefix = walked[0]
            if prefix and bytes(data[: len(prefix)]) == prefix:
                return None
            problem = header_problem(data, expected)
            if problem is None:
                walked[0] = bytes(data[: _jpeg_frame(data)[1]])
            return problem

        return check

    def decoder(self, shape: tuple[int, ...], dtype: np.dtype):
        # The hot path of every JPEG store: the base class's steps in one function.
        shape = tuple(shape)
        check, decode = self.header_checker(geometry(shape, dtype)), imagecodecs.jpeg8_decode

        def decode_checked(data: Any, out: np.ndarray | None = None) -> np.ndarray:
            problem = check(data)
            if problem is not None:
                raise damaged_payload("jpeg", problem)
            try:
                return decode(data, out=np.empty(shape, _UINT8) if out is None else out)
            except Exception as exc:  # a stream damaged after its frame header
                raise damaged_payload("jpeg", f"it does not decode ({exc})") from None

        return decode_checked

    def probe(self, data: bytes) -> ImageInfo:
        # One image per call (add_encoded in a loop) repeats the previous image's header just
        # as a batch does: a memcmp against it instead of a walk (5.6 us -> 0.5 us at 32 px).
        last = _LAST_HEADER
        if (
            last is not None
            and type(data) is bytes
            and data.startswith(last[0])
            and len(data) >= last[1]
            and data.endswith(_EOI)
        ):
            return last[2]
        info, header, need = _parse_jpeg_header(data if isinstance(data, bytes) else bytes(data))
        if header is not None:
            _remember_header(header, need, info)
        return info

    def probe_many(self, payloads: Sequence[bytes]) -> list[ImageInfo]:
        # A batch from one encoder repeats one header: a stream that starts with the header
        # just walked (a memcmp) needs no walk of its own. Tried first for the whole batch at
        # once, in C-level loops: at 32 px a Python step per image costs more than its write.
        n = len(payloads)
        if n and type(payloads[0]) is bytes:
            try:
                info, header, need = _parse_jpeg_header(payloads[0])
            except CodecError:
                header = None
            if (
                header is not None
                and set(map(type, payloads)) == {bytes}
                and all(map(bytes.startswith, payloads, repeat(header)))
                and all(map(bytes.endswith, payloads, repeat(_EOI)))
                and min(map(len, payloads)) >= need
            ):
                return [info] * n
        infos = []
        header, need, info = None, 0, None
        for k, data in enumerate(payloads):
            if not (
                header is not None
                and type(data) is bytes
                and data.startswith(header)
                and len(data) >= need
                and data.endswith(_EOI)
            ):
                try:
                    info, header, need = _parse_jpeg_header(bytes(data))
                except CodecError as exc:
                    raise CodecError(f"encoded image {k}: {exc}") from None
            infos.append(info)
        return infos

    def hdf5_filter(self, shape: tuple[int, ...], dtype: np.dtype) -> HDF5Filter:
        height, width = shape[0], shape[1]
        color = 1 if len(shape) == 3 else 0
        return HDF5Filter(JPEG_FILTER_ID, (self.quality, width, height, color))

    def get_config(self) -> dict[str, Any]:
        return {
            "id": self.codec_id,
            "quality": self.quality,
            "subsampling": self.subsampling,
            "optimize": self.optimize,
        }

    def embed_metadata(
        self, data: bytes, metadata: Mapping[str, Any], size: tuple[int, int] | None = None
    ) -> bytes:
        """An APP1 EXIF segment after SOI; every other byte of the stream kept."""
        return embed_jpeg(data, metadata, size)

    def strip_metadata(self, data: bytes) -> bytes:
        return strip_jpeg(data)
