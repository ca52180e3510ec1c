"""Checksummed reads: a damaged image raises DamagedImageError on every read path, naming it,
while the store's other images read back exactly; verify_reads=False skips the check."""

import os
import pickle

import numpy as np
import pytest
from conftest import photo_crops
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import h5store
from h5store.folders import export_folder

torch = pytest.importorskip("torch")
from h5store.torch import ImageStoreDataset  # noqa: E402

VICTIM = 2


def flip(path, offset, mask=0xFF):
    """XOR one byte of the file in place (``mask`` 0 leaves it as it was)."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ mask]))


def make_store(path, codec="jpeg"):
    """Six same-shape photo crops; returns (ids, decoded originals, payloads, victim's
    payload offset in the file)."""
    images, _ = photo_crops()
    with h5store.open(path, "w", codec=codec) as store:
        ids = store.add_batch(images[:6], labels=["a", "b"] * 3, true_labels=["a"] * 6)
        originals = [store[i] for i in ids]
        payloads = [store.get_encoded(i) for i in ids]
        offset = int(store.index["offset"][VICTIM])
    return ids, originals, payloads, offset


@pytest.fixture
def damaged(store_path):
    ids, originals, payloads, offset = make_store(store_path)
    flip(store_path, offset + len(payloads[VICTIM]) // 2)
    return store_path, ids, originals, payloads


def assert_names_victim(excinfo, ids):
    assert excinfo.value.image_id == int(ids[VICTIM])
    assert f"image {int(ids[VICTIM])} " in str(excinfo.value)


def test_every_store_read_path_refuses_the_damaged_image(damaged):
    path, ids, originals, payloads = damaged
    victim = int(ids[VICTIM])
    with h5store.open(path) as store:
        assert store.verify_reads
        for read in (
            lambda: store[victim],
            lambda: store.get_encoded(victim),
            lambda: store.get_batch([ids[0], victim]),
            lambda: store.get_batch([victim, ids[1]], out=np.zeros((2, 64, 64, 3), np.uint8)),
        ):
            with pytest.raises(h5store.DamagedImageError) as excinfo:
                read()
            assert_names_victim(excinfo, ids)
            assert isinstance(excinfo.value, h5store.H5StoreError)
        others = [i for i in ids.tolist() if i != victim]
        for k, image_id in enumerate(ids.tolist()):
            if image_id == victim:
                continue
            assert np.array_equal(store[image_id], originals[k])
            assert store.get_encoded(image_id) == payloads[k]
        batch = store.get_batch(others, out=np.zeros((len(others), 64, 64, 3), np.uint8))
        assert np.array_equal(batch, np.stack([originals[k] for k in range(6) if k != VICTIM]))
        assert store.verify().damaged == [victim]


def test_export_refuses_the_damaged_image(damaged, tmp_path):
    path, ids, _, payloads = damaged
    with h5store.open(path) as store:
        with pytest.raises(h5store.DamagedImageError) as excinfo:
            export_folder(store, tmp_path / "all", progress=False)
        assert_names_victim(excinfo, ids)
        others = [i for i in ids.tolist() if i != int(ids[VICTIM])]
        assert export_folder(store, tmp_path / "others", ids=others, progress=False) == 5
    root = tmp_path / "others"
    written = {
        int(f.split(".")[0]): (root / d / f).read_bytes()
        for d in os.listdir(root)
        if (root / d).is_dir()  # beside the class folders: the exported index
        for f in os.listdir(root / d)
    }
    assert written == {int(i): payloads[k] for k, i in enumerate(ids) if k != VICTIM}


def test_dataset_item_batch_and_loader_refuse_the_damaged_image(damaged):
    path, ids, originals, _ = damaged
    ds = ImageStoreDataset(path, target="id")
    for read in (
        lambda: ds[VICTIM],
        lambda: ds.batch([0, VICTIM]),
        lambda: ds.__getitems__([VICTIM, 1]),
    ):
        with pytest.raises(h5store.DamagedImageError) as excinfo:
            read()
        assert_names_victim(excinfo, ids)
    image, image_id = ds[0]
    assert image_id == int(ids[0]) and np.array_equal(image.permute(1, 2, 0).numpy(), originals[0])
    images, _ = ds.batch([0, 1, 3])
    assert np.array_equal(
        images.permute(0, 2, 3, 1).numpy(), np.stack([originals[k] for k in (0, 1, 3)])
    )
    # Through a worker process: DataLoader re-raises the worker's exception as the same type.
    with pytest.raises(h5store.DamagedImageError, match=f"image {int(ids[VICTIM])} "):
        for _ in ds.loader(2, num_workers=1):
            pass
    ds.close()


def test_verify_reads_false_returns_the_stored_bytes_unchecked(damaged):
    path, ids, _, payloads = damaged
    victim = int(ids[VICTIM])
    with open(path, "rb") as fh:
        data = fh.read()
    with h5store.open(path, verify_reads=False) as store:
        assert not store.verify_reads
        damaged_bytes = store.get_encoded(victim)
        assert damaged_bytes != payloads[VICTIM] and len(damaged_bytes) == len(payloads[VICTIM])
        assert damaged_bytes in data  # what the file holds now, returned as it is
        with pickle.loads(pickle.dumps(store)) as copy:  # as DataLoader workers (spawn) get it
            assert not copy.verify_reads
    ds = ImageStoreDataset(path, target=None, verify_reads=False)
    assert ds.batch([VICTIM]).shape == (1, 3, 64, 64)
    ds.close()


@pytest.fixture(scope="module")
def raw_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("raw") / "raw.h5")
    ids, originals, payloads, offset = make_store(path, codec="raw")
    return path, ids, originals, payloads, offset


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255), verify=st.booleans())
def test_any_changed_byte_is_caught_or_returned_as_is(raw_store, where, mask, verify):
    """CRC-32 detects every change confined to 32 consecutive bits, so any one changed byte
    in a payload raises; unchecked reads of a raw payload return exactly the changed pixels."""
    path, ids, originals, payloads, offset = raw_store
    at = int(where * len(payloads[VICTIM]))
    flip(path, offset + at, mask)
    try:
        with h5store.open(path, verify_reads=verify) as store:
            if verify:
                with pytest.raises(h5store.DamagedImageError):
                    store[ids[VICTIM]]
            else:
                expected = originals[VICTIM].copy()
                expected.reshape(-1)[at] ^= mask  # raw payloads are the pixels as they are
                assert np.array_equal(store[ids[VICTIM]], expected)
            for k in (0, 1, 3, 4, 5):
                assert np.array_equal(store[ids[k]], originals[k])
    finally:
        flip(path, offset + at, mask)


def test_sharded_view_checks_each_shard(damaged, tmp_path):
    path, ids, originals, payloads = damaged
    other = str(tmp_path / "other.h5")
    with h5store.open(other, "w") as store:
        store.add_batch(photo_crops()[0][:2], labels=["c", "c"], ids=[100, 101])
    with h5store.open([path, other]) as view:
        with pytest.raises(h5store.DamagedImageError) as excinfo:
            view[int(ids[VICTIM])]
        assert_names_victim(excinfo, ids)
        with pytest.raises(h5store.DamagedImageError):
            view.get_batch([100, int(ids[VICTIM])], out=np.zeros((2, 64, 64, 3), np.uint8))
        assert np.array_equal(view[int(ids[0])], originals[0])
        assert view.get_encoded(int(ids[1])) == payloads[1]
    with h5store.open([path, other], verify_reads=False) as view:
        assert len(view.get_encoded(int(ids[VICTIM]))) == len(payloads[VICTIM])
        with pickle.loads(pickle.dumps(view)) as copy:
            assert not copy.verify_reads


def test_a_writer_opens_appends_and_closes_a_store_with_a_damaged_image(damaged):
    path, ids, originals, _ = damaged
    victim = int(ids[VICTIM])
    with h5store.open(path, "a") as store:  # the offset check at open meets the damage
        new = store.add_batch(photo_crops()[0][:2], labels=["a"] * 2)
        # the victim's class loses an image: its preview is redrawn, damaged image included
        store.delete([i for i in store.query(label=store.record(victim).label) if i != victim][:1])
    with h5store.open(path) as store:
        report = store.verify()
        assert report.damaged == [victim] and not report.misplaced
        with pytest.raises(h5store.DamagedImageError):
            store[victim]
        for image_id, original in zip(ids.tolist(), originals):
            if image_id in store and image_id != victim:
                assert np.array_equal(store[image_id], original)
        assert len(store) == 6 + 2 - 1 and int(new[1]) in store
