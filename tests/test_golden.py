"""Files written by earlier releases still read: one golden file per format version.

Every other test writes with today's code before reading, so a change that writer and reader
share (a dtype or path in format.py) goes unnoticed there. tests/data/golden-1.0.h5 was written
by h5store a3b28f7 (format 1.0: sources without checks), tests/data/golden-1.1.h5 by h5store
7dc4f43 (format 1.1: every source checked in /source_crc32) and tests/data/golden-1.2.h5 by
h5store 9be4a32 (format 1.2: every score row checked in /score_crc32, class groups checked
against /labels and /stacks at open, NUL-terminated /labels, no tail rows after close), all by
tests/data/make_golden.py from the same images; the expected values beside each were read back
then. Every test runs on every file. If one fails, today's code changed that format version:
make a new version instead.
"""

import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_every_source_checked, file_digest, psnr

import h5store
from h5store import format as fmt

DATA = Path(__file__).parent / "data"
VERSIONS = ("1.0", "1.1", "1.2")


@dataclass(frozen=True)
class GoldenFile:
    """A golden file and what a reader must find in it."""

    version: str
    path: Path
    expected: dict
    arrays: dict

    @classmethod
    def load(cls, version: str) -> "GoldenFile":
        expected = json.loads((DATA / f"golden-{version}-expected.json").read_text())
        arrays = dict(np.load(DATA / f"golden-{version}-expected.npz"))
        return cls(version, DATA / f"golden-{version}.h5", expected, arrays)

    @property
    def version_attr(self) -> list[int]:
        return [int(part) for part in self.version.split(".")]

    @property
    def checked(self) -> bool:
        """Whether the file carries the checks of format 1.2."""
        return tuple(self.version_attr) >= (1, 2)

    @property
    def index(self) -> np.ndarray:
        return self.arrays["index"]

    @property
    def labels(self) -> list[str]:
        return self.expected["labels"]

    @property
    def deleted(self) -> list[int]:
        return self.expected["deleted"]

    @property
    def live(self) -> list[int]:
        return self.expected["live_ids"]

    def original(self, image_id: int) -> np.ndarray:
        tiny = np.flatnonzero(self.arrays["tiny_ids"] == image_id)
        if len(tiny):
            return self.arrays["tiny_originals"][tiny[0]]
        return self.arrays[f"original_{image_id}"]

    def source(self, row: int) -> str:
        """The source stored in index row ``row`` ("" for none)."""
        sources = self.arrays["sources"]
        return sources[row] if row < len(sources) else ""


@pytest.fixture(scope="module", params=VERSIONS, ids=lambda v: f"format-{v}")
def gold(request) -> GoldenFile:
    return GoldenFile.load(request.param)


@pytest.fixture(scope="module")
def golden(gold):
    before = file_digest(gold.path)
    with h5store.open(gold.path) as store:
        yield store
    assert file_digest(gold.path) == before, "reading the golden file changed it"


def test_golden_file_is_its_format_version_written_by_an_earlier_release(gold):
    with h5py.File(gold.path, "r", locking=False) as f:
        assert f.attrs[fmt.ATTR_FORMAT] == gold.expected["root_attrs"][fmt.ATTR_FORMAT] == "h5store"
        assert f.attrs[fmt.ATTR_VERSION].tolist() == gold.version_attr
        assert gold.expected["root_attrs"][fmt.ATTR_VERSION] == gold.version_attr
        stacks = f[fmt.STACKS][()]
        assert len(stacks) == len(gold.expected["stacks"])
        for row, want in zip(stacks, gold.expected["stacks"]):
            for name, value in want.items():
                got = row[name].decode() if isinstance(row[name], bytes) else int(row[name])
                assert got == value, (name, got, value)
        # more rows than one compressed /index chunk: both /index and /index_tail hold rows
        assert f[fmt.INDEX].shape[0] >= fmt.INDEX_CHUNK_ROWS
        assert f[fmt.SCORES].shape[1] == len(gold.labels)
        # 1.1 made room for a ninth root link (/source_crc32); a 1.0 root group has eight
        assert fmt.root_holds_every_link(f) == (gold.version != "1.0")
    assert h5store.FORMAT_VERSION[0] == 1


