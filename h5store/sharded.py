"""Several shard files read as one store, without copying them: ``h5store.open([a, b, ...])``.

Shards are ordinary stores, each written by one writer (a DDP rank, a Dask worker, a Slurm
task). The view opens one read-only :class:`~h5store.ImageStore` per shard and, once at open,
unites the labels by name and maps every live id to its shard; a read is then one dict lookup
plus the shard's own read path. :func:`h5store.merge` uses the same rules (:func:`unite`) to
make one file of them.

Iteration, ``ids()``, ``query`` and ``index`` run in shard order, then insertion order within
each shard (the order a merge without ``renumber`` writes).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from . import _inputs
from ._catalog import existing_label_id, query_label_ids
from ._contract import Record, VerifyReport
from ._index import Index
from ._read import decode_many
from ._remote import is_url
from .codecs import Codec
from .errors import ClosedStoreError, DuplicateIdError, InvalidInputError, UnknownIdError
from .store import ImageStore

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Union:
    """How shards' labels and score vectors map into one store."""

    labels: list[str]
    #: per shard: its class id -> the united class id
    label_maps: list[np.ndarray]
    #: width of the united (N, K) score vectors (0: no shard has any)
    k: int
    #: per shard: the shard's score column of each united column, or None without vectors
    score_columns: list[np.ndarray | None]


def unite(stores: Sequence[ImageStore]) -> Union:
    """Unite labels by name. Score vector column j belongs to class id j, so the classes the
    vectors cover come first, in the first vector-holding shard's order; every shard with
    vectors must cover the same classes (their columns are permuted), or InvalidInputError."""
    widths = [s.engine.score_width() for s in stores]
    covered = [list(s.labels[:k]) for s, k in zip(stores, widths)]
    first = next((k for k, w in enumerate(widths) if w), None)
    labels: list[str] = [] if first is None else list(covered[first])
    if first is not None:
        for s, names in zip(stores, covered):
            if names and set(names) != set(labels):
                raise InvalidInputError(
                    f"{stores[first].path} has score vectors over {labels} but {s.path} over "
                    f"{names}; (N, K) scores merge only when the shards declare the same labels"
                )
    known = set(labels)
    for s in stores:
        for name in s.labels:
            if name not in known:
                known.add(name)
                labels.append(name)
    position = {name: k for k, name in enumerate(labels)}
    label_maps = [np.array([position[n] for n in s.labels], dtype=np.int64) for s in stores]
    k_united = widths[first] if first is not None else 0
    score_columns: list[np.ndarray | None] = []
    for names in covered:
        if not names:
            score_columns.append(None)
            continue
        local = {n: j for j, n in enumerate(names)}
        score_columns.append(np.array([local[n] for n in labels[:k_united]], dtype=np.int64))
    return Union(labels, label_maps, k_united, score_columns)


def united_rows(store: ImageStore, label_map: np.ndarray, *, live_only: bool) -> np.ndarray:
    """The shard's index rows with class ids translated to the united ones."""
    rows = store.index
    if live_only:
        rows = rows[rows["deleted"] == 0]
    if len(label_map):
        rows["label"] = label_map[rows["label"].astype(np.int64)]
        truth = rows["true_label"].astype(np.int64)
        rows["true_label"] = np.where(truth < 0, truth, label_map[np.maximum(truth, 0)])
    return rows


def check_unique_ids(paths: Sequence[str], ids: Sequence[np.ndarray]) -> None:
    """DuplicateIdError naming the first id found in two shards, and both files."""
    if len(ids) < 2:
        return
    every = np.concatenate(ids)
    owner = np.repeat(np.arange(len(ids)), [len(a) for a in ids])
    order = np.argsort(every, kind="stable")
    same = np.flatnonzero(every[order][1:] == every[order][:-1])
    if len(same):
        a, b = order[same[0]], order[same[0] + 1]
        raise DuplicateIdError(
            f"id {int(every[a])} is in both {paths[owner[a]]} and {paths[owner[b]]} "
            "(shards need disjoint ids; merge with renumber=True to number them afresh)"
        )


def check_shard_paths(paths: Any) -> list[str]:
    if isinstance(paths, (str, bytes, os.PathLike)) or not isinstance(paths, Sequence):
        raise InvalidInputError("shards must be a list of paths")
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise InvalidInputError("the list of shards is empty")
    real = [os.path.realpath(p) for p in paths]
    for k, p in enumerate(real):
        if p in real[:k]:
            raise InvalidInputError(f"{paths[k]} is listed twice")
    return paths


