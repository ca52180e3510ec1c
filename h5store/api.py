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
    **codec_options: Any,
) -> ImageStore: ...


@overload
def open(
    path: ShardPaths,
    mode: Literal["r"] = "r",
    *,
    verify_reads: bool = True,
    channel_order: str = "rgb",
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
    **codec_options: Any,
) -> ImageStore | ShardedStore:
    """Open or create an h5store file; use as a context manager.

    A list of paths opens shards (files written by parallel writers) read-only as one store,
    without copying them: a :class:`h5store.sharded.ShardedStore`.

    Modes as in h5py: ``r`` read only (default), ``r+`` read/write an existing store, ``a``
    read/write, creating it if missing, ``w`` create (truncating any existing file), ``x``
    create, failing if it exists. ``codec``, ``quality`` and ``codec_options`` are the
    defaults for classes created from now on; existing classes keep their codec. ``quality``
    (1-100) applies to lossy codecs and is ignored by lossless ones. ``labels`` declares class
    names in order (needed for integer labels and score vectors).

    ``verify_reads`` (default True): every read that returns pixels or stored bytes first
    checks the image's CRC-32 and raises :class:`DamagedImageError` naming the image if its
    bytes changed since they were written (for a list of shards, in each shard). False skips
    the check (0.10 us per 1 kB image, 0.36 us per 14 kB) for callers who accept decoding
    damaged bytes without an error.

    ``locking`` (see the README on NFS and Lustre): for readers, HDF5's file-locking switch as
    in ``h5py.File``; None (default) opens without HDF5's lock, or with whatever setting this
    process already has the file open with through h5py. For writers, the writer lock
    (``flock``) h5store takes instead of HDF5's: None or True require it, 'best-effort' skips
    it with a warning where the file system has no ``flock``, False skips it (you guarantee a
    single writer).

    ``durability`` (writers): ``"group"`` (default) commits images in groups, as databases
    do: the add methods validate and return at once, and the images are durable when
    :meth:`ImageStore.commit`, ``flush()`` or ``close()`` returns, or when what is pending
    reaches ``group_commit``'s bound (an :class:`h5store.GroupCommit`: 1,024 images, 64 MiB
    or one second by default). ``"call"`` commits within every add call (about 650 us each).
    Either way a crash loses at most what was not committed, never part of a batch.

    ``channel_order``: ``"rgb"`` (default) or ``"bgr"``, the order of colour channels in the
    arrays this handle takes (``add``, ``add_batch``) and returns (``store[id]``,
    ``get_batch``); each of those but ``store[id]`` can override it per call. Pass ``"bgr"``
    in an OpenCV pipeline (``cv2.imread`` in, ``cv2.imwrite`` out) to round-trip without a
    swap. Pixels are stored RGB whatever the order, so viewers, exports and the report show
    true colours.

    ``argmax_labels`` (writers, default True): a label given with a score vector is the
    model's prediction, so it must be the vector's highest entry (ties pass); otherwise the
    add call raises :class:`InvalidInputError` naming the image (true-class vectors, rows out
    of step, another model's labels). False accepts any label, for a decision rule that is
    not the argmax (a threshold on a rare class). Merge and repack copy what stores hold.
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
        return ShardedStore(args.path, verify_reads=args.verify_reads, channel_order=channel_order)
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
        **codec_options,
    )


def load(ref: str, *, channel_order: str = "rgb", verify_reads: bool = True) -> np.ndarray:
    """The pixels of the image a reference names (``"/data/run.h5#17"``, a SQL row's ``ref``).

    Opens the store read-only for this one image; for many rows of one store, open it once
    (``h5store.open(row.store)[row.id]``)."""
    path, image_id = parse_ref(ref)
    with open(path, channel_order=channel_order, verify_reads=verify_reads) as store:
        return store[image_id]
