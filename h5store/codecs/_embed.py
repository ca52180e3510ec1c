"""Metadata inside exported image files, the way photo tools keep it, without touching pixels:
the stream surgery behind the JPEG, PNG and WebP codecs' ``embed_metadata`` and
``strip_metadata`` (:class:`~h5store.codecs.Codec` hooks; :mod:`h5store.embed` calls them by
codec id).

JPEG gets an APP1 EXIF segment, PNG gets iTXt chunks, WebP gets an EXIF chunk in an extended
(VP8X) container. Each is inserted into the stored stream as it is: the compressed image data
stays byte-identical, so exporting with metadata costs no generation loss. The EXIF block is
written here as EXIF 2.32 wants it (``exiftool -validate`` finds nothing to warn about):
ImageDescription for people, and the whole record, score vector included, as JSON in
UserComment, which exiftool, piexif and Pillow read back.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from typing import Any

from ..errors import CodecError

_EXIF_PREFIX = b"Exif\x00\x00"
_TAG_EXIF_IFD = 0x8769
_USER_COMMENT_ASCII = b"ASCII\x00\x00\x00"  # the EXIF character-code prefix of UserComment
# TIFF field types (EXIF 2.32, 4.6.2) and their sizes.
_ASCII, _SHORT, _LONG, _RATIONAL, _UNDEFINED = 2, 3, 4, 5, 7
_TYPE_SIZE = {_ASCII: 1, _SHORT: 2, _LONG: 4, _RATIONAL: 8, _UNDEFINED: 1}
#: PNG iTXt keywords h5store writes: a sentence, and the record as JSON.
PNG_DESCRIPTION_KEY = "Description"
PNG_JSON_KEY = "h5store"


def describe(metadata: Mapping[str, Any]) -> str:
    """One line for people (EXIF ImageDescription is ASCII: other characters are escaped)."""
    parts = [f"h5store id {metadata.get('id')}", f"label {metadata.get('label')}"]
    if metadata.get("score") is not None:
        parts.append(f"score {metadata['score']:.4f}")
    if metadata.get("true_label") is not None:
        parts.append(f"true label {metadata['true_label']}")
    if metadata.get("store"):
        parts.append(f"from {metadata['store']}")
    return ", ".join(parts).encode("ascii", "backslashreplace").decode("ascii")


def metadata_json(metadata: Mapping[str, Any]) -> str:
    # ASCII-only JSON: EXIF's ASCII UserComment holds it exactly, unicode labels escaped.
    return json.dumps(dict(metadata), ensure_ascii=True, sort_keys=True, allow_nan=False)


def _ifd(entries: list[tuple[int, int, bytes]], start: int, next_ifd: int = 0) -> bytes:
    """One little-endian TIFF IFD at file offset ``start``: (tag, type, value bytes) entries in
    tag order, values over 4 bytes in the data area after it (at even offsets, as TIFF wants)."""
    data_at = start + 2 + 12 * len(entries) + 4
    table, data = [struct.pack("<H", len(entries))], b""
    for tag, kind, value in sorted(entries):
        count = len(value) // _TYPE_SIZE[kind]
        if len(value) <= 4:
            field = value.ljust(4, b"\x00")
        else:
            field = struct.pack("<I", data_at + len(data))
            data += value + b"\x00" * (len(value) % 2)
        table.append(struct.pack("<HHI", tag, kind, count) + field)
    table.append(struct.pack("<I", next_ifd))
    return b"".join(table) + data


def exif_bytes(
    metadata: Mapping[str, Any], size: tuple[int, int] | None = None, ycbcr: bool = False
) -> bytes:
    """A TIFF-structured EXIF block (without the ``Exif\\0\\0`` prefix) as EXIF 2.32 wants it,
    so that ``exiftool -validate`` finds nothing to warn about: IFD0 with ImageDescription,
    the resolution tags and Software; the Exif IFD with its required tags and UserComment, the
    whole record as ASCII JSON behind its 8-byte character code, of type UNDEFINED (what
    piexif's ``UserComment.load`` and Pillow's ``getexif`` read). ``size``: the image's
    (width, height); ``ycbcr``: the stream is YCbCr (JPEG), for ComponentsConfiguration and
    YCbCrPositioning."""

    def ascii_(text: str) -> bytes:
        return text.encode("ascii") + b"\x00"

    rational_72 = struct.pack("<II", 72, 1)
    ifd0 = [
        (0x010E, _ASCII, ascii_(describe(metadata))),  # ImageDescription
        (0x011A, _RATIONAL, rational_72),  # XResolution
        (0x011B, _RATIONAL, rational_72),  # YResolution
        (0x0128, _SHORT, struct.pack("<H", 2)),  # ResolutionUnit: inches
        (0x0131, _ASCII, ascii_("h5store")),  # Software
    ]
    if ycbcr:
        ifd0.append((0x0213, _SHORT, struct.pack("<H", 1)))  # YCbCrPositioning: centred
    exif = [
        (0x9000, _UNDEFINED, b"0232"),  # ExifVersion
        (0x9101, _UNDEFINED, bytes([1, 2, 3, 0] if ycbcr else [4, 5, 6, 0])),  # Y Cb Cr / R G B
        (0x9286, _UNDEFINED, _USER_COMMENT_ASCII + metadata_json(metadata).encode("ascii")),
        (0xA000, _UNDEFINED, b"0100"),  # FlashpixVersion
        (0xA001, _SHORT, struct.pack("<H", 1)),  # ColorSpace: sRGB
    ]
    if size is not None:
        exif.append((0xA002, _LONG, struct.pack("<I", size[0])))  # PixelXDimension
        exif.append((0xA003, _LONG, struct.pack("<I", size[1])))  # PixelYDimension
    # The Exif IFD follows IFD0, whose length does not depend on the pointer's value.
    pointer = (_TAG_EXIF_IFD, _LONG, b"\x00" * 4)
    exif_at = 8 + len(_ifd([*ifd0, pointer], 8))
    exif_at += exif_at % 2
    first = _ifd([*ifd0, (_TAG_EXIF_IFD, _LONG, struct.pack("<I", exif_at))], 8)
    head = b"II*\x00" + struct.pack("<I", 8) + first
    return head + b"\x00" * (exif_at - len(head)) + _ifd(exif, exif_at)


# ---------------------------------------------------------------------------------------- JPEG


def embed_jpeg(
    data: bytes, metadata: Mapping[str, Any], size: tuple[int, int] | None = None
) -> bytes:
    """An APP1 EXIF segment after SOI (after the JFIF APP0 segment when there is one, which
    JFIF wants first); every other byte of the stream is kept."""
    if data[:2] != b"\xff\xd8":
        raise CodecError("not a JPEG stream (no SOI marker)")
    payload = _EXIF_PREFIX + exif_bytes(metadata, size, ycbcr=True)
    if len(payload) + 2 > 0xFFFF:
        raise CodecError(f"EXIF block of {len(payload)} bytes does not fit one APP1 segment")
    at = 2
    if data[2:4] == b"\xff\xe0":  # APP0 (JFIF)
        at = 4 + struct.unpack(">H", data[4:6])[0]
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:at] + segment + data[at:]


# ----------------------------------------------------------------------------------------- PNG


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _itxt(keyword: str, text: str) -> bytes:
    # keyword, NUL, compression flag 0, method 0, empty language tag and translated keyword
    body = keyword.encode("latin-1") + b"\x00\x00\x00" + b"\x00" + b"\x00" + text.encode("utf-8")
    return _png_chunk(b"iTXt", body)


def embed_png(data: bytes, metadata: Mapping[str, Any]) -> bytes:
    """Two iTXt chunks (a description and the record as JSON) before the first IDAT."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise CodecError("not a PNG stream (bad signature)")
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"IDAT":
            chunks = _itxt(PNG_DESCRIPTION_KEY, describe(metadata)) + _itxt(
                PNG_JSON_KEY, metadata_json(metadata)
            )
            return data[:at] + chunks + data[at:]
        at += 12 + length
    raise CodecError("PNG stream has no IDAT chunk")


