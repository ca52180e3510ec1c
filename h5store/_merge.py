"""``h5store.merge``: shard files -> one new store, copying the stored chunks as they are.

Nothing is decoded or re-encoded: every payload is read from its shard and committed through
the write path's entry for stored payloads (``Ingest.add_stored``: the commit protocol
``add_batch`` uses, after checking each payload against the CRC-32 in the shard's index),
with labels united by name (:func:`h5store.sharded.unite`). Every check that can fail
(labels, score vectors, ids, codecs, the output name) runs before anything is written, and
the new store is written under a temporary name beside ``out`` and renamed into
place only once it is complete and on disk: a merge that fails or is killed leaves no ``out``
(a killed one leaves its temporary ``.<name>.merging-<pid>`` file) and never touches the
shards.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from . import format as fmt
from ._catalog import Geometry
from .api import open as open_store
from .codecs import Codec
from .errors import CodecError, DamagedImageError, StoreExistsError
from .sharded import check_shard_paths, check_unique_ids, unite, united_rows
from .store import ImageStore

#: Images per commit: large batches keep the per-batch flushes of the commit protocol rare.
BATCH_IMAGES = 4096
BATCH_BYTES = 64 << 20


def merge(
    shards: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    renumber: bool = False,
    progress: bool = False,
) -> str:
    """Combine shard files into one new store ``out``; returns its path.

    Stored bytes and CRC-32s are copied as they are (each payload checked); deleted images
    are left out; labels are united by name; (N, K) score vectors are merged when the shards
    declare the same labels (columns permuted to one order). All or nothing: the store is
    written under a temporary name beside ``out`` and renamed when complete. Shards are only
    read.

    Parameters
    ----------
    shards
        The shard files, in the order their images are merged.
    out
        The new store; it must not exist.
    renumber
        Number the images 0, 1, 2, ... in shard order instead of keeping their ids.
    progress
        Show a progress bar on stderr.

    Returns
    -------
    str
        The path of the new store.

    Raises
    ------
    StoreExistsError
        ``out`` exists.
    DuplicateIdError
        An id is live in two shards (the error names it and both files) and ``renumber`` is
        false; raised before anything is written.
    CodecError
        A class has different codecs in two shards (merging copies bytes; re-encode a shard
        first with ``h5store.repack``).
    InvalidInputError
        The shards hold score vectors over different labels, or ``shards`` is not a list of
        paths.
    """
    paths = check_shard_paths(shards)
    out = os.fspath(out)
    if os.path.exists(out):
        raise StoreExistsError(f"{out} already exists; merge writes a new store")
    stores: list[ImageStore] = []
    try:
        for p in paths:
            # Unchecked reads: add_stored checks every copied payload's CRC-32 itself.
            stores.append(open_store(p, verify_reads=False))
        plan = unite(stores)
        rows = [united_rows(s, m, live_only=True) for s, m in zip(stores, plan.label_maps)]
        if not renumber:
            check_unique_ids(paths, [r["id"].astype(np.int64) for r in rows])
        codecs = _class_codecs(stores, plan.labels, rows)
        temp = os.path.join(
            os.path.dirname(os.path.abspath(out)), f".{os.path.basename(out)}.merging-{os.getpid()}"
        )
        try:
            _write(stores, plan, rows, codecs, temp, renumber=renumber, progress=progress)
            _publish(temp, out)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise
    finally:
        for s in stores:
            s.close()
    return out


def _class_codecs(
    stores: list[ImageStore], labels: list[str], rows: list[np.ndarray]
) -> dict[str, Codec]:
    """The one codec of each class: the codec of every shard with live images of it (a class
    with no live images anywhere takes the first shard's)."""
    chosen: dict[str, tuple[Codec, str]] = {}
    fallback: dict[str, Codec] = {}
    for store, shard_rows in zip(stores, rows):
        holding = {labels[k] for k in np.unique(shard_rows["label"]).tolist()}
        for name in store.labels:
            codec = store.engine.catalog.class_codec(name)
            if codec is None:
                continue
            fallback.setdefault(name, codec)
            if name not in holding:
                continue
            if name in chosen and chosen[name][0] != codec:
                first, where = chosen[name]
                raise CodecError(
                    f"class {name!r} is stored with {first.get_config()} in {where} but with "
                    f"{codec.get_config()} in {store.path}; merge copies stored bytes and cannot "
                    "mix codecs in one class: re-encode one shard to the other's codec first"
                )
            chosen.setdefault(name, (codec, store.path))
    return {**fallback, **{name: codec for name, (codec, _) in chosen.items()}}


def _write(
    stores: list[ImageStore],
    plan,
    rows: list[np.ndarray],
    codecs: dict[str, Codec],
    temp: str,
    *,
    renumber: bool,
    progress: bool,
) -> None:
    total = sum(len(r) for r in rows)
    next_id = 0
    with (
        open_store(temp, "x", labels=plan.labels) as target,
        tqdm(total=total, desc="merge", unit="img", disable=not progress) as bar,
    ):
        for name, codec in codecs.items():
            target.create_class(name, codec)
        for store, shard_rows, columns in zip(stores, rows, plan.score_columns):
            live = np.flatnonzero(store.index["deleted"] == 0)
            for start, stop in _batches(shard_rows["nbytes"]):
                batch = shard_rows[start:stop]
                ids = np.arange(next_id, next_id + len(batch)) if renumber else batch["id"]
                next_id += len(batch)
                _copy_batch(store, target, batch, live[start:stop], ids, columns)
                bar.update(len(batch))


def _batches(nbytes: np.ndarray):
    start, n = 0, len(nbytes)
    ends = np.cumsum(nbytes.astype(np.int64))
    while start < n:
        base = ends[start - 1] if start else 0
        stop = min(
            n, start + BATCH_IMAGES, max(start + 1, int(np.searchsorted(ends, base + BATCH_BYTES)))
        )
        yield start, stop
        start = stop


def _copy_batch(
    store: ImageStore,
    target: ImageStore,
    batch: np.ndarray,
    index_rows: np.ndarray,
    ids: np.ndarray,
    columns: np.ndarray | None,
) -> None:
    engine = store.engine
    payloads = [bytes(p) for p in engine.payloads(index_rows.tolist())]
    stacks = engine.stacks
    codecs = [stacks[s].codec for s in batch["stack"].tolist()]
    vectors = _vectors(store, index_rows, columns)
    sources = _sources(store, index_rows)
    geometries = [
        Geometry(*g)
        for g in zip(
            batch["height"].tolist(),
            batch["width"].tolist(),
            batch["channels"].tolist(),
            batch["dtype"].astype(str).tolist(),
        )
    ]
    truth = batch["true_label"].astype(np.int64)
    crcs = batch["crc32"].tolist()
    # A commit takes score vectors, top-1 scores or nothing for all its images: rows of each
    # kind go in runs of their own, in order. 2: a vector, 1: a top-1 score, 0: no score.
    kind = np.where(np.isnan(batch["score"]), 0, 1)
    if vectors is not None:
        kind[~np.isnan(vectors).all(axis=1)] = 2
    cuts = [0, *(np.flatnonzero(kind[1:] != kind[:-1]) + 1).tolist(), len(batch)]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        scores = {0: None, 1: batch["score"][lo:hi], 2: None if vectors is None else vectors[lo:hi]}
        try:
            add_stored(
                target,
                payloads[lo:hi],
                geometries[lo:hi],
                codecs[lo:hi],
                crcs=crcs[lo:hi],
                labels=batch["label"][lo:hi].astype(np.int64),
                true_labels=truth[lo:hi],
                scores=scores[int(kind[lo])],
                ids=ids[lo:hi],
                sources=None if sources is None else sources[lo:hi],
            )
        except DamagedImageError as exc:
            raise DamagedImageError(f"{store.path}: {exc}") from None


def add_stored(target: ImageStore, *args, **kwargs) -> None:
    """The write path's one entry for trusted stored payloads (a seam the kill test cuts)."""
    target.ingest.add_stored(*args, **kwargs)


def _vectors(
    store: ImageStore, index_rows: np.ndarray, columns: np.ndarray | None
) -> np.ndarray | None:
    if columns is None or not store.engine.score_width():
        return None
    # The store's checked read: a damaged vector is an error here, not a copied wrong value.
    return store.engine.column(fmt.SCORES, index_rows)[:, columns]


def _sources(store: ImageStore, index_rows: np.ndarray) -> list[str | None] | None:
    # The store's checked read: a damaged source is an error here, not a copied wrong value.
    values = store.engine.column(fmt.SOURCES, index_rows)
    return None if values is None else values.tolist()


def _publish(temp: str, out: str) -> None:
    """Make the finished temporary file ``out``: on disk first, then renamed, so ``out``
    never names a partial store."""
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if os.path.exists(out):
        raise StoreExistsError(f"{out} appeared while merging; it was left as it is")
    os.replace(temp, out)
    folder = os.open(os.path.dirname(os.path.abspath(out)), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
