"""Nothing outside the file: a store is read from its own bytes only, whoever made it.

HDF5 can make a file read others: an external link names an object in another file, a
dataset's raw data can live in external files (any file: ``/etc/passwd`` reads as labels) and
a virtual dataset maps other files' datasets into it. h5store writes none of these. At every
open, before a byte of data is read, :func:`check_contained` walks the objects h5store reads
(the root tables, every class group and stack, and for a writer every preview: readers never
read them) and refuses any such object, and any soft link among them, with a
:class:`FormatError` naming the path and the feature. The walk reads object headers only (no
data): about 20 us an object through h5py, which it uses for the few root tables and the
previews; the class groups, a thousand in some stores, are walked through HDF5's C functions
(about 30 us a class, its attributes for format.check_classes included: see _walk_classes).

The second line, for an object the walk does not know: the files h5store opens are
:class:`ContainedFile`, whose path lookups use :func:`access_list`: external-link traversal
refused by a callback, and HDF5's search prefixes for external links, external raw storage and
virtual-dataset sources pointing at a directory that does not exist. (HDF5 still tries an
absolute external-storage or VDS-source name as given: only the walk refuses those, which is
why it runs first.) Files opened with plain h5py are not affected: nothing in the file changes.
"""

from __future__ import annotations

import ctypes
import functools
import struct
import threading
from typing import Any, NamedTuple, NoReturn

import h5py
import numpy as np
from h5py import h5a, h5d, h5g, h5l, h5o, h5p, h5t
from h5py._objects import phil

from . import format as fmt
from .errors import FormatError

#: Where HDF5 is told to look for files named relative to nothing: a directory that cannot
#: exist (a file of that name can, but not a directory below it).
NOWHERE = b"/dev/null/h5store-reads-no-other-file"

_LINK_KINDS = {h5l.TYPE_SOFT: "a soft link", h5l.TYPE_EXTERNAL: "an external link"}

# H5L_elink_traverse_t: return negative to refuse the traversal.
_ELINK_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.POINTER(ctypes.c_uint),
    ctypes.c_int64,
    ctypes.c_void_p,
)
_refuse_elink = _ELINK_CALLBACK(lambda *_: -1)  # kept alive for the process's lifetime


@functools.cache
def access_list() -> h5p.PropDAID:
    """A dataset access list (HDF5's dataset access lists are link access lists too, and
    H5Oopen uses the one it is given as both) that follows nothing out of the file."""
    plist = h5p.create(h5p.DATASET_ACCESS)
    plist.set_efile_prefix(NOWHERE)
    plist.set_virtual_prefix(NOWHERE)
    # A virtual dataset's extent stops at its first missing source, and printf-style source
    # names are not searched for beyond it.
    plist.set_virtual_view(h5d.VDS_FIRST_MISSING)
    plist.set_virtual_printf_gap(0)
    # h5py wraps neither call; looked up through h5py's own module, so that they come from the
    # HDF5 library h5py uses (as _libhdf5 does).
    try:
        lib = ctypes.CDLL(h5p.__file__)
        lib.H5Pset_elink_prefix(ctypes.c_int64(plist.id), NOWHERE)
        lib.H5Pset_elink_cb(ctypes.c_int64(plist.id), _refuse_elink, None)
    except (OSError, AttributeError):
        pass  # the walk still refuses every external link among the objects h5store reads
    return plist


class ClassAttributes(NamedTuple):
    """A class group's own record of its class (see format.check_classes), as stored."""

    class_id: int
    label: bytes
    codec: bytes


class ContainedFile(h5py.File):
    """An ``h5py.File`` whose path lookups (``f[name]``, ``name in f``) use :func:`access_list`,
    through h5py's own (private) hook for a link access list; tests/test_untrusted.py checks
    that it still takes effect. Objects opened from it are plain h5py objects."""

    #: the class groups' attributes as the walk at open read them (see class_attributes)
    class_attributes: dict[bytes, ClassAttributes | None] | None = None

    @property
    def _lapl(self) -> h5p.PropLAID:
        return access_list()