# ---------------------------------------------------------------------------------------- WebP


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def _webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise CodecError("not a WebP stream (no RIFF/WEBP header)")
    chunks, at = [], 12
    while at + 8 <= len(data):
        kind, size = data[at : at + 4], struct.unpack("<I", data[at + 4 : at + 8])[0]
        chunks.append((kind, data[at + 8 : at + 8 + size]))
        at += 8 + size + (size & 1)
    return chunks


def _webp_canvas(kind: bytes, body: bytes) -> tuple[int, int, bool]:
    """Width, height and whether it has alpha, from a simple-format image chunk."""
    if kind == b"VP8 ":  # lossy key frame: tag (3), start code (3), 14-bit width and height
        width, height = struct.unpack("<HH", body[6:10])
        return width & 0x3FFF, height & 0x3FFF, False
    if kind == b"VP8L":  # signature 0x2f, then 14 + 14 bits of size - 1, one alpha bit
        bits = int.from_bytes(body[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)
    raise CodecError(f"unexpected WebP chunk {kind!r}")


def embed_webp(
    data: bytes, metadata: Mapping[str, Any], size: tuple[int, int] | None = None
) -> bytes:
    """An EXIF chunk; a simple-format file becomes the extended (VP8X) format that carries it,
    its image chunk copied as it is."""
    chunks = _webp_chunks(data)
    exif = (b"EXIF", exif_bytes(metadata, size))
    if chunks and chunks[0][0] == b"VP8X":
        flags = bytearray(chunks[0][1])
        flags[0] |= 0x08  # EXIF present
        rest = [c for c in chunks[1:] if c[0] != b"EXIF"]
        xmp = [c for c in rest if c[0] == b"XMP "]  # the container's order ends EXIF, XMP
        chunks = [(b"VP8X", bytes(flags))] + [c for c in rest if c[0] != b"XMP "] + [exif] + xmp
    elif chunks:
        width, height, alpha = _webp_canvas(*chunks[0])
        flags = 0x08 | (0x10 if alpha else 0)
        header = (
            bytes([flags, 0, 0, 0])
            + (width - 1).to_bytes(3, "little")
            + (height - 1).to_bytes(3, "little")
        )
        chunks = [(b"VP8X", header), chunks[0], exif] + chunks[1:]
    else:
        raise CodecError("WebP stream has no image chunk")
    body = b"WEBP" + b"".join(_riff_chunk(kind, payload) for kind, payload in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


# -------------------------------------------------------------------------------- taking it out


def strip_jpeg(data: bytes) -> bytes:
    """``data`` without the APP1 EXIF segment :func:`embed_jpeg` put in (the stored stream
    again); streams without one come back unchanged."""
    if data[:2] == b"\xff\xd8":
        at = 2
        if data[2:4] == b"\xff\xe0":
            at = 4 + struct.unpack(">H", data[4:6])[0]
        if data[at : at + 2] == b"\xff\xe1" and data[at + 4 : at + 10] == _EXIF_PREFIX:
            return data[:at] + data[at + 2 + struct.unpack(">H", data[at + 2 : at + 4])[0] :]
    return data


def strip_png(data: bytes) -> bytes:
    """``data`` without the iTXt chunks :func:`embed_png` put in; others are kept."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        out, at = [data[:8]], 8
        ours = {PNG_DESCRIPTION_KEY.encode("latin-1"), PNG_JSON_KEY.encode("latin-1")}
        while at + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[at : at + 8])
            chunk = data[at : at + 12 + length]
            if not (kind == b"iTXt" and chunk[8:].split(b"\x00", 1)[0] in ours):
                out.append(chunk)
            at += 12 + length
        return b"".join(out)
    return data


def strip_webp(data: bytes) -> bytes:
    """``data`` without the EXIF chunk :func:`embed_webp` put in, in the simple format again
    when nothing else needs the extended one."""
    if data[:4] == b"RIFF":
        chunks = [c for c in _webp_chunks(data) if c[0] != b"EXIF"]
        if chunks and chunks[0][0] == b"VP8X":
            flags = bytearray(chunks[0][1])
            flags[0] &= ~0x08 & 0xFF
            if len(chunks) == 2 and flags[0] & ~0x10 == 0:  # nothing but the image: simple format
                chunks = chunks[1:]
            else:
                chunks[0] = (b"VP8X", bytes(flags))
        body = b"WEBP" + b"".join(_riff_chunk(kind, payload) for kind, payload in chunks)
        return b"RIFF" + struct.pack("<I", len(body)) + body
    return data
