"""Import from the three ways people save classified images, each layout built with that way's
own tools: Pillow class folders, OpenCV files with piexif (and exiftool) metadata, and
SQLAlchemy tables in SQLite and the PostgreSQL server CI starts. Round trips are checked byte
for byte, in images and in metadata."""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import piexif
import piexif.helper
import pytest
import sqlalchemy as sa
from conftest import file_digest, h5store_cli, photo_crops
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

import h5store
from h5store.folders import export_folder
from h5store.importers import import_sql, import_tree

CLASSES = ["cat", "dog", "bird"]


def tree(root) -> dict[str, bytes]:
    """Every file under ``root`` by its relative path, with its bytes."""
    root = Path(root)
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def crops(n=9):
    images, _ = photo_crops()
    labels = [CLASSES[k % 3] for k in range(n)]
    truth = [CLASSES[(k + (k % 4 == 0)) % 3] for k in range(n)]
    return images[:n], labels, truth


# ============================================================ (a) class folders, with Pillow


def pillow_folders(root, n=9, first_id=500):
    """The Pillow recipe: one folder per predicted class, <image_id>.jpg in it."""
    images, labels, _ = crops(n)
    for k in range(n):
        os.makedirs(root / labels[k], exist_ok=True)
        Image.fromarray(images[k]).save(root / labels[k] / f"{first_id + k}.jpg", quality=90)
    return labels


def test_pillow_folders_keep_ids_bytes_and_predictions_and_export_back_identical(tmp_path):
    labels = pillow_folders(tmp_path / "pil")
    with h5store.open(tmp_path / "s.h5", "w") as store:
        report = import_tree(store, tmp_path / "pil", ids="from-names", progress=False)
        assert sorted(report.ids.tolist()) == list(range(500, 509))
        for k, image_id in enumerate(range(500, 509)):
            record = store.record(image_id)
            # the folder is the prediction; the truth is not known, so not invented
            assert (record.label, record.true_label) == (labels[k], None)
            on_disk = (tmp_path / "pil" / labels[k] / f"{image_id}.jpg").read_bytes()
            assert store.get_encoded(image_id) == on_disk  # JPEG passed through
        assert report.per_class == {"bird": 3, "cat": 3, "dog": 3}
        assert report.mapping["label"].startswith("class folder name")
        assert report.mapping["true_label"].startswith("nowhere: unknown (the folders are")
        assert len(store.query(correct=True)) == 0 and len(store.query(correct=False)) == 0
        export_folder(store, tmp_path / "back", index=None, progress=False)
    assert tree(tmp_path / "back") == tree(tmp_path / "pil")


def test_folders_as_true_labels_take_the_prediction_from_the_files(tmp_path):
    images, labels, truth = crops(6)
    for k in range(6):
        os.makedirs(tmp_path / "t" / truth[k], exist_ok=True)
        path = tmp_path / "t" / truth[k] / f"{k}.jpg"
        options = {"quality": 90}
        if k % 2:  # half the files say what the model predicted
            comment = piexif.helper.UserComment.dump(json.dumps({"predicted": labels[k]}))
            options["exif"] = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: comment}})
        Image.fromarray(images[k]).save(path, **options)
    shutil.copy(path, tmp_path / "t" / "stray.jpg")  # beside the class folders: left out
    with h5store.open(tmp_path / "s.h5", "w") as store:
        report = import_tree(
            store, tmp_path / "t", folders="true", ids="from-names", progress=False
        )
        assert len(store) == 6 and report.notes == [
            "1 image files directly in the folder were left out (--layout flat)"
        ]
        for k in range(6):
            record = store.record(k)
            assert record.true_label == truth[k]
            # with a prediction in the file it is the label; without, the folder (a data set)
            assert record.label == (labels[k] if k % 2 else truth[k])
    assert "EXIF UserComment (3 of 6)" in report.mapping["label"]


