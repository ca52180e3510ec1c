"""Values h5store reads from the file are checked before they are trusted (the guards the
fuzzer, benchmarks/fuzz.py, called for): a damaged file gives a FormatError naming the
problem, never a wrong image, an IndexError or a hang inside HDF5."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import run_python
from hypothesis import given, settings
from hypothesis import strategies as st

import h5store
from h5store import _sources
from h5store import format as fmt
from h5store.folders import export_folder


@pytest.fixture(scope="module", params=["two sizes", "one size"])
def index_rows(tmp_path_factory, request):
    """The rows, /stacks and label count of a closed store of five stacks (3 classes, 2 sizes),
    or of three (3 classes of one size: one stack a class, in class order)."""
    path = str(tmp_path_factory.mktemp("rows") / "store.h5")
    with h5store.open(path, "w", codec="png") as store:
        store.add_batch(np.zeros((6, 6, 6), np.uint8), labels=["a", "b", "c"] * 2)
        if request.param == "two sizes":
            store.add_batch(np.zeros((2, 4, 4, 3), np.uint8), labels=["a", "b"])
        else:
            store.add_batch(np.zeros((2, 6, 6), np.uint8), labels=["a", "b"])
    with h5py.File(path, "r") as f:
        return fmt.read_index_rows(f), fmt.read_stacks(f), len(fmt.read_labels(f))


@pytest.fixture
def sealed_store(store_path):
    with h5store.open(store_path, "w", codec="png") as store:
        store.add_batch(
            np.arange(4 * 36, dtype=np.uint8).reshape(4, 6, 6),
            labels=["a", "b", "a", "b"],
            sources=["x", "y", "z", "w"],
        )
    return store_path


def _set_row(path, row, **values):
    with h5py.File(path, "r+", locking=False) as f:
        rows = f["index"][()]
        for name, value in values.items():
            rows[name][row] = value
        f["index"][...] = rows


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"stack": 7}, "stack id out of range"),
        ({"label": 9}, "class id out of range"),
        ({"true_label": 5}, "true class id out of range"),
        ({"height": 7}, "height disagrees with its stack"),
        ({"codec": b"jpeg"}, "codec disagrees with its stack"),
        ({"id": 0}, "id repeated"),
        ({"id": -4}, "negative id"),
    ],
)
def test_index_rows_are_checked_before_they_are_trusted(sealed_store, values, message):
    _set_row(sealed_store, 2, **values)
    with pytest.raises(h5store.FormatError, match=message):
        h5store.open(sealed_store)


def test_stacks_table_is_checked(sealed_store):
    with h5py.File(sealed_store, "r+", locking=False) as f:
        table = f["stacks"][()]
        table["label"][0] = 40
        f["stacks"][...] = table
    with pytest.raises(h5store.FormatError, match="/stacks row 0 is damaged"):
        h5store.open(sealed_store)


def test_a_table_replaced_by_a_group_is_named(sealed_store):
    with h5py.File(sealed_store, "r+", locking=False) as f:
        del f["stacks"]
        f.create_group("stacks")
    with pytest.raises(h5store.FormatError, match="/stacks is damaged"):
        h5store.open(sealed_store)


def test_the_tails_header_copied_over_the_index_is_named(sealed_store):
    with h5py.File(sealed_store, "r", locking=False) as f:
        index, tail = (h5py.h5o.get_info(f[name].id).addr for name in ("index", "index_tail"))
        size = h5py.h5o.get_info(f["index_tail"].id).hdr.space.total
    data = Path(sealed_store).read_bytes()
    _write_at(sealed_store, index, data[tail : tail + size])  # a valid header, the wrong one
    with pytest.raises(h5store.FormatError, match="/index is damaged"):
        h5store.open(sealed_store)


def test_an_undecodable_superblock_is_a_format_error(sealed_store):
    # sizes of addresses and lengths, flags (HDF5 raises RuntimeError, not OSError, here)
    _write_at(sealed_store, 9, b"\xc5\x2d\xde\xe3")
    with pytest.raises(h5store.FormatError, match="cannot be opened as HDF5"):
        h5store.open(sealed_store)
    with pytest.raises(h5store.FormatError, match="cannot be opened as HDF5"):
        h5store.open(sealed_store, "a")


def test_damaged_superblock_is_refused_before_hdf5_retries(sealed_store):
    with open(sealed_store, "r+b") as fh:
        fh.seek(11)
        fh.write(b"\x05")  # "open for SWMR write", without fixing the checksum
    with pytest.raises(h5store.FormatError, match="superblock fails its checksum"):
        h5store.open(sealed_store)


def test_hdf5_errors_while_loading_become_format_errors(sealed_store):
    with h5py.File(sealed_store, "r", locking=False) as f:
        chunk = f["labels"].id.get_chunk_info(0)
        start, size = chunk.byte_offset, chunk.size
    with open(sealed_store, "r+b") as fh:
        fh.seek(start)
        fh.write(bytes(size))  # the compressed labels: inflate fails inside HDF5
    with pytest.raises(h5store.FormatError, match="damaged"):
        h5store.open(sealed_store)


def test_sources_replaced_by_another_table_is_named(sealed_store):
    with h5py.File(sealed_store, "r+", locking=False) as f:
        del f["sources"]
        f["sources"] = np.zeros(4, dtype=[("a", "<i4")])
    with h5store.open(sealed_store) as store:
        assert np.array_equal(store[0], np.arange(36, dtype=np.uint8).reshape(6, 6))
        with pytest.raises(h5store.FormatError, match="/sources is damaged"):
            store.record(0)


def test_a_damaged_score_vector_is_caught_by_its_top1(store_path):
    """The predicted class's entry is also the index's top-1 score: a change there is caught
    by that cross-check on every read, even with its /score_crc32 check rewritten to match
    (the per-row checks themselves: tests/test_score_checks.py)."""
    with h5store.open(store_path, "w", codec="png", labels=["a", "b"]) as store:
        store.add_batch(
            np.zeros((3, 4, 4), np.uint8),
            labels=["a", "b", "a"],
            scores=np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], np.float32),
        )
    with h5py.File(store_path, "r+", locking=False) as f:
        f["scores"][1] = [0.3, 0.2]  # the predicted class's entry changed
        f["score_crc32"][1] = fmt.score_checks(f["scores"][1:2])[0]
    with h5store.open(store_path) as store:
        assert store.record(0).scores.tolist() == pytest.approx([0.9, 0.1])
        with pytest.raises(h5store.FormatError, match="score vector of image 1"):
            store.record(1)
        with pytest.raises(h5store.FormatError, match="score vector of image 1"):
            _ = store.scores
        with pytest.raises(h5store.FormatError, match="score vector of image 1"):
            store.to_pandas(scores=True)
        assert store.record(2).scores[1] == pytest.approx(0.4)


# --------------------------------------------------------------------------- sources

SOURCES = ["cam/0.png", None, "", "café/☕.jpg", "cam/4.png"]


@pytest.fixture
def sourced_store(store_path):
    with h5store.open(store_path, "w", codec="png") as store:
        store.add_batch(np.zeros((5, 4, 4), np.uint8), labels=["a"] * 5, sources=SOURCES)
    return store_path


def _zero_chunk(path, name):
    with h5py.File(path, "r", locking=False) as f:
        info = f[name].id.get_chunk_info(0)
    _write_at(path, info.byte_offset, bytes(info.size))


def _write_at(path, offset, data):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def _heap_offset(path, text):
    """Where the bytes of a stored source lie: in HDF5's global heap."""
    return Path(path).read_bytes().index(text.encode())


