"""Reading a classification record out of an image file: the EXIF and PNG text chunks that
piexif, exiftool, Pillow and h5store's own export (:mod:`h5store.embed`) write.

Files are untrusted: every offset is bounds-checked, compressed text is inflated to a bounded
size, and nothing here quotes a file's content in an error. What is found is returned as it
was written (a dict from a JSON object); :mod:`h5store.importers` decides what each key means.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

#: Longest text taken from one field or chunk (a record is a few hundred bytes; a score
#: vector over 1,000 classes a few tens of kB).
MAX_TEXT = 1 << 20
_MAX_ENTRIES = 512  # per IFD: EXIF defines ~300 tags
_EXIF_PREFIX = b"Exif\x00\x00"

# TIFF tags that may carry the record (JSON) and the one that says h5store wrote the block.
_IMAGE_DESCRIPTION, _SOFTWARE, _EXIF_IFD, _XP_COMMENT = 0x010E, 0x0131, 0x8769, 0x9C9C
_USER_COMMENT = 0x9286
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 9: 4, 10: 8}


@dataclass(frozen=True)
class Embedded:
    """The record found in a file: ``values`` (a JSON object's keys and values), ``origin``
    (where: "EXIF UserComment", "PNG iTXt 'h5store'", ...) and whether h5store's export
    wrote it (``ours``: :func:`h5store.embed.strip` then gives back the stored stream)."""

    values: dict[str, Any]
    origin: str
    ours: bool


def read(data: bytes) -> Embedded | None:
    """The first JSON object found in ``data``'s metadata, or None. Looked at in order:
    EXIF UserComment, ImageDescription, XPComment (JPEG APP1, WebP EXIF chunk, PNG eXIf), PNG
    text chunks (tEXt, zTXt, iTXt: keyword ``h5store`` first), then a JPEG comment (COM)."""
    fields: list[tuple[str, bytes | str]] = []
    ours = False
    if data[:2] == b"\xff\xd8":
        for marker, body in _jpeg_segments(data):
            if marker == 0xE1 and body.startswith(_EXIF_PREFIX):
                found, software = _exif_fields(body[len(_EXIF_PREFIX) :])
                fields = found + fields
                ours = ours or software == "h5store"
            elif marker == 0xFE:
                fields.append(("JPEG comment", body))
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        texts = []
        for kind, body in _png_chunks(data):
            if kind == b"eXIf":
                found, software = _exif_fields(body)
                fields += found
                ours = ours or software == "h5store"
            elif kind in (b"tEXt", b"zTXt", b"iTXt"):
                keyword, text = _png_text(kind, body)
                if keyword is not None:
                    texts.append((keyword, text))
                    ours = ours or keyword == "h5store"
        texts.sort(key=lambda kt: kt[0] != "h5store")
        fields += [(f"PNG text {keyword!r}", text) for keyword, text in texts]
        loose = {k: t for k, t in texts}  # Pillow's PngInfo users write one key per value
        if not any(_json_object(t) for _, t in texts) and "label" in loose:
            return Embedded(dict(loose), "PNG text chunks", False)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        for kind, body in _riff_chunks(data):
            if kind == b"EXIF":
                body = body[len(_EXIF_PREFIX) :] if body.startswith(_EXIF_PREFIX) else body
                found, software = _exif_fields(body)
                fields += found
                ours = ours or software == "h5store"
    for origin, raw in fields:
        values = _json_object(raw)
        if values is not None:
            return Embedded(values, origin, ours)
    return None


def _json_object(raw: bytes | str) -> dict[str, Any] | None:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    text = text.strip().rstrip("\x00").strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# ------------------------------------------------------------------------------- containers


def _jpeg_segments(data: bytes):
    """(marker, body) of the segments before the image data (SOS)."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD9, 0xDA):  # EOI, SOS: the metadata ends here
            return
        length = struct.unpack(">H", data[at + 2 : at + 4])[0]
        if length < 2:
            return
        yield marker, data[at + 4 : at + 2 + length]
        at += 2 + length


def _png_chunks(data: bytes):
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"IDAT" or kind == b"IEND":
            return
        yield kind, data[at + 8 : at + 8 + length]
        at += 12 + length


def _riff_chunks(data: bytes):
    at = 12
    while at + 8 <= len(data):
        kind, size = data[at : at + 4], struct.unpack("<I", data[at + 4 : at + 8])[0]
        yield kind, data[at + 8 : at + 8 + size]
        at += 8 + size + (size & 1)


def _inflate(body: bytes) -> bytes | None:
    try:
        out = zlib.decompressobj().decompress(body, MAX_TEXT)
    except zlib.error:
        return None
    return out


def _png_text(kind: bytes, body: bytes) -> tuple[str | None, str]:
    keyword, _, rest = body.partition(b"\x00")
    name = keyword.decode("latin-1")
    if kind == b"tEXt":
        return name, rest[:MAX_TEXT].decode("latin-1")
    if kind == b"zTXt":
        text = _inflate(rest[1:])
        return (None, "") if text is None else (name, text.decode("latin-1"))
    if len(rest) < 2:  # iTXt: compression flag, method, language\0, translated keyword\0, text
        return None, ""
    compressed, tail = rest[0], rest[2:]
    parts = tail.split(b"\x00", 2)
    if len(parts) < 3:
        return None, ""
    text = _inflate(parts[2]) if compressed else parts[2][:MAX_TEXT]
    return (None, "") if text is None else (name, text.decode("utf-8", "replace"))


# -------------------------------------------------------------------------------------- EXIF


def _exif_fields(tiff: bytes) -> tuple[list[tuple[str, bytes | str]], str | None]:
    """The fields that may hold a record, in the order they are tried, and Software."""
    if len(tiff) < 8 or tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        return [], None
    order = "<" if tiff[:2] == b"II" else ">"
    ifd0 = _ifd(tiff, struct.unpack(order + "I", tiff[4:8])[0], order)
    exif = {}
    if _EXIF_IFD in ifd0 and len(ifd0[_EXIF_IFD]) >= 4:
        exif = _ifd(tiff, struct.unpack(order + "I", ifd0[_EXIF_IFD][:4])[0], order)
    fields: list[tuple[str, bytes | str]] = []
    if _USER_COMMENT in exif:
        fields += [("EXIF UserComment", text) for text in _user_comment(exif[_USER_COMMENT], order)]
    if _IMAGE_DESCRIPTION in ifd0:
        fields.append(("EXIF ImageDescription", ifd0[_IMAGE_DESCRIPTION]))
    if _XP_COMMENT in ifd0:  # Windows' comment (exiftool -XPComment): UTF-16LE
        fields.append(("EXIF XPComment", ifd0[_XP_COMMENT].decode("utf-16-le", "replace")))
    software = ifd0.get(_SOFTWARE)
    return fields, None if software is None else software.rstrip(b"\x00").decode("latin-1")


def _ifd(tiff: bytes, at: int, order: str) -> dict[int, bytes]:
    """Tag -> value bytes of the IFD at ``at`` (entries out of bounds are left out)."""
    if at < 8 or at + 2 > len(tiff):
        return {}
    count = min(struct.unpack(order + "H", tiff[at : at + 2])[0], _MAX_ENTRIES)
    out = {}
    for k in range(count):
        entry = at + 2 + 12 * k
        if entry + 12 > len(tiff):
            break
        tag, kind, n = struct.unpack(order + "HHI", tiff[entry : entry + 8])
        size = _TYPE_SIZE.get(kind, 0) * n
        if size == 0 or size > MAX_TEXT:
            continue
        if size <= 4:
            out[tag] = tiff[entry + 8 : entry + 8 + size]
            continue
        offset = struct.unpack(order + "I", tiff[entry + 8 : entry + 12])[0]
        if offset + size <= len(tiff):
            out[tag] = tiff[offset : offset + size]
    return out


def _user_comment(value: bytes, order: str) -> list[str]:
    """UserComment's text after its 8-byte character code (ASCII, UNICODE or undefined): the
    readings to try, likeliest first."""
    code, text = value[:8], value[8:]
    if code == b"UNICODE\x00":
        if text[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return [text.decode("utf-16", "replace")]
        # No byte-order mark: exiftool writes the EXIF block's own order, piexif's helper the
        # machine's (little-endian in a big-endian block): both are tried.
        orders = ["utf-16-le", "utf-16-be"] if order == "<" else ["utf-16-be", "utf-16-le"]
        return [text.decode(codec, "replace") for codec in orders]
    return [text.decode("utf-8", "replace")]
