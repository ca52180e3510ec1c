"""``ImageStore``: the public API, a thin layer over the format, the codecs and the file session.

>>> with h5store.open("run.h5", "w", codec="jpeg", quality=90) as store:
...     ids = store.add_batch(images, labels=predicted, scores=probabilities)
>>> with h5store.open("run.h5") as store:
...     wrong = store.query(min_score=0.9, correct=False)
...     pictures = store.get_batch(wrong)
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from . import _inputs, _offsets
from . import format as fmt
from ._catalog import Catalog, Stack, query_label_ids
from ._file import (
    MODES,
    READER_RETRY_SECONDS,
    MappedFile,
    WriterLock,
    check_locking,
    open_for_reading,
    read_committed_index,
    reader_precheck,
)
from ._ingest import GroupCommit, Ingest, check_durability
from ._parallel import decode_threads, thread_map
from ._write import StoreWriter, chosen_codec, open_writer_file
from .codecs import Codec, get_codec, image_shape
from .codecs.base import check_quality
from .errors import (
    ClosedStoreError,
    CodecError,
    DamagedImageError,
    FormatError,
    H5StoreError,
    InvalidInputError,
    ReadOnlyError,
    StorePermissionError,
    UnknownIdError,
    WriteFailedError,
)
from .format import crc32
from .index import Index


def _writes(method):
    """For the public methods that write: a write the system refuses (full disk, I/O error)
    raises a WriteFailedError and closes the store, committed images intact (WriterFile.guard);
    so does any failure of a group commit (the writer abandons the file as a killed one would)."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        writer_file = getattr(self, "_writer_file", None)
        if writer_file is None:
            return method(self, *args, **kwargs)
        try:
            with writer_file.guard():
                return method(self, *args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, (WriteFailedError, StorePermissionError)) or writer_file.abandoned:
                if self._ingest is not None:
                    self._ingest.name_unstored(exc)
                self._release()
            raise

    return guarded


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


@dataclass(frozen=True)
class OpenArguments:
    """The arguments of :func:`open` once checked. Every one is validated here, before a file
    is opened, created or truncated: a refused argument changes nothing and holds no lock."""

    path: str | list[str]
    mode: str
    codec: Codec
    labels: list[str] | None
    verify_reads: bool
    locking: bool | str | None
    durability: str = "group"
    group_commit: GroupCommit | None = None
    bgr: bool = False
    argmax_labels: bool = True

    @classmethod
    def checked(
        cls,
        path: Any,
        mode: Any,
        codec: Any,
        quality: Any,
        labels: Any,
        verify_reads: Any,
        locking: Any,
        codec_options: dict[str, Any],
        durability: Any = "group",
        group_commit: Any = None,
        channel_order: Any = "rgb",
        argmax_labels: Any = True,
    ) -> OpenArguments:
        if not isinstance(mode, str) or mode not in MODES:
            raise InvalidInputError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
        check_locking(locking)
        check_durability(durability)
        if group_commit is not None and not isinstance(group_commit, GroupCommit):
            raise InvalidInputError(
                f"group_commit must be an h5store.GroupCommit, got {type(group_commit).__name__}"
            )
        if not isinstance(verify_reads, (bool, np.bool_)):
            raise InvalidInputError(f"verify_reads must be True or False, got {verify_reads!r}")
        bgr = _inputs.check_channel_order(channel_order)
        if not isinstance(argmax_labels, bool):
            raise InvalidInputError(f"argmax_labels must be True or False, got {argmax_labels!r}")
        check_quality(quality)  # documented as 1-100 for every codec, used by the lossy ones
        default_codec = get_codec(codec, quality=quality, **codec_options)
        try:
            fmt.codec_config_json(default_codec)  # what creating its first class would refuse
        except FormatError as exc:
            raise CodecError(str(exc)) from None
        names = None if labels is None else _inputs.as_label_names(labels)
        paths = (
            [_checked_path(p) for p in path]
            if isinstance(path, (list, tuple))
            else _checked_path(path)
        )
        return cls(
            paths,
            MODES[mode],
            default_codec,
            names,
            bool(verify_reads),
            locking,
            durability,
            group_commit,
            bgr,
            argmax_labels,
        )


def _checked_path(path: Any) -> str:
    try:
        text = os.fsdecode(os.fspath(path))
    except TypeError:
        raise InvalidInputError(f"path must be a file name, got {type(path).__name__}") from None
    if not text or "\x00" in text:
        raise InvalidInputError(f"path {text!r} is not a usable file name")
    return text


