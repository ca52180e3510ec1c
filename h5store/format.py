"""The on-disk layout of an h5store file, version 1.2: the single source of truth for paths,
dtypes, attribute names and the version rule, and how each of its tables is created, read and
checked. docs/FORMAT.md describes the same in prose. Below it: _libhdf5 (calls into libhdf5
that h5py does not wrap), _sources (/sources, whose strings h5store walks in HDF5's global heap
itself) and _recovery (what a killed writer left).

::

    /                         @h5store_format="h5store", @h5store_version=[1, 2]
    /index                    compound rows (INDEX_DTYPE), gzip; whole chunks of INDEX_CHUNK_ROWS
    /index_tail               the newest rows (< one /index chunk), uncompressed, at most one
                              chunk; (1.2) 0 rows when no writer has the file open
    /labels                   class names (UTF-8); a class id is a position in this list
    /stacks                   one row per image stack: class, shape, dtype, codec
    /classes/<name>/          one group per predicted class (@label, @class_id, @count, @codec...)
    /classes/<name>/<H>x<W>x<C>_<dtype>   the stack: (N, H, W[, C]), one image per chunk
    /scores                   optional (rows, K) float32 score vectors, aligned with the rows;
                              (1.2) @columns: the labels its columns are the scores of
    /score_crc32              (1.2) beside /scores: (rows,) uint32 check of each score row
    /sources                  optional (rows,) UTF-8 source of each image, aligned with the rows
    /source_crc32             (1.1) beside /sources: (rows,) uint32 check of each source, 0
                              where none was recorded (see source_check); not in 1.0 files
    /previews/<name>/data     a contact sheet of each class, (H, W, 3) uint8, gzip: pictures
                              any viewer shows without a filter plugin (NXdata group for silx)

Rows are numbered across /index then /index_tail. A row belongs to the store once a later or
the same row has ``batch_end`` set: that flag is the commit record of one ``add_batch``.

Versions: 1.1 added /source_crc32 (optional: a 1.0 reader ignores it) and room for nine links
in the root group. A 1.0 file has room for eight and never gains /source_crc32 (see
root_holds_every_link): its sources stay unchecked, and repack writes a 1.1 copy.
1.2 adds /score_crc32 and the @columns of /scores, writes /labels NUL-terminated (viewers print
them as text), trims /index_tail to 0 rows at close, and its readers cross-check /labels and
the class groups' @codec against /stacks at open. Files of 1.0 and 1.1 keep their version
when appended to and are read without those checks (see has_checks); repack writes a 1.2 copy.
"""

from __future__ import annotations

import contextlib
import functools
import json
import mmap
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import h5py
import imagecodecs
import numpy as np
from isal import isal_zlib

from . import _libhdf5
from ._source import Buffer
from .codecs import Codec, HDF5Filter, codec_from_config, image_shape
from .errors import FormatError, H5StoreError, NotAStoreError, VersionError

FORMAT_NAME = "h5store"
FORMAT_VERSION = (1, 2)
#: The first version whose score rows are checked (/score_crc32), whose /index_tail is empty
#: after close and whose class groups are cross-checked against /labels and /stacks at open.
CHECKED_VERSION = (1, 2)

#: Bounds the HDF5 object versions so that HDF5 1.10 tools (Debian's h5dump, older HDFView)
#: open the file; 1.10 is also the oldest format with SWMR.
LIBVER = ("v110", "v110")

ATTR_FORMAT = "h5store_format"
ATTR_VERSION = "h5store_version"
#: (1.2) rows /index held when a writer last closed the file: rows are only ever appended
#: (deletion is a flag), so fewer rows than this at any later open means rows were lost.
ATTR_COMMITTED_ROWS = "h5store_committed_rows"

INDEX = "index"
INDEX_TAIL = "index_tail"
LABELS = "labels"
STACKS = "stacks"
CLASSES = "classes"
SCORES = "scores"
SOURCES = "sources"
SOURCE_CRC32 = "source_crc32"
SCORE_CRC32 = "score_crc32"
#: Each column aligned with the index and the dataset holding its checks.
CHECKED_COLUMNS = {SCORES: (SCORES, SCORE_CRC32), SOURCES: (SOURCES, SOURCE_CRC32)}
#: Attribute of /scores (1.2): the label of each column.
SCORE_COLUMNS = "columns"
PREVIEWS = "previews"

#: Contact sheets: up to PREVIEW_IMAGES thumbnails of PREVIEW_SIDE px in rows of
#: PREVIEW_COLUMNS. Photos barely compress losslessly, so they are kept small (~11 kB a class).
PREVIEW_IMAGES = 4
PREVIEW_SIDE = 32
PREVIEW_COLUMNS = 4

#: Rows per compressed /index chunk, and the capacity of /index_tail (kept small: 40 kB); a
#: million rows open in about two thousand chunk reads, inflated in parallel.
INDEX_CHUNK_ROWS = 512

#: Rows per chunk of /index_tail (1.2). The tail is emptied at close by giving it 0 rows, which
#: frees its chunks, and with free-space reuse off, freed space stays in the file: a session
#: allocates the chunks it writes rows into again, 1.2 kB each, where one 512-row chunk cost
#: every session that appended an image 40 kB.
TAIL_CHUNK_ROWS = 16

#: Rows per chunk of /sources and of /source_crc32 (chunked alike, so a row's string reference
#: and its check share a chunk number).
SOURCE_CHUNK_ROWS = 4096

MAX_LABEL_BYTES = 255
MAX_CODEC_CONFIG_BYTES = 512
NO_TRUE_LABEL = -1

INDEX_DTYPE = np.dtype(
    [
        ("id", "<i8"),
        ("label", "<u4"),  # predicted class id: position in /labels
        ("true_label", "<i4"),  # class id of the ground truth, NO_TRUE_LABEL if unknown
        ("score", "<f4"),  # top-1 confidence, NaN if not given
        ("stack", "<u4"),  # row of /stacks holding the image
        ("position", "<u4"),  # index along axis 0 of that stack
        ("height", "<u4"),
        ("width", "<u4"),
        ("channels", "u1"),
        ("dtype", "S8"),  # numpy dtype name of the pixels
        ("codec", "S16"),  # codec id of the payload
        ("deleted", "u1"),
        ("batch_end", "u1"),  # 1 on the last row written by one add_batch: its commit record
        ("nbytes", "<u4"),  # stored payload bytes (the HDF5 chunk size)
        ("crc32", "<u4"),  # CRC-32 of the stored payload
        ("offset", "<u8"),  # file offset of the chunk; a cache of HDF5's chunk index
    ]
)

STACKS_DTYPE = np.dtype(
    [
        ("label", "<u4"),
        ("height", "<u4"),
        ("width", "<u4"),
        ("channels", "u1"),
        ("dtype", "S8"),
        ("codec", "S16"),
        ("codec_config", f"S{MAX_CODEC_CONFIG_BYTES}"),  # JSON of Codec.get_config()
    ]
)

#: Labels are fixed-length UTF-8 (labels may not contain NUL). Fixed-length, not
#: variable-length, strings keep the global heap out of the file: a writer killed while a heap
#: collection was half written would leave heap references that break later writes. In memory
#: (and in 1.0 and 1.1 files) they are NUL-padded to 255 bytes.
LABEL_DTYPE = h5py.string_dtype("utf-8", MAX_LABEL_BYTES)
#: Bytes of a /labels element in a 1.2 file: NUL-terminated, one byte more than the longest
#: label for the terminator. h5dump prints a NUL-terminated string up to its NUL, where it
#: printed a NUL-padded one with all its padding (a label and ~250 "\000").
LABEL_FILE_BYTES = MAX_LABEL_BYTES + 1

PIXEL_DTYPES = ("uint8", "uint16")

# The index's CRC-32 (zlib's polynomial), on every image written, read and verified. ISA-L's
# carry-less-multiply loop behind a thin binding: for a 1.1 kB payload 0.10 us against zlib's
# 0.47 and libdeflate's (imagecodecs) 0.79, whose wrapper costs more than its loop; for 14 kB
# 0.36 us against 3.8 and 0.94 (CPU time, medians, side by side in one run).
crc32 = isal_zlib.crc32

