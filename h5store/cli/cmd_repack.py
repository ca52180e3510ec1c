"""``h5store repack``: rewrite a store without its deleted images, classes optionally converted."""

from __future__ import annotations

import argparse
import json
from typing import Any

import h5store

from ._common import _human, _print


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    rep = sub.add_parser(
        "repack",
        help="rewrite a store without its deleted images, optionally converting "
        "classes to another codec",
        description="Write SRC's live images into the new file DST (written under a temporary "
        "name and renamed at the end). Classes whose codec stays the same are copied as "
        "stored (no decode); classes converted by --codec, --quality or --class are decoded "
        "and encoded again. Ids, labels, true labels, scores and sources are kept. Example, "
        "applying what `h5store bench` recommends: h5store repack run.h5 run-small.h5 --codec "
        "jpeg --quality 80",
    )
    rep.add_argument("src")
    rep.add_argument("dst")
    rep.add_argument(
        "--codec",
        choices=h5store.available_codecs(),
        help="convert every class to this codec (default: keep each class's)",
    )
    rep.add_argument(
        "--quality",
        type=int,
        help="quality (1-100) of lossy codecs; alone, changes the quality of "
        "each lossy class's own codec",
    )
    rep.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a codec setting, e.g. --option optimize=true (JSON values)",
    )
    rep.add_argument(
        "--class",
        dest="class_",
        action="append",
        metavar="LABEL=CODEC[:QUALITY]",
        help="this class's own target codec (repeatable; wins over --codec)",
    )
    rep.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    rep.add_argument("--json", action="store_true")
    return rep


def run(args: argparse.Namespace) -> int:
    import warnings

    options = {}
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise h5store.InvalidInputError(f"--option takes KEY=VALUE, got {item!r}")
        options[key] = _option_value(value)
    classes = dict(_class_spec(text) for text in args.class_ or [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", h5store.GenerationLossWarning)
        report = h5store.repack(
            args.src,
            args.dst,
            codec=args.codec,
            quality=args.quality,
            classes=classes,
            overwrite=args.overwrite,
            progress=not args.quiet,
            **options,
        )
    notes = [
        str(w.message) for w in caught if issubclass(w.category, h5store.GenerationLossWarning)
    ]
    result = {**{k: v for k, v in vars(report).items()}, "warnings": notes}
    lines = [f"h5store: warning: {note}" for note in notes] + [
        f"repacked {report.src} -> {report.dst}: {report.images} images "
        f"({report.copied} copied as stored, {report.reencoded} re-encoded"
        + (f", {report.dropped_deleted} deleted images dropped" if report.dropped_deleted else "")
        + ")",
        f"  size {_human(report.src_bytes)} -> {_human(report.dst_bytes)} "
        f"(x{report.dst_bytes / max(report.src_bytes, 1):.3f})",
    ]
    changed = {(a, b) for a, b in report.classes.values() if a != b}
    for a, b in sorted(changed):
        labels = [label for label, pair in report.classes.items() if pair == (a, b)]
        lines.append(f"  {a} -> {b}: {', '.join(labels)}")
    _print(result, args.json, lines)
    return 0


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:  # a bare word: a string setting such as subsampling=444
        return text


def _class_spec(text: str) -> tuple[str, h5store.Codec]:
    label, sep, spec = text.rpartition("=")
    if not sep or not label or not spec:
        raise h5store.InvalidInputError(f"--class takes LABEL=CODEC[:QUALITY], got {text!r}")
    name, _, quality = spec.partition(":")
    if quality and not quality.isdigit():
        raise h5store.InvalidInputError(f"--class {text!r}: quality must be an integer")
    return label, h5store.get_codec(name, quality=int(quality) if quality else None)
