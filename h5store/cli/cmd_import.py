"""``h5store import``: add the images of an ImageFolder tree (root/<class>/<file>)."""

from __future__ import annotations

import argparse
import os

import h5store

from ._common import _human, _print


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    imp = sub.add_parser(
        "import",
        help="add images saved as class folders, a flat <id>_<label> folder or a SQL table",
        description="Add the images of FOLDER: class folders (FOLDER/<class>/<file>), or a "
        "flat folder of <id>_<label>.<ext> files (no subfolders, or --layout flat) whose "
        "EXIF or PNG text may hold the label, score, score vector and true label as JSON; or "
        "of a SQL table (--sql URL --table T), one row per image with its file's path. A "
        "folder `h5store export` wrote comes back from its index. Files in their class's "
        "codec are stored byte for byte; everything is checked (ids, paths, columns) before "
        "the first image is written, and the import prints what it took from where. "
        "See docs/importing.md.",
    )
    imp.add_argument(
        "folder",
        nargs="?",
        help="the folder to import; with --sql, the folder the table's paths lie under "
        "(default: a SQLite database's own folder); nothing outside it is read",
    )
    imp.add_argument("path", help="store to create or append to")
    imp.add_argument(
        "--layout",
        choices=["auto", "folders", "flat"],
        default="auto",
        help="folders: FOLDER/<class>/<file>; flat: FOLDER/<id>_<label>.<ext> (subfolders "
        "ignored); auto (default): flat when FOLDER has no subfolder",
    )
    imp.add_argument(
        "--folders",
        choices=["predicted", "true"],
        default="predicted",
        help="what a class folder names: the model's prediction (default: the true label "
        "then comes from the files' metadata or stays unknown, so accuracy is never made up) "
        "or the true label (the prediction then comes from the metadata, else the folder)",
    )
    imp.add_argument(
        "--ids",
        choices=["auto", "from-names", "new"],
        default="auto",
        help="auto (default): the images' own ids where every image has one (an index, the "
        "id column, the metadata, flat <id>_ names), else new; from-names: the number a file "
        "name begins with (1234.jpg, 1234_cat.jpg); new: numbered by the store. An id given "
        "twice or held by the store already is refused before anything is written",
    )
    imp.add_argument("--sql", metavar="URL", help="import the rows of a table (SQLAlchemy URL)")
    imp.add_argument("--table", help="the table for --sql")
    imp.add_argument(
        "--columns",
        metavar="ROLE=COLUMN,...",
        help="--sql columns by role (id, path, label, true_label, score, source); roles not "
        "given are guessed from names like image_id, filepath, class_label, score",
    )
    imp.add_argument(
        "--codec",
        default="jpeg",
        choices=h5store.available_codecs(),
        help="codec of new classes (default: %(default)s). Files already in a "
        "class's codec (JPEG files into a JPEG class) are stored byte for byte; "
        "all others are decoded and re-encoded with it",
    )
    imp.add_argument("--quality", type=int, default=90)
    imp.add_argument(
        "--scheduler",
        metavar="local|tcp://HOST:PORT",
        help="encode on Dask workers: 'local' starts a LocalCluster, an address joins a "
        "running scheduler (needs h5store[dask]); PATH must then be a new store",
    )
    imp.add_argument(
        "--workers", type=int, help="worker processes of the local cluster (default 2)"
    )
    imp.add_argument(
        "--allow-duplicates",
        action="store_true",
        help="import images the store holds already (same ids or same files) "
        "again, under new ids (default: refuse)",
    )
    imp.add_argument(
        "--follow-links",
        action="store_true",
        help="follow symbolic links that lead out of FOLDER (default: refuse them; "
        "links to files and folders inside it are followed)",
    )
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.add_argument("--json", action="store_true")
    return imp


def run(args: argparse.Namespace) -> int:
    from ..importers import import_sql, import_tree

    if (args.sql is None) != (args.table is None) or (args.columns and not args.sql):
        raise h5store.InvalidInputError("--sql and --table go together (--columns with them)")
    if args.sql is None and args.folder is None:
        raise h5store.InvalidInputError("give the FOLDER to import, or --sql URL --table T")
    if args.scheduler is not None:
        if args.sql or args.layout == "flat" or args.folders != "predicted" or args.ids != "auto":
            raise h5store.InvalidInputError(
                "--scheduler imports class folders as they are: not with --sql, --layout "
                "flat, --folders or --ids"
            )
        return _import_on_dask(args)

    columns = _columns(args.columns)  # before the store is opened (or created)
    common = {
        "ids": args.ids,
        "allow_duplicates": args.allow_duplicates,
        "follow_links": args.follow_links,
        "progress": not args.quiet,
    }
    existed = os.path.lexists(args.path)
    try:
        with h5store.open(args.path, "a", codec=args.codec, quality=args.quality) as store:
            if args.sql:
                report = import_sql(
                    store, args.sql, args.table, columns=columns, root=args.folder, **common
                )
            else:
                report = import_tree(
                    store, args.folder, layout=args.layout, folders=args.folders, **common
                )
            stats = store.stats()
    except h5store.H5StoreError:
        if not existed and os.path.exists(args.path):
            os.unlink(args.path)  # a refused import into a new store leaves no store behind
        raise
    _print(
        {**report.as_dict(), **stats},
        args.json,
        report.lines()
        + [
            f"into {args.path} ({_human(stats['file_bytes'])}, "
            f"{len(stats['images_per_label'])} classes)"
        ],
    )
    return 0


def _columns(text: str | None) -> dict[str, str]:
    """--columns id=image_id,path=filepath as {role: column}."""
    if not text:
        return {}
    pairs = [part.partition("=") for part in text.split(",") if part.strip()]
    if any(not sep or not role.strip() or not column.strip() for role, sep, column in pairs):
        raise h5store.InvalidInputError(
            f"--columns takes ROLE=COLUMN pairs separated by commas, got {text!r}"
        )
    return {role.strip(): column.strip() for role, _, column in pairs}


def _import_on_dask(args: argparse.Namespace) -> int:
    from ..distributed import ingest

    client = None
    if args.scheduler != "local":
        from distributed import Client

        client = Client(args.scheduler)
    try:
        ingest(
            args.folder,
            args.path,
            client=client,
            workers=args.workers,
            codec=args.codec,
            quality=args.quality,
            follow_links=args.follow_links,
            progress=not args.quiet,
        )
    finally:
        if client is not None:
            client.close()
    with h5store.open(args.path) as store:
        stats = store.stats()
    _print(
        {"imported": stats["images"], **stats},
        args.json,
        [
            f"imported {stats['images']} images from {args.folder} into {args.path} on Dask "
            f"({_human(stats['file_bytes'])}, {len(stats['images_per_label'])} classes)"
        ],
    )
    return 0
