"""Export with metadata inside each file (EXIF, iTXt), the index beside the files, and import
reading it back. Metadata is read back by readers we did not write: exiftool, piexif and
Pillow."""

import io
import json
import os
import shutil
import struct
import subprocess
import zlib

import imagecodecs
import numpy as np
import pytest
from conftest import photo_crops
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import h5store
from h5store import embed
from h5store.folders import export_folder, import_folder, read_index

LABELS = ["cat", "dög", "a/b"]


def exiftool(path) -> dict:
    if shutil.which("exiftool") is None:
        if os.environ.get("CI"):
            pytest.fail("exiftool is missing: .ci/run installs libimage-exiftool-perl")
        pytest.skip("exiftool (Debian libimage-exiftool-perl) is not installed")
    out = subprocess.run(
        ["exiftool", "-j", "-a", "-G1", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)[0]


def make_store(path, codec, n=6, **options):
    images, _ = photo_crops()
    rng = np.random.default_rng(1)
    vectors = rng.dirichlet(np.ones(len(LABELS)), size=n).astype(np.float32)
    predicted = vectors.argmax(axis=1)
    truth = [LABELS[(k + (i % 2)) % 3] for i, k in enumerate(predicted)]
    with h5store.open(path, "w", codec=codec, labels=LABELS, **options) as store:
        store.add_batch(
            images[:n],
            labels=predicted.tolist(),
            scores=vectors,
            true_labels=truth,
            ids=list(range(100, 100 + n)),
            sources=[f"cam/{k}.raw" for k in range(n)],
        )
    return path


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    out, at = [], 2
    while data[at] == 0xFF and data[at + 1] != 0xDA:
        length = struct.unpack(">H", data[at + 2 : at + 4])[0]
        out.append((data[at + 1], data[at : at + 2 + length]))
        at += 2 + length
    return out


def test_jpeg_export_carries_exif_and_keeps_the_compressed_stream(tmp_path):
    src = make_store(tmp_path / "s.h5", "jpeg")
    root = tmp_path / "out"
    with h5store.open(src) as store:
        assert export_folder(store, root, embed_metadata=True, progress=False) == 6
        for image_id in store.ids().tolist():
            rec = store.record(image_id)
            path = root / h5store.format.safe_name(rec.label) / f"{image_id}.jpg"
            data = path.read_bytes()
            stored = store.get_encoded(image_id)
            # exactly one APP1 segment was added; every other byte is the stored stream
            app1 = [seg for marker, seg in jpeg_segments(data) if marker == 0xE1]
            assert len(app1) == 1 and app1[0][4:10] == b"Exif\x00\x00"
            assert data.replace(app1[0], b"", 1) == stored
            tags = exiftool(path)
            comment = json.loads(tags["ExifIFD:UserComment"])
            assert comment["id"] == image_id and comment["label"] == rec.label
            assert comment["true_label"] == rec.true_label and comment["store"] == "s.h5"
            assert comment["score"] == pytest.approx(rec.score)
            assert f"h5store id {image_id}" in tags["IFD0:ImageDescription"]
            assert "Warning" not in tags and "ExifTool:Warning" not in tags
            exif = Image.open(io.BytesIO(data)).getexif()
            assert f"h5store id {image_id}" in exif[0x010E]
            user = exif.get_ifd(0x8769)[0x9286]
            assert json.loads(user[8:].decode("ascii"))["label"] == rec.label
            assert np.array_equal(imagecodecs.imread(data), store[image_id])


@pytest.mark.parametrize(
    "codec, options, suffix",
    [
        ("png", {}, ".png"),
        ("webp", {"quality": 80}, ".webp"),
        ("webp", {"lossless": True}, ".webp"),
    ],
)
def test_png_and_webp_exports_carry_metadata(tmp_path, codec, options, suffix):
    try:
        src = make_store(tmp_path / "s.h5", codec, **options)
    except h5store.CodecError as exc:
        pytest.skip(f"{codec} {options}: {exc}")
    root = tmp_path / "out"
    with h5store.open(src) as store:
        export_folder(store, root, embed_metadata=True, progress=False)
        for image_id in store.ids().tolist():
            rec = store.record(image_id)
            path = root / h5store.format.safe_name(rec.label) / f"{image_id}{suffix}"
            data = path.read_bytes()
            assert embed.strip(codec, data) == store.get_encoded(image_id)
            tags = exiftool(path)
            assert not any(k.endswith("Warning") or k.endswith("Error") for k in tags), tags
            if codec == "png":
                assert json.loads(tags["PNG:H5store"])["id"] == image_id
                assert f"h5store id {image_id}" in tags["PNG:Description"]
                text = Image.open(io.BytesIO(data)).text
                assert json.loads(text["h5store"])["true_label"] == rec.true_label
                _check_png_crcs(data)
            else:
                assert json.loads(tags["ExifIFD:UserComment"])["id"] == image_id
                exif = Image.open(io.BytesIO(data)).getexif()
                assert f"h5store id {image_id}" in exif[0x010E]
            with Image.open(io.BytesIO(data)) as im:
                assert np.array_equal(np.asarray(im.convert(im.mode)), store[image_id])


def _check_png_crcs(data: bytes) -> None:
    at = 8
    kinds = []
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        body = data[at + 8 : at + 8 + length]
        crc = struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0]
        assert crc == zlib.crc32(kind + body)
        kinds.append(kind)
        at += 12 + length
    assert kinds.index(b"iTXt") < kinds.index(b"IDAT")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    label=st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),
    score=st.one_of(st.none(), st.floats(0, 1, width=32)),
    image_id=st.integers(0, 2**62),
)
def test_embedded_metadata_round_trips_for_any_label(label, score, image_id):
    meta = {"id": image_id, "label": label, "true_label": None, "score": score, "store": "x.h5"}
    image = np.full((8, 8, 3), 7, np.uint8)
    jpeg = imagecodecs.jpeg8_encode(image)
    out = embed.embed("jpeg", jpeg, meta)
    assert embed.strip("jpeg", out) == jpeg
    exif = Image.open(io.BytesIO(out)).getexif()
    assert json.loads(exif.get_ifd(0x8769)[0x9286][8:].decode("ascii")) == meta
    helper = pytest.importorskip("piexif.helper")
    import piexif

    comment = piexif.load(out)["Exif"][piexif.ExifIFD.UserComment]
    assert json.loads(helper.UserComment.load(comment)) == meta
    png = imagecodecs.png_encode(image)
    out = embed.embed("png", png, meta)
    assert embed.strip("png", out) == png
    assert json.loads(Image.open(io.BytesIO(out)).text["h5store"]) == meta


