"""Metadata inside exported image files (EXIF in JPEG and WebP, iTXt in PNG), by codec id.

Each codec says what its stream can carry: :attr:`~h5store.codecs.Codec.embeds_metadata`,
:meth:`~h5store.codecs.Codec.embed_metadata` and :meth:`~h5store.codecs.Codec.strip_metadata`
(the stream surgery for the built-in formats is in ``h5store/codecs/_embed.py``). These two
functions are those hooks for a codec named by its id, as a store's records name it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .codecs import get_codec
from .errors import CodecError


def embed(
    codec_id: str, data: bytes, metadata: Mapping[str, Any], size: tuple[int, int] | None = None
) -> bytes:
    """``data`` (a stored stream of codec ``codec_id``) with ``metadata`` inside it; ``size``,
    the image's (width, height), goes into EXIF's pixel dimensions."""
    return get_codec(codec_id).embed_metadata(data, metadata, size)


def strip(codec_id: str, data: bytes) -> bytes:
    """``data`` without what :func:`embed` put in (the stored stream again, for streams h5store
    exported). Streams without h5store's metadata come back unchanged."""
    try:
        codec = get_codec(codec_id)
    except CodecError:  # a codec this installation lacks wrote no metadata h5store could strip
        return data
    return codec.strip_metadata(data)