def check_contained(f: h5py.File, path: str, *, previews: bool = True) -> None:
    """Refuse (FormatError) a file where an object h5store reads is a soft or external link, a
    virtual dataset or a dataset with external raw storage. Reads object headers, no data.
    ``previews``: walk the contact sheets too; only a writer reads them (their attributes).

    The class groups are walked below h5py (see _walk_classes), and each one's attributes
    read while it is open: on a reader's :class:`ContainedFile` they are kept for
    :func:`class_attributes` (format.check_classes), which would otherwise open every group
    again."""
    with fmt.damage_reported(path):
        known = {name.encode(): name for name in fmt.ROOT_LINKS}
        for name, obj in _members(h5g.open(f.id, b"/"), "", path, only=known):
            if name == fmt.CLASSES:
                seen = _walk_classes(obj, f"/{name}", path)
                # (a writer's recovery may yet change the groups; a reader's handle is final)
                if isinstance(f, ContainedFile) and f.mode == "r":
                    f.class_attributes = seen
            elif name == fmt.PREVIEWS and previews:
                for preview_name, preview in _members(obj, f"/{name}", path):
                    _members(preview, f"/{name}/{preview_name}", path)


def class_attributes(f: h5py.File) -> dict[bytes, ClassAttributes | None]:
    """Each class group's name -> its attributes (None: they cannot be read), as the walk at
    open read them on this handle, else read now (without walking)."""
    seen = getattr(f, "class_attributes", None)
    if seen is None:
        with fmt.damage_reported(f.filename):
            classes = h5g.open(f.id, fmt.CLASSES.encode())
            seen = _walk_classes(classes, f"/{fmt.CLASSES}", f.filename, walk=False)
    return seen


def _links(group: h5g.GroupID) -> list[tuple[bytes, int]]:
    links: list[tuple[bytes, int]] = []
    group.links.iterate(lambda raw, info: links.append((raw, info.type)), info=True)
    return links


def _members(
    group: h5g.GroupID,
    where: str,
    path: str,
    *,
    only: dict[bytes, str] | None = None,
    allowed_soft: bytes | None = None,
) -> list[tuple[str, h5g.GroupID]]:
    """Check the members of ``group`` (``where`` in the file), or those named in ``only``;
    return the subgroups. A soft link named ``allowed_soft`` is the one h5store writes itself:
    a class's link to its preview, for viewers; h5store never follows it (and a soft link
    cannot leave the file)."""
    groups = []
    for raw, kind in _links(group):
        if only is not None and raw not in only:
            continue  # not read by h5store
        if _hard(raw, kind, where, path, allowed_soft):
            obj = _check_object(group, raw, where, path)
            if obj is not None:
                groups.append((raw.decode("utf-8", "replace"), obj))
    return groups


def _hard(raw: bytes, kind: int, where: str, path: str, allowed_soft: bytes | None) -> bool:
    """Whether the link is a hard link to check; skip the allowed soft link, refuse others."""
    if kind == h5l.TYPE_HARD:
        return True
    if kind == h5l.TYPE_SOFT and raw == allowed_soft:
        return False
    _refuse(path, where, raw, _LINK_KINDS.get(kind, "a user-defined link"))


def _check_object(
    group: h5g.GroupID, raw: bytes, where: str, path: str, *, lookup: bytes | None = None
) -> h5g.GroupID | None:
    """Open ``group``'s member ``raw`` (``lookup``: by that path from ``group`` instead) and
    refuse it if it is a virtual dataset or one with external raw storage; return it if it is
    a group. A member whose header HDF5 cannot read
    is left to the read that needs it, which reports the damage (HDF5 cannot read through it
    either; a damaged /sources must not stop the images being read)."""
    try:
        obj = h5o.open(group, lookup or raw, lapl=access_list())
    except fmt.DAMAGE_ERRORS:
        return None
    if isinstance(obj, h5g.GroupID):
        return obj
    if isinstance(obj, h5d.DatasetID):
        plist = obj.get_create_plist()
        if plist.get_layout() == h5d.VIRTUAL:
            _refuse(path, where, raw, "a virtual dataset (its data lies in other files)")
        if plist.get_external_count():
            _refuse(path, where, raw, "a dataset stored in external files")
    return None


