"""Behaviours that only golden files, timing or nothing at all guarded (issue 22 item 8 b, c):
each test here fails when its behaviour breaks."""

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import _strace_escaped, file_after, run_python

import h5store
from h5store import format as fmt
from h5store.folders import export_folder, import_folder

HERE = str(Path(__file__).parent)


def images(n: int, seed: int, shape=(6, 7, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, *shape), dtype=np.uint8)


def test_automatic_ids_continue_after_a_batch_of_explicit_ids(store_path):
    with h5store.open(store_path, "w", codec="png") as store:
        assert store.add_batch(images(2, 1), labels=["a", "b"]).tolist() == [0, 1]
        explicit = store.add_batch(images(10, 2), labels=["a"] * 10, ids=range(10, 20))
        assert explicit.tolist() == list(range(10, 20))
        assert store.add_batch(images(3, 3), labels=["b"] * 3).tolist() == [20, 21, 22]
        assert store.add(images(1, 4)[0], label="a") == 23
    with h5store.open(store_path, "a") as store:  # and after a reopen
        assert store.add_batch(images(2, 5), labels=["a", "b"]).tolist() == [24, 25]
    with h5store.open(store_path) as store:
        assert store.ids().tolist() == [0, 1, *range(10, 26)]
        assert np.array_equal(store[20], images(3, 3)[0])


def test_reading_a_deleted_id_raises_unknown_id(store_path):
    with h5store.open(store_path, "w", codec="png") as store:
        store.add_batch(images(4, 1), labels=["a", "b", "a", "b"])
        store.delete([2])
        assert 2 not in store
    with h5store.open(store_path) as store:
        assert 2 not in store and 2 not in store.ids().tolist()
        for read in (
            lambda: store[2],
            lambda: store.record(2),
            lambda: store.get_encoded(2),
            lambda: store.get_batch([0, 2]),
        ):
            with pytest.raises(h5store.UnknownIdError, match="2"):
                read()
        assert np.array_equal(store[3], images(4, 1)[3])  # its neighbours are unaffected


def test_top1_score_is_the_predicted_classs_entry_of_the_stored_vector(store_path):
    # Labels that are not the vector's argmax: the top-1 score is the predicted class's entry.
    vectors = np.array(
        [[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]], np.float32
    )
    labels = ["a", "b", "a", "c"]
    with h5store.open(
        store_path, "w", codec="png", labels=["a", "b", "c"], argmax_labels=False
    ) as store:
        ids = store.add_batch(images(4, 1), labels=labels, scores=vectors)
    with h5store.open(store_path) as store:
        frame = store.to_pandas(scores=True)
        for k, image_id in enumerate(ids.tolist()):
            record = store.record(image_id)
            entry = vectors[k, store.labels.index(labels[k])]
            assert record.score == entry and np.array_equal(record.scores, vectors[k])
            assert frame.loc[frame["id"] == image_id, "score"].item() == entry
        assert np.array_equal(store.index["score"], vectors[[0, 1, 2, 3], [0, 1, 0, 2]])


