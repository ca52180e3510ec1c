"""Image codecs: one module per codec, each registering its :class:`Codec` subclass.

Adding a codec is one module (a :class:`Codec` subclass decorated with ``@register_codec``) plus
one import line below, or a ``register_codec`` call from user code.
"""

from __future__ import annotations

# The built-in codecs, one line each; importing a module registers its codec.
from . import (
    avif,  # noqa: F401
    blosc,  # noqa: F401
    deflate,  # noqa: F401
    htj2k,  # noqa: F401
    jpeg,  # noqa: F401
    jpeg2k,  # noqa: F401
    jpegls,  # noqa: F401
    jpegxl,  # noqa: F401
    lz4,  # noqa: F401
    png,  # noqa: F401
    qoi,  # noqa: F401
    raw,  # noqa: F401
    webp,  # noqa: F401
    zstd,  # noqa: F401
)
from .base import OPAQUE_FILTER_ID, Codec, HDF5Filter, ImageInfo, image_shape
from .registry import (
    available_codecs,
    codec_from_config,
    codec_of_file,
    get_codec,
    register_codec,
)

__all__ = [
    "Codec",
    "HDF5Filter",
    "ImageInfo",
    "OPAQUE_FILTER_ID",
    "available_codecs",
    "codec_from_config",
    "codec_of_file",
    "get_codec",
    "image_shape",
    "register_codec",
]
