"""The fast read paths give the same answers as the plain ones: raw fetch (get_encoded) by every
kind of id, and from a writer whose file grew past its memory map; get_batch inline and on
threads; the index loaded block by block at open, checked as thoroughly as row by row."""

import threading
import time

import h5py
import numpy as np
import pytest
from conftest import photo_crops

import h5store
from h5store import _parallel, _recovery
from h5store import format as fmt


@pytest.fixture
def written(store_path):
    images, _ = photo_crops()
    with h5store.open(store_path, "w", codec="jpeg") as store:
        ids = store.add_batch(images[:6], labels=["a", "b"] * 3)
        payloads = {int(i): store.get_encoded(int(i)) for i in ids}
        store.delete([int(ids[4])])
    return store_path, [int(i) for i in ids], payloads


def test_raw_fetch_takes_python_and_numpy_integers_and_nothing_else(written):
    path, ids, payloads = written
    with h5store.open(path) as store:
        for image_id in ids[:4]:
            got = store.get_encoded(image_id)
            assert type(got) is bytes and got == payloads[image_id]
            assert store.get_encoded(np.int64(image_id)) == got
            assert store.get_encoded(np.uint32(image_id)) == got
        for bad in (ids[4], 10**6, -1, 1.0, "1", None):  # deleted, unknown, not an integer
            with pytest.raises(h5store.UnknownIdError):
                store.get_encoded(bad)
    with pytest.raises(h5store.ClosedStoreError):
        store.get_encoded(ids[0])


def test_raw_fetch_from_a_writer_reaches_images_past_its_first_map(written):
    path, ids, payloads = written
    images, _ = photo_crops()
    with h5store.open(path, "a") as store:
        mapped = len(store.engine.source.view)
        new = [int(i) for i in store.add_batch(images[6:12], labels=["a"] * 6)]
        assert int(store.index["offset"][-1]) >= mapped  # the new chunks lie past the map
        assert [store.get_encoded(i) for i in ids[:4]] == [payloads[i] for i in ids[:4]]
        fetched = [store.get_encoded(i) for i in new]
    with h5store.open(path) as store:
        assert [store.get_encoded(i) for i in new] == fetched


# ---------------------------------------------------------------------------- get_batch


@pytest.fixture
def threads(monkeypatch):
    """Two decoding threads, and a way to make every batch big enough for both."""
    previous = _parallel.get_threads()
    h5store.set_threads(2)
    yield lambda: monkeypatch.setattr(_parallel, "DECODE_BYTES_PER_THREAD", 1)
    h5store.set_threads(previous)


def test_small_batches_decode_inline_and_big_ones_on_threads(written, threads):
    path, ids, _ = written
    live = ids[:4]
    with h5store.open(path) as store:
        nbytes = int(store.index["nbytes"][:4].sum())
        assert _parallel.decode_threads(nbytes) == 1  # a few small JPEGs: not worth a thread
        assert _parallel.decode_threads(64 * _parallel.DECODE_BYTES_PER_THREAD) == 2
        used = set()
        engine = store.engine
        decode = engine.decode
        engine.decode = lambda *args: used.add(threading.get_ident()) or decode(*args)
        inline = store.get_batch(live * 8)
        assert used == {threading.get_ident()}
        threads()
        threaded = store.get_batch(live * 8)
        into = store.get_batch(live * 8, out=np.zeros((32, *inline[0].shape), np.uint8))
    assert all(np.array_equal(a, b) for a, b in zip(inline, threaded, strict=True))
    assert np.array_equal(into, np.stack(inline))


