"""Import from the three ways people save classified images, keeping everything they hold.

* **class folders** ``root/<class>/<file>`` (Pillow's ``Image.save``, torchvision's
  ImageFolder): the folder is the predicted class or the true one (``folders=``), ids come
  from numeric file names when asked (``ids="from-names"``);
* **a flat folder** of ``<id>_<label>.<ext>`` files (OpenCV's ``cv2.imwrite``) whose EXIF or
  PNG text may hold the label, the score, the score vector and the true label as JSON (piexif,
  exiftool, Pillow, h5store's own ``export --embed-metadata``);
* **a SQL table** read through SQLAlchemy, one row per image with the file's path, with the
  column of each role given or guessed from its name (``filepath``, ``class_label``, ...).

A folder ``h5store export`` wrote, with its index file, comes back from the index in either
folder layout. Every import reads only files under the root it is given (a path in a table or
an index that leads out of it, by ``..``, by an absolute path or by a symbolic link, is refused
unless ``follow_links`` allows links), checks everything before the first image is written
(roles, ids, duplicates, paths), stores files in the class's codec byte for byte, and returns an
:class:`ImportReport` saying what came from where.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from . import _file_metadata
from .errors import DatabaseError, DuplicateIdError, InvalidInputError
from .folders import (
    IMAGE_SUFFIXES,
    _check_link,
    _declare_vector_labels,
    _files_of_tree,
    _import_chunk,
    _items_from_index,
    _refuse_duplicates,
    folder_name,
    label_of_folder,
    read_index,
)
from .store import ImageStore

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
    """Add the images of a folder; see the module's description and :func:`import_folder`.

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


def _embedded(path: str) -> _file_metadata.Embedded | None:
    with open(path, "rb") as fh:
        return _file_metadata.read(fh.read())


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


# ========================================================================================== SQL


def import_sql(
    store: ImageStore,
    url_or_engine: Any,
    table: str,
    *,
    columns: Mapping[str, str] | None = None,
    root: str | os.PathLike | None = None,
    ids: str = "auto",
    allow_duplicates: bool = False,
    follow_links: bool = False,
    batch_size: int = 256,
    progress: bool = True,
) -> ImportReport:
    """Add the images a SQL table lists, one row per image (any SQLAlchemy URL or Engine).

    ``columns``: role -> column name for the roles in :data:`ROLE_NAMES` (``path`` and
    ``label`` needed); roles not given are guessed from the column names, and the report says
    which column each came from. Paths are resolved under ``root`` (default: the folder of a
    SQLite database; other databases need it), and a path leading out of it is refused.
    Score vectors come from ``<table>_scores`` (id, label, score: what :meth:`to_sql` writes)
    when it exists. Without an id column (or with ``ids="new"``) the store numbers the images.
    """
    from . import sql

    try:
        import sqlalchemy as sa
    except ImportError:
        raise InvalidInputError("import_sql needs SQLAlchemy: pip install 'h5store[sql]'") from None
    _choice("ids", ids, ID_RULES)
    engine, owned = sql._engine(url_or_engine)
    where = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(table):
                raise InvalidInputError(
                    f"{where} has no table {table!r}; its tables: {inspector.get_table_names()}"
                )
            reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
            chosen = _map_columns(table, [c.name for c in reflected.columns], columns)
            order = [reflected.c[chosen["id"]]] if "id" in chosen else list(reflected.primary_key)
            query = sa.select(*(reflected.c[c] for c in chosen.values())).order_by(*order)
            rows = [dict(zip(chosen, row)) for row in conn.execute(query)]
            vectors = _score_table(conn, inspector, f"{table}_scores") if "id" in chosen else {}
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(f"cannot read table {table!r} of {where}: {exc}") from None
    finally:
        if owned:
            engine.dispose()
    root = _sql_root(engine, root)
    items = []
    for k, row in enumerate(rows):
        at = f"row {k} of {table!r}"
        item = {"given": set(chosen) - {"path"}}
        for role, value in row.items():
            item[role] = None if value is None else _checked(role, value, at, {})
        if item["label"] is None:
            raise InvalidInputError(f"{at} has no label (column {chosen['label']!r} is NULL)")
        if row["path"] is None:
            raise InvalidInputError(
                f"{at} has no path (column {chosen['path']!r} is NULL); `h5store index --sql` "
                "fills it only for exported images: write the table with `h5store export --sql`"
            )
        item["path"] = _resolve(root, row["path"], at, follow_links)
        if "source" not in chosen:
            item["source"] = item["path"]
        if item.get("id") in vectors:
            item["scores"] = vectors[item["id"]]
        embedded = _embedded(item["path"])
        if embedded is not None and embedded.ours:  # its stored stream, without the export's
            item["strip"] = True
        items.append(item)
    if not items:
        raise InvalidInputError(f"table {table!r} of {where} has no rows")
    _ids_by_rule(items, ids)
    mapping = {role: f"column {column!r}" for role, column in chosen.items()}
    mapping["path"] += f", under {root}"
    if "source" not in chosen:
        mapping["source"] = "the file's resolved path"
    if vectors:
        mapping["scores"] = f"table {table + '_scores'!r} ({_count(items, 'scores')} rows' vectors)"
    mapping["id"] = _id_origin(items, ids, f"column {chosen.get('id')!r}")
    vector_labels = _vector_labels(store, items)
    new = _write(store, root, items, vector_labels, allow_duplicates, batch_size, progress)
    return ImportReport(f"table {table!r} of {where}", "SQL table", new, _per_class(items), mapping)


