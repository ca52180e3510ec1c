"""Import from and export to torchvision's ImageFolder layout: ``root/<class>/<image file>``.

Export writes each image's stored bytes as they are when they already form an image file
(JPEG, PNG, WebP, ...: codecs with a :attr:`~h5store.codecs.Codec.file_extension`), so nothing
is re-encoded; other codecs are written as PNG. Class
folder names are :func:`h5store.format.safe_name` of the label: one path component that can
never climb out of the target folder, whatever the label says (shortened with a hash of the label
where that would be longer than a file name may be: :func:`folder_name`).

Beside the class folders, export writes the index (``h5store-index.json``, or ``.csv``): ids,
labels, true labels, scores, score vectors and sources. Import reads it back, so a round trip
through a folder loses nothing; folders without one are read as plain ImageFolder trees.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import imagecodecs
import numpy as np
from tqdm import tqdm  # text on stderr: tqdm.auto wants ipywidgets in notebooks

from ._file_metadata import Embedded
from ._file_metadata import read as read_embedded
from .codecs import Codec, get_codec
from .errors import (
    AlreadyImportedError,
    CodecError,
    DuplicateIdError,
    H5StoreError,
    InvalidInputError,
    TargetExistsError,
)
from .format import safe_name
from .store import ImageStore

#: The codec export writes an image's file with when its own codec's payload is no image file.
FALLBACK_CODEC = "png"
IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".avif",
    ".jxl",
    ".jp2",
    ".j2k",
    ".qoi",
    ".tif",
    ".tiff",
    ".bmp",
    ".gif",
}
#: The index file export writes beside the class folders (one of these names).
INDEX_FILES = {"json": "h5store-index.json", "csv": "h5store-index.csv"}
INDEX_FORMAT = "h5store-export"
#: CSV columns of the index; score vectors follow as one ``score:<label>`` column per class.
CSV_COLUMNS = ["file", "id", "label", "true_label", "score", "source", "codec", "crc32"]
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


#: Longest file name (bytes) the common file systems take (ext4, XFS, btrfs, APFS, NTFS).
MAX_NAME_BYTES = 255
#: Marks a shortened folder name; safe_name never writes '%' but as '%XX' (two hex digits),
#: so no label's own folder name contains it.
_SHORTENED = "%~"
_DIGEST_CHARS = 16


def folder_name(label: str, limit: int = MAX_NAME_BYTES) -> str:
    """The class folder of ``label``: :func:`safe_name`, shortened when that is longer than
    a file name can be. A shortened name is the longest prefix of the escaped name (never cut
    inside a character or an escape) that leaves room for ``%~`` and 16 hex digits of the
    label's SHA-256: distinct labels keep distinct folders, and no label's own name has that
    form. The export's index keeps the full label. ``limit``: the bytes the name may take (less
    than a file name's when it shares one, as in the flat layout's ``<id>_<label>.jpg``)."""
    name = safe_name(label)
    if len(name.encode("utf-8")) <= limit:
        return name
    digest = hashlib.sha256(label.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    room = limit - len(_SHORTENED) - _DIGEST_CHARS
    cut = len(name.encode("utf-8")[:room].decode("utf-8", "ignore"))
    if "%" in name[max(0, cut - 2) : cut]:  # a cut escape: end before it
        cut = name.rindex("%", 0, cut)
    return f"{name[:cut]}{_SHORTENED}{digest}"


def label_of_folder(name: str) -> str:
    """Inverse of :func:`safe_name` for folders h5store exported (``%XX`` sequences decode)."""
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), name)
    try:  # percent-escapes are UTF-8 bytes; re-decode multi-byte characters
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def export_folder(
    store: ImageStore,
    root: str | os.PathLike,
    *,
    ids: Iterable[int] | None = None,
    by: str = "label",
    layout: str = "folders",
    embed_metadata: bool = False,
    index: str | None = "json",
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Write images as files in torchvision's ImageFolder layout, and the index beside them.

    Each image goes to ``root/<class>/<id><ext>`` (or ``root/<id>_<class><ext>``) as its
    stored bytes (no re-encoding) where its codec's payload is a file format, else as a PNG of
    the pixels.

    Parameters
    ----------
    store
        The open store.
    root
        The folder to write into (created if missing).
    ids
        Only these images (default: every live image).
    by
        Group by predicted ``"label"`` or by ``"true_label"`` (images without one go to
        ``_unknown``).
    layout
        ``"folders"``: ``root/<class>/<id><ext>``; ``"flat"``: ``root/<id>_<class><ext>``
        (OpenCV users' layout).
    embed_metadata
        Put each image's id, label, score, true label, score vector, source and the store's
        name inside its file, the image data untouched, where its codec embeds metadata (JPEG
        and WebP: EXIF; PNG: iTXt); other files carry none, and a warning says so.
    index
        Write the index beside the class folders as ``"json"`` (``h5store-index.json``, which
        ``import_folder`` reads back) or ``"csv"``; None for no index.
    overwrite
        Replace files that exist.
    progress
        Show a progress bar on stderr.

    Returns
    -------
    int
        The number of image files written.

    Raises
    ------
    TargetExistsError
        A file to write exists and ``overwrite`` is false; nothing is written.
    InvalidInputError
        A bad ``by``, ``layout`` or ``index``.
    UnknownIdError
        An id of ``ids`` is not a live image of the store.
    DamagedImageError
        An image's stored bytes fail their CRC-32.
    """
    if by not in ("label", "true_label"):
        raise InvalidInputError(f"by must be 'label' or 'true_label', got {by!r}")
    if layout not in ("folders", "flat"):
        raise InvalidInputError(f"layout must be 'folders' or 'flat', got {layout!r}")
    if index is not None and index not in INDEX_FILES:
        raise InvalidInputError(
            f"index must be one of {sorted(INDEX_FILES)} or None, got {index!r}"
        )
    root = os.path.realpath(os.fspath(root))
    chosen = store.ids() if ids is None else np.asarray(list(ids))
    records = [store.record(i) for i in chosen.tolist()]
    own = {codec_id: get_codec(codec_id) for codec_id in {r.codec for r in records}}
    fallback = get_codec(FALLBACK_CODEC)
    plan = []
    for record in records:
        # the stored bytes where they form a file of their codec's format, else a PNG of them
        as_is = own[record.codec].file_extension is not None
        codec = own[record.codec] if as_is else fallback
        plan.append((record, codec, as_is, _export_path(root, record, by, codec, layout)))
    existing = [path for *_, path in plan if os.path.lexists(path)]
    if index is not None and os.path.lexists(os.path.join(root, INDEX_FILES[index])):
        existing.insert(0, os.path.join(root, INDEX_FILES[index]))
    if existing and not overwrite:
        raise TargetExistsError(
            f"{len(existing)} of the files to export exist already in {root} (first: "
            f"{os.path.relpath(existing[0], root)}); pass overwrite=True (--overwrite) to "
            "replace them, or export into an empty folder"
        )
    without = sorted(
        {codec.codec_id for _, codec, as_is, _ in plan if as_is and not codec.embeds_metadata}
    )
    if embed_metadata and without:
        warnings.warn(
            f"{', '.join(without)} files are exported without embedded metadata "
            "(the index file beside them has it)",
            stacklevel=2,
        )
    store_name = os.path.basename(store.path)
    entries = []
    for record, codec, as_is, path in tqdm(plan, desc="export", unit="img", disable=not progress):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if as_is:
            data = store.get_encoded(record.id)
        else:
            pixels = store.get_batch([record.id], channel_order="rgb")[0]  # files hold RGB
            data = imagecodecs.png_encode(pixels)
        if embed_metadata and codec.embeds_metadata:
            width_height = (record.shape[1], record.shape[0])
            metadata = _file_metadata(record, store_name, store.labels)
            data = codec.embed_metadata(data, metadata, width_height)
        with open(path, "wb" if overwrite else "xb") as fh:
            fh.write(data)
        entries.append(_index_entry(record, os.path.relpath(path, root)))
    if index is not None:
        _write_index(
            os.path.join(root, INDEX_FILES[index]), index, entries, store, by, embed_metadata
        )
    return len(entries)


