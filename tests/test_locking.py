"""``h5store.open(..., locking=)``: HDF5's file-locking switch for readers, the writer lock's
policy for writers; and h5py and h5store opening the same file in one process."""

import errno
import fcntl
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import h5store
from h5store import _file
from h5store._file import WriterLock


@pytest.fixture
def small_store(store_path):
    with h5store.open(store_path, "w", codec="png") as store:
        store.add_batch(np.arange(48, dtype=np.uint8).reshape(3, 4, 4), labels=["a", "b", "a"])
    return store_path


@pytest.mark.parametrize("h5py_locking", ["default", True, "best-effort", False])
def test_reading_a_file_h5py_has_open_in_this_process(small_store, h5py_locking):
    kwargs = {} if h5py_locking == "default" else {"locking": h5py_locking}
    with h5py.File(small_store, "r", **kwargs) as f:
        assert "index" in f
        with h5store.open(small_store) as store:  # matches h5py's setting
            assert np.array_equal(store[1], np.arange(16, 32, dtype=np.uint8).reshape(4, 4))
        assert f["index"].shape[0] == 3  # h5py's handle still works


def test_a_mismatched_explicit_locking_says_which_flag_to_pass(small_store):
    with h5py.File(small_store, "r"):
        with pytest.raises(h5store.StoreLockedError, match=r"locking=False"):
            h5store.open(small_store, locking=False)


@pytest.mark.parametrize("h5py_locking", ["default", False])
def test_writing_while_h5py_has_the_file_open_says_close_it(small_store, h5py_locking):
    kwargs = {} if h5py_locking == "default" else {"locking": h5py_locking}
    with h5py.File(small_store, "r", **kwargs):
        with pytest.raises(h5store.StoreLockedError, match="close"):
            h5store.open(small_store, "a")
    with h5store.open(small_store, "a") as store:  # and once it is closed, it works
        store.add(np.zeros((4, 4), np.uint8), label="c")


def test_bad_locking_value(small_store):
    with pytest.raises(h5store.InvalidInputError, match="best-effort"):
        h5store.open(small_store, locking="sometimes")


READER = textwrap.dedent(
    """
    import sys, h5store
    try:
        with h5store.open(sys.argv[1], locking={locking}) as s:
            print("read", len(s))
    except h5store.H5StoreError as exc:
        print(type(exc).__name__, exc)
    """
)


@pytest.mark.parametrize("locking", ["None", "False", "True", "'best-effort'"])
def test_readers_in_other_processes_while_a_writer_is_open(small_store, locking):
    with h5store.open(small_store, "a") as writer:
        writer.add(np.zeros((4, 4), np.uint8), label="c")
        writer.commit()  # readers see commits
        out = subprocess.run(
            [sys.executable, "-c", READER.format(locking=locking), small_store],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    if locking in ("None", "False"):
        assert out.startswith("read 4"), out
    else:  # HDF5's own lock excludes readers while a writer has the file
        assert out.startswith("StoreLockedError") and "locking=None" in out, out


def test_locking_false_writer_takes_no_lock(small_store):
    with h5store.open(small_store, "a", locking=False) as store:
        assert not WriterLock.is_held(small_store)
        store.add(np.zeros((4, 4), np.uint8), label="c")
    with h5store.open(small_store, "a") as store:
        assert WriterLock.is_held(small_store)
        assert len(store) == 4


def _no_flock(*_args):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))


def test_file_system_without_flock(small_store, monkeypatch):
    """Lustre without -o flock answers flock with ENOSYS/ENOLCK; mocked at the one call."""
    monkeypatch.setattr(_file.fcntl, "flock", _no_flock)
    with pytest.raises(
        h5store.StoreLockedError, match="does not support flock.*docs/reliability.md"
    ):
        h5store.open(small_store, "a")
    with pytest.warns(RuntimeWarning, match="without the writer lock"):
        store = h5store.open(small_store, "a", locking="best-effort")
    with store:
        store.add(np.zeros((4, 4), np.uint8), label="c")
    monkeypatch.setattr(_file.fcntl, "flock", fcntl.flock)
    with h5store.open(small_store) as store:
        assert len(store) == 4


def test_without_the_lock_a_dead_writer_is_not_assumed_dead(small_store):
    code = textwrap.dedent(
        """
        import sys, numpy as np, h5store
        s = h5store.open(sys.argv[1], "a")
        s.add(np.zeros((4, 4), np.uint8), label="c")
        s.commit()
        print("ready", flush=True)
        sys.stdin.read()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, small_store],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with pytest.raises(h5store.StoreLockedError, match="h5clear"):
        h5store.open(small_store, "a", locking=False)
    with h5store.open(small_store, "a") as store:  # with the lock it is known dead: recovered
        assert len(store) == 4
