"""Nothing outside the file: a store is read from its own bytes only, whoever made it.

HDF5 can make a file read others: an external link names an object in another file, a
dataset's raw data can live in external files (any file: ``/etc/passwd`` reads as labels) and
a virtual dataset maps other files' datasets into it. h5store writes none of these. At every
open, before a byte of data is read, :func:`check_contained` walks the objects h5store reads
(the root tables, every class group and stack, and for a writer every preview: readers never
read them) and refuses any such object, and any soft link among them, with a
:class:`FormatError` naming the path and the feature. The walk reads object headers only (no
data), about 20 us an object.

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

import h5py
from h5py import h5d, h5g, h5l, h5o, h5p

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
    # HDF5 library h5py uses (as format._link_space_functions does).
    try:
        lib = ctypes.CDLL(h5p.__file__)
        lib.H5Pset_elink_prefix(ctypes.c_int64(plist.id), NOWHERE)
        lib.H5Pset_elink_cb(ctypes.c_int64(plist.id), _refuse_elink, None)
    except (OSError, AttributeError):
        pass  # the walk still refuses every external link among the objects h5store reads
    return plist


class ContainedFile(h5py.File):
    """An ``h5py.File`` whose path lookups (``f[name]``, ``name in f``) use :func:`access_list`,
    through h5py's own (private) hook for a link access list; tests/test_untrusted.py checks
    that it still takes effect. Objects opened from it are plain h5py objects."""

    @property
    def _lapl(self):
        return access_list()


def check_contained(f: h5py.File, path: str, *, previews: bool = True) -> None:
    """Refuse (FormatError) a file where an object h5store reads is a soft or external link, a
    virtual dataset or a dataset with external raw storage. Reads object headers, no data.
    ``previews``: walk the contact sheets too; only a writer reads them (their attributes)."""
    with fmt.damage_reported(path):
        known = {name.encode(): name for name in fmt.ROOT_LINKS}
        for name, obj in _members(h5g.open(f.id, b"/"), "", path, only=known):
            if name == fmt.CLASSES:
                for class_name, class_group in _members(obj, f"/{name}", path):
                    _members(class_group, f"/{name}/{class_name}", path, allowed_soft=b"preview")
            elif name == fmt.PREVIEWS and previews:
                for preview_name, preview in _members(obj, f"/{name}", path):
                    _members(preview, f"/{name}/{preview_name}", path)


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
    cannot leave the file). A member whose header HDF5 cannot read is left to the read that
    needs it, which reports the damage (HDF5 cannot read through it either; a damaged /sources
    must not stop the images being read)."""
    links: list[tuple[bytes, int]] = []
    group.links.iterate(lambda raw, info: links.append((raw, info.type)), info=True)
    groups = []
    for raw, kind in links:
        if only is not None and raw not in only:
            continue  # not read by h5store
        if kind != h5l.TYPE_HARD:
            if kind == h5l.TYPE_SOFT and raw == allowed_soft:
                continue
            _refuse(path, where, raw, _LINK_KINDS.get(kind, "a user-defined link"))
        try:
            obj = h5o.open(group, raw, lapl=access_list())
        except fmt.DAMAGE_ERRORS:
            continue
        if isinstance(obj, h5g.GroupID):
            groups.append((raw.decode("utf-8", "replace"), obj))
        elif isinstance(obj, h5d.DatasetID):
            plist = obj.get_create_plist()
            if plist.get_layout() == h5d.VIRTUAL:
                _refuse(path, where, raw, "a virtual dataset (its data lies in other files)")
            if plist.get_external_count():
                _refuse(path, where, raw, "a dataset stored in external files")
    return groups


def _refuse(path: str, where: str, raw: bytes, feature: str) -> None:
    raise FormatError(
        f"{path}: {where}/{raw.decode('utf-8', 'replace')} is {feature}; h5store reads "
        "nothing outside the store file, so it refuses to open it (h5store never writes one: "
        "the file was made or changed elsewhere)"
    )
