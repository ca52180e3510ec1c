"""h5store.open([...]): shards read as one store, answering like one file."""

import numpy as np
import pytest
from conftest import file_digest
from shards_util import EXTRA, assert_same_images, write_shards, write_single

import h5store
from h5store.sharded import ShardedStore


@pytest.fixture
def shards(tmp_path):
    return write_shards(tmp_path)


@pytest.fixture
def single(tmp_path):
    return write_single(tmp_path / "single.h5")


def test_view_answers_like_one_store_written_with_the_same_calls(shards, single):
    with h5store.open(shards) as view, h5store.open(single) as one:
        assert_same_images(view, one)
        assert list(view) == list(one)
        assert 4 not in view and 7 not in view and 5 in view and "5" not in view
        for query in (
            {},
            {"label": "cat"},
            {"label": ["cat", EXTRA]},
            {"true_label": 0},
            {"min_score": 0.5},
            {"max_score": 0.4},
            {"correct": False},
            {"correct": True},
        ):
            assert view.query(**query).tolist() == one.query(**query).tolist(), query
        columns = ["id", "label", "true_label", "score", "codec", "nbytes", "crc32", "deleted"]
        for column in columns:
            np.testing.assert_array_equal(view.index[column], one.index[column])
        frame_v, frame_o = view.to_pandas(include_deleted=True), one.to_pandas(include_deleted=True)
        assert frame_v.equals(frame_o)
        ids = view.ids()[::-1]
        for got, want in zip(view.get_batch(ids), one.get_batch(ids)):
            np.testing.assert_array_equal(got, want)
        out_v = view.get_batch(ids, out=np.zeros((len(ids), 32, 32, 3), np.uint8))
        np.testing.assert_array_equal(out_v, one.get_batch(ids, out=np.zeros_like(out_v)))
        report = view.verify()
        assert report.ok and report.checked == one.verify().checked
        stats_v, stats_o = view.stats(), one.stats()
        for key in ("images", "deleted", "labels", "images_per_label", "payload_bytes", "codecs"):
            assert stats_v[key] == stats_o[key], key


def test_view_record_scores_follow_the_united_label_order(shards):
    # shard1 declared the labels in reverse; the view's vectors are in view.labels order.
    with h5store.open(shards) as view, h5store.open(shards[1]) as shard:
        record = view.record(1)
        assert shard.labels == view.labels[:8][::-1]
        np.testing.assert_array_equal(record.scores, shard.record(1).scores[::-1])
        assert view.labels[int(np.argmax(record.scores))] == record.label


def test_view_refuses_overlapping_ids_naming_both_files(tmp_path, shards):
    other = str(tmp_path / "other.h5")
    with h5store.open(other, "w") as store:
        store.add_batch(np.zeros((2, 8, 8), np.uint8), labels=["a", "b"], ids=[50, 102])
    before = [file_digest(p) for p in [*shards, other]]
    with pytest.raises(h5store.DuplicateIdError, match=r"id 102 .*shard2\.h5.*other\.h5"):
        h5store.open([*shards, other])
    assert [file_digest(p) for p in [*shards, other]] == before


def test_deleted_id_may_live_in_another_shard(tmp_path, shards):
    other = str(tmp_path / "other.h5")
    with h5store.open(other, "w") as store:
        store.add(np.zeros((8, 8), np.uint8), label="a", id=4)  # 4 is deleted in shard0
    with h5store.open([*shards, other]) as view:
        assert 4 in view and view.record(4).label == "a"


@pytest.mark.parametrize("bad", [[], "one.h5", ["x.h5", "x.h5"]])
def test_view_refuses_bad_lists(bad):
    with pytest.raises(h5store.InvalidInputError):
        h5store.open(bad) if not isinstance(bad, str) else ShardedStore(bad)


def test_view_is_read_only(shards):
    with pytest.raises(h5store.InvalidInputError, match="read-only"):
        h5store.open(shards, "a")


def test_unknown_and_closed(shards):
    view = h5store.open(shards)
    with pytest.raises(h5store.UnknownIdError):
        view[4]
    with pytest.raises(h5store.UnknownIdError):
        view[[1]]
    view.close()
    assert view.closed
    with pytest.raises(h5store.ClosedStoreError):
        view[1]


def test_torch_dataset_and_loader_read_the_view(shards, single):
    torch = pytest.importorskip("torch")
    from h5store.torch import ImageStoreDataset

    ds_view = ImageStoreDataset(shards, target="true_label")
    ds_one = ImageStoreDataset(single, target="true_label")
    assert ds_view.classes == ds_one.classes and ds_view.ids.tolist() == ds_one.ids.tolist()
    for (a, ta), (b, tb) in zip(ds_view.loader(5), ds_one.loader(5)):
        assert torch.equal(a, b) and torch.equal(ta, tb)
    got = [ds_view[k] for k in range(len(ds_view))]
    want = [ds_one[k] for k in range(len(ds_one))]
    assert all(torch.equal(x, y) and s == t for (x, s), (y, t) in zip(got, want))
    batches = list(
        ds_view.loader(4, num_workers=2, shuffle=True, generator=torch.Generator().manual_seed(0))
    )
    assert sum(len(b[0]) for b in batches) == len(ds_one)
    ds_view.close()
    ds_one.close()