def test_ids_from_names_refuses_a_repeated_id_and_a_name_without_one(tmp_path):
    root = tmp_path / "pil"
    pillow_folders(root, n=4)
    shutil.copy(root / "cat" / "500.jpg", root / "dog" / "500.jpg")
    path = tmp_path / "s.h5"
    with h5store.open(path, "w") as store:
        store.add(photo_crops()[0][0], label="cat", id=1)
    before = file_digest(path)
    with h5store.open(path, "a") as store, pytest.raises(h5store.DuplicateIdError, match="500"):
        import_tree(store, root, ids="from-names", progress=False)
    assert file_digest(path) == before
    (root / "dog" / "500.jpg").rename(root / "dog" / "img-a.jpg")
    with h5store.open(path, "a") as store:
        with pytest.raises(h5store.InvalidInputError, match="img-a.jpg.*decimal number"):
            import_tree(store, root, ids="from-names", progress=False)
        ids = import_tree(store, root, progress=False).ids  # by default: new ids
        assert len(ids) == 5 and 1 in store


# ======================================================= (b) flat folders, OpenCV + piexif


def opencv_flat(root, n=9, vectors=True, where="UserComment"):
    """The OpenCV recipe: cv2.imwrite of the BGR array to <id>_<label>.jpg, then the record as
    JSON in EXIF with piexif."""
    images, labels, truth = crops(n)
    rng = np.random.default_rng(5)
    os.makedirs(root)
    records = {}
    for k in range(n):
        image_id = 1000 + 7 * k
        path = str(root / f"{image_id}_{labels[k]}.jpg")
        assert cv2.imwrite(path, images[k][..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 90])
        p = rng.dirichlet(np.ones(3)).astype(np.float32)
        p[::-1].sort()
        vector = dict(zip([labels[k]] + [c for c in CLASSES if c != labels[k]], p.tolist()))
        meta = {"label": labels[k], "true_label": truth[k], "score": float(p[0])}
        if vectors:
            meta["scores"] = vector
        if where == "UserComment":
            comment = piexif.helper.UserComment.dump(json.dumps(meta), encoding="unicode")
            exif = {"Exif": {piexif.ExifIFD.UserComment: comment}}
        else:  # benchmarks/three_ways.py's recipe
            exif = {"0th": {piexif.ImageIFD.ImageDescription: json.dumps(meta).encode()}}
        piexif.insert(piexif.dump(exif), path)
        records[image_id] = (meta, path)
    return records


@pytest.mark.parametrize("where", ["UserComment", "ImageDescription"])
def test_opencv_piexif_flat_folder_comes_in_whole(tmp_path, where):
    records = opencv_flat(tmp_path / "cv", where=where)
    with h5store.open(tmp_path / "s.h5", "w") as store:
        report = import_tree(store, tmp_path / "cv", progress=False)  # auto: no subfolders
        assert sorted(report.ids.tolist()) == sorted(records)
        assert report.layout.startswith("flat") and f"EXIF {where}" in report.mapping["scores"]
        for image_id, (meta, path) in records.items():
            record = store.record(image_id)
            assert (record.label, record.true_label) == (meta["label"], meta["true_label"])
            assert record.score == np.float32(meta["score"])
            by_name = dict(zip(store.labels, record.scores.tolist()))
            assert by_name == {c: np.float32(v) for c, v in meta["scores"].items()}
            # the user's file, EXIF included, is what the store holds: nothing re-encoded
            assert store.get_encoded(image_id) == Path(path).read_bytes()
            assert record.source == path
            rgb = cv2.imread(path)[..., ::-1]
            assert np.array_equal(store[image_id], rgb)  # stored RGB, no channel swap


def test_exiftool_and_pillow_png_metadata_are_read(tmp_path):
    exiftool = shutil.which("exiftool")
    if exiftool is None:
        if os.environ.get("CI"):
            pytest.fail("exiftool is missing: .ci/run installs libimage-exiftool-perl")
        pytest.skip("exiftool (Debian libimage-exiftool-perl) is not installed")
    images, labels, truth = crops(4)
    root = tmp_path / "flat"
    root.mkdir()
    jpeg = root / "7_cat.jpg"
    cv2.imwrite(str(jpeg), images[0][..., ::-1].copy())
    text = json.dumps({"label": "cat", "true_label": "dog", "confidence": 0.75})
    subprocess.run(
        [exiftool, "-q", "-overwrite_original", f"-UserComment={text}", str(jpeg)], check=True
    )
    info = PngImagePlugin.PngInfo()  # Pillow users: one text chunk per value
    info.add_text("label", "bird")
    info.add_text("score", "0.5")
    Image.fromarray(images[1]).save(root / "8_bird.png", pnginfo=info)
    with h5store.open(tmp_path / "s.h5", "w", codec="png") as store:
        store.create_class("cat", "jpeg")
        import_tree(store, root, progress=False)
        assert (store.record(7).true_label, store.record(7).score) == ("dog", np.float32(0.75))
        assert store.get_encoded(7) == jpeg.read_bytes()
        assert store.record(8).score == np.float32(0.5)
        assert store.get_encoded(8) == (root / "8_bird.png").read_bytes()


