"""The in-memory index: every committed row as numpy columns, id lookup and vectorised queries.

Loaded once at open (a million rows is a few hundred compressed chunk reads) and appended to as
batches commit, so lookups and queries never touch HDF5.
"""

from __future__ import annotations

import operator

import numpy as np

from .errors import UnknownIdError
from .format import INDEX_DTYPE


class Index:
    """Committed index rows in insertion order, plus an id -> row map.

    Ids that run 0, 1, 2, ... (or any unbroken run, the default when h5store assigns them)
    map to rows arithmetically; any other id sequence switches to a dict built once.
    """

    def __init__(self, rows: np.ndarray | None = None):
        self._buf = np.zeros(0, dtype=INDEX_DTYPE)
        self._n = 0
        self._dense_start: int | None = 0  # ids == _dense_start + row, while that holds
        self._row_of_id: dict[int, int] | None = None
        if rows is not None and len(rows):
            self.append(rows)

    # ------------------------------------------------------------------ size and access

    def __len__(self) -> int:
        return self._n

    @property
    def rows(self) -> np.ndarray:
        """All committed rows (deleted ones included), a view: do not modify."""
        return self._buf[: self._n]

    def column(self, name: str) -> np.ndarray:
        return self._buf[name][: self._n]

    def append(self, new_rows: np.ndarray) -> None:
        k = len(new_rows)
        if not k:
            return
        if self._n + k > len(self._buf):
            grown = np.zeros(max(2 * len(self._buf), self._n + k, 1024), dtype=INDEX_DTYPE)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        start = self._n
        self._buf[start : start + k] = new_rows
        self._n += k
        ids = new_rows["id"]
        if self._dense_start is not None:
            if start == 0:
                self._dense_start = int(ids[0])
            if not np.array_equal(ids, np.arange(self._dense_start + start, self._dense_start + start + k)):
                self._dense_start = None
        if self._dense_start is None and self._row_of_id is not None:
            self._row_of_id.update(zip(ids.tolist(), range(start, start + k)))

    # ------------------------------------------------------------------ ids

    def _id_map(self) -> dict[int, int]:
        if self._row_of_id is None:
            self._row_of_id = dict(zip(self.column("id").tolist(), range(self._n)))
        return self._row_of_id

    def find(self, image_id: int) -> int:
        """Row of ``image_id`` (deleted or not), or -1."""
        try:
            key = operator.index(image_id)  # ints and numpy integers; not 1.0 or "1"
        except TypeError:
            return -1
        if self._dense_start is not None:
            row = key - self._dense_start
            return row if 0 <= row < self._n else -1
        return self._id_map().get(key, -1)

    def row_of(self, image_id: int) -> int:
        """Row of a live image; UnknownIdError if the id is unknown or deleted."""
        row = self.find(image_id)
        if row < 0 or self._buf["deleted"][row]:
            raise UnknownIdError(f"no image with id {image_id!r} in the store")
        return row

    def rows_of(self, ids) -> np.ndarray:
        """Rows of many live images, vectorised; UnknownIdError names the first bad id."""
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            if ids.size == 0:
                return np.zeros(0, dtype=np.int64)
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
            bad = self._buf["deleted"][rows] != 0
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
        return self.column("id")[self.live_mask()]

    # ------------------------------------------------------------------ changes

    def mark_deleted(self, rows: np.ndarray) -> None:
        self._buf["deleted"][rows] = 1

    # ------------------------------------------------------------------ queries

    def query(
        self,
        *,
        label: int | np.ndarray | None = None,
        true_label: int | np.ndarray | None = None,
        min_score: float | None = None,
        max_score: float | None = None,
        correct: bool | None = None,
    ) -> np.ndarray:
        """Ids of live images matching every given condition, in insertion order.

        ``label``/``true_label`` are class ids (or arrays of them: any of). Scores compare
        inclusively; images without a score never match a score bound. ``correct`` keeps
        images whose true label is known and equal (True) or different (False) to the
        prediction.
        """
        mask = self.live_mask()
        if label is not None:
            mask &= np.isin(self.column("label"), np.atleast_1d(label))
        if true_label is not None:
            mask &= np.isin(self.column("true_label"), np.atleast_1d(true_label))
        if min_score is not None:
            mask &= self.column("score") >= np.float32(min_score)
        if max_score is not None:
            mask &= self.column("score") <= np.float32(max_score)
        if correct is not None:
            truth = self.column("true_label")
            same = truth == self.column("label").astype(np.int64)
            mask &= (truth >= 0) & (same if correct else ~same)
        return self.column("id")[mask]
