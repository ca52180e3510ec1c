"""Concurrent readers, tortured: a writer process appends batches (new classes now and then)
while two reader processes refresh() and read at random; every image a reader sees must be
exactly what was written, the committed set must only grow, and readers may raise nothing but
documented errors. Then the writer is killed with SIGKILL mid-batch: readers keep working,
and the next writer recovers every committed image.

H5STORE_TORTURE_SECONDS sets how long the writer appends (3 s here; the issue's full run is
10 s)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import h5store

SECONDS = float(os.environ.get("H5STORE_TORTURE_SECONDS", "3"))
HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = [(16, 16, 3), (12, 20), (8, 8, 4)]


def image_of(image_id: int) -> np.ndarray:
    return np.random.default_rng(image_id).integers(0, 256, SHAPES[image_id % 3], dtype=np.uint8)


def label_of(image_id: int) -> str:
    # every 300 ids a new class appears: the writer restructures the file while readers read
    return f"c{image_id % 4}" if image_id % 300 < 200 else f"k{image_id // 300}"


WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import h5store
    sys.path.insert(0, sys.argv[3])
    from test_torture import image_of, label_of
    path, log = sys.argv[1], sys.argv[2]
    store = h5store.open(path, "a", codec="png")
    print("ready", flush=True)
    next_id, batch = len(store), 0
    while True:
        n = 1 + (batch * 37) % 60
        ids = list(range(next_id, next_id + n))
        store.add_batch([image_of(i) for i in ids], labels=[label_of(i) for i in ids], ids=ids,
                        scores=[(i % 100) / 100 for i in ids])
        if batch % 9 == 8:
            store.delete(ids[:1])  # (commits what is pending first; durable when it returns)
        if batch % 2 == 1 or batch % 9 == 8:  # group commit: two batches a commit
            store.commit()
            with open(log, "a") as fh:  # after commit() returned: durable
                fh.write(f"{ids[-1]} {ids[0] if batch % 9 == 8 else -1}\\n")
        next_id += n
        batch += 1
    """
)

READER = textwrap.dedent(
    """
    import json, os, random, sys, traceback
    import numpy as np
    import h5store
    sys.path.insert(0, sys.argv[3])
    from test_torture import image_of, label_of
    path, stop, seed = sys.argv[1], sys.argv[2], int(sys.argv[4])
    rng = random.Random(seed)
    stats = {"refreshes": 0, "checked": 0, "max_seen": -1, "errors": {}, "problems": []}
    documented = (h5store.StoreLockedError, h5store.RecoveryNeededError)
    store = None
    seen = set()
    try:
        while not os.path.exists(stop) or stats["refreshes"] < 3:
            try:
                if store is None:
                    store = h5store.open(path)
                else:
                    store.refresh()
            except documented as exc:
                name = type(exc).__name__
                stats["errors"][name] = stats["errors"].get(name, 0) + 1
                if store is None:
                    continue
            stats["refreshes"] += 1
            ids = set(store.index["id"].tolist())  # committed rows, deleted ones too
            if not seen <= ids:
                stats["problems"].append(f"committed ids vanished: {sorted(seen - ids)[:5]}")
            seen = ids
            if ids and ids != set(range(len(ids))):
                stats["problems"].append(f"committed ids are not a prefix: {len(ids)} ids")
            stats["max_seen"] = max(stats["max_seen"], max(ids, default=-1))
            live = store.ids().tolist()
            for image_id in rng.sample(live, min(25, len(live))):
                if not np.array_equal(store[image_id], image_of(image_id)):
                    stats["problems"].append(f"image {image_id} differs")
                if store.record(image_id).label != label_of(image_id):
                    stats["problems"].append(f"label of {image_id} differs")
                stats["checked"] += 1
            batch = rng.sample(live, min(16, len(live)))
            for image_id, image in zip(batch, store.get_batch(batch)):
                if not np.array_equal(image, image_of(image_id)):
                    stats["problems"].append(f"get_batch: image {image_id} differs")
    except Exception:
        # The whole error, its causes and where the reader was, for the test to print.
        stats["failure"] = traceback.format_exc()
        print(json.dumps(stats))
        sys.exit(1)
    store.close()
    print(json.dumps(stats))
    """
)


def committed_log(log: str) -> tuple[int, set[int]]:
    last, deleted = -1, set()
    if os.path.exists(log):
        with open(log) as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # the writer is appending this line: it may be cut anywhere
                end, gone = map(int, line.split())
                last = max(last, end)
                if gone >= 0:
                    deleted.add(gone)
    return last, deleted


def reader_failure(k: int, status: int, out: str, err: str) -> str:
    """Everything a failed reader left: its traceback whole (with the causes chained to it),
    what it had seen, and its stderr."""
    try:
        stats = json.loads(out)
    except ValueError:
        stats = {}
    failure = stats.pop("failure", "(no traceback reported)")
    return f"reader {k} exited with {status}\n{failure}\nits stats: {stats}\nits stderr:\n{err}"


