"""The read engine: how an open store turns ids into checked bytes and pixels.

One :class:`ReadEngine` per open store (reader or writer) holds what every read needs: the
store's bytes (a :class:`~h5store._source.ByteSource`: a memory map of a local file, or a
remote object), the HDF5 handle for the few datasets read through HDF5 (score vectors,
sources, the chunk index that ``verify`` compares with), the index, and each stack's decoder.
:class:`~h5store.ImageStore` holds it as it holds its writer, and the sharded view, merge and
repack read shards through it.

The read path is a few Python-int lookups and a slice of the bytes: no HDF5 call and no lock,
so threads decode in parallel. Every payload is checked against its CRC-32 before it is
decoded or returned (unless the store was opened with ``verify_reads=False``): a damaged
chunk would otherwise decode to wrong pixels without any error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, overload

import h5py
import numpy as np

from . import _inputs, _offsets, _sources
from . import format as fmt
from ._catalog import Catalog, Stack
from ._file import MappedFile, read_committed_index
from ._index import Index
from ._parallel import decode_threads, thread_map
from ._source import Buffer, ByteSource
from .errors import DamagedImageError, InvalidInputError, RemoteReadError, UnknownIdError
from .format import crc32

#: Rows whose payloads ``verify`` fetches in one round (one request each, merged, remotely).
VERIFY_BLOCK_ROWS = 256


class ReadEngine:
    """Index, catalogue and bytes of one open store, and the reads over them.

    ``file`` returns the store's HDF5 handle as it is open now (a writer reopens its file
    when it leaves SWMR mode, so the engine holds no handle of its own). ``new_file``: the
    layout was just made and has no rows. ``writer``: this engine reads for the store's
    writer, which appends to the index and stacks it loads.
    """

    def __init__(
        self,
        source: ByteSource,
        file: Callable[[], h5py.File],
        *,
        verify: bool,
        bgr: bool,
        new_file: bool = False,
        writer: bool = False,
    ):
        self.source = source
        self.name = source.name
        self._file = file
        self.verify = verify
        self.bgr = bgr
        # A local map is sliced inline on the hot paths below: every call there holds the
        # GIL, which bounds how well threads that read in parallel scale (each function call
        # costs ~0.1 us of a ~0.6 us budget at 32 px). A remote source answers through read().
        self._mapped = source if isinstance(source, MappedFile) else None
        #: heap collections of /sources found intact, by address: the CRC-32 of their bytes
        self._checked_heaps: dict[int, int] = {}
        with fmt.damage_reported(self.name):
            self._load(file(), new_file, writer)

    @property
    def file(self) -> h5py.File:
        return self._file()

    def _load(self, f: h5py.File, new_file: bool, writer: bool) -> None:
        # The index rows first, then the catalogue: the reverse of the order a writer writes
        # them, so everything the rows read refer to is on disk when it is read.
        tables = None
        if new_file:
            self.index, fit = Index(), True
        else:
            # Each block of rows is checked as it is decoded, against the /stacks and /labels
            # read before the rows; rows that do not fit them (or name a stack a writer added
            # since) are checked one by one against the catalogue read after.
            tables = fmt.read_stacks(f), fmt.read_labels(f)
            fits = fmt.RowsFit(tables[0], len(tables[1]))
            # (a remote source reads the tail and /index each anew: see _remote.RemoteFile)
            fresh = getattr(self.source, "fresh", None)
            # (a writer's index makes its rows at once: it appends to them and rewrites them)
            self.index, fit = read_committed_index(
                f, self.source, fits, fresh, unread_rows=not writer
            )
        fmt.check_committed_rows(f, len(self.index), self.name)
        #: the file carries the checks of format 1.2 (/score_crc32, class cross-checks)
        self.checked = fmt.has_checks(fmt.file_version(f))
        # Rows that all fit the tables read before them name no stack or class beyond those
        # tables, which then serve as the catalogue: a writer only ever appends to them, so
        # reading them again would add only what no row read refers to (a reader sees it at
        # its next refresh). Rows that do not fit are checked against the tables read anew.
        self.catalog = catalog = Catalog(
            f, self.class_group, checked=self.checked, tables=tables if fit else None
        )
        if fit:
            # Ids the index found consecutive as it took the rows are distinct: a second look
            # at every id (200,000 comparisons) is only needed for any other sequence.
            if not self.index.ids_consecutive:
                fmt.check_unique_ids(self.index.column("id"), self.name)
        else:
            fmt.check_rows(self.index.take(), catalog.table, len(catalog.labels), self.name)
        if writer:  # only a writer appends to the stacks
            catalog.set_lengths(self.index.column("stack"), self.index.column("position"))
        # The read path indexes this list for every image; the writer's new stacks append to it.
        self.decoders = catalog.decoders
        _offsets.check_and_rebuild(f, self.index, self.source, self.stacks)
        # A reader's map is populated once the open is done: started earlier, the helper
        # thread competed with the rest of the open for a core (54 against 62-64 ms for a
        # 200,000-image open under load). A byte source other than a local map has nothing
        # to populate.
        populate = getattr(self.source, "populate", None)
        if populate is not None:
            populate()

    def class_group(self, label: str) -> h5py.Group | None:
        return self.file[fmt.CLASSES].get(fmt.safe_name(label))

    @property
    def labels(self) -> list[str]:
        return self.catalog.labels

    @property
    def stacks(self) -> list[Stack]:
        return self.catalog.stacks

    def close(self) -> None:
        self.source.close()

    # ------------------------------------------------------------------ one image

    def payload(self, row: int) -> Buffer:
        """The checked stored bytes of index row ``row``."""
        index = self.index
        offset, nbytes = index.offsets[row], index.nbytes[row]
        payload = self.source.read(offset, nbytes)
        if self.verify and crc32(payload) != index.crcs[row]:
            raise self.damaged(row)
        return payload

    def damaged(self, row: int, refused: DamagedImageError | None = None) -> DamagedImageError:
        """The error naming row ``row``'s image: its CRC-32 failed, or its decoder refused the
        payload (``refused``: a header or a decoded shape that disagrees with the index)."""
        image_id = int(self.index.column("id")[row])
        if refused is not None and refused.image_id is None:
            return DamagedImageError(f"image {image_id} in {self.name}: {refused}", image_id)
        if refused is not None:
            return refused
        return DamagedImageError(
            f"image {image_id} in {self.name} is damaged: its stored bytes do not match the "
            "CRC-32 recorded when it was written (the store's other images are unaffected; "
            "verify() lists every damaged image)",
            image_id,
        )

    def decode(self, row: int, payload: Buffer | None = None) -> np.ndarray:
        """The pixels of index row ``row`` (from ``payload``, its checked bytes, if fetched)."""
        try:
            return self.decoders[self.index.stacks[row]](
                self.payload(row) if payload is None else payload
            )
        except DamagedImageError as exc:
            raise self.damaged(row, exc) from None

    def live_row(self, image_id: Any) -> int:
        """The index row of a live image; UnknownIdError if there is none."""
        index = self.index
        row = index.find(image_id)
        if row < 0 or index.deleted[row]:
            raise UnknownIdError(f"no image with id {image_id!r} in the store")
        return row

    def image(self, image_id: Any) -> np.ndarray:
        """The decoded image with this id, in the engine's channel order."""
        # payload() and decode() inlined for a local map (see __init__).
        index, mapped = self.index, self._mapped
        row = index.find(image_id)
        if row < 0 or index.deleted[row]:
            raise UnknownIdError(f"no image with id {image_id!r} in the store")
        offset = index.offsets[row]
        end = offset + index.nbytes[row]
        if mapped is None:
            payload: Buffer = self._read_remote(offset, end - offset, image_id)
        else:
            view = mapped.view
            if end > len(view):
                view = mapped.ensure(end)
            payload = view[offset:end]
        if self.verify and crc32(payload) != index.crcs[row]:
            raise self.damaged(row)
        try:
            image = self.decoders[index.stacks[row]](payload)
        except DamagedImageError as exc:  # a header or shape that disagrees with the index
            raise self.damaged(row, exc) from None
        return _inputs.swap_rb(image) if self.bgr else image

    def encoded(self, image_id: Any) -> bytes:
        """The checked stored payload of one image."""
        # Inlined as image() is: a raw fetch is nearly all per-call overhead (~2 us for
        # 14 kB). Slicing the map itself makes the bytes in one step (no memoryview between),
        # and the CRC-32 then reads the copy while it is still in the CPU's cache.
        index, mapped = self.index, self._mapped
        row = index.find(image_id)
        if row < 0 or index.deleted[row]:
            raise UnknownIdError(f"no image with id {image_id!r} in the store")
        offset = index.offsets[row]
        end = offset + index.nbytes[row]
        if mapped is None:
            payload = bytes(self._read_remote(offset, end - offset, image_id))
        else:
            if end > len(mapped.view):
                mapped.ensure(end)
            payload = mapped.map[offset:end]
        if self.verify and crc32(payload) != index.crcs[row]:
            raise self.damaged(row)
        return payload

    def _read_remote(self, offset: int, size: int, image_id: Any) -> Buffer:
        try:
            return self.source.read(offset, size)
        except RemoteReadError as exc:
            raise exc.naming([image_id]) from None

    # ------------------------------------------------------------------ many images

    def payloads(self, rows: Sequence[int]) -> Sequence[Buffer]:
        """The checked stored bytes of many index rows: one round of reads."""
        index = self.index
        row_list = list(rows)
        try:
            got = self.source.read_ranges(
                [index.offsets[r] for r in row_list], [index.nbytes[r] for r in row_list]
            )
        except RemoteReadError as exc:  # the server failed through the retries
            raise exc.naming(index.column("id")[row_list]) from None
        if self.verify:
            for row, payload in zip(row_list, got):
                if crc32(payload) != index.crcs[row]:
                    raise self.damaged(row)
        return got

    def fetch(self, rows: list[int]) -> list[Buffer | None]:
        """What decode() and decode_into() take as ``payload`` for many rows: a local map is
        sliced per image on the decoding threads (None here); a remote source fetches the
        whole batch first, in one round of requests."""
        return [None] * len(rows) if self._mapped is not None else list(self.payloads(rows))

    @overload
    def decode_rows(
        self, rows: np.ndarray, out: None = None, bgr: bool | None = None
    ) -> list[np.ndarray]: ...
    @overload
    def decode_rows(
        self, rows: np.ndarray, out: np.ndarray, bgr: bool | None = None
    ) -> np.ndarray: ...
    def decode_rows(
        self, rows: np.ndarray, out: np.ndarray | None = None, bgr: bool | None = None
    ) -> list[np.ndarray] | np.ndarray:
        """Decoded images of index rows ``rows``, in order, on parallel threads where the
        batch holds enough bytes to be worth it; into ``out`` if given (see get_batch)."""
        row_list = rows.tolist()
        return decode_many(
            [self] * len(row_list),
            row_list,
            self.fetch(row_list),
            int(self.index.column("nbytes")[rows].sum(dtype=np.int64)),
            out,
            self.bgr if bgr is None else bgr,
        )

    def decode_into(self, row: int, target: np.ndarray, payload: Buffer | None = None) -> None:
        """Decode the image of ``row`` into ``target`` (one image of a get_batch ``out``)."""
        stack = self.stacks[self.index.stacks[row]]
        shape, dtype = stack.shape, stack.key.dtype
        if target.shape != shape or target.dtype != np.dtype(dtype):
            raise InvalidInputError(
                f"image {int(self.index.column('id')[row])} is {shape} {dtype}; "
                f"out holds {target.shape} {target.dtype}"
            )
        try:
            self.decoders[self.index.stacks[row]](
                self.payload(row) if payload is None else payload, target
            )
        except DamagedImageError as exc:
            raise self.damaged(row, exc) from None

    # ------------------------------------------------------------------ HDF5 columns

    def column(self, name: str, rows: np.ndarray) -> np.ndarray | None:
        """/scores or /sources at index rows ``rows`` (rows past its end: NaN or None); each
        source checked against /source_crc32, each score vector against the index's top-1
        score and (1.2) against /score_crc32."""
        with fmt.damage_reported(self.name):
            f = self.file
            # A remote source fetches the chunks (and heap collections) HDF5 is about to
            # read in one round each, rather than one request per chunk as HDF5 asks.
            prefetch = getattr(self.source, "prefetch_rows", None)
            if prefetch is not None and len(rows):
                lo, hi = int(np.min(rows)), int(np.max(rows)) + 1
                for column in fmt.CHECKED_COLUMNS[name]:
                    if column in f:
                        prefetch(f[column], lo, hi)
            if name == fmt.SOURCES:
                ids = self.index.column("id")[rows]
                sources = _sources.read_sources(
                    f,
                    rows,
                    ids,
                    self.source.read,
                    self.source.size(),
                    self.name,
                    self._checked_heaps,
                    getattr(self.source, "prefetch_heaps", None),
                )
                if sources is None:
                    return None
                out = np.empty(len(sources), dtype=object)
                out[:] = sources
                return out
            rows = np.asarray(rows, dtype=np.int64)
            index_rows = {c: self.index.column(c)[rows] for c in fmt.SCORE_CROSS_CHECKED}
            return fmt.read_scores(f, rows, index_rows, self.name, self.checked)

    def score_width(self) -> int:
        """K of the store's (N, K) score vectors; 0 if it has none."""
        f = self.file
        return int(f[fmt.SCORES].shape[1]) if fmt.SCORES in f else 0

    # ------------------------------------------------------------------ integrity

    def verify_all(self) -> tuple[int, list[int], list[int]]:
        """(rows checked, ids damaged, ids misplaced) over every row, deleted ones too: each
        payload's CRC-32 and header against the index, each cached offset against HDF5."""
        rows = self.index.take()
        misplaced = _offsets.misplaced_ids(self.file, rows, self.stacks)
        index, stacks, size = self.index, self.stacks, self.source.size()
        damaged = []
        for start in range(0, len(rows), VERIFY_BLOCK_ROWS):
            block = range(start, min(start + VERIFY_BLOCK_ROWS, len(rows)))
            inside = [r for r in block if index.offsets[r] + index.nbytes[r] <= size]
            fetched = dict(
                zip(
                    inside,
                    self.source.read_ranges(
                        [index.offsets[r] for r in inside], [index.nbytes[r] for r in inside]
                    ),
                )
            )
            for r in block:
                payload = fetched.get(r)
                if (
                    payload is None
                    or crc32(payload) != int(index.crcs[r])
                    or stacks[index.stacks[r]].header_problem(payload) is not None
                ):
                    damaged.append(int(rows["id"][r]))
        return len(rows), damaged, misplaced


def decode_many(
    engines: Sequence[ReadEngine],
    rows: Sequence[int],
    payloads: Sequence[Buffer | None],
    nbytes: int,
    out: np.ndarray | None,
    bgr: bool,
) -> list[np.ndarray] | np.ndarray:
    """The one batch decode: image k is row ``rows[k]`` of ``engines[k]`` (one store, or the
    shards of a view), from ``payloads[k]`` (see ReadEngine.fetch); on parallel threads where
    the ``nbytes`` of the batch are worth it; into ``out`` if given (see get_batch)."""
    threads = decode_threads(nbytes)
    if out is None:
        images = thread_map(
            lambda k: engines[k].decode(rows[k], payloads[k]), range(len(rows)), threads
        )
        return [_inputs.swap_rb(image) for image in images] if bgr else images
    if out.shape[0] != len(rows) or not out.flags.c_contiguous:
        raise InvalidInputError(f"out must be C-contiguous with {len(rows)} images along axis 0")
    thread_map(
        lambda k: engines[k].decode_into(rows[k], out[k], payloads[k]), range(len(rows)), threads
    )
    if bgr:
        _inputs.swap_rb_into(out)
    return out
