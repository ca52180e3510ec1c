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
  out of a memory map: no HDF5 call, no global lock. Free-space reuse is off, so chunks are
  allocated at the file's end in the order written: the file's end is read every few images,
  and where it grew by more than the payloads in between, the payloads are found in the bytes
  on disk; one found nowhere falls back to HDF5's chunk index for that chunk.
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import errno
import fcntl
import functools
import mmap
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NoReturn

import h5py
import numpy as np
from isal import isal_zlib

from . import _libhdf5, _recovery
from . import format as fmt
from ._containment import ContainedFile, check_contained
from ._index import FROM_PLANES, Index
from ._parallel import get_threads
from ._source import ByteSource
from ._superblock import (
    SUPERBLOCK_BYTES,
    SWMR_WRITE_FLAG,
    clear_writer_flags,
    extend_to_eoa,
    stored_eoa,
    superblock_intact,
    writer_flags,
)
from .errors import (
    FormatError,
    H5StoreError,
    InvalidInputError,
    NotAStoreError,
    RecoveryNeededError,
    StorageFullError,
    StoreExistsError,
    StoreLockedError,
    StoreNotFoundError,
    StorePermissionError,
    StoreVanishedError,
    WriteFailedError,
)

MODES = {"r": "r", "r+": "r+", "a": "a", "w": "w", "x": "x", "w-": "x"}

# Chunk cache per dataset: the stacks are never read through HDF5 on the hot path, and the
# index and tail chunks (< 300 kB) fit.
_RDCC_NBYTES = 1 << 20
#: Images written between two readings of the file's end: each reading costs 1 us, and a
#: sample where HDF5 grew its chunk index (one in fifty to a hundred images) costs a read-back
#: of each of its payloads, 1-2 us apiece; eight balances the two.
OFFSET_SAMPLE = 8

#: Images a stack is extended to at least when it grows (see WriterFile.extend_stack).
STACK_GROWTH_MIN = 1024

#: How long a reader waits out a live writer's restructuring (open_for_reading) or retries
#: an open that met it (ImageStore._open_reader).
READER_RETRY_SECONDS = 2.0


#: What ``h5store.open(..., locking=)`` accepts; see :func:`check_locking`.
LOCKING_VALUES = (None, True, False, "best-effort")
# HDF5 refuses a second open of a file with other file-locking settings than the first
_LOCKING_MISMATCH = "flag values don't match"
_HDF5_DEFAULT = "hdf5-default"  # h5py.File without locking=: HDF5's defaults (environment)
# flock on a file system that does not support it (Lustre without -o flock, NFS with nolock
# on some kernels, some FUSE file systems)
_NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP}


def check_locking(locking: object) -> None:
    # (1 == True and 0 == False: the isinstance keeps integers out)
    if locking not in LOCKING_VALUES or not isinstance(locking, (bool, str, type(None))):
        raise InvalidInputError(
            f"locking must be None, True, False or 'best-effort', got {locking!r}"
        )


def _hdf5_create(path: str) -> h5py.File:
    """A new, empty HDF5 file opened for writing, made with the calls h5py's mode 'w' makes
    plus room for every root link of the layout in the root group (h5py.File takes no file
    creation list)."""
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    # Free-space reuse off: every allocation comes from the end of the file, which is what
    # makes chunk offsets predictable (and the file append-only apart from metadata).
    fcpl.set_file_space_strategy(h5py.h5f.FSPACE_STRATEGY_NONE, False, 1)
    _libhdf5.reserve_links(fcpl, fmt.ROOT_LINKS_RESERVED, fmt.RESERVED_NAME_BYTES)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(*(_LIBVER[v] for v in fmt.LIBVER))
    fapl.set_file_locking(False, True)  # the writer lock replaces it, as in _hdf5_open
    # Closed at once, while the file is empty: ext4 (auto_da_alloc, on by default) writes back
    # a file truncated to zero at the next close of any descriptor of it, and the create
    # truncates the empty file the writer lock made. Left for later, that close came at the
    # first SWMR reopen and wrote back every image stored by then (50 ms for 75 MB).
    h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl).close()
    return _hdf5_open(path, "r+")


_LIBVER = {"v110": h5py.h5f.LIBVER_V110}


def _hdf5_open(path: str, mode: str, *, swmr: bool = False, locking: object = False) -> h5py.File:
    # HDF5's own file locking is off by default: the writer's flock (WriterLock) replaces it
    # and, unlike HDF5's, lasts through SWMR epochs without blocking SWMR readers.
    kwargs = dict(libver=fmt.LIBVER, rdcc_nbytes=_RDCC_NBYTES)
    if locking != _HDF5_DEFAULT:
        kwargs["locking"] = locking
    try:
        # HDF5 told to follow nothing out of the file (see _containment)
        return ContainedFile(path, mode, swmr=swmr, **kwargs)
    except RuntimeError as exc:
        # HDF5 failing to decode the superblock (found by the fuzzer: a damaged size of
        # addresses); lock and open-mode conflicts, which callers tell apart, are OSErrors.
        raise _describe_open_error(path, exc) from None


def _describe_open_error(path: str, exc: Exception) -> H5StoreError:
    msg = str(exc)
    if "unable to lock file" in msg:
        return StoreLockedError(
            f"{path} is locked by a writer, and HDF5's own file lock (locking=True or "
            "'best-effort') excludes readers while a writer has the file; open with the "
            "default locking=None to read while it writes (SWMR)"
        )
    if "truncated" in msg:
        return RecoveryNeededError(
            f"{path} is truncated: shorter than HDF5 recorded (a writer ran out of space, or "
            f"the file was cut short); open it once with mode 'a' to recover the committed "
            f"images (HDF5: {msg})"
        )
    if "signature" in msg:
        return NotAStoreError(f"{path} is not an HDF5 file")
    return FormatError(f"{path} cannot be opened as HDF5: {msg}")


# --------------------------------------------------------------------------- system errors

_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}
_ERRNO_IN_MESSAGE = re.compile(r"errno = (\d+)|\[Errno (\d+)\]")