# Every open of a stored index inflates it with libdeflate. imagecodecs loads each codec's
# module on first use, so it is taken here, at import: a process that drops its privileges
# after importing h5store (a service, a test as user nobody) may no longer read the
# environment's files by the time it opens a store.
_deflate_decode = imagecodecs.deflate_decode

#: A source's check covers these bytes, then the source's UTF-8 bytes: the check of "" (no
#: source) is then not 0, and nothing else's CRC-32 is mistaken for one.
SOURCE_CHECK_PREFIX = b"h5store source\n"
SOURCE_CHECK_SEED = crc32(SOURCE_CHECK_PREFIX)


def source_check(raw: bytes) -> int:
    """The /source_crc32 value of a source's UTF-8 bytes (b"" for none): never 0, which is the
    fill value and means that no check was recorded (rows of a format-1.0 file)."""
    return crc32(raw, SOURCE_CHECK_SEED) or 1


#: A score row's check covers these bytes, then the row's K little-endian float32 values: a
#: zeroed row (0.0 everywhere) does not have the check 0, and no other CRC-32 is mistaken for
#: one.
SCORE_CHECK_PREFIX = b"h5store scores\n"
_SCORE_CHECK_SEED = crc32(SCORE_CHECK_PREFIX)


def score_checks(vectors: np.ndarray) -> np.ndarray:
    """The /score_crc32 value of each row of ``vectors`` (NaN rows for images stored without
    a vector are checked too): never 0, which is the fill value and means that no check was
    recorded (rows an older writer appended). About 0.12 us a row of 10 classes."""
    data = np.ascontiguousarray(vectors, dtype="<f4")
    raw = data.view(np.uint8).reshape(len(data), -1)
    seed = _SCORE_CHECK_SEED
    return np.fromiter((crc32(row, seed) or 1 for row in raw), np.uint32, len(raw))


def has_checks(version: tuple[int, int]) -> bool:
    """Whether a file of format ``version`` carries the 1.2 checks (see CHECKED_VERSION)."""
    return tuple(version) >= CHECKED_VERSION


# Characters that may not appear as such in an HDF5 link name ('/') or in a folder name on
# export (the rest), plus '%' so that escaping stays reversible.
_ESCAPED = set('/\\%:*?"<>|') | {chr(c) for c in range(32)} | {"\x7f"}


#: A label safe_name leaves as it is (the usual one): none of _ESCAPED, no leading dot, no
#: space at either end.
_SAFE_AS_IS = re.compile(
    "(?![. ])[^" + re.escape("".join(sorted(_ESCAPED))) + "]*(?<! )", re.DOTALL
)


def safe_name(label: str) -> str:
    """A name for ``label`` that is one HDF5 link name and one file name on every system.

    Percent-escapes the characters that could leave a group or folder, and leading dots, so
    '..' or 'a/b' stay one harmless name. Injective: distinct labels get distinct names. The
    exact label is kept in the ``label`` attribute.
    """
    if _SAFE_AS_IS.fullmatch(label):
        return label  # (an open of 1,000 classes asks for 2,000 names)
    out: list[str] = []
    for i, ch in enumerate(label):
        if ch in _ESCAPED or (ch == "." and i == 0) or (ch == " " and i in (0, len(label) - 1)):
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
        else:
            out.append(ch)
    return "".join(out)


def stack_name(height: int, width: int, channels: int, dtype: str) -> str:
    return f"{height}x{width}x{channels}_{dtype}"


def stack_path(label: str, height: int, width: int, channels: int, dtype: str) -> str:
    return f"/{CLASSES}/{safe_name(label)}/{stack_name(height, width, channels, dtype)}"


def codec_config_json(codec: Codec) -> str:
    text = json.dumps(codec.get_config(), sort_keys=True)
    if len(text.encode("utf-8")) > MAX_CODEC_CONFIG_BYTES:
        raise FormatError(
            f"configuration of codec {codec.codec_id!r} exceeds {MAX_CODEC_CONFIG_BYTES} bytes"
        )
    return text


# --------------------------------------------------------------------------- file identity


def write_root_attrs(f: h5py.File) -> None:
    f.attrs[ATTR_FORMAT] = FORMAT_NAME
    f.attrs[ATTR_VERSION] = np.array(FORMAT_VERSION, dtype="<i4")
    # Made with the file, so that closing only overwrites it in place (one small write).
    f.attrs[ATTR_COMMITTED_ROWS] = np.uint64(0)


def check_committed_rows(f: h5py.File, n_rows: int, path: str) -> None:
    """(1.2) Refuse an index with fewer rows than a writer left at its last close: /index
    resized down (or cut short) would otherwise read as a smaller, healthy store."""
    recorded = f.attrs.get(ATTR_COMMITTED_ROWS)
    if recorded is None:  # format 1.0 / 1.1
        return
    try:
        expected = int(recorded)
    except (TypeError, ValueError):
        raise FormatError(f"{path}: root attribute {ATTR_COMMITTED_ROWS} is damaged") from None
    if n_rows < expected:
        raise FormatError(
            f"{path}: /{INDEX} has {n_rows} committed rows but held {expected} when the file "
            "was last closed: rows were lost (the file is damaged)"
        )


def record_committed_rows(f: h5py.File, n_rows: int) -> None:
    if ATTR_COMMITTED_ROWS in f.attrs:
        f.attrs[ATTR_COMMITTED_ROWS] = np.uint64(n_rows)


def file_version(f: h5py.File) -> tuple[int, int]:
    """The format version ``f`` was created with (its root attribute; check_root checked it)."""
    major, minor = (int(v) for v in f.attrs[ATTR_VERSION])
    return major, minor


def check_root(f: h5py.File, path: str) -> tuple[int, int]:
    """Raise unless ``f`` is an h5store file this version can read; return its version."""
    name = f.attrs.get(ATTR_FORMAT)
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    if name != FORMAT_NAME:
        raise NotAStoreError(f"{path} is an HDF5 file but not an h5store file")
    try:
        major, minor = (int(v) for v in f.attrs[ATTR_VERSION])
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"{path} has no readable {ATTR_VERSION} attribute") from None
    if major > FORMAT_VERSION[0]:
        raise VersionError(
            f"{path} uses h5store format {major}.{minor}; this h5store reads format "
            f"{FORMAT_VERSION[0]}.x only: upgrade h5store"
        )
    for name in (INDEX, INDEX_TAIL, LABELS, STACKS, CLASSES):
        if name not in f:
            raise FormatError(f"{path} lacks /{name}: damaged or not written by h5store")
    # The tables' types (a damaged object header can turn a table into a group or change its
    # type) are checked as they are read, not here: opening one here would cache its header,
    # and a reader racing a writer must read /index_tail, /index, /stacks and /labels in that
    # order, each header fresh (see ImageStore._load_checked).
    return major, minor


@functools.cache
def _hdf5_type(dtype: np.dtype) -> h5py.h5t.TypeID:
    """The HDF5 type h5store writes records of ``dtype`` as."""
    return h5py.h5t.py_create(dtype)


def _holds_exactly(ds: h5py.Dataset, dtype: np.dtype) -> bool:
    """Whether ``ds`` holds records of ``dtype`` as h5store writes them, compared in HDF5:
    h5py's conversion of a compound type to numpy's costs 60-130 us a dataset object, and an
    open met four of them."""
    return bool(ds.id.get_type() == _hdf5_type(dtype))


def _read_table(ds: h5py.Dataset, dtype: np.dtype) -> np.ndarray:
    """All of ``ds``, a table of at least ``dtype``'s fields (see _is_table_of): read straight
    into records of ``dtype`` where it holds exactly those (a third of the cost of h5py's
    item access for a small table), else through h5py (a later version's extra fields)."""
    if not _holds_exactly(ds, dtype):
        return ds[()]
    return _read_whole(ds, dtype, _hdf5_type(dtype))


def _read_whole(
    ds: h5py.Dataset, dtype: np.dtype, mtype: h5py.h5t.TypeID | None = None
) -> np.ndarray:
    """All of ``ds`` read by HDF5 straight into a new array of ``dtype`` (``mtype``: the HDF5
    type of its records, where h5py would convert it otherwise)."""
    out = np.empty(ds.shape, dtype)
    if len(out):
        ds.id.read(h5py.h5s.ALL, h5py.h5s.ALL, out, mtype=mtype)
    return out


