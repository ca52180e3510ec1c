"""Calls into libhdf5 that h5py does not wrap, made through ctypes on the HDF5 library h5py
itself loaded (so that both agree on every handle). Each returns None or does nothing where the
library lacks the function: the files h5store writes are then the same, only less crash-proof.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

import h5py


@functools.cache
def link_space_functions() -> tuple[Callable[..., int], ...] | None:
    # h5py does not wrap H5Pset_link_phase_change, H5Pset_est_link_info and
    # H5Pget_link_phase_change. Looked up through h5py's own extension module, so that they
    # come from the HDF5 library h5py uses.
    try:
        lib = ctypes.CDLL(h5py.h5p.__file__)
        return lib.H5Pset_link_phase_change, lib.H5Pset_est_link_info, lib.H5Pget_link_phase_change
    except (OSError, AttributeError):
        return None


def reserve_links(
    plist: h5py.h5p.PropGCID | h5py.h5p.PropFCID, links: int, name_bytes: int
) -> None:
    """Header room and compact storage for ``links`` links of about ``name_bytes`` each in a
    group (or, given a file creation list, the root group); without the functions the file
    is the same, only less crash-proof."""
    functions = link_space_functions()
    if functions is not None:
        set_phase_change, set_estimate, _ = functions
        hid = ctypes.c_int64(plist.id)
        set_phase_change(hid, ctypes.c_uint(links), ctypes.c_uint(links // 2))
        set_estimate(hid, ctypes.c_uint(links), ctypes.c_uint(name_bytes))


def max_compact_links(plist: h5py.h5p.PropGCID) -> int | None:
    """How many links a group created with ``plist`` keeps compact (in its object header);
    None where HDF5 cannot say."""
    functions = link_space_functions()
    if functions is None:
        return None
    max_compact, min_dense = ctypes.c_uint(), ctypes.c_uint()
    if functions[2](ctypes.c_int64(plist.id), ctypes.byref(max_compact), ctypes.byref(min_dense)):
        return None  # (a negative status)
    return max_compact.value
