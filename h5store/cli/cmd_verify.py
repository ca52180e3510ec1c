"""``h5store verify``: check every image against its CRC-32 (exit 1 if damaged)."""

from __future__ import annotations

import argparse

import h5store

from ._common import _print


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    verify = sub.add_parser(
        "verify",
        help="check every image against its CRC-32 (exit 1 if damaged)",
        description="Recompute the CRC-32 of every stored image (deleted ones too) and check "
        "every cached chunk offset against HDF5's chunk index. Names the damaged images "
        "(the others stay readable); exit status 0 if all are intact, 1 otherwise.",
    )
    verify.add_argument("path", help="the store (.h5)")
    verify.add_argument("--json", action="store_true")
    return verify


def run(args: argparse.Namespace) -> int:
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
