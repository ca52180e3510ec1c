"""`h5store info` says which stacks this machine's HDF5 cannot decode (docs/viewers.md), and
what docs/viewers.md says about plain h5py and HDF5_PLUGIN_PATH holds."""

import json
import os
import subprocess
import sys

import h5py
import hdf5plugin
import pytest
from conftest import h5store_cli, photo_crops

import h5store
from h5store._filters import stack_filters


@pytest.fixture
def three_codecs(tmp_path):
    path = tmp_path / "s.h5"
    images, _ = photo_crops()
    with h5store.open(path, "w", codec="jpeg") as store:
        store.create_class("p", "png")
        store.create_class("b", "blosc2")
        store.add_batch(images[:4], labels=["j", "j", "p", "b"])
        store.add(images[4, :32], label="j")  # a second JPEG stack (another shape)
    return path


def test_each_codecs_filter_is_reported_with_what_this_machine_has(three_codecs):
    by_codec = {f.codec: f for f in stack_filters(three_codecs)}
    jpeg, png, blosc2 = by_codec["jpeg"], by_codec["png"], by_codec["blosc2"]
    assert len(jpeg.stacks) == 2 and all(s.startswith("/classes/j/") for s in jpeg.stacks)
    # the answers are HDF5's own, for the ids the file declares
    with h5py.File(three_codecs, "r") as f:
        declared = f[jpeg.stacks[0]].id.get_create_plist().get_filter(0)[0]
    assert jpeg.filter_id == declared and jpeg.available == h5py.h5z.filter_avail(declared)
    assert blosc2.available and blosc2.hdf5plugin and "import hdf5plugin" in blosc2.note()
    assert not png.registered and "no HDF5 filter exists for png" in png.note()
    if not jpeg.available:  # no JPEG plugin on HDF5_PLUGIN_PATH (as on CI)
        assert jpeg.note().startswith("2 jpeg stacks need HDF5 filter 32019, which this machine")
        assert "docs/viewers.md" in jpeg.note()
    assert stack_filters("https://example.org/s.h5") == []  # not a local file: nothing said


def test_info_prints_the_notes(three_codecs):
    text = h5store_cli("info", str(three_codecs)).stdout
    for f in stack_filters(three_codecs):
        if f.note():
            assert f.note() in " ".join(text.split())  # however the line is wrapped
    data = json.loads(h5store_cli("info", str(three_codecs), "--json").stdout)
    assert {f["codec"] for f in data["filters"]} == {"jpeg", "png", "blosc2"}


def test_plain_h5py_needs_hdf5plugin_or_its_folder_as_the_docs_say(three_codecs, tmp_path):
    read = (
        "import sys, h5py\n"
        "f = h5py.File(sys.argv[1], 'r')\n"
        "stack = [d for d in f['classes/b'].values() if 'codec' in d.attrs][0]\n"
        "try:\n    stack[0]; print('read')\nexcept OSError as e:\n    print('refused', e)\n"
    )

    def run(plugin_path):
        env = {**os.environ, "HDF5_PLUGIN_PATH": str(plugin_path)}
        return subprocess.run(
            [sys.executable, "-c", read, str(three_codecs)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    empty = tmp_path / "no-plugins"
    empty.mkdir()
    without, with_folder = run(empty), run(hdf5plugin.PLUGIN_PATH)
    assert without.stdout.startswith("refused"), without.stderr
    assert with_folder.stdout.startswith("read"), with_folder.stderr