class ImageStore:
    """Images a model classified, in one HDF5 file. Create with :func:`h5store.open`."""

    def __init__(
        self,
        path: str | os.PathLike,
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
    ):
        # Validate all, then create: a refused argument must leave an existing file as it was
        # (mode 'w' truncates it) and hold no lock.
        args = OpenArguments.checked(
            path,
            mode,
            codec,
            quality,
            labels,
            verify_reads,
            locking,
            codec_options,
            durability,
            group_commit,
            channel_order,
            argmax_labels,
        )
        self._locking = args.locking
        self.path = args.path
        self.mode = args.mode
        self._verify_reads = args.verify_reads
        self._default_codec = args.codec
        #: the default order of colour channels handed to add* and returned by reads
        self._bgr = args.bgr
        self._reader: h5py.File | None = None
        self._mapped: MappedFile | None = None
        #: heap collections of /sources found intact, by address: the CRC-32 of their bytes
        self._checked_heaps: dict[int, int] = {}
        self._writer: StoreWriter | None = None
        self._ingest: Ingest | None = None
        if self.mode == "r":
            try:
                self._open_reader()
            except BaseException:
                self._release()
                raise
            return
        writer_file, removed = open_writer_file(self.path, self.mode, locking)
        try:
            self._writer_file = writer_file
            self._load(writer_file.f, new_file=writer_file.created)
            self._writer = StoreWriter(
                writer_file,
                self._catalog,
                self._index,
                self._default_codec,
                self._preview_images,
            )
            self._ingest = Ingest(
                self._writer, args.durability, args.group_commit, args.argmax_labels
            )
            # A commit an add call triggers (bound reached, durability="call") runs guarded,
            # like commit() itself: a refused write closes the store and names the ids.
            self._ingest.commit_now = self.commit
            if f"/{fmt.PREVIEWS}" in removed:  # torn by the dead writer: redraw them all
                self._writer.dirty_labels.update(range(len(self._catalog.labels)))
            if args.labels is not None:
                self.add_labels(args.labels)
        except BaseException:
            # The lock goes now, not when the garbage collector finds this object.
            writer_file.close()
            self._release()
            raise

    # ------------------------------------------------------------------ loading

    def _load(self, f: h5py.File, *, new_file: bool = False) -> None:
        """Read the index and the catalogue (``new_file``: the layout was just made, no rows)."""
        with fmt.damage_reported(self.path):
            self._load_checked(f, new_file)

    def _load_checked(self, f: h5py.File, new_file: bool = False) -> None:
        # The index rows first, then the catalogue: the reverse of the order a writer writes
        # them, so everything the rows read refer to is on disk when it is read.
        # A reader's first map is populated (no page fault per first read of a page); a
        # refresh or a writer, which remap as the file grows, would pay it again and again.
        populate = self.mode == "r" and self._mapped is None
        if self._mapped is not None:
            self._mapped.close()
        self._mapped = MappedFile(self.path, populate=populate)
        if new_file:
            self._index, fit = Index(), True
        else:
            # Each block of rows is checked as it is decoded, against the /stacks and /labels
            # read before the rows; rows that do not fit them (or name a stack a writer added
            # since) are checked one by one against the catalogue read after.
            fits = fmt.RowsFit(fmt.read_stacks(f), len(fmt.read_labels(f)))
            self._index, fit = read_committed_index(f, self._mapped, fits)
        fmt.check_committed_rows(f, len(self._index), self.path)
        #: the file carries the checks of format 1.2 (/score_crc32, class cross-checks)
        self._checked = fmt.has_checks(fmt.file_version(f))
        self._catalog = catalog = Catalog(f, self._class_group, checked=self._checked)
        if fit:
            fmt.check_unique_ids(self._index.column("id"), self.path)
        else:
            fmt.check_rows(self._index.take(), catalog.table, len(catalog.labels), self.path)
        if self.mode != "r":  # only a writer appends to the stacks
            catalog.set_lengths(self._index.column("stack"), self._index.column("position"))
        # The read path indexes this list for every image; the writer's new stacks append to it.
        self._decoders = catalog.decoders
        _offsets.check_and_rebuild(self._file, self._index, self._mapped, self._stacks)

    def _class_group(self, label: str) -> h5py.Group | None:
        return self._file[fmt.CLASSES].get(fmt.safe_name(label))

    @property
    def _labels(self) -> list[str]:
        return self._catalog.labels

    @property
    def _stacks(self) -> list[Stack]:
        return self._catalog.stacks

    @property
    def _file(self) -> h5py.File:
        writer_file = getattr(self, "_writer_file", None)
        if writer_file is not None:  # set before the write session exists (loading needs it)
            return writer_file.f
        if self._reader is None:
            raise ClosedStoreError(f"{self.path} is closed")
        return self._reader

    # ------------------------------------------------------------------ context and lifetime

    def __enter__(self) -> ImageStore:
        return self

    def __del__(self) -> None:
        # Like an unclosed file: finish the write session and release the lock, and say so.
        if getattr(self, "_mapped", None) is not None:
            warnings.warn(
                f"h5store: {self.path} was not closed; closing it now",
                ResourceWarning,
                stacklevel=2,
            )
            try:
                self.close()
            except Exception:  # during interpreter shutdown h5py may already be gone
                pass

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._mapped is None

    @property
    def writable(self) -> bool:
        return self._writer is not None

    @property
    def verify_reads(self) -> bool:
        """Whether reads check each image's CRC-32 before returning it (see :func:`open`)."""
        return self._verify_reads

    def close(self) -> None:
        """Commit what is pending, finish writing (complete index table, class counts,
        previews) and release the file."""
        if self._mapped is None:
            return
        try:
            if self._writer is not None:
                with self._writer_file.guard():
                    self._ingest.commit()
                    if self._writer.has_pending_work:
                        self._writer.finish()
        except BaseException as exc:
            if self._writer_file is not None and not self._writer_file.abandoned:
                self._writer_file.abandon()
            if self._ingest is not None:
                self._ingest.name_unstored(exc)
            raise
        finally:
            self._release()

    @_writes
    def commit(self) -> None:
        """Make every image added so far durable; returns when it is on disk.

        With ``durability="group"`` (the default) the add methods validate their input and
        return the ids at once; the images are written together when this returns, when
        :meth:`flush` or :meth:`close` does, or when what is pending reaches the store's
        :class:`GroupCommit` bound. A crash loses at most the images not committed yet, never
        part of a batch. If a commit fails (full disk, I/O error), the error names the ids it
        could not store and the store closes with every earlier commit intact."""
        self._check_writable()
        self._commit_pending()

    def flush(self) -> None:
        """As :meth:`commit` (h5py's name for it)."""
        self.commit()

    @property
    def pending(self) -> int:
        """Images added but not committed yet (0 for a reader)."""
        return 0 if self._ingest is None else self._ingest.pending

    def _commit_pending(self) -> None:
        """Commit the pending group; a failure abandons the file (as a killed writer leaves
        it: recovery on the next open) and the ``_writes`` guard closes the store."""
        ingest = self._ingest
        if ingest is None or not ingest.pending:
            return
        try:
            ingest.commit()
        except BaseException:
            if not self._writer_file.abandoned:
                self._writer_file.abandon()
            raise

    def _sync(self) -> None:
        """Reads on a writing store see what it added (read-your-writes): commit first."""
        if self._ingest is not None and self._ingest.pending:
            self.commit()

    def _release(self) -> None:
        """Close the HDF5 handle, the writer lock and the memory map, whatever state they are in."""
        writer_file = getattr(self, "_writer_file", None)
        if writer_file is not None:
            writer_file.close()
            self._writer_file = None
        if self._ingest is not None:
            self._ingest.discard()
            self._ingest = None
        self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._mapped is not None:
            self._mapped.close()
            self._mapped = None

    @_writes
    def rebuild_previews(self) -> None:
        """Redraw the contact sheet of every class (they are kept current when a writer
        closes; this repairs them after a writer was killed, or for files from elsewhere)."""
        self._check_writable().rebuild_previews()

    def refresh(self) -> None:
        """Reader only: pick up what a concurrent writer committed since open."""
        if self._writer is not None:
            return
        self._check_open()
        # A writer that died restructuring the file leaves it unopenable until recovered:
        # say so while the current view still works, rather than after dropping it.
        reader_precheck(self.path)
        self._reader.close()
        self._reader = None
        try:
            self._open_reader()
        except H5StoreError:
            # Keep the current view usable (its rows, labels and stacks are all still in the
            # file): only a handle for /scores and /sources is needed.
            with contextlib.suppress(H5StoreError, OSError):
                self._reader = open_for_reading(self.path, self._locking)
            raise

    def _open_reader(self) -> None:
        """Open and load for reading. While a writer appends, a SWMR reader can meet a chunk the
        writer placed past the end of file it read at open (HDF5: "addr overflow"), or tail
        rows a recovering writer is restructuring; that is a race, not damage, so with a live
        writer the open is retried for as long as open_for_reading waits for a writer (a
        bound in time, not in attempts: four attempts, 70 ms of sleep, were too few for a
        writer recovering under load)."""
        deadline = time.monotonic() + READER_RETRY_SECONDS
        delay = 0.01
        while True:
            self._reader = reader = open_for_reading(self.path, self._locking)
            try:
                with fmt.damage_reported(self.path):
                    fmt.check_root(reader, self.path)
                self._load(reader)
            except FormatError:
                reader.close()
                self._reader = None
                if time.monotonic() >= deadline or not WriterLock.is_held(self.path):
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 0.1)
                continue
            return

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes (PyTorch DataLoader with spawn) reopen the file for reading.
        return {
            "path": self.path,
            "verify_reads": self._verify_reads,
            "locking": self._locking,
            "channel_order": "bgr" if self._bgr else "rgb",
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(
            state["path"],
            "r",
            verify_reads=state.get("verify_reads", True),
            locking=state.get("locking"),
            channel_order=state.get("channel_order", "rgb"),
        )

    def __repr__(self) -> str:
        if self.closed:
            return f"<h5store.ImageStore {self.path!r} (closed)>"
        return (
            f"<h5store.ImageStore {self.path!r} mode={self.mode!r}: {len(self)} images, "
            f"{len(self._labels)} labels>"
        )

    def _check_open(self) -> None:
        if self._mapped is None:
            raise ClosedStoreError(f"{self.path} is closed")

    def _check_writable(self) -> StoreWriter:
        self._check_open()
        if self._writer is None:
            raise ReadOnlyError(f"{self.path} is open read-only (mode 'r')")
        return self._writer

    def _check_writable_ingest(self) -> Ingest:
        if self._ingest is None:
            self._check_writable()
        return self._ingest

    # ------------------------------------------------------------------ labels and classes

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names; a class id is a position in this tuple."""
        return tuple(self._labels)

    @_writes
    def add_labels(self, names: Sequence[str]) -> list[int]:
        """Declare class names (in order) before storing images, so that integer labels and
        (N, K) score vectors map to them. Names already present keep their ids.

        Declared labels are a closed set: from then on (and in any store holding score
        vectors) a label the store does not have is an error naming the nearest declared
        one, not a new class; call ``add_labels`` again (or ``create_class``) to extend it."""
        return self._check_writable().add_labels(names)

    @_writes
    def create_class(
        self,
        label: str,
        codec: str | Codec | None = None,
        *,
        quality: int | None = None,
        **codec_options: Any,
    ) -> None:
        """Create the class ``label`` with its own codec (otherwise classes take the store's
        default codec when their first image arrives). Repeating the call is harmless."""
        writer = self._check_writable()
        label = _inputs.check_label(label)
        self._commit_pending()  # pending images of this label were given the default codec
        writer.create_class(label, chosen_codec(self._default_codec, codec, quality, codec_options))

    def codec_of(self, label: str) -> Codec:
        """The codec of class ``label`` (the store default for a class not created yet)."""
        self._check_open()
        return self._catalog.class_codec(label) or self._default_codec

    # ------------------------------------------------------------------ adding

    def add(
        self,
        image: Any,
        *,
        label: str | int,
        score: float | Sequence[float] | None = None,
        true_label: str | int | None = None,
        id: int | None = None,
        source: str | None = None,
        channel_order: str | None = None,
    ) -> int:
        """Store one image; returns its id. See :meth:`add_batch`; as fast per image as a
        batch, since images are committed in groups (:meth:`commit`)."""
        bgr = self._bgr if channel_order is None else _inputs.check_channel_order(channel_order)
        return self._check_writable_ingest().add_image(
            image, label, score, true_label, id, source, bgr
        )

    def add_batch(
        self,
        images: Any,
        *,
        labels: Sequence[str | int],
        scores: Any = None,
        true_labels: Sequence[str | int | None] | None = None,
        ids: Sequence[int] | None = None,
        sources: Sequence[str | None] | None = None,
        channel_order: str | None = None,
    ) -> np.ndarray:
        """Store a batch of images; returns their ids. All of it lands, or none of it.

        ``images``: a sequence of (H, W) or (H, W, C) uint8/uint16 arrays, PIL images or
        (C, H, W) torch tensors, or one (N, H, W[, C]) array. ``labels``: predicted class
        names, or class ids into :attr:`labels`. ``scores``: (N,) top-1 confidences or (N, K)
        probability vectors over the K declared labels. ``true_labels``: ground truth (None or
        -1 where unknown). ``ids``: your own non-negative ids (default: consecutive).
        ``sources``: where each image came from (a path, a URL). ``channel_order``: ``"bgr"``
        for OpenCV's arrays (``cv2.imread``), ``"rgb"``; default: the store's (``open(...,
        channel_order=)``, ``"rgb"`` unless set). Colour images are stored RGB(A) either way,
        so viewers, exports and the report show true colours; grayscale is unaffected.

        Bad input raises here and leaves nothing behind. Accepted images are encoded on
        h5store's threads and are durable once :meth:`commit` returns (or the group bound is
        reached, or the store is flushed or closed); ``durability="call"`` at open commits in
        every call instead.
        """
        bgr = self._bgr if channel_order is None else _inputs.check_channel_order(channel_order)
        return self._check_writable_ingest().add_images(
            images, labels, scores, true_labels, ids, sources, bgr
        )

    def add_encoded(
        self,
        data: bytes,
        *,
        label: str | int,
        score: float | Sequence[float] | None = None,
        true_label: str | int | None = None,
        id: int | None = None,
        source: str | None = None,
    ) -> int:
        """Store one pre-encoded image (e.g. a JPEG file's bytes) as-is: no decode, no
        re-encode. The bytes must be a valid stream of the class's codec."""
        return self._check_writable_ingest().add_payload(data, label, score, true_label, id, source)

    def add_encoded_batch(
        self,
        data: Sequence[bytes],
        *,
        labels: Sequence[str | int],
        scores: Any = None,
        true_labels: Sequence[str | int | None] | None = None,
        ids: Sequence[int] | None = None,
        sources: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        """Store pre-encoded images as-is; the batch form of :meth:`add_encoded`."""
        return self._check_writable_ingest().add_payloads(
            data, labels, scores, true_labels, ids, sources
        )

    # ------------------------------------------------------------------ deleting

    @_writes
    def delete(self, ids: int | Sequence[int]) -> None:
        """Mark images deleted: they vanish from lookups, queries and iteration. Their bytes
        stay in the file (HDF5 never shrinks a file in place)."""
        writer = self._check_writable()
        self._commit_pending()  # a pending id can be deleted too
        rows = self._index.rows_of(np.atleast_1d(np.asarray(ids)))
        if len(rows):
            writer.delete(rows)

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        self._sync()
        return self._index.live_count

    def __contains__(self, image_id: object) -> bool:
        self._sync()
        row = self._index.find(image_id)
        return row >= 0 and not self._index.deleted[row]

    def __iter__(self) -> Iterator[int]:
        """Ids of the live images, in the order they were added."""
        self._sync()
        return iter(self._index.live_ids().tolist())

    def ids(self) -> np.ndarray:
        """Ids of the live images, in the order they were added."""
        self._sync()
        return self._index.live_ids()

    # The read path: a few Python-int lookups and a slice of the memory map; no HDF5 call and
    # no lock, so threads decode in parallel. Every payload is checked against its CRC-32
    # before it is decoded or returned (unless opened with verify_reads=False): a damaged
    # chunk would otherwise decode to wrong pixels without any error.

    def _payload(self, row: int) -> memoryview:
        index = self._index
        offset, nbytes = index.offsets[row], index.nbytes[row]
        view = self._mapped.view
        if offset + nbytes > len(view):
            view = self._mapped.ensure(offset + nbytes)
        payload = view[offset : offset + nbytes]
        if self._verify_reads and crc32(payload) != index.crcs[row]:
            raise self._damaged(row)
        return payload

    def _damaged(self, row: int, refused: DamagedImageError | None = None) -> DamagedImageError:
        """The error naming row ``row``'s image: its CRC-32 failed, or its decoder refused the
        payload (``refused``: a header or a decoded shape that disagrees with the index)."""
        image_id = int(self._index.column("id")[row])
        if refused is not None and refused.image_id is None:
            return DamagedImageError(f"image {image_id} in {self.path}: {refused}", image_id)
        if refused is not None:
            return refused
        return DamagedImageError(
            f"image {image_id} in {self.path} is damaged: its stored bytes do not match the "
            "CRC-32 recorded when it was written (the store's other images are unaffected; "
            "verify() lists every damaged image)",
            image_id,
        )

    def _decode(self, row: int) -> np.ndarray:
        try:
            return self._decoders[self._index.stacks[row]](self._payload(row))
        except DamagedImageError as exc:
            raise self._damaged(row, exc) from None

    def __getitem__(self, image_id: int) -> np.ndarray:
        """The decoded image with this id."""
        # _payload, _decode and row_of inlined: every call here holds the GIL, which bounds
        # how well threads that read in parallel scale (each function call costs ~0.1 us of
        # a ~0.6 us budget at 32 px).
        mapped, index = self._mapped, self._index
        if mapped is None:
            raise ClosedStoreError(f"{self.path} is closed")
        row = index.find(image_id)
        if row < 0 or index.deleted[row]:
            if self._ingest is not None and self._ingest.pending:  # read-your-writes
                self._sync()
                return self[image_id]
            raise UnknownIdError(f"no image with id {image_id!r} in the store")
        offset = index.offsets[row]
        end = offset + index.nbytes[row]
        view = mapped.view
        if end > len(view):
            view = mapped.ensure(end)
        payload = view[offset:end]
        if self._verify_reads and crc32(payload) != index.crcs[row]:
            raise self._damaged(row)
        try:
            image = self._decoders[index.stacks[row]](payload)
        except DamagedImageError as exc:  # a header or shape that disagrees with the index
            raise self._damaged(row, exc) from None
        return _inputs.swap_rb(image) if self._bgr else image

    def _preview_images(self, ids: np.ndarray) -> list[np.ndarray]:
        """Pixels for the class contact sheets: a damaged image shows as a black tile instead
        of failing the writer's close (verify() is where damage is reported)."""
        try:
            return self.get_batch(ids, channel_order="rgb")
        except DamagedImageError:
            images = []
            for image_id in ids.tolist():
                try:
                    images.append(self.get_batch([image_id], channel_order="rgb")[0])
                except DamagedImageError:
                    images.append(np.zeros(self.record(image_id).shape, np.uint8))
            return images

    def get_batch(
        self,
        ids: Sequence[int],
        *,
        out: np.ndarray | None = None,
        channel_order: str | None = None,
    ) -> list[np.ndarray] | np.ndarray:
        """Decoded images for many ids, in the order given (decoded on parallel threads
        where the batch holds enough bytes to be worth it).

        With ``out``, an array of shape (len(ids), H, W[, C]) and the images' dtype, the
        images are decoded straight into it (no per-image allocation; JPEG writes in place)
        and ``out`` is returned; every image must have that shape. ``channel_order``:
        ``"rgb"`` or ``"bgr"`` (OpenCV's) for colour images; default: the store's
        (``open(..., channel_order=)``, which ``store[id]`` follows).
        """
        bgr = self._bgr if channel_order is None else _inputs.check_channel_order(channel_order)
        self._sync()
        self._check_open()
        rows = self._index.rows_of(ids)
        threads = decode_threads(int(self._index.column("nbytes")[rows].sum(dtype=np.int64)))
        row_list = rows.tolist()
        if out is None:
            images = thread_map(self._decode, row_list, threads)
            return [_inputs.swap_rb(image) for image in images] if bgr else images
        if out.shape[0] != len(rows) or not out.flags.c_contiguous:
            raise InvalidInputError(
                f"out must be C-contiguous with {len(rows)} images along axis 0"
            )
        thread_map(lambda k: self._decode_into(row_list[k], out[k]), range(len(rows)), threads)
        if bgr:
            _inputs.swap_rb_into(out)
        return out

    def _decode_into(self, row: int, target: np.ndarray) -> None:
        """Decode the image of ``row`` into ``target`` (one image of a get_batch ``out``)."""
        stack = self._stacks[self._index.stacks[row]]
        shape, dtype = stack.shape, stack.key.dtype
        if target.shape != shape or target.dtype != np.dtype(dtype):
            raise InvalidInputError(
                f"image {int(self._index.column('id')[row])} is {shape} {dtype}; "
                f"out holds {target.shape} {target.dtype}"
            )
        try:
            self._decoders[self._index.stacks[row]](self._payload(row), target)
        except DamagedImageError as exc:
            raise self._damaged(row, exc) from None

    def get_encoded(self, image_id: int) -> bytes:
        """The stored payload of one image: the codec's stream (a JPEG file for 'jpeg')."""
        # Inlined as in __getitem__: a raw fetch is nearly all per-call overhead (~2 us for
        # 14 kB). Slicing the map itself makes the bytes in one step (no memoryview between),
        # and the CRC-32 then reads the copy while it is still in the CPU's cache.
        mapped, index = self._mapped, self._index
        if mapped is None:
            raise ClosedStoreError(f"{self.path} is closed")
        row = index.find(image_id)
        if row < 0 or index.deleted[row]:
            if self._ingest is not None and self._ingest.pending:  # read-your-writes
                self._sync()
                return self.get_encoded(image_id)
            raise UnknownIdError(f"no image with id {image_id!r} in the store")
        offset = index.offsets[row]
        end = offset + index.nbytes[row]
        if end > len(mapped.view):
            mapped.ensure(end)
        payload = mapped.map[offset:end]
        if self._verify_reads and crc32(payload) != index.crcs[row]:
            raise self._damaged(row)
        return payload

    def record(self, image_id: int) -> Record:
        """Metadata of one image."""
        self._sync()
        self._check_open()
        row = self._index.row_of(image_id)
        r = self._index.take([row])[0]
        true = int(r["true_label"])
        score = float(r["score"])
        stack = self._stacks[int(r["stack"])]
        vector = self._aligned_column(fmt.SCORES, np.array([row]))
        vector = None if vector is None or np.isnan(vector[0]).all() else vector[0]
        return Record(
            id=int(r["id"]),
            label=self._labels[int(r["label"])],
            true_label=None if true < 0 else self._labels[true],
            score=None if np.isnan(score) else score,
            shape=image_shape(int(r["height"]), int(r["width"]), int(r["channels"])),
            dtype=r["dtype"].decode(),
            codec=r["codec"].decode(),
            nbytes=int(r["nbytes"]),
            crc32=int(r["crc32"]),
            source=self._source_of(row),
            scores=vector,
            stack=stack.path,
            position=int(r["position"]),
        )

    def _source_of(self, row: int) -> str | None:
        """The checked source of index row ``row``; None where the store or the image has none."""
        values = self._aligned_column(fmt.SOURCES, np.array([row]))
        return None if values is None else values[0]

    # ------------------------------------------------------------------ queries

    def query(
        self,
        *,
        label: str | int | Sequence[str | int] | None = None,
        true_label: str | int | Sequence[str | int] | None = None,
        min_score: float | None = None,
        max_score: float | None = None,
        correct: bool | None = None,
    ) -> np.ndarray:
        """Ids of live images matching every condition given, in insertion order.

        ``label``/``true_label`` take one label or several (any of them match). Score bounds
        are inclusive and never match images stored without a score. ``correct=False`` gives
        the misclassified images with a known true label.

        Example, confident but wrong: ``store.query(min_score=0.9, correct=False)``.
        """
        self._sync()
        self._check_open()

        return self._index.query(
            label=query_label_ids(label, self._catalog.label_id, "label"),
            true_label=query_label_ids(true_label, self._catalog.label_id, "true_label"),
            min_score=min_score,
            max_score=max_score,
            correct=correct,
        )

    @property
    def index(self) -> np.ndarray:
        """A copy of the index table (deleted rows included, flagged) as a structured array."""
        self._sync()
        self._check_open()
        return self._index.take()

    def _aligned_column(self, name: str, rows: np.ndarray) -> np.ndarray | None:
        """/scores or /sources at index rows ``rows`` (rows past its end: NaN or None); each
        source checked against /source_crc32, each score vector against the index's top-1
        score and (1.2) against /score_crc32."""
        with fmt.damage_reported(self.path):
            f = self._file
            if name == fmt.SOURCES:
                ids = self._index.column("id")[rows]
                size = os.path.getsize(self.path)
                sources = fmt.read_sources(
                    f, rows, ids, self._mapped.read, size, self.path, self._checked_heaps
                )
                if sources is None:
                    return None
                out = np.empty(len(sources), dtype=object)
                out[:] = sources
                return out
            rows = np.asarray(rows, dtype=np.int64)
            index_rows = {c: self._index.column(c)[rows] for c in fmt.SCORE_CROSS_CHECKED}
            return fmt.read_scores(f, rows, index_rows, self.path, self._checked)

    @property
    def scores(self) -> np.ndarray | None:
        """The (N, K) score vectors of the live images, in the order of :meth:`ids`, columns
        in the order of :attr:`labels` (rows of NaN for images stored without one); None when
        the store holds no score vectors. Top-1 scores are in :meth:`to_pandas`/:attr:`index`."""
        self._sync()
        self._check_open()
        return self._aligned_column(fmt.SCORES, np.flatnonzero(self._index.live_mask()))

    def _check_score_vectors(self, block: int = 1 << 16) -> None:
        """Put every live score vector through the checks of :meth:`scores`, ``block`` rows
        at a time, keeping none: for readers that show only the index's top-1 scores (the
        report), in memory bounded by the block whatever K is."""
        live = np.flatnonzero(self._index.live_mask())
        for start in range(0, len(live), block):
            if self._aligned_column(fmt.SCORES, live[start : start + block]) is None:
                return

    @property
    def sources(self) -> list[str | None]:
        """Where each live image came from (None where not given), in the order of :meth:`ids`."""
        self._sync()
        self._check_open()
        values = self._aligned_column(fmt.SOURCES, np.flatnonzero(self._index.live_mask()))
        return [None] * len(self) if values is None else values.tolist()

    def to_pandas(self, *, include_deleted: bool = False, scores: bool = False):
        """The index as a pandas DataFrame with label names resolved and each image's source
        (requires pandas). ``scores=True`` adds the score vectors, one ``score:<label>``
        column per class."""
        self._sync()
        import pandas as pd

        self._check_open()
        mask = None if include_deleted else self._index.live_mask()
        positions = np.arange(len(self._index)) if mask is None else np.flatnonzero(mask)
        rows = self._index.take(mask)
        labels = np.array(self._labels + [None], dtype=object)
        truth = rows["true_label"].astype(np.int64)
        frame = pd.DataFrame(
            {
                "id": rows["id"],
                "label": labels[rows["label"].astype(np.int64)] if len(self._labels) else [],
                "true_label": labels[np.where(truth < 0, len(self._labels), truth)],
                "score": rows["score"],
                "height": rows["height"],
                "width": rows["width"],
                "channels": rows["channels"],
                "dtype": rows["dtype"].astype(str),
                "codec": rows["codec"].astype(str),
                "nbytes": rows["nbytes"],
                "crc32": rows["crc32"],
            }
        )
        sources = self._aligned_column(fmt.SOURCES, positions)
        frame["source"] = sources if sources is not None else None
        if include_deleted:
            frame["deleted"] = rows["deleted"].astype(bool)
        if scores:
            vectors = self._aligned_column(fmt.SCORES, positions)
            if vectors is not None:
                for k, name in enumerate(self._labels[: vectors.shape[1]]):
                    frame[f"score:{name}"] = vectors[:, k]
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
        """Write the index to a SQL database (SQLAlchemy URL or Engine; a path means SQLite):
        one row per live image in ``table`` (the store's absolute path, id, ``ref``, label,
        true_label, score, correct, geometry, codec, bytes, crc32, the HDF5 dataset and
        position of its chunk, source, and ``files``' exported path per id), and the score
        vectors in long form in ``<table>_scores``. ``ref`` (``/abs/run.h5#17``) leads back to
        the image: :func:`h5store.load` and ``h5store show REF`` take it. One
        transaction: all rows or none. ``if_exists``: "fail" (:class:`TargetExistsError`),
        "replace" or "append". ``ids`` limits the rows to those images. Returns the number of
        image rows. Needs the 'sql' extra."""
        self._sync()
        from .sql import to_sql

        self._check_open()
        return to_sql(self, url_or_engine, table=table, if_exists=if_exists, files=files, ids=ids)

    # ------------------------------------------------------------------ integrity

    def verify(self) -> VerifyReport:
        """Recompute the CRC-32 of every stored image (deleted ones too), compare each payload's
        header with the image's geometry in the index, and check every cached chunk offset
        against HDF5's chunk index. Damaged images are named; the rest stay readable."""
        self._sync()
        self._check_open()
        report = VerifyReport()
        rows = self._index.take()
        report.misplaced = _offsets.misplaced_ids(self._file, rows, self._stacks)
        index, mapped, stacks = self._index, self._mapped, self._stacks
        for r in range(len(rows)):
            report.checked += 1
            stack = stacks[index.stacks[r]]
            if not (
                _offsets.row_intact(index, mapped, r)
                and _offsets.header_intact(index, mapped, r, stack)
            ):
                report.damaged.append(int(rows["id"][r]))
        return report

    # ------------------------------------------------------------------ summary

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: images, classes, payload bytes, file bytes, format version."""
        self._sync()
        self._check_open()
        live = self._index.live_mask()
        payload = int(self._index.column("nbytes").astype(np.int64).sum())
        per_class = np.bincount(self._index.column("label")[live], minlength=len(self._labels))
        return {
            "path": self.path,
            "images": int(live.sum()),
            "deleted": int((~live).sum()),
            "labels": len(self._labels),
            "images_per_label": {self._labels[k]: int(c) for k, c in enumerate(per_class) if c},
            "payload_bytes": payload,
            "file_bytes": os.path.getsize(self.path),
            "codecs": sorted({s.codec.codec_id for s in self._stacks}),
            # the file's own version (checked at open), which may be older than FORMAT_VERSION
            "format_version": [int(v) for v in self._file.attrs[fmt.ATTR_VERSION]],
        }


def open(
    path: str | os.PathLike | Sequence[str | os.PathLike],
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
) -> ImageStore:
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
        from .sharded import ShardedStore

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


#: Between a store's path and an image id in a reference (``/data/run.h5#17``): the ``ref``
#: column of :meth:`ImageStore.to_sql`, which :func:`load` and ``h5store show`` accept.
REF_SEPARATOR = "#"


def image_ref(path: str | os.PathLike, image_id: int) -> str:
    """The reference of one image: the store's absolute path, ``#``, the id."""
    return f"{os.path.abspath(os.fspath(path))}{REF_SEPARATOR}{int(image_id)}"


def parse_ref(ref: str) -> tuple[str, int]:
    """(store path, id) of a reference made by :func:`image_ref` (the last ``#`` splits it, so
    paths may hold one)."""
    path, sep, number = ref.rpartition(REF_SEPARATOR) if isinstance(ref, str) else ("", "", "")
    if not sep or not path or not (number.isascii() and number.isdigit()):
        raise InvalidInputError(
            f"{ref!r} is not an image reference: expected '<store path>#<id>', as in the ref "
            "column to_sql and `h5store index --sql` write"
        )
    return path, int(number)


def load(ref: str, *, channel_order: str = "rgb", verify_reads: bool = True) -> np.ndarray:
    """The pixels of the image a reference names (``"/data/run.h5#17"``, a SQL row's ``ref``).

    Opens the store read-only for this one image; for many rows of one store, open it once
    (``h5store.open(row.store)[row.id]``)."""
    path, image_id = parse_ref(ref)
    with open(path, channel_order=channel_order, verify_reads=verify_reads) as store:
        return store[image_id]
