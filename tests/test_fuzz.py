"""The file fuzzer (benchmarks/fuzz.py), short: damaged files give errors or exact reads,
never a crash, a hang or an exception outside h5store's hierarchy, and never a wrong answer
outside the image chunks (whose checksums the read path checks: issue 11 part 1)."""

import inspect
import os
import sys

import pytest

import h5store

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import fuzz

TRIALS = int(os.environ.get("H5STORE_FUZZ_TRIALS", "160"))
#: Reads check each image's CRC-32 before decoding (issue 11 part 1) once this exists.
CHECKSUMMED_READS = "verify_reads" in inspect.signature(h5store.open).parameters


@pytest.fixture(scope="module")
def report():
    return fuzz.fuzz(trials=TRIALS, seed=11, processes=2, timeout=20)


def test_every_trial_ran(report):
    assert report["trials"] == TRIALS
    parts = {r["part"] for r in report["results"]}
    # (no "index tail": a closed format-1.2 file's tail has no rows, hence no chunk; its
    # header is among the object headers, and a tail holding rows is a live or killed
    # writer's, which the crash tests replay)
    assert {
        "superblock",
        "object header",
        "index",
        "stacks",
        "labels",
        "scores",
        "score checks",
        "image chunk",
        "other metadata",
    } <= parts


def test_no_crash_and_no_hang(report):
    bad = [r for r in report["results"] if r["outcome"] in ("crash", "hang")]
    assert not bad, fuzz.notable(report)


def test_damaged_structure_gives_h5store_errors(report):
    # Decoders meeting a damaged image chunk raise their own errors until reads check the
    # CRC first; everywhere else only H5StoreError may escape.
    bad = [
        r
        for r in report["results"]
        if r["outcome"] == "other" and (CHECKSUMMED_READS or r["part"] != "image chunk")
    ]
    assert not bad, fuzz.notable(report)


def test_no_wrong_answer_from_damaged_structure(report):
    # Score vectors carry no checksum (README, Reliability); the index, the tables, the
    # sources and HDF5's metadata are checked or validated before they are trusted.
    unchecked = ("scores",) if CHECKSUMMED_READS else ("image chunk", "scores")
    bad = [r for r in report["results"] if r["outcome"] == "wrong" and r["part"] not in unchecked]
    assert not bad, fuzz.notable(report)


def test_undamaged_parts_read_exactly(report):
    # The fuzzer's own check: a preview is not read by the API, so damage there changes nothing.
    previews = [r for r in report["results"] if r["part"] == "preview"]
    assert all(r["outcome"] in ("exact", "error") for r in previews)
    assert any(r["outcome"] == "exact" for r in report["results"])