def test_flat_folder_refuses_a_repeated_id_before_writing(tmp_path):
    opencv_flat(tmp_path / "cv", n=3, vectors=False)
    first = sorted(os.listdir(tmp_path / "cv"))[0]
    shutil.copy(tmp_path / "cv" / first, tmp_path / "cv" / (first.split("_")[0] + "_dog.jpg"))
    path = tmp_path / "s.h5"
    h5store.open(path, "w").close()
    before = file_digest(path)
    with h5store.open(path, "a") as store, pytest.raises(h5store.DuplicateIdError):
        import_tree(store, tmp_path / "cv", progress=False)
    assert file_digest(path) == before


# ========================================================= export -> import -> export, bytes


def scored_store(path, codec, labels=CLASSES, n=8):
    path.parent.mkdir(exist_ok=True)
    images, _ = photo_crops()
    rng = np.random.default_rng(2)
    vectors = rng.dirichlet(np.ones(len(labels)), size=n).astype(np.float32)
    predicted = vectors.argmax(axis=1)
    with h5store.open(path, "w", codec=codec, labels=labels) as store:
        store.add_batch(
            images[:n],
            labels=predicted.tolist(),
            scores=vectors,
            true_labels=[labels[(k + i % 2) % len(labels)] for i, k in enumerate(predicted)],
            ids=list(range(40, 40 + 3 * n, 3)),
            sources=[None if i == 2 else f"cam/{i}.raw" for i in range(n)],
        )
    return path


@pytest.mark.parametrize("codec", ["jpeg", "png", "webp"])
@pytest.mark.parametrize("layout", ["folders", "flat"])
def test_export_import_export_is_byte_identical_without_an_index(tmp_path, codec, layout):
    src = scored_store(tmp_path / "a" / "run.h5", codec)
    options = {"layout": layout, "embed_metadata": True, "index": None, "progress": False}
    with h5store.open(src) as store:
        export_folder(store, tmp_path / "one", **options)
    back = tmp_path / "b" / "run.h5"  # the same name: the files name their store
    back.parent.mkdir()
    with h5store.open(back, "w", codec=codec) as store:
        import_tree(store, tmp_path / "one", progress=False)
        export_folder(store, tmp_path / "two", **options)
    with h5store.open(src) as a, h5store.open(back) as b:
        assert sorted(a.ids().tolist()) == sorted(b.ids().tolist())
        for i in a.ids().tolist():
            assert a.get_encoded(i) == b.get_encoded(i)  # the stored stream, not the export's
            assert a.record(i).source == b.record(i).source
    assert tree(tmp_path / "one") == tree(tmp_path / "two")


LABEL_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=300,
)


@settings(max_examples=12, deadline=None)
@given(labels=st.lists(LABEL_TEXT, min_size=2, max_size=4, unique=True), flat=st.booleans())
def test_round_trip_keeps_any_labels(labels, flat):
    # Escaped, shortened (over 255 bytes) and unicode labels come back from the metadata.
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = scored_store(tmp / "a" / "run.h5", "jpeg", labels=labels, n=4)
        options = {"embed_metadata": True, "index": None, "progress": False}
        options["layout"] = "flat" if flat else "folders"
        with h5store.open(src) as store:
            export_folder(store, tmp / "one", **options)
        (tmp / "b").mkdir()
        with h5store.open(tmp / "b" / "run.h5", "w") as store:
            import_tree(store, tmp / "one", progress=False)
            export_folder(store, tmp / "two", **options)
        assert tree(tmp / "one") == tree(tmp / "two")