@pytest.mark.parametrize("index", ["json", "csv"])
def test_export_then_import_loses_nothing(tmp_path, index):
    src = make_store(tmp_path / "s.h5", "jpeg")
    root = tmp_path / "out"
    with h5store.open(src) as store:
        export_folder(store, root, embed_metadata=True, index=index, progress=False)
        before = {i: store.record(i) for i in store.ids().tolist()}
        pixels = {i: store[i] for i in before}
        encoded = {i: store.get_encoded(i) for i in before}
    assert read_index(root)["labels"] == LABELS
    back = tmp_path / "back.h5"
    with h5store.open(back, "w", codec="jpeg") as store:
        ids = import_folder(store, root, progress=False)
    assert sorted(ids.tolist()) == sorted(before)
    with h5store.open(back) as store:
        assert store.labels == tuple(LABELS)
        for i, rec in before.items():
            got = store.record(i)
            assert (got.label, got.true_label, got.source) == (
                rec.label,
                rec.true_label,
                rec.source,
            )
            assert got.score == rec.score and np.array_equal(got.scores, rec.scores)
            assert store.get_encoded(i) == encoded[i]  # the metadata export added is gone again
            assert np.array_equal(store[i], pixels[i])
    size = os.path.getsize(back)
    with h5store.open(back, "a") as store:
        with pytest.raises(h5store.AlreadyImportedError, match="imported before"):
            import_folder(store, root, progress=False)
        assert len(store) == len(before)
    assert os.path.getsize(back) == size
    with h5store.open(back, "a") as store:
        again = import_folder(store, root, allow_duplicates=True, progress=False)
        assert len(store) == 2 * len(before) and not set(again.tolist()) & set(before)


def test_round_trip_of_16_bit_png_classes_and_images_without_scores(tmp_path):
    src = tmp_path / "s.h5"
    depth = [np.arange(k, k + 64, dtype=np.uint16).reshape(8, 8) * 900 for k in range(3)]
    with h5store.open(src, "w", codec="png") as store:
        store.add_batch(
            depth,
            labels=["depth", "depth", "far"],
            ids=[5, 9, 11],
            true_labels=[None, "far", "far"],
        )
        store.add(np.zeros((4, 4, 3), np.uint8), label="far", score=0.25, id=12)
    with h5store.open(src) as store:
        export_folder(store, tmp_path / "out", index="csv", embed_metadata=True, progress=False)
    with h5store.open(tmp_path / "back.h5", "w", codec="png") as back, h5store.open(src) as store:
        new = import_folder(back, tmp_path / "out", progress=False)
        assert sorted(new.tolist()) == [5, 9, 11, 12]
        for i in store.ids().tolist():
            assert repr(back.record(i)) == repr(store.record(i))
            assert back.get_encoded(i) == store.get_encoded(i)


