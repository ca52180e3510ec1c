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

import os
from collections.abc import Mapping
from typing import Any

from .errors import DatabaseError, InvalidInputError
from .folders import (
    FOLDER_MEANINGS,
    ID_RULES,
    LAYOUTS,
    ROLE_NAMES,
    ImportReport,
    _check_link,
    _checked,
    _choice,
    _count,
    _embedded,
    _id_origin,
    _ids_by_rule,
    _per_class,
    _vector_labels,
    _write,
    import_tree,
)
from .store import ImageStore

# The folder imports live beside export in h5store.folders (import_folder is theirs); they are
# offered here too, so that the three ways are imported from one module.
__all__ = [
    "FOLDER_MEANINGS",
    "ID_RULES",
    "LAYOUTS",
    "ROLE_NAMES",
    "ImportReport",
    "import_sql",
    "import_tree",
]


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