# ============================================================================ (c) SQL tables


def orm_table(url, root, n=9, path_of=None):
    """The SQLAlchemy recipe: an ORM class, a row per image (its own autoincrement id, the
    user's image_id), Pillow files under ``root``."""
    from sqlalchemy.orm import Session, declarative_base

    Base = declarative_base()

    class ClassifiedImage(Base):
        __tablename__ = "classified_images"
        id = sa.Column(sa.Integer, primary_key=True)
        filepath = sa.Column(sa.String)
        class_label = sa.Column(sa.String)
        image_id = sa.Column(sa.Integer)
        score = sa.Column(sa.Float)
        true_label = sa.Column(sa.String)

    images, labels, truth = crops(n)
    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        for k in range(n):
            rel = f"{labels[k]}/{300 + k}.jpg"
            os.makedirs(root / labels[k], exist_ok=True)
            Image.fromarray(images[k]).save(root / rel, quality=90)
            session.add(
                ClassifiedImage(
                    filepath=path_of(k, rel) if path_of else rel,
                    class_label=labels[k],
                    image_id=300 + k,
                    score=0.5 + k / 100,
                    true_label=truth[k],
                )
            )
        session.commit()
    engine.dispose()
    return labels, truth


def test_sql_table_with_guessed_columns(tmp_path, url):
    root = tmp_path / "files"
    labels, truth = orm_table(url, root)
    with h5store.open(tmp_path / "s.h5", "w") as store:
        report = import_sql(store, url, "classified_images", root=root, progress=False)
        assert report.mapping == {
            "id": "column 'image_id'",  # the user's id, not the ORM's autoincrement key
            "path": f"column 'filepath', under {os.path.realpath(root)}",
            "label": "column 'class_label'",
            "true_label": "column 'true_label'",
            "score": "column 'score'",
            "source": "the file's resolved path",
        }
        assert sorted(report.ids.tolist()) == list(range(300, 309))
        for k in range(9):
            record = store.record(300 + k)
            assert (record.label, record.true_label) == (labels[k], truth[k])
            assert record.score == np.float32(0.5 + k / 100)
            assert store.get_encoded(300 + k) == (root / labels[k] / f"{300 + k}.jpg").read_bytes()