def _refuse(path: str, where: str, raw: bytes, feature: str) -> NoReturn:
    raise FormatError(
        f"{path}: {where}/{raw.decode('utf-8', 'replace')} is {feature}; h5store reads "
        "nothing outside the store file, so it refuses to open it (h5store never writes one: "
        "the file was made or changed elsewhere)"
    )


# --------------------------------------------------------------------------- class groups
#
# A store of 1,000 classes has 1,000 class groups, each opened at every open to check its
# members and read its three attributes. Through h5py objects that cost about 130 us a group
# (opening a dataset alone costs HDF5 30-50 us: a copy of its creation list, a chunk cache),
# 130 ms an open; through HDF5's C functions, with the stacks' headers read rather than the
# datasets opened, about 30 us (CPU, measured under load): 20 of them the 3 attributes, whose
# reads check each one holds a single value (6 calls an attribute).

#: H5O_native_info_t fields: the header's messages and the object's index and heap sizes
_NATIVE_INFO_HDR, _NATIVE_INFO_META_SIZE = 0x0008, 0x0010
#: in H5O_native_info_t: hdr.mesg.present (a bit per message type), meta_size.obj.index_size
_PRESENT_AT, _INDEX_SIZE_AT, _NATIVE_INFO_BYTES = 48, 64, 96
#: the External File List message type: raw data in other files
_EFL_BIT = 1 << 0x0007
_H5S_SCALAR = 0
_TEXT = h5py.string_dtype()
_HID = ctypes.c_int64
# H5L_iterate2_t; the link's type is the first member of its H5L_info2_t.
_LINK_VISITOR = ctypes.CFUNCTYPE(
    ctypes.c_int, _HID, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.py_object
)
_SIGNATURES = {
    "H5Gopen2": (_HID, [_HID, ctypes.c_char_p, _HID]),
    "H5Gclose": (ctypes.c_int, [_HID]),
    "H5Literate2": (
        ctypes.c_int,
        [_HID, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, _LINK_VISITOR, ctypes.py_object],
    ),
    "H5Oget_native_info_by_name": (
        ctypes.c_int,
        [_HID, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_uint, _HID],
    ),
    "H5Aopen": (_HID, [_HID, ctypes.c_char_p, _HID]),
    "H5Aget_space": (_HID, [_HID]),
    "H5Sget_simple_extent_type": (ctypes.c_int, [_HID]),
    "H5Sclose": (ctypes.c_int, [_HID]),
    "H5Aread": (ctypes.c_int, [_HID, _HID, ctypes.c_void_p]),
    "H5Aclose": (ctypes.c_int, [_HID]),
    "H5free_memory": (ctypes.c_int, [ctypes.c_void_p]),
}


@_LINK_VISITOR
def _collect_link(_group: int, name: bytes, info: Any, links: list[tuple[bytes, int]]) -> int:
    links.append((name, info[0]))
    return 0


@functools.cache
def _hdf5() -> ctypes.CDLL | None:
    """HDF5's C functions the class walk calls, from the library h5py uses (see access_list);
    None if it lacks one (HDF5 before 1.12): the walk then goes through h5py, as slowly."""
    try:
        lib = ctypes.CDLL(h5p.__file__)
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
    except (OSError, AttributeError):
        return None
    return lib


_BUFFERS = threading.local()


def _native_info_buffer() -> ctypes.Array:
    """An H5O_native_info_t to fill, one per thread (stores open on several at once)."""
    buffer = getattr(_BUFFERS, "native_info", None)
    if buffer is None:
        buffer = _BUFFERS.native_info = ctypes.create_string_buffer(_NATIVE_INFO_BYTES)
    return buffer


@functools.cache
def _memory_types() -> tuple[h5t.TypeID, h5t.TypeID]:
    """The class id as a native uint32; text as a C string HDF5 allocates (UTF-8)."""
    text = h5t.C_S1.copy()
    text.set_size(h5t.VARIABLE)
    text.set_cset(h5t.CSET_UTF8)
    return h5t.NATIVE_UINT32, text


