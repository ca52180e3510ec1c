"""Recovery: what a killed writer left, and which rows of it are committed. The commit record
of a batch is its last index row's ``batch_end`` flag; rows after the last one set were in
flight, and so is structure (class groups, stacks, optional datasets) that no committed row
or label refers to, which the next writer removes.
"""

from __future__ import annotations

import re

import h5py
import numpy as np

from .format import (
    CLASSES,
    PREVIEWS,
    SCORE_CRC32,
    SCORES,
    SOURCE_CRC32,
    SOURCES,
    STACKS,
    safe_name,
    stack_path,
)


def committed_extent(
    index_nbytes: np.ndarray,
    index_batch_end: np.ndarray,
    index_ids: np.ndarray,
    tail_rows: np.ndarray,
    first_empty: int | None = None,
) -> tuple[int, np.ndarray]:
    """Which rows belong to the store, from /index's ``nbytes``, ``batch_end`` and ``id``
    columns and the raw contents of /index_tail: the first how many rows of /index, and the
    tail rows that follow them.

    * A row without payload (``nbytes == 0``) is fill: a chunk of /index that a writer never
      finished flushing, or an unused tail slot. The rows end at the first one.
    * A tail row whose id also stands in /index is a copy left by a writer that stopped between
      moving the tail into /index and emptying it; copies are dropped.
    * Rows after the last ``batch_end`` belong to a batch that never finished.

    ``first_empty``: the first row of /index without payload (``len(index_nbytes)`` where
    there is none), where the caller has found it already (a scan of a million rows here
    cost 3 ms of a reader's open; its blocks of rows are scanned on threads as they land).
    """
    if first_empty is None:
        holes = np.flatnonzero(index_nbytes == 0)
        first_empty = int(holes[0]) if len(holes) else len(index_nbytes)
    if first_empty < len(index_nbytes):
        n, tail = first_empty, tail_rows[:0]
    else:
        n = len(index_nbytes)
        empty = np.flatnonzero(tail_rows["nbytes"] == 0)
        tail = tail_rows[: empty[0]] if len(empty) else tail_rows
        if len(tail) and n:
            tail = tail[~np.isin(tail["id"], index_ids)]
    ends = np.flatnonzero(tail["batch_end"])
    if len(ends):
        return n, tail[: int(ends[-1]) + 1]
    return _last_nonzero(index_batch_end[:n]) + 1, tail[:0]


def _last_nonzero(values: np.ndarray) -> int:
    """Position of the last nonzero value, or -1; looked for from the end in growing windows
    (the last row of /index is nearly always a batch's end)."""
    stop, window = len(values), 256
    while stop > 0:
        found = np.flatnonzero(values[max(0, stop - window) : stop])
        if len(found):
            return max(0, stop - window) + int(found[-1])
        stop, window = stop - window, window * 8
    return -1


def committed_rows(index_rows: np.ndarray, tail_rows: np.ndarray) -> np.ndarray:
    """The rows that belong to the store, from the raw contents of /index and /index_tail
    (see :func:`committed_extent`)."""
    n, tail = committed_extent(
        index_rows["nbytes"], index_rows["batch_end"], index_rows["id"], tail_rows
    )
    return np.concatenate([index_rows[:n], tail]) if len(tail) else index_rows[:n]


_STACK_NAME = re.compile(r"^\d+x\d+x\d+_[a-z0-9]+$")


def _readable(parent: h5py.Group, name: str) -> bool:
    try:
        obj = parent[name]
        dict(obj.attrs)
        if isinstance(obj, h5py.Dataset):
            obj.shape  # noqa: B018 - reading the dataspace is the check
        return True
    except Exception:  # HDF5 reports torn metadata as OSError, RuntimeError or KeyError
        return False


def remove_unreferenced_structure(f: h5py.File, labels: list[str], rows: np.ndarray) -> list[str]:
    """After a writer died: delete what its last object-creating epoch may have left half
    written and nothing committed refers to. Returns the HDF5 paths removed.

    Objects become part of the store only through rows written after them (labels, /stacks
    rows, index rows), so stacks past the last referenced /stacks row, stack datasets missing
    from /stacks, class groups whose label never reached /labels, and unreadable objects
    without committed images are all safe to delete.
    """
    removed: list[str] = []
    table = f[STACKS]
    used = rows["stack"].astype(np.int64)
    keep = int(used.max()) + 1 if len(used) else 0
    if table.shape[0] > keep:
        table.resize(keep, axis=0)
    known = {
        stack_path(
            labels[int(r["label"])],
            int(r["height"]),
            int(r["width"]),
            int(r["channels"]),
            r["dtype"].decode(),
        )
        for r in table[()]
    }
    committed_groups = {safe_name(labels[int(k)]) for k in np.unique(rows["label"])}
    label_set = set(labels)
    classes = f[CLASSES]
    for name in list(classes):
        path = f"/{CLASSES}/{name}"
        group_ok = _readable(classes, name)
        if not group_ok or classes[name].attrs.get("label") not in label_set:
            if name in committed_groups:
                continue  # images depend on it: leave it for verify to report
            del classes[name]
            removed.append(path)
            continue
        group = classes[name]
        for child in list(group):
            child_path = f"{path}/{child}"
            if _STACK_NAME.match(child) and child_path not in known:
                del group[child]
                removed.append(child_path)
    for name in (SCORES, SCORE_CRC32, SOURCES, SOURCE_CRC32, PREVIEWS):
        if name in f and not _readable(f, name):
            del f[name]
            removed.append(f"/{name}")
    if SCORE_CRC32 in f and SCORES not in f:  # checks of scores that are gone
        del f[SCORE_CRC32]
        removed.append(f"/{SCORE_CRC32}")
    if SOURCE_CRC32 in f and SOURCES not in f:  # checks of sources that are gone
        del f[SOURCE_CRC32]
        removed.append(f"/{SOURCE_CRC32}")
    return removed
