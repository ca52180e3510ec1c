"""``h5store show``: write one image to a file (decoded, or its stored bytes)."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import h5store

from ._common import _human, _print, _record_dict


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    show = sub.add_parser(
        "show",
        help="write one image to a file (decoded, or its stored bytes)",
        description="Write image ID decoded to -o (PNG, TIFF or JPEG by its "
        "suffix; default <id>.png), or with --raw its stored bytes as they "
        "are (a .jpg for JPEG classes). -o - writes to stdout. Instead of PATH ID, a "
        "reference PATH#ID (the ref column `index --sql` writes) names the image.",
    )
    show.add_argument("path", help="the store, or a reference PATH#ID")
    show.add_argument("id", type=int, nargs="?", help="the image's id (unless PATH#ID)")
    show.add_argument(
        "-o", "--output", help="file to write (default: <id>.png, or <id>.<ext> with --raw)"
    )
    show.add_argument("--raw", action="store_true", help="the stored bytes, not re-encoded")
    show.add_argument("--json", action="store_true")
    return show


def run(args: argparse.Namespace) -> int:
    if args.id is None:  # a reference, as the ref column of index --sql has it
        args.path, args.id = h5store.parse_ref(args.path)
    with h5store.open(args.path) as store:
        record = store.record(args.id)
        if args.raw:
            data = store.get_encoded(args.id)
            extension = h5store.get_codec(record.codec).file_extension or "." + record.codec
            out = args.output or f"{args.id}{extension}"
        else:
            image = store[args.id]
            out = args.output or f"{args.id}.png"
            data = _encode_for(out, image)
    if out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    with open(out, "wb") as fh:
        fh.write(data)
    result = {**_record_dict(record), "written": out, "bytes_written": len(data)}
    score = "-" if record.score is None else f"{record.score:.4f}"
    _print(
        result,
        args.json,
        [
            f"id {record.id}: label {record.label!r}, true label {record.true_label!r}, "
            f"score {score}, {'x'.join(map(str, record.shape))} {record.dtype}, "
            f"{record.codec} {record.nbytes} B, source {record.source!r}",
            f"wrote {out} ({'stored bytes as they are' if args.raw else 'decoded'}, "
            f"{_human(len(data))})",
        ],
    )
    return 0


def _encode_for(path: str, image: np.ndarray) -> bytes:
    import imagecodecs

    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".png", "") or path == "-":
        return imagecodecs.png_encode(image)
    if suffix in (".tif", ".tiff"):
        return imagecodecs.tiff_encode(image)
    if suffix in (".jpg", ".jpeg") and image.dtype == np.uint8:
        return imagecodecs.jpeg8_encode(image, level=95)
    raise h5store.InvalidInputError(
        f"write the decoded image as .png or .tif (or .jpg for 8-bit), not {suffix!r}; "
        "--raw writes the stored bytes"
    )