@pytest.mark.parametrize("big", [False, True])
def test_a_damaged_image_fails_its_batch_inline_or_threaded(store_path, threads, big):
    from test_checksums import VICTIM, flip, make_store

    ids, originals, payloads, offset = make_store(store_path)
    flip(store_path, offset + len(payloads[VICTIM]) // 2)
    if big:
        threads()
    batch = [int(i) for i in ids] * 6
    with h5store.open(store_path) as store:
        for out in (None, np.zeros((len(batch), 64, 64, 3), np.uint8)):
            with pytest.raises(h5store.DamagedImageError) as excinfo:
                store.get_batch(batch, out=out)
            assert excinfo.value.image_id == int(ids[VICTIM])


def test_thread_map_keeps_order_and_raises_the_first_failure(threads):
    def square_unless(bad):
        def fn(x):
            if x in bad:
                raise ValueError(x)
            return x * x

        return fn

    items = list(range(1000))
    for n in (1, 2, 3):
        assert _parallel.thread_map(square_unless(()), items, n) == [x * x for x in items]
        for _ in range(20):
            with pytest.raises(ValueError, match="^300$"):
                _parallel.thread_map(square_unless({300, 301, 700, 999}), items, n)


def test_thread_map_does_not_wait_for_a_thread_that_never_gets_to_run(threads):
    # Both pool threads busy elsewhere: the calling thread does the whole batch itself.
    release = threading.Event()
    pool = _parallel._get_pool()
    blockers = [pool.submit(release.wait, 30) for _ in range(2)]
    try:
        started = time.monotonic()
        assert _parallel.thread_map(lambda x: x + 1, list(range(100)), 2) == list(range(1, 101))
        assert time.monotonic() - started < 10
    finally:
        release.set()
        for blocker in blockers:
            blocker.result()


# ---------------------------------------------------------------------------- open


ROWS = 3 * fmt.INDEX_BLOCK_CHUNKS * 512 + 37  # several blocks of /index, and rows in its tail


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """ROWS tiny JPEGs in three classes, some deleted: /index spans several blocks."""
    import imagecodecs

    path = str(tmp_path_factory.mktemp("big") / "big.h5")
    payload = imagecodecs.jpeg8_encode(np.full((8, 8), 90, np.uint8))
    with h5store.open(path, "w", labels=["a", "b", "c"]) as store:
        for start in range(0, ROWS, 5000):
            k = min(5000, ROWS - start)
            store.add_encoded_batch(
                [payload] * k,
                labels=np.arange(start, start + k) % 3,
                true_labels=np.arange(start, start + k) % 2,
                scores=np.linspace(0, 1, k, dtype=np.float32),
            )
        store.delete([5, 9000, ROWS - 1])
    return path


def _stored_rows(path):
    with h5py.File(path, "r", locking=False) as f:
        return _recovery.committed_rows(f["index"][()], f["index_tail"][()])


@pytest.mark.parametrize("n_threads", [1, 3])
def test_the_index_loaded_in_blocks_is_the_stored_one(big_store, n_threads):
    previous = _parallel.get_threads()
    h5store.set_threads(n_threads)
    try:
        with h5store.open(big_store) as store:
            rows = store.index
            assert len(store) == ROWS - 3 and 9000 not in store and 9001 in store
            assert store.query(label="b").tolist() == [
                i for i in range(1, ROWS, 3) if i not in (5, 9000, ROWS - 1)
            ]
            payload = store.get_encoded(ROWS - 2)
            assert store.get_encoded(7) == payload
    finally:
        h5store.set_threads(previous)
    stored = _stored_rows(big_store)
    assert len(stored) == ROWS and len(stored) % 512  # some rows came from /index_tail
    assert rows.tobytes() == stored.tobytes()


DEEP = 2 * fmt.INDEX_BLOCK_CHUNKS * 512 + 100  # a row in the third block of /index


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"stack": 9}, f"row {DEEP} .*stack id out of range"),
        ({"true_label": 3}, f"row {DEEP} .*true class id out of range"),
        ({"width": 9}, f"row {DEEP} .*width disagrees with its stack"),
        ({"dtype": b"uint16"}, f"row {DEEP} .*dtype disagrees with its stack"),
        ({"deleted": 2}, f"row {DEEP} .*deleted flag not 0 or 1"),
        ({"id": 7}, r"row 7 \(id 7\): id repeated"),  # named where the id is first
    ],
)
def test_a_damaged_row_deep_in_the_index_is_named(big_store, tmp_path, values, message):
    path = str(tmp_path / "damaged.h5")
    with open(big_store, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    with h5py.File(path, "r+", locking=False) as f:
        rows = f["index"][()]
        for name, value in values.items():
            rows[name][DEEP] = value
        f["index"][...] = rows
    with pytest.raises(h5store.FormatError, match=message):
        h5store.open(path)


def test_rows_naming_a_stack_newer_than_the_first_look_at_the_tables_open(big_store, monkeypatch):
    # As when a writer adds a class between the reader's first read of /stacks and its read
    # of the rows: the quick check says no, the row-by-row check against the tables read
    # after the rows finds them all fine.
    seen = []
    quick = fmt.RowsFit

    def stale(stacks, n_labels):
        seen.append(len(stacks))
        return quick(stacks[:1], n_labels)

    monkeypatch.setattr(fmt, "RowsFit", stale)
    with h5store.open(big_store) as store:
        assert len(store) == ROWS - 3
    assert seen == [3]


def _stale_at_first(monkeypatch, name, keep):
    """fmt.<name> (read_stacks or read_labels) answering its first call with the first
    ``keep`` entries only, as a read made before a writer appended the rest would; the number
    of calls so far in the list returned."""
    read, calls = getattr(fmt, name), []

    def first_stale(f):
        calls.append(name)
        value = read(f)
        return value[:keep] if len(calls) == 1 else value

    monkeypatch.setattr(fmt, name, first_stale)
    return calls


def test_rows_that_fit_the_tables_read_before_them_are_catalogued_from_that_read(
    big_store, monkeypatch
):
    # /stacks and /labels are read once: every row names a stack of that read, and a second
    # read (of a file no writer changes) would give the same tables.
    stacks_read = _stale_at_first(monkeypatch, "read_stacks", None)
    labels_read = _stale_at_first(monkeypatch, "read_labels", None)
    with h5store.open(big_store) as store:
        assert len(stacks_read) == 1 and len(labels_read) == 1
        assert store.labels == ("a", "b", "c") and len(store) == ROWS - 3
        with h5py.File(big_store, "r", locking=False) as f:
            assert np.array_equal(store._engine.catalog.table, f["stacks"][()])
        assert len(store.query(label="c")) == len([i for i in range(2, ROWS, 3) if i != 5])
        assert store[2].shape == (8, 8)  # (class c)


def test_rows_naming_a_class_added_after_the_first_look_at_the_tables_open(big_store, monkeypatch):
    # As when a writer adds classes (labels, stacks, rows in them) between the reader's first
    # read of /stacks and /labels and its read of the rows: the rows of the new classes do not
    # fit that read, so the tables are read again after the rows, and the store holds every
    # class its rows name. (Kept as the catalogue, the first read would refuse the rows.)
    stacks_read = _stale_at_first(monkeypatch, "read_stacks", 1)
    labels_read = _stale_at_first(monkeypatch, "read_labels", 1)
    with h5store.open(big_store) as store:
        assert len(stacks_read) == 2 and len(labels_read) == 2
        assert store.labels == ("a", "b", "c") and len(store) == ROWS - 3
        assert len(store.query(label="c")) > 0 and store[2].shape == (8, 8)


def test_a_reader_makes_index_rows_only_where_asked_for_them(big_store):
    # Images, raw fetches and queries need the index's columns, not its rows, which the open
    # no longer makes: they are made chunk by chunk where asked for (record, take), and all
    # of them for the whole table.
    with h5store.open(big_store) as store:
        unread = store._engine.index._unread
        chunks = len(unread.stored)
        assert store[7].shape == (8, 8) and len(store.get_batch([1, 2, 3])) == 3
        assert len(store.query(label="b")) and store.get_encoded(9)
        assert unread.left == chunks
        assert store.record(9001).id == 9001
        assert unread.left == chunks - 1
        assert store.index.tobytes() == _stored_rows(big_store).tobytes()
        assert store._engine.index._unread is None


def test_index_rows_asked_for_on_many_threads_at_once_are_the_stored_ones(big_store):
    from concurrent.futures import ThreadPoolExecutor

    stored = _stored_rows(big_store)
    ids = np.random.default_rng(0).permutation(
        [i for i in range(ROWS) if i not in (5, 9000, ROWS - 1)]
    )
    with h5store.open(big_store) as store, ThreadPoolExecutor(4) as pool:
        records = list(pool.map(store.record, ids[:400].tolist()))
    for image_id, record in zip(ids[:400].tolist(), records):
        assert record.position == int(stored["position"][image_id]) and record.id == image_id


def test_a_sharded_view_decodes_the_same_inline_and_on_threads(tmp_path, threads):
    from shards_util import write_shards

    with h5store.open(write_shards(tmp_path)) as view:
        ids = view.ids()[::-1]
        one_by_one = [view[int(i)] for i in ids]
        inline = view.get_batch(ids)
        threads()
        threaded = view.get_batch(ids)
        into = view.get_batch(ids, out=np.zeros((len(ids), *one_by_one[0].shape), np.uint8))
    for k, image in enumerate(one_by_one):
        assert np.array_equal(inline[k], image) and np.array_equal(threaded[k], image)
        assert np.array_equal(into[k], image)


@pytest.mark.parametrize("n", [0, 1, 5000])
def test_zeroed_arrays_are_zeroed_writable_and_their_own(n):
    a, b = fmt.zeroed_array(n, fmt.INDEX_DTYPE), fmt.zeroed_array(n, fmt.INDEX_DTYPE)
    assert a.shape == (n,) and a.dtype == fmt.INDEX_DTYPE and a.flags.writeable
    assert not a.view(np.uint8).any()
    a["id"] = 7
    assert not b.view(np.uint8).any() and (a["id"] == 7).all()
