"""The in-memory index: every committed row as numpy columns, id lookup and vectorised queries.

Loaded once at open (a million rows is about a thousand compressed chunk reads) and appended
to as batches commit, so lookups and queries never touch HDF5. The read path indexes
``memoryview``s of the fields of one packed record per row (location, size, CRC-32, stack,
deleted flag), which return Python ints without creating numpy scalars. A reader's index
takes its columns out of /index's bytes at open and makes whole rows only where they are
asked for (see :meth:`Index.unread`).
"""

from __future__ import annotations

import operator
import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._parallel import thread_map
from ._source import Buffer
from .errors import UnknownIdError
from .format import INDEX_DTYPE, index_chunk_rows, zeroed_array

#: Columns kept as contiguous copies for queries and vectorised lookups (a strided scan of 1M
#: packed rows costs 3x more). A row's location, size and stack are columns of the read
#: records instead (24 bytes apart), which no query scans: one copy fewer each at open.
#: A reader's open takes them out of /index's bytes with the read records (see unread; its
#: checks read most of them); an index given rows (a writer's, a sharded view's) copies them
#: when one is first asked for.
HOT_COLUMNS = ("deleted", "id", "label", "true_label", "score")

#: What one read needs of its row, packed into 24 bytes: a random read in a million-row store
#: then costs one cache miss for its row instead of one per column (1.2 -> 0.5 us measured for
#: the five lookups at 1M rows, against 0.3 us at 10k).
LOCATION_FIELDS = ("offset", "nbytes", "crc32", "stack", "deleted")
LOCATION_DTYPE = np.dtype(
    {
        "names": list(LOCATION_FIELDS),
        "formats": ["=u8", "=u4", "=u4", "=u4", "u1"],
        "itemsize": 24,
    }
)


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=") if dtype.kind in "iuf" else dtype


#: Whether the columns can be taken straight out of /index's shuffled bytes: its fields are
#: little-endian, the columns in this machine's order.
FROM_PLANES = sys.byteorder == "little"


def _row_bytes(fields: Sequence[str]) -> np.ndarray:
    """Where the bytes of ``fields`` lie in a row of INDEX_DTYPE, one field after the other."""
    at = [INDEX_DTYPE.fields[name][1] for name in fields]  # type: ignore[index]
    return np.concatenate([np.arange(a, a + INDEX_DTYPE[n].itemsize) for a, n in zip(at, fields)])


def _packed(fields: Sequence[str], itemsize: int | None = None) -> np.dtype:
    """Records of ``fields`` (native, as the columns hold them) packed one after the other."""
    formats = [_native(INDEX_DTYPE[name]) for name in fields]
    offsets = np.cumsum([0] + [f.itemsize for f in formats[:-1]]).tolist()
    return np.dtype(
        {
            "names": list(fields),
            "formats": formats,
            "offsets": offsets,
            "itemsize": itemsize or sum(f.itemsize for f in formats),
        }
    )


#: The read records' bytes, as they lie in a row (the records' fields are packed in order).
_LOCATION_BYTES = _row_bytes(LOCATION_FIELDS)
#: The query columns' bytes as they lie in a row, and the records they make packed together.
_HOT_BYTES, _HOT_RECORD = _row_bytes(HOT_COLUMNS), _packed(HOT_COLUMNS)
if _packed(LOCATION_FIELDS, LOCATION_DTYPE.itemsize) != LOCATION_DTYPE:
    raise AssertionError("LOCATION_DTYPE must pack its fields in order")


def _gather(planes: np.ndarray, row_bytes: np.ndarray, out: np.ndarray) -> None:
    """Write the bytes ``row_bytes`` (positions in a row) of the rows a block of /index's
    ``planes`` holds (chunk, byte of a row, row in the chunk: see format.read_index_planes)
    into the first bytes of each row of ``out`` (C-contiguous, a row a record), which holds
    as many records or fewer (the rows a last chunk holds past the end of /index are left
    out). One transposing copy of all the bytes: a call a field cost twice as much."""
    per_chunk = planes.shape[2]
    width = len(row_bytes)
    whole, rest = divmod(len(out), per_chunk)
    picked = planes[:, row_bytes, :]
    if whole:
        by_chunk = out[: whole * per_chunk].reshape(whole, per_chunk, out.shape[1])
        by_chunk[:, :, :width] = picked[:whole].transpose(0, 2, 1)
    if rest:
        out[whole * per_chunk :, :width] = picked[whole, :, :rest].T


#: Chunks of rows made at once from which the work is shared with h5store's threads.
_CHUNKS_ON_THREADS = 32


