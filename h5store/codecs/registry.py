"""The codec registry: name -> :class:`Codec` subclass (numcodecs' ``registry`` is the model).

Each codec module registers its class with :func:`register_codec` when it is imported; the
package ``__init__`` imports the built-in modules, one line each.
"""

from __future__ import annotations

from typing import Any

from ..errors import CodecError
from .base import Codec

_REGISTRY: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    """Make ``cls`` available under ``cls.codec_id``; usable as a class decorator."""
    existing = _REGISTRY.get(cls.codec_id)
    if existing is not None and existing is not cls:
        raise CodecError(f"codec id {cls.codec_id!r} is already registered to {existing.__name__}")
    _REGISTRY[cls.codec_id] = cls
    return cls


def available_codecs() -> list[str]:
    """Names of the registered codecs."""
    return sorted(_REGISTRY)


def get_codec(codec: str | Codec, *, quality: int | None = None, **params: Any) -> Codec:
    """A configured codec. ``quality`` goes to codecs that have a lossy mode and is ignored by
    lossless-only ones, so one default quality can serve a store that mixes codecs."""
    if isinstance(codec, Codec):
        if params:
            raise CodecError("pass codec parameters either in the Codec instance or as keywords")
        return codec
    try:
        cls = _REGISTRY[codec]
    except (KeyError, TypeError):
        raise CodecError(
            f"unknown codec {codec!r}; available: {', '.join(available_codecs())}"
        ) from None
    if quality is not None and cls.takes_quality:
        params["quality"] = quality
    try:
        return cls(**params)
    except TypeError as exc:  # an unknown keyword
        raise CodecError(f"codec {codec!r}: {exc}") from None


def codec_from_config(config: dict[str, Any]) -> Codec:
    """Rebuild a codec from :meth:`Codec.get_config` output (as stored in the file)."""
    try:
        cls = _REGISTRY[config["id"]]
    except KeyError:
        raise CodecError(
            f"the file uses codec {config.get('id')!r}, which this installation does not have"
        ) from None
    return cls.from_config(config)
