"""Third-party codecs arrive through the ``h5store.codecs`` entry-point group.

tests/codec_plugin/ is a complete codec package; the module fixture installs it (pip, into a
temporary folder) and the tests use it from fresh interpreters that never import it by name.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import types
import zlib
from importlib.metadata import EntryPoint
from pathlib import Path

import h5py
import numpy as np
import pytest

import h5store
from h5store import codecs
from h5store.codecs import registry

PLUGIN_SOURCE = Path(__file__).parent / "codec_plugin"
CHECKOUT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """A folder holding the installed plugin package (its code and its entry-point metadata)."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "source"
    shutil.copytree(PLUGIN_SOURCE, source)  # the build writes next to the sources
    target = work / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (target / "h5store_zinvert").is_dir()
    return target


def run(
    args: list[str], plugin: Path | None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (plugin, CHECKOUT) if p is not None)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, cwd=cwd
    )


WRITE = """
import sys
import numpy as np
import h5store
images = np.arange(2 * 6 * 5 * 3, dtype=np.uint8).reshape(2, 6, 5, 3)
assert "zinvert" in h5store.available_codecs()
assert "h5store_zinvert" not in sys.modules
with h5store.open(sys.argv[1], "w", codec="zinvert", level=9) as store:
    store.add_batch(images, labels=["a", "b"])
    store.add(images[0, :, :, 0], label="a")
assert "h5store_zinvert" in sys.modules  # loaded through the entry point
"""

READ = """
import json, sys
import h5store
with h5store.open(sys.argv[1]) as store:
    print(json.dumps({"pixels": [store[i].tolist() for i in store],
                      "codec": store.record(0).codec, "config": store.codec_of("a").get_config()}))
"""


def test_store_written_and_read_with_a_plugin_codec_nobody_imported(plugin_path, tmp_path):
    path = str(tmp_path / "plugin.h5")
    written = run(["-c", WRITE, path], plugin_path)
    assert written.returncode == 0, written.stderr
    read = run(["-c", READ, path], plugin_path)
    assert read.returncode == 0, read.stderr
    out = json.loads(read.stdout)
    images = np.arange(2 * 6 * 5 * 3, dtype=np.uint8).reshape(2, 6, 5, 3)
    assert [np.array(p).tolist() for p in out["pixels"]] == [
        images[0].tolist(),
        images[1].tolist(),
        images[0, :, :, 0].tolist(),
    ]
    assert out["codec"] == "zinvert"
    assert out["config"] == {"id": "zinvert", "level": 9}
    # the payload really is the plugin's stream: the inverted pixels, deflated
    with h5py.File(path, "r", locking=False) as f:
        _, chunk = f["classes/a/6x5x3_uint8"].id.read_direct_chunk((0, 0, 0, 0))
    assert zlib.decompress(chunk) == np.invert(images[0]).tobytes()
    with pytest.raises(h5store.CodecError, match="'zinvert'"):  # this process has no such codec
        h5store.open(path)


def test_cli_info_and_verify_load_the_plugin(plugin_path, tmp_path):
    path = str(tmp_path / "plugin.h5")
    assert run(["-c", WRITE, path], plugin_path).returncode == 0
    info = run(["-m", "h5store.cli", "info", path, "--json"], plugin_path)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["codecs"] == ["zinvert"]
    verify = run(["-m", "h5store.cli", "verify", path, "--json"], plugin_path)
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["ok"] is True
    # without the package, the same commands say which codec is missing
    missing = run(["-m", "h5store.cli", "verify", path], None)
    assert missing.returncode != 0
    assert "'zinvert'" in missing.stderr and "h5store.codecs" in missing.stderr