def test_golden_sources_are_checked_from_format_1_1_on(gold, golden):
    sources = golden.sources
    assert any(sources) and None in sources, "both kinds of row should be read and checked"
    if gold.version == "1.0":
        with h5py.File(gold.path, "r", locking=False) as f:
            assert fmt.SOURCES in f and fmt.SOURCE_CRC32 not in f
    else:
        assert_every_source_checked(gold.path)


@pytest.mark.parametrize("given", [True, False], ids=["row-with-source", "row-without"])
def test_golden_changed_source_is_damage_from_format_1_1_on(gold, tmp_path, given):
    """A source changed behind the file's back (as a damaged heap string would be): a 1.1
    reader compares it with its check and refuses it; a 1.0 file has no check to compare."""
    live_rows = [r for r, i in enumerate(gold.index["id"].tolist()) if i not in gold.deleted]
    row = next(r for r in live_rows if bool(gold.source(r)) == given)
    image_id = int(gold.index["id"][row])
    copy = tmp_path / "golden.h5"
    shutil.copy(gold.path, copy)
    with h5py.File(copy, "r+", locking=False) as f:
        f[fmt.SOURCES][row] = "elsewhere/changed.png"
    with h5store.open(copy) as store:
        if gold.version == "1.0":
            assert store.record(image_id).source == "elsewhere/changed.png"
        else:
            with pytest.raises(
                h5store.FormatError, match=rf"/sources row {row} \(image {image_id}"
            ):
                store.record(image_id)
            with pytest.raises(h5store.FormatError, match="/source_crc32"):
                _ = store.sources


def test_golden_scores_are_checked_from_format_1_2_on(gold, tmp_path):
    """A score entry of a class the image was not predicted as, changed behind the file's
    back: a 1.2 reader compares the row with its check and refuses it; older files have no
    check to compare (the predicted class's entry is cross-checked in every version)."""
    row = int(np.flatnonzero(~np.isnan(gold.arrays["scores"]).all(axis=1))[-1])
    image_id = int(gold.index["id"][row])
    other = (int(gold.index["label"][row]) + 1) % len(gold.labels)
    copy = tmp_path / "golden.h5"
    shutil.copy(gold.path, copy)
    with h5py.File(copy, "r+", locking=False) as f:
        assert (fmt.SCORE_CRC32 in f) == gold.checked
        f[fmt.SCORES][row, other] = 0.5
    with h5store.open(copy) as store:
        if not gold.checked:
            assert store.record(image_id).scores[other] == 0.5
            assert store.scores[-1][other] == 0.5
        else:
            message = rf"/scores row {row} \(image {image_id}\)"
            with pytest.raises(h5store.FormatError, match=message):
                store.record(image_id)
            with pytest.raises(h5store.FormatError, match=message):
                _ = store.scores
            with pytest.raises(h5store.FormatError, match=message):
                store.to_pandas(scores=True)


def test_golden_labels_are_checked_against_class_groups_from_format_1_2_on(gold, tmp_path):
    copy = tmp_path / "golden.h5"
    shutil.copy(gold.path, copy)
    with h5py.File(copy, "r+", locking=False) as f:
        labels = f[fmt.LABELS][()]
        labels[gold.labels.index("dog")] = b"wolf"
        f[fmt.LABELS][...] = labels
    if gold.checked:
        with pytest.raises(h5store.FormatError, match=r"class 'wolf' \(/classes/dog\)"):
            h5store.open(copy)
    else:
        with h5store.open(copy) as store:  # as before 1.2: the label reads as changed
            assert store.record(1000).label == "wolf"


def test_golden_file_without_h5store(gold):
    """What plain HDF5 sees: 1.2 stores /labels NUL-terminated (h5dump prints the text),
    names the columns of /scores and leaves no rows in /index_tail; older files as before."""
    with h5py.File(gold.path, "r", locking=False) as f:
        labels = f[fmt.LABELS]
        assert [s.decode() for s in labels[()]] == gold.labels
        pad = labels.id.get_type().get_strpad()
        tail = f[fmt.INDEX_TAIL]
        if gold.checked:
            assert pad == h5py.h5t.STR_NULLTERM and labels.dtype.itemsize == 256
            assert f[fmt.SCORES].attrs["columns"].tolist() == gold.labels
            assert tail.shape == (0,) and tail.maxshape == (fmt.INDEX_CHUNK_ROWS,)
        else:
            assert pad == h5py.h5t.STR_NULLPAD and labels.dtype.itemsize == 255
            assert "columns" not in f[fmt.SCORES].attrs
            assert tail.shape == (fmt.INDEX_CHUNK_ROWS,) and not tail["nbytes"].any()


