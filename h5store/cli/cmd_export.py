"""``h5store export``: write the images to an ImageFolder tree (root/<class>/<id>.<ext>)."""

from __future__ import annotations

import argparse
import os

import h5store

from ._common import _print, _safe_url


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    export = sub.add_parser(
        "export",
        help="write the images to an ImageFolder tree (root/<class>/<id>.<ext>)",
        description="Write each image as a file, stored bytes as they are where they form an "
        "image file (JPEG, PNG, WebP, ...; other codecs as PNG), and the index "
        "(h5store-index.json or .csv: ids, labels, true labels, scores, sources) beside them, "
        "which `h5store import` reads back.",
    )
    export.add_argument("path")
    export.add_argument("folder")
    export.add_argument(
        "--by",
        choices=["label", "true_label"],
        default="label",
        help="group by predicted or true label (default: %(default)s)",
    )
    export.add_argument(
        "--layout",
        choices=["folders", "flat"],
        default="folders",
        help="folders: FOLDER/<class>/<id>.<ext> (default); flat: FOLDER/<id>_<class>.<ext>, "
        "as OpenCV users save them (`h5store import` reads both)",
    )
    export.add_argument("--label", action="append", help="only this predicted class (repeatable)")
    export.add_argument("--min-score", type=float, help="only images scored at least this")
    export.add_argument("--max-score", type=float, help="only images scored at most this")
    export.add_argument("--correct", choices=["yes", "no"], help="only right (or wrong) ones")
    export.add_argument(
        "--embed-metadata",
        action="store_true",
        help="write id, label, score, true label and store name into each file "
        "(EXIF in JPEG and WebP, iTXt in PNG; pixels untouched)",
    )
    export.add_argument(
        "--index",
        choices=["json", "csv", "none"],
        default="json",
        help="index file written beside the classes (default: %(default)s)",
    )
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files that exist (default: refuse, writing nothing)",
    )
    export.add_argument(
        "--sql",
        metavar="URL",
        help="also write the index with each exported file's path to this "
        "database (SQLAlchemy URL)",
    )
    export.add_argument("--table", default="images", help="table for --sql (default: %(default)s)")
    export.add_argument(
        "--if-exists",
        choices=["fail", "replace", "append"],
        default="fail",
        help="when the --sql table exists (default: %(default)s)",
    )
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.add_argument("--json", action="store_true")
    return export


def run(args: argparse.Namespace) -> int:
    from ..folders import INDEX_FILES, export_folder, read_index

    index = None if args.index == "none" else args.index
    if args.sql and index is None:
        raise h5store.InvalidInputError(
            "--sql records the exported files from the index: drop --index none"
        )
    with h5store.open(args.path) as store:
        ids = None
        if args.label or args.correct or args.min_score is not None or args.max_score is not None:
            ids = store.query(
                label=args.label or None,
                min_score=args.min_score,
                max_score=args.max_score,
                correct=None if args.correct is None else args.correct == "yes",
            )
        written = export_folder(
            store,
            args.folder,
            ids=ids,
            by=args.by,
            layout=args.layout,
            embed_metadata=args.embed_metadata,
            index=index,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
        result = {
            "written": written,
            "folder": args.folder,
            "index": None if index is None else os.path.join(args.folder, INDEX_FILES[index]),
        }
        lines = [
            f"wrote {written} images to {args.folder}/"
            + ("<class>/" if args.layout == "folders" else "<id>_<class> files")
            + (" with their metadata embedded" if args.embed_metadata else "")
            + (f" and the index to {result['index']}" if index else "")
        ]
        if args.sql:
            root = os.path.realpath(args.folder)
            files = {e["id"]: os.path.join(root, e["file"]) for e in read_index(root)["images"]}
            rows = store.to_sql(
                args.sql, table=args.table, if_exists=args.if_exists, files=files, ids=list(files)
            )
            result["sql_rows"] = rows
            lines.append(f"wrote {rows} rows to table {args.table!r} of {_safe_url(args.sql)}")
    _print(result, args.json, lines)
    return 0