def _map_columns(table: str, names: list[str], given: Mapping[str, str] | None) -> dict[str, str]:
    """role -> column: ``given`` checked against the table, the other roles guessed."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(ROLE_NAMES))
    if unknown:
        raise InvalidInputError(
            f"unknown column role {unknown[0]!r}; the roles are {', '.join(ROLE_NAMES)}"
        )
    missing = [c for c in given.values() if c not in names]
    if missing:
        raise InvalidInputError(f"table {table!r} has no column {missing[0]!r}; it has {names}")
    chosen, used = dict(given), set(given.values())
    lower = {name.lower(): name for name in names}
    for role, candidates in ROLE_NAMES.items():
        if role in chosen or role == "scores":  # a vector is not a column (see _score_table)
            continue
        for candidate in candidates:
            if candidate in lower and lower[candidate] not in used:
                chosen[role] = lower[candidate]
                used.add(lower[candidate])
                break
    for role in ("path", "label"):
        if role not in chosen:
            raise InvalidInputError(
                f"table {table!r} has no column for the image's {role} (looked for "
                f"{', '.join(ROLE_NAMES[role])}); its columns are {names}: name it with "
                f"columns={{'{role}': ...}} (--columns {role}=COLUMN)"
            )
    return {role: chosen[role] for role in ROLE_NAMES if role in chosen}


def _score_table(conn: Any, inspector: Any, name: str) -> dict[int, dict[str, float]]:
    """id -> {label: score} from a long table of (id, label, score), as to_sql writes it."""
    import sqlalchemy as sa

    if not inspector.has_table(name):
        return {}
    scores = sa.Table(name, sa.MetaData(), autoload_with=conn)
    if not {"id", "label", "score"} <= set(scores.c.keys()):
        return {}
    out: dict[int, dict[str, float]] = {}
    for image_id, label, score in conn.execute(
        sa.select(scores.c.id, scores.c.label, scores.c.score)
    ):
        out.setdefault(int(image_id), {})[label] = score
    return out


def _sql_root(engine: Any, root: str | os.PathLike | None) -> str:
    if root is not None:
        return os.path.realpath(os.fspath(root))
    database = engine.url.database
    if engine.url.get_backend_name() == "sqlite" and database and database != ":memory:":
        return os.path.dirname(os.path.realpath(database))
    raise InvalidInputError(
        "the table's paths need the folder they lie under: pass root= (the FOLDER argument "
        "of `h5store import --sql`); only a SQLite file's own folder is taken by default"
    )


def _resolve(root: str, value: Any, where: str, follow_links: bool) -> str:
    """``value`` (a path from an untrusted table) as a file under ``root``, or an error."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InvalidInputError(f"{where}: the path must be a non-empty text")
    path = os.path.normpath(os.path.join(root, value))
    if os.path.commonpath([root, path]) != root:  # "../x" or an absolute path elsewhere
        raise InvalidInputError(
            f"{where}: the path {value[:200]!r} leads outside {root}; an import reads only "
            "files under its root (pass the folder that holds them as root)"
        )
    try:
        _check_link(root, path, follow_links)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    if not os.path.isfile(path):
        raise InvalidInputError(f"{where}: {value[:200]!r} is not a file under {root}")
    return path


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
