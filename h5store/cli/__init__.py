"""The ``h5store`` command line, one module per command.

Commands (``h5store COMMAND --help`` for each one's options):

- ``demo``: store the built-in sample photos and report on the file (:mod:`.cmd_demo`)
- ``info``: per class images, share, accuracy, codec and bytes per image (:mod:`.cmd_info`)
- ``query``: the images matching filters, with their records (:mod:`.cmd_query`)
- ``show``: one image to a file, decoded or as stored (:mod:`.cmd_show`)
- ``verify``: every image against its CRC-32, exit 1 if damaged (:mod:`.cmd_verify`)
- ``export``: the images to an ImageFolder tree with their index (:mod:`.cmd_export`)
- ``import``: the images of an ImageFolder tree into a store (:mod:`.cmd_import`)
- ``merge``: shard files into one new store (:mod:`.cmd_merge`)
- ``index``: the index table printed, or written as CSV or to SQL (:mod:`.cmd_index`)
- ``repack``: a store rewritten without deleted images, classes optionally converted
  (:mod:`.cmd_repack`)
- ``preview``: the per-class contact sheets viewers show, redrawn (:mod:`.cmd_preview`)
- ``report``: an HTML error-analysis report (:mod:`.cmd_report`)
- ``bench``: the codec and quality to choose for your images (:mod:`h5store.bench.cli`)

Each command module has ``add_parser(subparsers)``, which registers the command and returns its
parser, and ``run(args)``, which returns the exit status. This module holds what they share:
:func:`build_parser` (the whole parser, which the docs' CLI reference is generated from) and
:func:`main` (exit statuses: a command's own, 2 for h5store's errors and missing extras,
:data:`EXIT_BROKEN_PIPE` when the reader of stdout went away).

Every command has ``--json`` for machine-readable output; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import h5store

from ..bench import cli as cmd_bench
from ..errors import H5StoreError
from . import (
    cmd_demo,
    cmd_export,
    cmd_import,
    cmd_index,
    cmd_info,
    cmd_merge,
    cmd_preview,
    cmd_query,
    cmd_repack,
    cmd_report,
    cmd_show,
    cmd_verify,
)

#: The command modules, in the order ``h5store --help`` lists them.
COMMANDS = (
    cmd_demo,
    cmd_info,
    cmd_query,
    cmd_show,
    cmd_verify,
    cmd_export,
    cmd_import,
    cmd_merge,
    cmd_index,
    cmd_repack,
    cmd_preview,
    cmd_report,
    cmd_bench,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``h5store`` argument parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="h5store",
        description="Store images a CNN classified, with labels and scores, in one HDF5 file.",
    )
    parser.add_argument("--version", action="version", version=f"h5store {h5store.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(func=command.run)
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
