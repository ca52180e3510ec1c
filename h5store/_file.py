"""How bytes get into and out of the HDF5 file safely: opening, the writer lock, crash recovery,
SWMR epochs, direct chunk writes with their file offsets, and the index row log.

The write protocol, which the rest of h5store relies on:

* One writer per file, enforced by an ``flock`` h5store holds for the writer's lifetime (HDF5's
  own locking is off, so SWMR readers can come and go without blocking the writer).
* New structure (class groups, stacks, labels, optional datasets) is created with SWMR off;
  image data and index rows are written with SWMR on, so readers in other processes always
  find a consistent file.
* A batch writes its image chunks, flushes, writes its score/source rows, then its index rows
  ending with ``batch_end = 1``, and flushes again: the index rows are the commit record, the
  chunks they point to are durable before them. A writer killed at any moment leaves a file
  whose committed rows all point to intact chunks; the next writer trims what was in flight.
* The file offset of every chunk is kept in its index row, so reads slice the bytes straight
  out of a memory map: no HDF5 call, no global lock. The offset is predicted from the file's
  end before each direct chunk write (free-space reuse is off), then checked against the bytes
  on disk; a miss falls back to HDF5's chunk iterator for that stack.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import time
from collections.abc import Callable, Sequence

import h5py
import numpy as np

from . import format as fmt
from ._parallel import get_threads
from ._superblock import SWMR_WRITE_FLAG, clear_writer_flags, writer_flags
from .errors import (
    FormatError,
    NotAStoreError,
    RecoveryNeededError,
    StoreExistsError,
    StoreLockedError,
    StoreNotFoundError,
)

MODES = {"r": "r", "r+": "r+", "a": "a", "w": "w", "x": "x", "w-": "x"}

# Chunk cache per dataset: the stacks are never read through HDF5 on the hot path, and the
# index and tail chunks (< 300 kB) fit.
_RDCC_NBYTES = 1 << 20
_READER_RETRY_SECONDS = 2.0


def _hdf5_open(path: str, mode: str, *, swmr: bool = False) -> h5py.File:
    kwargs = dict(libver=fmt.LIBVER, locking=False, rdcc_nbytes=_RDCC_NBYTES)
    if mode == "w":
        # Free-space reuse off: every allocation comes from the end of the file, which is what
        # makes chunk offsets predictable (and the file append-only apart from metadata).
        kwargs["fs_strategy"] = "none"
    return h5py.File(path, mode, swmr=swmr, **kwargs)


def _describe_open_error(path: str, exc: OSError) -> FormatError:
    msg = str(exc)
    if "truncated" in msg:
        return FormatError(f"{path} is truncated (HDF5: {msg})")
    if "signature" in msg:
        return NotAStoreError(f"{path} is not an HDF5 file")
    return FormatError(f"{path} cannot be opened as HDF5: {msg}")


class WriterLock:
    """An exclusive ``flock`` on the store file, held while a writer has it open."""

    def __init__(self, path: str, *, create: bool, exclusive_create: bool = False):
        flags = os.O_RDWR | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT
        if exclusive_create:
            flags |= os.O_EXCL
        try:
            self._fd = os.open(path, flags, 0o666)
        except FileExistsError:
            raise StoreExistsError(f"{path} already exists (mode 'x')") from None
        except FileNotFoundError:
            raise StoreNotFoundError(f"{path} does not exist") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLockedError(
                    f"{path} is open for writing elsewhere (another h5store writer, or an "
                    "HDF5 program holding its lock); close it first"
                ) from None
            raise

    @staticmethod
    def is_held(path: str) -> bool:
        """Whether some process holds a writer lock on ``path`` right now."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # closing drops the probe lock, if taken
        return False

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class MappedFile:
    """Read-only memory map of the store file, grown on demand as the file grows."""

    def __init__(self, path: str):
        self._path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._map: mmap.mmap | None = None
        self.view = memoryview(b"")
        self._remap()

    def _remap(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        # The old map stays alive while slices of it are still referenced elsewhere.
        self._map = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ)
        self.view = memoryview(self._map)

    def ensure(self, end: int) -> memoryview:
        """A view covering at least bytes [0, end)."""
        if end > len(self.view):
            self._remap()
            if end > len(self.view):
                raise FormatError(f"{self._path}: chunk at byte {end} lies past the end of the file")
        return self.view

    def close(self) -> None:
        self.view = memoryview(b"")
        self._map = None  # unmapped once the last slice is gone
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __getstate__(self):
        raise TypeError("MappedFile is per process; reopen the store instead")


