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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload

import h5py
import numpy as np

from . import _inputs
from . import format as fmt
from ._catalog import query_label_ids
from ._contract import Record, VerifyReport
from ._file import (
    MODES,
    READER_RETRY_SECONDS,
    MappedFile,
    WriterFile,
    WriterLock,
    check_locking,
    open_for_reading,
    reader_precheck,
)
from ._index import Index
from ._ingest import GroupCommit, Ingest, check_durability
from ._read import ReadEngine
from ._remote import RemoteSource, check_remote, is_url, open_hdf5
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

if TYPE_CHECKING:
    import pandas as pd


P = ParamSpec("P")
R = TypeVar("R")


def _writes(
    method: Callable[Concatenate[ImageStore, P], R],
) -> Callable[Concatenate[ImageStore, P], R]:
    """For the public methods that write: a write the system refuses (full disk, I/O error)
    raises a WriteFailedError and closes the store, committed images intact (WriterFile.guard);
    so does any failure of a group commit (the writer abandons the file as a killed one would)."""

    @functools.wraps(method)
    def guarded(self: ImageStore, *args: P.args, **kwargs: P.kwargs) -> R:
        session = self._session
        if session is None:
            return method(self, *args, **kwargs)
        try:
            with session.file.guard():
                return method(self, *args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, (WriteFailedError, StorePermissionError)) or session.file.abandoned:
                session.ingest.name_unstored(exc)
                self._release()
            raise

    return guarded


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


@dataclass
class _WriteSession:
    """A writing store's state: its file (lock, SWMR epochs, the write guard), the commit
    protocol, and the group of images added but not committed yet."""

    file: WriterFile
    writer: StoreWriter
    ingest: Ingest


class _Closed:
    """The engine of a closed store: every read through it says so, but for the class names,
    which stay known (as a closed h5py file keeps its name)."""

    def __init__(self, path: str, labels: Sequence[str] = ()):
        self._path = path
        self.labels = list(labels)

    def __getattr__(self, name: str) -> Any:
        raise ClosedStoreError(f"{self._path} is closed")