class _Unread:
    """The rows of an index that are not made yet: /index's chunks as stored, each inflated
    into the index's storage when one of its rows is first asked for."""

    def __init__(self, rows_per_chunk: int, chunks: int):
        self.rows_per_chunk = rows_per_chunk
        self.stored: list[bytes | None] = [None] * chunks
        self.left = chunks
        self.stop = 0  # rows of /index that belong to the index (the rest: in flight)
        self.lock = threading.Lock()


class Index:
    """Committed index rows in insertion order, plus an id -> row map.

    Rows live in one structured array of the on-disk type (adopted without copying at open);
    the location columns are also kept as packed records for the read path, and the columns
    queries scan as contiguous copies once one is asked for (see HOT_COLUMNS). Ids that run
    in an unbroken sequence (the default when h5store assigns them) map to rows
    arithmetically; any other id sequence switches to a dict built once.
    """

    def __init__(self, rows: np.ndarray | None = None, *, adopt: bool = False):
        """``adopt``: take ``rows`` (of the on-disk dtype) as the storage itself, without a copy;
        the caller must not use the array afterwards."""
        self._n = 0
        self._rows = np.zeros(0, INDEX_DTYPE)
        #: HOT_COLUMNS' copies, as long as ``_rows``; None until a column is first asked for
        self._hot: dict[str, np.ndarray] | None = None
        self._hot_lock = threading.Lock()
        self._locations = np.zeros(0, LOCATION_DTYPE)
        self._dense_start: int | None = 0  # ids == _dense_start + row, while that holds
        #: what copy_columns found of each block of rows it copied, by first row, until
        #: _taken counts them: (stop, deleted rows, first id, whether the ids run on from it)
        self._blocks: dict[int, tuple[int, int, int, bool]] = {}
        self._row_of_id: dict[int, int] | None = None
        self._deleted = 0
        #: rows of /index not made yet (see unread)
        self._unread: _Unread | None = None
        self._refresh_views()
        if rows is not None and len(rows):
            if adopt and rows.dtype == INDEX_DTYPE:
                self._rows = rows
            self.append(rows)

    def _refresh_views(self) -> None:
        # Python-int access for the hot path; rebuilt whenever the records are reallocated.
        # (ndarray.data is memoryview(array); numpy's stubs give ndarray no __buffer__ before
        # Python 3.12, so memoryview(array) does not type-check on 3.10 and 3.11.)
        locations = self._locations
        self.offsets = locations["offset"].data
        self.nbytes = locations["nbytes"].data
        self.crcs = locations["crc32"].data
        self.stacks = locations["stack"].data
        self.deleted = locations["deleted"].data

    # ------------------------------------------------------------------ size and access

    def __len__(self) -> int:
        return self._n

    @property
    def ids_consecutive(self) -> bool:
        """Whether the ids run in one unbroken increasing sequence (and so are distinct)."""
        return self._dense_start is not None

    @property
    def live_count(self) -> int:
        return self._n - self._deleted

    def column(self, name: str, stop: int | None = None) -> np.ndarray:
        """One column of all committed rows (a view: do not modify); ``stop``: of the first
        ``stop`` rows of the storage instead (while it is filled, see :meth:`reserve`; a
        strided view of the rows, where the hot copies are not made)."""
        if name in HOT_COLUMNS and (stop is None or self._hot is not None):
            col = self._hot_columns()[name]
        elif name in LOCATION_FIELDS:
            col = self._locations[name]
        else:
            col = self._made()[name]
        return col[: self._n if stop is None else stop]

    def _hot_columns(self) -> dict[str, np.ndarray]:
        """HOT_COLUMNS' contiguous copies, made on the first call."""
        hot = self._hot
        if hot is None:
            with self._hot_lock:  # (threads reading a store may ask at the same time)
                hot = self._hot
                if hot is None:
                    rows = self._made()
                    hot = {}
                    for name in HOT_COLUMNS:
                        hot[name] = zeroed_array(len(rows), _native(INDEX_DTYPE[name]))
                        hot[name][: self._n] = rows[name][: self._n]
                    self._hot = hot
        return hot

    def take(self, rows: np.ndarray | Sequence[int] | slice | None = None) -> np.ndarray:
        """A copy of rows (all rows when ``rows`` is None) as a structured array of the on-disk
        type."""
        if rows is None:
            return self._made()[: self._n].copy()
        if self._unread is not None:
            self._made(self._positions(rows))
        return self._rows[: self._n][rows]

    def _positions(self, rows: np.ndarray | Sequence[int] | slice) -> np.ndarray:
        """The row numbers ``rows`` selects, as indexing the index's rows with it would (an
        arange of every row to index instead cost 1 ms a call at a million rows: record())."""
        if isinstance(rows, slice):
            return np.arange(*rows.indices(self._n))
        selected = np.asarray(rows)
        if selected.dtype == bool:
            return np.flatnonzero(selected)
        selected = selected.astype(np.int64, copy=False)
        return np.where(selected < 0, selected + self._n, selected)

    def _made(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The storage of rows, with ``rows`` (all where None) made (see unread)."""
        unread = self._unread
        if unread is None:
            return self._rows
        per_chunk = unread.rows_per_chunk
        if rows is None:
            wanted: Sequence[int] = range(len(unread.stored))
        else:
            rows = np.asarray(rows, dtype=np.int64).ravel()
            wanted = np.unique(rows[(rows >= 0) & (rows < unread.stop)] // per_chunk).tolist()
        with unread.lock:  # (threads reading a store may ask at the same time)
            todo = [chunk for chunk in wanted if unread.stored[chunk] is not None]

            def make(chunk: int) -> None:
                start = chunk * per_chunk
                stop = min(start + per_chunk, unread.stop)
                stored = unread.stored[chunk]
                if stored is not None and stop > start:
                    index_chunk_rows(stored, per_chunk, self._rows[start:stop])

            # (the whole table, as a sharded view's open asks for, on h5store's threads)
            thread_map(make, todo, None if len(todo) >= _CHUNKS_ON_THREADS else 1)
            for chunk in todo:
                unread.stored[chunk] = None
            unread.left -= len(todo)
            if not unread.left:
                self._unread = None
        return self._rows

    @classmethod
    def reserve(cls, storage: np.ndarray) -> Index:
        """An empty index taking ``storage`` (rows of the on-disk type, all of it capacity) as
        its own, for rows that land in it afterwards: call :meth:`copy_columns` on each
        block of rows as it lands (from any thread, on distinct blocks), then
        :meth:`take_rows` for the rows that belong to the store."""
        index = cls()
        index._rows = storage
        index._locations = zeroed_array(len(storage), LOCATION_DTYPE)
        index._refresh_views()
        return index

    @classmethod
    def unread(cls, capacity: int, rows_per_chunk: int, chunks: int) -> Index:
        """An empty index for ``chunks`` chunks of /index that land in it as planes of bytes
        (call :meth:`copy_planes` on each block, from any thread, then :meth:`take_rows`),
        with room for ``capacity`` rows. Its columns are taken out of the planes; its rows
        (columns of no query, and whole rows: ``take``) are made from the chunks' stored
        bytes when first asked for: a reader that only reads images never asks, and making
        them at open was a third of a warm open at 200,000 rows (an unshuffle of every byte,
        into 16 MB of fresh pages)."""
        index = cls()
        index._rows = zeroed_array(capacity, INDEX_DTYPE)  # (no page is touched until made)
        index._locations = zeroed_array(capacity, LOCATION_DTYPE)
        index._hot = {
            name: zeroed_array(capacity, _native(INDEX_DTYPE[name])) for name in HOT_COLUMNS
        }
        index._unread = _Unread(rows_per_chunk, chunks)
        index._refresh_views()
        return index

    def copy_planes(self, first: int, planes: np.ndarray, stop: int, stored: list[Buffer]) -> None:
        """Take the columns of rows ``first:stop`` out of a block of /index given as ``planes``
        (see format.read_index_planes) and keep its chunks' ``stored`` bytes, for rows asked
        for later."""
        unread = self._unread
        assert unread is not None and self._hot is not None  # (an index made by unread())
        chunk = first // unread.rows_per_chunk
        unread.stored[chunk : chunk + len(stored)] = [bytes(data) for data in stored]
        if stop <= first:
            return
        locations = self._locations.view(np.uint8).reshape(-1, LOCATION_DTYPE.itemsize)
        _gather(planes, _LOCATION_BYTES, locations[first:stop])
        # The query columns through one packed record a row, then a typed copy a column.
        packed = np.empty((stop - first, _HOT_RECORD.itemsize), np.uint8)
        _gather(planes, _HOT_BYTES, packed)
        records = packed.view(_HOT_RECORD)[:, 0]
        hot = self._hot
        for name, col in hot.items():
            col[first:stop] = records[name]
        self._summarize(first, stop, hot["id"][first:stop], hot["deleted"][first:stop])

    def copy_columns(self, start: int, stop: int) -> None:
        """Copy rows ``start:stop`` of the storage into the read records (and the hot columns,
        once made)."""
        if stop <= start:
            return
        rows = self._rows[start:stop]
        for name, col in (self._hot or {}).items():
            col[start:stop] = rows[name]
        # The read records in one structured copy (fields matched by position): one numpy call
        # instead of one a field, each of which releases and retakes the GIL that the other
        # threads decoding /index at open wait for.
        self._locations[start:stop] = rows[list(LOCATION_FIELDS)]
        self._summarize(start, stop, rows["id"], self._locations["deleted"][start:stop])

    def _summarize(self, start: int, stop: int, ids: np.ndarray, deleted: np.ndarray) -> None:
        """Note what _taken asks of rows ``start:stop`` (their ``ids`` and ``deleted`` flags),
        found while they are in the CPU's cache (scanning the rows' strided ids afterwards cost
        a fifth of the rest of a warm open)."""
        self._blocks[start] = (stop, *_summary(ids, deleted))

    def take_rows(self, n: int) -> None:
        """Make the first ``n`` rows of the storage, their columns copied, the index's rows."""
        if self._unread is not None:
            self._unread.stop = n
        self._n = 0
        self._taken(n)

    def append(self, new_rows: np.ndarray) -> None:
        k = len(new_rows)
        if not k:
            return
        start = self._n
        if new_rows is not self._rows:
            if start + k > len(self._rows):
                grown = np.zeros(max(2 * len(self._rows), start + k, 1024), INDEX_DTYPE)
                grown[:start] = self._made()[:start]
                self._rows = grown
            self._rows[start : start + k] = new_rows
        if start + k > len(self._locations):
            capacity = len(self._rows)
            for name, col in (self._hot or {}).items():
                grown_col = np.zeros(capacity, col.dtype)
                grown_col[:start] = col[:start]
                self._hot[name] = grown_col  # type: ignore[index]
            locations = np.zeros(capacity, LOCATION_DTYPE)
            locations[:start] = self._locations[:start]
            self._locations = locations
            self._refresh_views()
        self.copy_columns(start, start + k)
        self._taken(k)

    def _taken(self, k: int) -> None:
        """Count the ``k`` rows after the current ones as the index's (columns copied)."""
        blocks, self._blocks = self._blocks, {}
        if not k:
            return
        start = self._n
        self._n += k
        # (the rows' own ids where the hot copy is not made)
        ids = (self._rows if self._hot is None else self._hot)["id"][start : start + k]
        found = _whole_blocks(blocks, start, start + k)
        if found is None:  # (rows copied in other blocks than these: a dead writer's last)
            found = _summary(ids, self._locations["deleted"][start : start + k])
        deleted, first, runs_on = found
        self._deleted += deleted
        if self._dense_start is not None:
            if start == 0:
                self._dense_start = first
            if not runs_on or first != self._dense_start + start:
                self._dense_start = None
        if self._dense_start is None and self._row_of_id is not None:
            self._row_of_id.update(zip(ids.tolist(), range(start, start + k)))

    def set_offsets(self, rows: np.ndarray, offsets: np.ndarray) -> None:
        self._made(rows)
        self._locations["offset"][rows] = offsets
        self._rows["offset"][rows] = offsets

    # ------------------------------------------------------------------ ids

    def _id_map(self) -> dict[int, int]:
        if self._row_of_id is None:
            self._row_of_id = dict(zip(self.column("id").tolist(), range(self._n)))
        return self._row_of_id

    def find(self, image_id: Any) -> int:
        """Row of ``image_id`` (deleted or not), or -1 (also for anything but an integer)."""
        if type(image_id) is not int:  # (the read path's usual case skips the conversion)
            try:
                image_id = operator.index(image_id)  # numpy integers; not 1.0 or "1"
            except TypeError:
                return -1
        if self._dense_start is not None:
            row = image_id - self._dense_start
            return row if 0 <= row < self._n else -1
        return self._id_map().get(image_id, -1)

    def row_of(self, image_id: int) -> int:
        """Row of a live image; UnknownIdError if the id is unknown or deleted."""
        row = self.find(image_id)
        if row < 0 or self.deleted[row]:
            raise UnknownIdError(f"no image with id {image_id!r} in the store")
        return row

    def rows_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows of many live images, vectorised; UnknownIdError names the first bad id."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return np.zeros(0, dtype=np.int64)
        if ids.dtype.kind not in "iu":
            raise UnknownIdError(f"ids must be integers, got {ids.dtype}")
        ids = ids.astype(np.int64, copy=False).ravel()
        if self._dense_start is not None:
            rows = ids - self._dense_start
            bad = (rows < 0) | (rows >= self._n)
        else:
            lookup = self._id_map()
            rows = np.fromiter((lookup.get(i, -1) for i in ids.tolist()), np.int64, len(ids))
            bad = rows < 0
        if not bad.any():
            bad = self._locations["deleted"][rows] != 0
        if bad.any():
            raise UnknownIdError(f"no image with id {int(ids[np.argmax(bad)])} in the store")
        return rows

    def duplicates_of(self, ids: np.ndarray) -> np.ndarray:
        """The ids among ``ids`` already present (deleted ids count: they are never reused)."""
        if self._dense_start is not None:
            hit = (ids >= self._dense_start) & (ids < self._dense_start + self._n)
            return ids[hit]
        lookup = self._id_map()
        return np.array([i for i in ids.tolist() if i in lookup], dtype=np.int64)

    def next_id(self) -> int:
        if not self._n:
            return 0
        if self._dense_start is not None:
            return self._dense_start + self._n
        return int(self.column("id").max()) + 1

    def live_mask(self) -> np.ndarray:
        return self.column("deleted") == 0

    def live_ids(self) -> np.ndarray:
        ids = self.column("id")
        return ids.copy() if not self._deleted else ids[self.live_mask()]

    # ------------------------------------------------------------------ changes

    def mark_deleted(self, rows: np.ndarray) -> None:
        rows = np.unique(rows)
        self._made(rows)
        self._deleted += int(np.count_nonzero(self._locations["deleted"][rows] == 0))
        if self._hot is not None:
            self._hot["deleted"][rows] = 1
        self._locations["deleted"][rows] = 1
        self._rows["deleted"][rows] = 1

    # ------------------------------------------------------------------ queries

    def query(
        self,
        *,
        label: np.ndarray | None = None,
        true_label: np.ndarray | None = None,
        min_score: float | None = None,
        max_score: float | None = None,
        correct: bool | None = None,
    ) -> np.ndarray:
        """Ids of live images matching every given condition, in insertion order.

        ``label``/``true_label`` are arrays of class ids (any of them matches). Scores compare
        inclusively; images without a score never match a score bound. ``correct`` keeps
        images whose true label is known and equal (True) or different (False) to the
        prediction.
        """
        mask = self.live_mask() if self._deleted else np.ones(self._n, dtype=bool)
        if label is not None:
            mask &= _isin_small(self.column("label"), label)
        if true_label is not None:
            mask &= _isin_small(self.column("true_label"), true_label)
        if min_score is not None:
            mask &= self.column("score") >= np.float32(min_score)
        if max_score is not None:
            mask &= self.column("score") <= np.float32(max_score)
        if correct is not None:
            truth = self.column("true_label")
            same = truth == self.column("label").astype(np.int64)
            mask &= (truth >= 0) & (same if correct else ~same)
        return self.column("id")[mask]


