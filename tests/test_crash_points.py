"""Every point at which kill -9 can stop a writer that is creating HDF5 objects.

kill -9 stops a process between two system calls, so the file a killed writer leaves is the
file before an operation plus some prefix of the writes HDF5 made during it. The writer below
is traced with strace while it creates a class group, a stack or /scores; every prefix of its
writes is then replayed onto the file as it was before, and recovery must open each one
without losing a committed image. (Random kill times, in test_reliability, rarely land in
these few milliseconds.)
"""

import shutil
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import file_after, pwrites_in_window

import h5store

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")

STORED_PER_CLASS = 5

TRACED_WRITER = textwrap.dedent(
    """
    import os, sys, numpy as np, h5store
    from h5store import format as fmt, _file
    path, classes, operation = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    N = STORED_PER_CLASS
    rng = np.random.default_rng(0)
    names = [f"c{k}" for k in range(classes)] + ["new class"]
    with h5store.open(path, "w", codec="png", labels=names) as store:
        for name in names[:-1]:
            images = rng.integers(0, 255, (N, 12, 12, 3), dtype=np.uint8)
            store.add_batch(images, labels=[name] * N)
    hooked_name = {"class": "create_class", "stack": "create_stack",
                   "scores": "ensure_scores", "sources": "ensure_sources"}[operation]
    original = getattr(fmt, hooked_name)
    armed = []

    def hooked(f, *args, **kwargs):
        f.flush()
        with open(path + ".before", "wb") as fh:
            fh.write(open(path, "rb").read())
        armed.append(True)
        os.write(2, b"<window>")
        return original(f, *args, **kwargs)

    setattr(fmt, hooked_name, hooked)
    flush = _file.WriterFile.flush

    def flush_then_die(self):
        flush(self)
        if armed:  # the object-creating step ends with this flush
            os.write(2, b"</window>")
            os._exit(0)

    _file.WriterFile.flush = flush_then_die
    store = h5store.open(path, "a")
    if operation == "class":
        images = rng.integers(0, 255, (3, 12, 12, 3), dtype=np.uint8)
        store.add_batch(images, labels=["new class"] * 3)
    elif operation == "stack":
        store.add_batch(rng.integers(0, 255, (3, 9, 7), dtype=np.uint8), labels=["c0"] * 3)
    elif operation == "scores":
        store.add_batch(rng.integers(0, 255, (3, 12, 12, 3), dtype=np.uint8), labels=["c0"] * 3,
                        scores=np.eye(3, classes + 1)[[0, 0, 0]])
    else:  # /sources and /source_crc32
        store.add_batch(rng.integers(0, 255, (3, 12, 12, 3), dtype=np.uint8), labels=["c0"] * 3,
                        sources=["a", None, "c"])
    store.commit()
    """.replace("STORED_PER_CLASS", str(STORED_PER_CLASS))
)


def writes_in_window(path: str, classes: int, operation: str) -> list[tuple[int, bytes]]:
    args = [path, str(classes), operation]
    return pwrites_in_window(TRACED_WRITER, args, path + ".trace", timeout=120)


@pytest.mark.parametrize("operation", ["class", "stack", "scores", "sources"])
@pytest.mark.parametrize("classes", [2, 9])
def test_a_writer_killed_while_creating_objects_loses_nothing(tmp_path, operation, classes):
    path = str(tmp_path / "store.h5")
    writes = writes_in_window(path, classes, operation)
    assert len(writes) >= 3, writes  # the operation is spread over several writes
    before = Path(path + ".before").read_bytes()
    committed = classes * STORED_PER_CLASS
    crashed = str(tmp_path / "crashed.h5")
    for n in range(len(writes) + 1):
        Path(crashed).write_bytes(file_after(before, writes[:n]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            with h5store.open(crashed, "a") as store:  # recovers
                assert store.verify().ok, n
                assert len(store) == committed, n
                store.add(np.zeros((9, 7), np.uint8), label="c0")
                store.add(np.zeros((12, 12, 3), np.uint8), label="new class")
                store.add(
                    np.zeros((12, 12, 3), np.uint8), label="c1", score=np.full(classes + 1, 0.5)
                )
                store.add(np.zeros((12, 12, 3), np.uint8), label="c1", source="s")
            with h5store.open(crashed) as store:
                assert store.verify().ok and len(store) == committed + 4, n
                assert store.sources == [None] * (committed + 3) + ["s"], n