def _is_table_of(obj: object, dtype: np.dtype) -> bool:
    """A 1-D dataset with at least ``dtype``'s fields, of their types (a later minor version
    may add fields)."""
    if not isinstance(obj, h5py.Dataset) or obj.ndim != 1:
        return False
    if _holds_exactly(obj, dtype):
        return True
    fields = obj.dtype.fields or {}
    return all(name in fields and fields[name][0] == dtype[name] for name in dtype.names or ())


# --------------------------------------------------------------------------- creation


def create_layout(f: h5py.File) -> None:
    """Create the skeleton of an empty store."""
    write_root_attrs(f)
    # Room in the root group's header for the links added later (/scores, /sources,
    # /previews): a link removed leaves free space there that new links fill in place,
    # where a growing header would need a continuation chunk (see CLASS_LINKS_RESERVED).
    f["_reserved"] = h5py.SoftLink("/" + "_" * 240)
    del f["_reserved"]
    f.create_dataset(
        INDEX,
        shape=(0,),
        maxshape=(None,),
        chunks=(INDEX_CHUNK_ROWS,),
        dtype=INDEX_DTYPE,
        compression="gzip",
        compression_opts=4,
        shuffle=True,
        track_times=False,
    )
    # Up to one /index chunk of rows; empty until a writer appends (see WriterFile.load_row_log)
    # and again after it closes, so that a closed file shows no rows of zeros.
    f.create_dataset(
        INDEX_TAIL,
        shape=(0,),
        maxshape=(INDEX_CHUNK_ROWS,),
        chunks=(TAIL_CHUNK_ROWS,),
        dtype=INDEX_DTYPE,
        track_times=False,
    )
    f.create_dataset(
        LABELS,
        shape=(0,),
        maxshape=(None,),
        chunks=(64,),
        dtype=h5py.Datatype(_label_file_type()),
        compression="gzip",
        track_times=False,
    )
    f.create_dataset(
        STACKS,
        shape=(0,),
        maxshape=(None,),
        chunks=(16,),
        dtype=STACKS_DTYPE,
        compression="gzip",
        track_times=False,  # mostly padding of codec_config
    )
    f[CLASSES] = _new_group(f, CLASS_LINKS_RESERVED)


def _label_file_type() -> h5py.h5t.TypeID:
    """/labels' element type in a new file: NUL-terminated UTF-8 of LABEL_FILE_BYTES (h5py
    makes fixed-length strings NUL-padded only)."""
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(LABEL_FILE_BYTES)
    tid.set_strpad(h5py.h5t.STR_NULLTERM)
    tid.set_cset(h5py.h5t.CSET_UTF8)
    return tid


def _fixed_ascii(value: str) -> np.bytes_:
    # HDFView recognises the Image-spec attributes only as fixed-length strings.
    return np.bytes_(value.encode("ascii"))


def _codec_attrs(codec: Codec) -> dict[str, Any]:
    return {
        "codec": codec.codec_id,
        "codec_config": codec_config_json(codec),
        "mime_type": codec.mime_type,
        "lossless": np.uint8(codec.lossless),
    }


_STR = h5py.string_dtype()


@functools.lru_cache(maxsize=64)
def _attr_types(dtype: np.dtype) -> tuple[h5py.h5t.TypeID, h5py.h5t.TypeID]:
    return h5py.h5t.py_create(dtype, logical=True), h5py.h5t.py_create(dtype)


def _attr_data(value: Any) -> np.ndarray:
    return np.array(value, dtype=_STR) if isinstance(value, str) else np.asarray(value)


def _new_attrs(obj: h5py.HLObject, attrs: dict[str, Any]) -> None:
    """Attributes of an object just created, written with the calls h5py's ``attrs[name] =``
    makes, minus its checks: the same types on disk, at half the cost (a store creates about
    twenty attributes per class, and that counts in a small store's cost)."""
    for name, value in attrs.items():
        data = _attr_data(value)
        file_type, memory_type = _attr_types(data.dtype)
        space = (
            h5py.h5s.create_simple(data.shape) if data.ndim else h5py.h5s.create(h5py.h5s.SCALAR)
        )
        h5py.h5a.create(obj.id, name.encode("utf-8"), file_type, space).write(
            data, mtype=memory_type
        )


def _rewrite_attrs(obj: h5py.HLObject, attrs: dict[str, Any]) -> None:
    """Overwrite attributes the object has already, with values of the same type and shape
    (the ones a copy made by :meth:`PendingLinks.copy` must change)."""
    for name, value in attrs.items():
        data = _attr_data(value)
        h5py.h5a.open(obj.id, name.encode("utf-8")).write(data, mtype=_attr_types(data.dtype)[1])


# Object-header space reserved for links, so that linking a new class (or a new stack into its
# class) rewrites one header chunk in place: a header that grows gets a continuation chunk, and
# a group that outgrows compact storage moves its links to a heap and B-trees, several writes
# in an order HDF5 chooses, which a killed writer can leave torn.
CLASS_LINKS_RESERVED = 256
STACK_LINKS_RESERVED = 16
RESERVED_NAME_BYTES = 24


#: Compact links the root group of a new file holds: the ten of ROOT_LINKS with room to spare.
#: Format-1.0 files hold eight (HDF5's default), exactly the links they could have.
ROOT_LINKS_RESERVED = 16
ROOT_LINKS = (
    INDEX,
    INDEX_TAIL,
    LABELS,
    STACKS,
    CLASSES,
    SCORES,
    SCORE_CRC32,
    SOURCES,
    SOURCE_CRC32,
    PREVIEWS,
)


def root_holds_every_link(f: h5py.File) -> bool:
    """Whether the root group keeps all of ROOT_LINKS compact. A ninth link in a format-1.0
    file's root group would move its links to dense storage (a heap and B-trees written in an
    order HDF5 chooses): a writer stopped there (a full disk, a kill) leaves a file no one can
    open. Such a file gets no /source_crc32."""
    compact = _libhdf5.max_compact_links(f["/"].id.get_create_plist())
    return compact is not None and compact >= len(ROOT_LINKS)


def _group_properties(links: int) -> h5py.h5p.PropGCID:
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    order = h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED
    gcpl.set_link_creation_order(order)
    gcpl.set_attr_creation_order(order)
    gcpl.set_obj_track_times(False)
    _libhdf5.reserve_links(gcpl, links, RESERVED_NAME_BYTES)
    return gcpl


def _new_group(f: h5py.File, links: int) -> h5py.Group:
    """An anonymous group with header room for ``links`` links; name it with
    :class:`PendingLinks`."""
    return h5py.Group(h5py.h5g.create(f.id, None, gcpl=_group_properties(links)))


class PendingLinks:
    """Names for the objects one object-creating epoch made, given all at once after one flush.

    HDF5 writes metadata in an order of its own, and a parent's link that landed before the
    object's header would leave a link to nothing, which HDF5 can neither read nor delete. So
    objects are created anonymous, flushed, and only then linked; killed in between, a writer
    leaves objects nothing points to, which recovery ignores. One flush serves every object of
    the epoch (a batch that creates eight classes pays one, not sixteen).
    """

    def __init__(self) -> None:
        self._links: list[tuple[h5py.Group, str, h5py.HLObject, bool]] = []
        self._staging: h5py.h5g.GroupID | None = None
        self._copies = 0
        #: Objects made by hand in this epoch, by what makes them alike, for :meth:`copy`.
        self.templates: dict[tuple, h5py.HLObject] = {}

    def copy(self, f: h5py.File, template: h5py.HLObject) -> h5py.HLObject:
        """A copy of an object of this epoch, with its attributes and members (H5Ocopy: a
        fraction of the cost of making them one by one, attributes being most of it). HDF5
        names a copy at once, so copies are named in a group nothing links to: like every
        object of the epoch, one is reachable only once :meth:`add` has linked it."""
        if self._staging is None:
            self._staging = h5py.h5g.create(f.id, None)
        name = str(self._copies).encode()
        self._copies += 1
        h5py.h5o.copy(template.id, b".", self._staging, name)
        copied = h5py.h5o.open(self._staging, name)
        if isinstance(copied, h5py.h5d.DatasetID):
            return h5py.Dataset(copied)
        return h5py.Group(copied)

    def add(
        self, parent: h5py.Group, name: str, obj: h5py.HLObject, *, replace: bool = False
    ) -> None:
        self._links.append((parent, name, obj, replace))

    def link_all(self, f: h5py.File) -> None:
        if not self._links:
            return
        f.flush()
        # Children first: an object is linked into a parent that is still unreachable before
        # that parent is linked into the file.
        for parent, name, obj, replace in reversed(self._links):
            if replace and name in parent:
                del parent[name]
            parent[name] = obj
        self._links.clear()


