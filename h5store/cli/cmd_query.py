"""``h5store query``: list the images matching filters (ids with their records)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

import h5store

from ._common import _jsonable, _record_dict, _table


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    query = sub.add_parser(
        "query",
        help="list the images matching filters (ids with their records)",
        description="The API's store.query(...) from the shell. Filters combine with AND; "
        "--label and --true-label repeat (any of them matches). Example, confident but wrong: "
        "h5store query run.h5 --min-score 0.9 --correct no",
    )
    query.add_argument("path")
    query.add_argument("--label", action="append", help="predicted label (repeatable)")
    query.add_argument("--true-label", action="append", help="true label (repeatable)")
    query.add_argument("--min-score", type=float, help="top-1 score at least this")
    query.add_argument("--max-score", type=float, help="top-1 score at most this")
    query.add_argument(
        "--correct",
        choices=["yes", "no"],
        help="prediction equals the true label (images without one never match)",
    )
    query.add_argument("--limit", type=int, help="print at most N images (the count is of all)")
    out = query.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON")
    out.add_argument("--csv", action="store_true", help="print CSV")
    return query


def run(args: argparse.Namespace) -> int:
    correct = None if args.correct is None else args.correct == "yes"
    with h5store.open(args.path) as store:
        ids = store.query(
            label=args.label or None,
            true_label=args.true_label or None,
            min_score=args.min_score,
            max_score=args.max_score,
            correct=correct,
        )
        matched = len(ids)
        shown = ids if args.limit is None else ids[: args.limit]
        records = [_record_dict(store.record(i)) for i in shown.tolist()]
    if args.json:
        print(
            json.dumps(
                {"matched": matched, "shown": len(records), "images": records},
                indent=2,
                default=_jsonable,
            )
        )
        return 0
    columns = [
        "id",
        "label",
        "true_label",
        "score",
        "correct",
        "shape",
        "codec",
        "nbytes",
        "source",
    ]
    if args.csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(columns)
        for r in records:
            out.writerow(
                [
                    "" if r[c] is None else "x".join(map(str, r[c])) if c == "shape" else r[c]
                    for c in columns
                ]
            )
        return 0

    def cell(r: dict[str, Any], c: str) -> str:
        value = r[c]
        if value is None:
            return "-"
        if c == "score":
            return f"{value:.4f}"
        if c == "shape":
            return "x".join(map(str, value))
        return str(value)

    print(
        f"{matched} images match"
        + (f"; the first {len(records)}:" if len(records) < matched else ":")
    )
    if records:
        print(
            "\n".join(
                _table(columns, [[cell(r, c) for c in columns] for r in records], right={0, 3, 7})
            )
        )
    return 0
