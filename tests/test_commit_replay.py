"""Recovery from every point at which kill -9 can stop a writer committing a batch.

kill -9 stops a process between two system calls, so what a killed writer leaves is the file
before the batch plus a prefix of the writes made while committing it. A writer is traced with
strace while it adds one batch (into an existing stack; and one that makes /index_tail spill
into /index; and, with group commit, a group of several add calls made durable by commit());
every prefix of its writes is replayed onto the file as it was before, and each
result must recover with every committed image intact and the batch either whole or absent.
(test_reliability kills at random moments, which rarely land on a given write.)
"""

import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import file_after, pwrites_in_window, run_python

import h5store
from h5store import format as fmt

BATCH = 5


#: Rows committed before the traced batch (few, or enough that the batch overflows the tail),
#: whether every batch has sources (/sources and /source_crc32 written with the rows), and
#: whether the batch is one call committed in it (durability "call") or a group of calls
#: committed by commit() (durability "group": the group lands whole or not at all).
SCENARIOS = {
    "existing-stack": (7, False, "call"),
    "tail-overflow": (fmt.INDEX_CHUNK_ROWS - 2, False, "call"),
    "sources": (7, True, "call"),
    "group-of-calls": (7, True, "group"),
}


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 6, 7, 3), dtype=np.uint8)


def sources(start: int, n: int, with_sources: bool) -> list[str | None] | None:
    """The sources of rows start..start+n: None every third row (stored as no source)."""
    if not with_sources:
        return None
    return [None if k % 3 == 2 else f"img/{k}.png" for k in range(start, start + n)]


WRITER = textwrap.dedent(
    """
    import os, shutil, sys
    import numpy as np
    import h5store
    sys.path.insert(0, sys.argv[3])
    from test_commit_replay import BATCH, images, sources
    path, before, with_sources = sys.argv[1], int(sys.argv[2]), sys.argv[4] == "1"
    durability = sys.argv[5]
    with h5store.open(path, "w", codec="png") as store:
        old = images(before, 1)
        for start in range(0, before, 64):
            n = len(old[start : start + 64])
            store.add_batch(
                old[start : start + 64], labels=["c"] * n, sources=sources(start, n, with_sources)
            )
    store = h5store.open(path, "a", durability=durability)
    store._file.flush()
    shutil.copy(path, path + ".before")
    new, new_sources = images(BATCH, 2), sources(before, BATCH, with_sources)
    if durability == "call":
        os.write(2, b"<window>")
        store.add_batch(new, labels=["c"] * BATCH, sources=new_sources)
    else:  # the calls write nothing; commit() writes the group
        store.add_batch(new[:2], labels=["c"] * 2, sources=new_sources and new_sources[:2])
        for k in range(2, BATCH):
            store.add(new[k], label="c", source=new_sources and new_sources[k])
        os.write(2, b"<window>")
        store.commit()
    os.write(2, b"</window>")
    os._exit(0)  # no close: the window is the batch and nothing after it
    """
)


