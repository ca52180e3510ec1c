"""``h5store import``: add the images of an ImageFolder tree (root/<class>/<file>)."""

from __future__ import annotations

import argparse

import h5store

from ._common import _human, _print


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    imp = sub.add_parser(
        "import",
        help="add the images of an ImageFolder tree (root/<class>/<file>)",
        description="Add every image under FOLDER/<class>/. A folder `h5store export` wrote "
        "comes back with its ids, labels, true labels, scores and sources (from its index); "
        "in any other tree the folder names the label and the true label.",
    )
    imp.add_argument("folder")
    imp.add_argument("path", help="store to create or append to")
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
    from ..folders import import_folder

    if args.scheduler is not None:
        return _import_on_dask(args)

    with h5store.open(args.path, "a", codec=args.codec, quality=args.quality) as store:
        ids = import_folder(
            store,
            args.folder,
            allow_duplicates=args.allow_duplicates,
            follow_links=args.follow_links,
            progress=not args.quiet,
        )
        stats = store.stats()
    _print(
        {"imported": len(ids), **stats},
        args.json,
        [
            f"imported {len(ids)} images from {args.folder} into {args.path} "
            f"({_human(stats['file_bytes'])}, {len(stats['images_per_label'])} classes)"
        ],
    )
    return 0


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