class ImageStore:
    """Images a model classified, in one HDF5 file. Create with :func:`h5store.open`.

    Its state is two objects: the read engine (``_engine``: the bytes, the index, the
    decoders; a :class:`_Closed` stand-in once closed) and, for a writer, the write session
    (``_session``: None for a reader).
    """

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
        storage_options: dict[str, Any] | None = None,
        **codec_options: Any,
    ):
        # Validate all, then create: a refused argument must leave an existing file as it was
        # (mode 'w' truncates it) and hold no lock.
        check_remote(path, mode, storage_options)
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
        if not isinstance(args.path, str):
            raise InvalidInputError(
                "an ImageStore is one file; h5store.open([...]) reads a list of them as one store"
            )
        self._locking = args.locking
        self.path: str = args.path
        self.mode = args.mode
        self._verify_reads = args.verify_reads
        self._default_codec = args.codec
        #: the default order of colour channels handed to add* and returned by reads
        self._bgr = args.bgr
        self._engine: ReadEngine | _Closed = _Closed(self.path)
        #: a reader's own HDF5 handle (a writer reads through its session's file)
        self._reader: h5py.File | None = None
        self._session: _WriteSession | None = None
        #: the URL's client options (credentials, endpoint) for a store read by URL
        self._storage_options = storage_options
        if self.mode == "r":
            try:
                self._open_reader()
            except BaseException:
                self._release()
                raise
            return
        writer_file, removed = open_writer_file(self.path, self.mode, locking)
        try:
            engine = self._engine = ReadEngine(
                MappedFile(self.path),
                lambda: writer_file.f,
                verify=self._verify_reads,
                bgr=self._bgr,
                new_file=writer_file.created,
                writer=True,
            )
            writer = StoreWriter(
                writer_file,
                engine.catalog,
                engine.index,
                self._default_codec,
                self._preview_images,
            )
            ingest = Ingest(writer, args.durability, args.group_commit, args.argmax_labels)
            self._session = _WriteSession(writer_file, writer, ingest)
            # A commit an add call triggers (bound reached, durability="call") runs guarded,
            # like commit() itself: a refused write closes the store and names the ids.
            ingest.commit_now = self.commit
            if f"/{fmt.PREVIEWS}" in removed:  # torn by the dead writer: redraw them all
                writer.dirty_labels.update(range(len(engine.labels)))
            if args.labels is not None:
                self.add_labels(args.labels)
        except BaseException:
            # The lock goes now, not when the garbage collector finds this object.
            writer_file.close()
            self._release()
            raise

    # ------------------------------------------------------------------ the engine's parts

    @property
    def _index(self) -> Index:
        return self._engine.index

    @property
    def _labels(self) -> list[str]:
        return self._engine.labels

    @property
    def _file(self) -> h5py.File:
        return self._engine.file

    @property
    def engine(self) -> ReadEngine:
        """The read engine (internal: the sharded view, merge, repack and the loaders read
        through it; its interface may change between releases)."""
        return self._engine  # type: ignore[return-value]  # _Closed raises on any use

    @property
    def ingest(self) -> Ingest:
        """The write path (internal: merge and repack add stored payloads through it; its
        interface may change between releases). ReadOnlyError for a reader."""
        return self._check_writable_ingest()

    # ------------------------------------------------------------------ context and lifetime

    def __enter__(self) -> ImageStore:
        return self

    def __del__(self) -> None:
        # Like an unclosed file: finish the write session and release the lock, and say so.
        if isinstance(getattr(self, "_engine", None), ReadEngine):
            warnings.warn(
                f"h5store: {self.path} was not closed; closing it now",
                ResourceWarning,
                stacklevel=2,
            )
            try:
                self.close()
            except Exception:  # during interpreter shutdown h5py may already be gone
                pass

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return not isinstance(self._engine, ReadEngine)

    @property
    def writable(self) -> bool:
        return self._session is not None

    @property
    def verify_reads(self) -> bool:
        """Whether reads check each image's CRC-32 before returning it (see :func:`open`)."""
        return self._verify_reads

    def close(self) -> None:
        """Commit what is pending, finish writing (complete index table, class counts,
        previews) and release the file."""
        if self.closed:
            return
        session = self._session
        try:
            if session is not None:
                with session.file.guard():
                    session.ingest.commit()
                    if session.writer.has_pending_work:
                        session.writer.finish()
        except BaseException as exc:
            if session is not None:
                if not session.file.abandoned:
                    session.file.abandon()
                session.ingest.name_unstored(exc)
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
        part of a batch.

        Raises
        ------
        StorageFullError, WriteFailedError
            The disk refused a write; the error names the ids it could not store
            (``err.unstored_ids``) and the store closes with every earlier commit intact.
        """
        self._check_writable()
        self._commit_pending()

    def flush(self) -> None:
        """As :meth:`commit` (h5py's name for it)."""
        self.commit()

    @property
    def pending(self) -> int:
        """Images added but not committed yet (0 for a reader)."""
        return 0 if self._session is None else self._session.ingest.pending

    def _commit_pending(self) -> None:
        """Commit the pending group; a failure abandons the file (as a killed writer leaves
        it: recovery on the next open) and the ``_writes`` guard closes the store."""
        session = self._session
        if session is None or not session.ingest.pending:
            return
        try:
            session.ingest.commit()
        except BaseException:
            if not session.file.abandoned:
                session.file.abandon()
            raise

    def _sync(self) -> None:
        """Reads on a writing store see what it added (read-your-writes): commit first."""
        if self._session is not None and self._session.ingest.pending:
            self.commit()

    def _release(self) -> None:
        """Close the HDF5 handle, the writer lock and the bytes, whatever state they are in."""
        session, self._session = self._session, None
        if session is not None:
            session.file.close()
            session.ingest.discard()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        engine = self._engine
        if isinstance(engine, ReadEngine):
            self._engine = _Closed(self.path, engine.labels)
            engine.close()

    @_writes
    def rebuild_previews(self) -> None:
        """Redraw the contact sheet of every class (they are kept current when a writer
        closes; this repairs them after a writer was killed, or for files from elsewhere)."""
        self._check_writable().rebuild_previews()

    def refresh(self) -> None:
        """Reader only: pick up what a concurrent writer committed since open."""
        if self._session is not None:
            return
        self._check_open()
        # A writer that died restructuring the file leaves it unopenable until recovered:
        # say so while the current view still works, rather than after dropping it.
        if not is_url(self.path):
            reader_precheck(self.path)
        old_engine = self._engine
        # HDF5 keeps one metadata cache per file while any handle is open: the new view must
        # be read with the old handle closed, or it would see the file as it was.
        self._reader_file().close()
        self._reader = None
        try:
            self._open_reader(populate=False)
        except H5StoreError:
            # Keep the current view usable (its rows, labels and stacks are all still in the
            # file): only a handle for /scores and /sources is needed.
            self._engine = old_engine
            with contextlib.suppress(H5StoreError, OSError):
                source = old_engine.source  # (a store by URL reads through a RemoteSource)
                self._reader = (
                    open_hdf5(source)[0]
                    if isinstance(source, RemoteSource)
                    else open_for_reading(self.path, self._locking)
                )
            raise
        old_engine.close()

    def _open_reader(self, populate: bool = True) -> None:
        """Open and load for reading. While a writer appends, a SWMR reader can meet a chunk the
        writer placed past the end of file it read at open (HDF5: "addr overflow"), or tail
        rows a recovering writer is restructuring; that is a race, not damage, so with a live
        writer the open is retried for as long as open_for_reading waits for a writer (a
        bound in time, not in attempts: four attempts, 70 ms of sleep, were too few for a
        writer recovering under load).

        ``populate``: map the file's pages at once (see MappedFile); a refresh, which maps
        again as the file grows, would pay it again and again."""
        if is_url(self.path):
            self._open_remote()
            return
        deadline = time.monotonic() + READER_RETRY_SECONDS
        delay = 0.01
        while True:
            self._reader = open_for_reading(self.path, self._locking)
            try:
                with fmt.damage_reported(self.path):
                    fmt.check_root(self._reader, self.path)
                source = MappedFile(self.path, populate=populate)
                try:
                    engine = ReadEngine(
                        source, self._reader_file, verify=self._verify_reads, bgr=self._bgr
                    )
                except BaseException:
                    source.close()
                    raise
            except BaseException as exc:
                self._reader.close()
                self._reader = None
                if (
                    not isinstance(exc, FormatError)
                    or time.monotonic() >= deadline
                    or not WriterLock.is_held(self.path)
                ):
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 0.1)
                continue
            self._engine = engine
            return

    def _open_remote(self) -> None:
        """Open a store by URL: the same checks and engine as a local reader, over a
        RemoteSource (see h5store._remote)."""
        from ._remote import open_remote

        def load(source: RemoteSource, f: h5py.File) -> ReadEngine:
            self._reader = f
            with fmt.damage_reported(source.name):
                fmt.check_root(f, source.name)
            return ReadEngine(source, self._reader_file, verify=self._verify_reads, bgr=self._bgr)

        try:
            _, self._reader, self._engine = open_remote(self.path, self._storage_options, load)
        except BaseException:
            self._reader = None
            raise

    def _reader_file(self) -> h5py.File:
        if self._reader is None:
            raise ClosedStoreError(f"{self.path} is closed")
        return self._reader

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes (PyTorch DataLoader with spawn) reopen the file for reading.
        return {
            "path": self.path,
            "verify_reads": self._verify_reads,
            "locking": self._locking,
            "channel_order": "bgr" if self._bgr else "rgb",
            "storage_options": self._storage_options,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        ImageStore.__init__(
            self,
            state["path"],
            "r",
            verify_reads=state.get("verify_reads", True),
            locking=state.get("locking"),
            channel_order=state.get("channel_order", "rgb"),
            storage_options=state.get("storage_options"),
        )

    def __repr__(self) -> str:
        if self.closed:
            return f"<h5store.ImageStore {self.path!r} (closed)>"
        return (
            f"<h5store.ImageStore {self.path!r} mode={self.mode!r}: {len(self)} images, "
            f"{len(self._labels)} labels>"
        )

    def _check_open(self) -> None:
        if self.closed:
            raise ClosedStoreError(f"{self.path} is closed")

    def _checked_session(self) -> _WriteSession:
        self._check_open()
        if self._session is None:
            raise ReadOnlyError(f"{self.path} is open read-only (mode 'r')")
        return self._session

    def _check_writable(self) -> StoreWriter:
        return self._checked_session().writer

    def _check_writable_ingest(self) -> Ingest:
        session = self._session
        return self._checked_session().ingest if session is None else session.ingest

    # ------------------------------------------------------------------ labels and classes

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names; a class id is a position in this tuple."""
        return tuple(self._labels)

    @_writes
    def add_labels(self, names: Sequence[str]) -> list[int]:
        """Declare class names (in order) before storing images.

        Integer labels and (N, K) score vectors then map to them; names already present keep
        their ids. Declared labels are a closed set: from then on (and in any store holding score
        vectors) a label the store does not have is an error naming the nearest declared one, not
        a new class; call ``add_labels`` again (or ``create_class``) to extend it.

        Parameters
        ----------
        names
            Class names, in the order of the score vectors' columns.

        Returns
        -------
        list of int
            The class id of each name.

        Raises
        ------
        InvalidInputError
            A name that is not a valid label (names that repeat count once).
        ReadOnlyError
            The store was opened for reading.
        """
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
        """Create the class ``label`` with its own codec.

        Otherwise classes take the store's default codec when their first image arrives.
        Repeating the call is harmless.

        Parameters
        ----------
        label
            The class name.
        codec
            A codec name or a configured Codec (default: the store's).
        quality
            Quality of a lossy codec (1-100).
        **codec_options
            The codec's settings.

        Raises
        ------
        CodecError
            An unknown codec or setting.
        ReadOnlyError
            The store was opened for reading.
        """
        writer = self._check_writable()
        label = _inputs.check_label(label)
        self._commit_pending()  # pending images of this label were given the default codec
        writer.create_class(label, chosen_codec(self._default_codec, codec, quality, codec_options))

    def codec_of(self, label: str) -> Codec:
        """The codec of class ``label`` (the store default for a class not created yet).

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
        return self._engine.catalog.class_codec(label) or self._default_codec

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
        """Store one image; returns its id.

        As fast per image as a batch, since images are committed in groups (:meth:`commit`).
        The arguments are those of :meth:`add_batch`, for one image. The image is copied and
        encoded on h5store's threads after the call returns: the array may be reused at once.

        Parameters
        ----------
        image
            An (H, W) or (H, W, C) uint8/uint16 array, a PIL image or a (C, H, W) torch tensor.
        label
            The predicted class: a name, or a class id into :attr:`labels`.
        score
            The top-1 confidence, or the probability vector over the K declared labels.
        true_label
            The ground truth, if known.
        id
            Your own non-negative id (default: the next one).
        source
            Where the image came from (a path, a URL).
        channel_order
            ``"bgr"`` for OpenCV's arrays, ``"rgb"``; default: the store's.

        Returns
        -------
        int
            The image's id.

        Raises
        ------
        InvalidInputError
            Bad input (shape, dtype, label, score); nothing is stored.
        CodecError
            The class's codec cannot hold the image (uint16 into JPEG).
        DuplicateIdError
            ``id`` is already in the store.
        ReadOnlyError
            The store was opened for reading.
        """
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

        Colour images are stored RGB(A) whatever ``channel_order``, so viewers, exports and the
        report show true colours; grayscale is unaffected. The images are encoded on
        h5store's threads (while the group pending before them is written) before the call
        returns, so the arrays may be reused at once; they are durable once :meth:`commit`
        returns (or the group bound is reached, or the store is flushed or closed);
        ``durability="call"`` at open commits in every call instead.

        Parameters
        ----------
        images
            A sequence of (H, W) or (H, W, C) uint8/uint16 arrays, PIL images or (C, H, W) torch
            tensors, or one (N, H, W[, C]) array.
        labels
            Predicted class names, or class ids into :attr:`labels`. With score vectors, each
            label must be its vector's highest entry (unless ``argmax_labels=False`` at open).
        scores
            (N,) top-1 confidences or (N, K) probability vectors over the K declared labels.
        true_labels
            Ground truth (None or -1 where unknown).
        ids
            Your own non-negative ids (default: consecutive).
        sources
            Where each image came from (a path, a URL).
        channel_order
            ``"bgr"`` for OpenCV's arrays (``cv2.imread``), ``"rgb"``; default: the store's
            (``open(..., channel_order=)``, ``"rgb"`` unless set).

        Returns
        -------
        numpy.ndarray
            The ids of the images, in the order given.

        Raises
        ------
        InvalidInputError
            Bad input (shapes, dtypes, lengths that differ, an undeclared label, a label that is
            not its vector's argmax); raised here, and nothing of the batch is stored.
        CodecError
            The class's codec cannot hold an image (uint16 into JPEG, one channel into WebP).
        DuplicateIdError
            An id is already in the store or repeats within the batch.
        ReadOnlyError
            The store was opened for reading.
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
        """Store one pre-encoded image (e.g. a JPEG file's bytes) as it is: no decode, no re-encode.

        Parameters
        ----------
        data
            A valid stream of the class's codec; its header gives the image's geometry.
        label, score, true_label, id, source
            As for :meth:`add`.

        Returns
        -------
        int
            The image's id.

        Raises
        ------
        CodecError
            ``data`` is not a valid stream of the class's codec, or the codec takes no
            pre-encoded input.
        InvalidInputError, DuplicateIdError, ReadOnlyError
            As for :meth:`add`.
        """
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
        """Store pre-encoded images as they are; the batch form of :meth:`add_encoded`.

        Parameters
        ----------
        data
            One stream of the class's codec per image.
        labels, scores, true_labels, ids, sources
            As for :meth:`add_batch`.

        Returns
        -------
        numpy.ndarray
            The ids of the images, in the order given.

        Raises
        ------
        CodecError
            A stream is not valid for its class's codec (the error names its position).
        InvalidInputError, DuplicateIdError, ReadOnlyError
            As for :meth:`add_batch`; nothing of the batch is stored.
        """
        return self._check_writable_ingest().add_payloads(
            data, labels, scores, true_labels, ids, sources
        )

    # ------------------------------------------------------------------ deleting

    @_writes
    def delete(self, ids: int | Sequence[int]) -> None:
        """Mark images deleted: they vanish from lookups, queries and iteration.

        Their bytes stay in the file (HDF5 never shrinks a file in place): ``h5store.repack``
        writes a copy without them.

        Parameters
        ----------
        ids
            One id or several.

        Raises
        ------
        UnknownIdError
            An id is not a live image of the store.
        ReadOnlyError
            The store was opened for reading.
        """
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

    def __getitem__(self, image_id: int) -> np.ndarray:
        """The decoded image with this id.

        Parameters
        ----------
        image_id
            The image's id.

        Returns
        -------
        numpy.ndarray
            (H, W) or (H, W, C), in the store's channel order.

        Raises
        ------
        UnknownIdError
            No live image has this id (also a ``KeyError``).
        DamagedImageError
            The stored bytes fail their CRC-32 or do not decode to the indexed geometry.
        ClosedStoreError
            The store is closed.
        """
        try:
            return self._engine.image(image_id)
        except UnknownIdError:
            if self.pending:  # read-your-writes: it may be waiting for its commit
                self._sync()
                return self._engine.image(image_id)
            raise

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
        """Decoded images for many ids, in the order given.

        Decoded on parallel threads where the batch holds enough bytes to be worth it.

        Parameters
        ----------
        ids
            The images' ids (a sequence or an integer array).
        out
            An array of shape (len(ids), H, W[, C]) and the images' dtype: the images are decoded
            straight into it (no per-image allocation; JPEG writes in place) and it is returned.
            Every image must have that shape.
        channel_order
            ``"rgb"`` or ``"bgr"`` (OpenCV's) for colour images; default: the store's
            (``open(..., channel_order=)``, which ``store[id]`` follows).

        Returns
        -------
        list of numpy.ndarray or numpy.ndarray
            One array per id, or ``out``.

        Raises
        ------
        UnknownIdError
            An id is not a live image of the store.
        DamagedImageError
            An image's stored bytes fail their CRC-32 or do not decode (it names the image).
        InvalidInputError
            ``out`` is not C-contiguous, or not one image per id.
        """
        bgr = None if channel_order is None else _inputs.check_channel_order(channel_order)
        self._sync()
        engine = self._engine
        return engine.decode_rows(engine.index.rows_of(ids), out, bgr)

    def get_encoded(self, image_id: int) -> bytes:
        """The stored payload of one image: the codec's stream (a JPEG file for ``"jpeg"``).

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
            No live image has this id.
        DamagedImageError
            The stored bytes fail their CRC-32.
        ClosedStoreError
            The store is closed.
        """
        try:
            return self._engine.encoded(image_id)
        except UnknownIdError:
            if self.pending:  # read-your-writes
                self._sync()
                return self._engine.encoded(image_id)
            raise

    def record(self, image_id: int) -> Record:
        """Everything the store knows about one image, but its pixels.

        Parameters
        ----------
        image_id
            The image's id.

        Returns
        -------
        Record
            Id, label, true label, score, shape, dtype, codec, byte count, CRC-32, source, score
            vector and where the payload lies (stack and position).

        Raises
        ------
        UnknownIdError
            No live image has this id.
        FormatError
            The image's source or score vector fails its check (damage in the file).
        """
        self._sync()
        engine = self._engine
        row = engine.index.row_of(image_id)
        r = engine.index.take([row])[0]
        true = int(r["true_label"])
        score = float(r["score"])
        stack = engine.stacks[int(r["stack"])]
        vector = engine.column(fmt.SCORES, np.array([row]))
        vector = None if vector is None or np.isnan(vector[0]).all() else vector[0]
        sources = engine.column(fmt.SOURCES, np.array([row]))
        return Record(
            id=int(r["id"]),
            label=engine.labels[int(r["label"])],
            true_label=None if true < 0 else engine.labels[true],
            score=None if np.isnan(score) else score,
            shape=image_shape(int(r["height"]), int(r["width"]), int(r["channels"])),
            dtype=r["dtype"].decode(),
            codec=r["codec"].decode(),
            nbytes=int(r["nbytes"]),
            crc32=int(r["crc32"]),
            source=None if sources is None else sources[0],
            scores=vector,
            stack=stack.path,
            position=int(r["position"]),
        )

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

        Example, confident but wrong: ``store.query(min_score=0.9, correct=False)``.

        Parameters
        ----------
        label
            One predicted label or several (any of them matches), by name or class id.
        true_label
            As ``label``, for the ground truth.
        min_score, max_score
            Inclusive bounds on the top-1 score; they never match images stored without one.
        correct
            ``False``: the misclassified images with a known true label; ``True``: the right
            ones.

        Returns
        -------
        numpy.ndarray
            The ids (int64).

        Raises
        ------
        InvalidInputError
            A label the store does not have (named, with the nearest one), or a bad bound.
        """
        self._sync()
        catalog = self._engine.catalog
        return self._index.query(
            label=query_label_ids(label, catalog.label_id, "label"),
            true_label=query_label_ids(true_label, catalog.label_id, "true_label"),
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

    @property
    def scores(self) -> np.ndarray | None:
        """The (N, K) score vectors of the live images, in the order of :meth:`ids`, columns
        in the order of :attr:`labels` (rows of NaN for images stored without one); None when
        the store holds no score vectors. Top-1 scores are in :meth:`to_pandas`/:attr:`index`."""
        self._sync()
        return self._engine.column(fmt.SCORES, np.flatnonzero(self._index.live_mask()))

    def _check_score_vectors(self, block: int = 1 << 16) -> None:
        """Put every live score vector through the checks of :meth:`scores`, ``block`` rows
        at a time, keeping none: for readers that show only the index's top-1 scores (the
        report), in memory bounded by the block whatever K is."""
        live = np.flatnonzero(self._index.live_mask())
        for start in range(0, len(live), block):
            if self._engine.column(fmt.SCORES, live[start : start + block]) is None:
                return

    @property
    def sources(self) -> list[str | None]:
        """Where each live image came from (None where not given), in the order of :meth:`ids`."""
        self._sync()
        values = self._engine.column(fmt.SOURCES, np.flatnonzero(self._index.live_mask()))
        return [None] * len(self) if values is None else values.tolist()

    def to_pandas(self, *, include_deleted: bool = False, scores: bool = False) -> pd.DataFrame:
        """The index as a pandas DataFrame.

        Label names are resolved and each image's source is included.

        Parameters
        ----------
        include_deleted
            Include deleted images (flagged).
        scores
            Add one ``score:<label>`` column per class from the score vectors.

        Returns
        -------
        pandas.DataFrame
            One row per image.
        """
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
        sources = self._engine.column(fmt.SOURCES, positions)
        frame["source"] = sources if sources is not None else None
        if include_deleted:
            frame["deleted"] = rows["deleted"].astype(bool)
        if scores:
            vectors = self._engine.column(fmt.SCORES, positions)
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
        """Write the index to a SQL database, as one transaction.

        One row per live image in ``table`` (store, id, ref, label, true_label, score, correct,
        height, width, channels, dtype, codec, bytes, crc32, the HDF5 dataset and position of its
        chunk, source, file) and, when the store has score vectors, ``<table>_scores`` in long
        form (store, id, label, score). ``store`` is the store's absolute path and ``ref``
        (``/data/run.h5#485``) a value :func:`h5store.load` accepts. Needs the ``sql`` extra for
        PostgreSQL; SQLite needs nothing.

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
        self._sync()
        from .sql import to_sql

        self._check_open()
        return to_sql(
            (self,), url_or_engine, table=table, if_exists=if_exists, files=files, ids=ids
        )

    # ------------------------------------------------------------------ integrity

    def verify(self) -> VerifyReport:
        """Check every stored image (deleted ones too) and every cached chunk offset.

        Recomputes each payload's CRC-32, compares each payload's header with the image's
        geometry in the index, and each cached chunk offset with HDF5's chunk index. Damaged
        images are named; the rest stay readable.

        Returns
        -------
        VerifyReport
            The images checked and the damaged ones (``report.ok`` when none).
        """
        self._sync()
        checked, damaged, misplaced = self._engine.verify_all()
        return VerifyReport(checked, damaged, misplaced)

    # ------------------------------------------------------------------ summary

    def stats(self) -> dict[str, Any]:
        """Counts and sizes of the store.

        Returns
        -------
        dict
            Images, classes, payload bytes, file bytes, format version.
        """
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
            "file_bytes": self._engine.source.size(),
            "codecs": sorted({s.codec.codec_id for s in self._engine.stacks}),
            # the file's own version (checked at open), which may be older than FORMAT_VERSION
            "format_version": [int(v) for v in self._file.attrs[fmt.ATTR_VERSION]],
        }