def _export_path(root: str, record: Any, by: str, codec: Codec, layout: str = "folders") -> str:
    label = getattr(record, by)
    extension = codec.file_extension
    if layout == "flat":  # folder_name's escapes keep the name one component, as a folder
        head = f"{record.id}_"
        room = MAX_NAME_BYTES - len(head) - len(extension)
        name = "_unknown" if label is None else folder_name(label, room)
        return os.path.join(root, f"{head}{name}{extension}")
    folder = os.path.join(root, "_unknown" if label is None else folder_name(label))
    if (
        os.path.dirname(os.path.realpath(os.path.join(folder, "x"))) != os.path.realpath(folder)
        or os.path.commonpath([root, os.path.realpath(folder)]) != root
    ):
        # folder_name makes this unreachable
        raise H5StoreError(f"label {label!r} would leave {root}")
    return os.path.join(folder, f"{record.id}{extension}")


def _float32(value: Any) -> float | None:
    # The shortest decimal that reads back as the same float32: 0.9835237, not 0.98352366685...
    return None if value is None else float(str(np.float32(value)))


def _file_metadata(record: Any, store_name: str, labels: Sequence[str]) -> dict[str, Any]:
    # The score vector by class name: the file alone says what each probability is for.
    vector = None
    if record.scores is not None:
        vector = {name: _float32(x) for name, x in zip(labels, record.scores)}
    return {
        "id": record.id,
        "label": record.label,
        "true_label": record.true_label,
        "score": _float32(record.score),
        "scores": vector,
        "source": record.source,
        "store": store_name,
    }


def _index_entry(record: Any, file: str) -> dict[str, Any]:
    return {
        "file": file.replace(os.sep, "/"),
        "id": record.id,
        "label": record.label,
        "true_label": record.true_label,
        "score": _float32(record.score),
        "source": record.source,
        "codec": record.codec,
        "crc32": record.crc32,
        "scores": None if record.scores is None else [_float32(x) for x in record.scores],
    }


