"""The codec registry: name -> :class:`Codec` subclass (numcodecs' ``registry`` is the model).

Each codec module registers its class with :func:`register_codec` when it is imported; the
package ``__init__`` imports the built-in modules, one line each. Codecs from other packages
are found through the ``h5store.codecs`` entry-point group on a registry miss, as numcodecs
and zarr find theirs, so a file written with a third-party codec opens (``h5store info``,
``verify``) without user code importing that codec first.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import Any

from ..errors import CodecError
from .base import Codec

#: Entry points in this group are named by codec id and point at a Codec subclass
#: (``module:Class``) or at a module that registers one when imported.
ENTRY_POINT_GROUP = "h5store.codecs"

_REGISTRY: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    """Make ``cls`` available under ``cls.codec_id``; usable as a class decorator.

    A plugin package does this through the ``h5store.codecs`` entry point instead, so its
    codec is found without being imported first.

    Parameters
    ----------
    cls
        A subclass of :class:`h5store.Codec`.

    Returns
    -------
    type
        ``cls`` itself.

    Raises
    ------
    CodecError
        Another class is registered under the same ``codec_id``.
    """
    existing = _REGISTRY.get(cls.codec_id)
    if existing is not None and existing is not cls:
        raise CodecError(f"codec id {cls.codec_id!r} is already registered to {existing.__name__}")
    _REGISTRY[cls.codec_id] = cls
    return cls


def available_codecs() -> list[str]:
    """Names of the registered codecs and of those installed packages offer as plugins.

    Returns
    -------
    list of str
        The codec ids, sorted.
    """
    return sorted(set(_REGISTRY) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def codec_of_file(filename: str) -> str | None:
    """Id of the registered codec whose payloads are files named like ``filename`` (its
    :attr:`~Codec.file_extension` or one of its ``other_extensions``); None if there is none."""
    suffix = os.path.splitext(filename)[1].lower()
    for codec_id, cls in sorted(_REGISTRY.items()):
        if suffix and suffix in (cls.file_extension, *cls.other_extensions):
            return codec_id
    return None


def _codec_class(codec_id: Any) -> type[Codec] | None:
    """The class registered as ``codec_id``, loading its plugin on a miss; None if unknown."""
    if not isinstance(codec_id, str):
        return None
    cls = _REGISTRY.get(codec_id)
    if cls is not None:
        return cls
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=codec_id):
        where = f"plugin {entry.value!r} (entry point {codec_id!r} in {ENTRY_POINT_GROUP!r})"
        try:
            loaded = entry.load()
        except Exception as exc:  # a broken third-party package: name it
            raise CodecError(f"codec {codec_id!r}: loading {where} failed: {exc!r}") from exc
        if isinstance(loaded, type) and issubclass(loaded, Codec):
            if loaded.codec_id != codec_id:
                raise CodecError(
                    f"{where} is a codec with id {loaded.codec_id!r}, not {codec_id!r}"
                )
            register_codec(loaded)
        cls = _REGISTRY.get(codec_id)
        if cls is None:
            raise CodecError(f"{where} registered no codec named {codec_id!r}")
        return cls
    return None


def get_codec(codec: str | Codec, *, quality: int | None = None, **params: Any) -> Codec:
    """A configured codec.

    Parameters
    ----------
    codec
        A codec id (``"jpeg"``, a plugin's id) or a configured Codec, returned as it is.
    quality
        Goes to codecs that have a lossy mode and is ignored by lossless-only ones, so one
        default quality can serve a store that mixes codecs.
    **params
        The codec's settings (``lossless=True``, ``effort=1``, ``level=9``, ...).

    Returns
    -------
    Codec
        The codec, configured.

    Raises
    ------
    CodecError
        An unknown codec id (the message lists the available ones), a plugin that fails to
        load, an unknown or invalid setting, or settings given beside a Codec instance.
    """
    if isinstance(codec, Codec):
        if params:
            raise CodecError("pass codec parameters either in the Codec instance or as keywords")
        return codec
    cls = _codec_class(codec)
    if cls is None:
        raise CodecError(f"unknown codec {codec!r}; available: {', '.join(available_codecs())}")
    if quality is not None and cls.takes_quality:
        params["quality"] = quality
    try:
        return cls(**params)
    except TypeError as exc:  # an unknown keyword
        raise CodecError(f"codec {codec!r}: {exc}") from None


def codec_from_config(config: dict[str, Any]) -> Codec:
    """Rebuild a codec from :meth:`Codec.get_config` output (as stored in the file)."""
    cls = _codec_class(config.get("id"))
    if cls is None:
        raise CodecError(
            f"the file uses codec {config.get('id')!r}, which this installation does not have "
            f"(no registered codec and no {ENTRY_POINT_GROUP!r} entry point of that name)"
        )
    return cls.from_config(config)
