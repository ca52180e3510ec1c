"""Values h5store reads from the file are checked before they are trusted (the guards the
fuzzer, benchmarks/fuzz.py, called for): a damaged file gives a FormatError naming the
problem, never a wrong image, an IndexError or a hang inside HDF5."""

import h5py
import numpy as np
import pytest

import h5store


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
    with h5store.open(store_path, "w", codec="png", labels=["a", "b"]) as store:
        store.add_batch(
            np.zeros((3, 4, 4), np.uint8),
            labels=["a", "b", "a"],
            scores=np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], np.float32),
        )
    with h5py.File(store_path, "r+", locking=False) as f:
        f["scores"][1] = [0.3, 0.2]  # the predicted class's entry changed
        f["scores"][2] = [0.6, 0.5]  # another entry: not caught (no checksum on /scores)
    with h5store.open(store_path) as store:
        assert store.record(0).scores.tolist() == pytest.approx([0.9, 0.1])
        with pytest.raises(h5store.FormatError, match="score vector of image 1"):
            store.record(1)
        assert store.record(2).scores[1] == pytest.approx(0.5)
