"""Every way in records the CRC-32 of exactly the bytes it stored.

The CRC is checked against zlib (not the library the store uses) over the chunk as HDF5 holds
it (a direct chunk read, not h5store's memory map), and verify() passes after each path.
"""

import zlib

import h5py
import imagecodecs
import numpy as np
import pytest
from conftest import photo_crops

import h5store
from h5store.folders import import_folder


def _check_crcs(path, ids) -> None:
    with h5store.open(path) as store:
        assert store.verify().ok
        records = [store.record(int(i)) for i in ids]
        encoded = [store.get_encoded(int(i)) for i in ids]
    with h5py.File(path, "r", locking=False) as f:
        for rec, payload in zip(records, encoded):
            stack = f[rec.stack]
            _, chunk = stack.id.read_direct_chunk((rec.position,) + (0,) * (stack.ndim - 1))
            assert chunk == payload, rec.id
            assert zlib.crc32(chunk) == rec.crc32, rec.id
            assert len(chunk) == rec.nbytes, rec.id


@pytest.mark.parametrize("codec", ["jpeg", "png", "zstd"])
def test_add_and_add_batch_record_the_crc_of_the_stored_bytes(store_path, codec):
    images, _ = photo_crops()
    with h5store.open(store_path, "w", codec=codec) as store:
        ids = list(store.add_batch(images[:5], labels=["a"] * 5))
        ids.append(store.add(images[5], label="b"))
    _check_crcs(store_path, ids)


def test_add_encoded_and_add_encoded_batch_record_the_crc_of_the_stored_bytes(store_path):
    images, _ = photo_crops()
    jpegs = [imagecodecs.jpeg8_encode(image, level=85) for image in images[:4]]
    with h5store.open(store_path, "w", codec="jpeg") as store:
        ids = list(store.add_encoded_batch(jpegs[:3], labels=["a"] * 3))
        ids.append(store.add_encoded(jpegs[3], label="b"))
        # a batch large enough for the threaded CRC path
        noise = np.random.default_rng(1).integers(0, 255, (40, 256, 256, 3), dtype=np.uint8)
        big = [imagecodecs.jpeg8_encode(image, level=100) for image in noise]
        assert sum(map(len, big)) > 4 << 20
        ids.extend(store.add_encoded_batch(big, labels=["c"] * len(big)))
    with h5store.open(store_path) as store:
        assert [store.get_encoded(i) for i in ids] == [*jpegs, *big]
    _check_crcs(store_path, ids)


def test_import_records_the_crc_of_the_stored_bytes(tmp_path):
    images, _ = photo_crops()
    root = tmp_path / "tree"
    for k, image in enumerate(images[:6]):
        folder = root / ("cat" if k % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        if k < 4:  # JPEG files go in as they are, PNG files are decoded and re-encoded
            (folder / f"{k}.jpg").write_bytes(imagecodecs.jpeg8_encode(image, level=90))
        else:
            (folder / f"{k}.png").write_bytes(imagecodecs.png_encode(image))
    path = tmp_path / "imported.h5"
    with h5store.open(path, "w", codec="jpeg") as store:
        ids = import_folder(store, root, progress=False)
    assert len(ids) == 6
    _check_crcs(path, ids)
