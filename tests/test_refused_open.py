"""A refused open changes nothing (issue 22, item 4): every argument of ``h5store.open`` is
validated before the file is created or truncated, and a refusal holds no writer lock, even
while the exception (whose traceback keeps the half-made store alive) is still referenced and
the garbage collector is off."""

import gc

import h5py
import numpy as np
import pytest
from conftest import file_digest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import h5store
from h5store._file import WriterLock
from h5store.codecs.deflate import DeflateCodec
from h5store.errors import CodecError, H5StoreError, InvalidInputError


class HugeConfigCodec(DeflateCodec):
    """A codec whose configuration does not fit the file's codec_config field."""

    def get_config(self):
        return {**super().get_config(), "padding": "x" * 1000}


BAD_ARGUMENTS = {
    "label with NUL": (dict(labels=["ok", "bad\x00"]), InvalidInputError, "NUL"),
    "label too long": (dict(labels=["x" * 256]), InvalidInputError, "255"),
    "empty label": (dict(labels=[""]), InvalidInputError, "empty"),
    "labels as one string": (dict(labels="cat"), InvalidInputError, "sequence"),
    "labels not a sequence": (dict(labels=7), InvalidInputError, "sequence"),
    "label not a string": (dict(labels=[b"cat"]), InvalidInputError, "string"),
    "unknown codec": (dict(codec="nope"), CodecError, "unknown codec"),
    "codec not a name": (dict(codec=3), CodecError, "unknown codec"),
    "quality out of range": (dict(quality=0), CodecError, "quality"),
    "quality not an integer": (dict(quality="high"), CodecError, "quality"),
    "quality for a lossless codec": (dict(codec="png", quality=101), CodecError, "quality"),
    "unknown codec option": (dict(codec="png", effortt=3), CodecError, "effortt"),
    "codec configuration too large": (dict(codec=HugeConfigCodec()), CodecError, "512"),
    "locking": (dict(locking="yes"), InvalidInputError, "locking"),
    "verify_reads not a bool": (dict(verify_reads="no"), InvalidInputError, "verify_reads"),
    "durability": (dict(durability="eventually"), InvalidInputError, "durability"),
    "channel_order": (dict(channel_order="grb"), InvalidInputError, "channel_order"),
    "argmax_labels not a bool": (dict(argmax_labels="yes"), InvalidInputError, "argmax_labels"),
    "group_commit not a GroupCommit": (dict(group_commit=64), InvalidInputError, "GroupCommit"),
    "mode": (dict(mode="rw"), InvalidInputError, "mode"),
    "mode not a string": (dict(mode=["w"]), InvalidInputError, "mode"),
}


@pytest.fixture
def filled(tmp_path):
    path = tmp_path / "store.h5"
    with h5store.open(path, "w", codec="png") as store:
        store.add_batch(np.arange(5 * 16, dtype=np.uint8).reshape(5, 4, 4), labels=["a"] * 5)
    return path


def _refused_and_untouched(path, kwargs, error=H5StoreError, match=None):
    before = file_digest(path)
    gc.disable()
    try:
        with pytest.raises(error, match=match) as refused:
            h5store.open(path, **kwargs)
        # the exception (and the frames it holds) is alive, the collector off: still unlocked
        assert not WriterLock.is_held(path)
        assert file_digest(path) == before
        with h5store.open(path, "a") as store:
            assert len(store) == 5
        del refused
    finally:
        gc.enable()


@pytest.mark.parametrize("mode", ["w", "a", "r+", "x", "r"])
@pytest.mark.parametrize("kind", sorted(BAD_ARGUMENTS))
def test_a_bad_argument_leaves_the_store_as_it_was_and_unlocked(filled, kind, mode):
    kwargs, error, match = BAD_ARGUMENTS[kind]
    _refused_and_untouched(filled, {"mode": mode, **kwargs}, error, match)


def test_the_issue_case_truncates_nothing(filled):
    """open(existing, "w", labels=["bad\\x00"]) used to empty the store and keep it locked."""
    _refused_and_untouched(filled, dict(mode="w", labels=["bad\x00"]), InvalidInputError)
    with h5store.open(filled) as store:
        assert store.ids().tolist() == [0, 1, 2, 3, 4]


def test_bad_arguments_for_shards_are_refused_too(filled):
    for kwargs in (dict(labels="ab"), dict(quality=0), dict(verify_reads=None)):
        with pytest.raises(H5StoreError):
            h5store.open([filled, filled], **kwargs)
    with pytest.raises(InvalidInputError, match="path"):
        h5store.open([filled, 3])


def test_a_path_that_is_no_file_name_is_refused(tmp_path):
    for path in ("", str(tmp_path / "a\x00b.h5"), 3.5):
        with pytest.raises(InvalidInputError, match="path"):
            h5store.open(path, "w")
    assert list(tmp_path.iterdir()) == []


def test_a_store_refused_after_opening_releases_its_lock_at_once(filled):
    """A refusal after the writer opened the file (damage found while loading) closes it."""
    with h5py.File(filled, "r+") as f:
        row = f["stacks"][0]
        row["label"] = 99  # a class id past the labels
        f["stacks"][0] = row
    before = file_digest(filled)
    gc.disable()
    try:
        with pytest.raises(h5store.FormatError, match="stacks") as refused:
            h5store.open(filled, "a")
        assert not WriterLock.is_held(filled)
        WriterLock(str(filled), create=False).release()  # a writer gets the lock at once
        assert file_digest(filled) == before
        del refused
    finally:
        gc.enable()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    good=st.lists(st.text(min_size=1, max_size=8).filter(lambda s: "\x00" not in s), max_size=4),
    bad=st.sampled_from(["", "a\x00", "é" * 200, 5, None, b"x"]),
    where=st.integers(0, 4),
    mode=st.sampled_from(["w", "a", "r+"]),
)
def test_any_bad_label_list_is_refused_before_the_file_is_touched(filled, good, bad, where, mode):
    labels = list(good)
    labels.insert(min(where, len(labels)), bad)
    _refused_and_untouched(filled, dict(mode=mode, labels=labels), InvalidInputError)
