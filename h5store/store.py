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
from ._catalog import Catalog, Geometry, Stack, query_label_ids
from ._file import (
    MODES,
    MappedFile,
    WriterLock,
    check_locking,
    open_for_reading,
    read_committed_index,
    reader_precheck,
)
from ._parallel import InOrder, decode_threads, thread_map
from ._write import StoreWriter, chosen_codec, open_writer_file
from .codecs import Codec, ImageInfo, get_codec, image_shape
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

#: numpy's dtype.name is slow (~1 us); images are validated to be one of these.
_DTYPE_NAMES = {np.dtype(name): name for name in fmt.PIXEL_DTYPES}


def _writes(method):
    """For the public methods that write: a write the system refuses (full disk, I/O error)
    raises a WriteFailedError and closes the store, committed images intact (WriterFile.guard)."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        writer_file = getattr(self, "_writer_file", None)
        if writer_file is None:
            return method(self, *args, **kwargs)
        try:
            with writer_file.guard():
                return method(self, *args, **kwargs)
        except (WriteFailedError, StorePermissionError):
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
        **codec_options: Any,
    ):
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
        check_locking(locking)
        self._locking = locking
        self.path = os.fspath(path)
        self.mode = MODES[mode]
        self._verify_reads = bool(verify_reads)
        self._default_codec = get_codec(codec, quality=quality, **codec_options)
        self._reader: h5py.File | None = None
        self._mapped: MappedFile | None = None
        #: heap collections of /sources found intact, by address: the CRC-32 of their bytes
        self._checked_heaps: dict[int, int] = {}
        self._writer: StoreWriter | None = None
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
        except BaseException:
            writer_file.close()
            self._release()
            raise
        if f"/{fmt.PREVIEWS}" in removed:  # torn by the dead writer: redraw them all
            self._writer.dirty_labels.update(range(len(self._catalog.labels)))
        if labels is not None:
            self.add_labels(labels)

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
        self._catalog = catalog = Catalog(f, self._class_group)
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
        """Finish writing (complete index table, class counts, previews) and release the file."""
        if self._mapped is None:
            return
        try:
            if self._writer is not None and self._writer.has_pending_work:
                with self._writer_file.guard():
                    self._writer.finish()
        finally:
            self._release()

    def _release(self) -> None:
        """Close the HDF5 handle, the writer lock and the memory map, whatever state they are in."""
        writer_file = getattr(self, "_writer_file", None)
        if writer_file is not None:
            writer_file.close()
            self._writer_file = None
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

    def _open_reader(self, attempts: int = 4) -> None:
        """Open and load for reading. While a writer appends, a SWMR reader can meet a chunk the
        writer placed past the end of file it read at open (HDF5: "addr overflow"); that is a
        race, not damage, so with a live writer the open is retried."""
        for attempt in range(attempts):
            self._reader = reader = open_for_reading(self.path, self._locking)
            try:
                with fmt.damage_reported(self.path):
                    fmt.check_root(reader, self.path)
                self._load(reader)
            except FormatError:
                reader.close()
                self._reader = None
                if attempt == attempts - 1 or not WriterLock.is_held(self.path):
                    raise
                time.sleep(0.01 * 2**attempt)
                continue
            return

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes (PyTorch DataLoader with spawn) reopen the file for reading.
        return {"path": self.path, "verify_reads": self._verify_reads, "locking": self._locking}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(
            state["path"],
            "r",
            verify_reads=state.get("verify_reads", True),
            locking=state.get("locking"),
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
    ) -> int:
        """Store one image; returns its id. See :meth:`add_batch`."""
        return int(
            self.add_batch([image], **_one_image_batch(label, score, true_label, id, source))[0]
        )

    def _image_codecs(self, labels: Sequence[Any]) -> list[Codec]:
        """The codec each image of a batch goes to: its class's, the default for a new class
        (an invalid label gets the default too: prepare() refuses it)."""

        def codec_for(label: Any) -> Codec:
            name = self._catalog.name_of(label)
            return self.codec_of(name) if name is not None else self._default_codec

        try:
            distinct = {label: codec_for(label) for label in dict.fromkeys(labels)}
        except TypeError:  # an unhashable label
            return [codec_for(label) for label in labels]
        codecs = list(distinct.values())
        if codecs and codecs.count(codecs[0]) == len(codecs):
            return [codecs[0]] * len(labels)  # one codec: no lookup per image
        return list(map(distinct.__getitem__, labels))

    @_writes
    def add_batch(
        self,
        images: Any,
        *,
        labels: Sequence[str | int],
        scores: Any = None,
        true_labels: Sequence[str | int | None] | None = None,
        ids: Sequence[int] | None = None,
        sources: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        """Store a batch of images; returns their ids. All of it lands, or none of it.

        ``images``: a sequence of (H, W) or (H, W, C) uint8/uint16 arrays, PIL images or
        (C, H, W) torch tensors, or one (N, H, W[, C]) array. ``labels``: predicted class
        names, or class ids into :attr:`labels`. ``scores``: (N,) top-1 confidences or (N, K)
        probability vectors over the K declared labels. ``true_labels``: ground truth (None or
        -1 where unknown). ``ids``: your own non-negative ids (default: consecutive).
        ``sources``: where each image came from (a path, a URL).
        """
        writer = self._check_writable()
        imgs = _inputs.as_images(images)
        codecs = self._image_codecs(_inputs.as_sequence(labels, len(imgs), "labels"))

        def encode(k: int) -> tuple[bytes, int]:
            payload = codecs[k].encode(imgs[k])
            return payload, crc32(payload)

        # The pool starts encoding while this thread validates the batch (a batch refused
        # there leaves the block: what has not started is cancelled, the rest discarded).
        with InOrder(encode, range(len(imgs))) as encoded:
            geometries = [
                Geometry(
                    a.shape[0], a.shape[1], 1 if a.ndim == 2 else a.shape[2], _DTYPE_NAMES[a.dtype]
                )
                for a in imgs
            ]
            batch = writer.prepare(
                len(imgs), labels, scores, true_labels, ids, sources, geometries=geometries
            )
            return writer.commit(batch, encoded, imgs)

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
        return int(
            self.add_encoded_batch(
                [data], **_one_image_batch(label, score, true_label, id, source)
            )[0]
        )

    @_writes
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
        writer = self._check_writable()
        if isinstance(data, (bytes, bytearray, memoryview)) or not isinstance(data, Sequence):
            raise InvalidInputError("data must be a sequence of encoded images (bytes)")
        payloads = list(data)
        if set(map(type, payloads)) != {bytes}:
            payloads = [
                item if type(item) is bytes else _as_payload(k, item)
                for k, item in enumerate(payloads)
            ]
        n = len(payloads)
        label_list = _inputs.as_sequence(labels, n, "labels")
        # The stream's geometry decides the stack, so read it with the class's codec first:
        # one probe_many per codec (a store with one codec: one call for the whole batch).
        image_codecs = self._image_codecs(label_list)
        if n and image_codecs.count(image_codecs[0]) == n:
            by_codec = {id(image_codecs[0]): (image_codecs[0], range(n))}
        else:
            by_codec = {}  # by id(): codecs hash slowly
            for k, codec in enumerate(image_codecs):
                by_codec.setdefault(id(codec), (codec, []))[1].append(k)
        geometries: list[Geometry | None] = [None] * n
        checked: dict[tuple, Geometry] = {}  # each geometry checked once

        def geometry_of(codec: Codec, info: ImageInfo, k: int) -> Geometry:
            key = (codec.codec_id, *info)
            geometry = checked.get(key)
            if geometry is None:
                try:
                    codec.check_image(info.height, info.width, info.channels, info.dtype)
                except CodecError as exc:
                    raise CodecError(f"encoded image {k}: {exc}") from None
                geometry = checked[key] = Geometry(
                    info.height, info.width, info.channels, info.dtype.name
                )
            return geometry

        for codec, members in by_codec.values():
            try:
                infos = codec.probe_many(
                    payloads if len(members) == n else [payloads[k] for k in members]
                )
            except CodecError:
                for k in members:  # which one, numbered in the whole batch
                    try:
                        codec.probe(payloads[k])
                    except CodecError as exc:
                        raise CodecError(f"encoded image {k}: {exc}") from None
                raise
            # Identity counts (list.count) keep the usual batch, one codec and one geometry,
            # free of Python steps per image: at 32 px each costs a tenth of the image's write.
            if len(members) == n and infos.count(infos[0]) == n:
                geometries = [geometry_of(codec, infos[0], 0)] * n
                continue
            for k, info in zip(members, infos):
                geometries[k] = geometry_of(codec, info, k)
        batch = writer.prepare(n, labels, scores, true_labels, ids, sources, geometries=geometries)
        # Inline, not on the thread pool: 1 us per 14 kB image, less than handing work to a
        # thread costs on a busy machine.
        return writer.commit(batch, zip(payloads, map(crc32, payloads)), payloads)

    # ------------------------------------------------------------------ deleting

    @_writes
    def delete(self, ids: int | Sequence[int]) -> None:
        """Mark images deleted: they vanish from lookups, queries and iteration. Their bytes
        stay in the file (HDF5 never shrinks a file in place)."""
        writer = self._check_writable()
        rows = self._index.rows_of(np.atleast_1d(np.asarray(ids)))
        if len(rows):
            writer.delete(rows)

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return self._index.live_count

    def __contains__(self, image_id: object) -> bool:
        row = self._index.find(image_id)
        return row >= 0 and not self._index.deleted[row]

    def __iter__(self) -> Iterator[int]:
        """Ids of the live images, in the order they were added."""
        return iter(self._index.live_ids().tolist())

    def ids(self) -> np.ndarray:
        """Ids of the live images, in the order they were added."""
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

    def _damaged(self, row: int) -> DamagedImageError:
        image_id = int(self._index.column("id")[row])
        return DamagedImageError(
            f"image {image_id} in {self.path} is damaged: its stored bytes do not match the "
            "CRC-32 recorded when it was written (the store's other images are unaffected; "
            "verify() lists every damaged image)",
            image_id,
        )

    def _decode(self, row: int) -> np.ndarray:
        return self._decoders[self._index.stacks[row]](self._payload(row))

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
            raise UnknownIdError(f"no image with id {image_id!r} in the store")
        offset = index.offsets[row]
        end = offset + index.nbytes[row]
        view = mapped.view
        if end > len(view):
            view = mapped.ensure(end)
        payload = view[offset:end]
        if self._verify_reads and crc32(payload) != index.crcs[row]:
            raise self._damaged(row)
        return self._decoders[index.stacks[row]](payload)

    def _preview_images(self, ids: np.ndarray) -> list[np.ndarray]:
        """Pixels for the class contact sheets: a damaged image shows as a black tile instead
        of failing the writer's close (verify() is where damage is reported)."""
        try:
            return self.get_batch(ids)
        except DamagedImageError:
            images = []
            for image_id in ids.tolist():
                try:
                    images.append(self[image_id])
                except DamagedImageError:
                    images.append(np.zeros(self.record(image_id).shape, np.uint8))
            return images

    def get_batch(
        self, ids: Sequence[int], *, out: np.ndarray | None = None
    ) -> list[np.ndarray] | np.ndarray:
        """Decoded images for many ids, in the order given (decoded on parallel threads
        where the batch holds enough bytes to be worth it).

        With ``out``, an array of shape (len(ids), H, W[, C]) and the images' dtype, the
        images are decoded straight into it (no per-image allocation; JPEG writes in place)
        and ``out`` is returned; every image must have that shape.
        """
        self._check_open()
        rows = self._index.rows_of(ids)
        threads = decode_threads(int(self._index.column("nbytes")[rows].sum(dtype=np.int64)))
        row_list = rows.tolist()
        if out is None:
            return thread_map(self._decode, row_list, threads)
        if out.shape[0] != len(rows) or not out.flags.c_contiguous:
            raise InvalidInputError(
                f"out must be C-contiguous with {len(rows)} images along axis 0"
            )
        thread_map(lambda k: self._decode_into(row_list[k], out[k]), range(len(rows)), threads)
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
        stack.codec.decode_into(self._payload(row), target)

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
        self._check_open()
        row = self._index.row_of(image_id)
        r = self._index.take([row])[0]
        true = int(r["true_label"])
        score = float(r["score"])
        stack = self._stacks[int(r["stack"])]
        vector = self._row_of_optional(fmt.SCORES, row)
        if vector is not None:
            fmt.check_score_vector(vector, int(r["label"]), r["score"], int(r["id"]), self.path)
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
            source=self._row_of_optional(fmt.SOURCES, row),
            scores=vector,
            stack=stack.path,
            position=int(r["position"]),
        )

    def _row_of_optional(self, name: str, row: int) -> Any:
        """Row ``row`` of /sources or /scores; None where the store has no such dataset or
        the image none."""
        if name == fmt.SOURCES:
            values = self._aligned_column(name, np.array([row]))
            return None if values is None else values[0]
        with fmt.damage_reported(self.path):
            f = self._file
            if name not in f:
                return None
            fmt.check_aligned(f[name], self.path)
            if row >= f[name].shape[0]:
                return None
            value = f[name][row]
        return None if np.isnan(value).all() else value

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
        self._check_open()
        return self._index.take()

    def _aligned_column(self, name: str, rows: np.ndarray) -> np.ndarray | None:
        """/scores or /sources at index rows ``rows`` (rows past its end: NaN or None); each
        source checked against /source_crc32."""
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
            if name not in f:
                return None
            ds = f[name]
            fmt.check_aligned(ds, self.path)
            values = ds[...]  # one read: h5py's per-row selections cost far more
        inside = rows < len(values)
        out = np.full((len(rows), ds.shape[1]), np.nan, dtype=np.float32)
        out[inside] = values[rows[inside]]
        return out

    @property
    def scores(self) -> np.ndarray | None:
        """The (N, K) score vectors of the live images, in the order of :meth:`ids`, columns
        in the order of :attr:`labels` (rows of NaN for images stored without one); None when
        the store holds no score vectors. Top-1 scores are in :meth:`to_pandas`/:attr:`index`."""
        self._check_open()
        return self._aligned_column(fmt.SCORES, np.flatnonzero(self._index.live_mask()))

    @property
    def sources(self) -> list[str | None]:
        """Where each live image came from (None where not given), in the order of :meth:`ids`."""
        self._check_open()
        values = self._aligned_column(fmt.SOURCES, np.flatnonzero(self._index.live_mask()))
        return [None] * len(self) if values is None else values.tolist()

    def to_pandas(self, *, include_deleted: bool = False, scores: bool = False):
        """The index as a pandas DataFrame with label names resolved and each image's source
        (requires pandas). ``scores=True`` adds the score vectors, one ``score:<label>``
        column per class."""
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
        one row per live image in ``table`` (id, label, true_label, score, correct, geometry,
        codec, bytes, crc32, the HDF5 dataset and position of its chunk, source, and ``files``'
        exported path per id), and the score vectors in long form in ``<table>_scores``. One
        transaction: all rows or none. ``if_exists``: "fail" (:class:`TargetExistsError`),
        "replace" or "append". ``ids`` limits the rows to those images. Returns the number of
        image rows. Needs the 'sql' extra."""
        from .sql import to_sql

        self._check_open()
        return to_sql(self, url_or_engine, table=table, if_exists=if_exists, files=files, ids=ids)

    # ------------------------------------------------------------------ integrity

    def verify(self) -> VerifyReport:
        """Recompute the CRC-32 of every stored image (deleted ones too) and check every cached
        chunk offset against HDF5's chunk index. Damaged images are named; the rest stay
        readable."""
        self._check_open()
        report = VerifyReport()
        rows = self._index.take()
        report.misplaced = _offsets.misplaced_ids(self._file, rows, self._stacks)
        for r in range(len(rows)):
            report.checked += 1
            if not _offsets.row_intact(self._index, self._mapped, r):
                report.damaged.append(int(rows["id"][r]))
        return report

    # ------------------------------------------------------------------ summary

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: images, classes, payload bytes, file bytes, format version."""
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