# --------------------------------------------------------------------------- reading


def open_for_reading(path: str) -> h5py.File:
    """Open a store for reading. A file no writer has open is opened normally (HDF5 then also
    checks it is complete); a file whose writer is in SWMR mode is opened with SWMR read, which
    sees only consistent states. A writer inside a short object-creating epoch (SWMR off)
    is waited for briefly."""
    if not os.path.exists(path):
        raise StoreNotFoundError(f"{path} does not exist")
    if not h5py.is_hdf5(path):
        raise NotAStoreError(f"{path} is not an HDF5 file")
    deadline = time.monotonic() + _READER_RETRY_SECONDS
    delay = 0.005
    while True:
        flags = writer_flags(path)
        try:
            if not flags:
                return _hdf5_open(path, "r")
            if flags & SWMR_WRITE_FLAG:
                return _hdf5_open(path, "r", swmr=True)
        except OSError as exc:
            msg = str(exc)
            if "SWMR read access flag not the same" in msg:
                # This process already has the file open for writing: share that handle.
                return _hdf5_open(path, "r")
            if "already open for write" not in msg and "not already open for SWMR" not in msg:
                raise _describe_open_error(path, exc) from None
            # a writer appeared or changed epoch between reading the flags and opening
        if not WriterLock.is_held(path):
            raise RecoveryNeededError(
                f"{path} was left open by a writer that is gone; open it once with mode 'a' "
                "to recover it"
            )
        if time.monotonic() > deadline:
            raise StoreLockedError(f"{path} is being restructured by a writer; try again")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def read_committed_rows(f: h5py.File, mapped: MappedFile | None = None) -> np.ndarray:
    # Tail first: the writer only ever empties or overwrites tail rows after the rows it moves
    # have landed in /index, so a reader racing it sees every committed row at least once
    # (copies are dropped by id).
    tail = f[fmt.INDEX_TAIL][()]
    read_bytes = None
    if mapped is not None:
        def read_bytes(offset: int, size: int) -> bytes:
            return mapped.ensure(offset + size)[offset : offset + size]
    index = fmt.read_index_rows(f, read_bytes, threads=get_threads())
    return fmt.committed_rows(index, tail)


# --------------------------------------------------------------------------- writing


