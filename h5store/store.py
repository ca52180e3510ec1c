"""``ImageStore``: the public API, a thin layer over the format, the codecs and the file session.

    >>> with h5store.open("run.h5", "w", codec="jpeg", quality=90) as store:
    ...     ids = store.add_batch(images, labels=predicted, scores=probabilities)
    >>> with h5store.open("run.h5") as store:
    ...     wrong = store.query(min_score=0.9, correct=False)
    ...     pictures = store.get_batch(wrong)
"""

from __future__ import annotations

import functools
import json
import os
import random
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import imagecodecs
import numpy as np

from . import _inputs
from . import format as fmt
from ._file import (
    MODES,
    MappedFile,
    WriterFile,
    check_locking,
    open_for_reading,
    read_committed_rows,
    reader_precheck,
)
from ._imaging import contact_sheet
from ._parallel import thread_imap, thread_map
from .codecs import Codec, codec_from_config, get_codec, image_shape
from .errors import (
    ClosedStoreError,
    CodecError,
    DuplicateIdError,
    FormatError,
    H5StoreError,
    InvalidInputError,
    ReadOnlyError,
    RecoveryNeededError,
    StorePermissionError,
    UnknownIdError,
    WriteFailedError,
)
from .index import Index

# The index's CRC-32 (zlib's polynomial) from libdeflate: 0.9 us for a 14 kB JPEG here against
# zlib's 3.4 us, on every image written and verified.
crc32 = imagecodecs.deflate_crc32


#: numpy's dtype.name is slow (~1 us); images are validated to be one of these.
_DTYPE_NAMES = {np.dtype(name): name for name in fmt.PIXEL_DTYPES}


