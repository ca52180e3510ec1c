"""The file fuzzer (benchmarks/fuzz.py), short: byte damage and crafted structure (links,
external storage, virtual datasets, absurd sizes, edited attributes, payload headers and index
rows) give errors or exact reads; never a read of another file, a wrong answer, an exception
outside h5store's hierarchy, a crash, a hang or memory past the bound (issue 22 item 7).

Every trial runs under strace; the harness checks below show that it sees each outcome it
counts, so that a clean table means a clean store and not a blind harness."""

import faulthandler
import os
import shutil
import signal
import sys
import time

import h5py
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import fuzz

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")

BYTE_TRIALS = int(os.environ.get("H5STORE_FUZZ_TRIALS", "120"))
STRUCTURAL_TRIALS = int(os.environ.get("H5STORE_FUZZ_STRUCTURAL", "120"))
MEMORY_MIB = 256


@pytest.fixture(scope="module")
def report():
    return fuzz.fuzz(
        trials=BYTE_TRIALS,
        structural=STRUCTURAL_TRIALS,
        seed=11,
        processes=2,
        timeout=20,
        memory_mib=MEMORY_MIB,
    )


def _bad(report, outcomes):
    return [r for r in report["results"] if r["outcome"] in outcomes]


def test_every_trial_ran_traced(report):
    assert report["trials"] == BYTE_TRIALS + STRUCTURAL_TRIALS
    assert report["traced"]
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
    assert set(fuzz.STRUCTURAL) <= parts
    # Every mutation applied: a trial the harness could not build tests nothing.
    assert not _bad(report, ("invalid",)), fuzz.notable(report, 20, ("invalid",))


def test_no_read_outside_the_file(report):
    assert not _bad(report, ("outside",)), fuzz.notable(report, 20, ("outside",))


def test_no_crash_and_no_hang(report):
    assert not _bad(report, ("crash", "hang")), fuzz.notable(report, 20, ("crash", "hang"))


def test_only_h5store_errors(report):
    assert not _bad(report, ("other",)), fuzz.notable(report, 20, ("other",))


def test_no_wrong_answer(report):
    assert not _bad(report, ("wrong",)), fuzz.notable(report, 20, ("wrong",))


def test_memory_bounded_by_the_file(report):
    assert not _bad(report, ("memory",)), fuzz.notable(report, 20, ("memory",))


def test_undamaged_parts_read_exactly(report):
    # The fuzzer's own check: a preview is not read by the API, so damage there changes nothing.
    previews = [r for r in report["results"] if r["part"] == "preview"]
    assert all(r["outcome"] in ("exact", "error") for r in previews)
    assert any(r["outcome"] == "exact" for r in report["results"])


# --------------------------------------------------------------------------- the harness itself


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """One small store, its bytes and truth, and a worker folder, as a fuzz worker has them."""
    folder = str(tmp_path_factory.mktemp("harness"))
    stores = fuzz.build_stores(folder)
    store = stores["png"]
    with open(store["path"], "rb") as fh:
        data = fh.read()
    return data, store["truth"], folder


def _run(harness, reader, trial=None, **kwargs):
    data, truth, folder = harness
    trial = trial or {"trial": time.monotonic_ns(), "store": "png", "kind": "zero"}
    trial.setdefault("offset", 0)
    trial.setdefault("length", 0)
    trial.setdefault("seed", 0)
    return fuzz.run_trial(
        trial,
        data,
        truth,
        folder,
        kwargs.pop("timeout", 20),
        allowed=fuzz.allowed_prefixes(),
        reader=reader,
        **kwargs,
    )


def test_harness_reads_the_undamaged_store_exactly(harness):
    result = _run(harness, fuzz.read_back)
    assert result["outcome"] == "exact", result
    assert 0 < result["peak_mib"] < MEMORY_MIB


def test_harness_sees_a_followed_external_link(harness):
    # h5py follows the link that the mutation made: an open of the decoy outside the file.
    trial = {
        "trial": time.monotonic_ns(),
        "store": "png",
        "kind": "external link",
        "target": "/labels",
        "variant": "relative",
    }

    def follow(path, truth):
        with h5py.File(path, "r") as f:
            f["labels"][()]
        return "exact", ""

    result = _run(harness, follow, trial)
    assert result["outcome"] == "outside", result
    assert "outside/decoy.h5" in result["detail"]


def test_harness_sees_external_raw_storage(harness):
    trial = {
        "trial": time.monotonic_ns(),
        "store": "png",
        "kind": "external storage",
        "target": "/labels",
        "variant": "foreign",
    }

    def read(path, truth):
        with h5py.File(path, "r") as f:
            assert fuzz.FOREIGN_TEXT[:8] in f["labels"][()].tobytes()
        return "exact", ""

    result = _run(harness, read, trial)
    assert result["outcome"] == "outside", result
    assert "outside/raw.bin" in result["detail"]


def test_harness_sees_memory_crash_and_hang(harness):
    def allocate(path, truth):
        np.ones(MEMORY_MIB * 2**21, np.uint8)  # twice the bound
        return "exact", ""

    def crash(path, truth):
        faulthandler.disable()  # (pytest's dump of the stack would only clutter the output)
        os.kill(os.getpid(), signal.SIGSEGV)

    def hang(path, truth):
        time.sleep(60)

    assert _run(harness, allocate, memory_mib=MEMORY_MIB)["outcome"] == "memory"
    assert _run(harness, crash)["outcome"] == "crash"
    assert _run(harness, hang, timeout=1)["outcome"] == "hang"
