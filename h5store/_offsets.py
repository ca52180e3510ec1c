"""The chunk-offset cache: every index row keeps the file offset of its image's chunk, so reads
slice the memory map without asking HDF5. It is a cache, not the truth: a tool that rewrote
the file (h5repack) moves chunks, so it is checked at open and rebuilt from HDF5's own chunk
index when stale, and ``verify`` compares all of it with HDF5.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import h5py
import numpy as np

from . import format as fmt
from ._catalog import Stack
from ._source import ByteSource
from .errors import FormatError
from .format import crc32
from .index import Index


def rows_intact(index: Index, source: ByteSource, rows: Sequence[int]) -> bool:
    """Whether the bytes at every one of ``rows``' cached offsets match its CRC-32 (one round
    of reads: a remote source fetches them together)."""
    size = source.size()
    rows = list(rows)
    if any(index.offsets[r] + index.nbytes[r] > size for r in rows):
        return False
    payloads = source.read_ranges([index.offsets[r] for r in rows], [index.nbytes[r] for r in rows])
    return all(crc32(p) == int(index.crcs[r]) for r, p in zip(rows, payloads))


def chunk_locations(f: h5py.File, stack: Stack) -> dict[int, tuple[int, int]]:
    """Position -> (file offset, size) of every chunk of ``stack``, from HDF5; FormatError
    naming the stack where it is not a chunked dataset HDF5 can list (a crafted file's link,
    loop or virtual dataset)."""
    found: dict[int, tuple[int, int]] = {}
    try:
        ds = f[stack.path]
        if not isinstance(ds, h5py.Dataset) or ds.chunks is None or ds.is_virtual:
            raise TypeError("not a chunked dataset")
        ds.id.chunk_iter(
            lambda info: found.__setitem__(info.chunk_offset[0], (info.byte_offset, info.size))
        )
    except fmt.DAMAGE_ERRORS + (TypeError,) as exc:
        raise FormatError(
            f"{f.filename}: the stack {stack.path} cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    return found


def check_and_rebuild(
    f: h5py.File, index: Index, source: ByteSource, stacks: Sequence[Stack], samples: int = 8
) -> None:
    """Check the first, the last and a few random rows; if any is stale, rebuild every cached
    offset from HDF5's chunk index."""
    n = len(index)
    if not n:
        return
    rows = {0, n - 1, *random.Random(n).sample(range(n), min(samples, n))}
    if rows_intact(index, source, sorted(rows)):
        return
    stack_column, positions = index.column("stack"), index.column("position")
    for k, stack in enumerate(stacks):
        where = np.flatnonzero(stack_column == k)
        if not len(where):
            continue
        found = chunk_locations(f, stack)
        offsets = np.array([found.get(int(p), (-1, 0))[0] for p in positions[where]])
        keep = offsets >= 0
        index.set_offsets(where[keep], offsets[keep])


def misplaced_ids(f: h5py.File, rows: np.ndarray, stacks: Sequence[Stack]) -> list[int]:
    """Ids of ``rows`` whose cached offset or size disagrees with HDF5's chunk index."""
    misplaced = []
    for k, stack in enumerate(stacks):
        where = np.flatnonzero(rows["stack"] == k)
        if not len(where):
            continue
        found = chunk_locations(f, stack)
        for row in rows[where]:
            location = found.get(int(row["position"]))
            if location is None or location != (int(row["offset"]), int(row["nbytes"])):
                misplaced.append(int(row["id"]))
    return misplaced
