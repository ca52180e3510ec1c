"""The shell commands a new user reaches for (query, show, info, export/import), and the small
things a new user tripped over (issue 12, part 6)."""

import csv
import io
import json
import os
import subprocess
import sys

import imagecodecs
import numpy as np
import pytest
from conftest import h5store_cli as cli
from conftest import photo_crops

import h5store


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "demo.h5"
    cli("demo", "--out", str(path), "--n", "120", "--size", "48")
    return path


def test_query_prints_the_apis_answer_as_text_json_and_csv(demo):
    with h5store.open(demo) as store:
        expected = store.query(min_score=0.9, correct=False).tolist()
        cats = store.query(label=["cat", "coffee"], true_label="cat").tolist()
        records = {i: store.record(i) for i in expected}
    data = json.loads(
        cli("query", str(demo), "--min-score", "0.9", "--correct", "no", "--json").stdout
    )
    assert data["matched"] == len(expected) and [r["id"] for r in data["images"]] == expected
    for r in data["images"]:
        rec = records[r["id"]]
        assert (r["label"], r["true_label"], r["correct"]) == (rec.label, rec.true_label, False)
        assert r["score"] == pytest.approx(rec.score, abs=1e-6) and r["score"] >= 0.9
    rows = list(
        csv.DictReader(
            io.StringIO(
                cli(
                    "query",
                    str(demo),
                    "--label",
                    "cat",
                    "--label",
                    "coffee",
                    "--true-label",
                    "cat",
                    "--csv",
                ).stdout
            )
        )
    )
    assert [int(r["id"]) for r in rows] == cats
    text = cli("query", str(demo), "--min-score", "0.9", "--correct", "no", "--limit", "2").stdout
    assert text.startswith(f"{len(expected)} images match; the first 2:")
    assert len(text.strip().splitlines()) == 1 + 2 + 2  # count, header, rule, two rows
    bad = cli("query", str(demo), "--label", "cta", check=False)
    assert bad.returncode == 2 and "'cta' is not a label" in bad.stderr
    assert "did you mean 'cat'?" in bad.stderr  # as the API says it
    with h5store.open(demo) as store, pytest.raises(h5store.InvalidInputError, match="'cat'\\?"):
        store.query(true_label=["cat", "cta"])
    far = cli("query", str(demo), "--label", "zzzzzz", check=False)
    assert far.returncode == 2 and "did you mean" not in far.stderr  # no wild guesses


def test_show_writes_the_decoded_image_or_the_stored_bytes(demo, tmp_path):
    with h5store.open(demo) as store:
        image, stored = store[5], store.get_encoded(5)
    out = cli("show", str(demo), "5", "-o", str(tmp_path / "five.png"), "--json")
    assert json.loads(out.stdout)["written"] == str(tmp_path / "five.png")
    assert np.array_equal(imagecodecs.imread(str(tmp_path / "five.png")), image)
    cli("show", str(demo), "5", "--raw", cwd=tmp_path)
    assert (tmp_path / "5.jpg").read_bytes() == stored
    missing = cli("show", str(demo), "99999", check=False)
    assert missing.returncode == 2 and "no image with id 99999" in missing.stderr


def test_info_is_a_table_per_class_and_json_keeps_the_machine_form(demo):
    with h5store.open(demo) as store:
        index = store.index
        labels = store.labels
    text = cli("info", str(demo)).stdout
    assert "120 images in" in text and "score vectors stored" in text
    header = next(line for line in text.splitlines() if line.startswith("class"))
    assert header.split() == ["class", "images", "share", "accuracy", "codec", "bytes/image"]
    data = json.loads(cli("info", str(demo), "--json").stdout)
    assert data["images"] == 120 and data["format_version"] == list(h5store.FORMAT_VERSION)
    for row in data["classes"]:
        k = labels.index(row["label"])
        mine = index[index["label"] == k]
        assert row["images"] == len(mine)
        assert row["accuracy"] == pytest.approx(np.mean(mine["true_label"] == k))
        assert row["bytes_per_image"] == pytest.approx(mine["nbytes"].mean())
        line = next(line for line in text.splitlines() if line.startswith(row["label"] + " "))
        assert f"{100 * row['accuracy']:.1f} %" in line and "jpeg" in line
    assert sum(row["share"] for row in data["classes"]) == pytest.approx(1.0)


def test_export_into_an_existing_folder_is_a_clear_error_and_overwrite_works(demo, tmp_path):
    out = tmp_path / "out"
    first = json.loads(
        cli("export", str(demo), str(out), "--label", "cat", "--quiet", "--json").stdout
    )
    again = cli("export", str(demo), str(out), "--label", "cat", "--quiet", check=False)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "exist already" in again.stderr and "--overwrite" in again.stderr
    redo = json.loads(
        cli(
            "export",
            str(demo),
            str(out),
            "--label",
            "cat",
            "--quiet",
            "--overwrite",
            "--embed-metadata",
            "--json",
        ).stdout
    )
    assert redo["written"] == first["written"] > 0
    assert os.path.exists(out / "h5store-index.json")


