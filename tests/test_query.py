"""Queries against a brute-force reference over random indexes."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import h5store

LABELS = ["cat", "dog", "a/b", "..", "ünï cödé"]


@st.composite
def populations(draw):
    n = draw(st.integers(1, 60))
    rows = []
    for _ in range(n):
        rows.append(
            (
                draw(st.sampled_from(LABELS)),
                draw(st.one_of(st.none(), st.sampled_from(LABELS))),
                draw(st.one_of(st.none(), st.floats(0, 1, width=32))),
            )
        )
    deleted = draw(st.sets(st.integers(0, n - 1), max_size=n // 3))
    return rows, deleted


@st.composite
def conditions(draw):
    cond = {}
    if draw(st.booleans()):
        cond["label"] = draw(
            st.one_of(
                st.sampled_from(LABELS), st.lists(st.sampled_from(LABELS), min_size=1, max_size=3)
            )
        )
    if draw(st.booleans()):
        cond["true_label"] = draw(st.sampled_from(LABELS))
    if draw(st.booleans()):
        cond["min_score"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        cond["max_score"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        cond["correct"] = draw(st.booleans())
    return cond


def matches(row, cond) -> bool:
    label, truth, score = row
    if "label" in cond:
        wanted = [cond["label"]] if isinstance(cond["label"], str) else cond["label"]
        if label not in wanted:
            return False
    if "true_label" in cond and truth != cond["true_label"]:
        return False
    if "min_score" in cond and (score is None or score < np.float32(cond["min_score"])):
        return False
    if "max_score" in cond and (score is None or score > np.float32(cond["max_score"])):
        return False
    if "correct" in cond and (truth is None or (label == truth) != cond["correct"]):
        return False
    return True


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(population=populations(), queries=st.lists(conditions(), min_size=1, max_size=6))
def test_query_matches_brute_force(tmp_path, population, queries):
    rows, deleted = population
    path = tmp_path / "q.h5"
    img = np.zeros((2, 2), np.uint8)
    ids = []
    with h5store.open(path, "w", codec="raw", labels=LABELS) as store:
        # one add per row: rows with and without scores cannot share a batch
        for label, truth, score in rows:
            ids.append(store.add(img, label=label, true_label=truth, score=score))
        store.delete([ids[k] for k in deleted])
    with h5store.open(path) as store:
        for cond in queries:
            expected = [
                i
                for k, (i, row) in enumerate(zip(ids, rows))
                if k not in deleted and matches(row, cond)
            ]
            assert store.query(**cond).tolist() == expected, cond


def test_confident_but_wrong(tmp_path):
    path = tmp_path / "c.h5"
    img = np.zeros((2, 2), np.uint8)
    with h5store.open(path, "w", codec="raw") as store:
        store.add_batch(
            [img] * 4,
            labels=["cat", "cat", "dog", "dog"],
            scores=[0.95, 0.99, 0.4, 0.97],
            true_labels=["dog", "cat", "cat", None],
        )
        assert store.query(min_score=0.9, correct=False).tolist() == [0]
        assert store.query(label="dog", max_score=0.5).tolist() == [2]
        assert store.query(true_label="cat").tolist() == [1, 2]


def test_query_rejects_unknown_labels(tmp_path):
    with h5store.open(tmp_path / "u.h5", "w", codec="raw") as store:
        store.add(np.zeros((2, 2), np.uint8), label="cat")
        with pytest.raises(h5store.InvalidInputError, match="'dog'"):
            store.query(label="dog")
        assert math.isnan(store.index["score"][0])