def test_a_plain_tree_imported_twice_is_refused(tmp_path):
    root = tmp_path / "tree"
    (root / "cat").mkdir(parents=True)
    for k in range(3):
        png = imagecodecs.png_encode(np.full((8, 8), k, np.uint8))
        (root / "cat" / f"{k}.png").write_bytes(png)
    with h5store.open(tmp_path / "s.h5", "w", codec="png") as store:
        first = import_folder(store, root, progress=False)
        assert store.record(int(first[0])).source == str(root / "cat" / "0.png")
        with pytest.raises(h5store.AlreadyImportedError, match="3 of the 3 files"):
            import_folder(store, root, progress=False)
        assert len(store) == 3


def test_export_into_existing_files_is_refused_unless_overwrite(tmp_path):
    src = make_store(tmp_path / "s.h5", "jpeg")
    root = tmp_path / "out"
    with h5store.open(src) as store:
        export_folder(store, root, progress=False)
        listing = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
        with pytest.raises(h5store.TargetExistsError, match="overwrite"):
            export_folder(store, root, embed_metadata=True, progress=False)
        assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == listing
        assert export_folder(store, root, embed_metadata=True, overwrite=True, progress=False) == 6
    changed = [p for p, data in listing.items() if p.read_bytes() != data]
    assert len(changed) == 7  # every image now carries EXIF, and the index says so


def exiftool_validate(path) -> list[str]:
    """exiftool's own check of the file against the EXIF and container specifications: the
    warnings it has (none for a valid file)."""
    exiftool(path)  # skips (or fails under CI) without exiftool
    out = subprocess.run(
        ["exiftool", "-validate", "-warning", "-a", "-j", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (tags,) = json.loads(out)
    assert tags["Validate"], tags
    warnings = tags.get("Warning", [])
    return [warnings] if isinstance(warnings, str) else list(warnings)


@pytest.mark.parametrize("codec, options", [("jpeg", {}), ("webp", {}), ("png", {})])
def test_exif_is_valid_and_read_by_exiftool_piexif_and_pillow_with_the_score_vector(
    tmp_path, codec, options
):
    helper = pytest.importorskip("piexif.helper")
    import piexif

    root = tmp_path / "out"
    with h5store.open(make_store(tmp_path / "s.h5", codec, **options)) as store:
        export_folder(store, root, embed_metadata=True, progress=False)
        records = {i: store.record(i) for i in store.ids().tolist()}
        labels = store.labels
    for image_id, record in records.items():
        (path,) = root.glob(f"*/{image_id}.*")
        assert exiftool_validate(path) == []
        want = {name: pytest.approx(float(x)) for name, x in zip(labels, record.scores)}
        tags = exiftool(path)
        data = path.read_bytes()
        if codec == "png":  # iTXt: PNG's own text chunks
            comment = json.loads(Image.open(io.BytesIO(data)).text["h5store"])
            assert comment["scores"] == want
            continue
        comment = json.loads(tags["ExifIFD:UserComment"])
        assert comment["id"] == image_id and comment["label"] == record.label
        assert comment["scores"] == want  # the vector travels inside the file
        assert tags["ExifIFD:ExifImageWidth"] == record.shape[1]
        assert tags["ExifIFD:ExifImageHeight"] == record.shape[0]
        exif = piexif.load(data) if codec == "jpeg" else piexif.load(_webp_exif(data))
        raw = exif["Exif"][piexif.ExifIFD.UserComment]
        assert isinstance(raw, bytes) and raw.startswith(b"ASCII\x00\x00\x00")  # UNDEFINED
        assert json.loads(helper.UserComment.load(raw)) == comment
        pillow = Image.open(io.BytesIO(data)).getexif()
        assert json.loads(pillow.get_ifd(0x8769)[0x9286][8:]) == comment
        assert f"h5store id {image_id}" in pillow[0x010E]


def _webp_exif(data: bytes) -> bytes:
    """The TIFF block of a WebP file's EXIF chunk (piexif.load takes it with the Exif prefix)."""
    at = 12
    while at + 8 <= len(data):
        kind, size = data[at : at + 4], struct.unpack("<I", data[at + 4 : at + 8])[0]
        if kind == b"EXIF":
            return b"Exif\x00\x00" + data[at + 8 : at + 8 + size]
        at += 8 + size + (size & 1)
    raise AssertionError("no EXIF chunk")