class WriterFile:
    """The writer's handle: SWMR epochs, chunk writes with offsets, the index row log."""

    def __init__(self, path: str, mode: str):
        self.path = path
        exists = os.path.exists(path)
        if mode == "r+" and not exists:
            raise StoreNotFoundError(f"{path} does not exist")
        if mode == "x" and exists:
            raise StoreExistsError(f"{path} already exists (mode 'x')")
        if exists and mode in ("r+", "a") and not h5py.is_hdf5(path):
            raise NotAStoreError(f"{path} is not an HDF5 file")
        self._lock = WriterLock(path, create=not exists, exclusive_create=(mode == "x"))
        self.created = mode in ("w", "x") or not exists
        try:
            if self.created:
                self.f = _hdf5_open(path, "w")
                fmt.create_layout(self.f)
                self.f.flush()
            else:
                self.f = self._open_existing()
                fmt.check_root(self.f, path)
        except BaseException:
            if getattr(self, "f", None) is not None:
                self.f.close()
            self._lock.release()
            if self.created and mode in ("x", "a") and not exists:
                os.unlink(path)
            raise
        self.swmr = False
        self.recovered = getattr(self, "recovered", False)
        self._stack_handles: dict[int, h5py.Dataset] = {}
        self.offset_fallbacks = 0  # chunk offsets HDF5 had to be asked for

    def _open_existing(self) -> h5py.File:
        try:
            return _hdf5_open(self.path, "r+")
        except OSError as exc:
            if "already open for write" not in str(exc) or not writer_flags(self.path):
                raise _describe_open_error(self.path, exc) from None
        # We hold the writer lock, so the writer that set these flags is dead.
        clear_writer_flags(self.path)
        self.recovered = True
        try:
            return _hdf5_open(self.path, "r+")
        except OSError as exc:
            raise _describe_open_error(self.path, exc) from None

    # ------------------------------------------------------------------ epochs

    def swmr_off(self) -> h5py.File:
        """The file with SWMR off (reopened if it was on), for creating objects and attributes."""
        if self.swmr:
            self._reopen()
        return self.f

    def swmr_on(self) -> h5py.File:
        """The file with SWMR on, for extending datasets and writing into them."""
        if not self.swmr:
            self.f.flush()
            self.f.swmr_mode = True
            self.swmr = True
            self._stack_handles.clear()
            self._row_log = (self.f[fmt.INDEX], self.f[fmt.INDEX_TAIL])
        return self.f

    def _reopen(self) -> None:
        # SWMR mode cannot be left without closing the file.
        self.f.close()
        self._stack_handles.clear()
        self.f = _hdf5_open(self.path, "r+")
        self.swmr = False

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        try:
            if getattr(self, "f", None) is not None and self.f.id.valid:
                self.f.close()
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ stacks and chunks

    def stack(self, stack_id: int, path: str) -> h5py.Dataset:
        ds = self._stack_handles.get(stack_id)
        if ds is None:
            ds = self._stack_handles[stack_id] = self.f[path]
        return ds

    @staticmethod
    def extend_stack(stack: h5py.Dataset, length: int) -> None:
        if stack.shape[0] < length:
            stack.resize(length, axis=0)

    def chunk_writer(self, stack: h5py.Dataset) -> Callable[[int, bytes], int]:
        """A function direct-writing one payload at a position of ``stack`` and returning its
        predicted file offset (to be confirmed with :meth:`confirm_offsets` after a flush).
        Everything but the two HDF5 calls is looked up once: they run once per image."""
        get_filesize, write = self.f.id.get_filesize, stack.id.write_direct_chunk
        rest = (0,) * (stack.ndim - 1)

        def write_chunk(position: int, payload: bytes) -> int:
            offset = get_filesize()
            write((position, *rest), payload)
            return offset

        return write_chunk

    def confirm_offsets(
        self,
        mapped: MappedFile,
        stack: h5py.Dataset,
        positions: Sequence[int],
        payloads: Sequence[bytes],
        offsets: list[int],
    ) -> None:
        """Replace predicted offsets that do not hold the payload with HDF5's answer."""
        try:
            view = mapped.ensure(max(o + len(p) for o, p in zip(offsets, payloads)))
        except FormatError:
            # HDF5's file size can run ahead of the file (after a recovery, space a dead writer
            # allocated): a prediction past the end is simply wrong.
            view = mapped.view
        # bytes() then ==: a memcmp; comparing a memoryview to bytes goes element by element.
        wrong = [
            k for k, (o, p) in enumerate(zip(offsets, payloads))
            if o + len(p) > len(view) or bytes(view[o : o + len(p)]) != p
        ]
        if not wrong:
            return
        self.offset_fallbacks += len(wrong)
        actual: dict[int, tuple[int, int]] = {}
        stack.id.chunk_iter(lambda info: actual.__setitem__(info.chunk_offset[0], (info.byte_offset, info.size)))
        for k in wrong:
            offset, size = actual[positions[k]]
            if size != len(payloads[k]):
                raise FormatError(f"chunk {positions[k]} of {stack.name} was not stored intact")
            offsets[k] = offset

    # ------------------------------------------------------------------ the index row log

    def rows_on_disk(self) -> tuple[int, int]:
        """(rows in /index, used rows of /index_tail) as the committed state stands."""
        return self.f[fmt.INDEX].shape[0], self._tail_used

    def load_row_log(self, committed: np.ndarray) -> None:
        """Bring /index and /index_tail to the normal form for appending: /index holds the
        committed rows in whole chunks, the tail holds the rest. Trims what a dead writer left
        in flight. Does nothing (writes nothing) when the file is already in that form."""
        f = self.swmr_off()
        index, tail = f[fmt.INDEX], f[fmt.INDEX_TAIL]
        # The file's own geometry, not this version's default: the tail holds one /index chunk.
        self._capacity = capacity = tail.shape[0]
        n = len(committed)
        full = (n // capacity) * capacity
        rest = committed[full:]
        on_disk_tail = tail[()]
        used = np.flatnonzero(on_disk_tail["nbytes"] == 0)
        used = int(used[0]) if len(used) else len(on_disk_tail)
        in_form = index.shape[0] == full and used == len(rest) and (
            not used or np.array_equal(on_disk_tail[:used], rest)
        )
        if not in_form:
            if index.shape[0] < full:
                # Only a full tail can be missing from /index: copy it over, then empty it.
                index.resize(full, axis=0)
                index[full - capacity : full] = committed[full - capacity : full]
                f.flush()
            new_tail = np.zeros(capacity, dtype=fmt.INDEX_DTYPE)
            new_tail[: len(rest)] = rest
            tail[...] = new_tail
            f.flush()
            if index.shape[0] > full:
                index.resize(full, axis=0)
                f.flush()
        self._tail_used = len(rest)
        self._index_rows = full

    def append_rows(self, rows: np.ndarray) -> None:
        """Append committed-to-be rows (the last one carrying batch_end) in SWMR mode."""
        f = self.swmr_on()
        index, tail = self._row_log
        capacity = self._capacity
        if self._tail_used + len(rows) <= capacity:
            tail[self._tail_used : self._tail_used + len(rows)] = rows
            self._tail_used += len(rows)
            f.flush()
            return
        # The tail overflows: whole chunks (old tail rows first) go to /index, the remainder
        # becomes the new tail. Until the remainder with its batch_end lands, the rows copied
        # to /index end without a batch_end, so a crash in between commits nothing.
        pending = np.concatenate([tail[: self._tail_used], rows])
        full = (len(pending) // capacity) * capacity
        start = self._index_rows
        index.resize(start + full, axis=0)
        index[start : start + full] = pending[:full]
        f.flush()
        new_tail = np.zeros(capacity, dtype=fmt.INDEX_DTYPE)
        remainder = pending[full:]
        new_tail[: len(remainder)] = remainder
        tail[...] = new_tail
        f.flush()
        self._index_rows = start + full
        self._tail_used = len(remainder)

    def write_row(self, row_number: int, row: np.void) -> None:
        """Rewrite one committed row in place (deletion flags)."""
        f = self.swmr_on()
        if row_number < self._index_rows:
            f[fmt.INDEX][row_number] = row
        else:
            f[fmt.INDEX_TAIL][row_number - self._index_rows] = row

    def seal_row_log(self) -> None:
        """At close: move the tail into /index, so that a closed file has one complete index
        table for viewers. Copy first, empty the tail second; a crash between leaves duplicate
        rows that readers drop by id."""
        if not self._tail_used:
            return
        f = self.swmr_off()
        index, tail = f[fmt.INDEX], f[fmt.INDEX_TAIL]
        rows = tail[: self._tail_used]
        start = self._index_rows
        index.resize(start + len(rows), axis=0)
        index[start:] = rows
        f.flush()
        tail[...] = np.zeros(self._capacity, dtype=fmt.INDEX_DTYPE)
        f.flush()
        self._index_rows += len(rows)
        self._tail_used = 0
