"""h5store.repack / `h5store repack`: deleted images dropped, chunks copied as stored where the
codec stays, re-encoded where it changes, everything else kept; bad conversions refused before
anything is written."""

import json
import os
import shlex
import warnings

import numpy as np
import pytest
from conftest import assert_every_source_checked, file_digest, h5store_cli, photo_crops, psnr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import h5store
from h5store.sample import sample_set

LABELS = ["cat", "dog", "bird"]


def fill(path, n=24, codec="jpeg", delete=(), size=64, batch=8, **options):
    sample = sample_set(n, size, seed=5)
    rng = np.random.default_rng(2)
    vectors = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
    with h5store.open(path, "w", codec=codec, labels=LABELS, **options) as store:
        for start in range(0, n, batch):
            part = slice(start, start + batch)
            store.add_batch(
                sample.images[part],
                labels=vectors[part].argmax(axis=1).tolist(),
                scores=vectors[part],
                true_labels=[LABELS[k % 3] for k in range(start, start + batch)],
                ids=list(range(1000 + start, 1000 + start + batch)),
                sources=[f"cam/{k}" for k in range(start, start + batch)],
            )
        if delete:
            store.delete(list(delete))
    return path


def records(path):
    with h5store.open(path) as store:
        return store.labels, {
            i: repr(store.record(i)).split(", stack=")[0] for i in store.ids().tolist()
        }


def test_deleted_images_are_dropped_and_the_size_matches_a_store_of_the_live_ones(tmp_path):
    n, size = 400, 96
    src = fill(
        tmp_path / "src.h5", n=n, size=size, batch=50, delete=range(1000, 1000 + n, 2)
    )  # every other image
    with h5store.open(src) as store:
        live = store.ids().tolist()
        payloads = {i: store.get_encoded(i) for i in live}
    report = h5store.repack(src, tmp_path / "dst.h5", progress=False)
    assert (report.images, report.dropped_deleted, report.copied, report.reencoded) == (
        n // 2,
        n // 2,
        n // 2,
        0,
    )
    # the reference: a store written with only the live images, their bytes as they were
    with h5store.open(src) as store, h5store.open(tmp_path / "ref.h5", "w", labels=LABELS) as ref:
        for start in range(0, len(live), 50):
            part = live[start : start + 50]
            recs = [store.record(i) for i in part]
            ref.add_encoded_batch(
                [payloads[i] for i in part],
                labels=[r.label for r in recs],
                scores=np.array([r.scores for r in recs]),
                true_labels=[r.true_label for r in recs],
                ids=part,
                sources=[r.source for r in recs],
            )
    with h5store.open(tmp_path / "dst.h5") as out:
        assert out.ids().tolist() == live
        assert all(out.get_encoded(i) == payloads[i] for i in live)  # copied, not re-encoded
        assert out.verify().ok and out.stats()["deleted"] == 0
    dst_size, ref_size = os.path.getsize(tmp_path / "dst.h5"), os.path.getsize(tmp_path / "ref.h5")
    assert abs(dst_size - ref_size) <= 0.01 * ref_size, (dst_size, ref_size)
    assert dst_size < 0.75 * os.path.getsize(src)
    assert records(tmp_path / "dst.h5") == records(tmp_path / "ref.h5")
    assert_every_source_checked(tmp_path / "dst.h5")


