"""Crashes, concurrent writers and readers (DESIGN section 5)."""

import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python

import h5store

WRITER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import h5store
    sys.path.insert(0, sys.argv[5])
    from test_reliability import calls
    path, log, seed, durability = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    store = h5store.open(path, "a", codec="png", durability=durability)
    print("ready", flush=True)
    for number, (images, labels, scores, sources) in enumerate(calls(seed)):
        if len(images) == 1 and number % 2:  # one image per call, as most users write
            store.add(images[0], label=labels[0], score=float(scores[0]), source=sources[0])
        else:
            store.add_batch(images, labels=labels, scores=scores, sources=sources)
        if durability == "group" and number % 3 == 2:
            store.commit()
        if durability == "call" or number % 3 == 2:
            with open(log, "a") as fh:  # only once the calls up to here are durable
                fh.write(json.dumps(number + 1) + "\\n")
    """
)


def calls(seed: int):
    """The writer's add calls: (images, labels, scores, sources); a third of them one image."""
    rng = np.random.default_rng(seed)
    batch = 0
    while True:
        n = 1 if batch % 3 == 1 else int(rng.integers(1, 400))
        shape = [(12, 12, 3), (10, 14), (9, 7, 4)][batch % 3]
        images = rng.integers(0, 255, (n, *shape), dtype=np.uint8)
        labels = [f"c{int(k)}" for k in rng.integers(0, 3 + batch // 3, n)]
        yield images, labels, rng.random(n), [f"b{batch}/{k}" for k in range(n)]
        batch += 1


def call_ends(seed: int, n_calls: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Where each of the writer's first ``n_calls`` calls ends in id order, and the images."""
    sizes, images = [], []
    for _, (batch, *_) in zip(range(n_calls), calls(seed)):
        sizes.append(len(batch))
        images.extend(batch)
    return np.cumsum(sizes), images


@pytest.mark.parametrize("durability", ["call", "group"])
@pytest.mark.parametrize("trial", range(int(os.environ.get("H5STORE_CRASH_TRIALS", "6"))))
def test_kill_9_during_ingest_loses_at_most_what_was_not_committed(tmp_path, trial, durability):
    """Every call covered by a returned commit (each call, with durability "call") survives;
    beyond them the store holds whole calls only, in order: a group commit never splits one."""
    path, log = str(tmp_path / "crash.h5"), str(tmp_path / "committed.log")
    here = str(Path(__file__).parent)
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, path, log, str(trial), durability, here],
        stdout=subprocess.PIPE,
    ) as proc:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(random.Random(trial).uniform(0.2, 2.0))
        proc.kill()
    # Only complete lines: the kill can cut the last one.
    text = Path(log).read_text() if os.path.exists(log) else ""
    lines = [line for line in text.split("\n")[:-1] if line]
    committed = int(json.loads(lines[-1])) if lines else 0
    with h5store.open(path, "a") as store:  # recovers what the dead writer left
        assert store.verify().ok
        stored = len(store)
        ends, images = call_ends(trial, committed + 2000)
        durable = int(ends[committed - 1]) if committed else 0
        assert stored >= durable, (stored, durable)
        assert stored == 0 or stored in ends.tolist(), "a call was split"
        for image_id in range(stored):
            assert np.array_equal(store[image_id], images[image_id]), image_id
        store.add(np.zeros((12, 12, 3), np.uint8), label="after the crash")
    with h5store.open(path) as store:
        assert store.verify().ok
        assert store.labels[-1] == "after the crash"
        if durable:
            assert store.record(durable - 1).source is not None


def test_second_writer_gets_a_clear_error(store_path):
    with h5store.open(store_path, "w", codec="raw") as store:
        store.add(np.zeros((2, 2), np.uint8), label="a")
        other = run_python(
            "import sys, h5store\n"
            "try:\n    h5store.open(sys.argv[1], 'a')\n"
            "except h5store.StoreLockedError as e:\n    print('locked:', e)\n",
            store_path,
        )
        assert other.stdout.startswith("locked:") and "open for writing elsewhere" in other.stdout
        with pytest.raises(h5store.StoreLockedError):  # also within one process
            h5store.open(store_path, "r+")
        store.add(np.zeros((2, 2), np.uint8), label="a")  # the first writer is unaffected
    with h5store.open(store_path, "a") as store:  # released on close
        assert len(store) == 2


READER = textwrap.dedent(
    """
    import sys, time, numpy as np, h5store
    path, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
    seen, checks = 0, 0
    while time.monotonic() < deadline:
        try:
            store = h5store.open(path)
        except h5store.StoreLockedError:
            continue  # the writer is creating a class; retry
        with store:
            ids = store.ids()
            assert len(ids) >= seen, (len(ids), seen)
            seen = len(ids)
            for i in ids[-50:].tolist():
                img = store[i]
                # every image the writer stores is constant, equal to its id modulo 251
                assert (img == i % 251).all(), i
                checks += 1
    print(seen, checks)
    """
)


def test_reader_in_another_process_never_sees_half_written_batches(store_path):
    with h5store.open(store_path, "w", codec="png") as store:
        store.add(np.zeros((16, 16), np.uint8), label="c0")
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, store_path, "3"], stdout=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 3
        batch, start = 0, 1
        while time.monotonic() < deadline:
            n = 1 + batch % 50
            images = [np.full((16, 16), (start + k) % 251, np.uint8) for k in range(n)]
            store.add_batch(images, labels=[f"c{batch % 7}"] * n, ids=range(start, start + n))
            batch, start = batch + 1, start + n
        out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0, out
    seen, checks = map(int, out.split())
    assert seen > 1 and checks > 0
