"""The file is plain HDF5 that other tools read without h5store (DESIGN section 2)."""

import json
import re
import subprocess
import textwrap
import urllib.parse
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import h5dump_missing, photo_crops, run_python
from hypothesis import given, settings
from hypothesis import strategies as st

import h5store
from h5store import format as fmt

GOLDEN = Path(__file__).parent / "data" / "golden-1.0.h5"


@pytest.fixture
def mixed_store(store_path):
    """JPEG (RGB and gray), Blosc2 (uint16) and raw classes, with scores and sources."""
    images, classes = photo_crops()
    rng = np.random.default_rng(5)
    with h5store.open(store_path, "w", labels=sorted(set(classes))) as store:
        store.create_class("depth", "blosc2")
        store.create_class("mask", "raw")
        store.add_batch(
            images[:6],
            labels=classes[:6],
            true_labels=classes[:6],
            scores=rng.random(6),
            sources=[f"img{k}.png" for k in range(6)],
        )
        store.add(images[6].mean(axis=2).astype(np.uint8), label=classes[6])
        store.add_batch(rng.integers(0, 65535, (3, 20, 30), dtype=np.uint16), labels=["depth"] * 3)
        store.add_batch(rng.integers(0, 2, (2, 20, 30), dtype=np.uint8), labels=["mask"] * 2)
    return store_path


def test_plain_h5py_with_hdf5plugin_reads_blosc2_and_raw_stacks(mixed_store):
    code = textwrap.dedent(
        """
        import json, sys
        import h5py, hdf5plugin
        assert "h5store" not in sys.modules
        out = {}
        with h5py.File(sys.argv[1], "r") as f:
            for name in ("depth", "mask"):
                group = f["classes"][name]
                for key, stack in group.items():
                    if key != "preview":
                        out[stack.name] = stack[()].tolist()
        print(json.dumps(out))
        """
    )
    result = run_python(code, mixed_store)
    assert result.returncode == 0, result.stderr
    stacks = json.loads(result.stdout)
    assert len(stacks) == 2
    with h5store.open(mixed_store) as store:
        for image_id in store.query(label=["depth", "mask"]).tolist():
            rec = store.record(image_id)
            assert np.array_equal(np.array(stacks[rec.stack][rec.position]), store[image_id])


def test_index_labels_and_attributes_read_with_plain_h5py(mixed_store):
    with h5py.File(mixed_store, "r") as f:
        assert f.attrs["h5store_format"] == "h5store"
        assert list(f.attrs["h5store_version"]) == list(fmt.FORMAT_VERSION)
        index = f["index"][()]
        labels = [s.decode() for s in f["labels"][()]]
        assert index.dtype.names[:3] == ("id", "label", "true_label")
        assert len(index) == 12 and index["batch_end"][-1] == 1
        # moved into /index on close, and (1.2) the tail left without rows of zeros
        assert f["index_tail"].shape == (0,) and f["index_tail"].maxshape == (512,)
        for row in index:
            group = f["classes"][fmt.safe_name(labels[row["label"]])]
            assert group.attrs["label"] == labels[row["label"]]
            stack = f[
                fmt.stack_path(
                    labels[row["label"]],
                    row["height"],
                    row["width"],
                    row["channels"],
                    row["dtype"].decode(),
                )
            ]
            assert stack.chunks == (1, *stack.shape[1:])
            assert (
                stack.id.get_chunk_info_by_coord(
                    (row["position"],) + (0,) * (stack.ndim - 1)
                ).byte_offset
                == row["offset"]
            )
            attrs = stack.attrs
            assert attrs["CLASS"] == b"IMAGE" and isinstance(attrs["CLASS"], np.bytes_)
            assert attrs["codec"] == row["codec"].decode()
            assert json.loads(attrs["codec_config"])["id"] == attrs["codec"]
        rgb = f["classes"][fmt.safe_name(labels[index["label"][0]])]
        assert any(
            s.attrs.get("INTERLACE_MODE") == b"INTERLACE_PIXEL"
            for k, s in rgb.items()
            if k != "preview"
        )
        assert f["sources"][0] == b"img0.png"


