"""The chunk offsets in the index are a cache: tools that rewrite the file move the chunks.

A store rewritten by h5repack (HDF5's own copier, Debian's hdf5-tools) must read the original
pixels, and a wrong offset in the index must be reported by verify() as misplaced.
"""

import shutil
import subprocess

import h5py
import numpy as np
import pytest

import h5store
from h5store import format as fmt

RNG = np.random.default_rng(8)
GRAY = RNG.integers(0, 255, (30, 9, 11), dtype=np.uint8)
RGB = RNG.integers(0, 255, (10, 7, 5, 3), dtype=np.uint8)


@pytest.fixture
def raw_store(tmp_path):
    # raw: h5repack copies the chunks through no filter, so their bytes (and CRCs) stay the same
    path = tmp_path / "store.h5"
    with h5store.open(path, "w", codec="raw") as store:
        gray = store.add_batch(GRAY, labels=["a"] * len(GRAY))
        rgb = store.add_batch(RGB, labels=["b"] * len(RGB))
        store.delete([gray[3]])
    return path, gray.tolist() + rgb.tolist(), [*GRAY, *RGB]


def _chunk_offsets(path) -> dict[tuple[str, int], int]:
    found = {}
    with h5py.File(path, "r", locking=False) as f:
        for group in f[fmt.CLASSES].values():
            for stack in group.values():
                stack.id.chunk_iter(
                    lambda info, name=stack.name: found.__setitem__(
                        (name, info.chunk_offset[0]), info.byte_offset
                    )
                )
    return found


