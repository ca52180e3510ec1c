"""A reader's memory map is populated (every page mapped, no fault on a first read) by a
helper thread once the index is read, so that the open does not wait for it (issue 20, 6)."""

import os

import numpy as np
import pytest

import h5store
from h5store import _file

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/smaps"), reason="Linux: the map's resident size is read"
)


def _resident_bytes(path) -> int:
    """Bytes of ``path``'s maps in this process that have page-table entries (smaps Rss)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a map's header line
                inside = line.rstrip().endswith(str(path))
            elif inside and first == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "pages.h5"
    rng = np.random.default_rng(0)
    with h5store.open(path, "w", codec="raw") as store:
        store.add_batch(rng.integers(0, 255, (600, 64, 64, 3), np.uint8), labels=["a"] * 600)
    return path


def test_a_readers_map_is_populated_after_the_index_is_read(store_path):
    if not _file._Populate.supported():
        pytest.skip("this kernel cannot populate a map on request (MADV_POPULATE_READ)")
    size = os.path.getsize(store_path)
    with h5store.open(store_path) as store:
        populating = store.engine.source._populate
        assert populating is not None and not store.engine.source._populate_pending
        assert populating.join(10)
        assert _resident_bytes(store_path) >= 0.9 * size
        assert np.array_equal(store[0], store[0])
    with h5store.open(store_path, "a") as store:  # a writer's map grows: never populated
        assert store.engine.source._populate is None and not store.engine.source._populate_pending


def test_closing_stops_the_populating_thread(store_path):
    for _ in range(5):
        store = h5store.open(store_path)
        populating = store.engine.source._populate
        store.close()
        if populating is not None:
            assert populating.join(10)
    assert _resident_bytes(store_path) == 0  # and the map is gone with it