def create_class(
    f: h5py.File, class_id: int, label: str, codec: Codec, links: PendingLinks
) -> h5py.Group:
    # Classes made in one epoch differ in their label, id and preview link only.
    alike = ("class", codec_config_json(codec))
    template = links.templates.get(alike)
    if template is not None:
        group = links.copy(f, template)
        _rewrite_attrs(group, {"label": label, "class_id": np.uint32(class_id)})
        del group["preview"]
    else:
        group = _new_group(f, STACK_LINKS_RESERVED)
        _new_attrs(
            group,
            {
                "label": label,
                "class_id": np.uint32(class_id),
                "count": np.uint64(0),
                **_codec_attrs(codec),
            },
        )
    # Previews live outside the class groups, so rewriting one never touches a group that
    # holds images; the link dangles until the writer first closes.
    group["preview"] = h5py.SoftLink(preview_path(label))
    links.templates.setdefault(alike, group)
    links.add(f[CLASSES], safe_name(label), group)
    return group


def preview_path(label: str) -> str:
    return f"/{PREVIEWS}/{safe_name(label)}/data"


def write_preview(
    f: h5py.File,
    label: str,
    sheet: np.ndarray,
    ids: np.ndarray,
    links: PendingLinks,
    previews_root: list[h5py.Group],
) -> None:
    """(Re)write the contact sheet of ``label``: an HDF5 Image (HDFView, h5web) inside a NeXus
    NXdata group whose signal is an RGB image (silx)."""
    # ``previews_root`` carries /previews between the calls of one epoch, new or not.
    if not previews_root:
        if PREVIEWS in f:
            previews_root.append(f[PREVIEWS])
        else:
            previews_root.append(_new_group(f, CLASS_LINKS_RESERVED))
            links.add(f, PREVIEWS, previews_root[0])
    root = previews_root[0]
    name = safe_name(label)
    ids = np.asarray(ids, dtype="<i8")
    # Previews of one epoch differ in their label, pixels and ids only.
    alike = ("preview", sheet.shape, sheet.dtype.str, ids.shape)
    template = links.templates.get(alike)
    if template is not None:
        group = links.copy(f, template)
        _rewrite_attrs(group, {"label": label})
        data = h5py.Dataset(h5py.h5d.open(group.id, b"data"))  # (group["data"]: 80 us more)
        _rewrite_attrs(data, {"ids": ids})
        # The one chunk, deflated as the dataset's gzip filter stores it.
        data.id.write_direct_chunk((0,) * sheet.ndim, isal_zlib.compress(sheet.tobytes(), 1))
        links.add(root, name, group, replace=True)
        return
    group = _new_group(f, 2)
    _new_attrs(
        group, {"NX_class": _fixed_ascii("NXdata"), "signal": _fixed_ascii("data"), "label": label}
    )
    ds = group.create_dataset(
        "data",
        data=sheet,
        chunks=sheet.shape,
        compression="gzip",
        # Level 1: photo thumbnails come out 0.6 % larger than at 9, in a quarter of the time.
        compression_opts=1,
        track_times=False,
    )
    _new_attrs(
        ds,
        {
            "CLASS": _fixed_ascii("IMAGE"),
            "IMAGE_VERSION": _fixed_ascii("1.2"),
            "IMAGE_SUBCLASS": _fixed_ascii("IMAGE_TRUECOLOR"),
            "INTERLACE_MODE": _fixed_ascii("INTERLACE_PIXEL"),
            "interpretation": _fixed_ascii("rgba-image"),
            "ids": ids,
        },
    )
    links.templates[alike] = group
    links.add(root, name, group, replace=True)


def preview_ids(f: h5py.File, label: str) -> np.ndarray | None:
    """Ids shown in the current preview of ``label`` (None if it has none)."""
    try:
        return f[preview_path(label)].attrs["ids"]
    except (KeyError, OSError, RuntimeError):
        return None


def class_codec(group: h5py.Group) -> Codec:
    return codec_from_config(json.loads(group.attrs["codec_config"]))


def _declare_filter(dcpl: h5py.h5p.PropDCID, hdf5_filter: HDF5Filter) -> None:
    # Optional, so that HDF5 accepts a filter this process has not loaded (JPEG, our opaque id):
    # chunks are written pre-encoded with direct chunk writes, never through the pipeline.
    registered_here = h5py.h5z.filter_avail(hdf5_filter.filter_id)
    flags = h5py.h5z.FLAG_MANDATORY if registered_here else h5py.h5z.FLAG_OPTIONAL
    dcpl.set_filter(hdf5_filter.filter_id, flags, hdf5_filter.cd_values)


def create_stack(
    f: h5py.File,
    group: h5py.Group,
    height: int,
    width: int,
    channels: int,
    dtype: str,
    codec: Codec,
    links: PendingLinks,
) -> h5py.Dataset:
    """An empty stack for images of one shape: (0, H, W[, C]), one image per chunk, with the
    codec's HDF5 filter declared and the HDF5 Image-spec attributes set."""
    name = stack_name(height, width, channels, dtype)
    # Stacks of one shape, dtype and codec made in one epoch are alike in everything.
    alike = ("stack", height, width, channels, dtype, codec_config_json(codec))
    template = links.templates.get(alike)
    if template is not None:
        stack = links.copy(f, template)
        links.add(group, name, stack)
        return stack
    shape = image_shape(height, width, channels)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk((1, *shape))
    dcpl.set_obj_track_times(False)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_INCR)
    hdf5_filter = codec.hdf5_filter(shape, np.dtype(dtype))
    if hdf5_filter is not None:
        _declare_filter(dcpl, hdf5_filter)
    space = h5py.h5s.create_simple((0, *shape), (h5py.h5s.UNLIMITED, *shape))
    htype = h5py.h5t.py_create(np.dtype(dtype).newbyteorder("<"))
    dsid = h5py.h5d.create(group.id, None, htype, space, dcpl=dcpl)
    stack = h5py.Dataset(dsid)
    image_attrs: dict[str, Any] = {
        "CLASS": _fixed_ascii("IMAGE"),
        "IMAGE_VERSION": _fixed_ascii("1.2"),
    }
    if channels == 1:
        image_attrs["IMAGE_SUBCLASS"] = _fixed_ascii("IMAGE_GRAYSCALE")
        image_attrs["IMAGE_WHITE_IS_ZERO"] = np.uint8(0)
    else:
        image_attrs["IMAGE_SUBCLASS"] = _fixed_ascii("IMAGE_TRUECOLOR")
        image_attrs["INTERLACE_MODE"] = _fixed_ascii("INTERLACE_PIXEL")
    _new_attrs(
        stack,
        {
            **image_attrs,
            **_codec_attrs(codec),
            "filter_registered": np.uint8(bool(hdf5_filter and hdf5_filter.registered)),
        },
    )
    links.templates[alike] = stack
    links.add(group, name, stack)
    return stack


def _new_checks(f: h5py.File, rows: int) -> h5py.Dataset:
    """An unnamed column of per-row CRC-32 checks (/score_crc32, /source_crc32). Uncompressed,
    like /scores: partial chunks are rewritten in place on every batch."""
    return f.create_dataset(
        None,
        shape=(rows,),
        maxshape=(None,),
        chunks=(SOURCE_CHUNK_ROWS,),
        dtype="<u4",
        fillvalue=0,
        track_times=False,
    )


