"""The ``h5store`` command line: demo, info, verify (and more as they land).

Every command has ``--json`` for machine-readable output; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

import h5store

from .bench.cli import add_parser as add_bench_parser
from .errors import H5StoreError


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
    with h5store.open(args.out, "w", codec=args.codec, quality=args.quality,
                      labels=sample.class_names) as store:
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
        f"  stored in   {args.out} with {args.codec} q{args.quality} in {t_write:.2f} s "
        f"({stats['images'] / t_write:.0f} images/s)",
        f"  classes     {per_label}",
        f"  size        {_human(stats['file_bytes'])} on disk for {_human(stats['payload_bytes'])} "
        f"of encoded images (x{stats['file_bytes'] / stats['payload_bytes']:.3f}); "
        f"{_human(raw_bytes)} uncompressed (ratio {raw_bytes / stats['file_bytes']:.1f}:1)",
        f"  queries     {len(wrong)} misclassified, {len(confident_wrong)} of them with score >= 0.9",
        f"  read back   all {stats['images']} images in {t_read:.2f} s; verify: {report}",
        f"  report      h5store report {args.out} -o report.html   (confusion matrix, "
        f"galleries; opens in a browser)",
        f"  next        h5store info {args.out}   |   python -c \"import h5store; "
        f"s = h5store.open('{args.out}'); print(s.record(0))\"",
    ]
    _print(result, args.json, lines)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with h5store.open(args.path) as store:
        stats = store.stats()
        stats["format_version"] = list(h5store.FORMAT_VERSION)
    lines = [f"{k}: {v}" for k, v in stats.items()]
    _print(stats, args.json, lines)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with h5store.open(args.path) as store:
        report = store.verify()
    result = {"ok": report.ok, "checked": report.checked, "damaged": report.damaged,
              "misplaced": report.misplaced}
    _print(result, args.json, [f"{args.path}: {report}"])
    return 0 if report.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    from .folders import export_folder

    with h5store.open(args.path) as store:
        written = export_folder(store, args.folder, by=args.by, progress=not args.quiet)
    _print({"written": written, "folder": args.folder}, args.json,
           [f"wrote {written} images to {args.folder}/<class>/"])
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .folders import import_folder

    with h5store.open(args.path, "a", codec=args.codec, quality=args.quality) as store:
        ids = import_folder(store, args.folder, progress=not args.quiet)
        stats = store.stats()
    _print({"imported": len(ids), **stats}, args.json,
           [f"imported {len(ids)} images from {args.folder} into {args.path} "
            f"({_human(stats['file_bytes'])}, {len(stats['images_per_label'])} classes)"])
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    with h5store.open(args.path) as store:
        frame = store.to_pandas(include_deleted=args.deleted)
    if args.csv:
        frame.to_csv(args.csv, index=False)
        _print({"rows": len(frame), "csv": args.csv}, args.json, [f"wrote {len(frame)} rows to {args.csv}"])
    elif args.json:
        print(frame.to_json(orient="records"))
    else:
        print(frame.to_string(index=False, max_rows=args.max_rows))
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    with h5store.open(args.path, "r+") as store:
        store.rebuild_previews()
        labels = len(store.labels)
    _print({"previews": labels}, args.json, [f"redrew the previews of {labels} classes in {args.path}"])
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    out = args.out or Path(args.path).stem + "-report.html"
    result = h5store.report(args.path, out, max_classes=args.max_classes,
                            max_thumbnails=args.max_thumbnails, seed=args.seed,
                            progress=not args.quiet)
    _print(result, args.json,
           [(f"wrote {out} ({_human(result['bytes'])}, {result['thumbnails']} thumbnails, "
             f"{result['images']} images in {result['classes']} classes) in "
             f"{result['seconds']:.1f} s; open it in a browser")])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="h5store",
        description="Store images a CNN classified, with labels and scores, in one HDF5 file.",
    )
    parser.add_argument("--version", action="version", version=f"h5store {h5store.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="store the built-in sample photos and report on the file",
                          description="Store crops of the photos shipped with scikit-image, with "
                          "simulated predictions and scores, then query, read back and verify.")
    demo.add_argument("--out", default="h5store-demo.h5", help="file to write (default: %(default)s)")
    demo.add_argument("--n", type=int, default=512, help="number of images (default: %(default)s)")
    demo.add_argument("--size", type=int, default=224, help="image side in px (default: %(default)s)")
    demo.add_argument("--codec", default="jpeg", choices=h5store.available_codecs())
    demo.add_argument("--quality", type=int, default=90, help="quality for lossy codecs (1-100)")
    demo.add_argument("--batch", type=int, default=64, help="images per add_batch call")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print JSON instead of text")
    demo.set_defaults(func=cmd_demo)

    info = sub.add_parser("info", help="summarise a store")
    info.add_argument("path")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    verify = sub.add_parser("verify", help="check every image against its CRC-32 (exit 1 if damaged)")
    verify.add_argument("path")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=cmd_verify)

    export = sub.add_parser("export", help="write the images to an ImageFolder tree (root/<class>/<id>.<ext>)")
    export.add_argument("path")
    export.add_argument("folder")
    export.add_argument("--by", choices=["label", "true_label"], default="label",
                        help="group by predicted or true label (default: %(default)s)")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.add_argument("--json", action="store_true")
    export.set_defaults(func=cmd_export)

    imp = sub.add_parser("import", help="add the images of an ImageFolder tree (root/<class>/<file>)")
    imp.add_argument("folder")
    imp.add_argument("path", help="store to create or append to")
    imp.add_argument("--codec", default="jpeg", choices=h5store.available_codecs(),
                     help="codec of new classes (JPEG files go into JPEG classes as they are)")
    imp.add_argument("--quality", type=int, default=90)
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(func=cmd_import)

    index = sub.add_parser("index", help="print the index table, or write it as CSV")
    index.add_argument("path")
    index.add_argument("--csv", help="write CSV to this file")
    index.add_argument("--deleted", action="store_true", help="include deleted images")
    index.add_argument("--max-rows", type=int, default=40)
    index.add_argument("--json", action="store_true")
    index.set_defaults(func=cmd_index)

    preview = sub.add_parser("preview", help="redraw the per-class contact sheets viewers show")
    preview.add_argument("path")
    preview.add_argument("--json", action="store_true")
    preview.set_defaults(func=cmd_preview)

    report = sub.add_parser("report", help="write an HTML error-analysis report (confusion "
                            "matrix, score histograms, galleries) that opens from disk",
                            description="One self-contained HTML file: summary, confusion matrix "
                            "whose cells link to their images, per-class precision and recall, "
                            "score histograms, and galleries of the most confident mistakes, the "
                            "least confident correct predictions and each class.")
    report.add_argument("path")
    report.add_argument("-o", "--out", help="HTML file to write (default: FILE's name with "
                        "-report.html, in the current folder)")
    report.add_argument("--max-classes", type=int, default=30,
                        help="classes the matrix shows before folding the rest into 'other' "
                        "(default: %(default)s)")
    report.add_argument("--max-thumbnails", type=int, default=500,
                        help="most images decoded for the galleries (default: %(default)s)")
    report.add_argument("--seed", type=int, default=0, help="seed of the gallery samples")
    report.add_argument("--quiet", action="store_true", help="no progress bar")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_report)

    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except H5StoreError as exc:
        print(f"h5store: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