def test_export_writes_a_plugin_codecs_files_with_its_extension_and_metadata(plugin_path, tmp_path):
    path, plain, tagged = (str(tmp_path / n) for n in ("plugin.h5", "plain", "tagged"))
    assert run(["-c", WRITE, path], plugin_path).returncode == 0
    for folder, extra in ((plain, []), (tagged, ["--embed-metadata"])):
        done = run(["-m", "h5store.cli", "export", path, folder, "--quiet", *extra], plugin_path)
        assert done.returncode == 0, done.stderr
        assert "without embedded metadata" not in done.stderr  # the plugin embeds its own
    images = np.arange(2 * 6 * 5 * 3, dtype=np.uint8).reshape(2, 6, 5, 3)
    files = {0: ("a", images[0]), 1: ("b", images[1]), 2: ("a", images[0, :, :, 0])}
    index = json.loads((tmp_path / "plain" / "h5store-index.json").read_text())
    assert sorted(e["file"] for e in index["images"]) == ["a/0.zinv", "a/2.zinv", "b/1.zinv"]
    for image_id, (label, pixels) in files.items():
        stored = (tmp_path / "plain" / label / f"{image_id}.zinv").read_bytes()
        assert zlib.decompress(stored) == np.invert(pixels).tobytes()  # the payload as stored
        data = (tmp_path / "tagged" / label / f"{image_id}.zinv").read_bytes()
        assert data.startswith(stored) and data.endswith(b"ZMD1")  # the plugin's own trailer
        (length,) = struct.unpack("<I", data[-8:-4])
        metadata = json.loads(data[len(stored) : len(stored) + length])
        assert (metadata["id"], metadata["label"]) == (image_id, label)
        assert metadata["size"] == [pixels.shape[1], pixels.shape[0]]
    show = ["-m", "h5store.cli", "show", path, "1", "--raw", "--json"]
    shown = run(show, plugin_path, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["written"] == "1.zinv"
    assert (tmp_path / "1.zinv").read_bytes() == (tmp_path / "plain" / "b" / "1.zinv").read_bytes()


def test_codecs_say_how_their_files_are_named_and_what_they_carry():
    jpeg, png, webp, zstd = (h5store.get_codec(c) for c in ("jpeg", "png", "webp", "zstd"))
    assert (jpeg.file_extension, png.file_extension, webp.file_extension) == (
        ".jpg",
        ".png",
        ".webp",
    )
    assert jpeg.embeds_metadata and png.embeds_metadata and webp.embeds_metadata
    assert zstd.file_extension is None and not zstd.embeds_metadata
    with pytest.raises(h5store.CodecError, match="'zstd'"):
        zstd.embed_metadata(b"x", {"id": 1})
    assert zstd.strip_metadata(b"x") == b"x"
    # and which codec a file of some name holds (bench asks, to compare with the files' own)
    assert [codecs.codec_of_file(f) for f in ("a/1.JPEG", "b.jpg", "c.j2k", "d.webp")] == [
        "jpeg",
        "jpeg",
        "jpeg2k",
        "webp",
    ]
    assert codecs.codec_of_file("e.tif") is None and codecs.codec_of_file("jpg") is None
    # every registered codec names an extension only if its payload is a file of that format
    for codec_id in h5store.available_codecs():
        cls = registry._REGISTRY.get(codec_id)
        if cls is not None and cls.file_extension is not None:
            assert cls.file_extension.startswith(".") and cls.mime_type.startswith("image/")


# ----------------------------------------------------------- the loader, without installing


class _DemoCodec(h5store.Codec):
    codec_id = "demo-plugin"

    @property
    def lossless(self):
        return True

    def encode(self, image):
        return image.tobytes()

    def decode(self, data, shape, dtype):
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()

    def get_config(self):
        return {"id": self.codec_id}


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Replace the installed entry points by the ones a test declares; undo the registrations."""
    declared: list[EntryPoint] = []
    before = dict(registry._REGISTRY)

    def entry_points(*, group, name=None):
        return [e for e in declared if e.group == group and (name is None or e.name == name)]

    monkeypatch.setattr(registry, "entry_points", entry_points)
    module = types.ModuleType("h5store_test_plugins")
    module.DemoCodec = _DemoCodec
    module.NotACodec = object
    module.broken = property(lambda self: 1 / 0)
    monkeypatch.setitem(sys.modules, "h5store_test_plugins", module)

    def declare(name: str, value: str) -> None:
        declared.append(EntryPoint(name, value, registry.ENTRY_POINT_GROUP))

    yield declare
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def test_entry_point_codec_is_loaded_on_a_miss_only(fake_entry_points):
    fake_entry_points("demo-plugin", "h5store_test_plugins:DemoCodec")
    assert "demo-plugin" in h5store.available_codecs()
    assert "demo-plugin" not in registry._REGISTRY  # listed, not imported
    codec = h5store.get_codec("demo-plugin")
    assert isinstance(codec, _DemoCodec)
    assert registry._REGISTRY["demo-plugin"] is _DemoCodec
    assert registry.codec_from_config({"id": "demo-plugin"}) == codec


def test_entry_point_under_another_codecs_name_is_refused(fake_entry_points):
    fake_entry_points("other-name", "h5store_test_plugins:DemoCodec")
    with pytest.raises(h5store.CodecError, match="'demo-plugin', not 'other-name'"):
        h5store.get_codec("other-name")


@pytest.mark.parametrize(
    "value, message",
    [
        ("h5store_test_plugins:NotACodec", "registered no codec named"),
        ("h5store_no_such_module:Codec", "loading plugin"),
    ],
)
def test_broken_plugins_give_a_codec_error_naming_them(fake_entry_points, value, message):
    fake_entry_points("bad-plugin", value)
    with pytest.raises(h5store.CodecError, match=message) as caught:
        registry.codec_from_config({"id": "bad-plugin"})
    assert value in str(caught.value)


def test_unknown_codec_in_a_file_names_the_entry_point_group():
    with pytest.raises(h5store.CodecError, match="h5store.codecs"):
        registry.codec_from_config({"id": "no-such-codec-anywhere"})
