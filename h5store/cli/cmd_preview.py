"""``h5store preview``: redraw the per-class contact sheets viewers show."""

from __future__ import annotations

import argparse

import h5store

from ._common import _print


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    preview = sub.add_parser(
        "preview",
        help="redraw the per-class contact sheets viewers show",
        description="Redraw every class's contact sheet (/classes/<class>/preview and "
        "/previews/<class>, the small RGB images HDF5 viewers show) from the stored images. "
        "Writers keep them current as they close; this repairs them after a writer was killed, "
        "or draws them for files written elsewhere. Opens PATH for writing.",
    )
    preview.add_argument("path", help="the store (.h5)")
    preview.add_argument("--json", action="store_true")
    return preview


def run(args: argparse.Namespace) -> int:
    with h5store.open(args.path, "r+") as store:
        store.rebuild_previews()
        labels = len(store.labels)
    _print(
        {"previews": labels}, args.json, [f"redrew the previews of {labels} classes in {args.path}"]
    )
    return 0