class ShardedStore:
    """Read-only view of several shard files as one store. Create with ``h5store.open([...])``.

    Answers as the file :func:`h5store.merge` would make of the shards (without
    ``renumber``): same ids, labels, scores, sources and pixels. ``index`` holds each shard's
    own stack, position and offset columns (deleted rows included, flagged).
    """

    mode = "r"
    writable = False

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        verify_reads: bool = True,
        channel_order: str = "rgb",
        storage_options: dict[str, Any] | None = None,
    ):
        self._bgr = _inputs.check_channel_order(channel_order)
        self._storage_options = storage_options  # for the shards opened by URL
        self.paths = check_shard_paths(paths)
        self.verify_reads = verify_reads  # each shard checks its images' CRC-32 on reads
        self._shards: list[ImageStore] = []
        try:
            for p in self.paths:
                # store[id] goes to the shard, which follows the same channel order
                self._shards.append(
                    ImageStore(
                        p,
                        "r",
                        verify_reads=verify_reads,
                        channel_order=channel_order,
                        storage_options=storage_options if is_url(p) else None,
                    )
                )
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        shards = self._shards
        self._union = unite(shards)
        self._labels = self._union.labels
        self._label_ids = {name: k for k, name in enumerate(self._labels)}
        parts = [united_rows(s, m, live_only=False) for s, m in zip(shards, self._union.label_maps)]
        live_ids = [p["id"][p["deleted"] == 0].astype(np.int64) for p in parts]
        check_unique_ids(self.paths, live_ids)
        self._index = Index(np.concatenate(parts) if parts else None)
        owners = [s for s, ids in zip(shards, live_ids) for _ in range(len(ids))]
        self._shard_of: dict[int, ImageStore] = dict(zip(np.concatenate(live_ids).tolist(), owners))

    # ------------------------------------------------------------------ lifetime

    def __enter__(self) -> ShardedStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for s in self._shards:
            s.close()
        self._shard_of = {}

    @property
    def closed(self) -> bool:
        return all(s.closed for s in self._shards)

    def _check_open(self) -> None:
        if self.closed:
            raise ClosedStoreError(f"the shards {self.paths} are closed")

    def __getstate__(self) -> dict[str, Any]:
        return {
            "paths": self.paths,
            "verify_reads": self.verify_reads,
            "channel_order": "bgr" if self._bgr else "rgb",
            "storage_options": self._storage_options,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        ShardedStore.__init__(
            self,
            state["paths"],
            verify_reads=state.get("verify_reads", True),
            channel_order=state.get("channel_order", "rgb"),
            storage_options=state.get("storage_options"),
        )

    def __repr__(self) -> str:
        if self.closed:
            return f"<h5store.ShardedStore of {len(self.paths)} shards (closed)>"
        return (
            f"<h5store.ShardedStore of {len(self.paths)} shards: {len(self)} images, "
            f"{len(self._labels)} labels>"
        )

    @property
    def shards(self) -> tuple[ImageStore, ...]:
        """The read-only store of each shard, in the order given."""
        return tuple(self._shards)

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names of all shards, united by name."""
        return tuple(self._labels)

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._shard_of)

    def __contains__(self, image_id: object) -> bool:
        try:
            return image_id in self._shard_of
        except TypeError:  # unhashable
            return False

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids().tolist())

    def ids(self) -> np.ndarray:
        """Ids of the live images: shard by shard, each in insertion order."""
        return self._index.live_ids()

    def _owner(self, image_id: Any) -> ImageStore:
        try:
            return self._shard_of[image_id]
        except (KeyError, TypeError):
            self._check_open()
            raise UnknownIdError(f"no image with id {image_id!r} in the shards") from None

    def __getitem__(self, image_id: int) -> np.ndarray:
        """The decoded image with this id.

        Parameters
        ----------
        image_id
            The image's id.

        Returns
        -------
        numpy.ndarray
            (H, W) or (H, W, C), in the view's channel order.

        Raises
        ------
        UnknownIdError
            No live image of any shard has this id.
        DamagedImageError
            The stored bytes fail their CRC-32 or do not decode to the indexed geometry.
        """
        try:
            shard = self._shard_of[image_id]
        except (KeyError, TypeError):
            shard = self._owner(image_id)  # raises the right error
        return shard[image_id]

    @overload
    def get_batch(
        self,
        ids: Sequence[int] | np.ndarray,
        *,
        out: None = None,
        channel_order: str | None = None,
    ) -> list[np.ndarray]: ...
    @overload
    def get_batch(
        self, ids: Sequence[int] | np.ndarray, *, out: np.ndarray, channel_order: str | None = None
    ) -> np.ndarray: ...
    def get_batch(
        self,
        ids: Sequence[int] | np.ndarray,
        *,
        out: np.ndarray | None = None,
        channel_order: str | None = None,
    ) -> list[np.ndarray] | np.ndarray:
        """Decoded images for many ids, in the order given (on parallel threads where the
        batch holds enough bytes). ``out`` and ``channel_order`` as in
        :meth:`ImageStore.get_batch`.

        Parameters
        ----------
        ids
            The images' ids, from any shards.
        out
            An array of shape (len(ids), H, W[, C]) and the images' dtype to decode into (every
            image must have that shape); it is returned.
        channel_order
            ``"rgb"`` or ``"bgr"`` (OpenCV's); default: the view's.

        Returns
        -------
        list of numpy.ndarray or numpy.ndarray
            One array per id, or ``out``.

        Raises
        ------
        UnknownIdError
            An id is not a live image of any shard.
        DamagedImageError
            An image's stored bytes fail their CRC-32 or do not decode.
        InvalidInputError
            ``out`` is not C-contiguous, or not one image per id.
        """
        bgr = self._bgr if channel_order is None else _inputs.check_channel_order(channel_order)
        self._check_open()
        id_list = np.asarray(ids).tolist()
        shard_of = self._shard_of
        for image_id in id_list:  # every id checked before anything is decoded
            if image_id not in shard_of:
                self._owner(image_id)
        engines = [shard_of[i].engine for i in id_list]
        rows = [e.live_row(i) for e, i in zip(engines, id_list)]
        payloads: list[Any] = [None] * len(id_list)
        for engine in {id(e): e for e in engines}.values():  # one round of reads per shard
            ks = [k for k, e in enumerate(engines) if e is engine]
            for k, payload in zip(ks, engine.fetch([rows[k] for k in ks])):
                payloads[k] = payload
        nbytes = sum(int(e.index.nbytes[r]) for e, r in zip(engines, rows))
        return decode_many(engines, rows, payloads, nbytes, out, bgr)

    def get_encoded(self, image_id: int) -> bytes:
        """The stored payload of one image, as :meth:`ImageStore.get_encoded`.

        Parameters
        ----------
        image_id
            The image's id.

        Returns
        -------
        bytes
            The payload, checked against its CRC-32 (unless ``verify_reads=False``).

        Raises
        ------
        UnknownIdError
            No live image of any shard has this id.
        DamagedImageError
            The stored bytes fail their CRC-32.
        """
        return self._owner(image_id).get_encoded(image_id)

    def record(self, image_id: int) -> Record:
        """Metadata of one image; score vectors in the order of :attr:`labels`.

        Parameters
        ----------
        image_id
            The image's id.

        Returns
        -------
        Record
            As :meth:`ImageStore.record`; the position and stack are in the image's shard.

        Raises
        ------
        UnknownIdError
            No live image of any shard has this id.
        FormatError
            The image's source or score vector fails its check.
        """
        shard = self._owner(image_id)
        record = shard.record(image_id)
        columns = self._union.score_columns[self._shards.index(shard)]
        if record.scores is not None and columns is not None:
            record = dataclasses.replace(record, scores=record.scores[columns])
        return record

    # ------------------------------------------------------------------ queries

    def _label_id(self, label: str | int, what: str) -> int:
        return existing_label_id(label, self._labels, self._label_ids, what, "these shards")

    def query(
        self,
        *,
        label: str | int | Sequence[str | int] | None = None,
        true_label: str | int | Sequence[str | int] | None = None,
        min_score: float | None = None,
        max_score: float | None = None,
        correct: bool | None = None,
    ) -> np.ndarray:
        """Ids of live images matching every condition, as :meth:`ImageStore.query`.

        Parameters
        ----------
        label, true_label
            One label or several (any of them matches), by name or class id of :attr:`labels`.
        min_score, max_score
            Inclusive bounds on the top-1 score.
        correct
            ``False``: the misclassified images with a known true label; ``True``: the right ones.

        Returns
        -------
        numpy.ndarray
            The ids (int64), shard by shard.

        Raises
        ------
        InvalidInputError
            A label no shard has, or a bad bound.
        """
        self._check_open()

        return self._index.query(
            label=query_label_ids(label, self._label_id, "label"),
            true_label=query_label_ids(true_label, self._label_id, "true_label"),
            min_score=min_score,
            max_score=max_score,
            correct=correct,
        )

    @property
    def index(self) -> np.ndarray:
        """The shards' index rows, concatenated, with class ids of :attr:`labels`."""
        self._check_open()
        return self._index.take()

    @property
    def scores(self) -> np.ndarray | None:
        """The (N, K) score vectors of the live images, in the order of :meth:`ids`, columns
        in the order of :attr:`labels` (NaN rows for images, or shards, without one); None
        when no shard holds score vectors."""
        self._check_open()
        k = self._union.k
        if not k:
            return None
        parts = []
        for shard, columns in zip(self._shards, self._union.score_columns):
            vectors = shard.scores
            if vectors is None or columns is None:
                parts.append(np.full((len(shard), k), np.nan, np.float32))
            else:
                parts.append(vectors[:, columns])
        return np.concatenate(parts)

    @property
    def sources(self) -> list[str | None]:
        """Where each live image came from (None where not given), in the order of :meth:`ids`."""
        self._check_open()
        return [source for shard in self._shards for source in shard.sources]

    def codec_of(self, label: str) -> Codec:
        """The codec of class ``label`` in the first shard that holds the class.

        Parameters
        ----------
        label
            The class name.

        Returns
        -------
        Codec
            The configured codec its images are stored with.
        """
        self._check_open()
        name = self._labels[self._label_id(label, "label")]
        owner = next(s for s in self._shards if name in s.labels)
        return owner.codec_of(name)

    def refresh(self) -> None:
        """Pick up what writers committed to the shards since open."""
        self._check_open()
        for shard in self._shards:
            shard.refresh()
        self._build()

    def to_pandas(self, *, include_deleted: bool = False, scores: bool = False) -> pd.DataFrame:
        """The shards' index tables as one pandas DataFrame (requires pandas); ``scores=True``
        adds one ``score:<label>`` column per class of :attr:`labels` that vectors cover.

        Parameters
        ----------
        include_deleted
            Include deleted images (flagged).
        scores
            Add one ``score:<label>`` column per class from the score vectors.

        Returns
        -------
        pandas.DataFrame
            One row per image, shard by shard.
        """
        import pandas as pd

        self._check_open()
        frames = [s.to_pandas(include_deleted=include_deleted) for s in self._shards]
        frame = pd.concat(frames, ignore_index=True)
        if scores and self._union.k:
            covered = self._labels[: self._union.k]
            vectors = [
                s.to_pandas(include_deleted=include_deleted, scores=True) for s in self._shards
            ]
            every = pd.concat(vectors, ignore_index=True)
            for name in covered:
                column = f"score:{name}"
                frame[column] = every[column] if column in every else np.nan
        return frame

    def to_sql(
        self,
        url_or_engine: Any,
        *,
        table: str = "images",
        if_exists: str = "fail",
        files: dict[int, str] | None = None,
        ids: Sequence[int] | None = None,
    ) -> int:
        """The index of every shard in one SQL table, as :meth:`ImageStore.to_sql`; each row
        names the shard file that holds its image. Needs the 'sql' extra.

        Parameters
        ----------
        url_or_engine
            A SQLAlchemy URL or Engine (a path means SQLite).
        table
            The table name.
        if_exists
            ``"fail"``, ``"replace"`` or ``"append"``, for an existing table.
        files
            Image id -> path of its exported file, for the ``file`` column.
        ids
            Only these images (default: every live image).

        Returns
        -------
        int
            The number of image rows written.

        Raises
        ------
        TargetExistsError
            The table exists and ``if_exists="fail"``; the database is left as it was.
        DatabaseError
            The database refused a row or the connection was lost; nothing is written.
        InvalidInputError
            SQLAlchemy is missing, or a bad ``if_exists`` or ``table``.
        """
        from .sql import to_sql

        self._check_open()
        return to_sql(
            self.shards, url_or_engine, table=table, if_exists=if_exists, files=files, ids=ids
        )

    def verify(self) -> VerifyReport:
        """Every shard's :meth:`ImageStore.verify`, summed.

        Returns
        -------
        VerifyReport
            The images checked in every shard and the damaged ones.
        """
        self._check_open()
        report = VerifyReport()
        for s in self._shards:
            part = s.verify()
            report.checked += part.checked
            report.damaged += part.damaged
            report.misplaced += part.misplaced
        return report

    def stats(self) -> dict[str, Any]:
        """Counts and sizes over all shards, as :meth:`ImageStore.stats`.

        Returns
        -------
        dict
            Images, classes, payload bytes, file bytes, over all shards.
        """
        self._check_open()
        parts = [s.stats() for s in self._shards]
        per_label: dict[str, int] = {}
        for part in parts:
            for name, count in part["images_per_label"].items():
                per_label[name] = per_label.get(name, 0) + count
        return {
            "path": list(self.paths),
            "images": sum(p["images"] for p in parts),
            "deleted": sum(p["deleted"] for p in parts),
            "labels": len(self._labels),
            "images_per_label": {n: per_label[n] for n in self._labels if n in per_label},
            "payload_bytes": sum(p["payload_bytes"] for p in parts),
            "file_bytes": sum(p["file_bytes"] for p in parts),
            "codecs": sorted({c for p in parts for c in p["codecs"]}),
            "format_version": min(p["format_version"] for p in parts),  # the oldest shard's
        }
