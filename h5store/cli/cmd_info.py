"""``h5store info``: summarise a store (per class images, share, accuracy, codec, bytes)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

import numpy as np

import h5store

from .._filters import stack_filters
from ..repack import describe_codec
from ._common import _human, _print, _table


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    info = sub.add_parser(
        "info",
        help="summarise a store: per class images, share, accuracy, codec and bytes per image",
        description="Summarise the store at PATH (read-only): its images and classes, file "
        "size against the encoded images, format version and the accuracy where true labels "
        "are known; then per class its images, their share, accuracy, codec and mean bytes "
        "per image.",
    )
    info.add_argument("path", help="the store (.h5)")
    info.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return info


def run(args: argparse.Namespace) -> int:
    with h5store.open(args.path) as store:
        stats = store.stats()
        stats["classes"] = class_table(store)
        vectors = store.scores is not None
    accuracy_known = sum(c["with_true_label"] for c in stats["classes"])
    correct = sum(
        c["accuracy"] * c["with_true_label"] for c in stats["classes"] if c["accuracy"] is not None
    )
    rows = [
        [
            c["label"],
            c["images"],
            f"{100 * c['share']:.1f} %",
            "-" if c["accuracy"] is None else f"{100 * c['accuracy']:.1f} %",
            c["codec"],
            _human(c["bytes_per_image"]),
        ]
        for c in stats["classes"]
    ]
    overhead = stats["file_bytes"] / max(stats["payload_bytes"], 1)
    lines = [
        f"{stats['path']}: {stats['images']} images in {len(stats['classes'])} classes"
        + (
            f" ({stats['deleted']} deleted, space kept until `h5store repack`)"
            if stats["deleted"]
            else ""
        ),
        f"  file {_human(stats['file_bytes'])} for {_human(stats['payload_bytes'])} of encoded "
        f"images (x{overhead:.3f}); format {'.'.join(map(str, stats['format_version']))}"
        + ("; score vectors stored" if vectors else ""),
    ]
    if accuracy_known:
        lines.append(
            f"  accuracy {100 * correct / accuracy_known:.1f} % over the "
            f"{accuracy_known} images with a true label"
        )
    # What a viewer without h5store needs on this machine (docs/viewers.md)
    filters = stack_filters(args.path)
    stats["filters"] = [{**asdict(f), "note": f.note()} for f in filters]
    lines += [f"  filters: {f.note()}" for f in filters if f.note()]
    lines += [
        "",
        *_table(
            ["class", "images", "share", "accuracy", "codec", "bytes/image"],
            rows,
            right={1, 2, 3, 5},
        ),
    ]
    _print(stats, args.json, lines)
    return 0


def class_table(store: h5store.ImageStore) -> list[dict[str, Any]]:
    """Per class: images, share of the store, accuracy where true labels exist, codec, bytes."""
    index = store.index
    live = index[index["deleted"] == 0]
    total = max(len(live), 1)
    out = []
    for k, label in enumerate(store.labels):
        rows = live[live["label"] == k]
        if not len(rows):
            continue
        known = rows[rows["true_label"] >= 0]
        out.append(
            {
                "label": label,
                "images": len(rows),
                "share": len(rows) / total,
                "accuracy": float(np.mean(known["true_label"] == k)) if len(known) else None,
                "with_true_label": len(known),
                "codec": describe_codec(store.codec_of(label)),
                "bytes_per_image": float(rows["nbytes"].astype(np.int64).mean()),
            }
        )
    return out
