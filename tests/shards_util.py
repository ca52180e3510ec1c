"""Shards for the merge and sharded-view tests, and the single store the same calls make."""

from __future__ import annotations

from functools import cache

import numpy as np

import h5store
from h5store.sample import sample_set

EXTRA = "not in the sample"


@cache
def sample():
    return sample_set(36, 32, seed=11)


def _vectors(store, scores: np.ndarray, names: list[str]) -> np.ndarray:
    """Score vectors (columns in ``names`` order) in the column order of ``store.labels``."""
    column = {n: k for k, n in enumerate(names)}
    return scores[:, [column[n] for n in store.labels[: scores.shape[1]]]]


def shard_calls():
    """What each of three writers adds: mixed codecs (class 'cat' is PNG, the rest JPEG,
    EXTRA is WebP), the label order differing between shards, (N, K) vectors in two shards
    and top-1 scores in the third, deletions, and caller-given ids (dataset indices)."""
    s = sample()
    names = list(s.class_names)
    return [
        {"labels": names, "ids": list(range(0, 24, 2)), "delete": [4, 10]},
        {"labels": names[::-1], "ids": list(range(1, 24, 2)), "delete": [7]},
        {"labels": [*names, EXTRA], "ids": list(range(100, 112)), "delete": [], "top1": True},
    ]


def _write(store, call, rows: slice) -> None:
    s = sample()
    store.create_class("cat", "png")
    labels = s.labels[rows]
    if call.get("top1"):
        labels = [EXTRA if k % 3 == 0 else label for k, label in enumerate(labels)]
        store.create_class(EXTRA, "webp", quality=80)
        scores = s.top1[rows]
    else:
        scores = _vectors(store, s.scores[rows], s.class_names)
    store.add_batch(
        s.images[rows],
        labels=labels,
        scores=scores,
        true_labels=s.true_labels[rows],
        ids=call["ids"],
        sources=[f"img/{i}.png" for i in call["ids"]],
    )
    if call["delete"]:
        store.delete(call["delete"])


def write_shards(folder) -> list[str]:
    paths = []
    for k, call in enumerate(shard_calls()):
        path = str(folder / f"shard{k}.h5")
        with h5store.open(path, "w", labels=call["labels"]) as store:
            _write(store, call, slice(12 * k, 12 * k + 12))
        paths.append(path)
    return paths


def write_single(path) -> str:
    """One store written with the shards' calls, one after the other."""
    with h5store.open(path, "w", labels=shard_calls()[0]["labels"]) as store:
        for k, call in enumerate(shard_calls()):
            _write(store, call, slice(12 * k, 12 * k + 12))
    return str(path)


def assert_same_images(a, b, *, ids_b=None) -> None:
    """Same labels, ids (or ``ids_b`` in b for a's ids), records, stored bytes and pixels."""
    assert a.labels == b.labels
    ids_a = a.ids()
    if ids_b is None:
        assert ids_a.tolist() == b.ids().tolist()
        ids_b = ids_a
    assert len(a) == len(b) == len(ids_a) == len(ids_b)
    for i, j in zip(ids_a.tolist(), ids_b.tolist()):
        ra, rb = a.record(i), b.record(j)
        for field in (
            "label",
            "true_label",
            "shape",
            "dtype",
            "codec",
            "nbytes",
            "crc32",
            "source",
        ):
            assert getattr(ra, field) == getattr(rb, field), (i, field)
        assert ra.score == rb.score or (ra.score is None and rb.score is None)
        if ra.scores is None:
            assert rb.scores is None
        else:
            np.testing.assert_array_equal(ra.scores, rb.scores)
        assert a.get_encoded(i) == b.get_encoded(j)
        np.testing.assert_array_equal(a[i], b[j])
