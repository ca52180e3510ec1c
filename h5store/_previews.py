"""Thumbnails for the class previews, drawn as batches arrive rather than at close.

A class preview shows the first ``PREVIEW_IMAGES`` live images of its class, so the images that
will show are known when they arrive: once a class has that many, its preview changes only if
one of them is deleted. Their thumbnails are drawn as each batch is accepted, and kept when it
commits: from the pixels of an ``add_batch`` call while its images encode, or on the
background thread from the payloads (pre-encoded input, one-image calls, merge, repack).
libjpeg and numpy release the GIL, so on a second core this costs the writer no wall time, and
closing the store only assembles the sheets (drawing them there was most of a small store's
fixed cost). An image without a thumbnail (one
that replaced a deleted preview image, or arrived in an earlier session) is read back from the
file at close instead.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Union

import numpy as np

from . import format as fmt
from ._imaging import thumbnail
from ._parallel import in_background

#: Thumbnails by image id, drawn or being drawn (None: none of the batch's images shows).
PreviewJob = Union["Future[dict[int, np.ndarray]]", "dict[int, np.ndarray]", None]


def _draw(positions: list[int], ids: list[int], image_of: Callable[[int], Any]) -> dict:
    tiles = {}
    for k, image_id in zip(positions, ids):
        # Best effort: an image whose thumbnail fails here is read back at close, where a
        # damaged one shows as a black tile.
        try:
            tiles[image_id] = thumbnail(image_of(k), fmt.PREVIEW_SIDE)
        except Exception:  # the fallback at close decides what to show
            continue
    return tiles


class PreviewTiles:
    """The thumbnails a write session drew for the images its class previews will show."""

    def __init__(self, live_counts: Callable[[], np.ndarray]) -> None:
        self._live_counts = live_counts  # live images per class id, asked once per session
        self._arrived: np.ndarray | None = None  # per class id, counted up to PREVIEW_IMAGES
        self._tiles: dict[int, np.ndarray] = {}

    def start(
        self,
        label_ids: np.ndarray,
        ids: np.ndarray,
        image_of: Callable[[int], Any],
        now: bool = False,
    ) -> PreviewJob:
        """Begin drawing thumbnails of the batch's images that are among the first of their
        class; ``image_of(k)`` gives image k's pixels, called on the background thread, or
        by this one if ``now`` (the caller's pixels, which it may reuse once its call returns:
        64 us a thumbnail at 224 px, against 300-550 us to decode a payload for it)."""
        if self._arrived is None:
            self._arrived = np.asarray(self._live_counts(), dtype=np.int64)
        labels = np.unique(label_ids)
        if len(labels) and labels[-1] >= len(self._arrived):
            grown = np.zeros(int(labels[-1]) + 1, dtype=np.int64)
            grown[: len(self._arrived)] = self._arrived
            self._arrived = grown
        open_labels = labels[self._arrived[labels] < fmt.PREVIEW_IMAGES]
        if not len(open_labels):
            return None
        chosen: list[int] = []
        for label in open_labels.tolist():
            room = fmt.PREVIEW_IMAGES - int(self._arrived[label])
            members = np.flatnonzero(label_ids == label)[:room]
            # Counted even if the batch fails: a later image of the class then simply has no
            # thumbnail and is read back at close.
            self._arrived[label] += len(members)
            chosen.extend(members.tolist())
        if now:
            return _draw(chosen, ids[chosen].tolist(), image_of)
        return in_background(_draw, chosen, ids[chosen].tolist(), image_of)

    def keep(self, job: PreviewJob) -> None:
        """The job's batch committed: its thumbnails may show."""
        if job is not None:
            self._tiles.update(job if isinstance(job, dict) else job.result())

    def get(self, image_id: int) -> np.ndarray | None:
        return self._tiles.get(image_id)
