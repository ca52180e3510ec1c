"""``h5store index``: print the index table, or write it as CSV or to a SQL database."""

from __future__ import annotations

import argparse

import h5store

from ._common import _print, _safe_url


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    index = sub.add_parser(
        "index",
        help="print the index table, or write it as CSV or to a SQL database",
        description="Print the store's index (one row per image: id, label, true label, "
        "score, geometry, codec, bytes, CRC-32, source), or write it to a CSV file or a SQL "
        "database. SQL rows name the store by its absolute path and carry a ref column "
        "(PATH#ID) that `h5store show REF` and h5store.load(ref) turn back into the image.",
    )
    index.add_argument("path", help="the store (.h5)")
    index.add_argument("--csv", help="write CSV to this file")
    index.add_argument(
        "--sql",
        metavar="URL",
        help="write it to this database: a SQLAlchemy URL such as "
        "sqlite:///index.db or postgresql+psycopg://user@host/db (table "
        "--table, score vectors in <table>_scores)",
    )
    index.add_argument("--table", default="images", help="table for --sql (default: %(default)s)")
    index.add_argument(
        "--if-exists",
        choices=["fail", "replace", "append"],
        default="fail",
        help="when the --sql table exists (default: %(default)s)",
    )
    index.add_argument("--scores", action="store_true", help="add the score vectors as columns")
    index.add_argument("--deleted", action="store_true", help="include deleted images")
    index.add_argument("--max-rows", type=int, default=40)
    index.add_argument("--json", action="store_true")
    return index


def run(args: argparse.Namespace) -> int:
    if args.sql:
        with h5store.open(args.path) as store:
            rows = store.to_sql(args.sql, table=args.table, if_exists=args.if_exists)
            vectors = store.scores is not None
        tables = [args.table] + ([f"{args.table}_scores"] if vectors else [])
        _print(
            {"rows": rows, "sql": _safe_url(args.sql), "tables": tables},
            args.json,
            [
                f"wrote {rows} rows to {' and '.join(repr(t) for t in tables)} in "
                f"{_safe_url(args.sql)}"
            ],
        )
        return 0
    with h5store.open(args.path) as store:
        frame = store.to_pandas(include_deleted=args.deleted, scores=args.scores)
    if args.csv:
        frame.to_csv(args.csv, index=False)
        _print(
            {"rows": len(frame), "csv": args.csv},
            args.json,
            [f"wrote {len(frame)} rows to {args.csv}"],
        )
    elif args.json:
        print(frame.to_json(orient="records"))
    else:
        print(frame.to_string(index=False, max_rows=args.max_rows))
    return 0