def test_golden_labels_ids_and_index(gold, golden):
    index_want = gold.index
    assert golden.labels == tuple(gold.labels)
    assert len(golden) == len(gold.live)
    assert (
        golden.ids().tolist() == gold.live == index_want["id"][index_want["deleted"] == 0].tolist()
    )
    assert list(golden) == golden.ids().tolist()
    for image_id in gold.deleted:
        assert image_id not in golden
        with pytest.raises(h5store.UnknownIdError):
            golden[image_id]
    index = golden.index
    assert index.dtype == index_want.dtype
    for name in index_want.dtype.names:
        assert np.array_equal(index[name], index_want[name], equal_nan=name == "score"), name
    stats = golden.stats()
    for key, value in gold.expected["stats"].items():
        assert stats[key] == value, key


def test_golden_records(gold, golden):
    for key, want in gold.expected["records"].items():
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


def test_golden_scores_and_sources_read_as_stored(gold, golden):
    for row, image_id in enumerate(gold.index["id"].tolist()):
        if image_id in gold.deleted:
            continue
        rec = golden.record(image_id)
        vector = gold.arrays["scores"][row]
        if np.isnan(vector).all():
            assert rec.scores is None
        else:
            assert np.array_equal(rec.scores, vector)
        assert rec.source == (gold.source(row) or None)


def test_golden_pixels(gold, golden):
    lossy = {int(k.split("_")[1]) for k in gold.arrays if k.startswith("decoded_")}
    for image_id in gold.live:
        image = golden[image_id]
        original = gold.original(image_id)
        if image_id in lossy:
            # the decoder's rounding may differ by one between libjpeg-turbo builds
            decoded = gold.arrays[f"decoded_{image_id}"]
            assert image.shape == decoded.shape and image.dtype == decoded.dtype
            assert np.abs(image.astype(int) - decoded.astype(int)).max() <= 1, image_id
            assert psnr(image, original) > 30, image_id
        else:
            assert np.array_equal(image, original), image_id
            assert image.dtype == original.dtype


def test_golden_batch_reads_into_out(gold, golden):
    tiny = gold.arrays["tiny_ids"]
    out = np.zeros((len(tiny), 4, 4), dtype=np.uint8)
    assert golden.get_batch(tiny, out=out) is out
    assert np.array_equal(out, gold.arrays["tiny_originals"])
    mixed = [gold.live[0], gold.live[-1], 1003, 1009]
    for image_id, image in zip(mixed, golden.get_batch(mixed)):
        assert image.shape == gold.original(image_id).shape


def test_golden_encoded_bytes_match_their_crc(gold, golden):
    index = gold.index
    for image_id in gold.live:
        payload = golden.get_encoded(image_id)
        row = np.flatnonzero(index["id"] == image_id)[0]
        assert len(payload) == index["nbytes"][row]
        assert zlib.crc32(payload) == index["crc32"][row]


def _expected_query(
    gold, label=None, true_label=None, min_score=None, max_score=None, correct=None
):
    """The query answered from the expected index with plain numpy."""
    index, labels = gold.index, gold.labels
    keep = index["deleted"] == 0
    if label is not None:
        keep &= np.isin(index["label"], [labels.index(x) for x in label])
    if true_label is not None:
        keep &= np.isin(index["true_label"], [labels.index(x) for x in true_label])
    score = index["score"]
    if min_score is not None:
        keep &= ~np.isnan(score) & (score >= min_score)
    if max_score is not None:
        keep &= ~np.isnan(score) & (score <= max_score)
    if correct is not None:
        known = index["true_label"] >= 0
        same = index["true_label"].astype(np.int64) == index["label"].astype(np.int64)
        keep &= known & (same if correct else ~same)
    return index["id"][keep].tolist()


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
def test_golden_queries(gold, golden, query):
    expected = _expected_query(gold, **query)
    got = golden.query(**query).tolist()
    assert got == expected
    if "label" not in query or query["label"] != ["unused"]:
        assert got, "the golden file should have images for every query tested"


def test_golden_verifies(gold, golden):
    report = golden.verify()
    assert report.ok, str(report)
    assert report.checked == len(gold.index)