def system_errno(exc: BaseException) -> int | None:
    """The errno behind an exception, including HDF5's, which h5py reports as a RuntimeError
    or OSError whose message carries ``errno = N`` from the failed system call."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code:
        return code
    match = _ERRNO_IN_MESSAGE.search(str(exc))
    return int(match.group(1) or match.group(2)) if match else None


def write_error(exc: BaseException, path: str) -> WriteFailedError | StorePermissionError | None:
    """The h5store error for a write the operating system refused (None if ``exc`` was not
    one)."""
    code = system_errno(exc)
    if code is None:
        return None
    reason = os.strerror(code)
    after = "the writer is closed; every committed image is intact: reopen with mode 'a' to recover"
    if code in _FULL:
        err: WriteFailedError | StorePermissionError = StorageFullError(
            code, f"{path}: the file cannot grow ({reason}); {after} once there is space"
        )
    elif code in _DENIED:
        err = StorePermissionError(code, f"{path}: write refused ({reason}); {after}")
    else:
        err = WriteFailedError(code, f"{path}: write failed ({reason}); {after}")
    err.filename = path
    return err


def permission_error(path: str, exc: OSError, action: str) -> StorePermissionError:
    where = os.path.dirname(os.path.abspath(path))
    if exc.errno == errno.EROFS:
        why = "the file system is mounted read-only"
    elif os.path.exists(path):
        why = "the file is not writable by this user" if not os.access(path, os.W_OK) else str(exc)
    else:
        why = f"the directory {where} is not writable by this user"
    err = StorePermissionError(
        exc.errno,
        f"cannot {action} {path}: {why}; open it with mode 'r' "
        "to read, or copy it somewhere writable",
    )
    err.filename = path
    return err


class WriterLock:
    """An exclusive ``flock`` on the store file, held while a writer has it open."""

    def __init__(
        self, path: str, *, create: bool, exclusive_create: bool = False, locking: object = None
    ):
        """``locking``: None or True, the lock is required; 'best-effort', taken where the file
        system supports ``flock`` and skipped (with a warning) where it does not; False, not
        taken (the caller guarantees there is one writer)."""
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
            raise StoreNotFoundError(f"{path} does not exist (or its directory does not)") from None
        except OSError as exc:
            if exc.errno in _DENIED:
                raise permission_error(path, exc, "write to") from None
            raise
        self.identity = _identity(os.fstat(self._fd))
        self.held = False
        if locking is False:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.held = True
        except OSError as exc:
            if exc.errno in _NO_LOCKS and locking == "best-effort":
                warnings.warn(
                    f"h5store: {path}: the file system does not support flock ({exc.strerror}); "
                    "writing without the writer lock (locking='best-effort'): make sure no "
                    "other writer opens this file",
                    RuntimeWarning,
                    stacklevel=4,
                )
                return
            os.close(self._fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLockedError(
                    f"{path} is open for writing elsewhere (another h5store writer), or an HDF5 "
                    "program (h5py with file locking on, its default) has it open in this or "
                    "another process; close it first"
                ) from None
            if exc.errno in _NO_LOCKS:
                raise StoreLockedError(
                    f"{path}: the file system does not support flock ({exc.strerror}), which "
                    "h5store's writer lock needs; on NFS or Lustre see docs/reliability.md "
                    "(open with locking='best-effort' or locking=False when one writer is "
                    "guaranteed)"
                ) from None
            raise

    def still_names_file(self, path: str) -> bool:
        """Whether ``path`` is still the file this lock was taken on (not deleted, renamed
        away or replaced)."""
        try:
            return _identity(os.stat(path)) == self.identity
        except OSError:
            return False

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


#: Readers map files up to this size with MAP_POPULATE (see MappedFile).
POPULATE_MAX_BYTES = min(2 << 30, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class MappedFile:
    """Read-only memory map of the store file, grown on demand as the file grows.

    ``populate``: map every page of the file at once (MAP_POPULATE), for readers. Otherwise the
    first read of each page takes a page fault (even with the file in the page cache), and a
    random pass over a large store takes one every other read: at 1,000,000 images of 1 kB,
    0.55 faults per read made the first pass 1.24 x as costly as at 10,000; populated (and with
    the index's packed rows) 0.96-1.09 x in three runs. Populating a 1.1 GB file from the page
    cache cost 0.07 s of CPU at open and 0.04 s at close; a file not in the cache would be read
    whole, so only files up to POPULATE_MAX_BYTES (2 GiB, or an eighth of the memory if less)
    are populated. A map grown later (the file grew) is not.

    Populating is left to a helper thread (:class:`_Populate`) started by :meth:`populate`
    once the open is done (the decoding threads and the checks have the cores until then), so
    that an open returns without waiting for it: it was a quarter of a warm open at 200,000
    images. Reads
    meanwhile take the page faults they would have taken without it; the CPU time is the same.
    """

    def __init__(self, path: str, *, populate: bool = False):
        self._path = self.name = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        #: the map itself: slicing it gives bytes in one step (a copy; ``view`` slices without)
        self.map: mmap.mmap | bytes = b""
        self.view = memoryview(b"")
        self._populate: _Populate | None = None
        self._populate_pending = False
        self._remap(populate)

    def populate(self) -> None:
        """Start populating the map, if it was asked for at creation (once)."""
        if self._populate_pending and self._fd >= 0:
            self._populate_pending = False
            self._populate = _Populate(self.map)

    def _remap(self, populate: bool = False) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        populate = populate and size <= POPULATE_MAX_BYTES
        # The old map stays alive while slices of it are still referenced elsewhere.
        self.map = mmap.mmap(self._fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        if populate and _Populate.supported():
            self._populate_pending = True
        elif populate and hasattr(mmap, "MAP_POPULATE"):  # (Linux before 5.14): at once
            flags = mmap.MAP_SHARED | mmap.MAP_POPULATE
            self.map = mmap.mmap(self._fd, size, flags=flags, prot=mmap.PROT_READ)
        self.view = memoryview(self.map)

    def ensure(self, end: int) -> memoryview:
        """A view covering at least bytes [0, end)."""
        if end > len(self.view):
            self._remap()
            if end > len(self.view):
                raise FormatError(
                    f"{self._path}: chunk at byte {end} lies past the end of the file"
                )
        return self.view

    def read(self, offset: int, size: int) -> memoryview:
        """Bytes ``offset`` to ``offset + size`` of the file."""
        return self.ensure(offset + size)[offset : offset + size]

    def read_ranges(self, offsets: Sequence[int], sizes: Sequence[int]) -> list[memoryview]:
        """Many ranges (a slice each: a local map has no round trip to save)."""
        view = self.ensure(max((o + n for o, n in zip(offsets, sizes)), default=0))
        return [view[o : o + n] for o, n in zip(offsets, sizes)]

    def size(self) -> int:
        return os.fstat(self._fd).st_size if self._fd >= 0 else 0

    def close(self) -> None:
        if self._populate is not None:
            self._populate.stop()
            self._populate = None
        self.view = memoryview(b"")
        self.map = b""  # unmapped once the last slice is gone
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __getstate__(self) -> NoReturn:
        raise TypeError("MappedFile is per process; reopen the store instead")


class _Populate:
    """Map every page of ``mapped`` into this process on a thread of its own, a slice at a
    time (madvise MADV_POPULATE_READ, Linux 5.14 on; the GIL is released during each call),
    until done or :meth:`stop`. The thread holds the map (a buffer of it) until it ends, so
    that closing the store cannot unmap it under the call.

    The thread is started through ``_thread``, which does not wait for it to run, as
    ``threading.Thread.start`` does: on a busy machine that wait, at the end of every open,
    was 0.3 ms in the median and up to 7 ms. (Such a thread is a daemon: it ends with the
    process.)"""

    ADVICE = 22  # MADV_POPULATE_READ
    SLICE = 8 << 20  # (each call holds the process's map lock a moment: keep it short)

    def __init__(self, mapped: mmap.mmap | bytes):
        self._stopped = threading.Event()
        self._ended = threading.Event()
        # (held here, not passed as an argument: _thread keeps a thread's arguments until it
        # returns, after it says it has ended, and the map must go with the thread)
        self._pages: np.ndarray | None = np.frombuffer(mapped, np.uint8)
        _thread.start_new_thread(self._run, ())

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the thread has ended (at most ``timeout`` seconds); whether it has."""
        return self._ended.wait(timeout)

    @staticmethod
    @functools.cache
    def _madvise() -> Callable[..., int] | None:
        try:
            function = ctypes.CDLL(None, use_errno=True).madvise
        except (OSError, AttributeError):
            return None
        function.restype = ctypes.c_int
        function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return function

    @classmethod
    @functools.cache
    def supported(cls) -> bool:
        """Whether this system populates maps on request (tried once, on a page of memory:
        on the store's map the call waited for another store's populating thread)."""
        madvise = cls._madvise()
        if madvise is None:
            return False
        page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        return madvise(np.frombuffer(page, np.uint8).ctypes.data, len(page), cls.ADVICE) == 0

    def _run(self) -> None:
        pages = self._pages
        assert pages is not None
        try:
            madvise, address = self._madvise(), pages.ctypes.data
            if madvise is None:  # (never: the thread starts only where supported() said yes)
                return
            for start in range(0, len(pages), self.SLICE):
                if self._stopped.is_set():
                    return
                if madvise(address + start, min(self.SLICE, len(pages) - start), self.ADVICE):
                    return  # (the file shrank under the map: reads will report it)
        finally:
            self._pages = pages = None  # (the map is released before the thread has ended)
            self._ended.set()

    def stop(self) -> None:
        self._stopped.set()


# --------------------------------------------------------------------------- reading


def _open_matching(
    path: str, mode: str, *, swmr: bool = False, locking: object = None
) -> h5py.File:
    """Open with HDF5 file locking ``locking``; None means h5store's default (off), or the
    setting this process already has the file open with (through h5py, say): HDF5 refuses a
    second open with another setting."""
    if locking is not None:
        try:
            return _hdf5_open(path, mode, swmr=swmr, locking=locking)
        except OSError as exc:
            if _LOCKING_MISMATCH not in str(exc):
                raise
            raise StoreLockedError(
                f"{path} is already open in this process (through h5py?) with other HDF5 "
                f"file-locking settings than locking={locking!r}; pass the same to both: "
                "h5py.File(..., locking=False) with h5store's default, or "
                "h5store.open(..., locking=None), which matches whatever is open"
            ) from None
    mismatches: list[OSError] = []
    for candidate in (False, _HDF5_DEFAULT, True, "best-effort"):
        try:
            return _hdf5_open(path, mode, swmr=swmr, locking=candidate)
        except OSError as exc:
            if _LOCKING_MISMATCH not in str(exc):
                raise
            mismatches.append(exc)
    raise mismatches[-1]


def reader_precheck(path: str) -> None:
    """Raise what :func:`open_for_reading` would raise at once, without opening anything."""
    if not os.path.exists(path):
        raise StoreNotFoundError(f"{path} does not exist")
    flags = writer_flags(path)
    if flags and not flags & SWMR_WRITE_FLAG and not WriterLock.is_held(path):
        raise RecoveryNeededError(
            f"{path} was left open by a writer that is gone; open it once with mode 'a' "
            "to recover it"
        )


def open_for_reading(path: str, locking: object = None) -> h5py.File:
    """Open a store for reading. A file no writer has open is opened normally (HDF5 then also
    checks it is complete); a file whose writer is in SWMR mode is opened with SWMR read, which
    sees only consistent states. A writer inside a short object-creating epoch (SWMR off)
    is waited for briefly. ``locking`` is HDF5's file-locking switch (see
    :func:`_open_matching`). A file that would make h5store read outside it is refused
    before any data is read (see _containment)."""
    f = _open_hdf5_for_reading(path, locking)
    try:
        check_contained(f, path, previews=False)
    except BaseException:
        f.close()
        raise
    if f.swmr_mode:
        # The walk loaded object headers into HDF5's cache, and a reader racing a writer must
        # read /index_tail, /index, /stacks and /labels each with its header fresh, in that
        # order (see ImageStore._load_checked; the torture test found a stale /stacks).
        # HDF5 drops the cache with the file's last handle: open again. (The file has no
        # other handle here unless this process writes it, whose cache is then current.)
        f.close()
        f = _open_hdf5_for_reading(path, locking)
    return f


def _open_hdf5_for_reading(path: str, locking: object) -> h5py.File:
    if not os.path.exists(path):
        raise StoreNotFoundError(f"{path} does not exist")
    if not os.access(path, os.R_OK):
        err = StorePermissionError(
            errno.EACCES, f"cannot read {path}: the file is not readable by this user"
        )
        err.filename = path
        raise err
    if not h5py.is_hdf5(path):
        raise NotAStoreError(f"{path} is not an HDF5 file")
    deadline = time.monotonic() + READER_RETRY_SECONDS
    delay = 0.005
    while True:
        if not superblock_intact(path):
            time.sleep(0.01)  # a writer may be rewriting it in this instant: look once more
            if not superblock_intact(path):
                raise FormatError(f"{path} is damaged: its HDF5 superblock fails its checksum")
        flags = writer_flags(path)
        try:
            if not flags:
                return _open_matching(path, "r", locking=locking)
            if flags & SWMR_WRITE_FLAG:
                return _open_matching(path, "r", swmr=True, locking=locking)
        except OSError as exc:
            if isinstance(exc, H5StoreError):
                raise
            msg = str(exc)
            if "SWMR read access flag not the same" in msg:
                # This process already has the file open for writing: share that handle.
                return _open_matching(path, "r", locking=locking)
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
    tail = fmt.read_tail_rows(f)
    read_bytes = None if mapped is None else mapped.read
    index = fmt.read_index_rows(f, read_bytes, threads=get_threads())
    return _recovery.committed_rows(index, tail)


def read_committed_index(
    f: h5py.File,
    mapped: ByteSource,
    fits: fmt.RowsFit,
    fresh: Callable[[h5py.Dataset | None], None] | None = None,
    *,
    unread_rows: bool = False,
) -> tuple[Index, bool]:
    """The committed rows (as :func:`read_committed_rows`) as an :class:`Index`, and whether
    ``fits`` said yes to all of them. The rows are decoded on h5store's threads, and each
    block's columns copied and checked there, while the block is in the CPU's cache: at a
    million rows, copying and checking the whole array afterwards took longer than decoding
    it. ``unread_rows``: take the columns straight out of /index's shuffled bytes and leave
    the rows to be made when asked for (see Index.unread; a reader's index). ``fresh(dataset)``
    is called before reading the tail and before reading /index and once more after (a remote
    file reads each anew, and the catalogue after them: see _remote.RemoteFile.fresh)."""
    if fresh is not None:
        fresh(f[fmt.INDEX_TAIL])
    tail = fmt.read_tail_rows(f)  # tail first, as in read_committed_rows
    if fresh is not None:
        fresh(None)
    # One round of requests for a remote source; a local map has no round trip to save, and
    # slicing it for every chunk before any is inflated held the other threads up.
    read_ranges = None if isinstance(mapped, MappedFile) else mapped.read_ranges
    made: list[tuple[Index, np.ndarray]] = []
    empty: list[int] = []  # rows of /index without payload (the first of each block)
    fit = [True]
    batch_end_at = fmt.INDEX_DTYPE.fields["batch_end"][1]  # type: ignore[index]

    def on_start(n: int, rows_per_chunk: int, chunks: int) -> Callable[..., None]:
        index = Index.unread(chunks * rows_per_chunk + len(tail), rows_per_chunk, chunks)
        made.append((index, batch_end := np.zeros(n, np.uint8)))

        def on_block(first: int, planes: np.ndarray, stored: list) -> None:
            stop = min(first + len(planes) * rows_per_chunk, n)
            index.copy_planes(first, planes, stop, stored)
            batch_end[first:stop] = planes[:, batch_end_at, :].reshape(-1)[: stop - first]
            holes = np.flatnonzero(index.column("nbytes", stop)[first:stop] == 0)
            if len(holes):
                empty.append(first + int(holes[0]))
            columns = {c: index.column(c, stop)[first:stop] for c in fmt.RANGE_COLUMNS}
            if not fits.planes_fit(columns, planes, stop - first):
                fit[0] = False  # (every thread only ever clears it)

        return on_block

    if (
        unread_rows
        and FROM_PLANES
        and fmt.read_index_planes(f, mapped.read, get_threads(), on_start, read_ranges=read_ranges)
    ):
        index, batch_end = made[0]
        stored_rows = len(batch_end)
        ids = index.column("id", stored_rows)
        first_empty: int | None = min(empty, default=stored_rows)
    else:
        reserved: list[Index] = []

        def on_blocks(storage: np.ndarray) -> Callable[[int, int], None]:
            reserved.append(index := Index.reserve(storage))

            def on_block(start: int, stop: int) -> None:
                index.copy_columns(start, stop)
                if not fits(storage[start:stop]):
                    fit[0] = False  # (every thread only ever clears it)

            return on_block

        stored = fmt.read_index_rows(
            f,
            mapped.read,
            threads=get_threads(),
            spare=len(tail),
            on_blocks=on_blocks,
            read_ranges=read_ranges,
        )
        index, batch_end, stored_rows, ids = (
            reserved[0],
            stored["batch_end"],
            len(stored),
            stored["id"],
        )
        first_empty = None
    if fresh is not None:
        fresh(None)  # the catalogue, read next, as new as the rows
    n, tail = _recovery.committed_extent(
        index.column("nbytes", stored_rows), batch_end, ids, tail, first_empty
    )
    index.take_rows(n)
    index.append(tail)  # into the room left for it
    return index, fit[0] and fits(tail)


# --------------------------------------------------------------------------- writing

#: Bytes of a payload that decide whether it can be found by content (see _distinctive).
_DISTINCTIVE_BYTES = 64
_DISTINCTIVE_VALUES = 8


def _distinctive(payload: bytes) -> bool:
    """Whether finding ``payload``'s bytes in the file can only mean its chunk. HDF5's metadata
    holds runs of 0xFF (undefined addresses) and of zeros, and short fields of every value: a
    raw 1 x 1 image of 255 matched them (verify() then saw a stale offset on a healthy file).
    A payload of at least 64 bytes whose first 64 hold at least 8 values matches no metadata
    by chance."""
    return (
        len(payload) >= _DISTINCTIVE_BYTES
        and len(set(payload[:_DISTINCTIVE_BYTES])) >= _DISTINCTIVE_VALUES
    )


def _write_rows(ds: h5py.Dataset, start: int, rows: np.ndarray) -> None:
    """``ds[start:start + len(rows)] = rows`` for index rows, through HDF5's own call: h5py's
    item assignment spends about 0.3 ms working out a compound type it is given already."""
    file_space = ds.id.get_space()
    file_space.select_hyperslab((start,), (len(rows),))
    ds.id.write(h5py.h5s.create_simple((len(rows),)), file_space, np.ascontiguousarray(rows))


def _index_chunk_encoder(
    index: h5py.Dataset, rows_per_chunk: int
) -> Callable[[np.ndarray], bytes] | None:
    """A function turning ``rows_per_chunk`` index rows into the bytes of one /index chunk (the
    shuffle then deflate filters HDF5 would apply), or None where the file's /index has another
    pipeline or row type (written by some other version): HDF5's filters run through zlib at
    level 4 and cost 0.15 ms a chunk, ISA-L's deflate at level 1 a quarter of that, for 1 %
    more bytes, and readers decode either."""
    plist = index.id.get_create_plist()
    pipeline = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
    if (
        pipeline != [h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE]
        or index.dtype != fmt.INDEX_DTYPE
        or index.chunks != (rows_per_chunk,)
    ):
        return None
    width = fmt.INDEX_DTYPE.itemsize

    def encode(rows: np.ndarray) -> bytes:
        planes = np.ascontiguousarray(rows).view(np.uint8).reshape(len(rows), width).T
        return isal_zlib.compress(planes.tobytes(), 1)

    return encode


class WriterFile:
    """The writer's handle: SWMR epochs, chunk writes with offsets, the index row log."""

    def __init__(self, path: str, mode: str, locking: object = None):
        self.path = path
        exists = os.path.exists(path)
        if mode == "r+" and not exists:
            raise StoreNotFoundError(f"{path} does not exist")
        if mode == "x" and exists:
            raise StoreExistsError(f"{path} already exists (mode 'x')")
        if exists and mode in ("r+", "a") and not h5py.is_hdf5(path):
            raise NotAStoreError(f"{path} is not an HDF5 file")
        self._abandoned = self._closing = False
        self._lock = WriterLock(
            path, create=not exists, exclusive_create=(mode == "x"), locking=locking
        )
        self.created = mode in ("w", "x") or not exists
        self.recovered = False
        #: the file's size before recovery extended it to HDF5's end-of-allocation (or None)
        self.extended_from: int | None = None
        try:
            with self.guard():
                if self.created:
                    self.f = _hdf5_create(path)
                    self._fd = self.f.id.get_vfd_handle()
                    fmt.create_layout(self.f)
                    self.f.flush()
                    self.version = fmt.FORMAT_VERSION
                else:
                    self.f = self._open_existing()
                    self._fd = self.f.id.get_vfd_handle()
                    # before recovery or check_root read anything (see _containment)
                    check_contained(self.f, path)
                    #: the format version the file was created with, which it keeps
                    self.version = fmt.check_root(self.f, path)
        except BaseException:
            # (after a refused write, guard() has closed the file already)
            if not self._abandoned and getattr(self, "f", None) is not None and self.f.id.valid:
                with contextlib.suppress(Exception):
                    self.f.close()
            self._lock.release()
            if self.created and mode in ("x", "a") and not exists:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        self.swmr = False
        self._forget_handles()
        self.offset_fallbacks = 0  # chunk offsets HDF5 had to be asked for
        # Per stack, how far chunks may have been written: the stack's length when this
        # session first extended it (a dead writer's chunks lie below), then every position a
        # batch was given (a batch that failed left its chunks).
        self._written_extent: dict[int, int] = {}

    def _open_existing(self) -> h5py.File:
        with open(self.path, "rb") as fh:
            self._original_head = fh.read(SUPERBLOCK_BYTES)
        try:
            return _hdf5_open(self.path, "r+")
        except OSError as exc:
            msg, flags = str(exc), writer_flags(self.path)
            if "already open for read-only" in msg or _LOCKING_MISMATCH in msg:
                raise StoreLockedError(
                    f"{self.path} is open read-only in this process (through h5py?); HDF5 "
                    "cannot open it for writing too: close that handle first"
                ) from None
            if flags and not self._lock.held:
                raise StoreLockedError(
                    f"{self.path} is marked open by a writer, and without the writer lock "
                    "(locking=False, or no flock on this file system) h5store cannot tell "
                    "whether that writer is alive; once sure it is not, run `h5clear -s "
                    f"{self.path}` (hdf5-tools) and reopen"
                ) from None
            if flags and ("already open for write" in msg or "truncated file" in msg):
                # We hold the writer lock, so the writer that set these flags is dead (killed,
                # or stopped by a refused write); clearing them also extends a short file.
                size, eoa = os.path.getsize(self.path), stored_eoa(self.path)
                clear_writer_flags(self.path)
                if eoa is not None and eoa > size:  # and it had run out of space
                    self.extended_from = size
            elif "truncated file" in msg:
                # Closed cleanly but short: HDF5 recorded space it then failed to write (an
                # older h5store on a full disk). Nothing committed lies there (see guard());
                # the store checks that before trusting it.
                self.extended_from = extend_to_eoa(self.path)
                if self.extended_from is None:
                    raise _describe_open_error(self.path, exc) from None
            else:
                raise _describe_open_error(self.path, exc) from None
        self.recovered = True
        try:
            return _hdf5_open(self.path, "r+")
        except OSError as exc:
            raise _describe_open_error(self.path, exc) from None

    def undo_extension(self) -> None:
        """Give the file back its size from before recovery (the store found committed images
        beyond it: the file was cut short, and extending it would hide that)."""
        if self.extended_from is not None:
            self.abandon()
            with open(self.path, "r+b") as fh:
                fh.write(self._original_head)  # the superblock as it was (flags, end address)
                fh.truncate(self.extended_from)

    # ------------------------------------------------------------------ refused writes

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Around every sequence of HDF5 writes: a write the system refuses (full disk, size
        limit, I/O error, permission) becomes a :class:`WriteFailedError` (or
        :class:`StorePermissionError`), and the writer stops on the spot (:meth:`abandon`).

        Why the committed images survive: HDF5 reports the refused write, and nothing after it
        reaches the file, so the file holds a prefix of the writer's writes, exactly what a
        writer killed at that moment leaves, which recovery is built and tested for. The
        commit record of a batch is written only after its chunks were flushed, so every
        committed row points to bytes that were written before the failure.
        """
        if hasattr(self, "_lock") and not self._lock.still_names_file(self.path):
            self.abandon()
            raise StoreVanishedError(
                errno.ENOENT,
                f"{self.path} was deleted or replaced while open for writing; nothing more is "
                "written (it would be lost with the deleted file)",
            )
        try:
            yield
        except (OSError, RuntimeError) as exc:
            if isinstance(exc, H5StoreError):
                raise
            err = write_error(exc, self.path)
            if err is None:
                raise
            self.abandon()
            raise err from exc

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def abandon(self) -> None:
        """Stop writing without another byte reaching the file, close, and release the lock.

        Closing an HDF5 file flushes; after a refused write that flush would write whatever
        it still can (metadata in place) and break the prefix property :meth:`guard` relies on,
        and so would HDF5's own cleanup at exit. So HDF5's file descriptor is first pointed at
        an anonymous in-memory file: HDF5 closes and cleans up there, the store file keeps its
        "open for write" flags, which tell the next writer to recover it. HDF5 gets one close
        attempt only: closing a file whose close failed halfway crashes it.
        """
        f = getattr(self, "f", None)
        if not self._abandoned and f is not None and f.id.valid:
            # The descriptor as HDF5 opened it: a file whose close failed halfway (an epoch's
            # reopen) can no longer be asked for it without crashing.
            with contextlib.suppress(Exception):
                sink = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                try:
                    os.dup2(sink, self._fd)
                finally:
                    os.close(sink)
            if not self._closing:
                with contextlib.suppress(Exception):
                    f.close()
        self._abandoned = True
        self._forget_handles()
        if hasattr(self, "_lock"):
            self._lock.release()

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
            self._forget_handles()
            self._row_log = (self.f[fmt.INDEX], self.f[fmt.INDEX_TAIL])
        return self.f

    def _reopen(self) -> None:
        # SWMR mode cannot be left without closing the file.
        self._closing = True  # a close that fails halfway must not be retried (see abandon)
        self.f.close()
        self._closing = False
        self._forget_handles()
        self.f = _hdf5_open(self.path, "r+")
        self._fd = self.f.id.get_vfd_handle()
        self.swmr = False

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        try:
            f = getattr(self, "f", None)
            if not self._abandoned and f is not None and f.id.valid:
                self._closing = True
                with self.guard():
                    f.close()
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ stacks and chunks

    def dataset(self, name: str) -> h5py.Dataset:
        """A handle on a dataset written through HDF5's chunk cache (/scores, /sources,
        /labels, /stacks), kept open for the epoch: HDF5 writes cached chunks when the last
        handle closes, and a write refused there would be lost without a word (h5py ignores
        errors in destructors) and leave HDF5 unstable; kept open, they are written by the next
        flush, whose errors reach :meth:`guard`."""
        ds = self._stack_handles.get(name)
        if ds is None:
            ds = self._stack_handles[name] = self.f[name]
        return ds

    def _forget_handles(self) -> None:
        self._stack_handles: dict[int | str, h5py.Dataset] = {}
        self._stack_extents: dict[int, int] = {}  # stack id: its length, as the handle saw it

    def stack(self, stack_id: int, path: str) -> h5py.Dataset:
        ds = self._stack_handles.get(stack_id)
        if ds is None:
            ds = self._stack_handles[stack_id] = self.f[path]
        return ds

    def extend_stack(self, stack_id: int, length: int) -> int:
        """Make room for ``length`` images in a stack opened with :meth:`stack`. Returns how
        many of its positions may hold a chunk already, which a write there replaces in place
        rather than at the file's end. Stacks grow to twice their extent and at least
        ``STACK_GROWTH_MIN`` images, so a writer resizes each about log(N) times, not once a
        batch (a resize under SWMR costs about 85 us); close trims them to their images (the
        format allows a stack longer than its class while a writer is active, and an extent
        allocates nothing)."""
        stack = self._stack_handles[stack_id]
        current = self._stack_extents.get(stack_id)
        if current is None:  # asked of HDF5 once per handle: 20 us, for each stack and batch
            current = self._stack_extents[stack_id] = stack.shape[0]
        written = self._written_extent.setdefault(stack_id, current)
        if current < length:
            self._stack_extents[stack_id] = max(length, 2 * current, STACK_GROWTH_MIN)
            stack.resize(self._stack_extents[stack_id], axis=0)
        self._written_extent[stack_id] = max(written, length)
        return written

    def write_chunks(
        self,
        stacks: Sequence[h5py.Dataset],
        stack_of_image: Sequence[int],
        positions: Sequence[int],
        encoded: Iterable[tuple[bytes, int]],
    ) -> tuple[list[int], list[bytes], list[int]]:
        """Direct-write each (payload, crc32) ``encoded`` yields at its position of its stack,
        in order. Returns where the file ended before every ``OFFSET_SAMPLE``-th image and
        after the last (for :meth:`locate_chunks`), the payloads and their CRCs. The loop
        holds only HDF5's chunk write: at 32 px it costs about 5 us, so every Python step more
        is felt, and asking for the file's end costs 1 us."""
        get_filesize = self.f.id.get_filesize
        writes = [stack.id.write_direct_chunk for stack in stacks]
        rests = [(0,) * (stack.ndim - 1) for stack in stacks]
        jobs = [(writes[s], (p, *rests[s])) for p, s in zip(positions, stack_of_image)]
        marks: list[int] = []
        payloads: list[bytes] = []
        crcs: list[int] = []
        add_payload, add_crc = payloads.append, crcs.append
        encoded = iter(encoded)
        for start in range(0, len(jobs), OFFSET_SAMPLE):
            marks.append(get_filesize())
            for (write, chunk), (payload, crc) in zip(jobs[start : start + OFFSET_SAMPLE], encoded):
                write(chunk, payload)
                add_payload(payload)
                add_crc(crc)
        marks.append(get_filesize())
        return marks, payloads, crcs

    def locate_chunks(
        self,
        stacks: Sequence[h5py.Dataset],
        stack_of_image: Sequence[int],
        positions: Sequence[int],
        payloads: Sequence[bytes],
        nbytes: np.ndarray,
        marks: Sequence[int],
        rewritten: np.ndarray,
    ) -> np.ndarray:
        """Where each chunk :meth:`write_chunks` wrote lies in the file (call after a flush).

        Free-space reuse is off, so HDF5 allocates at the file's end, in order: where the file
        grew between two marks by exactly the payloads written in between, each of them lies
        at its mark plus the bytes written before it, with nothing to read. Elsewhere (HDF5
        grew its chunk index in between, one sample in fifty to a hundred) each payload is
        read back where it would lie after the gaps found so far or after the whole gap, or
        found in the bytes between; only a payload found nowhere there is looked up in HDF5's
        chunk index, which costs up to 1 ms. Samples holding an image ``rewritten`` (its
        position may hold a chunk already, which HDF5 can replace in place) are read back
        whatever the marks say."""
        n = len(payloads)
        sample_of = np.arange(n) // OFFSET_SAMPLE
        before = np.cumsum(nbytes) - nbytes  # bytes written in this batch before each image
        sample_starts = np.arange(0, n, OFFSET_SAMPLE)
        marks_arr = np.asarray(marks, dtype=np.int64)
        offsets = marks_arr[sample_of] + before - before[sample_starts][sample_of]
        gaps = np.diff(marks_arr) - np.add.reduceat(nbytes, sample_starts)
        doubtful = (gaps != 0) | np.add.reduceat(rewritten, sample_starts).astype(bool)
        fd: int = self.f.id.get_vfd_handle() if doubtful.any() else -1  # (-1: no sample)
        for sample in np.flatnonzero(doubtful).tolist():
            shift, gap = 0, int(gaps[sample])
            for k in range(sample * OFFSET_SAMPLE, min(n, (sample + 1) * OFFSET_SAMPLE)):
                payload, predicted = payloads[k], int(offsets[k])
                # A payload HDF5's metadata can hold by chance is not searched for: only
                # HDF5's chunk index says where it is.
                searchable = _distinctive(payload)
                for candidate in (shift, gap) if searchable else ():
                    at = predicted + candidate
                    if at >= 0 and os.pread(fd, len(payload), at) == payload:
                        shift = candidate
                        break
                else:
                    # More than one gap in the sample (a new stack's first chunks): this one
                    # lies between the shift so far and the whole gap. (A chunk a dead writer
                    # left at this position can be rewritten in place: the file then grows
                    # by less than the payloads, and HDF5's index answers.)
                    window = b""
                    if searchable and gap > shift and predicted + shift >= 0:
                        window = os.pread(fd, gap - shift + len(payload), predicted + shift)
                    found = window.find(payload)
                    if found >= 0:
                        shift += found
                        offsets[k] = predicted + shift
                        continue
                    stack = stacks[stack_of_image[k]]
                    rest = (0,) * (stack.ndim - 1)
                    info = stack.id.get_chunk_info_by_coord((positions[k], *rest))
                    if info.byte_offset is None or info.size != len(payload):
                        raise FormatError(
                            f"chunk {positions[k]} of {stack.name} was not stored intact"
                        )
                    self.offset_fallbacks += 1
                    shift = info.byte_offset - predicted
                offsets[k] = predicted + shift
        return offsets

    # ------------------------------------------------------------------ the index row log

    def rows_on_disk(self) -> tuple[int, int]:
        """(rows in /index, used rows of /index_tail) as the committed state stands."""
        return self.f[fmt.INDEX].shape[0], self._tail_used - self._tail_start

    def load_row_log(self, committed: np.ndarray) -> None:
        """Bring /index and /index_tail to a normal form for appending: /index holds the
        committed rows in whole chunks and the tail the rest, or (a closed file) /index holds
        them all and the tail none. Trims what a dead writer left in flight. Does nothing
        (writes nothing) when the file is already in such a form.

        In memory, ``_tail_rows[:_tail_used]`` are the rows after /index's whole chunks; the
        first ``_tail_start`` of them stand in /index's last, partial chunk (a closed file's),
        the others in the tail from its row 0. The next overflow writes them all to /index as
        whole chunks. Leaving a closed file's last rows in /index, rather than moving them back
        into the tail, spares a 1.2 file's emptied tail the chunks that would hold them (freed
        space is not reused: up to 40 kB a session)."""
        f = self.swmr_off()
        index, tail = f[fmt.INDEX], f[fmt.INDEX_TAIL]
        # The file's own geometry, not this version's default: the tail holds one /index chunk.
        self._capacity = capacity = tail.maxshape[0] or tail.shape[0]
        if tail.shape[0] < capacity:
            # A closed 1.2 file's tail has no rows: given them back, they read as fill (rows
            # without payload), which commits nothing.
            tail.resize(capacity, axis=0)
            f.flush()
        self._encode_index_chunk = _index_chunk_encoder(index, capacity)
        # The tail's rows as written, so that moving them to /index reads nothing back.
        self._tail_rows = np.zeros(capacity, dtype=fmt.INDEX_DTYPE)
        self._tail_start = 0
        if self.created:  # this session made the layout: both tables are empty
            self._tail_used = self._index_rows = 0
            return
        n = len(committed)
        full = (n // capacity) * capacity
        rest = committed[full:]
        on_disk_tail = tail[()]
        fill = np.flatnonzero(on_disk_tail["nbytes"] == 0)
        used = int(fill[0]) if len(fill) else len(on_disk_tail)
        in_form = (
            index.shape[0] == full
            and used == len(rest)
            and (not used or np.array_equal(on_disk_tail[:used], rest))
        )
        if index.shape[0] == n and not used:  # closed: every row in /index, none in the tail
            self._tail_start = len(rest)
        elif not in_form:
            if index.shape[0] < full:
                # Only a full tail can be missing from /index: copy it over, then empty it.
                index.resize(full, axis=0)
                index[full - capacity : full] = committed[full - capacity : full]
                f.flush()
            new_tail = np.zeros(capacity, dtype=fmt.INDEX_DTYPE)
            new_tail[: len(rest)] = rest
            # Rows past the rest and past every row written on disk are fill already: written
            # again, they would allocate the chunks of a trimmed (1.2) tail for nothing.
            written = np.flatnonzero(on_disk_tail != new_tail[-1:])
            stop = max(len(rest), int(written[-1]) + 1 if len(written) else 0)
            tail[:stop] = new_tail[:stop]
            f.flush()
            if index.shape[0] > full:
                index.resize(full, axis=0)
                f.flush()
        self._tail_used = len(rest)
        self._tail_rows[: len(rest)] = rest
        self._index_rows = full

    def append_rows(self, rows: np.ndarray) -> None:
        """Append committed-to-be rows (the last one carrying batch_end) in SWMR mode."""
        f = self.swmr_on()
        index, tail = self._row_log
        capacity = self._capacity
        used, in_index = self._tail_used, self._tail_start
        if used + len(rows) <= capacity:
            _write_rows(tail, used - in_index, rows)
            self._tail_rows[used : used + len(rows)] = rows
            self._tail_used += len(rows)
            f.flush()
            return
        # The tail overflows: whole chunks (old tail rows first) go to /index, the remainder
        # becomes the new tail. Until the remainder with its batch_end lands, the rows copied
        # to /index end without a batch_end, so a crash in between commits nothing.
        pending = np.concatenate([self._tail_rows[:used], rows]) if used else rows
        full = (len(pending) // capacity) * capacity
        start = self._index_rows
        index.resize(start + full, axis=0)
        if self._encode_index_chunk is None:
            _write_rows(index, start, pending[:full])
        else:
            for k in range(0, full, capacity):
                chunk = self._encode_index_chunk(pending[k : k + capacity])
                index.id.write_direct_chunk((start + k,), chunk)
        f.flush()
        remainder = pending[full:]
        # An empty tail that stays empty is already all zeros: a batch of whole chunks (1,024
        # rows, say) commits with one write and one flush. Tail rows past both the old and
        # the new rows are zeros already, and not written (in a 1.2 file, unwritten ones have
        # no chunk yet).
        stop = max(used - in_index, len(remainder))
        if stop:
            self._tail_rows[...] = 0
            self._tail_rows[: len(remainder)] = remainder
            _write_rows(tail, 0, self._tail_rows[:stop])
            f.flush()
        self._index_rows = start + full
        self._tail_used = len(remainder)
        self._tail_start = 0

    def write_row(self, row_number: int, row: np.void) -> None:
        """Rewrite one committed row in place (deletion flags)."""
        self.swmr_on()
        index, tail = self._row_log  # open handles: see dataset()
        k = row_number - self._index_rows  # (its place in _tail_rows, if not negative)
        if k < self._tail_start:
            index[row_number] = row
        else:
            tail[k - self._tail_start] = row
        if k >= 0:
            self._tail_rows[k] = row

    def seal_row_log(self) -> None:
        """At close: move the tail into /index, so that a closed file has one complete index
        table for viewers. Copy first, empty the tail second; a crash between leaves duplicate
        rows that readers drop by id. The copy extends /index with SWMR on, whose ordered
        metadata writes leave a consistent file at every point a writer can be killed (with
        SWMR off, the resize wrote several metadata blocks, and a kill between them left a
        file that opened in neither mode). A 1.2 file's tail is then emptied by giving it 0
        rows (one header write, SWMR off: a dataset cannot shrink in SWMR mode), so viewers
        see no rows of zeros; older files keep a full-size tail, which writers of their
        versions expect."""
        if not hasattr(self, "_tail_used"):
            return  # the row log was never loaded: its rows stand as they were found
        trim = fmt.has_checks(self.version)
        on_disk = self._tail_used - self._tail_start
        if not on_disk and not (trim and self.f[fmt.INDEX_TAIL].shape[0]):
            return
        if on_disk:
            f = self.swmr_on()
            index = f[fmt.INDEX]
            start = self._index_rows + self._tail_start
            index.resize(start + on_disk, axis=0)
            _write_rows(index, start, self._tail_rows[self._tail_start : self._tail_used])
            f.flush()
            self._tail_start = self._tail_used  # all of them in /index now
        f = self.swmr_off()
        tail = f[fmt.INDEX_TAIL]
        if trim:
            tail.resize(0, axis=0)
        else:
            _write_rows(tail, 0, np.zeros(on_disk, dtype=fmt.INDEX_DTYPE))
        f.flush()