def _summary(ids: np.ndarray, deleted: np.ndarray) -> tuple[int, int, bool]:
    """(deleted rows, first id, whether the ids run on from it) of a run of rows, from their
    ``ids`` and ``deleted`` flags."""
    first = int(ids[0])
    # Increasing integers from ids[0] to ids[0] + len - 1 are exactly those.
    runs_on = int(ids[-1]) - first == len(ids) - 1 and bool((ids[1:] > ids[:-1]).all())
    return int(np.count_nonzero(deleted)), first, runs_on


def _whole_blocks(
    blocks: dict[int, tuple[int, int, int, bool]], start: int, stop: int
) -> tuple[int, int, bool] | None:
    """(deleted rows, first id, whether the ids run on from it) of rows ``start:stop`` from
    what copy_columns found of ``blocks``; None unless those blocks make up exactly these
    rows."""
    deleted, first, runs_on, at = 0, 0, True, start
    while at < stop:
        block = blocks.get(at)
        if block is None or block[0] > stop:
            return None
        block_stop, block_deleted, block_first, block_runs_on = block
        if at == start:
            first = block_first
        # Each block runs on from its first id, and each starts where the one before ended.
        runs_on = runs_on and block_runs_on and block_first == first + (at - start)
        deleted += block_deleted
        at = block_stop
    return deleted, first, runs_on


def _isin_small(column: np.ndarray, values: np.ndarray) -> np.ndarray:
    # A few equality scans beat np.isin's sort for the handful of classes a query names.
    if len(values) > 8:
        return np.isin(column, values)
    mask = column == values[0]
    for value in values[1:]:
        mask |= column == value
    return mask