@pytest.mark.skipif(shutil.which("h5repack") is None, reason="h5repack (hdf5-tools) not installed")
def test_a_store_rewritten_by_h5repack_reads_the_original_pixels(raw_store, tmp_path):
    path, ids, images = raw_store
    repacked = tmp_path / "repacked.h5"
    done = subprocess.run(["h5repack", str(path), str(repacked)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    before, after = _chunk_offsets(path), _chunk_offsets(repacked)
    assert before.keys() == after.keys()
    moved = [key for key in before if before[key] != after[key]]
    assert len(moved) > len(before) // 2, "h5repack should have moved the chunks"
    with h5store.open(repacked) as store:
        assert len(store) == len(ids) - 1 and ids[3] not in store
        for image_id, image in zip(ids, images):
            if image_id != ids[3]:
                assert np.array_equal(store[image_id], image), image_id
        assert all(np.array_equal(a, b) for a, b in zip(store.get_batch(ids[20:25]), images[20:25]))
        report = store.verify()
        assert report.ok, str(report)
        # the rebuilt offsets are HDF5's
        for image_id in (ids[0], ids[-1]):
            rec = store.record(image_id)
            row = int(np.flatnonzero(store.index["id"] == image_id)[0])
            assert store.index["offset"][row] == after[(rec.stack, rec.position)]


def test_a_wrong_offset_in_the_index_is_reported_as_misplaced(tmp_path):
    # Two identical images: pointing one's offset at the other's chunk keeps its CRC right, so
    # only a comparison with HDF5's chunk index can tell.
    path = tmp_path / "store.h5"
    same = RNG.integers(0, 255, (9, 11), dtype=np.uint8)
    with h5store.open(path, "w", codec="raw") as store:
        store.add_batch(GRAY[:6], labels=["a"] * 6)
        first = store.add(same, label="a")
        second = store.add(same, label="a")
    with h5py.File(path, "r+", locking=False) as f:
        table = f[fmt.INDEX]  # a closed store's rows are all in /index
        rows = table[()]
        assert rows["id"].tolist() == list(range(8))
        rows["offset"][second] = rows["offset"][first]
        table[...] = rows
    with h5store.open(path) as store:
        assert np.array_equal(store[second], same)
        report = store.verify()
        assert report.misplaced == [second], str(report)
        assert report.damaged == []
        assert not report.ok


def test_chunks_are_located_from_the_file_end_marks_reading_back_only_where_it_grew_more(
    tmp_path,
):
    """The writer reads the file's end every OFFSET_SAMPLE images; where the file grew by more
    than the payloads (HDF5 placed metadata in between), payloads are read back to find the
    gap, and one found nowhere predicted gets HDF5's answer; a chunk of another size is an
    error."""
    from h5store._file import OFFSET_SAMPLE, WriterFile
    from h5store.errors import FormatError

    path = str(tmp_path / "plain.h5")
    n = 3 * OFFSET_SAMPLE
    # Distinctive payloads (see _distinctive): runs of one byte are always asked of HDF5.
    payloads = [bytes((7 * k + j) % 251 for j in range(64 + k)) for k in range(n)]
    nbytes = np.array([len(p) for p in payloads])
    writer = WriterFile(path, "w")
    try:
        # A filter (never run: the chunks are written direct) makes HDF5 record chunk sizes.
        ds = writer.f.create_dataset(
            "s", shape=(n, 100), chunks=(1, 100), dtype="u1", compression="gzip"
        )
        writer.flush()
        marks, written, _ = writer.write_chunks(
            [ds], [0] * n, list(range(n)), [(p, 0) for p in payloads]
        )
        assert written == payloads and len(marks) == n // OFFSET_SAMPLE + 1
        writer.flush()
        truth = {}
        ds.id.chunk_iter(lambda info: truth.__setitem__(info.chunk_offset[0], info.byte_offset))
        expected = [truth[k] for k in range(n)]
        positions, stacks = list(range(n)), [0] * n

        none_rewritten = np.zeros(n, dtype=bool)

        def locate(marks, rewritten=none_rewritten):
            return writer.locate_chunks(
                [ds], stacks, positions, payloads, nbytes, marks, rewritten
            ).tolist()

        # The first sample of a new stack holds two gaps (HDF5 made the chunk index before
        # the first chunk and grew it after); the bytes between are searched, not HDF5.
        assert locate(marks) == expected
        assert writer.offset_fallbacks == 0
        # A gap of 5 bytes before image 3 of the second sample: the marks of a file that grew
        # 5 bytes more there. Images 3.. of that sample lie 5 bytes further on in that file;
        # in this one they do not, so they are found where they lie without the gap, and the
        # third sample's predictions (moved by the gap) are read back and found, also without
        # looking in HDF5's index.
        moved = [marks[0], marks[1], marks[2] + 5, marks[3] + 5]
        assert locate(moved)[: 2 * OFFSET_SAMPLE] == expected[: 2 * OFFSET_SAMPLE]
        # Predictions past where the chunks lie (no gap explains them): HDF5's index answers.
        wrong = [marks[0] + 100, *marks[1:]]
        assert locate(wrong) == expected
        assert writer.offset_fallbacks >= 1
        # Marks that add up but are all 7 bytes off (as a chunk replaced in place can make
        # them): trusted, unless the sample holds a position that may have had a chunk.
        shifted = [m + 7 for m in marks]
        assert locate(shifted)[OFFSET_SAMPLE + 1] == expected[OFFSET_SAMPLE + 1] + 7
        maybe_there = np.arange(n) >= OFFSET_SAMPLE
        assert locate(shifted, maybe_there)[OFFSET_SAMPLE:] == expected[OFFSET_SAMPLE:]
        with pytest.raises(FormatError, match="not stored intact"):
            writer.locate_chunks(
                [ds],
                stacks,
                positions,
                [payloads[0] + b"x", *payloads[1:]],
                nbytes + 1,
                wrong,
                np.zeros(n, dtype=bool),
            )
    finally:
        writer.close()


@pytest.mark.parametrize("fill", ["max", "zero"])
def test_tiny_payloads_that_metadata_can_hold_are_located_by_hdf5_not_by_search(tmp_path, fill):
    """A raw 1 x 1 uint8 image of 255 and a 1 x 1 uint16 of 65535 in one batch (the second
    makes a new stack, so HDF5 writes metadata between the chunks): searching the bytes
    between found 0xFF 0xFF in that metadata (undefined addresses), and verify() reported a
    stale offset on a healthy file in 20 of 20 runs. Zeros are the other filler metadata holds."""
    images = [np.full((1, 1), 255, np.uint8), np.full((1, 1), 65535, np.uint16)]
    if fill == "zero":
        images = [np.zeros_like(image) for image in images]
    path = tmp_path / "tiny.h5"
    with h5store.open(path, "w", codec="raw") as store:
        ids = store.add_batch(images, labels=["a", "a"])
    truth = _chunk_offsets(path)
    with h5store.open(path) as store:
        report = store.verify()
        assert report.ok, str(report)
        for image_id, image in zip(ids, images):
            rec = store.record(image_id)
            row = int(np.flatnonzero(store.index["id"] == image_id)[0])
            assert store.index["offset"][row] == truth[(rec.stack, rec.position)]
            assert np.array_equal(store[image_id], image)


def _rewrite_index(path, change) -> None:
    """Apply ``change`` to the rows of a closed store's /index (where all its rows are)."""
    with h5py.File(path, "r+", locking=False) as f:
        rows = f[fmt.INDEX][()]
        change(rows)
        f[fmt.INDEX][...] = rows


def test_offsets_past_the_files_end_are_rebuilt_from_hdf5(raw_store):
    # Found by mutmut (_offsets' check at open): a cached offset past the end of the file (a
    # copy cut shorter, a crafted index) is stale, not intact; every sampled row is such here.
    path, ids, images = raw_store
    size = path.stat().st_size

    def past_the_end(rows):
        rows["offset"] = size + 1000 + np.arange(len(rows))

    _rewrite_index(path, past_the_end)
    with h5store.open(path) as store:
        assert np.array_equal(store[ids[-1]], images[-1])
        assert store.verify().ok


def test_a_writers_verify_reads_images_added_since_it_opened(raw_store):
    # Found by mutmut (verify's reads): the map a writer opened with ends before the images
    # it adds; verify() must read as far as each image's end, not stop short of it.
    path, _ids, images = raw_store
    with h5store.open(path, "a") as store:
        added = store.add_batch(GRAY[:4], labels=["a"] * 4)
        report = store.verify()
        assert report.ok, str(report)
        assert report.checked == len(images) + len(added)


@pytest.mark.parametrize("replacement", ["group", "contiguous"])
def test_a_stack_that_is_not_a_chunked_dataset_is_named_by_verify(raw_store, replacement):
    # Found by mutmut (_offsets.chunk_locations): a crafted file's stack that HDF5 cannot list
    # chunks of is a FormatError naming the stack, not an AttributeError or TypeError.
    path, _ids, _images = raw_store
    with h5py.File(path, "r+", locking=False) as f:
        group = next(iter(f[fmt.CLASSES].values()))
        name = next(n for n in group if n != "preview")
        stack = group[name]
        shape, dtype = stack.shape, stack.dtype
        del group[name]
        if replacement == "group":
            group.create_group(name)
        else:
            group.create_dataset(name, shape=shape, dtype=dtype)
    with h5store.open(path) as store, pytest.raises(h5store.FormatError, match=name):
        store.verify()
