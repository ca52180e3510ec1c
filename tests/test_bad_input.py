"""Bad input gets a clear error from h5store's hierarchy and leaves the file byte-for-byte as
it was (DESIGN section 5)."""

from pathlib import Path

import h5py
import imagecodecs
import numpy as np
import pytest
from conftest import file_digest, photo_crops
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import h5store
from h5store.errors import CodecError, DuplicateIdError, H5StoreError, InvalidInputError

GOOD = np.full((8, 8, 3), 128, np.uint8)


def check_rejected(path, call, error=H5StoreError, match=None):
    """``call(store)`` must raise ``error`` and leave the file unchanged, both right after the
    failed call (compared with the file as opened: HDF5 marks a file open for writing in its
    superblock) and after closing."""
    before = file_digest(path)
    with h5store.open(path, "a") as store:
        opened = file_digest(path)
        n = len(store)
        with pytest.raises(error, match=match):
            call(store)
        assert file_digest(path) == opened
        assert len(store) == n
    assert file_digest(path) == before
    with h5store.open(path) as store:
        assert store.verify().ok


BAD_CALLS = {
    "float image": (
        lambda s: s.add(GOOD.astype(np.float32), label="a"),
        InvalidInputError,
        "dtype float32",
    ),
    "int64 image": (
        lambda s: s.add(GOOD.astype(np.int64), label="a"),
        InvalidInputError,
        "dtype int64",
    ),
    "bool image": (lambda s: s.add(GOOD > 0, label="a"), InvalidInputError, "dtype bool"),
    "1-D image": (
        lambda s: s.add(np.zeros(5, np.uint8), label="a"),
        InvalidInputError,
        "1 dimensions",
    ),
    "4-D image": (
        lambda s: s.add(np.zeros((2, 2, 2, 2), np.uint8), label="a"),
        InvalidInputError,
        "4 dimensions",
    ),
    "2 channels": (
        lambda s: s.add(np.zeros((4, 4, 2), np.uint8), label="a"),
        InvalidInputError,
        "2 channels",
    ),
    "empty image": (
        lambda s: s.add(np.zeros((0, 4, 3), np.uint8), label="a"),
        InvalidInputError,
        "empty",
    ),
    "empty batch": (lambda s: s.add_batch([], labels=[]), InvalidInputError, "empty"),
    "NaN score": (lambda s: s.add(GOOD, label="a", score=float("nan")), InvalidInputError, "NaN"),
    "inf score": (
        lambda s: s.add(GOOD, label="a", score=float("inf")),
        InvalidInputError,
        "infinity",
    ),
    "score > 1": (lambda s: s.add(GOOD, label="a", score=1.5), InvalidInputError, "outside"),
    "negative score": (lambda s: s.add(GOOD, label="a", score=-0.1), InvalidInputError, "outside"),
    "score vector length": (
        lambda s: s.add_batch([GOOD], labels=["a"], scores=[[0.5, 0.2, 0.3]]),
        InvalidInputError,
        "3 entries",
    ),
    "scores count": (
        lambda s: s.add_batch([GOOD] * 2, labels=["a"] * 2, scores=[0.5]),
        InvalidInputError,
        r"shape \(2,\)",
    ),
    "labels count": (
        lambda s: s.add_batch([GOOD] * 2, labels=["a"]),
        InvalidInputError,
        "1 entries for 2",
    ),
    "empty label": (lambda s: s.add(GOOD, label=""), InvalidInputError, "empty"),
    "NUL label": (lambda s: s.add(GOOD, label="a\x00b"), InvalidInputError, "NUL"),
    "long label": (lambda s: s.add(GOOD, label="é" * 128), InvalidInputError, "256 bytes"),
    "label type": (lambda s: s.add(GOOD, label=3.5), InvalidInputError, "string or a class id"),
    "class id out of range": (lambda s: s.add(GOOD, label=99), InvalidInputError, "class id 99"),
    "bad true label": (
        lambda s: s.add(GOOD, label="a", true_label=""),
        InvalidInputError,
        "true label",
    ),
    "duplicate id in batch": (
        lambda s: s.add_batch([GOOD] * 2, labels=["a"] * 2, ids=[7, 7]),
        DuplicateIdError,
        "twice",
    ),
    "duplicate id in store": (
        lambda s: s.add(GOOD, label="a", id=0),
        DuplicateIdError,
        "already used",
    ),
    "negative id": (lambda s: s.add(GOOD, label="a", id=-1), InvalidInputError, "non-negative"),
    "corrupt pre-encoded": (
        lambda s: s.add_encoded(b"\xff\xd8 not a jpeg", label="a"),
        CodecError,
        "JPEG",
    ),
    "truncated pre-encoded": (
        lambda s: s.add_encoded(imagecodecs.jpeg8_encode(GOOD)[:-40], label="a"),
        CodecError,
        "truncated",
    ),
    "PNG into a JPEG class": (
        lambda s: s.add_encoded(imagecodecs.png_encode(GOOD), label="a"),
        CodecError,
        "not a JPEG",
    ),
    "uint16 into JPEG": (
        lambda s: s.add(GOOD.astype(np.uint16), label="a"),
        CodecError,
        "cannot hold uint16",
    ),
    "RGBA into JPEG": (
        lambda s: s.add(np.zeros((4, 4, 4), np.uint8), label="a"),
        CodecError,
        "4-channel",
    ),
    "bad image late in batch": (
        lambda s: s.add_batch([GOOD, GOOD, GOOD[:, :, 0].astype(np.float64)], labels=["new"] * 3),
        InvalidInputError,
        "image 2",
    ),
    "bad codec for new class": (
        lambda s: s.create_class("new", "jpeg", quality=101),
        CodecError,
        "quality",
    ),
    "unknown codec": (lambda s: s.create_class("new", "jpeg2077"), CodecError, "unknown codec"),
    "unknown codec option": (
        lambda s: s.create_class("new", "jpeg", colour=3),
        CodecError,
        "colour",
    ),
    "not bytes": (lambda s: s.add_encoded("text", label="a"), InvalidInputError, "bytes"),
    "a path for an image": (
        lambda s: s.add("/data/crops/img_0001.png", label="a"),
        InvalidInputError,
        r"image is a path \('/data/crops/img_0001.png'\), not an image.*add_encoded.*PIL",
    ),
    "a Path in a batch": (
        lambda s: s.add_batch([GOOD, Path("/data/x.jpg")], labels=["a", "a"]),
        InvalidInputError,
        r"image 1 is a path \('/data/x.jpg'\)",
    ),
    "a path for a batch": (
        lambda s: s.add_batch("/data/crops", labels=["a"]),
        InvalidInputError,
        "images is a path",
    ),
    "a file's bytes for an image": (
        lambda s: s.add(imagecodecs.png_encode(GOOD), label="a"),
        InvalidInputError,
        "image is bytes, not an image: .*add_encoded",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_is_rejected_and_file_unchanged(filled_store, case):
    call, error, match = BAD_CALLS[case]
    with h5store.open(filled_store, "a") as store:  # ensure class "a" exists as JPEG
        store.add(GOOD, label="a")
    check_rejected(filled_store, call, error, match)


@st.composite
def bad_batches(draw):
    """A batch of good images with one poisoned entry somewhere."""
    n = draw(st.integers(1, 6))
    where = draw(st.integers(0, n - 1))
    kind = draw(st.sampled_from(["dtype", "shape", "empty", "label", "score", "id"]))
    images = [GOOD] * n
    labels = ["a"] * n
    scores = [0.5] * n
    ids = list(range(1000, 1000 + n))
    if kind == "dtype":
        images[where] = GOOD.astype(
            draw(st.sampled_from([np.float32, np.int16, np.int32, np.float64]))
        )
    elif kind == "shape":
        images[where] = np.zeros(
            draw(st.sampled_from([(3,), (2, 2, 2), (2, 2, 5), (1, 1, 1, 1)])), np.uint8
        )
    elif kind == "empty":
        images[where] = np.zeros(draw(st.sampled_from([(0, 3), (3, 0), (0, 0, 3)])), np.uint8)
    elif kind == "label":
        labels[where] = draw(st.sampled_from(["", "x\x00", "z" * 256, None, 1.5]))
    elif kind == "score":
        scores[where] = draw(st.sampled_from([float("nan"), float("-inf"), 1.0001, -1e-3, 7]))
    else:
        ids[where] = ids[(where + 1) % n] if n > 1 else -5
    return images, labels, scores, ids


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=bad_batches())
def test_any_poisoned_batch_leaves_no_trace(filled_store, batch):
    images, labels, scores, ids = batch
    check_rejected(
        filled_store, lambda s: s.add_batch(images, labels=labels, scores=scores, ids=ids)
    )


def test_quality_out_of_range_fails_before_touching_the_file(filled_store):
    before = file_digest(filled_store)
    for quality in (0, 101, 2.5, "high"):
        with pytest.raises(CodecError, match="quality"):
            h5store.open(filled_store, "a", quality=quality)
    assert file_digest(filled_store) == before


def test_awkward_labels_are_valid_and_stay_inside_their_group(store_path):
    labels = ["a/b", "..", ".", " spaced out ", "ünïcödé 猫", "%2F", "a\\b", "CON:"]
    with h5store.open(store_path, "w", codec="raw") as store:
        ids = store.add_batch([GOOD] * len(labels), labels=labels)
    with h5py.File(store_path, "r") as f:
        groups = f["classes"]
        assert len(groups) == len(labels)  # one group each, none nested, none escaped
        assert sorted(g.attrs["label"] for g in groups.values()) == sorted(labels)
        assert set(f) == {"classes", "index", "index_tail", "labels", "stacks", "previews"}
        assert len(f["previews"]) == len(labels)
    with h5store.open(store_path) as store:
        assert [store.record(i).label for i in ids] == labels
        assert store.query(label="..").tolist() == [ids[1]]


def test_not_hdf5_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_bytes(b"these are not the bytes you are looking for" * 10)
    before = file_digest(path)
    for mode in ("r", "r+", "a"):
        with pytest.raises(h5store.NotAStoreError, match="not an HDF5 file"):
            h5store.open(path, mode)
    assert file_digest(path) == before


def test_hdf5_file_that_is_not_ours(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(3)
    before = file_digest(path)
    for mode in ("r", "r+", "a"):
        with pytest.raises(h5store.NotAStoreError, match="not an h5store file"):
            h5store.open(path, mode)
    assert file_digest(path) == before


def test_newer_major_version_is_refused_minor_is_read(filled_store):
    with h5py.File(filled_store, "r+") as f:
        f.attrs["h5store_version"] = np.array([1, 7], dtype="<i4")
    with h5store.open(filled_store) as store:
        assert len(store) > 0
    with h5py.File(filled_store, "r+") as f:
        f.attrs["h5store_version"] = np.array([2, 0], dtype="<i4")
    before = file_digest(filled_store)
    for mode in ("r", "a"):
        with pytest.raises(h5store.VersionError, match="format 2.0"):
            h5store.open(filled_store, mode)
    assert file_digest(filled_store) == before


def test_truncated_file(filled_store):
    data = Path(filled_store).read_bytes()
    Path(filled_store).write_bytes(data[: len(data) // 2])
    for mode in ("r", "a"):
        with pytest.raises(h5store.FormatError, match="truncated"):
            h5store.open(filled_store, mode)
    assert Path(filled_store).read_bytes() == data[: len(data) // 2]


def test_flipped_bytes_are_named_by_verify_and_the_rest_stays_readable(store_path):
    images, _ = photo_crops()
    with h5store.open(store_path, "w", codec="png") as store:
        ids = store.add_batch(images[:6], labels=["p"] * 6)
        victim = store.record(ids[2])
        offset = int(store.index["offset"][2])
    with open(store_path, "r+b") as fh:
        fh.seek(offset + victim.nbytes // 2)
        byte = fh.read(1)
        fh.seek(offset + victim.nbytes // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with h5store.open(store_path) as store:
        report = store.verify()
        assert report.damaged == [int(ids[2])] and not report.ok
        for k in (0, 1, 3, 4, 5):
            assert np.array_equal(store[ids[k]], images[k])


@pytest.mark.parametrize("path_kind", ["call", "batch"])
def test_a_label_that_is_not_its_vectors_argmax_is_refused_naming_the_image(store_path, path_kind):
    with h5store.open(store_path, "w", codec="png", labels=["cat", "dog"]) as store:
        store.add(GOOD, label="cat", score=[0.5, 0.5])  # a tie is the label's to break
    vector = [0.3, 0.7]  # the model said dog
    if path_kind == "call":
        call = lambda s: s.add(GOOD, label="cat", score=vector)  # noqa: E731
        where = "image 0"
    else:
        call = lambda s: s.add_batch(  # noqa: E731
            [GOOD] * 3, labels=["dog", "cat", "dog"], scores=[vector] * 3
        )
        where = "image 1"
    message = (
        f"{where}'s label 'cat' is not the highest of its score vector \\('dog' has 0.7, 'cat' "
        "0.3\\).*argmax_labels=False"
    )
    check_rejected(store_path, call, InvalidInputError, message)
    # A decision rule of one's own (a threshold) says so at open, and its stores still merge.
    with h5store.open(store_path, "a", argmax_labels=False) as store:
        (image_id,) = np.atleast_1d(call(store))[1:2] if path_kind == "batch" else [call(store)]
    with h5store.open(store_path) as store:
        assert store.record(int(image_id)).label == "cat"
        assert store.record(int(image_id)).scores.tolist() == pytest.approx(vector)
        n = len(store)
    merged = Path(store_path).with_name("merged.h5")
    h5store.merge([store_path], merged)  # copies what the store holds, as it is
    with h5store.open(merged) as store:
        assert len(store) == n and store.record(int(image_id)).label == "cat"


def test_argmax_labels_must_be_a_bool(store_path):
    with pytest.raises(InvalidInputError, match="argmax_labels"):
        h5store.open(store_path, "w", argmax_labels="no")
    assert not Path(store_path).exists()