def _as_payload(k: int, item: object) -> bytes:
    if not isinstance(item, (bytes, bytearray, memoryview)):
        raise InvalidInputError(f"encoded image {k} is {type(item).__name__}, not bytes")
    return bytes(item)


def _one_image_batch(label, score, true_label, image_id, source) -> dict[str, Any]:
    """The batch arguments of ``add`` / ``add_encoded`` for their one image."""
    return dict(
        labels=[label],
        scores=None if score is None else [score],
        true_labels=[true_label],
        ids=None if image_id is None else [image_id],
        sources=None if source is None else [source],
    )


def open(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    mode: str = "r",
    *,
    codec: str | Codec = "jpeg",
    quality: int = 90,
    labels: Sequence[str] | None = None,
    verify_reads: bool = True,
    locking: bool | str | None = None,
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
    """
    if isinstance(path, (list, tuple)):
        if mode != "r":
            raise InvalidInputError(
                f"a list of shards opens read-only (mode 'r'), not {mode!r}; "
                "h5store.merge makes one writable store of them"
            )
        from .sharded import ShardedStore

        return ShardedStore(path, verify_reads=verify_reads)
    return ImageStore(
        path,
        mode,
        codec=codec,
        quality=quality,
        labels=labels,
        verify_reads=verify_reads,
        locking=locking,
        **codec_options,
    )