def ensure_scores(
    f: h5py.File, rows: int, k: int, links: PendingLinks, columns: list[str] | None = None
) -> h5py.Dataset:
    """/scores with ``rows`` rows of fill (NaN: no vector). ``columns`` (a 1.2 file; None in
    older ones) names the label of each column, and brings /score_crc32 beside it."""
    if SCORES in f:
        ds = f[SCORES]
        if ds.shape[1] != k:
            raise FormatError(f"/scores holds vectors of length {ds.shape[1]}, not {k}")
        return ds
    # Uncompressed: partial chunks are rewritten in place on every batch, where compressed
    # chunks would be reallocated and leave their old space behind.
    rows_per_chunk = max(1, min(4096, (1 << 20) // (4 * k)))
    ds = f.create_dataset(
        None,
        shape=(rows, k),
        maxshape=(None, k),
        chunks=(rows_per_chunk, k),
        dtype="<f4",
        fillvalue=np.nan,
        track_times=False,
    )
    if columns is not None:
        # For viewers (h5dump, h5py, HDFView): what each column is the score of.
        _new_attrs(ds, {SCORE_COLUMNS: np.array(columns, dtype=_STR)})
        links.add(f, SCORE_CRC32, _new_checks(f, rows))
    links.add(f, SCORES, ds)
    return ds


def write_scores(
    ds: h5py.Dataset,
    checks: h5py.Dataset | None,
    start: int,
    n: int,
    vectors: np.ndarray | None,
    *,
    created: bool = False,
) -> None:
    """Rows ``start:start + n`` of /scores (NaN for a batch without vectors) and, in a 1.2 file,
    their checks in /score_crc32. ``created``: /scores was made for this batch, and the rows
    before it (NaN fill) get the check of a NaN row, so that every row of a 1.2 file is checked."""
    k = ds.shape[1]
    rows = np.full((n, k), np.nan, np.float32) if vectors is None else vectors
    rows = np.ascontiguousarray(rows, dtype="<f4")  # the bytes the checks cover
    ds.resize(max(ds.shape[0], start + n), axis=0)
    ds[start : start + n] = rows
    if checks is None:
        return
    checks.resize(max(checks.shape[0], start + n), axis=0)
    checks[start : start + n] = score_checks(rows)
    if created and start:
        checks[:start] = score_checks(np.full((1, k), np.nan, np.float32))[0]


def needs_sources(f: h5py.File) -> bool:
    """Whether :func:`ensure_sources` would create anything."""
    return SOURCES not in f or (SOURCE_CRC32 not in f and root_holds_every_link(f))


def ensure_sources(f: h5py.File, rows: int, links: PendingLinks) -> None:
    """/sources and /source_crc32, whichever is missing, with ``rows`` rows of fill (no source;
    no check). A format-1.0 file's root group has no room for /source_crc32 (see
    :func:`root_holds_every_link`): its sources stay unchecked (repack writes a file with
    checks)."""
    if SOURCES not in f:
        ds = f.create_dataset(
            None,
            shape=(rows,),
            maxshape=(None,),
            chunks=(SOURCE_CHUNK_ROWS,),
            dtype=h5py.string_dtype("utf-8"),
            track_times=False,
        )
        links.add(f, SOURCES, ds)
    if SOURCE_CRC32 not in f and root_holds_every_link(f):
        links.add(f, SOURCE_CRC32, _new_checks(f, rows))


# --------------------------------------------------------------------------- reading

#: What HDF5 (through h5py), json and the decoders raise on damaged bytes.
DAMAGE_ERRORS = (OSError, RuntimeError, KeyError, ValueError, IndexError, OverflowError)


@contextlib.contextmanager
def damage_reported(path: str) -> Iterator[None]:
    """Inside this block, a damaged file's symptoms from HDF5, json or a decoder become a
    :class:`FormatError` naming the file (h5store's own errors pass through)."""
    try:
        yield
    except H5StoreError:
        raise
    except DAMAGE_ERRORS as exc:
        raise FormatError(
            f"{path} is damaged or not a complete h5store file ({type(exc).__name__}: {exc})"
        ) from exc


#: deflate's largest compression ratio (1032:1); the other filters h5store declares on its
#: tables compress less. A dataset cannot hold more bytes than this many times the file's.
MAX_EXPANSION = 1032


def check_claimed_size(ds: h5py.Dataset, path: str) -> None:
    """Refuse a dataset whose shape claims more bytes than the file could hold, before
    anything is allocated for it: a crafted /index resized to 10^12 rows in a 1 MB file ended
    in a MemoryError at open. The bound is the file's size times the best compression ratio,
    not the dataset's allocated storage: chunks never written read as the fill value and
    cost nothing on disk, and h5store's files have such datasets (a fresh /index_tail, the
    rows of /scores before the first score vector)."""
    claimed = int(np.prod(ds.shape, dtype=object)) * ds.id.get_type().get_size()
    file_size = ds.file.id.get_filesize()
    if claimed > MAX_EXPANSION * file_size:
        raise FormatError(
            f"{path}: {ds.name} is damaged: its shape {ds.shape} claims {claimed} bytes, more "
            f"than a file of {file_size} bytes can hold"
        )


def check_aligned(ds: object, path: str) -> None:
    """/scores must be (rows, K) floats, /sources (rows,) variable-length strings (not, say,
    the fixed-length /labels a damaged header points to) and /source_crc32 and /score_crc32
    (rows,) uint32 before a value is taken."""
    name = getattr(ds, "name", "").lstrip("/")
    if not isinstance(ds, h5py.Dataset):
        ok = False
    elif name == SCORES:
        ok = ds.ndim == 2 and ds.dtype.kind == "f"
    elif name in (SOURCE_CRC32, SCORE_CRC32):
        ok = ds.ndim == 1 and ds.dtype == np.dtype("<u4")
    else:
        info = h5py.check_string_dtype(ds.dtype)
        ok = ds.ndim == 1 and info is not None and info.length is None  # variable-length
    if not ok:
        raise FormatError(f"{path}: /{name} is damaged (not the table h5store wrote)")
    check_claimed_size(ds, path)


#: The index columns read_scores needs of each row (the cross-check, and messages).
SCORE_CROSS_CHECKED = ("id", "label", "score")


def read_scores(
    f: h5py.File, rows: np.ndarray, index_rows: Mapping[str, np.ndarray], path: str, checked: bool
) -> np.ndarray | None:
    """The (len(rows), K) score vectors of index rows ``rows`` (NaN rows past the end of
    /scores); None when the store has no /scores. ``index_rows`` holds those rows' index
    columns SCORE_CROSS_CHECKED (a structured array of the rows will do).

    Every row holding a vector is cross-checked against the index: its entry for the predicted
    class was also written there as the top-1 score. ``checked`` (a 1.2 file): every row is
    also compared with its check in /score_crc32, so a change to any entry raises. Both
    vectorised; one read of the rows' range."""
    if SCORES not in f:  # (not f.get: see read_sources)
        return None
    ds = f[SCORES]
    check_aligned(ds, path)
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full((len(rows), ds.shape[1]), np.nan, dtype=np.float32)
    if not len(rows):
        return out
    lo, hi = int(rows.min()), int(rows.max()) + 1
    top = min(hi, ds.shape[0])
    inside = rows < top
    if top > lo and hi - lo == len(rows) and rows[0] == lo and (np.diff(rows) == 1).all():
        ds.read_direct(out, np.s_[lo:top], np.s_[: top - lo])  # every row of a range: no copy
    elif top > lo:
        out[inside] = ds[lo:top][rows[inside] - lo]
    if checked:
        if SCORE_CRC32 not in f:
            raise FormatError(f"{path}: /{SCORES} is damaged: /{SCORE_CRC32} is missing")
        checks_ds = f[SCORE_CRC32]
        check_aligned(checks_ds, path)
        want = np.zeros(len(rows), dtype=np.uint32)
        top = min(hi, checks_ds.shape[0])
        inside = rows < top
        if top > lo:
            want[inside] = checks_ds[lo:top][rows[inside] - lo]
        # A 1.2 writer checks every row it writes, so 0 (the fill) is a lost check as well.
        bad = np.flatnonzero(want != score_checks(out))
        if len(bad):
            k = int(bad[0])
            raise FormatError(
                f"{path}: /{SCORES} row {int(rows[k])} (image {int(index_rows['id'][k])}) is "
                f"damaged: it does not match its check in /{SCORE_CRC32}"
            )
    _check_top1(out, index_rows, path)
    return out


def _check_top1(vectors: np.ndarray, index_rows: Mapping[str, np.ndarray], path: str) -> None:
    """Each vector's entry for the predicted class is also the index's top-1 score (which
    the index's compression protects): they must agree. Rows of NaN (no vector) and labels
    past the vectors' columns (classes the vectors do not cover) have nothing to compare."""
    n, k = vectors.shape
    if not n or not k:
        return
    labels = index_rows["label"].astype(np.int64)
    stored = vectors[np.arange(n), np.minimum(labels, k - 1)]
    top1 = index_rows["score"]
    differ = np.flatnonzero((labels < k) & (stored != top1) & ~(np.isnan(stored) & np.isnan(top1)))
    # (the rows without a vector are found among the few that differ, not in all N x K)
    bad = differ[~np.isnan(vectors[differ]).all(axis=1)]
    if len(bad):
        j = int(bad[0])
        raise FormatError(
            f"{path}: the score vector of image {int(index_rows['id'][j])} disagrees with its "
            f"score in the index ({stored[j]} != {top1[j]}): /{SCORES} is damaged"
        )


def check_stacks(stacks: np.ndarray, n_labels: int, path: str) -> None:
    """Refuse a /stacks table whose values h5store would trust blindly (a class id used as
    a list position, a shape handed to a decoder). Vectorised: a store of 1,000 classes has
    1,000 rows."""
    if not len(stacks):
        return
    bad = stacks["label"] >= n_labels
    bad |= ~np.isin(stacks["dtype"], [name.encode() for name in PIXEL_DTYPES])
    bad |= (stacks["channels"] < 1) | (stacks["channels"] > 4)
    bad |= (stacks["height"] == 0) | (stacks["width"] == 0)
    if not bad.any():
        return
    k = int(np.argmax(bad))
    row = stacks[k]
    if int(row["label"]) >= n_labels:
        problem = f"class id {int(row['label'])} but {n_labels} labels"
    elif row["dtype"].decode("ascii", "replace") not in PIXEL_DTYPES:
        problem = f"pixel type {row['dtype']!r}"
    else:
        problem = f"shape {int(row['height'])}x{int(row['width'])}x{int(row['channels'])}"
    raise FormatError(f"{path}: /{STACKS} row {k} is damaged ({problem})")


def check_classes(
    classes: Mapping[bytes, Any], labels: list[str], stacks: np.ndarray, path: str
) -> None:
    """(1.2, at open) Refuse a class group that disagrees with /labels or /stacks: its
    ``label`` attribute must be the label its ``class_id`` names in /labels (and its name
    that label's), its ``codec`` the codec of each of its stacks in /stacks. A changed /labels
    entry would otherwise rename a class, and a changed codec decode its images wrongly.
    ``classes``: each group's name -> its (class_id, label, codec) attributes, None where they
    cannot be read (_containment.class_attributes, read by the walk at open).

    Groups whose ``class_id`` is not in /labels yet are a live writer's new classes (it links
    a group before it writes its label); groups that cannot be read are left to the writer's
    recovery and to verify(). /stacks is grouped once."""
    stack_codecs: dict[int, set[bytes]] = {}
    for label, codec in zip(stacks["label"].tolist(), stacks["codec"].tolist()):
        stack_codecs.setdefault(label, set()).add(codec)
    encoded = [label.encode("utf-8") for label in labels]
    for name, attributes in classes.items():
        if attributes is None:
            continue
        class_id, label, codec = attributes
        if class_id >= len(labels):
            continue
        problem = None
        if label != encoded[class_id]:
            problem = f"its label is {_text(label)!r} but /{LABELS} row {class_id} is "
            problem += repr(labels[class_id])
        elif name != safe_name(labels[class_id]).encode("utf-8"):
            problem = f"its label is {labels[class_id]!r}, whose group is named "
            problem += repr(safe_name(labels[class_id]))
        else:
            others = stack_codecs.get(class_id, set()) - {codec}
            if others:
                problem = f"its codec is {_text(codec)!r} but /{STACKS} says "
                problem += repr(_text(sorted(others)[0]))
        if problem:
            raise FormatError(
                f"{path}: class {labels[class_id]!r} (/{CLASSES}/{_text(name)}) is damaged: "
                f"{problem}"
            )


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _value_ranges(n_stacks: int, n_labels: int) -> tuple[tuple[str, int, int | None, str], ...]:
    """check_rows' checks of values that must lie in a range: (column, lowest value, highest
    value or None for no bound, the problem)."""
    return (
        ("stack", 0, n_stacks - 1, "stack id out of range"),
        ("label", 0, n_labels - 1, "class id out of range"),
        ("true_label", NO_TRUE_LABEL, n_labels - 1, "true class id out of range"),
        ("id", 0, None, "negative id"),
        ("deleted", 0, 1, "deleted flag not 0 or 1"),
    )


def check_rows(rows: np.ndarray, stacks: np.ndarray, n_labels: int, path: str) -> None:
    """Refuse index rows whose values do not fit the rest of the file: each is later trusted
    as a list position (stack, label), a decoder's geometry or a dictionary key (id).
    Vectorised: about 10 ns a row."""
    if not len(rows):
        return
    # Offsets are not checked here: they are a cache that a rewritten file (h5repack) leaves
    # stale and the store rebuilds from HDF5; a read past the end is refused, and a wrong
    # byte range fails the image's CRC-32.
    for column, low, high, what in _value_ranges(len(stacks), n_labels):
        values = rows[column]
        bad = values < low
        if high is not None:
            bad |= values > high
        if bad.any():
            _bad_row(rows["id"], int(np.argmax(bad)), what, path)
    stack = np.minimum(rows["stack"], len(stacks) - 1)
    for column in ("label", "height", "width", "channels", "dtype", "codec"):
        bad = rows[column] != stacks[column][stack]
        if bad.any():
            _bad_row(rows["id"], int(np.argmax(bad)), f"{column} disagrees with its stack", path)
    check_unique_ids(np.ascontiguousarray(rows["id"]), path)


def check_unique_ids(ids: np.ndarray, path: str) -> None:
    """Refuse a repeated id among ``ids`` (the ``id`` column of the index rows)."""
    # Ids a store assigns itself only ever increase: then they are distinct without a sort
    # (sorting a million ids cost most of the open).
    if not (ids[1:] > ids[:-1]).all() and len(np.unique(ids)) != len(ids):
        values, counts = np.unique(ids, return_counts=True)
        _bad_row(ids, int(np.flatnonzero(ids == values[counts > 1][0])[0]), "id repeated", path)


#: The fields of an index row that must equal those of its stack (check_rows).
_STACK_FIELDS = ("label", "height", "width", "channels", "dtype", "codec")


#: Those of them but the class id: the geometry and codec, one run of bytes in a row.
_GEOMETRY_FIELDS = _STACK_FIELDS[1:]

#: The index columns whose values RowsFit checks lie in a range (see _value_ranges).
RANGE_COLUMNS = ("stack", "label", "true_label", "id", "deleted")


def _byte_run(dtype: np.dtype, names: tuple[str, ...]) -> tuple[int, int]:
    """Where the bytes of fields ``names`` of a record of ``dtype`` start and stop: one run."""
    fields: Mapping[str, Any] = dtype.fields or {}
    start = min(fields[n][1] for n in names)
    stop = max(fields[n][1] + dtype[n].itemsize for n in names)
    if stop - start != sum(dtype[n].itemsize for n in names):
        raise AssertionError(f"{names} are not one run of bytes of {dtype}")
    return start, stop


class RowsFit:
    """check_rows' checks of single rows (all but the repeated id) as one yes or no for a run
    of rows, cheap enough to run on each block of /index as it is decoded, while the block is
    in the CPU's cache (a few ns a row). check_rows, run where this says no, names the row
    and the problem. A block is given as rows (``__call__``), or as its columns and HDF5's
    planes of bytes (``planes_fit``: an open that makes no rows)."""

    #: where a row's geometry and codec bytes lie
    GEOMETRY = _byte_run(INDEX_DTYPE, _GEOMETRY_FIELDS)

    def __init__(self, stacks: np.ndarray, n_labels: int):
        # Each range as a maximum and (where the column's type holds values below its lowest)
        # a minimum: a reduction is one pass and one numpy call, where flagging the rows that
        # fail took two or three (each releases and retakes the GIL, which the other threads
        # decoding /index wait for).
        self._ranges = [
            (column, low if low > np.iinfo(INDEX_DTYPE[column]).min else None, high)
            for column, low, high, _ in _value_ranges(len(stacks), n_labels)
        ]
        expected = np.zeros(len(stacks), INDEX_DTYPE)  # each stack as its rows must read
        for name in _STACK_FIELDS:
            expected[name] = stacks[name]
        start, stop = self.GEOMETRY
        geometry = expected.view(np.uint8).reshape(len(stacks), INDEX_DTYPE.itemsize)[:, start:stop]
        # Looking each row's stack up was most of the check's cost. Geometry and codec bytes
        # every stack shares (a store of one image size) are compared with that one value,
        # and class ids that equal the stack ids (one stack a class, made in class order)
        # with the row's own stack id.
        shared = len(stacks) and (geometry == geometry[0]).all()
        self._geometry = geometry[0].copy() if shared else None
        self._geometry_table = np.ascontiguousarray(geometry)
        self._label_table = np.ascontiguousarray(expected["label"])
        self._labels_are_stack_ids = np.array_equal(self._label_table, np.arange(len(stacks)))

    def __call__(self, rows: np.ndarray) -> bool:
        if not len(rows):
            return True
        rows = np.ascontiguousarray(rows)
        start, stop = self.GEOMETRY
        geometry = rows.view(np.uint8).reshape(len(rows), INDEX_DTYPE.itemsize)[:, start:stop]
        return self.columns_fit({c: rows[c] for c in RANGE_COLUMNS}, geometry, 1)

    def planes_fit(self, columns: Mapping[str, np.ndarray], planes: np.ndarray, count: int) -> bool:
        """The first ``count`` rows of a block of /index given as ``planes`` (read_index_planes:
        chunk, byte of a row, row in the chunk) and ``columns`` (RANGE_COLUMNS of those rows)."""
        start, stop = self.GEOMETRY
        per_chunk = planes.shape[2]
        whole, rest = divmod(count, per_chunk)
        cut = whole * per_chunk
        if whole and not self.columns_fit(
            {c: v[:cut] for c, v in columns.items()}, planes[:whole, start:stop], 1
        ):
            return False
        # (a last chunk's rows past the end of /index: whatever the chunk held)
        return not rest or self.columns_fit(
            {c: v[cut:count] for c, v in columns.items()},
            planes[whole : whole + 1, start:stop, :rest],
            1,
        )

    def columns_fit(
        self, columns: Mapping[str, np.ndarray], geometry: np.ndarray, axis: int
    ) -> bool:
        """Rows given as ``columns`` (RANGE_COLUMNS) and ``geometry``, their geometry and codec
        bytes (GEOMETRY), a row's along ``axis`` and the rows in the order of the columns'."""
        for column, low, high in self._ranges:
            values = columns[column]
            if (high is not None and values.max() > high) or (
                low is not None and values.min() < low
            ):
                return False
        # (the ranges passed: every stack id names a stack)
        stack = columns["stack"]
        if self._labels_are_stack_ids:
            if (columns["label"] != stack).any():
                return False
        else:
            stack = stack.astype(np.intp)
            if (columns["label"] != self._label_table.take(stack)).any():
                return False
        if self._geometry is not None:
            shape = [1] * geometry.ndim
            shape[axis] = -1
            return not (geometry != self._geometry.reshape(shape)).any()
        by_row = np.moveaxis(geometry, axis, -1).reshape(-1, geometry.shape[axis])
        return not (by_row != self._geometry_table[stack.astype(np.intp)]).any()


def _bad_row(ids: np.ndarray, row: int, what: str, path: str) -> None:
    raise FormatError(
        f"{path}: the index is damaged: row {row} (id {int(ids[row])}): {what}; the "
        "images cannot be located safely (verify() and a backup are the way back)"
    )


def read_labels(f: h5py.File) -> list[str]:
    ds = f[LABELS]
    if not isinstance(ds, h5py.Dataset) or ds.ndim != 1:
        raise FormatError(f"{f.filename}: /{LABELS} is damaged (not a list of labels)")
    # Labels are at most MAX_LABEL_BYTES (plus a terminating NUL): a /labels of longer, or
    # variable-length, strings is not one h5store wrote (one 300 MB label took 2.5 GB to read)
    info = h5py.check_string_dtype(ds.dtype)
    if info is None or info.length is None or info.length > MAX_LABEL_BYTES + 1:
        raise FormatError(
            f"{f.filename}: /{LABELS} is damaged (not labels of at most {MAX_LABEL_BYTES} bytes)"
        )
    check_claimed_size(ds, f.filename)
    # (read straight: h5py's item access costs as much again)
    return [s.decode("utf-8") for s in _read_whole(ds, ds.dtype)]


def read_stacks(f: h5py.File) -> np.ndarray:
    ds = f[STACKS]
    if not _is_table_of(ds, STACKS_DTYPE):
        raise FormatError(f"{f.filename}: /{STACKS} is damaged (not a table of stacks)")
    check_claimed_size(ds, f.filename)
    return _read_table(ds, STACKS_DTYPE)


def read_tail_rows(f: h5py.File) -> np.ndarray:
    ds = f[INDEX_TAIL]
    if not _is_table_of(ds, INDEX_DTYPE):
        raise FormatError(f"{f.filename}: /{INDEX_TAIL} is damaged (not a table of index rows)")
    check_claimed_size(ds, f.filename)
    return _read_table(ds, INDEX_DTYPE)


def zeroed_array(n: int, dtype: np.dtype) -> np.ndarray:
    """A zeroed array of ``n`` items in fresh memory of its own, in 4 kB pages. numpy asks the
    kernel for huge pages for large arrays, and where it has to compact memory to find them
    (transparent huge pages in "madvise" mode, as here) the first writes pay for it: opening a
    million-row store spent 150-300 ms of system time there in half the opens, 40-60 ms
    without."""
    size = n * np.dtype(dtype).itemsize
    if not size:
        return np.zeros(n, dtype)
    return np.frombuffer(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), dtype)


#: /index chunks decoded per block: a block's rows (8,192 at 512 a chunk, 650 kB) stay in the
#: CPU's cache for the work done on them as they are decoded (``read_index_rows(on_blocks)``).
INDEX_BLOCK_CHUNKS = 16


def _index_dataset(f: h5py.File) -> h5py.Dataset:
    """/index, refused unless it is a growing table of index rows no larger than the file can
    hold."""
    ds = f[INDEX]
    if not _is_table_of(ds, INDEX_DTYPE):
        raise FormatError(f"{f.filename}: /{INDEX} is damaged (not a table of index rows)")
    if ds.maxshape != (None,):
        # /index_tail's header has /index's type but a fixed size: copied over /index's, it
        # made every image vanish without an error (found by the fuzzer).
        raise FormatError(f"{f.filename}: /{INDEX} is damaged (a table of fixed size)")
    check_claimed_size(ds, f.filename)
    return ds


def _inflate_index_chunk(stored: Buffer, out: np.ndarray, name: str, first_row: int) -> None:
    """Inflate one /index chunk's ``stored`` bytes into ``out``, which they must fill: HDF5
    stores whole chunks, and a shorter stream (a crafted or damaged file) would leave rows of
    whatever memory ``out`` held before (libdeflate refuses a longer one)."""
    # (imagecodecs' stubs leave out the arrays out= takes: it fills any writable buffer)
    got = len(_deflate_decode(stored, out=out))  # type: ignore[arg-type]
    if got != len(out):
        raise FormatError(
            f"{name}: /{INDEX} is damaged (the chunk of rows from {first_row} inflates to "
            f"{got} bytes, not {len(out)})"
        )


def _inflate_blocks(
    chunks: list[tuple[int, int, int]],
    read_bytes: Callable[[int, int], Buffer],
    read_ranges: Callable[[list[int], list[int]], Sequence[Buffer]] | None,
    rows_per_chunk: int,
    threads: int,
    work: Callable[[int, np.ndarray, list[Buffer]], None],
    name: str,
) -> None:
    """Inflate /index's ``chunks`` ((first row, file offset, size) each, all shuffle + deflate)
    a block of INDEX_BLOCK_CHUNKS at a time, on ``threads`` threads, and call ``work(first
    row, planes, stored)`` on the thread that inflated each block: ``planes[j, b, r]`` is byte
    ``b`` of row ``r`` of the block's ``j``-th chunk, as HDF5's shuffle stores them, and
    ``stored`` the chunks' bytes as read. ``read_ranges(offsets, sizes)``, where given,
    fetches every chunk's bytes at once first (a remote store's one round of requests)."""
    read_chunk = read_bytes
    if read_ranges is not None:
        fetched = dict(
            zip(
                (offset for _, offset, _ in chunks),
                read_ranges([o for _, o, _ in chunks], [n for *_, n in chunks]),
            )
        )

        def read_fetched(offset: int, _size: int) -> Buffer:
            return fetched[offset]

        read_chunk = read_fetched
    itemsize = INDEX_DTYPE.itemsize

    def inflate(block: int) -> None:
        # libdeflate into a buffer of the known size: 4x faster than zlib growing its own.
        block_chunks = chunks[block : block + INDEX_BLOCK_CHUNKS]
        plain = np.empty((len(block_chunks), itemsize * rows_per_chunk), np.uint8)
        stored = [read_chunk(offset, size) for _, offset, size in block_chunks]
        for j, data in enumerate(stored):
            _inflate_index_chunk(data, plain[j], name, block_chunks[j][0])
        work(block_chunks[0][0], plain.reshape(-1, itemsize, rows_per_chunk), stored)

    from ._parallel import thread_map

    blocks = range(0, len(chunks), INDEX_BLOCK_CHUNKS)
    if threads > 1:
        thread_map(inflate, blocks)
    else:
        for block in blocks:
            inflate(block)


def read_index_rows(
    f: h5py.File,
    read_bytes: Callable[[int, int], Buffer] | None = None,
    threads: int = 1,
    *,
    spare: int = 0,
    on_blocks: Callable[[np.ndarray], Callable[[int, int], None]] | None = None,
    read_ranges: Callable[[list[int], list[int]], Sequence[Buffer]] | None = None,
) -> np.ndarray:
    """All rows stored in /index.

    With ``read_bytes(offset, size)`` (reading the file directly) the chunks are inflated and
    unshuffled here, on ``threads`` threads: HDF5 would do it one chunk at a time under h5py's
    global lock, which makes opening a million-row store slow. Any chunk that is not plain
    shuffle + deflate falls back to HDF5. ``read_ranges``: see _inflate_blocks.

    ``spare``: rows of room to leave after the last one (the returned rows are a view of
    that larger array). ``on_blocks(rows)`` is called once with that array before anything
    is decoded into it, and returns a function that is then called with the bounds
    ``(start, stop)`` of each block of rows as soon as it is decoded, on the thread that
    decoded it: work on a block finds it still in the CPU's cache (copying columns out of a
    million 79-byte rows afterwards cost more than decoding them).
    """
    ds = _index_dataset(f)
    n = ds.shape[0]
    chunks = _plain_index_chunks(ds) if n and read_bytes is not None else None
    rows_per_chunk = ds.chunks[0] if ds.chunks else max(n, 1)
    out = zeroed_array(max(len(chunks or ()) * rows_per_chunk, n) + spare, INDEX_DTYPE)
    on_block = on_blocks(out) if on_blocks is not None else None
    block_rows = INDEX_BLOCK_CHUNKS * rows_per_chunk
    if chunks is None or read_bytes is None:  # (chunks are only looked up with read_bytes)
        if n:
            ds.read_direct(out, np.s_[:], np.s_[:n])
        if on_block is not None:
            for first in range(0, n, block_rows):
                on_block(first, min(first + block_rows, n))
        return out[:n]
    raw_out = out.view(np.uint8)
    itemsize = INDEX_DTYPE.itemsize

    def unshuffle(first: int, planes: np.ndarray, _stored: list[Buffer]) -> None:
        # HDF5's shuffle stores byte k of every row together; undo that transposition, for the
        # whole block in one call (each numpy call releases and retakes the GIL, which the
        # other decoding threads then wait for).
        k = len(planes)
        raw_out[first * itemsize : (first + k * rows_per_chunk) * itemsize].reshape(
            k, rows_per_chunk, itemsize
        )[:] = planes.transpose(0, 2, 1)
        if on_block is not None:
            on_block(first, min(first + block_rows, n))

    _inflate_blocks(chunks, read_bytes, read_ranges, rows_per_chunk, threads, unshuffle, f.filename)
    return out[:n]


def read_index_planes(
    f: h5py.File,
    read_bytes: Callable[[int, int], Buffer],
    threads: int,
    on_start: Callable[[int, int, int], Callable[[int, np.ndarray, list[Buffer]], None]],
    *,
    read_ranges: Callable[[list[int], list[int]], Sequence[Buffer]] | None = None,
) -> bool:
    """/index as read_index_rows reads it, without making its rows: ``on_start(rows, rows per
    chunk, chunks)`` is called once /index is found to be plain shuffle + deflate chunks, and
    returns the function called with each block of chunks as it is inflated, on the thread
    that inflated it (see _inflate_blocks: HDF5's planes of bytes, and the chunks' bytes as
    stored). The caller takes the columns it needs out of the planes, and can make the rows
    from the stored bytes later (index_chunk_rows). False, calling nothing, where /index is
    empty or not plain (read_index_rows then reads it through HDF5)."""
    ds = _index_dataset(f)
    n = ds.shape[0]
    chunks = _plain_index_chunks(ds) if n else None
    if chunks is None:
        return False
    rows_per_chunk = ds.chunks[0]
    work = on_start(n, rows_per_chunk, len(chunks))
    _inflate_blocks(chunks, read_bytes, read_ranges, rows_per_chunk, threads, work, f.filename)
    return True


def index_chunk_rows(stored: Buffer, rows_per_chunk: int, out: np.ndarray) -> None:
    """Fill ``out`` (``rows_per_chunk`` rows or fewer of INDEX_DTYPE) with the first rows of
    the /index chunk whose stored bytes (shuffle + deflate) are ``stored``."""
    itemsize = INDEX_DTYPE.itemsize
    plain = np.empty(itemsize * rows_per_chunk, np.uint8)
    _inflate_index_chunk(stored, plain, "/index", 0)  # (inflated whole at open already)
    planes = plain.reshape(itemsize, rows_per_chunk)
    out.view(np.uint8).reshape(len(out), itemsize)[:] = planes[:, : len(out)].T


def _plain_index_chunks(ds: h5py.Dataset) -> list[tuple[int, int, int]] | None:
    """(first row, file offset, size) of every chunk of /index, in row order, where they are
    all shuffle + deflate of rows of exactly INDEX_DTYPE, as h5store writes them, and cover
    the rows; None otherwise (HDF5 then reads them, converting a later version's rows)."""
    if not _holds_exactly(ds, INDEX_DTYPE):
        return None
    plist = ds.id.get_create_plist()
    pipeline = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
    if pipeline != [h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE]:
        return None
    chunks: list[tuple[int, int, int, int]] = []
    ds.id.chunk_iter(
        lambda c: chunks.append((c.chunk_offset[0], c.byte_offset, c.size, c.filter_mask))
    )
    rows_per_chunk = ds.chunks[0]
    if any(mask for *_, mask in chunks) or len(chunks) != -(-ds.shape[0] // rows_per_chunk):
        return None
    chunks.sort()
    if [start for start, *_ in chunks] != list(range(0, ds.shape[0], rows_per_chunk)):
        return None
    return [(start, offset, size) for start, offset, size, _ in chunks]