def test_source_checks_are_the_documented_crc32(mixed_store):
    # docs/FORMAT.md: CRC-32 (zlib) of b"h5store source\n" + the UTF-8 source, 0 -> 1;
    # computed here with zlib, not h5store's CRC-32.
    with h5py.File(mixed_store, "r") as f:
        sources, checks = f["sources"][()], f["source_crc32"][()]
    assert checks.dtype == np.dtype("<u4") and len(checks) == len(sources) == 12
    want = [zlib.crc32(b"h5store source\n" + s) or 1 for s in sources.tolist()]
    assert checks.tolist() == want
    assert sources[11] == b"" and checks[11] == zlib.crc32(b"h5store source\n")  # no source


def test_a_new_files_root_group_keeps_every_link_compact(mixed_store):
    # A root group that outgrows compact link storage is rewritten in several writes that a
    # killed writer can leave torn (then no one can open the file): new files have room for
    # all nine root links; format-1.0 files (eight at most) are never given a ninth.
    with h5py.File(mixed_store, "r") as f:
        assert set(f) <= set(fmt.ROOT_LINKS) and fmt.SOURCE_CRC32 in f
        assert fmt.root_holds_every_link(f)
    with h5py.File(GOLDEN, "r", locking=False) as f:
        assert len(f) == 8 and not fmt.root_holds_every_link(f)


def test_jpeg_stacks_declare_the_hdf_group_jpeg_filter(mixed_store):
    with h5py.File(mixed_store, "r") as f:
        jpeg_stacks = [
            s
            for g in f["classes"].values()
            for k, s in g.items()
            if k != "preview" and s.attrs["codec"] == "jpeg"
        ]
        assert {s.ndim for s in jpeg_stacks} == {3, 4}  # gray and RGB
        for stack in jpeg_stacks:
            plist = stack.id.get_create_plist()
            filter_id, _flags, cd_values, _name = plist.get_filter(0)
            height, width = stack.shape[1:3]
            assert filter_id == 32019
            assert tuple(cd_values) == (90, width, height, 1 if stack.ndim == 4 else 0)
            # each chunk is one JPEG stream of exactly the stack's geometry
            for position in range(stack.shape[0]):
                _mask, payload = stack.id.read_direct_chunk((position,) + (0,) * (stack.ndim - 1))
                info = h5store.get_codec("jpeg").probe(payload)
                assert (info.height, info.width, info.channels) == (
                    height,
                    width,
                    3 if stack.ndim == 4 else 1,
                )


@h5dump_missing
def test_hdf5_1_10_tools_read_structure_attributes_and_index(mixed_store):
    version = subprocess.run(["h5dump", "--version"], capture_output=True, text=True).stdout
    header = subprocess.run(["h5dump", "-H", "-A", mixed_store], capture_output=True, text=True)
    assert header.returncode == 0, header.stderr
    assert 'ATTRIBUTE "h5store_format"' in header.stdout and 'GROUP "classes"' in header.stdout
    index = subprocess.run(["h5dump", "-d", "/index", mixed_store], capture_output=True, text=True)
    assert index.returncode == 0, index.stderr
    assert '"crc32"' in index.stdout and "H5T_COMPOUND" in index.stdout
    checks = subprocess.run(["h5dump", "-d", "/source_crc32", mixed_store], capture_output=True)
    assert checks.returncode == 0 and b"H5T_STD_U32LE" in checks.stdout, checks.stderr
    listing = subprocess.run(["h5ls", "-r", mixed_store], capture_output=True, text=True)
    assert listing.returncode == 0 and "/classes/depth/20x30x1_uint16" in listing.stdout
    # Debian's tools are HDF5 1.10: the oldest library the format promises to open in
    assert re.search(r"Version 1\.10\.\d+", version), version


def test_safe_names_are_injective_and_single_components():
    labels = ["a/b", "a%2Fb", "..", ".", "%", " x", "x ", "a\\b", "é", "\t"]
    names = [fmt.safe_name(s) for s in labels]
    assert len(set(names)) == len(labels)
    for name in names:
        assert "/" not in name and name not in (".", "..") and not name.startswith(".")