def test_golden_previews(gold):
    with h5py.File(gold.path, "r", locking=False) as f:
        assert sorted(f[fmt.PREVIEWS]) == sorted(gold.expected["previews"])
        for name, ids in gold.expected["previews"].items():
            assert fmt.preview_ids(f, name).tolist() == ids
            preview = f[fmt.PREVIEWS][name]["data"][()]
            assert np.array_equal(preview, gold.arrays[f"preview_{name}"])
            assert not set(ids) & set(gold.deleted), "a deleted image is shown in a preview"


def test_golden_file_takes_new_images(gold, tmp_path):
    copy = tmp_path / "golden.h5"
    shutil.copy(gold.path, copy)
    live, index = gold.live, gold.index
    rng = np.random.default_rng(3)
    cats = np.stack([gold.original(0)[::-1], gold.original(2)[:, ::-1]])  # the existing stack
    new_size = rng.integers(0, 256, (1, 30, 14, 3), dtype=np.uint8)  # a new png stack
    vectors = rng.random((2, len(gold.labels))).astype(np.float32)
    vectors[:, gold.labels.index("cat")] = 1.0  # the label is the vector's argmax
    with h5store.open(copy, "a") as store:
        cat_ids = store.add_batch(
            cats, labels=["cat", "cat"], scores=vectors, sources=["new/a.jpg", "new/b.jpg"]
        )
        dog_id = store.add(new_size[0], label="dog", true_label="dog")
        store.delete([live[0]])
    assert cat_ids.tolist() == [max(index["id"]) + 1, max(index["id"]) + 2]
    with h5store.open(copy) as store:
        assert store.verify().ok
        assert len(store) == len(live) + 3 - 1
        assert live[0] not in store
        for image_id in live[1:]:
            if f"decoded_{image_id}" not in gold.arrays:
                assert np.array_equal(store[image_id], gold.original(image_id)), image_id
        assert np.array_equal(store[dog_id], new_size[0])
        for image_id, image, vector in zip(cat_ids.tolist(), cats, vectors):
            assert psnr(store[image_id], image) > 25
            assert np.array_equal(store.record(image_id).scores, vector)
        assert store.record(cat_ids[1]).source == "new/b.jpg"
        assert store.record(dog_id).source is None
        assert store.record(1000).source == "dogs/a.png"
        assert store.query(label="dog").tolist()[-1] == dog_id
    with h5py.File(copy, "r", locking=False) as f:
        assert f.attrs[fmt.ATTR_VERSION].tolist() == gold.version_attr
        assert live[0] not in fmt.preview_ids(f, "cat").tolist()
        # A ninth root link would move a 1.0 root group's links to dense storage (not
        # crash-safe): the file keeps unchecked sources, which read as before.
        unchecked = gold.version == "1.0"
        assert (fmt.SOURCE_CRC32 not in f) == unchecked
        # an older file keeps its layout: no score checks, a full-size tail
        assert (fmt.SCORE_CRC32 in f) == gold.checked
        assert (f[fmt.INDEX_TAIL].shape[0] == 0) == gold.checked
        if gold.checked:  # the rows added are checked too
            checks = f[fmt.SCORE_CRC32][()]
            assert checks.tolist() == fmt.score_checks(f[fmt.SCORES][()]).tolist()
    if not unchecked:
        assert_every_source_checked(copy)  # the rows added too


def test_repack_gives_a_golden_file_todays_format_with_every_source_and_score_checked(
    gold, tmp_path
):
    out = tmp_path / "repacked.h5"
    h5store.repack(gold.path, out, progress=False)
    assert_every_source_checked(out)
    with h5store.open(gold.path) as old, h5store.open(out) as new:
        assert new.stats()["format_version"] == list(h5store.FORMAT_VERSION)
        assert old.stats()["format_version"] == gold.version_attr
        assert new.sources == old.sources and any(new.sources)
        assert np.array_equal(new.scores, old.scores, equal_nan=True)
    with h5py.File(out, "r") as f:  # every score row of the copy is checked
        checks = f[fmt.SCORE_CRC32][()]
        assert len(checks) == len(f[fmt.SCORES]) and checks.all()
        assert checks.tolist() == fmt.score_checks(f[fmt.SCORES][()]).tolist()
        assert f[fmt.SCORES].attrs["columns"].tolist() == gold.labels
        assert f[fmt.INDEX_TAIL].shape == (0,)
