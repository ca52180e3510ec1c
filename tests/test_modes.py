"""Opening in every mode, as h5py does, and what each mode allows."""

import os

import numpy as np
import pytest
from conftest import file_digest

import h5store

IMG = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)


def make(path, n=2):
    with h5store.open(path, "w", codec="raw") as store:
        store.add_batch([IMG] * n, labels=["a"] * n)


def test_read_mode_reads_and_refuses_writes(store_path):
    make(store_path)
    before = file_digest(store_path)
    with h5store.open(store_path) as store:
        assert len(store) == 2 and np.array_equal(store[0], IMG)
        assert not store.writable
        with pytest.raises(h5store.ReadOnlyError):
            store.add(IMG, label="a")
        with pytest.raises(h5store.ReadOnlyError):
            store.delete(0)
        with pytest.raises(PermissionError):  # ReadOnlyError is a PermissionError too
            store.add_labels(["b"])
    assert file_digest(store_path) == before


def test_r_plus_and_a_append(store_path):
    make(store_path)
    with h5store.open(store_path, "r+") as store:
        store.add(IMG, label="b")
    with h5store.open(store_path, "a") as store:
        store.add(IMG, label="c")
    with h5store.open(store_path) as store:
        assert list(store) == [0, 1, 2, 3] and store.labels == ("a", "b", "c")


def test_a_creates_and_w_truncates(store_path):
    with h5store.open(store_path, "a", codec="raw") as store:
        store.add(IMG, label="a")
    with h5store.open(store_path, "w", codec="raw") as store:
        assert len(store) == 0 and store.labels == ()
    with h5store.open(store_path) as store:
        assert len(store) == 0


def test_x_refuses_an_existing_file(store_path):
    make(store_path)
    before = file_digest(store_path)
    for mode in ("x", "w-"):
        with pytest.raises(h5store.StoreExistsError):
            h5store.open(store_path, mode)
    assert file_digest(store_path) == before
    other = store_path + ".new"
    with h5store.open(other, "x") as store:
        assert store.writable


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_missing_file(tmp_path, mode):
    missing = tmp_path / "missing.h5"
    with pytest.raises(h5store.StoreNotFoundError):
        h5store.open(missing, mode)
    assert not missing.exists()


def test_bad_mode(store_path):
    with pytest.raises(h5store.InvalidInputError, match="mode"):
        h5store.open(store_path, "rw")
    assert not os.path.exists(store_path)


def test_closed_store_refuses_use(store_path):
    make(store_path)
    store = h5store.open(store_path)
    store.close()
    store.close()  # closing twice is harmless
    assert store.closed
    with pytest.raises(h5store.ClosedStoreError):
        store[0]
    assert "closed" in repr(store)


def test_default_codec_applies_to_new_classes_only(store_path):
    with h5store.open(store_path, "w", codec="png") as store:
        store.add(IMG, label="a")
    with h5store.open(store_path, "a", codec="raw") as store:
        store.add(IMG, label="a")
        store.add(IMG, label="b")
        assert store.codec_of("a").codec_id == "png" and store.codec_of("b").codec_id == "raw"
    with h5store.open(store_path) as store:
        assert [store.record(i).codec for i in store] == ["png", "png", "raw"]