def test_index_chunks_written_direct_read_back_through_hdf5s_filters(tmp_path):
    """The writer deflates whole /index chunks itself (shuffle, then deflate): plain h5py, with
    HDF5's own filters, must read back exactly the rows the store holds, also after a delete
    rewrote a row inside such a chunk."""
    path = tmp_path / "many.h5"
    rng = np.random.default_rng(3)
    with h5store.open(path, "w", codec="raw") as store:
        for _ in range(3):  # 1,800 rows: three whole chunks and a tail, twice
            store.add_batch(
                rng.integers(0, 255, (600, 4, 4), dtype=np.uint8),
                labels=rng.choice(["a", "b", "c"], 600).tolist(),
                scores=rng.random(600),
            )
        store.delete([5, 700])
        expected = store.index
    with h5py.File(path, "r") as f:
        index = f[fmt.INDEX]
        assert index.compression == "gzip" and index.shuffle
        assert len(index) == len(expected) == 1800
        assert np.array_equal(index[()], expected)


def _attributes(obj) -> dict:
    """Each attribute's value and stored type."""
    return {
        k: (v.tolist() if hasattr(v, "tolist") else v, obj.attrs.get_id(k).get_type().dtype.str)
        for k, v in obj.attrs.items()
    }


def _stack_description(stack: h5py.Dataset) -> dict:
    plist = stack.id.get_create_plist()
    filters = [plist.get_filter(k)[:3] for k in range(plist.get_nfilters())]
    return dict(
        attrs=_attributes(stack),
        filters=filters,
        chunks=stack.chunks,
        maxshape=stack.maxshape,
        dtype=stack.dtype.str,
        layout=plist.get_layout(),
        alloc_time=plist.get_alloc_time(),
    )


def test_objects_copied_for_classes_made_together_equal_objects_made_one_by_one(tmp_path):
    # A batch that makes several classes makes the first class group, stack and preview of a
    # kind and copies them for the others (H5Ocopy); classes made in separate batches and
    # closes make each.
    images = photo_crops(6, 32)[0]
    labels = ["a", "b", "c", "a", "b", "c"]
    together, apart = str(tmp_path / "together.h5"), str(tmp_path / "apart.h5")
    with h5store.open(together, "w", codec="jpeg") as store:
        store.add_batch(images, labels=labels)
    for k in (0, 1, 2):
        with h5store.open(apart, "w" if k == 0 else "a", codec="jpeg") as store:
            store.add_batch(images[k::3], labels=labels[k::3])
    with h5py.File(together, "r") as f, h5py.File(apart, "r") as g:
        for class_id, label in enumerate("abc"):
            path = f"/classes/{label}/32x32x3_uint8"
            assert _stack_description(f[path]) == _stack_description(g[path])
            assert f[path].shape == (2, 32, 32, 3)
            group = f[f"/classes/{label}"]
            assert _attributes(group) == _attributes(g[f"/classes/{label}"])
            assert group.attrs["label"] == label and group.attrs["class_id"] == class_id
            assert group.get("preview", getlink=True).path == f"/previews/{label}/data"
            preview, made = f[f"/previews/{label}"], g[f"/previews/{label}"]
            assert _attributes(preview) == _attributes(made)
            assert _attributes(preview["data"]).keys() == _attributes(made["data"]).keys()
            assert preview["data"].compression == made["data"].compression == "gzip"
            np.testing.assert_array_equal(preview["data"][()], made["data"][()])
            assert preview["data"].attrs["ids"].tolist() == [class_id, class_id + 3]
    with h5store.open(together) as store:
        assert store.verify().ok
        assert [store.record(i).label for i in store] == labels


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(' ./\\%:*?<>|"ab\n\x00\x7fé')) | st.characters()))
def test_safe_name_is_one_harmless_name_that_decodes_back(label):
    """Labels with nothing to escape are returned as they are (the fast path of an open of
    many classes); every name is free of the escaped characters and decodes to its label."""
    name = fmt.safe_name(label)
    assert not set(name) & fmt._ESCAPED - {"%"} and not name.startswith((".", " "))
    assert not name.endswith(" ")
    assert urllib.parse.unquote(name, errors="strict") == label
    if name == label:
        assert "%" not in label
