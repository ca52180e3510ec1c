"""What HDF5 viewers see, tested with the tools themselves (issue 3)."""

import glob
import os
import subprocess

import h5py
import numpy as np
import pytest
from conftest import h5dump_missing, photo_crops, psnr

import h5store

#: Debian's hdf5-filter-plugin installs under the machine's multiarch triplet
#: (x86_64-linux-gnu, aarch64-linux-gnu, ...).
DEBIAN_PLUGINS = next(
    iter(
        sorted(os.path.dirname(p) for p in glob.glob("/usr/lib/*/hdf5/serial/plugins/libh5lz4.so"))
    ),
    "/usr/lib/hdf5/serial/plugins (not found)",
)


@pytest.fixture(scope="module")
def every_codec(tmp_path_factory):
    """One class per registered codec (RGB uint8 where the codec takes it, else gray uint16),
    and the original images of each."""
    path = str(tmp_path_factory.mktemp("viewers") / "every_codec.h5")
    images, _ = photo_crops()
    rgb = images[:2, :24, :32]
    gray16 = images[:2, :24, :32, 0].astype(np.uint16) * 257
    expected = {}
    with h5store.open(path, "w") as store:
        for name in h5store.available_codecs():
            codec = h5store.get_codec(name)
            batch = rgb if "uint8" in codec.dtypes and 3 in codec.channels else gray16
            store.create_class(name, name)
            store.add_batch(list(batch), labels=[name] * 2)
            expected[name] = list(batch)
    return path, expected


def test_a_class_per_codec_round_trips(every_codec):
    path, expected = every_codec
    with h5store.open(path) as store:
        assert store.verify().ok
        for name, images in expected.items():
            ids = store.query(label=name)
            assert [store.record(i).codec for i in ids] == [name, name]
            lossless = store.codec_of(name).lossless
            for i, image in zip(ids, images):
                if lossless:
                    assert np.array_equal(store[i], image), name
                else:
                    assert store[i].shape == image.shape and psnr(store[i], image) > 30, name


def test_h5grove_serves_every_object(every_codec):
    """h5grove is h5web's server library: metadata of every object, and the values of every
    dataset whose filter HDF5 + hdf5plugin can decode (previews and the index included)."""
    content = pytest.importorskip("h5grove.content")
    encoders = pytest.importorskip("h5grove.encoders")
    import hdf5plugin  # noqa: F401  - what jupyterlab-h5web and h5grove deployments load

    path, expected = every_codec
    decodable = {"raw", "deflate", "zstd", "lz4", "blosc2", "htj2k"}
    served = 0
    with h5py.File(path, "r") as f:
        names = []
        f.visit(names.append)
        for name in ["", *names]:
            item = content.create_content(f, "/" + name)
            meta = item.metadata()
            assert meta["kind"] in ("group", "dataset"), name
            obj = f["/" + name]
            if not isinstance(obj, h5py.Dataset):
                continue
            codec = obj.attrs.get("codec")
            if codec is None or codec in decodable or name.startswith("previews"):
                data = item.data()
                numeric = data.dtype.kind in "iuf"  # h5web asks compound and strings as JSON
                assert encoders.encode(data, "npy" if numeric else "json").content
                served += 1
        assert served >= len(decodable) + 3  # index, labels, a preview per class ...
        sheet = content.create_content(f, "/previews/jpeg/data").data()
        assert sheet.shape == (32, 128, 3) and sheet.max() > 0


@h5dump_missing
@pytest.mark.skipif(
    not os.path.exists(os.path.join(DEBIAN_PLUGINS, "libh5lz4.so")),
    reason="Debian's hdf5-filter-plugin (LZ4 for HDF5 1.10) not installed",
)
def test_debian_h5dump_with_its_lz4_plugin_decodes_lz4_and_deflate_stacks(every_codec, tmp_path):
    path, expected = every_codec
    env = {**os.environ, "HDF5_PLUGIN_PATH": DEBIAN_PLUGINS}
    with h5store.open(path) as store:
        for name in ("lz4", "deflate"):
            rec = store.record(int(store.query(label=name)[0]))
            out = tmp_path / f"{name}.bin"
            done = subprocess.run(
                ["h5dump", "-d", rec.stack, "-b", "LE", "-o", str(out), path],
                capture_output=True,
                text=True,
                env=env,
            )
            assert done.returncode == 0, done.stderr
            dumped = np.fromfile(out, dtype=expected[name][0].dtype.newbyteorder("<"))
            assert np.array_equal(dumped.reshape(2, *rec.shape), np.stack(expected[name]))


@h5dump_missing
def test_h5dump_reads_previews_without_any_plugin(every_codec, tmp_path):
    path, _ = every_codec
    out = tmp_path / "sheet.bin"
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    done = subprocess.run(
        ["h5dump", "-d", "/previews/webp/data", "-b", "LE", "-o", str(out), path],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    with h5py.File(path, "r") as f:
        assert np.array_equal(
            np.fromfile(out, np.uint8).reshape(32, 128, 3), f["/previews/webp/data"][()]
        )


def test_jpeg_needs_the_plugin_and_says_so_rather_than_showing_garbage(every_codec):
    path, _ = every_codec
    with h5py.File(path, "r") as f:
        stack = next(v for k, v in f["classes/jpeg"].items() if k != "preview")
        if h5py.h5z.filter_avail(32019):
            pytest.skip("a JPEG filter plugin is installed here")
        with pytest.raises(OSError, match="plugin|filter"):
            stack[0]


def test_silx_recognises_each_preview_as_an_rgb_image(every_codec):
    nxdata = pytest.importorskip("silx.io.nxdata")
    path, expected = every_codec
    with h5py.File(path, "r") as f:
        for name in expected:
            group = f["previews"][name]
            assert nxdata.is_valid_nxdata(group), name
            view = nxdata.NXdata(group)
            assert view.interpretation == "rgba-image" and view.is_image
            assert view.signal.shape[-1] == 3


def _h5dump(*args: str) -> str:
    done = subprocess.run(["h5dump", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@h5dump_missing
def test_h5dump_prints_labels_and_score_columns_as_plain_text(tmp_path):
    """Format 1.2 (issue 23 item 6): /labels NUL-terminated, so HDF5 1.10's h5dump prints each
    label and not its padding (format 1.1 printed "cat" and 252 "\\000"); /scores names its
    columns; a closed store's /index_tail has no rows."""
    path = str(tmp_path / "labels.h5")
    labels = ["cat", "dog", "a much longer label, with spaces", "x" * 255]
    vectors = np.eye(len(labels), dtype=np.float32)
    with h5store.open(path, "w", codec="png", labels=labels) as store:
        store.add_batch(np.zeros((4, 4, 4), np.uint8), labels=labels, scores=vectors)
    text = _h5dump("-d", "/labels", path)
    assert "H5T_STR_NULLTERM" in text and "\\000" not in text
    for label in labels:
        assert f'"{label}"' in text, label
    assert '(0): "cat", "dog",' in text
    columns = _h5dump("-a", "/scores/columns", path)
    assert "H5T_VARIABLE" in columns and '(0): "cat", "dog",' in columns
    tail = _h5dump("-d", "/index_tail", path)
    assert "SIMPLE { ( 0 ) / ( 512 ) }" in tail
    with h5py.File(path, "r") as f:  # and in h5py, as bytes or (asstr) as text
        assert f["labels"].asstr()[()].tolist() == labels
        assert f["scores"].attrs["columns"].tolist() == labels
