"""The ``h5store`` command line: demo, info, verify (and more as they land).

Every command has ``--json`` for machine-readable output; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import time
from typing import Any

import numpy as np

import h5store

from .bench.cli import add_parser as add_bench_parser
from .errors import H5StoreError
from .repack import describe_codec


def _print(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(json.dumps(result, indent=2, default=_jsonable))
    else:
        print("\n".join(lines))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _human(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1000
    return f"{nbytes:.1f} GB"


def cmd_demo(args: argparse.Namespace) -> int:
    from .sample import sample_set

    t0 = time.perf_counter()
    sample = sample_set(args.n, args.size, seed=args.seed)
    t_sample = time.perf_counter() - t0
    t0 = time.perf_counter()
    with h5store.open(
        args.out, "w", codec=args.codec, quality=args.quality, labels=sample.class_names
    ) as store:
        for start in range(0, len(sample), args.batch):
            stop = start + args.batch
            store.add_batch(
                sample.images[start:stop],
                labels=sample.labels[start:stop],
                scores=sample.scores[start:stop],
                true_labels=sample.true_labels[start:stop],
                sources=[f"sample/{i}" for i in range(start, min(stop, len(sample)))],
            )
    t_write = time.perf_counter() - t0
    with h5store.open(args.out) as store:
        stats = store.stats()
        confident_wrong = store.query(min_score=0.9, correct=False)
        wrong = store.query(correct=False)
        t0 = time.perf_counter()
        for image_id in store:
            store[image_id]
        t_read = time.perf_counter() - t0
        report = store.verify()
    raw_bytes = sample.images.nbytes
    result = {
        **stats,
        "source": sample.source,
        "size_px": args.size,
        "codec": args.codec,
        "quality": args.quality,
        "raw_bytes": raw_bytes,
        "misclassified": len(wrong),
        "confident_but_wrong": len(confident_wrong),
        "write_seconds": round(t_write, 3),
        "read_all_seconds": round(t_read, 3),
        "verify_ok": report.ok,
    }
    per_label = ", ".join(f"{k} {v}" for k, v in stats["images_per_label"].items())
    lines = [
        f"h5store demo: {stats['images']} crops ({args.size}x{args.size} px) of the "
        f"{sample.source} in {len(stats['images_per_label'])} predicted classes "
        f"(sample made in {t_sample:.1f} s)",
        f"  stored in   {args.out} with "
        f"{describe_codec(h5store.get_codec(args.codec, quality=args.quality))} in {t_write:.2f} s "
        f"({stats['images'] / t_write:.0f} images/s)",
        f"  classes     {per_label}",
        f"  size        {_human(stats['file_bytes'])} on disk for {_human(stats['payload_bytes'])} "
        f"of encoded images (x{stats['file_bytes'] / stats['payload_bytes']:.3f}); "
        f"{_human(raw_bytes)} uncompressed (ratio {raw_bytes / stats['file_bytes']:.1f}:1)",
        f"  queries     {len(wrong)} misclassified, "
        f"{len(confident_wrong)} of them with score >= 0.9",
        f"  read back   all {stats['images']} images in {t_read:.2f} s; verify: {report}",
        f"  report      h5store report {args.out} -o report.html   (confusion matrix, "
        f"galleries; opens in a browser)",
        f"  next        h5store info {args.out}   |   h5store query {args.out} --min-score 0.9 "
        f"--correct no   |   h5store bench {args.out}",
    ]
    _print(result, args.json, lines)
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


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def cmd_info(args: argparse.Namespace) -> int:
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


def _record_dict(record: h5store.Record) -> dict[str, Any]:
    return {
        "id": record.id,
        "label": record.label,
        "true_label": record.true_label,
        # float32 scores as float32 prints them (0.9753115, not 0.9753115177154541)
        "score": None if record.score is None else float(str(np.float32(record.score))),
        "correct": record.correct,
        "shape": list(record.shape),
        "dtype": record.dtype,
        "codec": record.codec,
        "nbytes": record.nbytes,
        "crc32": record.crc32,
        "source": record.source,
        "scores": None if record.scores is None else record.scores.tolist(),
    }


def cmd_query(args: argparse.Namespace) -> int:
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

    def cell(r, c):
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


def cmd_show(args: argparse.Namespace) -> int:
    if args.id is None:  # a reference, as the ref column of index --sql has it
        args.path, args.id = h5store.parse_ref(args.path)
    with h5store.open(args.path) as store:
        record = store.record(args.id)
        if args.raw:
            from .folders import FILE_EXTENSIONS

            data = store.get_encoded(args.id)
            out = args.output or f"{args.id}{FILE_EXTENSIONS.get(record.codec, '.' + record.codec)}"
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


def cmd_verify(args: argparse.Namespace) -> int:
    with h5store.open(args.path) as store:
        report = store.verify()
    result = {
        "ok": report.ok,
        "checked": report.checked,
        "damaged": report.damaged,
        "misplaced": report.misplaced,
    }
    _print(result, args.json, [f"{args.path}: {report}"])
    return 0 if report.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    from .folders import INDEX_FILES, export_folder, read_index

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
            f"wrote {written} images to {args.folder}/<class>/"
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


def cmd_import(args: argparse.Namespace) -> int:
    from .folders import import_folder

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


def cmd_merge(args: argparse.Namespace) -> int:
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


def _import_on_dask(args: argparse.Namespace) -> int:
    from .distributed import ingest

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


def _safe_url(url: str) -> str:
    """A database URL without its password, for messages."""
    try:
        import sqlalchemy

        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # any unparsable URL: to_sql reports it
        return url


def cmd_index(args: argparse.Namespace) -> int:
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


def cmd_repack(args: argparse.Namespace) -> int:
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


def cmd_preview(args: argparse.Namespace) -> int:
    with h5store.open(args.path, "r+") as store:
        store.rebuild_previews()
        labels = len(store.labels)
    _print(
        {"previews": labels}, args.json, [f"redrew the previews of {labels} classes in {args.path}"]
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    out = args.out or Path(args.path).stem + "-report.html"
    result = h5store.report(
        args.path,
        out,
        max_classes=args.max_classes,
        max_thumbnails=args.max_thumbnails,
        seed=args.seed,
        progress=not args.quiet,
    )
    _print(
        result,
        args.json,
        [
            (
                f"wrote {out} ({_human(result['bytes'])}, {result['thumbnails']} thumbnails, "
                f"{result['images']} images in {result['classes']} classes) in "
                f"{result['seconds']:.1f} s; open it in a browser"
            )
        ],
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="h5store",
        description="Store images a CNN classified, with labels and scores, in one HDF5 file.",
    )
    parser.add_argument("--version", action="version", version=f"h5store {h5store.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="store the built-in sample photos and report on the file",
        description="Store crops of the photos shipped with scikit-image, with "
        "simulated predictions and scores, then query, read back and verify.",
    )
    demo.add_argument(
        "--out", default="h5store-demo.h5", help="file to write (default: %(default)s)"
    )
    demo.add_argument("--n", type=int, default=512, help="number of images (default: %(default)s)")
    demo.add_argument(
        "--size", type=int, default=224, help="image side in px (default: %(default)s)"
    )
    demo.add_argument("--codec", default="jpeg", choices=h5store.available_codecs())
    demo.add_argument("--quality", type=int, default=90, help="quality for lossy codecs (1-100)")
    demo.add_argument("--batch", type=int, default=64, help="images per add_batch call")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print JSON instead of text")
    demo.set_defaults(func=cmd_demo)

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
    info.set_defaults(func=cmd_info)

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
    query.set_defaults(func=cmd_query)

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
    show.set_defaults(func=cmd_show)

    verify = sub.add_parser(
        "verify",
        help="check every image against its CRC-32 (exit 1 if damaged)",
        description="Recompute the CRC-32 of every stored image (deleted ones too) and check "
        "every cached chunk offset against HDF5's chunk index. Names the damaged images "
        "(the others stay readable); exit status 0 if all are intact, 1 otherwise.",
    )
    verify.add_argument("path", help="the store (.h5)")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=cmd_verify)

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
    export.set_defaults(func=cmd_export)

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
    imp.set_defaults(func=cmd_import)

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
    merge.set_defaults(func=cmd_merge)

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
    index.set_defaults(func=cmd_index)

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
    rep.set_defaults(func=cmd_repack)

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
    preview.set_defaults(func=cmd_preview)

    report = sub.add_parser(
        "report",
        help="write an HTML error-analysis report (confusion "
        "matrix, score histograms, galleries) that opens from disk",
        description="One self-contained HTML file: summary, confusion matrix "
        "whose cells link to their images, per-class precision and recall, "
        "score histograms, and galleries of the most confident mistakes, the "
        "least confident correct predictions and each class.",
    )
    report.add_argument("path")
    report.add_argument(
        "-o",
        "--out",
        help="HTML file to write (default: FILE's name with -report.html, in the current folder)",
    )
    report.add_argument(
        "--max-classes",
        type=int,
        default=30,
        help="classes the matrix shows before folding the rest into 'other' (default: %(default)s)",
    )
    report.add_argument(
        "--max-thumbnails",
        type=int,
        default=500,
        help="most images decoded for the galleries (default: %(default)s)",
    )
    report.add_argument("--seed", type=int, default=0, help="seed of the gallery samples")
    report.add_argument("--quiet", action="store_true", help="no progress bar")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_report)

    add_bench_parser(sub)
    return parser


#: Exit status of a command whose reader closed the pipe (``h5store info FILE | head -2``):
#: what the shell reports for a process SIGPIPE ended, as for other command-line tools.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, so a closed pipe is met inside this handler
        return status
    except BrokenPipeError:
        # Nobody reads the rest: stop quietly. stdout goes to /dev/null, so the interpreter's
        # own flush at exit does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except H5StoreError as exc:
        print(f"h5store: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an optional extra the command needs is not installed
        print(f"h5store: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
