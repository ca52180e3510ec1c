"""The commit protocol and the objects it makes: class and stack creation, labels, deletion and
previews. Every way images enter a store (``add*``, import, merge, repack) reaches the file
through :meth:`StoreWriter.commit`; there is no second one.

A batch arrives here validated (``_ingest.py``: every image's class, stack and codec decided,
nothing written, so a bad batch leaves the file byte-for-byte as it was). It is *committed* by
the protocol described in ``_file.py``: new objects are created in a short SWMR-off epoch,
chunks are written and flushed, then the index rows whose last one carries the commit flag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from . import _inputs, _recovery, _sources
from . import format as fmt
from ._catalog import Catalog, StackKey
from ._file import WriterFile, read_committed_rows
from ._imaging import contact_sheet, thumbnail
from ._index import Index
from ._parallel import thread_map
from ._previews import PreviewJob, PreviewTiles
from .codecs import Codec, get_codec
from .errors import (
    FormatError,
    InvalidInputError,
    UnrepairableError,
)


@dataclass
class Batch:
    """A validated batch, ready to commit; preparing one writes nothing."""

    label_ids: np.ndarray
    true_ids: np.ndarray
    top1: np.ndarray
    vectors: np.ndarray | None
    ids: np.ndarray
    sources: list[str] | None
    #: the distinct stacks the batch goes to, and for each image the position of its stack in
    #: that list: per-stack work (codec checks, creation, chunk writers) runs once per stack.
    keys: list[StackKey]
    key_of_image: np.ndarray
    new_labels: list[str]
    #: the codec of each entry of ``keys``
    codecs: list[Codec] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def label_name(self, label_id: int, known: list[str]) -> str:
        return known[label_id] if label_id < len(known) else self.new_labels[label_id - len(known)]


# --------------------------------------------------------------------------- the writer


def open_writer_file(path: str, mode: str, locking: object = None) -> tuple[WriterFile, list[str]]:
    """Open (or create) a store for writing; if a dead writer left it open, remove what it left
    half made. Returns the file and the paths removed."""
    writer = WriterFile(path, mode, locking)
    removed: list[str] = []
    if writer.recovered:
        f = writer.f
        try:
            committed = read_committed_rows(f)
            _check_within_old_end(writer, committed)
            removed = _recovery.remove_unreferenced_structure(f, fmt.read_labels(f), committed)
        except (FormatError, KeyError, RuntimeError, OSError) as exc:
            if writer.extended_from is not None:  # the file was short: leave it as it was
                writer.undo_extension()
                writer.close()
                raise FormatError(
                    f"{path} is truncated (shorter than HDF5 recorded) and cannot be "
                    f"recovered: {exc}"
                ) from exc
            writer.close()
            if isinstance(exc, FormatError):
                raise
            # A writer killed while HDF5 flushed a new group or stack can leave group metadata
            # half written, which HDF5 can neither read nor unlink.
            raise UnrepairableError(
                f"{path}: a writer was killed while creating a class or stack and left HDF5 "
                f"metadata that cannot be repaired in place ({exc}); open it with mode 'r' to "
                "read the committed images, or export them to a new store"
            ) from exc
        f.flush()
    return writer, removed


def _check_within_old_end(writer: WriterFile, rows: np.ndarray) -> None:
    """Recovery extended a short file to HDF5's recorded end: fine when only uncommitted
    writes were lost (a full disk), not when committed images lay there (a file cut short by
    a copy): then the file gets its size back and the error says so."""
    old_end = writer.extended_from
    if old_end is None or not len(rows):
        return
    ends = rows["offset"].astype(np.int64) + rows["nbytes"].astype(np.int64)
    beyond = int(np.count_nonzero(ends > old_end))
    if beyond:
        raise FormatError(
            f"{beyond} committed images lie past its end ({old_end} bytes): it was cut short; "
            "restore it from the original (mode 'r' reads the rest)"
        )


class StoreWriter:
    """The write session of one open store: owns the writer file, shares the catalogue and the
    index with the reading side, and keeps both in step with what it commits."""

    def __init__(
        self,
        file: WriterFile,
        catalog: Catalog,
        index: Index,
        default_codec: Codec,
        read_images: Callable[[np.ndarray], list[np.ndarray]],
    ):
        self.file = file
        self.catalog = catalog
        catalog.keep_absent_classes()
        self.index = index
        self.default_codec = default_codec
        self._read_images = read_images  # for previews
        self.preview_tiles = PreviewTiles(self._live_counts)
        self._log_ready = False
        #: classes whose count and preview change when the session finishes
        self.dirty_labels: set[int] = set()
        #: declared with add_labels, in the catalogue, not yet in /labels
        self.unwritten_labels: list[str] = []
        #: labels were declared in this session: the set is closed (add_labels extends it)
        self.labels_declared = False

    def _live_counts(self) -> np.ndarray:
        live = self.index.live_mask()
        return np.bincount(self.index.column("label")[live], minlength=len(self.catalog.labels))

    @property
    def has_pending_work(self) -> bool:
        return self._log_ready or bool(self.dirty_labels) or bool(self.unwritten_labels)

    def stored_score_width(self) -> int | None:
        f = self.file.f
        return f[fmt.SCORES].shape[1] if fmt.SCORES in f else None

    def codec_of(self, label: str) -> Codec:
        return self.catalog.class_codec(label) or self.default_codec

    # ------------------------------------------------------------------ labels and classes

    def add_labels(self, names: Sequence[str]) -> list[int]:
        names = [_inputs.check_label(n, f"label {k}") for k, n in enumerate(names)]
        self.labels_declared = self.labels_declared or bool(names)
        new = [n for n in dict.fromkeys(names) if n not in self.catalog.label_ids]
        if new:
            self._ensure_log_ready()
            # Written with the next batch (or at close): a store opened with labels= would
            # otherwise enter SWMR mode for them, only to reopen the file to leave it again for
            # the first batch's classes. Labels mean nothing to a reader before an image has one.
            for name in new:
                self.catalog.add_label(name)
            self.unwritten_labels.extend(new)
        return [self.catalog.label_ids[n] for n in names]

    def _append_labels(self, names: list[str]) -> None:
        """Write the labels declared but not written yet, then ``names`` (new to the catalogue)."""
        for name in names:
            self.catalog.add_label(name)
        names = [*self.unwritten_labels, *names]
        if not names:
            return
        self.file.swmr_on()
        ds = self.file.dataset(fmt.LABELS)
        start = ds.shape[0]
        ds.resize(start + len(names), axis=0)
        ds[start:] = np.array([n.encode("utf-8") for n in names], dtype=fmt.LABEL_DTYPE)
        self.unwritten_labels.clear()

    def create_class(self, label: str, codec: Codec) -> None:
        existing = self.catalog.class_codec(label)
        if existing is not None:
            if existing != codec:
                raise InvalidInputError(f"class {label!r} exists already with codec {existing!r}")
            return
        self._ensure_log_ready()
        lid = self.catalog.label_ids.get(label, len(self.catalog.labels))
        f = self.file.swmr_off()
        links = fmt.PendingLinks()
        fmt.create_class(f, lid, label, codec, links)
        links.link_all(f)
        self.catalog.set_class_codec(label, codec)
        self._append_labels([] if label in self.catalog.label_ids else [label])
        self.file.flush()

    # ------------------------------------------------------------------ adding

    def adopt_labels(self, names: list[str]) -> None:
        """Labels a validated batch introduced: in the catalogue now, so that the next call
        sees them; in /labels with the next commit."""
        for name in names:
            self.catalog.add_label(name)
        self.unwritten_labels.extend(names)

    def _ensure_log_ready(self) -> None:
        if not self._log_ready:
            self.file.load_row_log(self.index.take())
            self._log_ready = True

    def start_previews(
        self, batch: Batch, originals: Sequence[Any], now: bool = False
    ) -> PreviewJob:
        """Begin the thumbnails of the batch's images that its classes' previews will show,
        from ``originals`` (each image's pixels, or its payload, decoded for it): on the
        background thread, or ``now`` (pixels the caller may reuse once its call returns).
        Called as each batch is accepted, in the order they are committed in."""
        return self.preview_tiles.start(
            batch.label_ids, batch.ids, _pixels_of(batch, originals), now=now
        )

    def commit(
        self,
        batch: Batch,
        encoded: Iterable[tuple[bytes, int]],
        previews: Sequence[PreviewJob] = (),
    ) -> np.ndarray:
        """Write a prepared batch whose (payload, crc32) pairs ``encoded`` yields in order.
        ``previews``: its parts' thumbnails (:meth:`start_previews`), kept once it commits."""
        w = self.file
        catalog = self.catalog
        self._ensure_log_ready()
        f = w.f
        new_keys = list(dict.fromkeys(k for k in batch.keys if k not in catalog.stack_ids))
        names = {k.label: batch.label_name(k.label, catalog.labels) for k in new_keys}
        needs_groups = sorted(
            {lid for lid, name in names.items() if catalog.class_codec(name) is None}
        )
        # Once a store has /scores or /sources, every batch writes its rows there (NaN and ""
        # where it gives none): rows an uncommitted batch of a dead writer left in them must
        # not become this batch's. /source_crc32 goes wherever /sources goes.
        with_scores = batch.vectors is not None or fmt.SCORES in f
        with_sources = batch.sources is not None or fmt.SOURCES in f
        # the width of the /scores this batch creates (None: it creates none)
        new_scores_k = (
            batch.vectors.shape[1] if batch.vectors is not None and fmt.SCORES not in f else None
        )
        needs_scores = new_scores_k is not None
        needs_sources = with_sources and fmt.needs_sources(f)
        first_sources = with_sources and fmt.SOURCES not in f
        # Objects can only be created with SWMR off, and a writer killed then can leave them
        # half written; so this epoch creates objects only, and everything that makes them
        # part of the store (labels, /stacks rows, index rows) is written afterwards with
        # SWMR on. Recovery removes objects nothing refers to.
        if new_keys or needs_scores or needs_sources:
            f = w.swmr_off()
            links = fmt.PendingLinks()
            groups = {}
            for lid in needs_groups:
                groups[lid] = fmt.create_class(f, lid, names[lid], self.default_codec, links)
                catalog.set_class_codec(names[lid], self.default_codec)
            for key in new_keys:
                group = groups.get(key.label)
                if group is None:
                    group = f[fmt.CLASSES][fmt.safe_name(names[key.label])]
                fmt.create_stack(
                    f,
                    group,
                    key.height,
                    key.width,
                    key.channels,
                    key.dtype,
                    self.codec_of(names[key.label]),
                    links,
                )
            n_rows = len(self.index)
            if new_scores_k is not None:
                k = new_scores_k
                columns = [batch.label_name(j, catalog.labels) for j in range(k)]
                checked = fmt.has_checks(w.version)
                fmt.ensure_scores(f, n_rows, k, links, columns if checked else None)
            if needs_sources:
                fmt.ensure_sources(f, n_rows, links)
            links.link_all(f)
            w.flush()

        f = w.swmr_on()
        self._append_labels(batch.new_labels)
        if new_keys:
            self._append_stack_rows(f, new_keys)
        n0, n = len(self.index), len(batch)
        key_of_image = batch.key_of_image
        key_stacks = [catalog.stack_ids[key] for key in batch.keys]
        stack_ids = np.array(key_stacks, dtype=np.int64)[key_of_image]
        # Images of one stack, in batch order: a stable sort by stack puts them together.
        order = np.argsort(key_of_image, kind="stable")
        bounds = np.searchsorted(key_of_image[order], np.arange(len(batch.keys) + 1))
        members = [order[bounds[i] : bounds[i + 1]] for i in range(len(batch.keys))]
        handles = [w.stack(sid, catalog.stacks[sid].path) for sid in key_stacks]
        positions = np.zeros(n, dtype=np.int64)
        rewritten = np.zeros(n, dtype=bool)
        for number, sid in enumerate(key_stacks):
            start = catalog.stacks[sid].length
            positions[members[number]] = np.arange(start, start + len(members[number]))
            written = w.extend_stack(sid, start + len(members[number]))
            rewritten[members[number][: max(0, written - start)]] = True
        # Chunks are written as the encoder threads deliver them, in image order.
        stack_of_image, position_list = key_of_image.tolist(), positions.tolist()
        marks, payloads, crcs = w.write_chunks(handles, stack_of_image, position_list, encoded)
        if len(payloads) != n:
            raise InvalidInputError(f"{len(payloads)} payloads for a batch of {n} images")
        if with_scores:
            checks = w.dataset(fmt.SCORE_CRC32) if fmt.SCORE_CRC32 in f else None  # (1.2)
            fmt.write_scores(
                w.dataset(fmt.SCORES), checks, n0, n, batch.vectors, created=needs_scores
            )
        if with_sources:
            sources = [""] * n if batch.sources is None else batch.sources
            ds = w.dataset(fmt.SOURCES)
            ds.resize(max(ds.shape[0], n0 + n), axis=0)
            _sources.null_source_references(ds, n0, n0 + n)
            ds[n0 : n0 + n] = sources
            if fmt.SOURCE_CRC32 in f:  # (not in a format-1.0 file)
                checks = w.dataset(fmt.SOURCE_CRC32)
                checks.resize(max(checks.shape[0], n0 + n), axis=0)
                checks[n0 : n0 + n] = [fmt.source_check(s.encode("utf-8")) for s in sources]
                if first_sources and n0:
                    # The rows before have no source: checked as such, a damaged reference
                    # that reads another row's source there is caught too.
                    checks[:n0] = fmt.source_check(b"")
        # Chunks, score vectors and sources reach the disk in this flush, before the index
        # rows that commit them in the next: written in one flush, HDF5 could order the rows
        # first (a kill in between committed images whose sources read as none).
        w.flush()
        nbytes = np.fromiter(map(len, payloads), np.int64, n)
        offsets = w.locate_chunks(
            handles, stack_of_image, position_list, payloads, nbytes, marks, rewritten
        )

        rows = np.zeros(n, dtype=fmt.INDEX_DTYPE)
        rows["id"] = batch.ids
        rows["label"] = batch.label_ids
        rows["true_label"] = batch.true_ids
        rows["score"] = batch.top1
        rows["stack"] = stack_ids
        rows["position"] = positions
        for column in ("height", "width", "channels", "dtype"):
            rows[column] = np.array([getattr(key, column) for key in batch.keys])[key_of_image]
        rows["codec"] = np.array([codec.codec_id for codec in batch.codecs])[key_of_image]
        rows["nbytes"] = nbytes
        rows["crc32"] = crcs
        rows["offset"] = offsets
        rows["batch_end"][-1] = 1
        w.append_rows(rows)

        self.index.append(rows)
        for number, sid in enumerate(key_stacks):
            catalog.stacks[sid].length += len(members[number])
        self.dirty_labels.update(np.unique(batch.label_ids).tolist())
        for job in previews:
            self.preview_tiles.keep(job)
        return batch.ids.copy()

    def _append_stack_rows(self, f: h5py.File, keys: list[StackKey]) -> None:
        table = self.file.dataset(fmt.STACKS)
        rows = np.zeros(len(keys), dtype=fmt.STACKS_DTYPE)
        codecs = [self.codec_of(self.catalog.labels[key.label]) for key in keys]
        for row, key, codec in zip(rows, keys, codecs):
            row["label"], row["height"], row["width"] = key.label, key.height, key.width
            row["channels"], row["dtype"], row["codec"] = key.channels, key.dtype, codec.codec_id
            row["codec_config"] = fmt.codec_config_json(codec)
        start = table.shape[0]
        table.resize(start + len(keys), axis=0)
        table[start:] = rows
        for key, codec in zip(keys, codecs):
            self.catalog.add_stack(key, codec)

    # ------------------------------------------------------------------ deleting

    def delete(self, rows: np.ndarray) -> None:
        self._ensure_log_ready()
        w = self.file
        w.swmr_on()
        updated = self.index.take(rows)
        updated["deleted"] = 1
        for r, row in zip(rows.tolist(), updated):
            w.write_row(r, row)
        w.flush()
        self.index.mark_deleted(rows)
        self.dirty_labels.update(np.unique(updated["label"]).tolist())

    # ------------------------------------------------------------------ finishing

    def finish(self) -> None:
        """At close: one complete index table, stacks trimmed to what was committed, class
        counts and previews brought up to date."""
        w = self.file
        if self.unwritten_labels:
            self._append_labels([])
            w.flush()
        w.seal_row_log()  # first: it extends /index with SWMR on
        f = w.swmr_off()
        fmt.record_committed_rows(f, len(self.index))
        for stack in self.catalog.stacks:
            ds = f[stack.path]
            if ds.shape[0] > stack.length:  # chunks of a batch that failed after writing them
                ds.resize(stack.length, axis=0)
        if self.dirty_labels:
            counts = self._live_counts()
            for label in sorted(self.dirty_labels):
                group = f[fmt.CLASSES].get(fmt.safe_name(self.catalog.labels[label]))
                if group is not None:
                    group.attrs["count"] = np.uint64(counts[label])
            f.flush()
            self.draw_previews(f, sorted(self.dirty_labels))
        f.flush()

    def draw_previews(self, f: h5py.File, labels: list[int]) -> None:
        live_labels = self.index.column("label")
        live = self.index.live_mask()
        ids = self.index.column("id")
        links = fmt.PendingLinks()
        previews_root: list[h5py.Group] = []
        changed: dict[str, np.ndarray] = {}
        for label in labels:
            name = self.catalog.labels[label]
            if fmt.safe_name(name) not in f[fmt.CLASSES]:
                continue
            shown = ids[np.flatnonzero(live & (live_labels == label))[: fmt.PREVIEW_IMAGES]]
            current = fmt.preview_ids(f, name)
            if current is None or not np.array_equal(current, shown):
                changed[name] = shown
        # Thumbnails drawn while their batches were written; the rest read back and drawn in
        # one parallel call.
        wanted = np.concatenate([np.zeros(0, np.int64), *changed.values()]).tolist()
        cached = {i: self.preview_tiles.get(i) for i in wanted}
        missing = np.array([i for i, tile in cached.items() if tile is None], dtype=np.int64)
        tiles = {i: tile for i, tile in cached.items() if tile is not None}
        if len(missing):
            images = self._read_images(missing)
            drawn = thread_map(lambda image: thumbnail(image, fmt.PREVIEW_SIDE), images)
            tiles.update(zip(missing.tolist(), drawn))
        for name, shown in changed.items():
            sheet = contact_sheet(
                [tiles[i] for i in shown.tolist()], fmt.PREVIEW_SIDE, fmt.PREVIEW_COLUMNS
            )
            fmt.write_preview(f, name, sheet, shown, links, previews_root)
        links.link_all(f)

    def rebuild_previews(self) -> None:
        f = self.file.swmr_off()
        if fmt.PREVIEWS in f:
            del f[fmt.PREVIEWS]
        self.draw_previews(f, list(range(len(self.catalog.labels))))
        f.flush()


def _pixels_of(batch: Batch, originals: Sequence[Any]) -> Callable[[int], np.ndarray]:
    """Image k's pixels, decoding it with its stack's codec where ``originals`` holds payloads."""
    decoders: dict[int, Callable[[Any], np.ndarray]] = {}

    def pixels(k: int) -> np.ndarray:
        item = originals[k]
        if isinstance(item, np.ndarray):
            return item
        number = int(batch.key_of_image[k])
        if number not in decoders:
            decoders[number] = batch.keys[number].decoder(batch.codecs[number])
        return decoders[number](item)

    return pixels


def chosen_codec(
    default: Codec, codec: str | Codec | None, quality: int | None, codec_options: dict[str, Any]
) -> Codec:
    """The codec ``create_class`` means: the store default unless anything is given."""
    if codec is None and quality is None and not codec_options:
        return default
    base = codec if codec is not None else default.codec_id
    return get_codec(base, quality=quality, **codec_options)
