"""The fast read paths give the same answers as the plain ones: raw fetch (get_encoded) by every
kind of id, and from a writer whose file grew past its memory map."""

import numpy as np
import pytest
from conftest import photo_crops

import h5store


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
        mapped = len(store._mapped.view)
        new = [int(i) for i in store.add_batch(images[6:12], labels=["a"] * 6)]
        assert int(store.index["offset"][-1]) >= mapped  # the new chunks lie past the map
        assert [store.get_encoded(i) for i in ids[:4]] == [payloads[i] for i in ids[:4]]
        fetched = [store.get_encoded(i) for i in new]
    with h5store.open(path) as store:
        assert [store.get_encoded(i) for i in new] == fetched