def traced_writes(
    path: str, before: int, with_sources: bool, durability: str
) -> list[tuple[int, bytes]]:
    args = [path, str(before), str(Path(__file__).parent), "1" if with_sources else "0"]
    args.append(durability)
    return pwrites_in_window(WRITER, args, path + ".trace", timeout=300)


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_prefix_of_a_commit_recovers_to_before_or_after_the_batch(tmp_path, scenario):
    committed, with_sources, durability = SCENARIOS[scenario]
    path = str(tmp_path / "store.h5")
    writes = traced_writes(path, committed, with_sources, durability)
    assert len(writes) >= 3, writes
    before = Path(path + ".before").read_bytes()
    old, new = images(committed, 1), images(BATCH, 2)
    crashed = tmp_path / "crashed.h5"
    outcomes = []
    for n in range(len(writes) + 1):
        crashed.write_bytes(file_after(before, writes[:n]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            with h5store.open(crashed, "a") as store:  # recovers
                report = store.verify()
                assert report.ok, (n, str(report))
                landed = len(store) == committed + BATCH
                assert landed or len(store) == committed, (n, len(store))
                for k in (0, committed // 2, committed - 1):
                    assert np.array_equal(store[k], old[k]), (n, k)
                if landed:
                    for k in range(BATCH):
                        assert np.array_equal(store[committed + k], new[k]), (n, k)
                extra = store.add(old[0], label="c")
        with h5store.open(crashed) as store:
            assert store.verify().ok, n
            assert np.array_equal(store[extra], old[0]), n
            assert len(store) == (committed + BATCH if landed else committed) + 1, n
            if with_sources:  # each checked against /source_crc32; none inherited
                rows = committed + BATCH if landed else committed
                assert store.sources == [*sources(0, rows, True), None], n
        outcomes.append(landed)
    # the batch is absent until one write commits it, and present from then on
    assert outcomes[0] is False and outcomes[-1] is True
    assert outcomes == sorted(outcomes), outcomes


NO_COMMIT_FLAG = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import h5store
    from h5store import _file
    sys.path.insert(0, sys.argv[2])
    from test_commit_replay import BATCH, images
    path = sys.argv[1]
    with h5store.open(path, "w", codec="png") as store:
        store.add_batch(images(7, 1), labels=["c"] * 7)
    append_rows = _file.WriterFile.append_rows

    def without_commit_flag(self, rows):
        rows = rows.copy()
        rows["batch_end"] = 0
        append_rows(self, rows)  # every row of the batch is on disk, its commit flag is not
        self.flush()
        os._exit(0)

    _file.WriterFile.append_rows = without_commit_flag
    store = h5store.open(path, "a")
    store.add_batch(images(BATCH, 2), labels=["c"] * BATCH)
    """
)


def test_a_batch_whose_commit_flag_never_landed_is_dropped_on_reopen(tmp_path):
    path = tmp_path / "store.h5"
    done = subprocess.run(
        [sys.executable, "-c", NO_COMMIT_FLAG, str(path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with h5store.open(path, "a") as store:
            assert len(store) == 7 and store.verify().ok
            assert list(store) == list(range(7))
            again = store.add_batch(images(2, 3), labels=["c"] * 2)
    assert again.tolist() == [7, 8]  # the dropped batch's ids are free again
    with h5store.open(path) as store:
        assert store.verify().ok and len(store) == 9
        assert np.array_equal(store[8], images(2, 3)[1])
        assert store.record(8).position == 8  # its chunks were removed, not skipped
        for k in range(7):
            assert np.array_equal(store[k], images(7, 1)[k])


DEAD_BEFORE_ITS_ROWS = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import h5store
    from h5store import _file
    sys.path.insert(0, sys.argv[2])
    from test_commit_replay import images
    path = sys.argv[1]
    with h5store.open(path, "w", codec="png", labels=["c", "d"]) as store:
        store.add_batch(images(3, 1), labels=["c"] * 3, scores=np.full((3, 2), 0.5, np.float32),
                        sources=["a", "b", "c"])

    def die(self, rows):
        self.flush()  # its score vectors and sources are on disk, its rows never will be
        os._exit(0)

    _file.WriterFile.append_rows = die
    store = h5store.open(path, "a")
    store.add_batch(images(4, 2), labels=["d"] * 4, scores=np.full((4, 2), 0.25, np.float32),
                    sources=["dead/0", "dead/1", "dead/2", "dead/3"])
    """
)


def test_a_dead_batchs_score_vectors_and_sources_are_not_inherited(tmp_path):
    path = tmp_path / "store.h5"
    done = run_python(DEAD_BEFORE_ITS_ROWS, str(path), str(Path(__file__).parent))
    assert done.returncode == 0, done.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with h5store.open(path, "a") as store:
            assert len(store) == 3
            store.add_batch(images(2, 3), labels=["c", "d"])  # no scores, no sources
            store.add_batch(images(1, 4), labels=["d"], sources=["new"])
    with h5store.open(path) as store:
        assert store.sources == ["a", "b", "c", None, None, "new"]
        assert np.isnan(store.scores[3:]).all()
        assert store.record(4).source is None and store.record(4).scores is None
