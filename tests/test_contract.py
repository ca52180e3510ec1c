"""The read contract: one file and a sharded view answer the same calls the same way."""

import inspect
import subprocess
import sys

import numpy as np
import pytest
from shards_util import write_shards, write_single

import h5store
from h5store import ReadableStore
from h5store.sharded import ShardedStore


def _members() -> list[str]:
    return sorted(
        name
        for name in vars(ReadableStore)
        if not name.startswith("_")
        or name in {"__len__", "__contains__", "__iter__", "__getitem__", "__enter__", "__exit__"}
    )


@pytest.fixture
def shards(tmp_path):
    return write_shards(tmp_path)


@pytest.fixture
def single(tmp_path):
    return write_single(tmp_path / "single.h5")


@pytest.mark.parametrize("many", [False, True])
def test_both_store_types_implement_every_member_with_its_signature(shards, single, many):
    assert len(_members()) == 26  # the protocol was read whole
    with h5store.open(shards if many else single) as store:
        missing = [name for name in _members() if not hasattr(store, name)]
    cls = type(store)
    assert not missing, (cls.__name__, missing)
    for name in _members():
        declared = getattr(ReadableStore, name)
        implemented = getattr(cls, name, None)
        if inspect.isfunction(declared):
            want = inspect.signature(declared).parameters
            got = inspect.signature(implemented).parameters
            assert list(want)[: len(got)] == list(got)[: len(want)], (cls.__name__, name)
            for param in want.values():
                if param.kind is param.KEYWORD_ONLY:
                    assert param.name in got, (cls.__name__, name, param.name)


def test_open_returns_the_contract_for_a_file_and_for_shards(shards, single):
    with h5store.open(single) as one, h5store.open(shards) as view:
        assert isinstance(one, ReadableStore) and isinstance(view, ReadableStore)
        assert isinstance(view, ShardedStore)


def test_the_view_answers_scores_sources_and_codecs_as_the_file(shards, single):
    with h5store.open(shards) as view, h5store.open(single) as one:
        assert view.labels == one.labels
        np.testing.assert_array_equal(view.scores, one.scores)
        assert view.sources == one.sources
        for label in one.labels:
            assert view.codec_of(label).get_config() == one.codec_of(label).get_config()
        with pytest.raises(h5store.InvalidInputError):
            view.codec_of("no such class")
        frame_v, frame_o = view.to_pandas(scores=True), one.to_pandas(scores=True)
        score_columns = [c for c in frame_o.columns if c.startswith("score:")]
        assert (
            score_columns
            and [c for c in frame_v.columns if c.startswith("score:")] == score_columns
        )
        np.testing.assert_array_equal(frame_v[score_columns].values, frame_o[score_columns].values)


def test_the_view_writes_sql_rows_that_name_each_shard(shards, tmp_path):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    url = f"sqlite:///{tmp_path / 'index.db'}"
    with h5store.open(shards) as view:
        assert view.to_sql(url) == len(view)
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text("select store, id, ref from images")).all()
            vectors = conn.execute(sqlalchemy.text("select count(*) from images_scores")).scalar()
        engine.dispose()
        owner = {i: s.path for s in view.shards for i in s.ids().tolist()}
        assert sorted(r.id for r in rows) == sorted(view.ids().tolist())
        for store, image_id, ref in rows:
            assert store == str(tmp_path / owner[image_id]) or store.endswith(owner[image_id])
            assert np.array_equal(h5store.load(ref), view[image_id])
        assert vectors == int((~np.isnan(view.scores)).sum())


def test_the_view_refreshes_what_a_writer_added_to_a_shard(shards):
    with h5store.open(shards) as view:
        before = len(view)
        # another process writes (HDF5 opens a file once per process)
        code = (
            "import sys, numpy as np, h5store\n"
            "with h5store.open(sys.argv[1], 'a') as w:\n"
            "    w.add(np.zeros((32, 32, 3), np.uint8), label=w.labels[0], id=999)\n"
        )
        subprocess.run([sys.executable, "-c", code, str(shards[0])], check=True, timeout=120)
        assert 999 not in view
        view.refresh()
        assert len(view) == before + 1 and view[999].shape == (32, 32, 3)