KILLED_AFTER_DELETE = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import h5store
    sys.path.insert(0, sys.argv[2])
    from test_guards import images
    path = sys.argv[1]
    with h5store.open(path, "w", codec="png") as store:
        store.add_batch(images(5, 1), labels=["a"] * 5)
    with h5store.open(path, "a", codec="png") as store:
        store.add_batch(images(2, 2), labels=["b"] * 2)
    store = h5store.open(path, "a")
    store.delete([1, 3, 6])
    print("deleted", flush=True)
    time.sleep(60)
    """
)


def test_a_deletion_survives_kill_9_right_after_delete_returns(store_path):
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_AFTER_DELETE, store_path, HERE],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "deleted"
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.communicate(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with h5store.open(store_path, "a") as store:  # recovers the killed writer's file
            assert store.ids().tolist() == [0, 2, 4, 5]
    with h5store.open(store_path) as store:
        assert store.ids().tolist() == [0, 2, 4, 5]
        with pytest.raises(h5store.UnknownIdError):
            store[3]
        assert np.array_equal(store[5], images(2, 2)[0])


KILLED_BEFORE_THE_COMMIT_ROW = textwrap.dedent(
    """
    import os, sys
    import h5store
    from h5store import _file
    sys.path.insert(0, sys.argv[2])
    from test_guards import images
    path, before = sys.argv[1], int(sys.argv[3])
    with h5store.open(path, "w", codec="png") as store:
        store.add_batch(images(before, 1), labels=["a"] * before)
    store = h5store.open(path, "a", codec="png")
    write_rows = _file._write_rows

    def die_at_the_tail(ds, start, rows):
        # The whole /index chunk (old tail rows and the batch's first rows, none with
        # batch_end) has been written and flushed; the rest, with the commit flag, never is.
        if ds.name == "/" + _file.fmt.INDEX_TAIL:
            os._exit(0)
        write_rows(ds, start, rows)

    _file._write_rows = die_at_the_tail
    store.add_batch(images(5, 2), labels=["b"] * 5)
    store.close()  # (where a writer that commits later than add_batch commits it)
    """
)


ONE_MORE_BATCH_THEN_KILLED = textwrap.dedent(
    """
    import os, sys
    import h5store
    sys.path.insert(0, sys.argv[2])
    from test_guards import images
    store = h5store.open(sys.argv[1], "a", codec="png")  # recovers the killed writer's file
    print(len(store))
    store.add_batch(images(1, 3), labels=["c"])
    store.commit()
    os._exit(0)  # no close: the file stays as the batch's commit left it, unsealed
    """
)


def test_rows_of_a_full_index_chunk_without_their_commit_row_never_return(tmp_path):
    path = str(tmp_path / "store.h5")
    before = fmt.INDEX_CHUNK_ROWS - 2  # the 5-image batch fills the chunk and spills 3 rows
    done = run_python(KILLED_BEFORE_THE_COMMIT_ROW, path, HERE, str(before))
    assert done.returncode == 0, done.stderr
    with h5py.File(path, "r", swmr=True, locking=False) as f:  # the kill landed where it should
        assert f[fmt.INDEX].shape[0] == fmt.INDEX_CHUNK_ROWS
        assert f[fmt.INDEX][fmt.INDEX_CHUNK_ROWS - 1]["batch_end"] == 0
    # One more batch, whose commit row would also commit the dead batch's rows if recovery
    # left them in /index before it.
    done = run_python(ONE_MORE_BATCH_THEN_KILLED, path, HERE)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with h5store.open(path, "a", codec="png") as store:
            assert store.ids().tolist() == list(range(before + 1))
    with h5store.open(path) as store:
        assert store.ids().tolist() == list(range(before + 1))
        assert set(store.index["id"].tolist()) == set(range(before + 1))
        assert np.array_equal(store[before], images(1, 3)[0])
        assert store.record(before).label == "c"
        assert store.verify().ok


def test_an_export_folder_moved_elsewhere_imports_again(tmp_path):
    original = tmp_path / "store.h5"
    with h5store.open(original, "w", codec="png") as store:
        ids = store.add_batch(
            images(4, 1), labels=["a", "b", "a", "b"], sources=["s/0", "s/1", None, "s/3"]
        )
        export_folder(store, tmp_path / "out", progress=False)
    index = [p for p in (tmp_path / "out").iterdir() if p.name.startswith("h5store-index")]
    assert index and str(tmp_path) not in index[0].read_text()  # no absolute path inside
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(tmp_path / "out", moved)
    with h5store.open(tmp_path / "back.h5", "w", codec="png") as back:
        assert sorted(import_folder(back, moved, progress=False).tolist()) == ids.tolist()
    with h5store.open(tmp_path / "back.h5") as back, h5store.open(original) as store:
        for image_id in ids.tolist():
            assert np.array_equal(back[image_id], store[image_id])
            assert back.record(image_id).label == store.record(image_id).label
            assert back.record(image_id).source == store.record(image_id).source


# --------------------------------------------------------------------------- sealing the row log

SEAL = textwrap.dedent(
    """
    import os, shutil, sys
    import h5store
    sys.path.insert(0, sys.argv[2])
    from test_guards import images
    path = sys.argv[1]
    store = h5store.open(path, "w", codec="png")
    store.add_batch(images(3, 1), labels=["a"] * 3)
    store.add_batch(images(2, 2), labels=["b"] * 2)
    store.commit()
    rows = store._session.file
    rows.swmr_on().flush()  # as after every commit: the window is the seal alone
    shutil.copy(path, path + ".before")
    os.write(2, b"<window>")
    rows.seal_row_log()
    os.write(2, b"</window>")
    os._exit(0)
    """
)


def _store_pwrites(trace: str, path: str) -> list[tuple[int, bytes]]:
    """The pwrites to ``path`` between the window markers of an ``strace -y`` trace."""
    text = Path(trace).read_text()
    start = text.index(_strace_escaped("<window>"))
    window = text[start : text.index(_strace_escaped("</window>"))]
    escaped = r"((?:\\x[0-9a-f]{2})*)"  # -xx escapes the file's name too
    pattern = rf'pwrite64\(\d+<{escaped}>, "{escaped}", \d+, (\d+)\)'
    return [
        (int(m.group(3)), bytes.fromhex(m.group(2).replace("\\x", "")))
        for m in re.finditer(pattern, window)
        if bytes.fromhex(m.group(1).replace("\\x", "")).decode() == path
    ]


@pytest.fixture(scope="module")
def killed_while_sealing(tmp_path_factory):
    """What each kill point of the seal leaves, opened by the next writer: the ids it finds,
    or the error it raises."""
    if shutil.which("strace") is None:
        pytest.skip("needs strace")
    folder = tmp_path_factory.mktemp("seal")
    path = os.path.realpath(folder / "store.h5")
    trace = str(folder / "trace")
    subprocess.run(
        ["strace", "-f", "-qq", "-y", "-e", "trace=pwrite64,write", "-xx", "-s", "100000000"]
        + ["-o", trace, sys.executable, "-c", SEAL, path, HERE],
        check=True,
        timeout=120,
    )
    writes = _store_pwrites(trace, path)
    assert len(writes) >= 2, "the seal wrote nothing: the test no longer covers it"
    before = Path(path + ".before").read_bytes()
    expected = np.concatenate([images(3, 1), images(2, 2)])
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for k in range(len(writes) + 1):
            replay = folder / f"prefix{k}.h5"
            replay.write_bytes(file_after(before, writes[:k]))
            try:
                with h5store.open(replay, "a", codec="png") as store:
                    ids = store.ids().tolist()
                    exact = all(np.array_equal(store[i], expected[i]) for i in ids)
                    found.append(ids if exact else f"{ids}, pixels differ")
            except h5store.H5StoreError as exc:
                found.append(type(exc).__name__)
            replay.unlink()
    return found


def test_sealing_the_row_log_copies_before_it_empties(killed_while_sealing):
    # Sealing moves the tail's rows to /index at close. Killed at any write, the rows must be
    # in the tail, in /index or in both (copies are dropped by id), never in neither: emptying
    # the tail first loses every row from the first write on.
    opened = [ids for ids in killed_while_sealing if isinstance(ids, list)]
    assert len(opened) >= 3, killed_while_sealing
    assert all(ids == [0, 1, 2, 3, 4] for ids in opened), killed_while_sealing


def test_every_kill_point_of_the_seal_recovers(killed_while_sealing):
    # /index is extended with SWMR on, whose ordered metadata writes keep the file consistent
    # at every write; with SWMR off the resize wrote several metadata blocks, and a kill
    # between them left a file that opened in neither mode.
    assert all(isinstance(ids, list) for ids in killed_while_sealing), killed_while_sealing


@pytest.mark.parametrize("mode", ["r", "a"])
def test_rows_a_killed_seal_left_in_both_tables_are_read_once(tmp_path, mode):
    # The state a writer killed between the seal's two steps leaves: its rows copied into
    # /index and still in the tail. tests/mutants.py's tail-copies-kept showed the replay
    # above never reaches it as a file that opens (those kill points count as errors there).
    path = tmp_path / "store.h5"
    with h5store.open(path, "w", codec="raw") as store:
        ids = store.add_batch(images(5, 1), labels=["a"] * 5).tolist()
    with h5py.File(path, "r+", locking=False) as f:
        rows, tail = f[fmt.INDEX][()], f[fmt.INDEX_TAIL]
        tail.resize(tail.maxshape[0], axis=0)  # a closed 1.2 file's tail has no rows
        tail[: len(rows)] = rows
    with h5store.open(path, mode) as store:
        assert store.ids().tolist() == ids
        assert np.array_equal(store[ids[-1]], images(5, 1)[-1])


KILLED_BEFORE_THE_ROWS_OF_A_NEW_STACK = textwrap.dedent(
    """
    import os, sys
    import h5store
    from h5store import _file
    sys.path.insert(0, sys.argv[2])
    from test_guards import images

    def die_before_the_rows(self, rows):
        print(len(self.f[_file.fmt.STACKS]), flush=True)  # the /stacks rows flushed by now
        os._exit(0)

    _file.WriterFile.append_rows = die_before_the_rows
    store = h5store.open(sys.argv[1], "a", codec="png")
    store.add_batch(images(2, 2, shape=(4, 5)), labels=["a", "a"])  # a new stack of class a
    store.commit()
    """
)


def test_a_stack_made_by_a_batch_that_never_committed_is_removed(tmp_path):
    # Killed after the new stack and its /stacks row were flushed, before any index row: the
    # next writer removes both ("recovery removes objects nothing refers to"), so the file holds
    # what it held before the batch.
    path = str(tmp_path / "store.h5")
    with h5store.open(path, "w", codec="png") as store:
        store.add_batch(images(3, 1), labels=["a"] * 3)
    with h5py.File(path, "r", locking=False) as f:
        stacks_before = f[fmt.STACKS][()]
        objects_before = sorted(f[fmt.CLASSES]["a"])
    done = run_python(KILLED_BEFORE_THE_ROWS_OF_A_NEW_STACK, path, HERE)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(stacks_before) + 1  # the kill landed where it should
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with h5store.open(path, "a", codec="png") as store:
            assert store.ids().tolist() == [0, 1, 2]
    with h5py.File(path, "r", locking=False) as f:
        assert np.array_equal(f[fmt.STACKS][()], stacks_before)
        assert sorted(f[fmt.CLASSES]["a"]) == objects_before


FILLS_THE_TAIL_THEN_KILLED = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import h5store
    from h5store import format as fmt
    store = h5store.open(sys.argv[1], "w", codec="raw")
    n = fmt.INDEX_CHUNK_ROWS  # rows that fill /index_tail exactly: none moved to /index yet
    store.add_batch(np.arange(n, dtype=np.uint8).reshape(n, 1, 1), labels=["a"] * n)
    store.commit()
    os._exit(0)
    """
)


