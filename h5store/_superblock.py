"""Clearing the status flags a dead writer leaves in an HDF5 superblock (what ``h5clear -s
--increment=0`` does), so the file opens again.

HDF5 1.10+ sets "open for write" (and "open for SWMR write") flags in a version-2/3 superblock
while a writer has the file open and clears them on close. A writer killed in between leaves
them set, and every later open fails with "file is already open for write". h5store only calls
this while it holds the writer lock, which proves that no writer is alive. It also raises the
stored end-of-allocation to the real file size, since space the dead writer allocated after its
last superblock write is referenced by metadata it flushed: like ``h5clear --increment`` it
adds a margin, because a dead writer may have flushed a reference to space it allocated but
never wrote (a raw-data chunk still in its chunk cache), which lies beyond the end of the file.
"""

from __future__ import annotations

import os
import struct

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
WRITE_FLAG = 0x01  # file consistency flags (HDF5's H5F_SUPER_WRITE_ACCESS ...)
SWMR_WRITE_FLAG = 0x04  # ... and H5F_SUPER_SWMR_WRITE_ACCESS)
#: Larger than all the raw-data chunks a writer keeps cached (index, tail, score rows) plus
#: its dirty metadata; the unused part stays a hole in the file.
EOA_MARGIN = 8 << 20
_MASK = 0xFFFFFFFF
#: A version 2/3 superblock with 8-byte addresses, checksum included.
SUPERBLOCK_BYTES = 48


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum of HDF5 metadata blocks."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK
    i = 0
    while length > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & _MASK
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & _MASK
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & _MASK
        a = ((a - c) & _MASK) ^ _rot(c, 4)
        c = (c + b) & _MASK
        b = ((b - a) & _MASK) ^ _rot(a, 6)
        a = (a + c) & _MASK
        c = ((c - b) & _MASK) ^ _rot(b, 8)
        b = (b + a) & _MASK
        a = ((a - c) & _MASK) ^ _rot(c, 16)
        c = (c + b) & _MASK
        b = ((b - a) & _MASK) ^ _rot(a, 19)
        a = (a + c) & _MASK
        c = ((c - b) & _MASK) ^ _rot(b, 4)
        b = (b + a) & _MASK
        length -= 12
        i += 12
    if length == 0:
        return c
    tail = data[i : i + length] + bytes(12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & _MASK
    b = (b + int.from_bytes(tail[4:8], "little")) & _MASK
    c = (c + int.from_bytes(tail[8:12], "little")) & _MASK
    c = (c ^ b) - _rot(b, 14) & _MASK
    a = (a ^ c) - _rot(c, 11) & _MASK
    b = (b ^ a) - _rot(a, 25) & _MASK
    c = (c ^ b) - _rot(b, 16) & _MASK
    a = (a ^ c) - _rot(c, 4) & _MASK
    b = (b ^ a) - _rot(a, 14) & _MASK
    c = (c ^ b) - _rot(b, 24) & _MASK
    return c


def superblock_intact(path: str | os.PathLike) -> bool:
    """False if a version 2/3 superblock's checksum fails (other versions: True). Checked
    before HDF5 sees the file: in SWMR-read mode HDF5 retries a failing checksum for a long
    time, and a flipped flag byte is what sends a reader into that mode."""
    with open(path, "rb") as fh:
        block = fh.read(SUPERBLOCK_BYTES)
    if len(block) < SUPERBLOCK_BYTES or block[:8] != _SIGNATURE or block[8] not in (2, 3):
        return True
    if block[9] != 8:
        return True
    return struct.unpack_from("<I", block, 44)[0] == lookup3(block[:44])


def writer_flags(path: str | os.PathLike) -> int:
    """The superblock's file-consistency flags (0 when closed cleanly or not a v2/v3
    superblock)."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    if len(head) < 12 or head[:8] != _SIGNATURE or head[8] not in (2, 3):
        return 0
    return head[11]


def stored_eoa(path: str | os.PathLike) -> int | None:
    """The end-of-allocation address a v2/v3 superblock at offset 0 records (None if the
    superblock is not one this module understands or its checksum fails)."""
    with open(path, "rb") as fh:
        block = fh.read(48)
    if len(block) < 48 or block[:8] != _SIGNATURE or block[8] not in (2, 3) or block[9] != 8:
        return None
    if struct.unpack_from("<I", block, 44)[0] != lookup3(block[:44]):
        return None
    base, _ext, eoa = struct.unpack_from("<QQQ", block, 12)
    return eoa if base == 0 else None


def extend_to_eoa(path: str | os.PathLike) -> int | None:
    """Make a file that is shorter than its recorded end-of-allocation that long again (a
    hole: no byte that exists changes), so that HDF5 opens it; returns the old size, or None
    if the file was not short. A writer whose disk filled up leaves such a file: HDF5 moved
    the end-of-allocation, then failed to write there."""
    eoa = stored_eoa(path)
    size = os.path.getsize(path)
    if eoa is None or eoa <= size:
        return None
    with open(path, "r+b") as fh:
        fh.truncate(eoa)
        os.fsync(fh.fileno())
    return size


def clear_writer_flags(path: str | os.PathLike) -> bool:
    """Clear the flags and raise EOA to the file size; True if the superblock was changed.

    Only superblocks at offset 0 with 8-byte addresses (what h5py writes) are handled.
    """
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        block = bytearray(fh.read(48))
        if len(block) < 48 or block[:8] != _SIGNATURE or block[8] not in (2, 3):
            return False
        if block[9] != 8 or block[11] == 0:
            return False
        if struct.unpack_from("<I", block, 44)[0] != lookup3(bytes(block[:44])):
            return False  # not a superblock we understand: leave it to HDF5 to complain
        block[11] = 0
        base, _ext, eoa = struct.unpack_from("<QQQ", block, 12)
        new_eoa = max(eoa, size) + EOA_MARGIN if base == 0 else eoa
        struct.pack_into("<Q", block, 28, new_eoa)
        struct.pack_into("<I", block, 44, lookup3(bytes(block[:44])))
        fh.seek(0)
        fh.write(block)
        # HDF5 refuses a file shorter than its EOA; the extension is a hole, not written data.
        fh.truncate(max(new_eoa, size))
        fh.flush()
        os.fsync(fh.fileno())
    return True