def test_a_zeroed_sources_chunk_is_an_error_not_no_source(sourced_store):
    # A zeroed string reference reads as "" (no source): only its check tells them apart.
    _zero_chunk(sourced_store, "sources")
    with h5store.open(sourced_store) as store:
        for read in (lambda: store.sources, lambda: store.to_pandas(), lambda: store.record(0)):
            with pytest.raises(h5store.FormatError, match=r"/sources row 0 \(image 0\) is damaged"):
                read()
        with pytest.raises(h5store.FormatError, match=r"/sources row 3 \(image 3\)"):
            store.record(3)
        # rows stored without a source read as they were: their check is that of ""
        assert store.record(1).source is None and store.record(2).source is None
        assert np.array_equal(store[0], np.zeros((4, 4), np.uint8))  # the images are intact


@pytest.mark.parametrize("length", [0, 3])
def test_sources_cut_short_are_an_error_not_no_source(sourced_store, length):
    # Rows past the end of /sources read as no source, unless their check says otherwise.
    with h5py.File(sourced_store, "r+", locking=False) as f:
        f["sources"].resize((length,))
    with h5store.open(sourced_store) as store:
        first = 0 if length == 0 else 3  # the first row whose recorded source is gone
        for read in (lambda: store.sources, lambda: store.to_pandas()):
            with pytest.raises(h5store.FormatError, match=rf"ends before row {first} "):
                read()
        with pytest.raises(h5store.FormatError, match=r"ends before row 3 \(image 3\)"):
            store.record(3)
        assert store.record(2).source is None  # stored without one: its check is that of ""
        if length:
            assert store.record(0).source == SOURCES[0]