def test_sqlite_paths_resolve_under_the_database_folder(tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    url = f"sqlite:///{root / 'images.db'}"
    orm_table(url, root, n=3)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a score vector as JSON text, named by --columns
        conn.exec_driver_sql("ALTER TABLE classified_images ADD COLUMN probs TEXT")
        conn.exec_driver_sql("""UPDATE classified_images SET probs = '{"cat": 0.5, "dog": 0.3,'
                             || ' "bird": 0.2}' WHERE class_label = 'cat'""")
    engine.dispose()
    with h5store.open(tmp_path / "s.h5", "w") as store:
        columns = {"scores": "probs"}
        report = import_sql(store, url, "classified_images", columns=columns, progress=False)
        assert len(report.ids) == 3 and report.mapping["scores"] == "column 'probs'"
        vector = dict(zip(store.labels, store.record(300).scores.tolist()))
        assert vector == {"cat": 0.5, "dog": np.float32(0.3), "bird": np.float32(0.2)}
        assert store.record(301).scores is None


def test_sql_round_trip_through_h5store_own_table(tmp_path, url):
    src = scored_store(tmp_path / "a" / "run.h5", "jpeg")
    with h5store.open(src) as store:
        export_folder(store, tmp_path / "one", index="json", progress=False)
        files = {i: str(p) for i, p in _exported(tmp_path / "one").items()}
        store.to_sql(url, table="first", files=files)
    (tmp_path / "b").mkdir()
    with h5store.open(tmp_path / "b" / "run.h5", "w") as store:
        report = import_sql(store, url, "first", root=tmp_path / "one", progress=False)
        assert report.mapping["scores"].startswith("table 'first_scores'")
        assert report.mapping["source"] == "column 'source'"
        export_folder(store, tmp_path / "two", index="json", progress=False)
        store.to_sql(
            url, table="second", files={i: str(p) for i, p in _exported(tmp_path / "two").items()}
        )
    assert tree(tmp_path / "one") == tree(tmp_path / "two")
    moved = {"store", "ref", "file"}  # they name where each copy lies
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        for table in ("first", "second"):
            assert sa.inspect(conn).has_table(f"{table}_scores")
        rows = [
            sorted(
                tuple(v for k, v in r._mapping.items() if k not in moved)
                for r in conn.execute(sa.text(f'SELECT * FROM "{table}"'))
            )
            for table in ("first", "second")
        ]
        vectors = [
            sorted(conn.execute(sa.text(f'SELECT id, label, score FROM "{t}_scores"')).all())
            for t in ("first", "second")
        ]
    engine.dispose()
    assert rows[0] == rows[1] and len(rows[0]) == 8
    assert vectors[0] == vectors[1] and len(vectors[0]) == 24


def _exported(root) -> dict[int, Path]:
    index = json.loads((root / "h5store-index.json").read_text())
    return {e["id"]: root / e["file"] for e in index["images"]}


def test_wrong_columns_are_named_with_the_tables_columns(tmp_path, url):
    root = tmp_path / "files"
    orm_table(url, root, n=2)
    path = tmp_path / "s.h5"
    h5store.open(path, "w").close()
    before = file_digest(path)
    with h5store.open(path, "a") as store:
        with pytest.raises(h5store.InvalidInputError, match=r"no column 'nope'.*class_label"):
            import_sql(store, url, "classified_images", root=root, columns={"path": "nope"})
        with pytest.raises(h5store.InvalidInputError, match="unknown column role 'colour'"):
            import_sql(store, url, "classified_images", root=root, columns={"colour": "score"})
        with pytest.raises(h5store.InvalidInputError, match="no table 'missing'"):
            import_sql(store, url, "missing", root=root)
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE odd (pic TEXT, kind TEXT)")
            conn.exec_driver_sql("INSERT INTO odd VALUES ('cat/300.jpg', 'cat')")
        engine.dispose()
        with pytest.raises(h5store.InvalidInputError, match=r"image's path.*\['pic', 'kind'\]"):
            import_sql(store, url, "odd", root=root)
    assert file_digest(path) == before
    with h5store.open(path, "a") as store:  # named, the same table reads
        columns = {"path": "pic", "label": "kind"}
        report = import_sql(store, url, "odd", root=root, columns=columns, progress=False)
        assert report.mapping["path"].startswith("column 'pic', under") and len(report.ids) == 1


def test_a_repeated_image_id_in_a_table_writes_nothing(tmp_path, url):
    root = tmp_path / "files"
    orm_table(url, root, n=3)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE classified_images SET image_id = 300")
    engine.dispose()
    path = tmp_path / "s.h5"
    h5store.open(path, "w").close()
    before = file_digest(path)
    with h5store.open(path, "a") as store, pytest.raises(h5store.DuplicateIdError, match="300"):
        import_sql(store, url, "classified_images", root=root, progress=False)
    assert file_digest(path) == before


def test_a_table_without_files_says_how_to_get_one(tmp_path, url):
    src = scored_store(tmp_path / "a" / "run.h5", "jpeg", n=2)
    with h5store.open(src) as store:
        store.to_sql(url, table="index_only")  # `h5store index --sql`: no files exported
    with h5store.open(tmp_path / "s.h5", "w") as store:
        with pytest.raises(h5store.InvalidInputError, match="column 'file' is NULL.*export --sql"):
            import_sql(store, url, "index_only", root=tmp_path, progress=False)
        assert len(store) == 0


def test_postgresql_tables_need_a_root(tmp_path, url):
    orm_table(url, tmp_path / "files", n=1)
    with h5store.open(tmp_path / "s.h5", "w") as store:
        if url.startswith("sqlite"):  # the database's folder is the root: files lie elsewhere
            with pytest.raises(h5store.InvalidInputError, match="not a file under"):
                import_sql(store, url, "classified_images", progress=False)
        else:
            with pytest.raises(h5store.InvalidInputError, match="pass root="):
                import_sql(store, url, "classified_images", progress=False)


@pytest.mark.parametrize(
    "hostile",
    ["../outside.jpg", "{outside}", "cat/../../outside.jpg", "link.jpg", "linkdir/outside.jpg"],
)
def test_hostile_paths_in_a_table_are_refused(tmp_path, url, hostile):
    root = tmp_path / "files"
    outside = tmp_path / "outside.jpg"
    Image.fromarray(photo_crops()[0][0]).save(outside)
    os.makedirs(root)
    (root / "link.jpg").symlink_to(outside)
    (root / "linkdir").symlink_to(tmp_path)
    value = hostile.format(outside=outside)
    orm_table(url, root, n=2, path_of=lambda k, rel: value if k == 1 else rel)
    path = tmp_path / "s.h5"
    h5store.open(path, "w").close()
    before = file_digest(path)
    with h5store.open(path, "a") as store:
        with pytest.raises(h5store.InvalidInputError, match="row 1 .*(outside|link)"):
            import_sql(store, url, "classified_images", root=root, progress=False)
    assert file_digest(path) == before
    if "link" in hostile:  # links out of the root are read when the caller says so
        with h5store.open(path, "a") as store:
            report = import_sql(
                store, url, "classified_images", root=root, follow_links=True, progress=False
            )
            assert store.get_encoded(301) == outside.read_bytes() and len(report.ids) == 2


@settings(max_examples=60, deadline=None)
@given(
    value=st.one_of(
        st.text(max_size=40),
        st.lists(st.sampled_from(["..", ".", "cat", "a.jpg", "", "/", "~", "%2E"]), max_size=6).map(
            "/".join
        ),
    )
)
def test_any_path_text_is_read_under_the_root_or_refused(value):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        (root / "cat").mkdir(parents=True)
        Image.fromarray(photo_crops()[0][0]).save(tmp / "a.jpg")  # outside: never read
        Image.fromarray(photo_crops()[0][1]).save(root / "cat" / "a.jpg")
        url = f"sqlite:///{tmp / 'i.db'}"
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (filepath TEXT, label TEXT)")
            conn.exec_driver_sql("INSERT INTO t VALUES (?, 'cat')", (value,))
        engine.dispose()
        with h5store.open(tmp / "s.h5", "w") as store:
            try:
                ids = import_sql(store, url, "t", root=root, progress=False).ids
            except h5store.InvalidInputError:
                assert len(store) == 0
                return
            source = store.record(int(ids[0])).source
            real_root = os.path.realpath(root)
            assert os.path.commonpath([real_root, os.path.realpath(source)]) == real_root


# ============================================================================ the command line


def test_the_command_line_imports_each_way_and_says_what_it_mapped(tmp_path):
    pillow_folders(tmp_path / "pil", n=4)
    opencv_flat(tmp_path / "cv", n=3)
    url = f"sqlite:///{tmp_path / 'files' / 'images.db'}"
    (tmp_path / "files").mkdir()
    orm_table(url, tmp_path / "files", n=3)

    text = h5store_cli("import", str(tmp_path / "pil"), str(tmp_path / "a.h5"), "--quiet")
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"read 4 images from {tmp_path / 'pil'} (class folders")
    assert "  label      <- class folder name (4 of 4)" in lines
    assert any(line.startswith("  true_label <- nowhere: unknown") for line in lines)
    assert "  per class: bird 1, cat 2, dog 1" in lines

    flat = json.loads(
        h5store_cli("import", str(tmp_path / "cv"), str(tmp_path / "b.h5"), "--json").stdout
    )
    assert flat["imported"] == 3 and flat["mapping"]["scores"].startswith("EXIF UserComment")
    assert flat["mapping"]["id"] == "file name <id>_<label> (3 of 3)"

    flat_out = tmp_path / "flat-out"
    h5store_cli("export", str(tmp_path / "b.h5"), str(flat_out), "--layout", "flat", "--quiet")
    assert sorted(os.listdir(flat_out)) == sorted(os.listdir(tmp_path / "cv")) + [
        "h5store-index.json"
    ]

    args = ["--sql", url, "--table", "classified_images", "--columns", "label=class_label"]
    sql = json.loads(h5store_cli("import", str(tmp_path / "c.h5"), *args, "--json").stdout)
    assert sql["mapping"]["label"] == "column 'class_label'" and sql["imported"] == 3
    with h5store.open(tmp_path / "c.h5") as store:
        assert sorted(store.ids().tolist()) == [300, 301, 302]


