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
from collections.abc import Iterable, Sequence
from typing import Any

import imagecodecs
import numpy as np
from tqdm import tqdm  # text on stderr: tqdm.auto wants ipywidgets in notebooks

from .codecs import Codec, get_codec
from .errors import (
    AlreadyImportedError,
    CodecError,
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


def folder_name(label: str) -> str:
    """The class folder of ``label``: :func:`safe_name`, shortened when that is longer than
    a file name can be. A shortened name is the longest prefix of the escaped name (never cut
    inside a character or an escape) that leaves room for ``%~`` and 16 hex digits of the
    label's SHA-256: distinct labels keep distinct folders, and no label's own name has that
    form. The export's index keeps the full label."""
    name = safe_name(label)
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(label.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    room = MAX_NAME_BYTES - len(_SHORTENED) - _DIGEST_CHARS
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
    embed_metadata: bool = False,
    index: str | None = "json",
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Write images to ``root/<class>/<id><ext>``, grouped by predicted ``label`` or by
    ``true_label`` (images without one go to ``_unknown``), and the index beside them
    (``index``: "json", "csv" or None). With ``embed_metadata`` each JPEG, PNG and WebP file
    also carries its id, label, score, true label and the store's name (EXIF, iTXt), pixels
    untouched. Files that exist are an error (:class:`TargetExistsError`, nothing written)
    unless ``overwrite``. Returns the number of image files written."""
    if by not in ("label", "true_label"):
        raise InvalidInputError(f"by must be 'label' or 'true_label', got {by!r}")
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
        plan.append((record, codec, as_is, _export_path(root, record, by, codec)))
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


def _export_path(root: str, record: Any, by: str, codec: Codec) -> str:
    label = getattr(record, by)
    folder = os.path.join(root, "_unknown" if label is None else folder_name(label))
    if (
        os.path.dirname(os.path.realpath(os.path.join(folder, "x"))) != os.path.realpath(folder)
        or os.path.commonpath([root, os.path.realpath(folder)]) != root
    ):
        # folder_name makes this unreachable
        raise H5StoreError(f"label {label!r} would leave {root}")
    return os.path.join(folder, f"{record.id}{codec.file_extension}")


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
    batch_size: int = 256,
    allow_duplicates: bool = False,
    follow_links: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Add the images of an ImageFolder tree ``root/<class>/<file>``; returns the new ids.

    Only the folder's own files are read: a symbolic link (to a file or a folder, the index
    file included) is followed when it leads to something inside ``root``, and one leading
    out of it is refused with :class:`InvalidInputError` naming the link, before anything is
    written, unless ``follow_links``. No error quotes a file's content.

    A folder h5store exported (it has ``h5store-index.json`` or ``.csv``) comes back as it
    was: ids, labels, true labels, scores, score vectors and sources from the index, and the
    stored bytes without the metadata export embedded. Any other tree: the folder is the
    label and the true label, the file's absolute path the source.

    Files whose format is the class's codec (a JPEG file into a JPEG class) are stored as they
    are; the others are decoded and encoded with the class's codec. Images the store already
    holds (the same ids from an index, or the same source files) are refused with
    :class:`AlreadyImportedError` before anything is written, unless ``allow_duplicates``,
    which adds them again under new ids."""
    root = os.path.realpath(os.fspath(root))
    index = read_index(root, follow_links=follow_links)
    items = (
        _items_from_index(root, index, follow_links)
        if index
        else _items_from_tree(root, follow_links)
    )
    if not items:
        raise InvalidInputError(
            f"{root} has no class folders with images (expected root/<class>/<image>)"
        )
    if index:
        _declare_vector_labels(store, index, items)
    _refuse_duplicates(store, root, items, allow_duplicates)
    if allow_duplicates:
        for item in items:
            item["id"] = None
    new_ids = []
    all_declared = False
    with tqdm(total=len(items), desc="import", unit="img", disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            if index and not all_declared and not any(i.get("scores") for i in chunk):
                store.add_labels(index.get("labels", []))  # the classes after the vectors'
                all_declared = True
            new_ids += _import_chunk(store, chunk)
            bar.update(len(chunk))
    return np.concatenate(new_ids)


def _items_from_tree(root: str, follow_links: bool) -> list[dict[str, Any]]:
    return [
        {"path": path, "label": label, "true_label": label, "source": path}
        for label, path in _files_of_tree(root, follow_links)
    ]


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
        if item.get("codec") == codec.codec_id and item.get("crc32") is not None:
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