def test_writer_two_readers_then_kill_9(tmp_path):
    path, log, stop = str(tmp_path / "t.h5"), str(tmp_path / "log"), str(tmp_path / "stop")
    with h5store.open(path, "w", codec="png") as store:
        store.add_batch(
            [image_of(i) for i in range(5)], labels=[label_of(i) for i in range(5)], ids=range(5)
        )
    with open(log, "w") as fh:
        fh.write("4 -1\n")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, path, log, HERE], stdout=subprocess.PIPE, text=True
    )
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, path, stop, HERE, str(k)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    try:
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(SECONDS)
        # Kill mid-batch: batches are a few ms apart, so wait for the log to move, then a bit.
        before = committed_log(log)[0]
        while committed_log(log)[0] == before and writer.poll() is None:
            time.sleep(0.001)
        time.sleep(0.004)
        writer.send_signal(signal.SIGKILL)
        writer.communicate(timeout=30)
        assert writer.returncode == -signal.SIGKILL
        last, deleted = committed_log(log)
        time.sleep(0.5)  # readers keep going against the dead writer's file
        # The next writer recovers everything committed.
        with h5store.open(path, "a", codec="png") as store:
            ids = set(store.index["id"].tolist())
            assert set(range(last + 1)) <= ids
            for image_id in range(0, last + 1, 7):
                if image_id not in deleted:
                    assert np.array_equal(store[image_id], image_of(image_id)), image_id
            assert not (deleted & set(store.ids().tolist()))
            nxt = max(ids) + 1
            store.add_batch([image_of(nxt)], labels=[label_of(nxt)], ids=[nxt])
        time.sleep(0.3)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        with open(stop, "w"):
            pass
        outputs = [r.communicate(timeout=120) for r in readers]
    for k, (reader, (out, err)) in enumerate(zip(readers, outputs)):
        assert reader.returncode == 0, reader_failure(k, reader.returncode, out, err)
        stats = json.loads(out)
        assert not stats["problems"], stats["problems"]
        assert stats["refreshes"] > 3 and stats["checked"] > 0, stats
        assert stats["max_seen"] > 100, stats  # they did see the writer's work
        print(stats, "writer committed", last + 1)
    with h5store.open(path) as store:
        assert store.verify().ok
        assert nxt in store


def test_refresh_after_a_writer_died_restructuring_keeps_the_current_view(tmp_path):
    path = str(tmp_path / "t.h5")
    with h5store.open(path, "w", codec="png") as store:
        store.add_batch(
            [image_of(i) for i in range(6)], labels=[label_of(i) for i in range(6)], ids=range(6)
        )
    reader = h5store.open(path)
    # A writer killed with SWMR off (creating a class): the file says "open for write" and
    # nobody holds the writer lock.
    code = textwrap.dedent(
        """
        import os, sys, h5py
        f = h5py.File(sys.argv[1], "r+", libver=("v110", "v110"), locking=False)
        f.flush()
        os.kill(os.getpid(), 9)
        """
    )
    subprocess.run([sys.executable, "-c", code, path], check=False)
    try:
        with pytest.raises(h5store.RecoveryNeededError, match="mode 'a'"):
            reader.refresh()
        assert np.array_equal(reader[3], image_of(3))  # the view it had still works
        assert reader.record(3).label == label_of(3)
        recover = textwrap.dedent(
            """
            import sys, h5store
            sys.path.insert(0, sys.argv[2])
            from test_torture import image_of, label_of
            with h5store.open(sys.argv[1], "a", codec="png") as writer:
                writer.add(image_of(6), label=label_of(6), id=6)
            """
        )
        subprocess.run([sys.executable, "-c", recover, path, HERE], check=True)
        reader.refresh()
        assert np.array_equal(reader[6], image_of(6))
    finally:
        reader.close()


def test_a_reader_waits_out_a_writer_restructuring_for_a_bounded_time(tmp_path, monkeypatch):
    """A refresh that meets a writer's restructuring (a FormatError while the writer lock is
    held) retries until READER_RETRY_SECONDS have passed, however many attempts that takes;
    with no writer, a FormatError is damage and is raised at once."""
    from h5store import _file
    from h5store._read import ReadEngine

    path = str(tmp_path / "t.h5")
    with h5store.open(path, "w", codec="png") as store:
        store.add_batch([image_of(i) for i in range(3)], labels=[label_of(i) for i in range(3)])
    reader = h5store.open(path)
    load = ReadEngine._load
    failures = {"left": 0, "seen": 0}

    def racing_load(self, *args):
        if failures["left"]:
            failures["left"] -= 1
            failures["seen"] += 1
            raise h5store.FormatError("the tail is being restructured")
        return load(self, *args)

    monkeypatch.setattr(ReadEngine, "_load", racing_load)
    lock = _file.WriterLock(path, create=False)  # a live writer, as another process's would be
    try:
        failures["left"] = 12  # more attempts than a count-bounded retry made
        reader.refresh()
        assert failures["seen"] == 12 and np.array_equal(reader[2], image_of(2))
        monkeypatch.setattr(_file, "READER_RETRY_SECONDS", 0.3)
        monkeypatch.setattr(h5store.store, "READER_RETRY_SECONDS", 0.3)
        failures.update(left=10**9, seen=0)
        started = time.monotonic()
        with pytest.raises(h5store.FormatError, match="restructured"):
            reader.refresh()
        assert time.monotonic() - started >= 0.3 and failures["seen"] > 4
    finally:
        lock.release()
    failures.update(left=1, seen=0)
    with pytest.raises(h5store.FormatError):
        reader.refresh()  # no writer: raised at the first failure
    assert failures["seen"] == 1
    reader.close()
