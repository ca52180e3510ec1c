"""h5store.merge: shards -> one store, stored bytes copied as they are, all or nothing."""

import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import assert_every_source_checked, file_digest
from shards_util import assert_same_images, write_shards, write_single

import h5store
from h5store.cli import main


@pytest.fixture
def shards(tmp_path):
    return write_shards(tmp_path)


def test_merge_of_three_shards_equals_one_store_written_with_the_same_calls(tmp_path, shards):
    single = write_single(tmp_path / "single.h5")
    out = h5store.merge(shards, tmp_path / "merged.h5")
    with h5store.open(out) as merged, h5store.open(single) as one, h5store.open(shards) as view:
        assert_same_images(merged, one)
        assert_same_images(merged, view)
        assert merged.query(correct=False).tolist() == one.query(correct=False).tolist()
        assert merged.index["deleted"].sum() == 0  # deleted images are left out
        assert (
            merged.codec_of("cat").codec_id == "png"
            and merged.codec_of("coffee").codec_id == "jpeg"
        )
        assert merged.verify().ok
    assert_every_source_checked(out)
    assert sorted(os.listdir(tmp_path)) == [
        "merged.h5",
        "shard0.h5",
        "shard1.h5",
        "shard2.h5",
        "single.h5",
    ]


def test_renumber_numbers_in_shard_order(tmp_path, shards):
    out = h5store.merge(shards, tmp_path / "merged.h5", renumber=True)
    with h5store.open(out) as merged, h5store.open(shards) as view:
        assert merged.ids().tolist() == list(range(len(view)))
        assert_same_images(view, merged, ids_b=merged.ids())


def _overlapping(tmp_path):
    other = str(tmp_path / "other.h5")
    with h5store.open(other, "w") as store:
        store.add_batch(np.zeros((2, 8, 8), np.uint8), labels=["a", "b"], ids=[50, 103])
    return other


def test_duplicate_ids_are_refused_before_anything_is_written(tmp_path, shards):
    other = _overlapping(tmp_path)
    before = [file_digest(p) for p in [*shards, other]]
    with pytest.raises(h5store.DuplicateIdError, match=r"id 103 .*shard2\.h5.*other\.h5"):
        h5store.merge([*shards, other], tmp_path / "merged.h5")
    assert [file_digest(p) for p in [*shards, other]] == before
    assert not any(name.startswith((".merged", "merged")) for name in os.listdir(tmp_path))
    out = h5store.merge([*shards, other], tmp_path / "merged.h5", renumber=True)
    with h5store.open(out) as merged:
        assert len(merged) == 33 + 2 and merged.labels[-2:] == ("a", "b")


def test_different_codecs_for_one_class_is_a_clear_error(tmp_path, shards):
    other = str(tmp_path / "other.h5")
    with h5store.open(other, "w", codec="png") as store:
        store.add(np.zeros((8, 8, 3), np.uint8), label="coffee", id=500)
    with pytest.raises(
        h5store.CodecError, match=r"class 'coffee' .*jpeg.*shard0\.h5.*png.*other\.h5"
    ):
        h5store.merge([*shards, other], tmp_path / "merged.h5")
    assert not os.path.exists(tmp_path / "merged.h5")


def test_score_vectors_over_different_labels_are_a_clear_error(tmp_path, shards):
    other = str(tmp_path / "other.h5")
    with h5store.open(other, "w", labels=["x", "y"]) as store:
        store.add(np.zeros((8, 8), np.uint8), label="x", score=[0.9, 0.1], id=500)
    with pytest.raises(
        h5store.InvalidInputError, match=r"score vectors over .*other\.h5 over \['x', 'y'\]"
    ):
        h5store.merge([*shards, other], tmp_path / "merged.h5")
    with pytest.raises(h5store.InvalidInputError, match="score vectors"):
        h5store.open([*shards, other])


def test_existing_out_is_refused(tmp_path, shards):
    out = tmp_path / "merged.h5"
    out.write_bytes(b"keep me")
    with pytest.raises(h5store.StoreExistsError):
        h5store.merge(shards, out)
    assert out.read_bytes() == b"keep me"


def test_damaged_shard_fails_and_leaves_no_out(tmp_path, shards):
    with h5store.open(shards[0]) as store:
        record = store.record(0)
        offset = int(store.index["offset"][0])
    with open(shards[0], "r+b") as fh:  # flip a byte inside image 0's stored bytes
        fh.seek(offset + record.nbytes // 2)
        byte = fh.read(1)
        fh.seek(offset + record.nbytes // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(
        h5store.DamagedImageError, match=r"shard0\.h5: image 0 \(id 0\) does not match its CRC-32"
    ):
        h5store.merge(shards, tmp_path / "merged.h5")
    assert sorted(os.listdir(tmp_path)) == ["shard0.h5", "shard1.h5", "shard2.h5"]


def test_a_damaged_source_in_a_shard_fails_and_leaves_no_out(tmp_path, shards):
    with h5py.File(shards[1], "r", locking=False) as f:
        where = f["sources"].id.get_chunk_info(0).byte_offset
    with open(shards[1], "r+b") as fh:
        fh.seek(where)
        fh.write(bytes(16))  # row 0's string reference: it would read as "no source"
    with pytest.raises(h5store.FormatError, match=r"shard1\.h5: /sources row 0 \(image 1\)"):
        h5store.merge(shards, tmp_path / "merged.h5")
    assert sorted(os.listdir(tmp_path)) == ["shard0.h5", "shard1.h5", "shard2.h5"]


KILL_AFTER_FIRST_COMMIT = """
import os, signal, sys
import h5store._merge as m
real = m.add_stored
def add_then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
m.add_stored = add_then_die
m.merge(sys.argv[1:-1], sys.argv[-1])
"""


def test_merge_killed_with_sigkill_leaves_no_out_and_intact_shards(tmp_path, shards):
    before = [file_digest(p) for p in shards]
    out = tmp_path / "merged.h5"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_FIRST_COMMIT, *shards, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()
    assert [file_digest(p) for p in shards] == before
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".merged.h5.merging-")]
    assert len(leftovers) == 1  # the temporary file, which had images in it when killed
    assert h5store.merge(shards, out) == str(out)  # and the merge can simply be rerun
    with h5store.open(out) as merged, h5store.open(shards) as view:
        assert_same_images(merged, view)


def test_cli_merge(tmp_path, shards, capsys):
    out = str(tmp_path / "merged.h5")
    assert main(["merge", *shards, out, "--quiet"]) == 0
    assert "merged 3 shards" in capsys.readouterr().out
    assert (
        main(["merge", *shards, str(tmp_path / "again.h5"), "--quiet", "--renumber", "--json"]) == 0
    )
    assert main(["merge", *shards, out, "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
