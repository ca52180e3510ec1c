"""Group commit (durability="group", the default): add calls validate and return at once, the
images become durable together at commit(), flush(), close() or a GroupCommit bound, and a
group store ends exactly as a store that committed every call would."""

import subprocess
import sys
import textwrap
import time

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import h5store
from h5store import GroupCommit

READER = textwrap.dedent(
    """
    import sys, h5store
    with h5store.open(sys.argv[1]) as s:
        print(len(s))
    """
)


def images_seen_by_another_process(path) -> int:
    out = subprocess.run(
        [sys.executable, "-c", READER, str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def image(seed: int, shape=(8, 8, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def test_adds_return_at_once_and_become_durable_at_commit(tmp_path):
    path = tmp_path / "s.h5"
    with h5store.open(path, "w", codec="png") as store:
        store.add(image(0), label="cat", score=0.9)
        store.commit()  # (a new file admits readers from its first commit on)
        first = store.add(image(1), label="dog")
        more = store.add_batch(np.stack([image(2), image(3)]), labels=["dog", "cat"])
        assert (first, more.tolist()) == (1, [2, 3])
        assert store.pending == 3
        assert images_seen_by_another_process(path) == 1  # the pending three are not on disk
        store.commit()
        assert store.pending == 0
        assert images_seen_by_another_process(path) == 4
        store.add(image(4), label="dog")
        store.flush()  # h5py's name for it
        assert images_seen_by_another_process(path) == 5
        store.add(image(5), label="dog")
    with h5store.open(path) as store:  # close committed the last one
        assert len(store) == 6 and np.array_equal(store[5], image(5))
        assert store.record(0).score == pytest.approx(0.9)


def test_durability_call_commits_in_every_call(tmp_path):
    path = tmp_path / "s.h5"
    with h5store.open(path, "w", codec="png", durability="call") as store:
        store.add(image(0), label="cat")
        store.add(image(1), label="cat")
        assert store.pending == 0
        assert images_seen_by_another_process(path) == 2


@pytest.mark.parametrize(
    "bounds, sleep",
    [
        (GroupCommit(images=3), 0),
        (GroupCommit(nbytes=3 * 192), 0),
        (GroupCommit(seconds=0.05), 0.1),
    ],
    ids=["images", "bytes", "seconds"],
)
def test_a_group_is_committed_when_it_reaches_its_bound(tmp_path, bounds, sleep):
    path = tmp_path / "s.h5"
    with h5store.open(path, "w", codec="png", group_commit=bounds) as store:
        store.add(image(9), label="cat")
        store.commit()
        for k in range(3):
            store.add(image(k), label="cat")
        assert store.pending == 3
        time.sleep(sleep)
        # The bound is checked on what was pending before the call: the three are written,
        # the fourth keeps encoding.
        store.add(image(3), label="cat")
        assert store.pending == 1
        assert images_seen_by_another_process(path) == 4


def test_reads_on_the_writing_store_see_its_pending_images(tmp_path):
    with h5store.open(tmp_path / "s.h5", "w", codec="png") as store:
        image_id = store.add(image(0), label="cat")
        assert np.array_equal(store[image_id], image(0))  # commits first
        store.add(image(1), label="cat", id=7)
        assert len(store) == 2 and 7 in store and store.pending == 0
        store.add(image(2), label="dog", id=9)
        store.delete(9)  # a pending id can be deleted
        assert list(store) == [0, 7]


def test_bad_input_raises_in_its_call_and_leaves_nothing_pending(tmp_path):
    path = tmp_path / "s.h5"
    with h5store.open(path, "w", codec="png", labels=["cat", "dog"]) as store:
        store.add(image(0), label="cat", id=5)
        before = store.pending
        bad_calls = [
            lambda: store.add(image(1), label="cta"),  # not a declared label
            lambda: store.add(image(1), label="cat", id=5),  # id pending already
            lambda: store.add(image(1), label="cat", score=1.5),
            lambda: store.add(image(1), label="cat", score=[0.5, 0.2, 0.3]),  # 3 for 2 labels
            lambda: store.add(image(1).astype(np.float32), label="cat"),
            lambda: store.add_batch([image(1), image(2)], labels=["cat"], ids=[6, 7]),
            lambda: store.add_batch([image(1), image(2)], labels=["cat", "dog"], ids=[6, 5]),
            lambda: store.add_encoded(b"not a png", label="cat"),
            lambda: store.add(image(1), label="cat", source="x/\ud800.png"),  # not UTF-8
            lambda: store.add_batch([image(1)], labels=["cat"], sources=["\ud800"]),
        ]
        for call in bad_calls:
            with pytest.raises(h5store.InvalidInputError):
                call()
            assert store.pending == before
        assert store.add(image(1), label="dog") == 6  # no id was taken by a refused call
    with h5store.open(path) as store:
        assert list(store) == [5, 6]


def test_a_group_of_several_classes_and_shapes_lands_as_one_batch(tmp_path):
    path = tmp_path / "s.h5"
    with h5store.open(path, "w", codec="png") as store:
        store.add(image(0, (5, 6)), label="a", source="x/0.png")
        store.add_batch([image(1), image(2, (4, 4))], labels=["b", "a"], true_labels=["a", None])
        store.add(image(3), label="new", true_label="newer", score=0.25)
        store.commit()
        assert store.labels == ("a", "b", "new", "newer")
        assert store.sources == ["x/0.png", None, None, None]
    with h5store.open(path) as store:
        assert store.verify().ok
        assert [store.record(k).label for k in range(4)] == ["a", "b", "a", "new"]
        assert [store.record(k).true_label for k in range(4)] == [None, "a", None, "newer"]
        for k, shape in enumerate([(5, 6), (8, 8, 3), (4, 4), (8, 8, 3)]):
            assert np.array_equal(store[k], image(k, shape))


# One operation of a user's loop: (kind, label, score, true label, explicit id); labels and
# ids are drawn from small sets so that duplicates, new labels and closed sets happen.
operation = st.tuples(
    st.sampled_from(["add", "add_encoded", "add_batch"]),
    st.sampled_from(["cat", "dog", 0, 1, 5, "", "new"]),
    st.one_of(
        st.none(),
        st.floats(-0.5, 1.5),
        st.just(float("nan")),
        st.lists(st.floats(0, 1), min_size=2, max_size=3),
        # vectors whose argmax is "cat" or "dog" (an argmax other than the label is refused)
        st.sampled_from([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.6, 0.3, 0.1]]),
    ),
    st.sampled_from([None, "cat", "dog", -1, 7, "other"]),
    st.one_of(st.none(), st.integers(-1, 6)),
)


def _apply(store, kind, label, score, true_label, image_id, k):
    pixels = image(k, (4, 4, 3))
    if kind == "add":
        return store.add(pixels, label=label, score=score, true_label=true_label, id=image_id)
    if kind == "add_encoded":
        import imagecodecs

        return store.add_encoded(
            imagecodecs.png_encode(pixels),
            label=label,
            score=score,
            true_label=true_label,
            id=image_id,
        )
    return store.add_batch(
        [pixels],
        labels=[label],
        scores=None if score is None else [score],
        true_labels=[true_label],
        ids=None if image_id is None else [image_id],
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(operation, min_size=1, max_size=12), st.booleans())
def test_group_and_call_stores_accept_refuse_and_store_alike(tmp_path_factory, ops, declared):
    """The one-image fast path and the batch path validate alike: the same calls are refused
    with the same errors, and both stores end with the same rows and pixels."""
    folder = tmp_path_factory.mktemp("same")
    outcomes = {}
    for durability in ("call", "group"):
        path = folder / f"{durability}.h5"
        labels = ["cat", "dog"] if declared else None
        results = []
        with h5store.open(path, "w", codec="png", labels=labels, durability=durability) as s:
            for k, op in enumerate(ops):
                try:
                    got = _apply(s, *op, k)
                    results.append(np.atleast_1d(got).tolist())
                except h5store.H5StoreError as exc:
                    results.append((type(exc).__name__, str(exc)))
        with h5store.open(path) as s:
            frame = s.to_pandas()
            pixels = [s[i].tolist() for i in s]
            outcomes[durability] = (results, s.labels, frame.to_csv(), pixels)
    call, group = outcomes["call"], outcomes["group"]
    assert group[0] == call[0]  # same ids returned, same errors
    assert group[1:] == call[1:]


@pytest.mark.parametrize(
    "bounds",
    [dict(images=0), dict(nbytes=-1), dict(seconds=0), dict(images=1.5), dict(seconds="1")],
)
def test_group_commit_bounds_are_checked(bounds):
    with pytest.raises(h5store.InvalidInputError, match="group commit"):
        GroupCommit(**bounds)


def test_the_caller_may_reuse_its_arrays_as_soon_as_an_add_returns(tmp_path):
    """Images are encoded after an add returns (on the pool, with the group): what is stored
    must be what the caller passed, even if it then refills the same buffer, as a DataLoader
    loop or an OpenCV loop drawing on its frame does."""
    path = tmp_path / "s.h5"
    expected = {}
    buffer = np.empty((40, 16, 16, 3), dtype=np.uint8)  # more images than one inline slice
    with h5store.open(path, "w", codec="png") as store:
        for step in range(3):
            buffer[:] = np.stack([image(100 * step + k, (16, 16, 3)) for k in range(40)])
            ids = store.add_batch(buffer, labels=["cat"] * 40)
            expected.update(zip(ids.tolist(), buffer.copy()))
            as_list = list(buffer)  # a list of views of the same buffer
            ids = store.add_batch(as_list, labels=["dog"] * 40, channel_order="bgr")
            expected.update(zip(ids.tolist(), buffer[..., ::-1].copy()))
        frame = np.empty((16, 16, 3), dtype=np.uint8)
        for k in range(20):  # more than one pool task's worth of one-image calls
            frame[:] = image(1000 + k, (16, 16, 3))
            expected[store.add(frame, label="cat")] = frame.copy()
        assert store.pending == len(expected)
        buffer[:] = 0
        frame[:] = 0
    with h5store.open(path) as store:
        changed = [i for i, pixels in expected.items() if not np.array_equal(store[i], pixels)]
        assert changed == []


def test_an_image_its_codec_fails_to_encode_fails_its_own_call(tmp_path, monkeypatch):
    """An encoder failure (a fault the codecs' own checks cannot foresee, caused here by a
    patched encode) raises from the add_batch that passed the image, naming it, and leaves
    nothing of that call pending."""
    path = tmp_path / "s.h5"
    with h5store.open(path, "w", codec="png") as store:
        store.add_batch([image(k) for k in range(3)], labels=["cat"] * 3)
        codec = store.codec_of("cat")
        real = type(codec).encode

        def encode(self, pixels):
            if pixels[0, 0, 0] == 7:
                raise h5store.CodecError("the encoder failed")
            return real(self, pixels)

        monkeypatch.setattr(type(codec), "encode", encode)
        batch = [image(10 + k) for k in range(40)]
        batch[29][0, 0, 0] = 7
        with pytest.raises(h5store.CodecError, match="image 29: the encoder failed"):
            store.add_batch(batch, labels=["cat"] * 40)
        assert store.pending == 3
        monkeypatch.undo()
        assert store.add(image(99), label="cat") == 3  # no id was taken by the refused call
    with h5store.open(path) as store:
        assert list(store) == [0, 1, 2, 3]
