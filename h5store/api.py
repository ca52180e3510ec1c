"""``h5store.open`` and ``h5store.load``: the entry points, above the store classes.

``open`` picks the class (one file: :class:`~h5store.ImageStore`; a list of shard files:
:class:`~h5store.ShardedStore`), so neither class imports the other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal, overload

import numpy as np

from . import _inputs
from ._contract import parse_ref
from ._ingest import GroupCommit
from .codecs import Codec
from .errors import InvalidInputError
from .sharded import ShardedStore
from .store import ImageStore, OpenArguments

#: What a list of shards may hold.
ShardPaths = list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...]


@overload
def open(
    path: str | os.PathLike[str],
    mode: str = "r",
    *,
    codec: str | Codec = "jpeg",
    quality: int = 90,
    labels: Sequence[str] | None = None,
    verify_reads: bool = True,
    locking: bool | str | None = None,
    durability: str = "group",
    group_commit: GroupCommit | None = None,
    channel_order: str = "rgb",
    argmax_labels: bool = True,
    storage_options: dict[str, Any] | None = None,
    **codec_options: Any,
) -> ImageStore: ...


@overload
def open(
    path: ShardPaths,
    mode: Literal["r"] = "r",
    *,
    verify_reads: bool = True,
    channel_order: str = "rgb",
    storage_options: dict[str, Any] | None = None,
) -> ShardedStore: ...


def open(
    path: str | os.PathLike[str] | ShardPaths,
    mode: str = "r",
    *,
    codec: str | Codec = "jpeg",
    quality: int = 90,
    labels: Sequence[str] | None = None,
    verify_reads: bool = True,
    locking: bool | str | None = None,
    durability: str = "group",
    group_commit: GroupCommit | None = None,
    channel_order: str = "rgb",
    argmax_labels: bool = True,
    storage_options: dict[str, Any] | None = None,
    **codec_options: Any,
) -> ImageStore | ShardedStore:
    """Open or create an h5store file; use as a context manager.

    A list of paths opens shards (files written by parallel writers) read-only as one store,
    without copying them: a :class:`h5store.sharded.ShardedStore`.

    Parameters
    ----------
    path
        The store file, or a list of shard files to read as one store. A URL
        (``s3://bucket/key.h5``, ``https://host/run.h5``, ``gs://``, ``az://``, ``file://``;
        lists of them too) is read where it lies, read-only (docs/remote.md; needs the
        ``remote`` extra).
    mode
        As in h5py: ``r`` read only (default), ``r+`` read/write an existing store, ``a``
        read/write, creating it if missing, ``w`` create (truncating any existing file),
        ``x`` create, failing if it exists.
    codec
        The default codec of classes created from now on (a name or a configured Codec);
        existing classes keep theirs. ``store.create_class`` gives one class its own.
    quality
        1-100, for lossy codecs (lossless ones ignore it).
    labels
        Class names in order (needed for integer labels and score vectors). Declared labels
        are a closed set: an undeclared label is then an error naming the nearest one.
    verify_reads
        Every read that returns pixels or stored bytes first checks the image's CRC-32 and
        raises :class:`DamagedImageError` naming the image if its bytes changed since they
        were written (for a list of shards, in each shard). False skips the check (0.10 us per
        1 kB image, 0.36 us per 14 kB) for callers who accept decoding damaged bytes without
        an error.
    locking
        See NFS and Lustre in docs/reliability.md. For readers, HDF5's file-locking switch as
        in ``h5py.File``; None (default) opens without HDF5's lock, or with whatever setting
        this process already has the file open with through h5py. For writers, the writer lock
        (``flock``) h5store takes instead of HDF5's: None or True require it, ``"best-effort"``
        skips it with a warning where the file system has no ``flock``, False skips it (you
        guarantee a single writer).
    durability
        Writers: ``"group"`` (default) commits images in groups, as databases do: the add
        methods validate and return at once, and the images are durable when
        :meth:`ImageStore.commit`, ``flush()`` or ``close()`` returns, or when what is pending
        reaches ``group_commit``'s bound. ``"call"`` commits within every add call (about
        650 us each). Either way a crash loses at most what was not committed, never part of a
        batch.
    group_commit
        The group bound (an :class:`h5store.GroupCommit`: 1,024 images, 64 MiB or one second
        by default).
    channel_order
        ``"rgb"`` (default) or ``"bgr"``, the order of colour channels in the arrays this
        handle takes (``add``, ``add_batch``) and returns (``store[id]``, ``get_batch``); each
        of those but ``store[id]`` can override it per call. Pass ``"bgr"`` in an OpenCV
        pipeline (``cv2.imread`` in, ``cv2.imwrite`` out) to round-trip without a swap. Pixels
        are stored RGB whatever the order, so viewers, exports and the report show true
        colours.
    argmax_labels
        Writers, default True: a label given with a score vector is the model's prediction,
        so it must be the vector's highest entry (ties pass); otherwise the add call raises
        :class:`InvalidInputError` naming the image (true-class vectors, rows out of step,
        another model's labels). False accepts any label, for a decision rule that is not the
        argmax (a threshold on a rare class). Merge and repack copy what stores hold.
    storage_options
        For a URL: the client's settings (``endpoint``, ``access_key_id``,
        ``secret_access_key``, ``region``, ...) where the ``AWS_*`` environment variables do
        not give them.
    **codec_options
        Settings of ``codec`` (``lossless=True``, ``effort=1``, ...).

    Returns
    -------
    ImageStore or ShardedStore
        The open store (a :class:`ShardedStore` for a list of paths).

    Raises
    ------
    StoreNotFoundError
        Mode ``r`` or ``r+`` and no such file.
    StoreExistsError
        Mode ``x`` and the file exists.
    NotAStoreError, VersionError, FormatError
        The file is not an h5store file, is of a newer format version, or is damaged or
        crafted (an external link, external storage, a virtual dataset: nothing outside the
        file is read).
    StoreLockedError
        Another writer has the file open (or the file system has no ``flock``).
    StorePermissionError
        The file or its folder may not be read or written as the mode needs.
    CodecError
        An unknown codec or setting, or a codec the file uses that is not installed.
    InvalidInputError
        A bad mode, labels, quality, locking, channel order, or shards or a URL opened for
        writing. Every argument is checked before the file is created or truncated.
    RemoteReadError
        A URL's object could not be read (after retries, named with the reason).
    """
    _inputs.check_channel_order(channel_order)
    if isinstance(path, (list, tuple)):
        if mode != "r":
            raise InvalidInputError(
                f"a list of shards opens read-only (mode 'r'), not {mode!r}; "
                "h5store.merge makes one writable store of them"
            )
        args = OpenArguments.checked(
            path, mode, codec, quality, labels, verify_reads, locking, codec_options
        )
        return ShardedStore(
            args.path,
            verify_reads=args.verify_reads,
            channel_order=channel_order,
            storage_options=storage_options,
        )
    return ImageStore(
        path,
        mode,
        codec=codec,
        quality=quality,
        labels=labels,
        verify_reads=verify_reads,
        locking=locking,
        durability=durability,
        group_commit=group_commit,
        channel_order=channel_order,
        argmax_labels=argmax_labels,
        storage_options=storage_options,
        **codec_options,
    )


def load(ref: str, *, channel_order: str = "rgb", verify_reads: bool = True) -> np.ndarray:
    """The pixels of the image a reference names (``"/data/run.h5#17"``, a SQL row's ``ref``).

    Opens the store read-only for this one image; for many rows of one store, open it once
    (``h5store.open(row.store)[row.id]``).

    Parameters
    ----------
    ref
        A reference made by :func:`image_ref`.
    channel_order
        ``"rgb"`` or ``"bgr"`` (OpenCV's).
    verify_reads
        Check the image's CRC-32 before decoding it.

    Returns
    -------
    numpy.ndarray
        The decoded image.

    Raises
    ------
    InvalidInputError
        ``ref`` is not a reference.
    UnknownIdError
        The store has no live image with that id.
    DamagedImageError
        The stored bytes fail their CRC-32.
    """
    path, image_id = parse_ref(ref)
    with open(path, channel_order=channel_order, verify_reads=verify_reads) as store:
        return store[image_id]
