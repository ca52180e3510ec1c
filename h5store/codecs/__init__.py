"""Image codecs: one module per codec, each registering its :class:`Codec` subclass.

Adding a codec is one module (a :class:`Codec` subclass decorated with ``@register_codec``) plus
one import line below, or a ``register_codec`` call from user code.
"""

from __future__ import annotations

from .base import OPAQUE_FILTER_ID, Codec, HDF5Filter, ImageInfo, image_shape
from .registry import available_codecs, codec_from_config, get_codec, register_codec

# The built-in codecs, one line each; importing a module registers its codec.
from . import avif  # noqa: E402,F401
from . import blosc  # noqa: E402,F401
from . import deflate  # noqa: E402,F401
from . import htj2k  # noqa: E402,F401
from . import jpeg  # noqa: E402,F401
from . import jpeg2k  # noqa: E402,F401
from . import jpegls  # noqa: E402,F401
from . import jpegxl  # noqa: E402,F401
from . import lz4  # noqa: E402,F401
from . import png  # noqa: E402,F401
from . import qoi  # noqa: E402,F401
from . import raw  # noqa: E402,F401
from . import webp  # noqa: E402,F401
from . import zstd  # noqa: E402,F401

__all__ = [
    "Codec",
    "HDF5Filter",
    "ImageInfo",
    "OPAQUE_FILTER_ID",
    "available_codecs",
    "codec_from_config",
    "get_codec",
    "image_shape",
    "register_codec",
]