def _walk_classes(
    classes: h5g.GroupID, where: str, path: str, *, walk: bool = True
) -> dict[bytes, ClassAttributes | None]:
    """Check every class group's members (``walk``) and read its attributes; return the
    attributes by group name (None where they cannot be read)."""
    lib = _hdf5()
    seen: dict[bytes, ClassAttributes | None] = {}
    for raw, kind in _links(classes):
        if not _hard(raw, kind, where, path, None):
            continue
        inside = f"{where}/{raw.decode('utf-8', 'replace')}"
        if lib is None:
            group = _check_object(classes, raw, where, path)
            if group is not None:
                if walk:
                    _members(group, inside, path, allowed_soft=b"preview")
                seen[raw] = _attributes_h5py(group)
            continue
        with phil:
            gid = lib.H5Gopen2(classes.id, raw, 0)
        if gid < 0:  # not a group (checked as any object) or a damaged one
            _check_object(classes, raw, where, path)
            continue
        try:
            if walk:
                _check_class_members(lib, gid, classes, raw, inside, path)
            seen[raw] = _attributes(lib, gid)
        finally:
            with phil:
                lib.H5Gclose(gid)
    return seen


def _check_class_members(
    lib: ctypes.CDLL, gid: int, classes: h5g.GroupID, name: bytes, where: str, path: str
) -> None:
    """What _members checks in a class group, from each member's header alone where that
    settles it: a header without an External File List whose object has a chunk index (a
    chunked dataset with chunks, or a group's index) cannot be refused; any other member is
    opened and checked as _check_object does."""
    links: list[tuple[bytes, int]] = []
    info = _native_info_buffer()
    fields = _NATIVE_INFO_HDR | _NATIVE_INFO_META_SIZE
    with phil:
        if lib.H5Literate2(gid, 0, 0, None, _collect_link, links) < 0:
            return  # (damage: as _members, left to the read that needs it)
    for raw, kind in links:
        if not _hard(raw, kind, where, path, b"preview"):
            continue
        with phil:
            known = lib.H5Oget_native_info_by_name(gid, raw, info, fields, access_list().id) >= 0
        if known:
            present, _ = struct.unpack_from("<QQ", info, _PRESENT_AT)
            (index_size,) = struct.unpack_from("<Q", info, _INDEX_SIZE_AT)
            if not present & _EFL_BIT and index_size:
                continue
        _check_object(classes, raw, where, path, lookup=name + b"/" + raw)


def _attributes(lib: ctypes.CDLL, gid: int) -> ClassAttributes | None:
    """The group's class_id, label and codec; None if one is missing or not a single value."""
    integer, text = _memory_types()
    class_id = ctypes.c_uint32()
    if not _read_scalar(lib, gid, b"class_id", integer, class_id):
        return None
    strings = []
    for name in (b"label", b"codec"):
        value = ctypes.c_char_p()
        if not _read_scalar(lib, gid, name, text, value):
            return None
        strings.append(value.value or b"")
        with phil:
            lib.H5free_memory(value)
    return ClassAttributes(class_id.value, *strings)


def _read_scalar(
    lib: ctypes.CDLL,
    gid: int,
    name: bytes,
    memory: h5t.TypeID,
    out: ctypes.c_uint32 | ctypes.c_char_p,
) -> bool:
    # HDF5 writes every element of the attribute into the buffer: one element is all it holds.
    with phil:
        attr = lib.H5Aopen(gid, name, 0)
        if attr < 0:
            return False
        try:
            space = lib.H5Aget_space(attr)
            if space < 0:
                return False
            scalar = lib.H5Sget_simple_extent_type(space) == _H5S_SCALAR
            lib.H5Sclose(space)
            return scalar and lib.H5Aread(attr, memory.id, ctypes.byref(out)) >= 0
        finally:
            lib.H5Aclose(attr)


def _attributes_h5py(group: h5g.GroupID) -> ClassAttributes | None:
    """As _attributes, through h5py's objects (HDF5 before 1.12)."""
    values: list[Any] = []  # (an int, then the bytes of two variable-length strings)
    for name, dtype in ((b"class_id", np.uint32), (b"label", _TEXT), (b"codec", _TEXT)):
        try:
            attr = h5a.open(group, name)
            if attr.shape != ():
                return None
            out = np.zeros((), dtype)
            attr.read(out, mtype=h5t.py_create(out.dtype))
        except fmt.DAMAGE_ERRORS + (TypeError,):
            return None
        values.append(out[()])
    return ClassAttributes(int(values[0]), *values[1:])
