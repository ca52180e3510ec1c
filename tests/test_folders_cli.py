"""ImageFolder import/export and the command line."""

import json
import os

import numpy as np
import pytest
from conftest import h5store_cli, photo_crops

import h5store
from h5store.folders import export_folder, import_folder, label_of_folder
from h5store.format import safe_name

AWKWARD = ["..", "a/b", "ünï", " x", "cat"]


def test_export_stays_inside_the_folder_and_import_restores_labels(tmp_path):
    images, _ = photo_crops()
    src, root = tmp_path / "src.h5", tmp_path / "out"
    with h5store.open(src, "w", codec="jpeg") as store:
        store.create_class("depth", "blosc2")
        store.add_batch(images[:5], labels=AWKWARD)
        depth = store.add(np.arange(64, dtype=np.uint16).reshape(8, 8), label="depth")
    with h5store.open(src) as store:
        # without the index, the tree is a plain ImageFolder: folder names are all import sees
        assert export_folder(store, root, index=None, progress=False) == 6
        with pytest.raises(FileExistsError):  # never overwrites
            export_folder(store, root, index=None, progress=False)
    written = sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )
    assert all(
        not p.startswith("..") and os.path.realpath(root / p).startswith(str(root)) for p in written
    )
    assert sorted(os.listdir(root)) == sorted(safe_name(x) for x in [*AWKWARD, "depth"])
    assert os.path.exists(root / "depth" / f"{depth}.png")
    with h5store.open(tmp_path / "back.h5", "w", codec="png") as back, h5store.open(src) as store:
        new = import_folder(back, root, progress=False)
        assert len(new) == 6
        for i in new:
            rec = back.record(i)
            original = int(os.path.splitext(os.path.basename(rec.source))[0])
            # the folder is the prediction (the default): no true label is made up
            assert rec.label == store.record(original).label and rec.true_label is None
            if rec.label != "depth":  # JPEG files went into the PNG classes decoded
                assert np.array_equal(back[i], store[original])
        assert np.array_equal(
            back[new[[back.record(i).label for i in new].index("depth")]], store[depth]
        )
    assert [label_of_folder(safe_name(x)) for x in AWKWARD] == AWKWARD


def test_import_keeps_jpeg_files_byte_for_byte(tmp_path):
    images, _ = photo_crops()
    src = tmp_path / "src.h5"
    with h5store.open(src, "w", codec="jpeg") as store:
        store.add_batch(images[:4], labels=["a", "a", "b", "b"])
    with h5store.open(src) as store:
        export_folder(store, tmp_path / "out", progress=False)
    with h5store.open(tmp_path / "back.h5", "w", codec="jpeg") as back, h5store.open(src) as store:
        for i in import_folder(back, tmp_path / "out", progress=False):  # ids come back too
            assert back.get_encoded(i) == store.get_encoded(i)


def test_import_rejects_an_empty_tree(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with h5store.open(tmp_path / "s.h5", "w") as store, pytest.raises(h5store.InvalidInputError):
        import_folder(store, tmp_path / "empty", progress=False)


def test_demo_info_verify_index_on_the_command_line(tmp_path):
    out = tmp_path / "demo.h5"
    demo = json.loads(
        h5store_cli("demo", "--out", str(out), "--n", "40", "--size", "64", "--json").stdout
    )
    assert demo["images"] == 40 and demo["verify_ok"] and demo["source"] == "scikit-image photos"
    assert demo["file_bytes"] == os.path.getsize(out) and demo["misclassified"] > 0
    text = h5store_cli("demo", "--out", str(tmp_path / "d2.h5"), "--n", "16", "--size", "32").stdout
    assert "h5store demo: 16 crops" in text and "verify: ok" in text
    info = json.loads(h5store_cli("info", str(out), "--json").stdout)
    assert info["images"] == 40 and info["format_version"] == list(h5store.FORMAT_VERSION)
    h5store_cli("index", str(out), "--csv", str(tmp_path / "index.csv"))
    lines = (tmp_path / "index.csv").read_text().splitlines()
    assert lines[0].startswith("id,label,true_label,score") and len(lines) == 41
    assert json.loads(h5store_cli("verify", str(out), "--json").stdout)["ok"] is True
    missing = h5store_cli("info", str(tmp_path / "nope.h5"), check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_verify_exit_code_names_damage(tmp_path):
    path = tmp_path / "s.h5"
    with h5store.open(path, "w", codec="raw") as store:
        store.add_batch([np.full((8, 8), k, np.uint8) for k in range(3)], labels=["a"] * 3)
        offset = int(store.index["offset"][1])
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff")
    result = h5store_cli("verify", str(path), "--json", check=False)
    assert result.returncode == 1 and json.loads(result.stdout)["damaged"] == [1]


def test_export_writes_nothing_outside_the_export_folder(tmp_path):
    # Looks at the folders around the export folder, where an escaping label would write, and
    # names the expected folders literally rather than through safe_name.
    escaping = {
        "..": "%2E.",
        "../x": "%2E.%2Fx",
        "a/../../y": "a%2F..%2F..%2Fy",
        "/abs": "%2Fabs",
        ".hidden": "%2Ehidden",
        "cat": "cat",
    }
    images, _ = photo_crops()
    src = tmp_path / "src.h5"
    with h5store.open(src, "w", codec="png") as store:
        ids = store.add_batch(images[: len(escaping)], labels=list(escaping))
    box = tmp_path / "box"
    root = box / "inner" / "out"
    root.parent.mkdir(parents=True)
    before = {p for p in tmp_path.rglob("*")}
    with h5store.open(src) as store:
        assert export_folder(store, root, progress=False) == len(escaping)
    created = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in created if p != root and root not in p.parents]
    assert outside == [], outside
    assert sorted(os.listdir(root)) == sorted([*escaping.values(), "h5store-index.json"])
    for image_id, folder in zip(ids.tolist(), escaping.values()):
        assert os.listdir(root / folder) == [f"{image_id}.png"]