def test_a_changed_byte_of_a_source_string_is_an_error(sourced_store):
    _write_at(sourced_store, _heap_offset(sourced_store, "café") + 1, b"b")
    with h5store.open(sourced_store) as store:
        with pytest.raises(h5store.FormatError, match=r"/sources row 3 \(image 3\) is damaged"):
            store.record(3)
        with pytest.raises(h5store.FormatError, match="/source_crc32"):
            store.sources  # noqa: B018 - reading the column is the check
        assert store.record(4).source == "cam/4.png"


HEAP_READER = """
import sys
import h5store
with h5store.open(sys.argv[1]) as store:
    for read in (lambda: store.record(4), lambda: store.sources):
        try:
            read()
        except h5store.FormatError as exc:
            print(exc)
"""


def test_a_zeroed_object_header_in_the_heap_is_an_error_not_a_hang(sourced_store):
    # HDF5 walks every object of a heap collection when it loads it; a zeroed object header
    # (index 0, size 0) made that walk stand still (found by the fuzzer). In a child process,
    # so that a regression fails the test instead of hanging it.
    _write_at(sourced_store, _heap_offset(sourced_store, "cam/4.png") - 16, bytes(16))
    done = run_python(HEAP_READER, sourced_store, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("heap collection at byte") == 2, done.stdout
    assert "object at byte" in done.stdout


def test_a_zeroed_check_chunk_loses_the_check_not_the_answer(sourced_store):
    _zero_chunk(sourced_store, "source_crc32")
    with h5store.open(sourced_store) as store:
        assert store.sources == [s or None for s in SOURCES]


def test_a_source_without_a_check_that_is_not_utf8_is_named(sourced_store):
    with h5py.File(sourced_store, "r+", locking=False) as f:
        del f["source_crc32"]  # as in a format-1.0 file
    _write_at(sourced_store, _heap_offset(sourced_store, "café") + 3, b"\xff")
    with h5store.open(sourced_store) as store:
        with pytest.raises(h5store.FormatError, match="/sources row 3 .* not UTF-8"):
            store.record(3)
        assert store.record(0).source == "cam/0.png"  # unchecked, and intact


def test_a_source_reference_past_the_end_is_refused_before_hdf5_follows_it(sourced_store):
    with h5py.File(sourced_store, "r+", locking=False) as f:
        ds = f["sources"]
        refs = np.frombuffer(ds.id.read_direct_chunk((0,))[1], _sources._VLEN_REFERENCE).copy()
        refs["length"][4] = 2**31  # HDF5 would allocate 2 GB, then fail
        ds.id.write_direct_chunk((0,), refs.tobytes())
    with h5store.open(sourced_store) as store:
        for read in (lambda: store.sources, lambda: store.record(4)):
            with pytest.raises(
                h5store.FormatError, match="/sources row 4 is damaged.*past the end"
            ):
                read()
        assert store.record(0).source == "cam/0.png"


@pytest.mark.parametrize("name", ["sources", "source_crc32"])
def test_a_damaged_header_of_the_sources_or_their_checks_is_an_error(sourced_store, name):
    with h5py.File(sourced_store, "r", locking=False) as f:
        header = h5py.h5o.get_info(f[name].id).addr
    _write_at(sourced_store, header + 6, b"\xff")  # fails the header's checksum
    with h5store.open(sourced_store) as store:
        for read in (lambda: store.sources, lambda: store.record(0)):
            with pytest.raises(h5store.FormatError, match="damaged"):
                read()


def test_source_checks_replaced_by_another_table_are_named(sourced_store):
    with h5py.File(sourced_store, "r+", locking=False) as f:
        del f["source_crc32"]
        f["source_crc32"] = np.zeros(5, np.float32)
    with h5store.open(sourced_store) as store:
        with pytest.raises(h5store.FormatError, match="/source_crc32 is damaged"):
            store.record(0)


def test_the_sharded_view_and_export_get_checked_sources(sourced_store, tmp_path):
    other = tmp_path / "other.h5"
    with h5store.open(other, "w", codec="png") as store:
        store.add_batch(
            np.ones((2, 4, 4), np.uint8), labels=["b"] * 2, ids=[10, 11], sources=["o"] * 2
        )
    _zero_chunk(sourced_store, "sources")
    with h5store.open([sourced_store, other]) as view:
        assert view.record(10).source == "o"
        for read in (lambda: view.record(0), lambda: view.to_pandas()):
            with pytest.raises(h5store.FormatError, match=r"store\.h5: /sources row 0"):
                read()
    with h5store.open(sourced_store) as store:
        with pytest.raises(h5store.FormatError, match=r"/sources row 0 \(image 0\)"):
            export_folder(store, tmp_path / "out", progress=False)


@pytest.mark.parametrize("keep", [0, 3])
def test_an_index_cut_short_is_refused_not_read_as_a_smaller_store(tmp_path, keep):
    """(1.2) /index resized down after a close: its rows are gone, and the file says how many
    it held, so the store is refused instead of reading as a healthy store of ``keep``."""
    path = tmp_path / "s.h5"
    with h5store.open(path, "w", codec="png") as store:
        store.add_batch(np.zeros((5, 4, 4), np.uint8), labels=["a"] * 5)
    with h5store.open(path, "a") as store:  # a second session appends; still counted
        store.add(np.ones((4, 4), np.uint8), label="a")
    with h5py.File(path, "a") as f:
        f["index"].resize((keep,))
    with pytest.raises(h5store.FormatError, match="rows were lost"):
        h5store.open(path)
    with pytest.raises(h5store.FormatError, match="rows were lost"):
        h5store.open(path, "a")


def test_an_index_chunk_that_inflates_short_is_refused(tmp_path):
    """An /index chunk whose stored stream inflates to fewer bytes than a chunk holds (HDF5
    stores whole chunks) would leave rows of whatever memory the buffer held: refused, by a
    reader (columns taken out of the chunks) and a writer (rows made at open) alike."""
    import zlib

    path = tmp_path / "s.h5"
    with h5store.open(path, "w", codec="png") as store:
        n = 2 * fmt.INDEX_CHUNK_ROWS
        store.add_batch(np.zeros((n, 2, 2), np.uint8), labels=["a"] * n)
    with h5py.File(path, "r") as f:
        info = f["index"].id.get_chunk_info(0)
    data = bytearray(Path(path).read_bytes())
    where = slice(info.byte_offset, info.byte_offset + info.size)
    plain = zlib.decompress(data[where])
    short = zlib.compress(plain[: len(plain) // 2], 9)  # half the rows, padded to the size
    assert len(short) <= info.size
    data[where] = short.ljust(info.size, b"\0")
    Path(path).write_bytes(bytes(data))
    for mode in ("r", "a"):
        with pytest.raises(h5store.FormatError, match="inflates to"):
            h5store.open(path, mode)


def test_rows_stored_before_the_first_source_are_checked_as_having_none(store_path):
    # The batch that creates /sources gives the rows stored before it the check of "" (no
    # source): left at 0 ("no check"), a damaged reference there would read another row's
    # source unnoticed.
    with h5store.open(store_path, "w", codec="png") as store:
        store.add_batch(np.zeros((2, 4, 4), np.uint8), labels=["a"] * 2)
        store.commit()  # two commits: one group would store the first rows with "" sources
        store.add_batch(np.zeros((2, 4, 4), np.uint8), labels=["a"] * 2, sources=SOURCES[:2])
    with h5py.File(store_path, "r+", locking=False) as f:
        assert f[fmt.SOURCE_CRC32][:2].tolist() == [fmt.source_check(b"")] * 2
        f[fmt.SOURCES][0] = f[fmt.SOURCES][2]  # row 0 now reads image 2's source
    with h5store.open(store_path) as store:
        with pytest.raises(h5store.FormatError, match=r"/sources row 0 \(image 0\) is damaged"):
            store.record(0)
        assert store.record(1).source is None


#: The index fields check_rows checks one row at a time, as RowsFit does for a block at open.
_ROW_CHECKED = ("stack", "label", "true_label", "id", "deleted", "height", "width", "channels")


@settings(max_examples=400, deadline=None)
@given(
    column=st.sampled_from((*_ROW_CHECKED, "dtype", "codec")), row=st.integers(0, 7), data=st.data()
)
def test_rows_fit_says_no_wherever_check_rows_refuses_a_row(index_rows, column, row, data):
    # A yes from RowsFit skips check_rows at open (only repeated ids are looked for apart).
    rows, stacks, n_labels = index_rows
    rows = rows.copy()
    if column in ("dtype", "codec"):
        value = data.draw(st.sampled_from([b"", b"uint8", b"uint16", b"png", b"jpeg", b"uint8 "]))
    else:
        info = np.iinfo(rows.dtype[column])
        edges = [info.min, info.max, -2, -1, 0, 1, 2, n_labels, len(stacks), 4, 6]
        value = data.draw(
            st.sampled_from([e for e in edges if info.min <= e <= info.max])
            | st.integers(int(info.min), int(info.max))
        )
    rows[column][row] = value
    try:
        fmt.check_rows(rows, stacks, n_labels, "store.h5")
        refused = ""
    except h5store.FormatError as exc:
        refused = str(exc)
    fits = not refused or "id repeated" in refused
    assert fmt.RowsFit(stacks, n_labels)(rows) == fits
    # The same rows as an open that makes no rows checks them: columns, and HDF5's planes of
    # bytes of chunks of 3 rows (the last one's third row past the end: bytes of 0xFF).
    columns = {c: np.ascontiguousarray(rows[c]) for c in fmt.RANGE_COLUMNS}
    planes = _as_planes(rows, 3)
    assert fmt.RowsFit(stacks, n_labels).planes_fit(columns, planes, len(rows)) == fits


def _as_planes(rows, per_chunk):
    """``rows`` as format.read_index_planes hands a block of them over: whole chunks of
    ``per_chunk`` rows, each as HDF5's shuffle stores it (byte k of every row together); the
    rows of the last chunk past the end of ``rows`` hold bytes of 0xFF."""
    chunks = -(-len(rows) // per_chunk)
    raw = np.full((chunks * per_chunk, fmt.INDEX_DTYPE.itemsize), 0xFF, np.uint8)
    raw[: len(rows)] = np.ascontiguousarray(rows).view(np.uint8).reshape(len(rows), -1)
    return np.ascontiguousarray(raw.reshape(chunks, per_chunk, -1).transpose(0, 2, 1))