def test_the_command_line_states_defaults_and_refuses_half_given_options(tmp_path):
    help_text = " ".join(h5store_cli("import", "--help").stdout.split())
    assert "the model's prediction (default:" in help_text
    assert "--ids {auto,from-names,new}" in help_text
    store = str(tmp_path / "s.h5")
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in [
        ([store, "--sql", "sqlite:///x.db"], "--sql and --table go together"),
        ([store, "--columns", "id=x"], "--sql and --table go together"),
        ([store], "give the FOLDER"),
        ([store, "--sql", "sqlite:///x.db", "--table", "t", "--columns", "id"], "ROLE=COLUMN"),
        # refused after the store was opened: the new store is not left behind
        ([store, "--sql", f"sqlite:///{tmp_path / 'x.db'}", "--table", "t"], "no table 't'"),
        ([str(empty), store], "has no image files"),
    ]:
        result = h5store_cli("import", *args, check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "s.h5").exists()


# ==================================================================== untrusted metadata


def _carriers() -> list[bytes]:
    """A file of each kind the metadata reader parses, each with a record in it."""
    import io

    import imagecodecs

    from h5store import embed

    image = photo_crops()[0][0]
    record = {"label": "cat", "scores": {"cat": 0.75, "dog": 0.25}, "id": 3}
    jpeg = io.BytesIO()
    exif = {
        "Exif": {
            piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(
                json.dumps(record), encoding="unicode"
            )
        }
    }
    Image.fromarray(image).save(jpeg, "JPEG", exif=piexif.dump(exif))
    png = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_text("h5store", json.dumps(record), zip=True)  # zTXt
    Image.fromarray(image).save(png, "PNG", pnginfo=info)
    webp = embed.embed("webp", imagecodecs.webp_encode(image, level=80), record, (64, 64))
    return [jpeg.getvalue(), png.getvalue(), webp]