def _writes(method):
    """For the public methods that write: a write the system refuses (full disk, I/O error)
    raises a WriteFailedError and closes the store, committed images intact (WriterFile.guard)."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        w = self._writer
        if w is None:
            return method(self, *args, **kwargs)
        try:
            with w.guard():
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


@dataclass
class _Stack:
    label: int
    height: int
    width: int
    channels: int
    dtype: str
    codec: Codec
    path: str
    length: int = 0  # committed images (positions 0 .. length-1)

    @property
    def key(self) -> tuple[int, int, int, int, str]:
        return (self.label, self.height, self.width, self.channels, self.dtype)

    @functools.cached_property
    def decode(self):
        return self.codec.decoder(image_shape(self.height, self.width, self.channels), np.dtype(self.dtype))


@dataclass
class _Batch:
    """A validated, encoded batch, ready to commit; building one writes nothing."""

    label_ids: np.ndarray
    true_ids: np.ndarray
    top1: np.ndarray
    vectors: np.ndarray | None
    ids: np.ndarray
    sources: list[str] | None
    keys: list[tuple[int, int, int, int, str]]
    new_labels: list[str]
    codecs: list[Codec] = field(default_factory=list)

    def label_name(self, label_id: int, known: list[str]) -> str:
        return known[label_id] if label_id < len(known) else self.new_labels[label_id - len(known)]


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
        locking: bool | str | None = None,
        **codec_options: Any,
    ):
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
        check_locking(locking)
        self._locking = locking
        self.path = os.fspath(path)
        self.mode = MODES[mode]
        self._default_codec = get_codec(codec, quality=quality, **codec_options)
        self._writer: WriterFile | None = None
        self._reader: h5py.File | None = None
        self._mapped: MappedFile | None = None
        self._class_codecs: dict[str, Codec] = {}  # by label name: ids of new labels are provisional
        if self.mode == "r":
            self._reader = open_for_reading(self.path, locking)
            try:
                with fmt.damage_reported(self.path):
                    fmt.check_root(self._reader, self.path)
                self._load(self._reader)
            except BaseException:
                self._release()
                raise
        else:
            self._writer = WriterFile(self.path, self.mode, locking)
            try:
                removed = []
                if self._writer.recovered:
                    f = self._writer.f
                    try:
                        committed = read_committed_rows(f)
                        self._check_within_old_end(committed)
                        removed = fmt.remove_unreferenced_structure(
                            f, fmt.read_labels(f), committed
                        )
                    except (KeyError, RuntimeError, OSError) as exc:
                        # A writer killed while HDF5 flushed a new group or stack can leave
                        # group metadata half written, which HDF5 can neither read nor unlink.
                        raise RecoveryNeededError(
                            f"{self.path}: a writer was killed while creating a class or stack and "
                            f"left HDF5 metadata that cannot be repaired in place ({exc}); open it "
                            "with mode 'r' to read the committed images, or export them to a new store"
                        ) from exc
                    f.flush()
                self._load(self._writer.f)
            except BaseException as exc:
                extended = self._writer.extended_from is not None
                self._writer.undo_extension()  # a file recovery could not use stays as it was
                self._release()
                if extended and isinstance(exc, (H5StoreError, OSError, RuntimeError, KeyError)):
                    raise FormatError(
                        f"{self.path} is truncated (shorter than HDF5 recorded) and cannot be "
                        f"recovered: {exc}"
                    ) from exc
                raise
            self._log_ready = False
            self._dirty_labels: set[int] = set()
            if f"/{fmt.PREVIEWS}" in removed:  # torn by the dead writer: redraw them all
                self._dirty_labels.update(range(len(self._labels)))
            if labels is not None:
                self.add_labels(labels)

    def _check_within_old_end(self, rows: np.ndarray) -> None:
        """Recovery extended a short file to HDF5's recorded end: fine when only uncommitted
        writes were lost (a full disk), not when committed images lay there (a file cut short
        by a copy): then the file gets its size back and the error says so."""
        old_end = self._writer.extended_from
        if old_end is None or not len(rows):
            return
        ends = rows["offset"].astype(np.int64) + rows["nbytes"].astype(np.int64)
        beyond = int(np.count_nonzero(ends > old_end))
        if beyond:
            self._writer.undo_extension()
            raise FormatError(
                f"{beyond} committed images lie past its end ({old_end} bytes): it was cut short; "
                "restore it from the original (mode 'r' reads the rest)"
            )

    # ------------------------------------------------------------------ loading

    def _load(self, f: h5py.File) -> None:
        with fmt.damage_reported(self.path):
            self._load_checked(f)

    def _load_checked(self, f: h5py.File) -> None:
        # Read in the reverse of the order a writer writes (labels, /stacks rows, chunks,
        # index rows): then everything the rows read refer to is on disk already when it is
        # read, even while a writer appends.
        if self._mapped is not None:
            self._mapped.close()
        self._mapped = MappedFile(self.path)
        rows = read_committed_rows(f, self._mapped)
        table = fmt.read_stacks(f)
        self._labels = fmt.read_labels(f)
        self._label_ids = {name: k for k, name in enumerate(self._labels)}
        fmt.check_stacks(table, len(self._labels), self.path)
        fmt.check_rows(rows, table, len(self._labels), os.path.getsize(self.path), self.path)
        self._stacks: list[_Stack] = []
        for row in table:
            label = int(row["label"])
            shape = (int(row["height"]), int(row["width"]), int(row["channels"]), row["dtype"].decode())
            self._stacks.append(
                _Stack(
                    label,
                    *shape,
                    codec=codec_from_config(json.loads(row["codec_config"].decode("utf-8"))),
                    path=fmt.stack_path(self._labels[label], *shape),
                )
            )
        self._stack_ids = {s.key: k for k, s in enumerate(self._stacks)}
        self._index = Index(rows, adopt=True)
        if len(self._index):
            lengths = np.zeros(len(self._stacks), dtype=np.int64)
            np.maximum.at(lengths, self._index.column("stack").astype(np.int64),
                          self._index.column("position").astype(np.int64) + 1)
            for stack, length in zip(self._stacks, lengths.tolist()):
                stack.length = length
        self._decoders = [stack.decode for stack in self._stacks]
        self._check_offset_sample()

    def _check_offset_sample(self, samples: int = 8) -> None:
        """Chunk offsets are a cache; a tool that rewrote the file (h5repack) moves chunks.
        Check a few against their CRCs and rebuild them all from HDF5 if any is stale."""
        n = len(self._index)
        if not n:
            return
        rows = {0, n - 1, *random.Random(n).sample(range(n), min(samples, n))}
        if all(self._row_intact(r) for r in rows):
            return
        self._rebuild_offsets()

    def _row_intact(self, row: int) -> bool:
        offset, nbytes = self._index.offsets[row], self._index.nbytes[row]
        try:
            view = self._mapped.ensure(offset + nbytes)
        except FormatError:
            return False
        return crc32(view[offset : offset + nbytes]) == int(self._index.column("crc32")[row])

    def _chunk_locations(self, stack: _Stack) -> dict[int, tuple[int, int]]:
        f = self._file
        found: dict[int, tuple[int, int]] = {}
        f[stack.path].id.chunk_iter(
            lambda info: found.__setitem__(info.chunk_offset[0], (info.byte_offset, info.size))
        )
        return found

    def _rebuild_offsets(self) -> None:
        stacks, positions = self._index.column("stack"), self._index.column("position")
        for k, stack in enumerate(self._stacks):
            where = np.flatnonzero(stacks == k)
            if not len(where):
                continue
            found = self._chunk_locations(stack)
            offsets = [found.get(int(p), (-1, 0))[0] for p in positions[where]]
            keep = np.array(offsets) >= 0
            self._index.set_offsets(where[keep], np.array(offsets)[keep])

    @property
    def _file(self) -> h5py.File:
        if self._writer is not None:
            return self._writer.f
        if self._reader is None:
            raise ClosedStoreError(f"{self.path} is closed")
        return self._reader

    # ------------------------------------------------------------------ context and lifetime

    def __enter__(self) -> ImageStore:
        return self

    def __del__(self) -> None:
        # Like an unclosed file: finish the write session and release the lock, and say so.
        if getattr(self, "_mapped", None) is not None:
            warnings.warn(f"h5store: {self.path} was not closed; closing it now", ResourceWarning, stacklevel=2)
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

    def close(self) -> None:
        """Finish writing (complete index table, class counts) and release the file."""
        if self._mapped is None:
            return
        try:
            if self._writer is not None and (self._log_ready or self._dirty_labels):
                with self._writer.guard():
                    self._finish_writing()
        finally:
            self._release()

    def _release(self) -> None:
        """Close the HDF5 handle, the writer lock and the memory map, whatever state they are in."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._mapped is not None:
            self._mapped.close()
            self._mapped = None

    def _finish_writing(self) -> None:
        w = self._writer
        f = w.structure()
        w.seal_row_log()
        for stack in self._stacks:
            ds = f[stack.path]
            if ds.shape[0] > stack.length:  # chunks of a batch that failed after writing them
                ds.resize(stack.length, axis=0)
        if self._dirty_labels:
            live = self._index.live_mask()
            counts = np.bincount(self._index.column("label")[live], minlength=len(self._labels))
            for label in sorted(self._dirty_labels):
                group = f[fmt.CLASSES].get(fmt.safe_name(self._labels[label]))
                if group is not None:
                    group.attrs["count"] = np.uint64(counts[label])
            f.flush()
            self._draw_previews(f, sorted(self._dirty_labels))
        f.flush()

    def _draw_previews(self, f: h5py.File, labels: list[int]) -> None:
        live_labels = self._index.column("label")
        live = self._index.live_mask()
        ids = self._index.column("id")
        for label in labels:
            name = self._labels[label]
            if fmt.safe_name(name) not in f[fmt.CLASSES]:
                continue
            shown = ids[np.flatnonzero(live & (live_labels == label))[: fmt.PREVIEW_IMAGES]]
            current = fmt.preview_ids(f, name)
            if current is not None and np.array_equal(current, shown):
                continue
            sheet = contact_sheet(self.get_batch(shown), fmt.PREVIEW_SIDE, fmt.PREVIEW_COLUMNS)
            fmt.write_preview(f, name, sheet, shown)

    @_writes
    def rebuild_previews(self) -> None:
        """Redraw the contact sheet of every class (they are kept current when a writer
        closes; this repairs them after a writer was killed, or for files from elsewhere)."""
        w = self._check_writable()
        f = w.structure()
        if fmt.PREVIEWS in f:
            del f[fmt.PREVIEWS]
        self._draw_previews(f, list(range(len(self._labels))))
        f.flush()

    def refresh(self) -> None:
        """Reader only: pick up what a concurrent writer committed since open."""
        if self._writer is not None:
            return
        self._check_open()
        # A writer that died restructuring the file leaves it unopenable until recovered:
        # say so while the current view still works, rather than after dropping it.
        reader_precheck(self.path)
        self._reader.close()
        self._reader = open_for_reading(self.path, self._locking)
        self._load(self._reader)

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes (PyTorch DataLoader with spawn) reopen the file for reading.
        return {"path": self.path, "locking": self._locking}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], "r", locking=state.get("locking"))

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

    def _check_writable(self) -> WriterFile:
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
        (N, K) score vectors map to them. Names already present keep their ids."""
        w = self._check_writable()
        names = [_inputs.check_label(n, f"label {k}") for k, n in enumerate(names)]
        new = [n for n in dict.fromkeys(names) if n not in self._label_ids]
        if new:
            self._ensure_log_ready()
            self._append_labels(w.data(), new)
            w.flush()
        return [self._label_ids[n] for n in names]

    def _append_labels(self, f: h5py.File, names: list[str]) -> None:
        ds = self._writer.dataset(fmt.LABELS)
        start = ds.shape[0]
        ds.resize(start + len(names), axis=0)
        ds[start:] = np.array([n.encode("utf-8") for n in names], dtype=fmt.LABEL_DTYPE)
        for name in names:
            self._label_ids[name] = len(self._labels)
            self._labels.append(name)

    @_writes
    def create_class(self, label: str, codec: str | Codec | None = None, *, quality: int | None = None,
                     **codec_options: Any) -> None:
        """Create the class ``label`` with its own codec (otherwise classes take the store's
        default codec when their first image arrives). Repeating the call is harmless."""
        w = self._check_writable()
        label = _inputs.check_label(label)
        if codec is None and quality is None and not codec_options:
            chosen = self._default_codec
        else:
            base = codec if codec is not None else self._default_codec.codec_id
            chosen = get_codec(base, quality=quality, **codec_options)
        existing = self._codec_of_class(label)
        if existing is not None:
            if existing != chosen:
                raise InvalidInputError(f"class {label!r} exists already with codec {existing!r}")
            return
        self._ensure_log_ready()
        lid = self._label_ids.get(label, len(self._labels))
        fmt.create_class(w.structure(), lid, label, chosen)
        self._class_codecs[label] = chosen
        if label not in self._label_ids:
            self._append_labels(w.data(), [label])
        w.flush()

    def _codec_of_class(self, label: str) -> Codec | None:
        """The codec images of this class are stored with; None if the class has no group."""
        codec = self._class_codecs.get(label)
        if codec is None:
            group = self._file[fmt.CLASSES].get(fmt.safe_name(label))
            if group is None:
                return None
            codec = self._class_codecs[label] = fmt.class_codec(group)
        return codec

    def codec_of(self, label: str) -> Codec:
        """The codec of class ``label`` (the store default for a class not created yet)."""
        return self._codec_of_class(label) or self._default_codec

    # ------------------------------------------------------------------ adding

    def add(self, image: Any, *, label: str | int, score: float | Sequence[float] | None = None,
            true_label: str | int | None = None, id: int | None = None, source: str | None = None) -> int:
        """Store one image; returns its id. See :meth:`add_batch`."""
        scores = None if score is None else [score]
        ids = None if id is None else [id]
        sources = None if source is None else [source]
        return int(self.add_batch([image], labels=[label], scores=scores, true_labels=[true_label],
                                  ids=ids, sources=sources)[0])

    @_writes
    def add_batch(self, images: Any, *, labels: Sequence[str | int], scores: Any = None,
                  true_labels: Sequence[str | int | None] | None = None, ids: Sequence[int] | None = None,
                  sources: Sequence[str | None] | None = None) -> np.ndarray:
        """Store a batch of images; returns their ids. All of it lands, or none of it.

        ``images``: a sequence of (H, W) or (H, W, C) uint8/uint16 arrays, PIL images or
        (C, H, W) torch tensors, or one (N, H, W[, C]) array. ``labels``: predicted class
        names, or class ids into :attr:`labels`. ``scores``: (N,) top-1 confidences or (N, K)
        probability vectors over the K declared labels. ``true_labels``: ground truth (None or
        -1 where unknown). ``ids``: your own non-negative ids (default: consecutive).
        ``sources``: where each image came from (a path, a URL).
        """
        self._check_writable()
        imgs = _inputs.as_images(images)
        batch = self._prepare(
            len(imgs), labels, scores, true_labels, ids, sources,
            infos=[(a.shape[0], a.shape[1], 1 if a.ndim == 2 else a.shape[2], _DTYPE_NAMES[a.dtype]) for a in imgs],
        )
        codecs = batch.codecs

        def encode(k: int) -> tuple[bytes, int]:
            payload = codecs[k].encode(imgs[k])
            return payload, crc32(payload)

        return self._commit(batch, thread_imap(encode, range(len(imgs))))

    def add_encoded(self, data: bytes, *, label: str | int, score: float | Sequence[float] | None = None,
                    true_label: str | int | None = None, id: int | None = None, source: str | None = None) -> int:
        """Store one pre-encoded image (e.g. a JPEG file's bytes) as-is: no decode, no
        re-encode. The bytes must be a valid stream of the class's codec."""
        scores = None if score is None else [score]
        ids = None if id is None else [id]
        sources = None if source is None else [source]
        return int(self.add_encoded_batch([data], labels=[label], scores=scores, true_labels=[true_label],
                                          ids=ids, sources=sources)[0])

    @_writes
    def add_encoded_batch(self, data: Sequence[bytes], *, labels: Sequence[str | int], scores: Any = None,
                          true_labels: Sequence[str | int | None] | None = None,
                          ids: Sequence[int] | None = None,
                          sources: Sequence[str | None] | None = None) -> np.ndarray:
        """Store pre-encoded images as-is; the batch form of :meth:`add_encoded`."""
        self._check_writable()
        if isinstance(data, (bytes, bytearray, memoryview)) or not isinstance(data, Sequence):
            raise InvalidInputError("data must be a sequence of encoded images (bytes)")
        payloads = []
        for k, item in enumerate(data):
            if not isinstance(item, (bytes, bytearray, memoryview)):
                raise InvalidInputError(f"encoded image {k} is {type(item).__name__}, not bytes")
            payloads.append(bytes(item))
        n = len(payloads)
        label_list = _inputs.as_sequence(labels, n, "labels")
        # The stream's geometry decides the stack, so probe with the class's codec first.
        infos = []
        codec_of_label: dict[Any, Codec] = {}
        checked: dict[tuple, tuple[int, int, int, str]] = {}  # each geometry checked once
        for k, payload in enumerate(payloads):
            label = label_list[k]
            codec = codec_of_label.get(label) if isinstance(label, (str, int)) else None
            if codec is None:
                codec = codec_of_label[label] = self._probe_codec(label)
            try:
                info = codec.probe(payload)
                key = (codec.codec_id, info.height, info.width, info.channels, info.dtype)
                geometry = checked.get(key)
                if geometry is None:
                    codec.check_image(info.height, info.width, info.channels, info.dtype)
                    geometry = checked[key] = (info.height, info.width, info.channels, info.dtype.name)
            except CodecError as exc:
                raise CodecError(f"encoded image {k}: {exc}") from None
            infos.append(geometry)
        batch = self._prepare(n, labels, scores, true_labels, ids, sources, infos=infos)
        # Threads pay off for large batches only; small payloads are cheaper inline.
        big = sum(map(len, payloads)) > (4 << 20)
        crcs = thread_map(crc32, payloads) if big else list(map(crc32, payloads))
        return self._commit(batch, zip(payloads, crcs))

    def _probe_codec(self, label: Any) -> Codec:
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            label = self._labels[label] if 0 <= label < len(self._labels) else None
        return self.codec_of(str(label)) if isinstance(label, (str, np.str_)) else self._default_codec

    def _codecs_for(self, batch: _Batch) -> list[Codec]:
        """The codec of every image, each (class, shape, dtype) checked once: can that class's
        codec hold such images?"""
        checked: dict[tuple, Codec] = {}
        for k, key in enumerate(batch.keys):
            if key in checked:
                continue
            label_id, height, width, channels, dtype = key
            label = batch.label_name(label_id, self._labels)
            codec = self.codec_of(label)
            try:
                codec.check_image(height, width, channels, np.dtype(dtype))
            except CodecError as exc:
                raise CodecError(f"image {k} (class {label!r}): {exc}") from None
            checked[key] = codec
        return [checked[key] for key in batch.keys]

    def _resolve_label(self, value: Any, where: str, new: dict[str, int]) -> int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if 0 <= value < len(self._labels):
                return int(value)
            raise InvalidInputError(
                f"{where} is class id {value}, but the store has {len(self._labels)} labels "
                "(declare names with add_labels)"
            )
        label = _inputs.check_label(value, where)
        lid = self._label_ids.get(label)
        if lid is None:
            lid = new.setdefault(label, len(self._labels) + len(new))
        return lid

    def _prepare(self, n: int, labels, scores, true_labels, ids, sources, *, infos) -> _Batch:
        if n == 0:
            raise InvalidInputError("the batch is empty")
        new: dict[str, int] = {}
        seen: dict[Any, int] = {}  # a batch repeats a few labels many times: resolve each once
        label_ids = np.empty(n, dtype=np.uint32)
        for k, value in enumerate(_inputs.as_sequence(labels, n, "labels")):
            key = (type(value), value) if isinstance(value, (str, int)) else None
            label_id = seen.get(key) if key is not None else None
            if label_id is None:
                label_id = self._resolve_label(value, f"label of image {k}", new)
                if key is not None:
                    seen[key] = label_id
            label_ids[k] = label_id
        true_ids = np.full(n, fmt.NO_TRUE_LABEL, dtype=np.int32)
        if true_labels is not None:
            for k, v in enumerate(_inputs.as_sequence(true_labels, n, "true_labels")):
                if v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v == -1):
                    continue
                true_ids[k] = self._resolve_label(v, f"true label of image {k}", new)
        arr = _inputs.as_scores(scores, n)
        vectors = None
        top1 = np.full(n, np.nan, dtype=np.float32)
        if arr is not None and arr.ndim == 2:
            k_classes = arr.shape[1]
            if k_classes != len(self._labels) or new:
                raise InvalidInputError(
                    f"score vectors have {k_classes} entries but the store has "
                    f"{len(self._labels) + len(new)} labels; declare the class names first "
                    "(add_labels, or open(..., labels=names))"
                )
            if fmt.SCORES in self._file and self._file[fmt.SCORES].shape[1] != k_classes:
                raise InvalidInputError(
                    f"the store holds score vectors of length {self._file[fmt.SCORES].shape[1]}, "
                    f"not {k_classes}"
                )
            vectors = arr
            top1 = arr[np.arange(n), label_ids]
        elif arr is not None:
            top1 = arr
        id_arr = _inputs.as_ids(ids, n)
        if id_arr is None:
            start = self._index.next_id()
            id_arr = np.arange(start, start + n, dtype=np.int64)
        else:
            taken = self._index.duplicates_of(id_arr)
            if len(taken):
                raise DuplicateIdError(f"id {int(taken[0])} is already used in the store (ids are never reused)")
        source_list = _inputs.as_sources(sources, n)
        keys = [(int(label_ids[k]), *infos[k]) for k in range(n)]
        batch = _Batch(label_ids, true_ids, top1, vectors, id_arr, source_list, keys, list(new))
        batch.codecs = self._codecs_for(batch)  # every image checked before anything is encoded
        return batch

    # ------------------------------------------------------------------ committing

    def _ensure_log_ready(self) -> None:
        if not self._log_ready:
            self._writer.load_row_log(self._index.take())
            self._log_ready = True

    def _commit(self, batch: _Batch, encoded: Iterable[tuple[bytes, int]]) -> np.ndarray:
        """Write a prepared batch whose (payload, crc32) pairs ``encoded`` yields in order."""
        w = self._writer
        self._ensure_log_ready()
        f = self._file
        new_keys = list(dict.fromkeys(k for k in batch.keys if k not in self._stack_ids))
        names = {k[0]: batch.label_name(k[0], self._labels) for k in new_keys}
        needs_groups = sorted({lid for lid, name in names.items() if self._codec_of_class(name) is None})
        needs_scores = batch.vectors is not None and fmt.SCORES not in f
        needs_sources = batch.sources is not None and fmt.SOURCES not in f
        # Objects can only be created with SWMR off, and a writer killed then can leave them
        # half written; so this epoch creates objects only, and everything that makes them
        # part of the store (labels, /stacks rows, index rows) is written afterwards with
        # SWMR on. Recovery removes objects nothing refers to.
        if new_keys or needs_scores or needs_sources:
            f = w.structure()
            for lid in needs_groups:
                fmt.create_class(f, lid, names[lid], self._default_codec)
                self._class_codecs[names[lid]] = self._default_codec
            for key in new_keys:
                fmt.create_stack(f, f[fmt.CLASSES][fmt.safe_name(names[key[0]])], *key[1:],
                                 self.codec_of(names[key[0]]))
            n_rows = len(self._index)
            if needs_scores:
                fmt.ensure_scores(f, n_rows, batch.vectors.shape[1])
            if needs_sources:
                fmt.ensure_sources(f, n_rows)
            w.flush()

        f = w.data()
        if batch.new_labels:
            self._append_labels(f, batch.new_labels)
        for key in new_keys:
            self._append_stack_row(f, key)
        n0, n = len(self._index), len(batch.keys)
        stack_ids = [self._stack_ids[key] for key in batch.keys]
        groups: dict[int, list[int]] = {}
        for k, sid in enumerate(stack_ids):
            groups.setdefault(sid, []).append(k)
        handles = {sid: w.stack(sid, self._stacks[sid].path) for sid in groups}
        positions = np.zeros(n, dtype=np.int64)
        for sid, members in groups.items():
            start = self._stacks[sid].length
            positions[members] = np.arange(start, start + len(members))
            w.extend_stack(handles[sid], start + len(members))
        # Chunks are written as the encoder threads deliver them, in image order.
        writers = [w.chunk_writer(handles[sid]) if sid in handles else None for sid in range(max(groups) + 1)]
        offsets = [0] * n
        payloads: list[bytes] = []
        crcs: list[int] = []
        for k, (payload, crc), sid, position in zip(range(n), encoded, stack_ids, positions.tolist()):
            offsets[k] = writers[sid](position, payload)
            payloads.append(payload)
            crcs.append(crc)
        offsets = np.array(offsets, dtype=np.uint64)
        w.flush()
        for sid, members in groups.items():
            predicted = offsets[members].tolist()
            w.confirm_offsets(self._mapped, handles[sid], positions[members].tolist(),
                              [payloads[k] for k in members], predicted)
            offsets[members] = predicted
        if batch.vectors is not None:
            ds = w.dataset(fmt.SCORES)
            ds.resize(max(ds.shape[0], n0 + n), axis=0)
            ds[n0 : n0 + n] = batch.vectors
        if batch.sources is not None:
            ds = w.dataset(fmt.SOURCES)
            ds.resize(max(ds.shape[0], n0 + n), axis=0)
            ds[n0 : n0 + n] = batch.sources

        rows = np.zeros(n, dtype=fmt.INDEX_DTYPE)
        rows["id"] = batch.ids
        rows["label"] = batch.label_ids
        rows["true_label"] = batch.true_ids
        rows["score"] = batch.top1
        rows["stack"] = stack_ids
        rows["position"] = positions
        rows["height"] = [key[1] for key in batch.keys]
        rows["width"] = [key[2] for key in batch.keys]
        rows["channels"] = [key[3] for key in batch.keys]
        rows["dtype"] = [key[4] for key in batch.keys]
        rows["codec"] = [self._stacks[sid].codec.codec_id for sid in stack_ids]
        rows["nbytes"] = [len(p) for p in payloads]
        rows["crc32"] = crcs
        rows["offset"] = offsets
        rows["batch_end"][-1] = 1
        w.append_rows(rows)

        self._index.append(rows)
        for sid, members in groups.items():
            self._stacks[sid].length += len(members)
        self._dirty_labels.update(np.unique(batch.label_ids).tolist())
        return batch.ids.copy()

    def _append_stack_row(self, f: h5py.File, key: tuple[int, int, int, int, str]) -> None:
        label, height, width, channels, dtype = key
        codec = self.codec_of(self._labels[label])
        table = self._writer.dataset(fmt.STACKS)
        row = np.zeros(1, dtype=fmt.STACKS_DTYPE)
        row["label"], row["height"], row["width"], row["channels"] = label, height, width, channels
        row["dtype"], row["codec"] = dtype, codec.codec_id
        row["codec_config"] = fmt.codec_config_json(codec)
        table.resize(table.shape[0] + 1, axis=0)
        table[-1] = row[0]
        path = fmt.stack_path(self._labels[label], height, width, channels, dtype)
        self._stacks.append(_Stack(label, height, width, channels, dtype, codec, path))
        self._decoders.append(self._stacks[-1].decode)
        self._stack_ids[key] = len(self._stacks) - 1

    # ------------------------------------------------------------------ deleting

    @_writes
    def delete(self, ids: int | Sequence[int]) -> None:
        """Mark images deleted: they vanish from lookups, queries and iteration. Their bytes
        stay in the file (HDF5 never shrinks a file in place)."""
        w = self._check_writable()
        rows = self._index.rows_of(np.atleast_1d(np.asarray(ids)))
        if not len(rows):
            return
        self._ensure_log_ready()
        w.data()
        updated = self._index.take(rows)
        updated["deleted"] = 1
        for r, row in zip(rows.tolist(), updated):
            w.write_row(r, row)
        w.flush()
        self._index.mark_deleted(rows)
        self._dirty_labels.update(np.unique(updated["label"]).tolist())

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
    # no lock, so threads decode in parallel.

    def _payload(self, row: int) -> memoryview:
        index = self._index
        offset, nbytes = index.offsets[row], index.nbytes[row]
        view = self._mapped.view
        if offset + nbytes > len(view):
            view = self._mapped.ensure(offset + nbytes)
        return view[offset : offset + nbytes]

    def _decode(self, row: int) -> np.ndarray:
        return self._decoders[self._index.stacks[row]](self._payload(row))

    def __getitem__(self, image_id: int) -> np.ndarray:
        """The decoded image with this id."""
        # _decode and row_of inlined: every call here holds the GIL, which bounds how well
        # threads that read in parallel scale.
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
        return self._decoders[index.stacks[row]](view[offset:end])

    def get_batch(self, ids: Sequence[int], *, out: np.ndarray | None = None) -> list[np.ndarray] | np.ndarray:
        """Decoded images for many ids (decoded in parallel threads), in the order given.

        With ``out``, an array of shape (len(ids), H, W[, C]) and the images' dtype, the
        images are decoded straight into it (no per-image allocation; JPEG writes in place)
        and ``out`` is returned; every image must have that shape.
        """
        self._check_open()
        rows = self._index.rows_of(ids)
        if out is None:
            return thread_map(self._decode, rows.tolist())
        if out.shape[0] != len(rows) or not out.flags.c_contiguous:
            raise InvalidInputError(f"out must be C-contiguous with {len(rows)} images along axis 0")
        index = self._index

        def decode_into(k: int) -> None:
            row = int(rows[k])
            stack = self._stacks[index.stacks[row]]
            shape = image_shape(stack.height, stack.width, stack.channels)
            if out.shape[1:] != shape or out.dtype != np.dtype(stack.dtype):
                raise InvalidInputError(
                    f"image {int(index.column('id')[row])} is {shape} {stack.dtype}; "
                    f"out holds {out.shape[1:]} {out.dtype}"
                )
            stack.codec.decode_into(self._payload(row), out[k])

        thread_map(decode_into, range(len(rows)))
        return out

    def get_encoded(self, image_id: int) -> bytes:
        """The stored payload of one image: the codec's stream (a JPEG file for 'jpeg')."""
        self._check_open()
        return bytes(self._payload(self._index.row_of(image_id)))

    def record(self, image_id: int) -> Record:
        """Metadata of one image."""
        self._check_open()
        row = self._index.row_of(image_id)
        r = self._index.take([row])[0]
        true = int(r["true_label"])
        score = float(r["score"])
        stack = self._stacks[int(r["stack"])]
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
            source=self._aligned(fmt.SOURCES, row),
            scores=self._aligned(fmt.SCORES, row),
            stack=stack.path,
            position=int(r["position"]),
        )

    def _aligned(self, name: str, row: int) -> Any:
        with fmt.damage_reported(self.path):
            return self._aligned_value(name, row)

    def _aligned_value(self, name: str, row: int) -> Any:
        f = self._file
        if name not in f or row >= f[name].shape[0]:
            return None
        if name == fmt.SOURCES:
            value = fmt.read_source(f[name], row, os.path.getsize(self.path))
        else:
            value = f[name][row]
        if name == fmt.SOURCES:
            value = value.decode("utf-8") if isinstance(value, bytes) else value
            return value or None
        return None if np.isnan(value).all() else value

    # ------------------------------------------------------------------ queries

    def _label_id(self, label: str | int, what: str) -> int:
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            if 0 <= label < len(self._labels):
                return int(label)
        elif isinstance(label, str) and label in self._label_ids:
            return self._label_ids[label]
        raise InvalidInputError(f"{what} {label!r} is not a label of this store")

    def query(self, *, label: str | int | Sequence[str | int] | None = None,
              true_label: str | int | Sequence[str | int] | None = None,
              min_score: float | None = None, max_score: float | None = None,
              correct: bool | None = None) -> np.ndarray:
        """Ids of live images matching every condition given, in insertion order.

        ``label``/``true_label`` take one label or several (any of them match). Score bounds
        are inclusive and never match images stored without a score. ``correct=False`` gives
        the misclassified images with a known true label.

        Example, confident but wrong: ``store.query(min_score=0.9, correct=False)``.
        """
        self._check_open()

        def ids_of(value, what):
            if value is None:
                return None
            values = [value] if isinstance(value, (str, int, np.integer)) else list(value)
            return np.array([self._label_id(v, what) for v in values], dtype=np.int64)

        return self._index.query(
            label=ids_of(label, "label"),
            true_label=ids_of(true_label, "true_label"),
            min_score=min_score,
            max_score=max_score,
            correct=correct,
        )

    @property
    def index(self) -> np.ndarray:
        """A copy of the index table (deleted rows included, flagged) as a structured array."""
        self._check_open()
        return self._index.take()

    def to_pandas(self, *, include_deleted: bool = False):
        """The index as a pandas DataFrame with label names resolved (requires pandas)."""
        import pandas as pd

        rows = self._index.take(None if include_deleted else self._index.live_mask())
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
        if include_deleted:
            frame["deleted"] = rows["deleted"].astype(bool)
        return frame

    # ------------------------------------------------------------------ integrity

    def verify(self) -> VerifyReport:
        """Recompute the CRC-32 of every stored image (deleted ones too) and check every cached
        chunk offset against HDF5's chunk index. Damaged images are named; the rest stay
        readable."""
        self._check_open()
        report = VerifyReport()
        rows = self._index.take()
        for k, stack in enumerate(self._stacks):
            where = np.flatnonzero(rows["stack"] == k)
            if not len(where):
                continue
            found = self._chunk_locations(stack)
            for r in where.tolist():
                row = rows[r]
                location = found.get(int(row["position"]))
                if location is None or location != (int(row["offset"]), int(row["nbytes"])):
                    report.misplaced.append(int(row["id"]))
        for r in range(len(rows)):
            report.checked += 1
            if not self._row_intact(r):
                report.damaged.append(int(rows["id"][r]))
        return report

    # ------------------------------------------------------------------ summary

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: images, classes, payload bytes, file bytes."""
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
        }


def open(path: str | os.PathLike, mode: str = "r", *, codec: str | Codec = "jpeg", quality: int = 90,
         labels: Sequence[str] | None = None, locking: bool | str | None = None,
         **codec_options: Any) -> ImageStore:
    """Open or create an h5store file; use as a context manager.

    Modes as in h5py: ``r`` read only (default), ``r+`` read/write an existing store, ``a``
    read/write, creating it if missing, ``w`` create (truncating any existing file), ``x``
    create, failing if it exists. ``codec``, ``quality`` and ``codec_options`` are the
    defaults for classes created from now on; existing classes keep their codec. ``quality``
    (1-100) applies to lossy codecs and is ignored by lossless ones. ``labels`` declares class
    names in order (needed for integer labels and score vectors).

    ``locking`` (see the README on NFS and Lustre): for readers, HDF5's file-locking switch as
    in ``h5py.File``; None (default) opens without HDF5's lock, or with whatever setting this
    process already has the file open with through h5py. For writers, the writer lock
    (``flock``) h5store takes instead of HDF5's: None or True require it, 'best-effort' skips
    it with a warning where the file system has no ``flock``, False skips it (you guarantee a
    single writer).
    """
    return ImageStore(path, mode, codec=codec, quality=quality, labels=labels, locking=locking,
                      **codec_options)