def test_only_converted_classes_are_reencoded_and_everything_else_is_kept(tmp_path):
    src = fill(tmp_path / "src.h5", delete=[1003])
    before_labels, before = records(src)
    with h5store.open(src) as store:
        encoded = {i: store.get_encoded(i) for i in store.ids().tolist()}
        pixels = {i: store[i] for i in store.ids().tolist()}
        vectors = store.scores
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # lossy -> lossless: no generation-loss warning
        report = h5store.repack(src, tmp_path / "dst.h5", classes={"cat": "png"}, progress=False)
    with h5store.open(tmp_path / "dst.h5") as out:
        assert out.labels == before_labels and np.array_equal(out.scores, vectors, equal_nan=True)
        assert out.codec_of("cat").codec_id == "png" and out.codec_of("dog").codec_id == "jpeg"
        for i in out.ids().tolist():
            rec = out.record(i)
            if rec.label == "cat":
                assert rec.codec == "png" and np.array_equal(out[i], pixels[i])  # lossless
            else:
                assert out.get_encoded(i) == encoded[i]
        assert out.verify().ok
    after_labels, after = records(tmp_path / "dst.h5")
    strip = {
        i: r.replace("codec='png'", "codec='jpeg'").split(", nbytes=")[0] for i, r in after.items()
    }
    assert strip == {i: r.split(", nbytes=")[0] for i, r in before.items()}
    cats = sum(1 for r in before.values() if ", label='cat'" in r)
    assert (report.copied, report.reencoded) == (len(before) - cats, cats)


def test_lossy_to_lossy_warns_of_generation_loss(tmp_path):
    src = fill(tmp_path / "src.h5")
    with pytest.warns(h5store.GenerationLossWarning, match="generation loss"):
        report = h5store.repack(src, tmp_path / "q.h5", quality=60, progress=False)
    assert report.reencoded == 24
    with h5store.open(src) as a, h5store.open(tmp_path / "q.h5") as b:
        assert b.codec_of("dog").get_config()["quality"] == 60
        assert os.path.getsize(tmp_path / "q.h5") < os.path.getsize(src)
        assert all(psnr(a[i], b[i]) > 25 for i in a.ids().tolist())


def test_a_conversion_the_codec_cannot_hold_is_refused_before_anything_is_written(tmp_path):
    src = tmp_path / "depth.h5"
    with h5store.open(src, "w", codec="png") as store:
        store.add_batch([np.arange(64, dtype=np.uint16).reshape(8, 8)] * 2, labels=["d", "d"])
        store.add(np.zeros((8, 8, 3), np.uint8), label="rgb")
    digest = file_digest(src)
    with pytest.raises(h5store.CodecError, match="class 'd' cannot be converted to jpeg.*uint16"):
        h5store.repack(src, tmp_path / "out.h5", codec="jpeg", progress=False)
    assert not os.path.exists(tmp_path / "out.h5") and os.listdir(tmp_path) == ["depth.h5"]
    assert file_digest(src) == digest
    # only the class that fits is converted
    report = h5store.repack(src, tmp_path / "out.h5", classes={"rgb": ("jpeg", 95)}, progress=False)
    assert (report.copied, report.reencoded) == (2, 1)


def test_existing_destination_same_file_and_unknown_class(tmp_path):
    src = fill(tmp_path / "src.h5", n=8)
    (tmp_path / "dst.h5").write_bytes(b"keep me")
    with pytest.raises(h5store.TargetExistsError, match="overwrite"):
        h5store.repack(src, tmp_path / "dst.h5", progress=False)
    assert (tmp_path / "dst.h5").read_bytes() == b"keep me"
    with pytest.raises(h5store.InvalidInputError, match="itself"):
        h5store.repack(src, src, overwrite=True, progress=False)
    with pytest.raises(h5store.InvalidInputError, match="did you mean 'cat'"):
        h5store.repack(src, tmp_path / "x.h5", classes={"cta": "png"}, progress=False)
    h5store.repack(src, tmp_path / "dst.h5", overwrite=True, progress=False)
    assert records(tmp_path / "dst.h5") == records(src)