def test_export_with_sql_records_each_files_path(demo, tmp_path):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    cli("export", str(demo), str(tmp_path / "out"), "--correct", "no", "--quiet", "--sql", url)
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text("SELECT id, file, correct FROM images")).all()
    engine.dispose()
    assert rows and all(os.path.isfile(file) and not correct for _, file, correct in rows)
    assert {os.path.basename(file) for _, file, _ in rows} == {f"{i}.jpg" for i, _, _ in rows}


def test_import_help_says_what_happens_to_jpeg_files_and_it_is_true(tmp_path):
    text = " ".join(cli("import", "--help").stdout.split()).replace("re- encoded", "re-encoded")
    assert "JPEG files into a JPEG class) are stored byte for byte" in text
    assert "all others are decoded and re-encoded" in text
    images, _ = photo_crops()
    (tmp_path / "tree" / "cat").mkdir(parents=True)
    jpeg = imagecodecs.jpeg8_encode(images[0], level=90)
    (tmp_path / "tree" / "cat" / "a.jpg").write_bytes(jpeg)
    for codec in ("jpeg", "webp"):
        cli(
            "import",
            str(tmp_path / "tree"),
            str(tmp_path / f"{codec}.h5"),
            "--codec",
            codec,
            "--quiet",
        )
        with h5store.open(tmp_path / f"{codec}.h5") as store:
            assert store.record(0).codec == codec
            assert (store.get_encoded(0) == jpeg) == (codec == "jpeg")


def test_channels_first_arrays_get_a_hint(tmp_path):
    with h5store.open(tmp_path / "s.h5", "w") as store:
        with pytest.raises(h5store.InvalidInputError, match="looks channels-first.*transpose"):
            store.add_batch(np.zeros((2, 3, 64, 64), np.uint8), labels=["a", "a"])
        with pytest.raises(h5store.InvalidInputError, match="looks channels-first"):
            store.add(np.zeros((3, 32, 32), np.uint8), label="a")
        assert len(store) == 0


def test_declared_labels_are_a_closed_set(tmp_path):
    names = ["cat", "dog", "bird", "fish", "frog"]
    images, _ = photo_crops()
    with h5store.open(tmp_path / "s.h5", "w", labels=names) as store:
        with pytest.raises(h5store.InvalidInputError, match="'cta'.*did you mean 'cat'"):
            store.add(images[0], label="cta")
        with pytest.raises(h5store.InvalidInputError, match="'cta'.*did you mean 'cat'"):
            store.add(images[0], label="cat", true_label="cta")
        assert store.labels == tuple(names) and len(store) == 0
        vectors = np.full((2, 5), 0.2, np.float32)
        store.add_batch(images[:2], labels=["cat", "dog"], scores=vectors)  # still works
        store.add_labels(["cta"])  # extending it is explicit
        store.add(images[2], label="cta")
    with h5store.open(tmp_path / "s.h5", "a") as store:  # score vectors keep the set closed
        with pytest.raises(h5store.InvalidInputError, match="score vectors cover"):
            store.add(images[3], label="owl")
    with h5store.open(tmp_path / "open.h5", "w") as store:  # nothing declared: classes appear
        store.add(images[0], label="anything")
        with pytest.raises(h5store.InvalidInputError, match="batch also names labels"):
            store.add_batch(
                images[:2], labels=["anything", "new"], scores=np.array([[1.0], [1.0]], np.float32)
            )


def test_scores_sources_and_record_printing(tmp_path):
    images, _ = photo_crops()
    vectors = np.array([[0.9753115, 0.0246885], [0.3, 0.7], [0.5, 0.5]], np.float32)
    with h5store.open(tmp_path / "s.h5", "w", labels=["a", "b"]) as store:
        store.add_batch(images[:3], labels=[0, 1, 0], scores=vectors, sources=["x", None, "z"])
        store.add(images[3], label="b", score=0.25)
        store.delete([1])
    with h5store.open(tmp_path / "s.h5") as store:
        assert store.ids().tolist() == [0, 2, 3]
        assert np.array_equal(store.scores[:2], vectors[[0, 2]])
        assert np.isnan(store.scores[2]).all()
        assert store.sources == ["x", "z", None]
        frame = store.to_pandas(scores=True)
        assert frame["source"].tolist()[:2] == ["x", "z"]
        assert frame["score:a"].tolist()[:2] == pytest.approx([0.9753115, 0.5])
        text = repr(store.record(0))
        assert "score=0.9753115," in text and "0.9753115177" not in text
        out = np.empty((3, *images[0].shape), np.uint8)
        assert store.get_batch([0, 2, 3], out=out) is out


def test_a_command_whose_extra_is_missing_says_which_to_install(demo, tmp_path):
    # matplotlib made unimportable, as on an install without the 'report' extra
    code = (
        "import sys; sys.modules['matplotlib'] = None; from h5store.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, "report", demo, "-o", str(tmp_path / "r.html"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "h5store[report]" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "r.html").exists()


def test_every_command_says_what_it_does_in_its_help():
    import argparse

    from h5store.cli import build_parser

    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for name, parser in commands.choices.items():
        assert parser.description and len(parser.description) > 60, name
    for name in ("info", "verify", "preview"):
        text = " ".join(cli(name, "--help").stdout.split())
        assert commands.choices[name].description.split(":")[0].split(" (")[0] in text
