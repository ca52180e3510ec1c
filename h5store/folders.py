"""Import from and export to torchvision's ImageFolder layout: ``root/<class>/<image file>``.

Export writes each image's stored bytes as they are when they already form an image file
(JPEG, PNG, WebP, ...), so nothing is re-encoded; other codecs are written as PNG. Class
folder names are :func:`h5store.format.safe_name` of the label: one path component that can
never climb out of the target folder, whatever the label says.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

import imagecodecs
import numpy as np
from tqdm.auto import tqdm

from .errors import CodecError, H5StoreError, InvalidInputError
from .format import safe_name
from .store import ImageStore

#: File extension of each codec whose payload is a complete image file.
FILE_EXTENSIONS = {
    "jpeg": ".jpg",
    "png": ".png",
    "webp": ".webp",
    "avif": ".avif",
    "jpegxl": ".jxl",
    "jpeg2k": ".jp2",
    "qoi": ".qoi",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".avif", ".jxl", ".jp2", ".j2k", ".qoi",
                  ".tif", ".tiff", ".bmp", ".gif"}
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def label_of_folder(name: str) -> str:
    """Inverse of :func:`safe_name` for folders h5store exported (``%XX`` sequences decode)."""
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), name)
    try:  # percent-escapes are UTF-8 bytes; re-decode multi-byte characters
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def export_folder(store: ImageStore, root: str | os.PathLike, *, ids: Iterable[int] | None = None,
                  by: str = "label", progress: bool = True) -> int:
    """Write images to ``root/<class>/<id><ext>``, grouped by predicted ``label`` or by
    ``true_label`` (images without one go to ``_unknown``). Refuses to overwrite files.
    Returns the number of files written."""
    if by not in ("label", "true_label"):
        raise InvalidInputError(f"by must be 'label' or 'true_label', got {by!r}")
    root = os.path.realpath(os.fspath(root))
    os.makedirs(root, exist_ok=True)
    chosen = store.ids() if ids is None else np.asarray(list(ids))
    written = 0
    for image_id in tqdm(chosen.tolist(), desc="export", unit="img", disable=not progress):
        record = store.record(image_id)
        label = getattr(record, by)
        folder = os.path.join(root, "_unknown" if label is None else safe_name(label))
        if os.path.dirname(os.path.realpath(os.path.join(folder, "x"))) != os.path.realpath(folder) or \
                os.path.commonpath([root, os.path.realpath(folder)]) != root:
            raise H5StoreError(f"label {label!r} would leave {root}")  # safe_name makes this unreachable
        os.makedirs(folder, exist_ok=True)
        extension = FILE_EXTENSIONS.get(record.codec)
        data = store.get_encoded(image_id) if extension else imagecodecs.png_encode(store[image_id])
        path = os.path.join(folder, f"{image_id}{extension or '.png'}")
        with open(path, "xb") as fh:  # "x": never overwrite
            fh.write(data)
        written += 1
    return written


def list_folder(root: str | os.PathLike) -> list[tuple[str, str]]:
    """(label, path) of every image file under ``root/<class>/``, in a fixed (sorted) order."""
    root = os.fspath(root)
    files = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        label = label_of_folder(entry.name)
        for dirpath, dirnames, filenames in os.walk(entry.path):
            dirnames.sort()
            for filename in sorted(filenames):
                if os.path.splitext(filename)[1].lower() in IMAGE_SUFFIXES:
                    files.append((label, os.path.join(dirpath, filename)))
    if not files:
        raise InvalidInputError(f"{root} has no class folders with images (expected root/<class>/<image>)")
    return files


def import_folder(store: ImageStore, root: str | os.PathLike, *, batch_size: int = 256,
                  progress: bool = True) -> np.ndarray:
    """Add every image under ``root/<class>/`` with that class as its label and true label
    and its relative path as source. Files the class's codec can store as they are (a JPEG
    file into a JPEG class) are not decoded or re-encoded; the others are decoded and encoded.
    Returns the new ids."""
    root = os.fspath(root)
    files = list_folder(root)
    labels = [label for label, _ in files]
    return add_files(store, [path for _, path in files], labels, true_labels=labels,
                     sources=[os.path.relpath(path, root) for _, path in files],
                     batch_size=batch_size, progress=progress)


def add_files(store: ImageStore, paths: Sequence[str], labels: Sequence[str], *,
              true_labels: Sequence[str | None] | None = None, scores: Sequence[float] | None = None,
              ids: Sequence[int] | None = None, first_id: int | None = None,
              sources: Sequence[str] | None = None, batch_size: int = 256,
              progress: bool = True) -> np.ndarray:
    """Add image files, ``batch_size`` at a time: the ones the class's codec stores as they are
    (a JPEG file into a JPEG class) without decoding, the others decoded and encoded (in each
    batch the first kind first). ``ids``: one per file; else ``first_id``: ids count up from
    it in the order the images are added, as the store would number them from there. Returns
    the new ids in the order added."""
    n = len(paths)
    columns = {"label": labels, "true_label": true_labels, "score": scores, "id": ids, "source": sources}
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
                    except Exception as exc:  # imagecodecs raises per-format error types
                        raise InvalidInputError(f"cannot read {paths[k]}: {exc}") from None
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
