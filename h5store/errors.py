"""The exceptions h5store raises.

Every error h5store raises on purpose derives from :class:`H5StoreError`, so callers can catch
one class. Subclasses also derive from the matching builtin (``ValueError``, ``KeyError``,
``PermissionError``) so code written against plain Python conventions keeps working.
"""

from __future__ import annotations


class H5StoreError(Exception):
    """Base class of all h5store errors."""


class FormatError(H5StoreError):
    """The file is not a readable h5store file (not HDF5, not ours, damaged, or too new)."""


class NotAStoreError(FormatError):
    """The file is not HDF5, or is HDF5 but was not written by h5store."""


class VersionError(FormatError):
    """The file was written by a newer, incompatible major version of the format."""


class RecoveryNeededError(FormatError):
    """A writer died while it had the file open; opening it once with mode 'a' (or 'r+')
    recovers it. Until then readers cannot open it."""


class UnrepairableError(FormatError):
    """A writer died at a moment that left HDF5 metadata this version cannot repair in place;
    mode 'r' still reads every committed image, so export them to a new store."""


class DamagedImageError(FormatError):
    """An image's stored bytes no longer match the CRC-32 recorded when it was written (the
    file was damaged on disk or by another program); the store's other images stay readable.
    ``image_id`` names the image."""

    def __init__(self, message: str, image_id: int | None = None):
        super().__init__(message)
        self.image_id = image_id


class StoreNotFoundError(H5StoreError, FileNotFoundError):
    """The file does not exist and the mode does not create it."""


class StoreExistsError(H5StoreError, FileExistsError):
    """Mode 'x' was asked for a file that already exists."""


class TargetExistsError(H5StoreError, FileExistsError):
    """An export or a repack would replace files that exist (they take ``overwrite=True``)."""


class DatabaseError(H5StoreError):
    """A database refused or could not take the index (unreachable, rejected rows); nothing
    was written to it."""


class ReadOnlyError(H5StoreError, PermissionError):
    """A write was attempted on a store opened read-only."""


class StoreLockedError(H5StoreError, BlockingIOError):
    """Another writer has the file open."""


class WriteFailedError(H5StoreError, OSError):
    """The operating system refused a write (I/O error, file vanished, ...) while a writer was
    committing. The writer is closed and its lock released; nothing it committed is lost, and
    opening the file with mode 'a' recovers it. ``errno`` is the system's error number."""


class StorageFullError(WriteFailedError):
    """The file could not grow: the disk or quota is full (ENOSPC, EDQUOT) or the file hit a
    size limit (EFBIG). As :class:`WriteFailedError`: free space, then reopen with mode 'a'."""


class StoreVanishedError(WriteFailedError):
    """The store's path was deleted or replaced by another file while a writer had it open:
    what the writer would commit now would go into a file nobody can open again."""


class StorePermissionError(H5StoreError, PermissionError):
    """The file, its directory or its file system does not allow the access the mode needs
    (read-only file or directory, read-only file system, permission denied)."""


class InvalidInputError(H5StoreError, ValueError):
    """An image, label, score, id or argument is not acceptable; nothing was written."""


class DuplicateIdError(InvalidInputError):
    """An id is already used in the store or appears twice in one batch."""


class AlreadyImportedError(DuplicateIdError):
    """A folder's images are in the store already (``allow_duplicates=True`` adds them again)."""


class CodecError(InvalidInputError):
    """A codec cannot hold the image, was configured wrongly, or was given corrupt bytes."""


class UnknownIdError(H5StoreError, KeyError):
    """No (live) image has this id."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ClosedStoreError(H5StoreError, ValueError):
    """The store was used after it was closed."""


class RemoteReadError(H5StoreError):
    """A store read by URL could not be read: the server refused the credentials, or kept
    failing (connection refused or reset, timeouts, 5xx) through the bounded retries. The
    message names the URL (never a credential) and, for image reads, the ids; ``url`` holds
    the URL, ``ids`` the ids (or None)."""

    def __init__(self, message: str, url: str = "", ids: list[int] | None = None):
        super().__init__(message)
        self.url = url
        self.ids = ids

    def naming(self, ids) -> RemoteReadError:
        """This error, its message naming the images that were being read."""
        ids = [int(i) for i in ids]
        shown = ", ".join(map(str, ids[:10])) + (f", ... ({len(ids)} ids)" if len(ids) > 10 else "")
        return RemoteReadError(f"{self} (reading ids {shown})", self.url, ids)
