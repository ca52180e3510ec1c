"""``h5store report``: write an HTML error-analysis report (confusion matrix, galleries)."""

from __future__ import annotations

import argparse

import h5store

from ._common import _human, _print


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
    return report


def run(args: argparse.Namespace) -> int:
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