CARRIERS = _carriers()


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(0, len(CARRIERS) - 1),
    edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 4000),
)
def test_damaged_metadata_is_read_or_ignored_never_an_exception(which, edits, cut):
    from h5store import _file_metadata

    data = bytearray(CARRIERS[which])
    assert _file_metadata.read(bytes(data)).values["label"] == "cat"  # intact: found
    for at, value in edits:
        if at < len(data):
            data[at] = value
    found = _file_metadata.read(bytes(data[: len(data) - cut]))
    assert found is None or isinstance(found.values, dict)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(
    record=st.dictionaries(
        st.sampled_from(["label", "true_label", "score", "scores", "id", "source", "labels"]),
        JSON_VALUES,
    )
)
def test_any_metadata_values_import_or_are_refused_by_name(record):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "flat").mkdir()
        path = tmp / "flat" / "5_cat.jpg"
        Image.fromarray(photo_crops()[0][0]).save(path)
        comment = piexif.helper.UserComment.dump(json.dumps(record, allow_nan=True))
        piexif.insert(piexif.dump({"Exif": {piexif.ExifIFD.UserComment: comment}}), str(path))
        with h5store.open(tmp / "s.h5", "w") as store:
            try:
                import_tree(store, tmp / "flat", progress=False)
            except h5store.InvalidInputError as exc:
                assert str(exc).startswith(str(path)) or "score vector" in str(exc)
                assert len(store) == 0  # refused before the first image was written
                return
            assert len(store) == 1


def test_a_bad_record_in_a_later_batch_is_refused_before_the_first_is_written(tmp_path):
    records = opencv_flat(tmp_path / "cv", n=4, vectors=False)
    last = max(records)
    meta, path = records[last]
    comment = piexif.helper.UserComment.dump(json.dumps({**meta, "score": 1.5}))
    piexif.insert(piexif.dump({"Exif": {piexif.ExifIFD.UserComment: comment}}), path)
    store_path = tmp_path / "s.h5"
    h5store.open(store_path, "w").close()
    before = file_digest(store_path)
    with h5store.open(store_path, "a") as store:
        with pytest.raises(h5store.InvalidInputError, match=f"^{path}: scores are outside"):
            import_tree(store, tmp_path / "cv", batch_size=1, progress=False)
    assert file_digest(store_path) == before
