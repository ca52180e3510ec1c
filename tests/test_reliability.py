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
    path, log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(seed)
    store = h5store.open(path, "a", codec="png")
    print("ready", flush=True)
    batch = 0
    while True:
        n = int(rng.integers(1, 400))
        shape = [(12, 12, 3), (10, 14), (9, 7, 4)][batch % 3]
        images = rng.integers(0, 255, (n, *shape), dtype=np.uint8)
        labels = [f"c{int(k)}" for k in rng.integers(0, 3 + batch // 3, n)]
        ids = store.add_batch(images, labels=labels, scores=rng.random(n),
                              sources=[f"b{batch}/{k}" for k in range(n)])
        with open(log, "a") as fh:  # written only once add_batch has returned
            fh.write(json.dumps([int(ids[0]), int(ids[-1]), seed, batch]) + "\\n")
        batch += 1
    """
)


def replay(seed: int, batches: int) -> dict[int, np.ndarray]:
    """The images the writer above committed in its first ``batches`` batches."""
    rng = np.random.default_rng(seed)
    out, next_id = {}, 0
    for batch in range(batches):
        n = int(rng.integers(1, 400))
        shape = [(12, 12, 3), (10, 14), (9, 7, 4)][batch % 3]
        images = rng.integers(0, 255, (n, *shape), dtype=np.uint8)
        rng.integers(0, 3 + batch // 3, n)
        rng.random(n)
        out.update(zip(range(next_id, next_id + n), images))
        next_id += n
    return out


@pytest.mark.parametrize("trial", range(int(os.environ.get("H5STORE_CRASH_TRIALS", "6"))))
def test_kill_9_during_ingest_loses_at_most_the_batch_in_flight(tmp_path, trial):
    path, log = str(tmp_path / "crash.h5"), str(tmp_path / "committed.log")
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, path, log, str(trial)], stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(random.Random(trial).uniform(0.2, 2.0))
        proc.kill()
    committed = (
        [json.loads(line) for line in Path(log).read_text().splitlines()]
        if os.path.exists(log)
        else []
    )
    expected = replay(trial, len(committed))
    in_flight = len(replay(trial, len(committed) + 1)) - len(expected)
    with h5store.open(path, "a") as store:  # recovers what the dead writer left
        assert store.verify().ok
        # the batch in flight may have committed before its log line was written
        assert len(store) in (len(expected), len(expected) + in_flight)
        for image_id, image in expected.items():
            assert np.array_equal(store[image_id], image)
        store.add(np.zeros((12, 12, 3), np.uint8), label="after the crash")
    with h5store.open(path) as store:
        assert store.verify().ok
        assert store.labels[-1] == "after the crash"
        if expected:
            assert store.record(max(expected)).source is not None


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