def test_a_failure_midway_leaves_no_file_behind(tmp_path, monkeypatch):
    src = fill(tmp_path / "src.h5", n=24)
    calls = []

    def failing_encode(self, image):
        calls.append(1)
        if len(calls) > 10:
            raise OSError("disk on fire")
        return original(self, image)

    codec_type = type(h5store.get_codec("png"))
    original = codec_type.encode
    monkeypatch.setattr(codec_type, "encode", failing_encode)
    with pytest.raises(OSError, match="disk on fire"):
        h5store.repack(src, tmp_path / "dst.h5", codec="png", batch_size=8, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["src.h5"]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    deleted=st.sets(st.integers(0, 11), max_size=11),
    codecs=st.lists(
        st.sampled_from([None, "png", "jpeg", "webp", "blosc2"]), min_size=3, max_size=3
    ),
    vectors=st.booleans(),
)
def test_repack_keeps_every_live_record(tmp_path_factory, deleted, codecs, vectors):
    tmp = tmp_path_factory.mktemp("prop")
    images, _ = photo_crops(12, 32)
    rng = np.random.default_rng(len(deleted))
    scores = rng.dirichlet(np.ones(3), size=12).astype(np.float32)
    with h5store.open(tmp / "src.h5", "w", labels=LABELS if vectors else None) as store:
        store.add_batch(
            images[:6],
            labels=scores[:6].argmax(1).tolist() if vectors else [LABELS[k % 3] for k in range(6)],
            scores=scores[:6] if vectors else scores[:6].max(1),
            true_labels=[LABELS[k % 2] for k in range(6)],
        )
        store.add_batch(
            images[6:],
            labels=[LABELS[k % 3] for k in range(6)],
            sources=[f"s{k}" for k in range(6)],
        )
        store.delete(sorted(deleted))
    if len(deleted) == 12:
        return
    classes = {label: c for label, c in zip(LABELS, codecs) if c is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", h5store.GenerationLossWarning)
        h5store.repack(tmp / "src.h5", tmp / "dst.h5", classes=classes, progress=False)
    labels_a, a = records(tmp / "src.h5")
    labels_b, b = records(tmp / "dst.h5")
    assert labels_a == labels_b and list(a) == list(b)
    for i in a:
        keep = a[i].split(", codec=")[0], a[i].split(", source=")[1]
        assert (b[i].split(", codec=")[0], b[i].split(", source=")[1]) == keep


def test_cli_repack_and_the_command_bench_recommends(tmp_path):
    src = fill(tmp_path / "src.h5", n=24, delete=[1000])
    out = h5store_cli(
        "repack",
        str(src),
        str(tmp_path / "a.h5"),
        "--class",
        "cat=png",
        "--codec",
        "jpeg",
        "--quality",
        "70",
        "--json",
    )
    result = json.loads(out.stdout)
    assert result["images"] == 23 and result["dropped_deleted"] == 1
    assert any("generation loss" in w for w in result["warnings"])
    with h5store.open(tmp_path / "a.h5") as store:
        assert store.codec_of("cat").codec_id == "png"
        assert store.codec_of("dog").get_config()["quality"] == 70
    bad = h5store_cli("repack", str(src), str(tmp_path / "a.h5"), check=False)
    assert bad.returncode == 2 and "exists" in bad.stderr and "Traceback" not in bad.stderr
    bench = h5store_cli(
        "bench",
        str(src),
        "--n",
        "16",
        "--codecs",
        "jpeg",
        "--quiet",
        "--repeats",
        "1",
        "--out",
        str(tmp_path / "bench"),
        cwd=tmp_path,
    )
    assert "already-compressed images, not the originals" in bench.stdout
    assert "* against the input as decoded" in bench.stdout
    command = bench.stdout.split("Apply it: ")[1].splitlines()[0]
    argv = shlex.split(command)
    assert argv[:3] == ["h5store", "repack", str(src)]
    h5store_cli(*argv[1:], cwd=tmp_path)
    with h5store.open(argv[3]) as store:
        chosen = json.loads((tmp_path / "bench" / "bench.json").read_text())
        config = chosen["recommendation"]["choice"]["config"]
        assert store.codec_of("dog").get_config() == config