def _write_index(
    path: str, kind: str, entries: list[dict[str, Any]], store: ImageStore, by: str, embedded: bool
) -> None:
    labels = list(store.labels)
    tmp = path + ".tmp"
    if kind == "json":
        document = {
            "format": INDEX_FORMAT,
            "version": 1,
            "store": os.path.basename(store.path),
            "grouped_by": by,
            "embedded_metadata": embedded,
            "labels": labels,
            "images": entries,
        }
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(document, fh, ensure_ascii=False, indent=1, allow_nan=False)
    else:
        vectors = any(e["scores"] is not None for e in entries)
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(CSV_COLUMNS + ([f"score:{label}" for label in labels] if vectors else []))
            for e in entries:
                row = ["" if e[c] is None else e[c] for c in CSV_COLUMNS]
                if vectors:
                    row += e["scores"] if e["scores"] else [""] * len(labels)
                out.writerow(row)
    os.replace(tmp, path)


def read_index(root: str | os.PathLike, *, follow_links: bool = False) -> dict[str, Any] | None:
    """The index an export wrote into ``root`` (labels and one entry per file), or None.
    Errors name the file, never its content (the file may be anything, see
    :func:`import_folder`)."""
    root = os.fspath(root)
    json_path, csv_path = (os.path.join(root, INDEX_FILES[k]) for k in ("json", "csv"))
    if os.path.exists(json_path):
        _check_link(root, json_path, follow_links)
        try:
            with open(json_path, encoding="utf-8") as fh:
                document = json.load(fh)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(
                f"cannot read {json_path}: not the JSON index h5store writes ({type(exc).__name__})"
            ) from None
        if not isinstance(document, dict) or document.get("format") != INDEX_FORMAT:
            raise InvalidInputError(f"{json_path} is not an index h5store wrote")
        return document
    if not os.path.exists(csv_path):
        return None
    _check_link(root, csv_path, follow_links)
    not_ours = InvalidInputError(f"{csv_path} is not an index h5store wrote")
    try:
        with open(csv_path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, ValueError, csv.Error):
        raise not_ours from None
    header = rows[0] if rows else []
    if header[: len(CSV_COLUMNS)] != CSV_COLUMNS:
        raise not_ours
    labels = [c[len("score:") :] for c in header[len(CSV_COLUMNS) :]]
    images = []
    for row in rows[1:]:
        e: dict[str, Any] = dict(zip(CSV_COLUMNS, (v or None for v in row)))
        try:  # (int() and float() would quote the text they refuse)
            e["id"] = int(e["id"])
            e["crc32"] = None if e["crc32"] is None else int(e["crc32"])
            e["score"] = None if e["score"] is None else float(e["score"])
            vector = row[len(CSV_COLUMNS) :]
            e["scores"] = [float(x) for x in vector] if vector and all(vector) else None
        except (TypeError, ValueError):
            raise not_ours from None
        images.append(e)
    return {"format": INDEX_FORMAT, "labels": labels, "images": images}


def _inside(root: str, path: str) -> bool:
    """Whether ``path``, its links resolved, lies in ``root`` (itself resolved)."""
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def _check_link(root: str, path: str, follow_links: bool) -> None:
    """Refuse a link (at ``path`` or above it, below ``root``) that leads out of ``root``."""
    if not follow_links and not _inside(root, path):
        raise InvalidInputError(
            f"{path} is a symbolic link (or lies below one) leading out of {root}; an import "
            "reads only the folder's own files: pass follow_links=True (--follow-links) to "
            "follow links out of it"
        )


