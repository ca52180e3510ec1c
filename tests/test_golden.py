"""Files written by an earlier release still read: the format-1.0 golden file.

Every other test writes with today's code before reading, so a change that writer and reader
share (a dtype or path in format.py) goes unnoticed there. tests/data/golden-1.0.h5 was written
by h5store a3b28f7 (tests/data/make_golden.py); the expected values beside it were read back
then. If this fails, today's code changed format 1.0: make that a new format version instead.
"""

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_every_source_checked, file_digest, psnr

import h5store
from h5store import format as fmt

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden-1.0.h5"
EXPECTED = json.loads((DATA / "golden-1.0-expected.json").read_text())
ARRAYS = dict(np.load(DATA / "golden-1.0-expected.npz"))
INDEX = ARRAYS["index"]
LABELS = EXPECTED["labels"]
DELETED = EXPECTED["deleted"]
LIVE = EXPECTED["live_ids"]


def original(image_id: int) -> np.ndarray:
    tiny = np.flatnonzero(ARRAYS["tiny_ids"] == image_id)
    if len(tiny):
        return ARRAYS["tiny_originals"][tiny[0]]
    return ARRAYS[f"original_{image_id}"]


@pytest.fixture(scope="module")
def golden():
    before = file_digest(GOLDEN)
    with h5store.open(GOLDEN) as store:
        yield store
    assert file_digest(GOLDEN) == before, "reading the golden file changed it"


def test_golden_file_is_format_1_0_written_by_an_earlier_release():
    with h5py.File(GOLDEN, "r", locking=False) as f:
        assert f.attrs[fmt.ATTR_FORMAT] == EXPECTED["root_attrs"][fmt.ATTR_FORMAT] == "h5store"
        assert f.attrs[fmt.ATTR_VERSION].tolist() == [1, 0]
        stacks = f[fmt.STACKS][()]
        assert len(stacks) == len(EXPECTED["stacks"])
        for row, want in zip(stacks, EXPECTED["stacks"]):
            for name, value in want.items():
                got = row[name].decode() if isinstance(row[name], bytes) else int(row[name])
                assert got == value, (name, got, value)
        # more rows than one compressed /index chunk: both /index and /index_tail hold rows
        assert f[fmt.INDEX].shape[0] >= fmt.INDEX_CHUNK_ROWS
        assert f[fmt.SCORES].shape[1] == len(LABELS)
    assert h5store.FORMAT_VERSION[0] == 1


def test_golden_labels_ids_and_index(golden):
    assert golden.labels == tuple(LABELS)
    assert len(golden) == len(LIVE)
    assert golden.ids().tolist() == LIVE == INDEX["id"][INDEX["deleted"] == 0].tolist()
    assert list(golden) == golden.ids().tolist()
    for image_id in DELETED:
        assert image_id not in golden
        with pytest.raises(h5store.UnknownIdError):
            golden[image_id]
    index = golden.index
    assert index.dtype == INDEX.dtype
    for name in INDEX.dtype.names:
        assert np.array_equal(index[name], INDEX[name], equal_nan=name == "score"), name
    stats = golden.stats()
    for key, value in EXPECTED["stats"].items():
        assert stats[key] == value, key


def test_golden_records(golden):
    for key, want in EXPECTED["records"].items():
        rec = golden.record(int(key))
        for name, value in want.items():
            got = getattr(rec, name)
            if name == "scores":
                assert (got is None) == (value is None), key
                if value is not None:
                    assert np.array_equal(got, np.array(value, dtype=np.float32)), key
            elif name == "shape":
                assert list(got) == value, key
            elif name == "score" and value is not None:
                assert got == pytest.approx(value, rel=1e-7), key
            else:
                assert got == value, (key, name)


def test_golden_scores_and_sources_read_as_stored(golden):
    for row, image_id in enumerate(INDEX["id"].tolist()):
        if image_id in DELETED:
            continue
        rec = golden.record(image_id)
        vector = ARRAYS["scores"][row]
        if np.isnan(vector).all():
            assert rec.scores is None
        else:
            assert np.array_equal(rec.scores, vector)
        source = ARRAYS["sources"][row] if row < len(ARRAYS["sources"]) else ""
        assert rec.source == (source or None)


def test_golden_pixels(golden):
    lossy = {int(k.split("_")[1]) for k in ARRAYS if k.startswith("decoded_")}
    for image_id in LIVE:
        image = golden[image_id]
        if image_id in lossy:
            # the decoder's rounding may differ by one between libjpeg-turbo builds
            decoded = ARRAYS[f"decoded_{image_id}"]
            assert image.shape == decoded.shape and image.dtype == decoded.dtype
            assert np.abs(image.astype(int) - decoded.astype(int)).max() <= 1, image_id
            assert psnr(image, original(image_id)) > 30, image_id
        else:
            assert np.array_equal(image, original(image_id)), image_id
            assert image.dtype == original(image_id).dtype


def test_golden_batch_reads_into_out(golden):
    tiny = ARRAYS["tiny_ids"]
    out = np.zeros((len(tiny), 4, 4), dtype=np.uint8)
    assert golden.get_batch(tiny, out=out) is out
    assert np.array_equal(out, ARRAYS["tiny_originals"])
    mixed = [LIVE[0], LIVE[-1], 1003, 1009]
    for image_id, image in zip(mixed, golden.get_batch(mixed)):
        assert image.shape == original(image_id).shape