def test_a_full_tail_left_by_a_killed_writer_moves_to_the_index_on_reopen(tmp_path):
    # The next writer moves a full tail into /index before it empties it; resizing /index
    # without the copy would commit a chunk of fill rows (they end the store at row 0).
    path = str(tmp_path / "store.h5")
    done = run_python(FILLS_THE_TAIL_THEN_KILLED, path)
    assert done.returncode == 0, done.stderr
    n = fmt.INDEX_CHUNK_ROWS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with h5store.open(path, "a") as store:
            assert len(store) == n
            store.add(np.zeros((1, 1), np.uint8), label="a")
    with h5store.open(path) as store:
        assert store.ids().tolist() == list(range(n + 1))
        assert int(store[n - 1][0, 0]) == (n - 1) % 256


def test_rows_after_a_hole_in_the_index_never_count_even_with_a_commit_flag(tmp_path):
    # A batch of two whole /index chunks, killed after HDF5 wrote the second (its last row
    # carries the commit flag) but not the first: the first chunk reads as fill rows, which
    # end the committed rows there. Taking the rows after the hole would commit that batch,
    # fill rows and all.
    path = tmp_path / "store.h5"
    h5store.open(path, "w", codec="raw").close()
    n = fmt.INDEX_CHUNK_ROWS
    rows = np.zeros(2 * n, dtype=fmt.INDEX_DTYPE)
    rows["id"] = np.arange(2 * n)
    rows["nbytes"] = 1
    rows["batch_end"][-1] = 1
    with h5py.File(path, "r+", locking=False) as f:
        f[fmt.INDEX].resize(2 * n, axis=0)
        f[fmt.INDEX][n:] = rows[n:]  # the first chunk is never written: fill rows
    for mode in ("r", "a"):
        with h5store.open(path, mode) as store:
            assert len(store) == 0


def test_rows_after_fill_rows_inside_an_index_chunk_never_count(tmp_path):
    # As above, with every chunk of /index there (the rows HDF5 wrote around the fill rows
    # share their chunk): a reader, which takes the columns straight out of the chunks'
    # bytes, ends the committed rows at the first fill row as a writer, which reads the rows,
    # does.
    path = tmp_path / "store.h5"
    with h5store.open(path, "w", codec="raw") as store:
        store.add_batch(np.zeros((3, 4, 4), np.uint8), labels=["a"] * 3)
    n = fmt.INDEX_CHUNK_ROWS
    with h5py.File(path, "r+", locking=False) as f:
        rows = np.resize(f[fmt.INDEX][()], 2 * n)  # copies of the three rows
        rows["id"] = np.arange(2 * n)
        rows["nbytes"][3:6] = 0  # fill rows, then rows of a batch that never committed
        rows["batch_end"] = 0
        rows["batch_end"][[2, -1]] = 1
        f[fmt.INDEX].resize(2 * n, axis=0)
        f[fmt.INDEX][...] = rows
    for mode in ("r", "a"):
        with h5store.open(path, mode) as store:
            assert store.ids().tolist() == [0, 1, 2]