def _files_of_tree(root: str, follow_links: bool = False) -> list[tuple[str, str]]:
    """(label, path) of the image files below ``root/<class>/``. Links are followed, files and
    folders alike, when they lead to something inside ``root``, as copies of their targets
    would be read (within a class each folder is walked once, so a link loop ends); a link
    leading out of it is an error unless ``follow_links``."""
    files = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        _check_link(root, entry.path, follow_links)
        label = label_of_folder(entry.name)
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(entry.path, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:  # reached again through a link: a loop, or walked already
                dirnames.clear()
                continue
            seen.add(real)
            dirnames.sort()
            for name in dirnames:
                _check_link(root, os.path.join(dirpath, name), follow_links)
            for filename in sorted(filenames):
                if os.path.splitext(filename)[1].lower() in IMAGE_SUFFIXES:
                    path = os.path.join(dirpath, filename)
                    _check_link(root, path, follow_links)
                    files.append((label, path))
    return files


def list_folder(root: str | os.PathLike, *, follow_links: bool = False) -> list[tuple[str, str]]:
    """(label, path) of every image file under ``root/<class>/``, in a fixed (sorted) order;
    the absolute path, as :func:`import_folder` records it as the source. Links leading out of
    ``root`` are refused unless ``follow_links`` (see :func:`import_folder`)."""
    root = os.path.realpath(os.fspath(root))
    files = _files_of_tree(root, follow_links)
    if not files:
        raise InvalidInputError(
            f"{root} has no class folders with images (expected root/<class>/<image>)"
        )
    return files


def import_folder(
    store: ImageStore,
    root: str | os.PathLike,
    *,
    layout: str = "auto",
    folders: str = "predicted",
    ids: str = "auto",
    batch_size: int = 256,
    allow_duplicates: bool = False,
    follow_links: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Add the images of a folder; returns the new ids (:func:`import_tree`
    returns the report of what came from where too).

    A folder h5store exported (it has ``h5store-index.json`` or ``.csv``) comes back as it
    was: ids, labels, true labels, scores, score vectors and sources from the index, and the
    stored bytes without the metadata export embedded. Otherwise ``layout`` says how it is
    laid out: ``folders`` (``root/<class>/<file>``; ``folders`` says whether the folder names
    the ``predicted`` label, the default, or the ``true`` one), ``flat`` (``root/<id>_<label>
    .<ext>``) or ``auto`` (flat when ``root`` has no subfolder); metadata embedded in the files
    (EXIF, PNG text, as JSON) fills in the rest; the source is the file's absolute path unless
    the metadata says. ``ids``: ``auto`` (the files' own ids when every file has one),
    ``from-names`` (the number a file name begins with) or ``new``.

    Only the folder's own files are read: a symbolic link (to a file or a folder, the index
    file included) is followed when it leads to something inside ``root``, and one leading
    out of it is refused with :class:`InvalidInputError` naming the link, before anything is
    written, unless ``follow_links``. No error quotes a file's content.

    Files whose format is the class's codec (a JPEG file into a JPEG class) are stored as they
    are; the others are decoded and encoded with the class's codec. Images the store already
    holds (the same ids, or the same source files) and ids given twice are refused before
    anything is written (:class:`AlreadyImportedError`, :class:`DuplicateIdError`), unless
    ``allow_duplicates``, which adds them again under new ids."""
    return import_tree(
        store,
        root,
        layout=layout,
        folders=folders,
        ids=ids,
        allow_duplicates=allow_duplicates,
        follow_links=follow_links,
        batch_size=batch_size,
        progress=progress,
    ).ids


def _items_from_index(root: str, index: dict[str, Any], follow_links: bool) -> list[dict[str, Any]]:
    items = []
    for k, e in enumerate(index.get("images", [])):
        path = os.path.normpath(os.path.join(root, str(e.get("file", ""))))
        if os.path.commonpath([root, path]) != root:  # the name itself climbs out ("../x")
            raise InvalidInputError(
                f"entry {k} of the index points outside {root}: {e.get('file')!r}"
            )
        _check_link(root, path, follow_links)
        if not os.path.isfile(path):
            raise InvalidInputError(f"the index lists {e.get('file')!r}, which is not in {root}")
        items.append(
            {
                "path": path,
                "label": e["label"],
                "true_label": e.get("true_label"),
                "score": e.get("score"),
                "scores": e.get("scores"),
                "id": e.get("id"),
                "source": e.get("source"),
                "codec": e.get("codec"),
                "crc32": e.get("crc32"),
            }
        )
    return items


def _declare_vector_labels(store: ImageStore, index: dict[str, Any], items: list[dict]) -> None:
    """Score vectors are over the exporting store's labels, in its order: declare them."""
    if not any(item.get("scores") for item in items):
        return
    width = max(len(item["scores"]) for item in items if item.get("scores"))
    labels, have = list(index.get("labels", []))[:width], list(store.labels)
    if len(labels) != width or labels[: len(have)] != have:
        raise InvalidInputError(
            f"the folder's score vectors are over the labels {labels}, but the store's labels "
            f"are {have}; import it into a new store, or one with those labels in that order"
        )
    store.add_labels(labels)
    # Vectors need exactly the labels they are over: store them before other classes arrive.
    items.sort(key=lambda item: item.get("scores") is None)


def _refuse_duplicates(store: ImageStore, root: str, items: list[dict], allowed: bool) -> None:
    if allowed:
        return
    ids = np.array([item["id"] for item in items if item.get("id") is not None], dtype=np.int64)
    held = ids[np.isin(ids, store.ids())] if len(ids) else ids
    if len(held):
        raise AlreadyImportedError(
            f"{len(held)} of the {len(items)} images of {root} have ids the store holds already "
            f"(first: {int(held[0])}): the folder was imported before, or comes from a store "
            "whose ids overlap; pass allow_duplicates=True (--allow-duplicates) to add them "
            "again under new ids"
        )
    if any(item.get("id") is not None for item in items):
        return
    held_sources = set(store.sources)
    again = [item["source"] for item in items if item["source"] in held_sources]
    if again:
        raise AlreadyImportedError(
            f"{len(again)} of the {len(items)} files of {root} were imported before (first: "
            f"{again[0]}); pass allow_duplicates=True (--allow-duplicates) to add them again"
        )


def _import_chunk(store: ImageStore, chunk: list[dict[str, Any]]) -> list[np.ndarray]:
    as_is, decoded = [], []
    for item in chunk:
        with open(item["path"], "rb") as fh:
            data = fh.read()
        codec = store.codec_of(item["label"])
        if item.get("strip"):  # h5store's export embedded it: the stored stream is without
            data = codec.strip_metadata(data)
        elif item.get("codec") == codec.codec_id and item.get("crc32") is not None:
            stored = codec.strip_metadata(data)  # the bytes the exporting store held
            if imagecodecs.deflate_crc32(stored) == item["crc32"]:
                data = stored
        try:
            codec.probe(data)
            as_is.append((item, data))
        except CodecError:
            try:
                decoded.append((item, imagecodecs.imread(data)))
            except Exception:  # imagecodecs raises per-format error types
                raise _not_an_image(item["path"]) from None
    # One add call per (stored as is or decoded, kind of score): a batch has one kind.
    groups: dict[tuple[bool, str], list[tuple[dict[str, Any], Any]]] = {}
    for encoded, group in ((True, as_is), (False, decoded)):
        for item, data in group:
            kind = (
                "vector"
                if item.get("scores") is not None
                else "top1"
                if item.get("score") is not None
                else "none"
            )
            groups.setdefault((encoded, kind), []).append((item, data))
    out = []
    for (encoded, kind), group in groups.items():
        items = [item for item, _ in group]
        scores = (
            None
            if kind == "none"
            else np.array(
                [item["scores" if kind == "vector" else "score"] for item in items],
                dtype=np.float32,
            )
        )
        ids = [item.get("id") for item in items]
        add = store.add_encoded_batch if encoded else store.add_batch
        out.append(
            add(
                [data for _, data in group],
                labels=[item["label"] for item in items],
                true_labels=[item.get("true_label") for item in items],
                scores=scores,
                ids=ids if all(i is not None for i in ids) else None,
                sources=[item.get("source") for item in items],
            )
        )
    return out


def _not_an_image(path: str) -> InvalidInputError:
    # Not the decoder's message: some quote the first bytes of what they could not read, and
    # the file may be anything a link in the folder pointed at.
    return InvalidInputError(f"cannot read {path}: not an image file h5store can decode")


def add_files(
    store: ImageStore,
    paths: Sequence[str],
    labels: Sequence[str],
    *,
    true_labels: Sequence[str | None] | None = None,
    scores: Sequence[float] | None = None,
    ids: Sequence[int] | None = None,
    first_id: int | None = None,
    sources: Sequence[str] | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> np.ndarray:
    """Add image files, ``batch_size`` at a time: the ones the class's codec stores as they are
    (a JPEG file into a JPEG class) without decoding, the others decoded and encoded (in each
    batch the first kind first). ``ids``: one per file; else ``first_id``: ids count up from
    it in the order the images are added, as the store would number them from there. Returns
    the new ids in the order added."""
    n = len(paths)
    columns = {
        "label": labels,
        "true_label": true_labels,
        "score": scores,
        "id": ids,
        "source": sources,
    }
    columns = {name: list(values) for name, values in columns.items() if values is not None}
    new_ids = []
    next_id = first_id
    with tqdm(total=n, desc="import", unit="img", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            as_is, decoded = [], []
            for k in range(start, min(n, start + batch_size)):
                with open(paths[k], "rb") as fh:
                    data = fh.read()
                try:
                    store.codec_of(columns["label"][k]).probe(data)
                    as_is.append((k, data))
                except CodecError:
                    try:
                        decoded.append((k, imagecodecs.imread(data)))
                    except Exception:  # imagecodecs raises per-format error types
                        raise _not_an_image(paths[k]) from None
            for group, add in ((as_is, store.add_encoded_batch), (decoded, store.add_batch)):
                if not group:
                    continue
                rows = [k for k, _ in group]
                given = {f"{name}s": [values[k] for k in rows] for name, values in columns.items()}
                if next_id is not None and "ids" not in given:
                    given["ids"] = list(range(next_id, next_id + len(rows)))
                    next_id += len(rows)
                new_ids.append(add([item for _, item in group], **given))
            bar.update(min(n, start + batch_size) - start)
    return np.concatenate(new_ids) if new_ids else np.zeros(0, np.int64)


# ============================================================ importing, in three ways
# (folders here; h5store.importers adds SQL tables, and describes all three)


LAYOUTS = ("auto", "folders", "flat")
#: What a class folder's name is: the model's prediction, or the ground truth.
FOLDER_MEANINGS = ("predicted", "true")
#: Where ids come from: ``auto`` (the source's own ids where it has them for every image:
#: an index, an id column, embedded metadata, flat file names), ``from-names`` (the file
#: name up to its first ``_``, a decimal number), ``new`` (numbered by the store).
ID_RULES = ("auto", "from-names", "new")
#: The roles a column or a metadata key can play, and the names each is recognised by (in
#: order of preference, compared without case: a table with ``id`` and ``image_id`` is read
#: by ``image_id``, the ORM's own key being ``id``).
ROLE_NAMES: dict[str, tuple[str, ...]] = {
    "id": ("image_id", "id", "img_id"),
    "path": ("filepath", "file_path", "path", "file", "filename", "image_path"),
    "label": (
        "class_label",
        "label",
        "predicted_label",
        "prediction",
        "predicted",
        "pred_label",
        "class",
        "class_name",
    ),
    "true_label": ("true_label", "truth", "ground_truth", "gt_label", "target", "true_class"),
    "score": ("score", "confidence", "probability", "prob", "top1"),
    "scores": ("scores", "probabilities", "score_vector"),
    "source": ("source",),
}
_NAME_ID = re.compile(r"(\d+)(?:_(.*))?")


@dataclass
class ImportReport:
    """What an import read and from where: ``ids`` (the new images' ids, in the order added),
    ``per_class`` (images per predicted label), ``mapping`` (role -> where its values came
    from, with counts), ``notes`` (anything a user should know, e.g. labels that disagreed)."""

    source: str
    layout: str
    ids: np.ndarray
    per_class: dict[str, int]
    mapping: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report for people, a line per fact."""
        out = [f"read {len(self.ids)} images from {self.source} ({self.layout})"]
        roles = sorted(self.mapping, key=list(ROLE_NAMES).index)
        out += [f"  {role:<10} <- {self.mapping[role]}" for role in roles]
        classes = ", ".join(f"{label} {n}" for label, n in self.per_class.items())
        out.append(f"  per class: {classes}")
        out += [f"  note: {note}" for note in self.notes]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "layout": self.layout,
            "imported": len(self.ids),
            "per_class": self.per_class,
            "mapping": self.mapping,
            "notes": self.notes,
        }


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidInputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


# ====================================================================== folders (both layouts)


def import_tree(
    store: ImageStore,
    root: str | os.PathLike,
    *,
    layout: str = "auto",
    folders: str = "predicted",
    ids: str = "auto",
    allow_duplicates: bool = False,
    follow_links: bool = False,
    batch_size: int = 256,
    progress: bool = True,
) -> ImportReport:
    """Add the images of a folder; see :mod:`h5store.importers` and :func:`import_folder`.

    ``layout``: ``folders`` (``root/<class>/<file>``), ``flat`` (``root/<id>_<label>.<ext>``,
    subfolders ignored) or ``auto`` (flat when ``root`` has no subfolder). ``folders``: whether
    a class folder names the ``predicted`` label (the true label then comes from the file's
    metadata, or stays unknown) or the ``true`` one (the predicted label then comes from the
    metadata, or is the folder too: a labelled data set). ``ids``: see :data:`ID_RULES`.
    Metadata embedded in the files fills what the layout does not say."""
    _choice("layout", layout, LAYOUTS)
    _choice("folders", folders, FOLDER_MEANINGS)
    _choice("ids", ids, ID_RULES)
    root = os.path.realpath(os.fspath(root))
    if not os.path.isdir(root):
        raise InvalidInputError(f"{root} is not a folder")
    index = read_index(root, follow_links=follow_links)
    if index:  # h5store's own export: the index says exactly what each file is
        items = _items_from_index(root, index, follow_links)
        for item in items:
            item["given"] = {"label", "true_label", "score", "scores", "id", "source"}
        mapping = {
            role: f"the index {os.path.basename(root)}/h5store-index.* ({_count(items, role)})"
            for role in ("id", "label", "true_label", "score", "scores", "source")
        }
        described, vector_labels = "h5store export with its index", index.get("labels", [])
        if ids != "auto":
            _ids_by_rule(items, ids)
            mapping["id"] = _id_origin(items, ids, mapping["id"])
        notes: list[str] = []
    else:
        if layout == "auto":
            layout = "folders" if _has_subfolders(root) else "flat"
        items, mapping, notes = (
            _items_from_folders(root, folders, follow_links)
            if layout == "folders"
            else _items_from_flat(root, follow_links)
        )
        described = (
            f"class folders, the folder being the {folders} label"
            if layout == "folders"
            else "flat folder of <id>_<label> files"
        )
        _ids_by_rule(items, ids)
        mapping["id"] = _id_origin(items, ids, mapping.get("id", ""))
        vector_labels = _vector_labels(store, items)
        mapping = {role: where for role, where in mapping.items() if where}
        if "true_label" not in mapping:  # said, so that no one reads 0 errors as 100 %
            mapping["true_label"] = "nowhere: unknown" + (
                " (the folders are predictions: folders='true' if they are the truth)"
                if layout == "folders"
                else ""
            )
    if not items:
        raise InvalidInputError(
            f"{root} has no image files (expected root/<class>/<image> or root/<id>_<label>.jpg)"
        )
    new = _write(store, root, items, vector_labels, allow_duplicates, batch_size, progress)
    return ImportReport(root, described, new, _per_class(items), mapping, notes)


def _has_subfolders(root: str) -> bool:
    with os.scandir(root) as entries:
        return any(e.is_dir() and not e.name.startswith(".") for e in entries)


def _items_from_folders(
    root: str, folders: str, follow_links: bool
) -> tuple[list[dict], dict[str, str], list[str]]:
    items, origins, disagree = [], Counter(), 0
    folder_role = "label" if folders == "predicted" else "true_label"
    for name, path in _files_of_tree(root, follow_links):
        item = {"path": path, folder_role: name, "given": {folder_role}}
        embedded = _embedded(path)
        values = {} if embedded is None else _metadata_values(embedded, path)
        said = values.get(folder_role)
        folder = os.path.relpath(path, root).split(os.sep)[0]
        if said is not None and folder_name(said) == folder:
            item[folder_role] = said  # the folder's label in full (a long one is shortened)
        else:
            disagree += said is not None and said != name
        origins[(folder_role, "class folder name")] += 1
        if embedded is not None:
            _fill(item, values, embedded, origins)
        if item.get("label") is None:  # a labelled data set: the truth is the class trained on
            item["label"] = item["true_label"]
            origins[("label", "class folder name (no prediction in the file)")] += 1
        _default_source(item, origins)
        items.append(item)
    notes = []
    if disagree:
        notes.append(
            f"{disagree} files' embedded {folder_role} differs from their folder; the folder "
            f"was used (folders={folders!r})"
        )
    with os.scandir(root) as entries:
        loose = sum(
            e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES for e in entries
        )
    if loose:
        notes.append(f"{loose} image files directly in the folder were left out (--layout flat)")
    return items, _describe(origins, len(items)), notes


def _items_from_flat(root: str, follow_links: bool) -> tuple[list[dict], dict[str, str], list]:
    items, origins, disagree = [], Counter(), 0
    with os.scandir(root) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        stem, suffix = os.path.splitext(entry.name)
        if entry.name.startswith(".") or suffix.lower() not in IMAGE_SUFFIXES:
            continue
        _check_link(root, entry.path, follow_links)
        if not entry.is_file():
            continue
        item: dict[str, Any] = {"path": entry.path, "given": set()}
        match = _NAME_ID.fullmatch(stem)
        named = label_of_folder(match.group(2)) if match and match.group(2) else None
        embedded = _embedded(entry.path)
        values = {} if embedded is None else _metadata_values(embedded, entry.path)
        if embedded is not None:
            _fill(item, values, embedded, origins)
            disagree += named is not None and values.get("label") not in (None, named)
        if match and item.get("id") is None:
            item["name_id"] = int(match.group(1))
            origins[("id", "file name <id>_<label>")] += 1
        if item.get("label") is None:
            if named is None:
                raise InvalidInputError(
                    f"{entry.path}: neither its name (<id>_<label>.<ext>) nor its metadata "
                    "gives a label"
                )
            item["label"] = named
            origins[("label", "file name <id>_<label>")] += 1
        _default_source(item, origins)
        items.append(item)
    notes = []
    if disagree:
        notes.append(
            f"{disagree} files' embedded label differs from their name; the embedded one "
            "(not shortened, not escaped) was used"
        )
    return items, _describe(origins, len(items)), notes


def _embedded(path: str) -> Embedded | None:
    with open(path, "rb") as fh:
        return read_embedded(fh.read())


def _default_source(item: dict, origins: Counter) -> None:
    # A file without a recorded source came from where it lies (as import has always said).
    if "source" not in item["given"]:
        item["source"] = item["path"]
        origins[("source", "the file's path")] += 1


def _fill(item: dict, values: Mapping[str, Any], embedded: Any, origins: Counter) -> None:
    """Roles the layout did not give, from the file's metadata."""
    for role, value in values.items():
        if role not in item["given"] and value is not None:
            item[role] = value
            item["given"].add(role)
            origins[(role, embedded.origin)] += 1
    if embedded.ours:
        # h5store's export wrote it: its source (None included) and its stored stream back
        item["given"].add("source")
        item.setdefault("source", None)
        item["strip"] = True


def _metadata_values(embedded: Any, where: str) -> dict[str, Any]:
    keys = {k.lower(): v for k, v in embedded.values.items() if isinstance(k, str)}
    values = {}
    for role, names in ROLE_NAMES.items():
        if role == "path":
            continue
        found = next((keys[n] for n in names if n in keys), None)
        if found is not None:
            values[role] = _checked(role, found, f"{where} ({embedded.origin})", keys)
    return values


# ====================================================================== shared by all three


def _checked(role: str, value: Any, where: str, keys: Mapping[str, Any]) -> Any:
    """A role's value as the store takes it, or an error naming the role and where (never the
    value itself: it may come from any file)."""
    kind = type(value).__name__
    if role in ("label", "true_label"):
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise InvalidInputError(f"{where}: {role} must be a text, got {kind}")
        return str(value)
    if role == "id":
        if isinstance(value, str) and value.isdecimal():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InvalidInputError(f"{where}: id must be a non-negative integer, got {kind}")
        return int(value)
    if role == "score":
        return _number(value, where, role)
    if role == "scores":
        if isinstance(value, str):  # a JSON text column
            try:
                value = json.loads(value)
            except ValueError:
                raise InvalidInputError(f"{where}: scores is text but not JSON") from None
        if isinstance(value, list):  # a list says nothing of its classes unless named beside it
            names = keys.get("labels", keys.get("classes"))
            if not isinstance(names, list) or len(names) != len(value):
                raise InvalidInputError(
                    f"{where}: a score vector as a list needs its class names beside it "
                    "('labels': [...], same length), or write it as {class: score}"
                )
            value = dict(zip(map(str, names), value))
        if not isinstance(value, dict) or not value:
            raise InvalidInputError(f"{where}: scores must be {{class: score}}, got {kind}")
        return {str(k): _number(v, where, "scores") for k, v in value.items()}
    if role == "source":
        if not isinstance(value, str):
            raise InvalidInputError(f"{where}: source must be a text, got {kind}")
        return value
    return value  # path: resolved by the caller


def _number(value: Any, where: str, role: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"{where}: {role} must be a number, got {type(value).__name__}"
        ) from None
    if isinstance(value, bool) or not np.isfinite(number):
        raise InvalidInputError(f"{where}: {role} must be a finite number")
    return number


def _ids_by_rule(items: list[dict], rule: str) -> None:
    """Set each item's ``id`` by ``rule`` (see :data:`ID_RULES`)."""
    if rule == "new":
        for item in items:
            item["id"] = None
    elif rule == "from-names":
        for item in items:
            match = _NAME_ID.fullmatch(os.path.splitext(os.path.basename(item["path"]))[0])
            if match is None:
                raise InvalidInputError(
                    f"{item['path']}: ids='from-names' needs a decimal number as the file "
                    "name, or before its first '_' (e.g. 1234.jpg, 1234_cat.jpg)"
                )
            item["id"] = int(match.group(1))
    else:
        for item in items:  # a flat folder's names carry ids; metadata or a column may too
            if item.get("id") is None and item.get("name_id") is not None:
                item["id"] = item["name_id"]
        if not all(item.get("id") is not None for item in items):
            for item in items:  # some without: the store numbers all, rather than mix
                item["id"] = None
    for item in items:
        item.pop("name_id", None)


def _id_origin(items: list[dict], rule: str, own: str) -> str:
    if items and items[0].get("id") is None:
        return "new, numbered by the store" + (
            "" if rule == "new" else " (not every image has an id of its own)"
        )
    return "file names (from-names)" if rule == "from-names" else own


def _vector_labels(store: ImageStore, items: list[dict]) -> list[str]:
    """The label order vectors given as {class: score} are stored in (the store keeps a
    vector over its first K labels), each item's vector turned into that order's list."""
    vectors = [item["scores"] for item in items if item.get("scores") is not None]
    if not vectors:
        return []
    classes = list(vectors[0])
    for item in items:
        if item.get("scores") is not None and set(item["scores"]) != set(classes):
            raise InvalidInputError(
                f"{item['path']}: its score vector is over other classes than the first "
                f"file's ({len(item['scores'])} vs {len(classes)}); all vectors must cover the "
                "same classes"
            )
    have = list(store.labels)
    if set(have[: len(classes)]) == set(classes):
        order = have[: len(classes)]
    elif set(have) <= set(classes):
        order = have + [c for c in classes if c not in have]
    else:
        raise InvalidInputError(
            f"the score vectors are over the classes {sorted(classes)}, but the store's "
            f"labels begin with others ({have[: len(classes)]}); import into a new store"
        )
    for item in items:
        if item.get("scores") is not None:
            item["scores"] = [item["scores"][c] for c in order]
    return order


def _refuse_repeated_ids(items: list[dict]) -> None:
    seen: dict[int, str] = {}
    for item in items:
        image_id = item.get("id")
        if image_id is None:
            continue
        if image_id in seen:
            raise DuplicateIdError(
                f"id {image_id} is given twice, by {seen[image_id]} and {item['path']}: "
                "nothing was imported; give each image its own id, or import with ids='new' "
                "(--ids new)"
            )
        seen[image_id] = item["path"]


def _write(
    store: ImageStore,
    root: str,
    items: list[dict],
    vector_labels: list[str],
    allow_duplicates: bool,
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    """Everything checked first (ids, duplicates, vectors' labels), then the images added."""
    if allow_duplicates:
        for item in items:
            item["id"] = None
    _refuse_repeated_ids(items)
    _precheck(store, items, vector_labels)
    _refuse_duplicates(store, root, items, allow_duplicates)
    if vector_labels:
        _declare_vector_labels(store, {"labels": vector_labels}, items)
    new_ids = []
    all_declared = False
    with tqdm(total=len(items), desc="import", unit="img", disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            if vector_labels and not all_declared and not any(i.get("scores") for i in chunk):
                store.add_labels(vector_labels)  # the classes after the vectors'
                all_declared = True
            new_ids += _import_chunk(store, chunk)
            bar.update(len(chunk))
    return np.concatenate(new_ids)


def _precheck(store: ImageStore, items: list[dict], vector_labels: list[str]) -> None:
    """The store's own checks of each image's record, on every image before the first is
    written (the store checks one batch at a time), each error naming the file."""
    from ._ingest import _check_argmax
    from ._inputs import as_ids, as_scores, as_sources, check_label

    argmax = store._check_writable_ingest().argmax_labels
    for item in items:
        try:
            check_label(item["label"], "label")
            if item.get("true_label") is not None:
                check_label(item["true_label"], "true label")
            for value in (item.get("score"), item.get("scores")):
                if value is not None:
                    as_scores([value], 1)
            if item.get("id") is not None:
                as_ids([item["id"]], 1)
            as_sources([item.get("source")], 1)
            if item.get("scores") is not None:
                classes = vector_labels[: len(item["scores"])]
                if item["label"] not in classes:
                    raise InvalidInputError(
                        f"its label {item['label']!r} is not one of its score vector's classes"
                    )
                if argmax:
                    index = classes.index(item["label"])
                    _check_argmax(np.array([item["scores"]]), np.array([index]), classes)
        except InvalidInputError as exc:
            # the store's words, about this one image ("image 0" of a batch of one)
            message = str(exc).replace("image 0's ", "its ").replace(" of image 0", "")
            raise InvalidInputError(f"{item['path']}: {message}") from None


def _per_class(items: list[dict]) -> dict[str, int]:
    return dict(sorted(Counter(item["label"] for item in items).items()))


def _count(items: list[dict], role: str) -> str:
    n = sum(item.get(role) is not None for item in items)
    return f"{n} of {len(items)}"


def _describe(origins: Counter, total: int) -> dict[str, str]:
    """role -> "where (n of total)", for every role some item has."""
    out: dict[str, list[str]] = {}
    for (role, where), n in origins.items():
        out.setdefault(role, []).append(f"{where} ({n} of {total})")
    order = [r for r in ROLE_NAMES if r in out]
    return {role: "; ".join(out[role]) for role in order}
