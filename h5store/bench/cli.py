"""``h5store bench``: the benchmark from the command line, a command module as the others in
:mod:`h5store.cli` are (:func:`add_parser` and :func:`run`); everything else about the command
lives here."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from h5store import InvalidInputError

from .recommend import MIN_DECODE_SPEED, PREFERENCES
from .runner import QUICK_IMAGES


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``bench`` subcommand on the ``h5store`` parser's subparsers; returns its
    parser."""
    bench = sub.add_parser(
        "bench",
        help="choose a codec and quality for your images (size, speed, fidelity)",
        description="Measure every registered codec setting on the same images: bytes per "
        "image, encode/decode megapixels per second (1 and 2 threads, in CPU time), PSNR, SSIM, "
        "max error and whether a classifier's predictions survive; write bench.json/.csv/.md "
        "and a Pareto plot (bench.png) and recommend the smallest (or fastest) setting meeting "
        "the floors (quality, and decode speed against the input's own codec). Exit status 1 "
        "when no setting meets them. Needs the 'bench' extra.",
    )
    bench.add_argument(
        "input",
        nargs="?",
        default=None,
        help="an h5store file or an ImageFolder directory (one subfolder per "
        "class); default: the built-in sample set",
    )
    bench.add_argument(
        "--n",
        type=int,
        default=None,
        help=f"images drawn (default: 500; {QUICK_IMAGES} with --quick)",
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help=f"a first look in under a minute: {QUICK_IMAGES} images and, of each codec's "
        "settings, its first lossless one and its two lossy ones of highest quality",
    )
    bench.add_argument(
        "--size",
        type=int,
        default=None,
        help="side in px: of the sample set's crops (default 224); for your "
        "images a centre crop resized to it (default: keep them as they are)",
    )
    bench.add_argument("--seed", type=int, default=0, help="which images are drawn")
    bench.add_argument(
        "--codecs", default=None, help="comma-separated codecs to measure (default: all registered)"
    )
    bench.add_argument(
        "--min-ssim",
        type=float,
        default=0.98,
        help="floor on mean SSIM (default: %(default)s; -1 for none)",
    )
    bench.add_argument("--min-psnr", type=float, default=None, help="floor on mean PSNR in dB")
    bench.add_argument(
        "--min-agreement",
        type=float,
        default=None,
        help="floor on the share (0-1) of classifier predictions unchanged",
    )
    bench.add_argument(
        "--min-decode-speed",
        type=float,
        default=MIN_DECODE_SPEED,
        metavar="FRACTION",
        help="floor on one-thread decode speed, as a fraction of the input's own codec's "
        "(the store's codec, the files' format) or, for input without one, of JPEG's at the "
        "same quality floors: reads from the recommended setting are not much slower than "
        "now (default: %(default)s; 0 for none)",
    )
    bench.add_argument(
        "--predict",
        metavar="MODULE:FUNCTION",
        help="your model: a function from a batch of images ((N, H, W[, C]) "
        "uint8 array) to labels, imported from MODULE (the current directory "
        "is on the path) and asked about the originals and every decoded "
        "setting; default: a small classifier trained on the originals",
    )
    bench.add_argument(
        "--prefer",
        choices=PREFERENCES,
        default="smallest",
        help="recommend the smallest setting or the fastest to decode (default: %(default)s)",
    )
    bench.add_argument(
        "--ssim-images",
        type=int,
        default=200,
        help="images SSIM is averaged over, the costliest measure "
        "(default: %(default)s; 0 for all)",
    )
    bench.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed blocks per thread count (default: %(default)s)",
    )
    bench.add_argument(
        "--out", default="h5store-bench", help="folder for the results (default: %(default)s)"
    )
    bench.add_argument("--json", action="store_true", help="print JSON instead of the table")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    return bench


def run(args: argparse.Namespace) -> int:
    try:
        import matplotlib  # noqa: F401
        import skimage  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        print(
            f"h5store: error: bench needs the 'bench' extra ({exc.name} is missing): "
            "pip install 'h5store[bench]'",
            file=sys.stderr,
        )
        return 2
    from . import report
    from .runner import run

    predict = load_predict(args.predict) if args.predict else None
    result = run(
        args.input,
        n=args.n,
        size=args.size,
        seed=args.seed,
        codecs=args.codecs.split(",") if args.codecs else None,
        min_ssim=args.min_ssim,
        min_psnr=args.min_psnr,
        min_agreement=args.min_agreement,
        min_decode_speed=args.min_decode_speed or None,
        prefer=args.prefer,
        quick=args.quick,
        repeats=args.repeats,
        ssim_images=args.ssim_images or None,
        out=args.out,
        progress=not args.quiet,
        predict=predict,
    )
    if args.json:
        print(json.dumps({**result.to_dict(), "files": result.files}, indent=2, allow_nan=False))
    else:
        print(report.markdown_table(result))
        print()
        equal = report.equal_ssim_table(result)
        if equal:
            print(f"{report.EQUAL_SSIM_CAPTION}\n{equal}\n")
        print("\n".join(report.summary_lines(result)))
        print(f"Results: {', '.join(result.files.values())}")
        print()
        print(result.recommendation.message)
    return 0 if result.recommendation.cell is not None else 1


def load_predict(spec: str):
    """The function ``module:function`` names (``package.module:object.method`` works too)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidInputError(f"--predict takes MODULE:FUNCTION, got {spec!r}")
    if os.getcwd() not in sys.path:  # like `python -m`: the user's own module, where they are
        sys.path.insert(0, os.getcwd())
    try:
        target = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(f"--predict: cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise InvalidInputError(f"--predict: {module_name!r} has no {attr!r}") from None
    if not callable(target):
        raise InvalidInputError(f"--predict: {spec} is a {type(target).__name__}, not a function")
    return target
