"""Where a store's bytes come from: the one interface the read path uses to fetch them.

A local file is a :class:`~h5store._file.MappedFile` (a memory map: a slice is a read); a
store in object storage or on a web server is a remote source, where every read is a request
and a batch must be one round of concurrent ranged requests. Everything above this interface
(index loading, CRC checks, decoding, the sharded view, the loaders) is the same for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

#: What a read returns: bytes, or a view that stays valid while the source is open.
Buffer = bytes | memoryview


@runtime_checkable
class ByteSource(Protocol):
    """The bytes of one store file, read by offset."""

    #: the path or URL, as error messages name the store
    name: str

    def size(self) -> int:
        """The source's current size in bytes (a local file grows while a writer appends)."""
        ...

    def read(self, offset: int, size: int) -> Buffer:
        """Bytes ``[offset, offset + size)``; FormatError where they lie past the end."""
        ...

    def read_ranges(self, offsets: Sequence[int], sizes: Sequence[int]) -> Sequence[Buffer]:
        """Many ranges in one round (a remote source merges neighbours and sends the rest
        concurrently), in the order given."""
        ...

    def close(self) -> None: ...
