"""The index in a SQL database: SQLite, and a real PostgreSQL server that .ci/run starts
(.ci/postgres.sh; H5STORE_TEST_POSTGRES_URL). Under CI a missing server is a failure."""

import os
import subprocess
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import sqlalchemy as sa
from conftest import photo_crops
from hypothesis import given
from hypothesis import strategies as st

import h5store

LABELS = ["cat", "dog", "ünï/x"]


@pytest.fixture
def scored_store(tmp_path):
    images, _ = photo_crops()
    rng = np.random.default_rng(3)
    vectors = rng.dirichlet(np.ones(3), size=12).astype(np.float32)
    predicted = vectors.argmax(axis=1).tolist()
    truth = [LABELS[(p + (k % 3 == 0)) % 3] for k, p in enumerate(predicted)]
    path = tmp_path / "run.h5"
    with h5store.open(path, "w", labels=LABELS) as store:
        store.add_batch(
            images[:12],
            labels=predicted,
            scores=vectors,
            true_labels=truth,
            sources=[f"cam/{k}" for k in range(12)],
        )
        store.add(images[12], label="cat", score=0.5)  # no vector, no truth
        store.delete([4])
    return path


def select(url, query):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(query))]
    finally:
        engine.dispose()


def test_every_live_image_is_one_row_and_vectors_are_long_form(scored_store, url):
    with h5store.open(scored_store) as store:
        assert store.to_sql(url) == 12
        frame = store.to_pandas()
        vectors = store.scores
        records = {i: store.record(i) for i in store.ids().tolist()}
    rows = select(
        url,
        "SELECT id, label, true_label, score, correct, height, width, channels, "
        "dtype, codec, bytes, crc32, hdf5_path, position, source, store "
        "FROM images ORDER BY id",
    )
    assert [r[0] for r in rows] == frame["id"].tolist() and 4 not in [r[0] for r in rows]
    for r in rows:
        rec = records[r[0]]
        assert r[1:5] == (rec.label, rec.true_label, pytest.approx(rec.score), rec.correct)
        assert r[5:8] == (rec.shape[0], rec.shape[1], rec.shape[2])
        assert r[8:15] == (
            rec.dtype,
            rec.codec,
            rec.nbytes,
            rec.crc32,
            rec.stack,
            rec.position,
            rec.source,
        )
        assert r[15] == str(scored_store) and os.path.isabs(r[15])
    long = select(url, "SELECT id, label, score FROM images_scores ORDER BY id, label")
    with_vectors = [i for i, rec in records.items() if rec.scores is not None]
    assert len(long) == 3 * len(with_vectors)
    for image_id, label, score in long:
        k = list(store.labels).index(label)
        assert score == pytest.approx(float(vectors[list(records).index(image_id), k]))
    # docs/sharing.md's query: confident but wrong, straight from SQL
    wrong = select(url, "SELECT id FROM images WHERE score >= 0.5 AND NOT correct ORDER BY id")
    with h5store.open(scored_store) as store:
        assert [r[0] for r in wrong] == store.query(min_score=0.5, correct=False).tolist()


def test_an_existing_table_is_an_error_and_nothing_is_half_written(scored_store, url):
    with h5store.open(scored_store) as store:
        store.to_sql(url)
        with pytest.raises(h5store.TargetExistsError, match="if_exists"):
            store.to_sql(url)
        # append of the same ids breaks the primary key halfway: the transaction rolls back
        with pytest.raises(h5store.DatabaseError, match="nothing was written"):
            store.to_sql(url, if_exists="append")
        assert select(url, "SELECT count(*) FROM images") == [(12,)]
        assert store.to_sql(url, if_exists="replace") == 12
        assert select(url, "SELECT count(*) FROM images") == [(12,)]
        # a failure after the tables were created and the image rows written leaves neither
        engine = sa.create_engine(url)

        @sa.event.listens_for(engine, "before_cursor_execute")
        def fail_on_scores(conn, cursor, statement, *args):
            if statement.startswith("INSERT INTO fresh_scores"):
                raise RuntimeError("simulated failure")

        with pytest.raises(RuntimeError, match="simulated"):
            store.to_sql(engine, table="fresh")
        assert not sa.inspect(engine).has_table("fresh")
        assert not sa.inspect(engine).has_table("fresh_scores")
        engine.dispose()


def test_bad_urls_and_unreachable_servers_are_clear_errors(scored_store):
    with h5store.open(scored_store) as store:
        with pytest.raises(h5store.InvalidInputError, match="not a usable database URL"):
            store.to_sql("not a url")
        with pytest.raises(h5store.InvalidInputError, match="if_exists"):
            store.to_sql("sqlite://", if_exists="sometimes")
        with pytest.raises(h5store.DatabaseError, match="cannot write to"):
            store.to_sql("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")


def test_index_on_the_command_line(scored_store, url):
    run = [sys.executable, "-m", "h5store.cli", "index", str(scored_store), "--sql", url]
    result = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote 12 rows to 'images' and 'images_scores'" in result.stdout
    again = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    assert select(url, "SELECT count(*) FROM images") == [(12,)]


def test_a_row_leads_back_to_its_pixels_from_anywhere(scored_store, url, tmp_path, monkeypatch):
    monkeypatch.chdir(scored_store.parent)
    with h5store.open("run.h5") as store:  # opened by a relative path
        store.to_sql(url)
        pixels = {i: store[i] for i in store.ids().tolist()}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # docs/sharing.md's example: from a query to the pixels.
    rows = select(url, "SELECT ref, store, id FROM images WHERE NOT correct ORDER BY id")
    assert rows
    for ref, store_path, image_id in rows:
        assert store_path == str(scored_store) and ref == f"{store_path}#{image_id}"
        np.testing.assert_array_equal(h5store.load(ref), pixels[image_id])
        with h5store.open(store_path) as store:
            np.testing.assert_array_equal(store[image_id], pixels[image_id])
    ref, _, image_id = rows[0]
    shown = subprocess.run(
        [sys.executable, "-m", "h5store.cli", "show", ref, "-o", "seen.png"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(h5store.__file__).parents[1])},
    )
    assert shown.returncode == 0, shown.stderr
    np.testing.assert_array_equal(
        imagecodecs.png_decode(Path("seen.png").read_bytes()), pixels[image_id]
    )
    # The BGR handle of an OpenCV user, through the same reference.
    np.testing.assert_array_equal(
        h5store.load(ref, channel_order="bgr"), pixels[image_id][..., ::-1]
    )


@given(
    path=st.text(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1
    ),
    image_id=st.integers(0, 2**63 - 1),
)
def test_a_reference_names_its_path_and_id_whatever_the_path_holds(path, image_id):
    ref = h5store.image_ref(path, image_id)
    assert h5store.parse_ref(ref) == (os.path.abspath(path), image_id)


@pytest.mark.parametrize(
    "ref", ["run.h5", "run.h5#", "#12", "run.h5#-1", "run.h5#x1", "run.h5#\u00b2", 12, None]
)
def test_a_malformed_reference_is_a_clear_error(ref):
    with pytest.raises(h5store.InvalidInputError, match="not an image reference"):
        h5store.load(ref)
