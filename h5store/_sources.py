"""/sources: reading the source of each image, checked. HDF5 keeps variable-length strings in
global-heap collections it trusts without checks; h5store walks the references and the
collections itself (bounds, structure, a CRC-32 of each collection once found intact) before
HDF5 follows them, so that a damaged or crafted file cannot make it read past its end or
allocate what the file cannot hold.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import h5py
import numpy as np

from ._source import Buffer
from .errors import FormatError
from .format import SOURCE_CHECK_SEED, SOURCE_CRC32, SOURCES, check_aligned, crc32, source_check


def read_sources(
    f: h5py.File,
    rows: np.ndarray,
    ids: np.ndarray,
    read_bytes: Callable[[int, int], Buffer],
    file_size: int,
    path: str,
    checked_heaps: dict[int, int],
    prefetch: Callable[[list[int]], None] | None = None,
) -> list[str | None] | None:
    """The sources of index rows ``rows`` (image ids ``ids``, for messages): None for rows
    past the end of /sources and rows stored without one; None instead of a list when the store
    has no /sources. Each value is compared with its check in /source_crc32 where one was
    recorded, so a damaged source (a zeroed chunk reads as no source) raises FormatError.
    ``read_bytes(offset, size)`` reads the file directly (the heap checks), ``file_size`` is
    its size; ``checked_heaps`` remembers the heap collections already walked (see
    :func:`check_heap_collection`). ``prefetch(addresses)``, where given, is told the heap
    collections about to be read (a remote store fetches them in one round)."""
    # Not f.get: it returns None for a link whose object cannot be opened (a damaged header),
    # and the sources would read as none (found by the fuzzer).
    if SOURCES not in f:
        return None
    ds = f[SOURCES]
    check_aligned(ds, path)
    checks_ds = f[SOURCE_CRC32] if SOURCE_CRC32 in f else None
    if checks_ds is not None:
        check_aligned(checks_ds, path)
    rows = np.asarray(rows, dtype=np.int64)
    out: list[str | None] = [None] * len(rows)
    if checks_ds is not None:
        _check_rows_past_sources(rows, ids, ds.shape[0], checks_ds, path)
    inside = np.flatnonzero(rows < ds.shape[0])
    if not len(inside):
        return out
    wanted = rows[inside]
    lo, hi = int(wanted.min()), int(wanted.max()) + 1
    # HDF5 follows the reference of every row it reads, wanted or not.
    heaps = check_source_references(ds, lo, hi, file_size, path)
    if prefetch is not None:
        prefetch(list(heaps))
    for address in heaps:
        check_heap_collection(read_bytes, address, file_size, path, checked_heaps)
    raw = ds[lo:hi][wanted - lo].tolist()  # one read: h5py's per-row selections cost far more
    checks = np.zeros(hi - lo, dtype=np.uint32)
    if checks_ds is not None and checks_ds.shape[0] > lo:
        top = min(hi, checks_ds.shape[0])
        checks[: top - lo] = checks_ds[lo:top]
    want = checks[wanted - lo]
    seed = SOURCE_CHECK_SEED
    got = np.fromiter((crc32(b, seed) or 1 for b in raw), np.uint32, len(raw))
    bad = np.flatnonzero((want != 0) & (got != want))
    if len(bad):
        k = int(bad[0])
        raise FormatError(
            f"{path}: /{SOURCES} row {int(wanted[k])} (image {int(ids[inside[k]])}) is damaged: "
            f"it does not match its check in /{SOURCE_CRC32}"
        )
    for k, value in zip(inside.tolist(), raw):
        try:
            out[k] = value.decode("utf-8") or None
        except UnicodeDecodeError:  # only where no check was recorded: a check fails first
            raise FormatError(
                f"{path}: /{SOURCES} row {int(rows[k])} (image {int(ids[k])}) is damaged: not UTF-8"
            ) from None
    return out


def _check_rows_past_sources(
    rows: np.ndarray, ids: np.ndarray, n_sources: int, checks_ds: h5py.Dataset, path: str
) -> None:
    """Rows past the end of /sources read as no source: refuse one whose check in
    /source_crc32 says a source was recorded (a /sources cut short; found by the fuzzer)."""
    past = np.flatnonzero((rows >= n_sources) & (rows < checks_ds.shape[0]))
    if not len(past):
        return
    lo, hi = int(rows[past].min()), int(rows[past].max()) + 1
    checks = checks_ds[lo:hi][rows[past] - lo]
    lost = np.flatnonzero((checks != 0) & (checks != source_check(b"")))
    if len(lost):
        k = int(past[lost[0]])
        raise FormatError(
            f"{path}: /{SOURCES} is damaged: it ends before row {int(rows[k])} (image "
            f"{int(ids[k])}), whose source /{SOURCE_CRC32} records"
        )


# How HDF5 stores one variable-length string in a dataset: its length, and the address and
# index of the global-heap object holding it.
_VLEN_REFERENCE = np.dtype([("length", "<u4"), ("heap", "<u8"), ("index", "<u4")])


def check_source_references(
    ds: h5py.Dataset, lo: int, hi: int, file_size: int, path: str
) -> list[int]:
    """Refuse /sources rows ``lo:hi`` whose heap reference points past the end of the file
    before HDF5 follows it (HDF5 trusts a damaged length and spends seconds allocating
    gigabytes before it fails); return the addresses of the heap collections they point to."""
    per_chunk = ds.chunks[0] if ds.chunks else 0
    if not per_chunk:
        return []
    size = np.uint64(file_size)
    heaps: set[int] = set()
    for start in range(lo - lo % per_chunk, hi, per_chunk):
        raw = _source_chunk(ds, start)
        if raw is None:
            continue
        first, stop = max(lo, start) - start, min(hi, start + per_chunk) - start
        ref = np.frombuffer(raw, _VLEN_REFERENCE)[first:stop]
        length = ref["length"].astype(np.uint64)
        room = size - np.minimum(ref["heap"], size)  # no unsigned wrap-around
        beyond = np.flatnonzero((length > 0) & (length > room))
        if len(beyond):
            k = int(beyond[0])
            raise FormatError(
                f"{path}: /{SOURCES} row {start + first + k} is damaged: it points "
                f"{int(length[k])} bytes at {int(ref['heap'][k])}, past the end of the file"
            )
        # (an empty string is an object too: a reference of length 0 into a collection)
        heaps.update(np.unique(ref["heap"][ref["heap"] != 0]).tolist())
    return sorted(heaps)


# A global-heap collection: "GCOL", version, 3 bytes reserved, its size; then its objects,
# each a header (index, reference count, 4 bytes reserved, size) and data padded to 8 bytes;
# index 0 is the free space at the end, its size counting its header.
_HEAP_HEADER = struct.Struct("<4sB3xQ")


_HEAP_OBJECT = struct.Struct("<HH4xQ")


def check_heap_collection(
    read_bytes: Callable[[int, int], Buffer],
    address: int,
    file_size: int,
    path: str,
    checked: dict[int, int],
) -> None:
    """Walk a global-heap collection's objects as HDF5 does when it loads it, and refuse one
    where that walk would not end cleanly. HDF5 trusts the sizes it finds: a zeroed object
    header (index 0, size 0) makes its walk stand still for good (a hang found by the fuzzer),
    and a size past the end lets it read beyond the collection. ``checked`` maps collections
    walked before to the CRC-32 of their bytes then: a collection (64 kB, 1,600 sources) costs
    0.5 ms to walk and 5 us to recognise."""
    problem = None
    if address > file_size - _HEAP_HEADER.size:
        problem = "past the end of the file"
    else:
        magic, version, size = _HEAP_HEADER.unpack(read_bytes(address, _HEAP_HEADER.size))
        if magic != b"GCOL" or version != 1 or size < _HEAP_HEADER.size:
            problem = "not a heap collection"
        elif size > file_size - address:
            problem = f"{size} bytes long, past the end of the file"
        else:
            data = read_bytes(address, size)
            digest = crc32(data)
            if checked.get(address) == digest:
                return
            unpack, p = _HEAP_OBJECT.unpack_from, _HEAP_HEADER.size
            while size - p >= _HEAP_OBJECT.size:  # (less is free space without a header)
                index, _, length = unpack(data, p)
                need = _HEAP_OBJECT.size + (length + 7) // 8 * 8 if index else length
                if not 0 < need <= size - p:
                    problem = f"object at byte {p} has size {length}"
                    break
                p += need
            else:
                checked[address] = digest
    if problem:
        raise FormatError(
            f"{path}: the heap collection at byte {address} holding /{SOURCES} strings is "
            f"damaged ({problem})"
        )


def null_source_references(ds: h5py.Dataset, start: int, stop: int) -> None:
    """Null the /sources references of rows ``start:stop`` that still point somewhere, before
    a batch writes its sources there. Only a dead writer's unfinished batch leaves such rows,
    and the heap objects they point to may never have reached the file; HDF5 reads the object
    behind a reference before it overwrites the reference, so the next batch could not write
    its sources ("bad global heap collection signature", found by test_commit_replay). Direct
    chunk I/O, so HDF5 follows none."""
    per_chunk = ds.chunks[0]
    size = _VLEN_REFERENCE.itemsize
    for first in range(start - start % per_chunk, stop, per_chunk):
        raw = _source_chunk(ds, first)
        lo, hi = (max(start, first) - first) * size, (min(stop, first + per_chunk) - first) * size
        if raw is not None and any(raw[lo:hi]):
            ds.id.write_direct_chunk((first,), raw[:lo] + bytes(hi - lo) + raw[hi:])


def _source_chunk(ds: h5py.Dataset, first: int) -> bytes | None:
    """The string references of the /sources chunk starting at row ``first`` as stored; None
    if it was never written, or is not the plain chunk h5store writes (HDF5 then says what is
    wrong when the rows are read)."""
    try:
        if ds.id.get_chunk_info_by_coord((first,)).byte_offset is None:
            return None  # (read_direct_chunk would fail, with MemoryError under SWMR)
        mask, raw = ds.id.read_direct_chunk((first,))
    except (KeyError, OSError, RuntimeError, ValueError):
        return None
    if mask or len(raw) != ds.chunks[0] * _VLEN_REFERENCE.itemsize:
        return None
    return raw