def test_golden_encoded_bytes_match_their_crc(golden):
    import zlib

    for image_id in LIVE:
        payload = golden.get_encoded(image_id)
        row = np.flatnonzero(INDEX["id"] == image_id)[0]
        assert len(payload) == INDEX["nbytes"][row]
        assert zlib.crc32(payload) == INDEX["crc32"][row]


def _expected_query(label=None, true_label=None, min_score=None, max_score=None, correct=None):
    """The query answered from the expected index with plain numpy."""
    keep = INDEX["deleted"] == 0
    if label is not None:
        keep &= np.isin(INDEX["label"], [LABELS.index(x) for x in label])
    if true_label is not None:
        keep &= np.isin(INDEX["true_label"], [LABELS.index(x) for x in true_label])
    score = INDEX["score"]
    if min_score is not None:
        keep &= ~np.isnan(score) & (score >= min_score)
    if max_score is not None:
        keep &= ~np.isnan(score) & (score <= max_score)
    if correct is not None:
        known = INDEX["true_label"] >= 0
        same = INDEX["true_label"].astype(np.int64) == INDEX["label"].astype(np.int64)
        keep &= known & (same if correct else ~same)
    return INDEX["id"][keep].tolist()


@pytest.mark.parametrize(
    "query",
    [
        {"label": ["cat"]},
        {"label": ["dog", "mask"]},
        {"label": ["unused"]},
        {"true_label": ["cat"]},
        {"correct": False},
        {"correct": True},
        {"min_score": 0.5},
        {"max_score": 0.3},
        {"min_score": 0.2, "max_score": 0.6, "label": ["tiny"]},
    ],
)
def test_golden_queries(golden, query):
    expected = _expected_query(**query)
    got = golden.query(**query).tolist()
    assert got == expected
    if "label" not in query or query["label"] != ["unused"]:
        assert got, "the golden file should have images for every query tested"


def test_golden_verifies(golden):
    report = golden.verify()
    assert report.ok, str(report)
    assert report.checked == len(INDEX)


def test_golden_previews():
    with h5py.File(GOLDEN, "r", locking=False) as f:
        assert sorted(f[fmt.PREVIEWS]) == sorted(EXPECTED["previews"])
        for name, ids in EXPECTED["previews"].items():
            assert fmt.preview_ids(f, name).tolist() == ids
            assert np.array_equal(f[fmt.PREVIEWS][name]["data"][()], ARRAYS[f"preview_{name}"])
            assert not set(ids) & set(DELETED), "a deleted image is shown in a preview"


def test_golden_file_takes_new_images(tmp_path):
    copy = tmp_path / "golden.h5"
    shutil.copy(GOLDEN, copy)
    rng = np.random.default_rng(3)
    cats = np.stack([original(0)[::-1], original(2)[:, ::-1]])  # into the existing stack
    new_size = rng.integers(0, 256, (1, 30, 14, 3), dtype=np.uint8)  # a new png stack
    vectors = rng.random((2, len(LABELS))).astype(np.float32)
    with h5store.open(copy, "a") as store:
        cat_ids = store.add_batch(
            cats, labels=["cat", "cat"], scores=vectors, sources=["new/a.jpg", "new/b.jpg"]
        )
        dog_id = store.add(new_size[0], label="dog", true_label="dog")
        store.delete([LIVE[0]])
    assert cat_ids.tolist() == [max(INDEX["id"]) + 1, max(INDEX["id"]) + 2]
    with h5store.open(copy) as store:
        assert store.verify().ok
        assert len(store) == len(LIVE) + 3 - 1
        assert LIVE[0] not in store
        for image_id in LIVE[1:]:
            if f"decoded_{image_id}" not in ARRAYS:
                assert np.array_equal(store[image_id], original(image_id)), image_id
        assert np.array_equal(store[dog_id], new_size[0])
        for image_id, image, vector in zip(cat_ids.tolist(), cats, vectors):
            assert psnr(store[image_id], image) > 25
            assert np.array_equal(store.record(image_id).scores, vector)
        assert store.record(cat_ids[1]).source == "new/b.jpg"
        assert store.record(1000).source == "dogs/a.png"
        assert store.query(label="dog").tolist()[-1] == dog_id
    with h5py.File(copy, "r", locking=False) as f:
        assert f.attrs[fmt.ATTR_VERSION].tolist() == [1, 0]
        # A ninth root link would move a 1.0 root group's links to dense storage (not
        # crash-safe): the file keeps unchecked sources, which read as before.
        assert fmt.SOURCE_CRC32 not in f
        assert LIVE[0] not in fmt.preview_ids(f, "cat").tolist()


def test_repack_gives_a_format_1_0_file_its_source_checks(tmp_path):
    out = tmp_path / "repacked.h5"
    h5store.repack(GOLDEN, out, progress=False)
    assert_every_source_checked(out)
    with h5store.open(GOLDEN) as old, h5store.open(out) as new:
        assert new.stats()["format_version"] == list(h5store.FORMAT_VERSION)
        assert old.stats()["format_version"] == [1, 0]
        assert new.sources == old.sources and any(new.sources)
