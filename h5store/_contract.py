"""The read contract: what every readable store answers, whatever holds its images.

:class:`ReadableStore` is the interface :class:`~h5store.ImageStore` (one file, local or
remote) and :class:`~h5store.ShardedStore` (several files read as one) both implement in
full, so code that reads (a training loop, an analysis, the CLI) takes either. Its return
types (:class:`Record`, :class:`VerifyReport`) and image references live here too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from .errors import InvalidInputError

if TYPE_CHECKING:
    from .codecs import Codec


@dataclass(frozen=True)
class Record:
    """Everything the store knows about one image, except its pixels."""

    id: int
    label: str
    true_label: str | None
    score: float | None
    shape: tuple[int, ...]
    dtype: str
    codec: str
    nbytes: int
    crc32: int
    source: str | None
    scores: np.ndarray | None
    stack: str
    position: int

    @property
    def correct(self) -> bool | None:
        """Whether the prediction matches the true label (None if the truth is unknown)."""
        return None if self.true_label is None else self.label == self.true_label

    def __repr__(self) -> str:
        # Scores are stored as float32: print them as float32 (0.9753115, not the float64
        # expansion 0.9753115177154541 of the same number).
        score = None if self.score is None else str(np.float32(self.score))
        scores = (
            None
            if self.scores is None
            else np.array2string(self.scores, precision=4, separator=", ", threshold=8)
        )
        return (
            f"Record(id={self.id}, label={self.label!r}, true_label={self.true_label!r}, "
            f"score={score}, shape={self.shape}, dtype={self.dtype!r}, codec={self.codec!r}, "
            f"nbytes={self.nbytes}, crc32={self.crc32:#010x}, source={self.source!r}, "
            f"scores={scores}, stack={self.stack!r}, position={self.position})"
        )


@dataclass
class VerifyReport:
    """Result of :meth:`ImageStore.verify`."""

    checked: int = 0
    #: ids whose stored bytes no longer match their CRC-32 (or cannot be found).
    damaged: list[int] = field(default_factory=list)
    #: ids whose cached chunk offset disagrees with HDF5's chunk index.
    misplaced: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.misplaced

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.checked} images checked, all intact"
        parts = [f"{self.checked} images checked"]
        if self.damaged:
            parts.append(f"{len(self.damaged)} damaged (ids {self.damaged[:10]})")
        if self.misplaced:
            parts.append(f"{len(self.misplaced)} with stale offsets (ids {self.misplaced[:10]})")
        return "; ".join(parts)


@runtime_checkable
class ReadableStore(Protocol):
    """A store that can be read: images by id, their metadata, queries, integrity."""

    @property
    def mode(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    @property
    def writable(self) -> bool: ...
    @property
    def verify_reads(self) -> bool: ...
    @property
    def labels(self) -> tuple[str, ...]: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, *exc_info: Any) -> None: ...
    def close(self) -> None: ...
    def refresh(self) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, image_id: object) -> bool: ...
    def __iter__(self) -> Iterator[int]: ...
    def ids(self) -> np.ndarray: ...
    def __getitem__(self, image_id: int) -> np.ndarray: ...
    def get_batch(
        self,
        ids: Sequence[int] | np.ndarray,
        *,
        out: np.ndarray | None = None,
        channel_order: str | None = None,
    ) -> list[np.ndarray] | np.ndarray: ...
    def get_encoded(self, image_id: int) -> bytes: ...
    def record(self, image_id: int) -> Record: ...
    def codec_of(self, label: str) -> Codec: ...
    def query(
        self,
        *,
        label: str | int | Sequence[str | int] | None = None,
        true_label: str | int | Sequence[str | int] | None = None,
        min_score: float | None = None,
        max_score: float | None = None,
        correct: bool | None = None,
    ) -> np.ndarray: ...
    @property
    def index(self) -> np.ndarray: ...
    @property
    def scores(self) -> np.ndarray | None: ...
    @property
    def sources(self) -> list[str | None]: ...
    def to_pandas(self, *, include_deleted: bool = False, scores: bool = False) -> Any: ...
    def to_sql(
        self,
        url_or_engine: Any,
        *,
        table: str = "images",
        if_exists: str = "fail",
        files: dict[int, str] | None = None,
        ids: Sequence[int] | None = None,
    ) -> int: ...
    def verify(self) -> VerifyReport: ...
    def stats(self) -> dict[str, Any]: ...


#: Between a store's path and an image id in a reference (``/data/run.h5#17``): the ``ref``
#: column of :meth:`ImageStore.to_sql`, which :func:`load` and ``h5store show`` accept.
REF_SEPARATOR = "#"


def image_ref(path: str | os.PathLike, image_id: int) -> str:
    """The reference of one image: the store's absolute path, ``#``, the id.

    Parameters
    ----------
    path
        The store file.
    image_id
        The image's id.

    Returns
    -------
    str
        ``"/abs/path/run.h5#17"``: the ``ref`` column :meth:`ImageStore.to_sql` writes.
    """
    return f"{os.path.abspath(os.fspath(path))}{REF_SEPARATOR}{int(image_id)}"


def parse_ref(ref: str) -> tuple[str, int]:
    """The store path and id of a reference made by :func:`image_ref`.

    The last ``#`` splits it, so paths may hold one.

    Parameters
    ----------
    ref
        ``"<store path>#<id>"``.

    Returns
    -------
    tuple of (str, int)
        The store path and the image id.

    Raises
    ------
    InvalidInputError
        ``ref`` is not such a reference.
    """
    path, sep, number = ref.rpartition(REF_SEPARATOR) if isinstance(ref, str) else ("", "", "")
    if not sep or not path or not (number.isascii() and number.isdigit()):
        raise InvalidInputError(
            f"{ref!r} is not an image reference: expected '<store path>#<id>', as in the ref "
            "column to_sql and `h5store index --sql` write"
        )
    return path, int(number)
