"""``h5store merge``: combine shard files into one new store (stored bytes copied as they are)."""

from __future__ import annotations

import argparse

import h5store

from ._common import _human, _print


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    merge = sub.add_parser(
        "merge",
        help="combine shard files into one new store (stored bytes copied as they are)",
        description="Combine shards (stores written by parallel writers) into one new "
        "store OUT: no decode or re-encode, labels united by name, deleted images left "
        "out. All or nothing: OUT appears only when complete.",
    )
    merge.add_argument("shards", nargs="+", metavar="SHARD")
    merge.add_argument("out", metavar="OUT")
    merge.add_argument(
        "--renumber",
        action="store_true",
        help="number the images 0, 1, 2, ... in shard order instead of keeping their ids",
    )
    merge.add_argument("--quiet", action="store_true", help="no progress bar")
    merge.add_argument("--json", action="store_true")
    return merge


def run(args: argparse.Namespace) -> int:
    out = h5store.merge(args.shards, args.out, renumber=args.renumber, progress=not args.quiet)
    with h5store.open(out) as store:
        stats = store.stats()
    _print(
        {"shards": len(args.shards), **stats},
        args.json,
        [
            f"merged {len(args.shards)} shards into {out}: {stats['images']} images, "
            f"{len(stats['images_per_label'])} classes, {_human(stats['file_bytes'])}"
        ],
    )
    return 0
