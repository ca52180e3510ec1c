"""The file in h5web (issue 13): h5wasm, the HDF5 build of h5web's VS Code and standalone
viewers, reads in Node what h5py reads; h5web's own app, built into a static page, shows a class
preview and a JPEG stack as RGB images in headless Chromium.

The npm packages are pinned in tests/js/package-lock.json (``npm ci`` there; .ci/run does it).
"""

import io
import json
import os
import shutil
import subprocess
import time

import h5py
import numpy as np
import pytest
from browser import chromium, console_errors, require, serve
from conftest import photo_crops, psnr

import h5store
from h5store.cli import main as cli_main

JS = os.path.join(os.path.dirname(__file__), "js")
AWKWARD = ["cat", "a/b", "ünï", "..", " x"]
# h5wasm-plugins (what h5web's viewers load) has filters for these; HTJ2K (32033) and the
# codecs without a registered filter must fail loudly instead.
DECODED_EXACTLY = {"raw", "deflate", "blosc2", "lz4", "zstd"}


def node_modules() -> str:
    require("node", "Node.js 20, Debian package nodejs")
    folder = os.path.join(JS, "node_modules")
    if not os.path.isdir(os.path.join(folder, "h5wasm")):
        message = f"run `npm ci` in {JS} first"
        if os.environ.get("CI"):
            pytest.fail(message + " (.ci/run should have)")
        pytest.skip(message)
    return folder


def h5wasm_read(path) -> dict:
    node_modules()
    done = subprocess.run(
        ["node", os.path.join(JS, "read_store.mjs"), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def plain(value):
    """An h5py value as the JSON the Node script prints."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()] if value.dtype.kind in "SO" else value.tolist()
    if isinstance(value, (np.generic,)):
        return plain(value.item())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return "NaN"
    return value


@pytest.fixture(scope="module")
def awkward_store(tmp_path_factory):
    """Awkward labels in JPEG classes, one class per other codec, scores, truth, a deletion."""
    path = tmp_path_factory.mktemp("h5wasm") / "awkward.h5"
    images, _ = photo_crops()
    rgb, gray16 = images[:, :24, :32], images[:, :24, :32, 0].astype(np.uint16) * 257
    vectors = np.random.default_rng(2).random((10, len(AWKWARD))).astype(np.float32)
    vectors[np.arange(10), np.arange(10) % len(AWKWARD)] = 1.0  # each label is its argmax
    with h5store.open(path, "w", labels=AWKWARD) as store:
        store.add_batch(
            images[:10],
            labels=AWKWARD * 2,
            true_labels=AWKWARD[::-1] * 2,
            scores=vectors,
        )
        for name in h5store.available_codecs():
            codec = h5store.get_codec(name)
            batch = rgb if "uint8" in codec.dtypes and 3 in codec.channels else gray16
            store.create_class(f"codec {name}", name)
            store.add_batch(list(batch[:2]), labels=[f"codec {name}"] * 2)
        store.delete([3])
    return path


def test_h5wasm_reads_what_h5py_reads(awkward_store):
    seen = h5wasm_read(awkward_store)
    with h5py.File(awkward_store, "r") as f:
        assert seen["root"] == {k: plain(v) for k, v in f.attrs.items()}
        # /labels and the columns of /scores as text (NUL-terminated and variable-length
        # strings), and no tail rows after close
        assert seen["labels"] == [s.decode() for s in f["labels"][()]]
        assert seen["labels"][: len(AWKWARD)] == AWKWARD
        assert seen["scoreColumns"] == AWKWARD == f["scores"].attrs["columns"].tolist()
        assert seen["tailShape"] == [0]
        index = f["index"][()]
        assert seen["index"]["columns"] == list(index.dtype.names)
        assert seen["index"]["shape"] == list(index.shape)
        assert seen["index"]["rows"] == [
            [plain(row[c]) for c in index.dtype.names] for row in index
        ]
        assert sorted(seen["classes"]) == sorted(f["classes"])
        labels = set()
        for name, group in f["classes"].items():
            assert seen["classes"][name] == {k: plain(v) for k, v in group.attrs.items()}
            labels.add(group.attrs["label"])
            preview = f["previews"][name]["data"]
            got = seen["previews"][name]
            assert got["shape"] == list(preview.shape)
            assert got["attrs"]["CLASS"] == "IMAGE"
            pixels = np.array(got["pixels"], dtype=np.uint8).reshape(preview.shape)
            assert np.array_equal(pixels, preview[()])
        assert set(AWKWARD) <= labels


def test_h5wasm_with_h5webs_plugins_decodes_jpeg_and_lossless_stacks(awkward_store):
    """The first image of every stack, against h5store's decoder on the same stored bytes."""
    seen = h5wasm_read(awkward_store)["stacks"]
    checked = set()
    with h5py.File(awkward_store, "r") as f:
        assert sorted(seen) == sorted(
            f"/classes/{c}/{s}" for c in f["classes"] for s in f["classes"][c] if s != "preview"
        )
        for path, got in seen.items():
            stack = f[path]
            codec = stack.parent.attrs["codec"]
            if codec not in DECODED_EXACTLY | {"jpeg"}:
                assert "not registered" in got.get("error", ""), (path, got)
                continue
            assert "error" not in got, (path, got)
            _, payload = stack.id.read_direct_chunk((0,) * stack.ndim)
            expected = h5store.get_codec(codec).decode(payload, stack.shape[1:], stack.dtype)
            pixels = np.array(got["pixels"], dtype=expected.dtype).reshape(expected.shape)
            if codec == "jpeg":
                # The plugin's libjpeg upsamples chroma differently from libjpeg-turbo (38.6 dB
                # apart on these crops); a wrong size or interleave would be below 15 dB.
                assert psnr(pixels, expected) > 32, path
            else:
                assert np.array_equal(pixels, expected), path
            checked.add(codec)
    assert checked == DECODED_EXACTLY | {"jpeg"}


# ---------------------------------------------------------------------------- h5web itself


@pytest.fixture(scope="module")
def h5web_site(tmp_path_factory):
    """h5web's app built by vite (tests/js/vite.config.mjs), with the demo store beside it and a
    small store holding a PNG class (a codec with no HDF5 filter)."""
    node_modules()
    site = tmp_path_factory.mktemp("h5web-site")
    done = subprocess.run(
        ["npx", "vite", "build", "--outDir", str(site), "--logLevel", "warn"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert cli_main(["demo", "--out", str(site / "demo.h5")]) == 0
    images, _ = photo_crops()
    with h5store.open(site / "png.h5", "w", codec="png") as store:
        store.add_batch(images[:2], labels=["cat", "cat"])
    return site


def widest_band(flags: np.ndarray) -> tuple[int, int]:
    edges = np.diff(np.r_[0, flags.astype(np.int8), 0])
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if not len(starts):
        return 0, 0
    k = int(np.argmax(stops - starts))
    return int(starts[k]), int(stops[k])


def rendered_image(driver, shape, timeout=90):
    """The picture h5web drew in its canvas (from a screenshot: WebGL keeps no readable buffer),
    cut to its bounding box and sampled at the centre of each dataset pixel: an (H, W, 3)
    array comparable with the dataset's pixels."""
    from PIL import Image

    h, w = shape[:2]
    deadline = time.monotonic() + timeout
    previous = None
    while True:
        rect = driver.execute_script(
            "const c = document.querySelector('canvas');"
            "if (!c) return null; const r = c.getBoundingClientRect();"
            "return [r.left, r.top, r.width, r.height, window.devicePixelRatio]"
        )
        if rect:
            shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
            x, y, cw, ch, ratio = rect
            canvas = np.asarray(shot)[
                int(y * ratio) : int((y + ch) * ratio), int(x * ratio) : int((x + cw) * ratio)
            ]
            # the picture: the widest band of rows and of columns mostly drawn on (an axis line
            # is one column or row, apart from it)
            drawn = (canvas < 250).any(axis=2)
            top, bottom = widest_band(drawn.mean(axis=1) > 0.2)
            left, right = widest_band(drawn.mean(axis=0) > 0.2)
            if bottom - top > 10 and right - left > 10:
                box = canvas[top:bottom, left:right]
                rows = ((np.arange(h) + 0.5) * box.shape[0] / h).astype(int)
                cols = ((np.arange(w) + 0.5) * box.shape[1] / w).astype(int)
                sampled = box[rows][:, cols]
                if previous is not None and np.array_equal(previous, sampled):
                    return sampled, box.shape  # the same twice: drawn, not still loading
                previous = sampled
        if time.monotonic() > deadline:
            raise AssertionError("h5web drew no image in its canvas")
        time.sleep(1)


def test_h5web_shows_a_class_preview_and_a_jpeg_stack_as_rgb_images(h5web_site, tmp_path):
    keep = os.environ.get("H5STORE_SCREENSHOTS")
    with h5py.File(h5web_site / "demo.h5", "r") as f:
        preview = f["previews/cat/data"][()]
        stack = "/classes/cat/224x224x3_uint8"
    with h5store.open(h5web_site / "demo.h5") as store:
        rows = store.index
        cat = store.labels.index("cat")
        first = int(rows["id"][(rows["label"] == cat) & (rows["position"] == 0)][0])
        first_image = store[first]

    with serve(str(h5web_site)) as url, chromium(1280, 900) as driver:
        driver.get(f"{url}/index.html?file=demo.h5&path=/previews/cat/data")
        drawn, box = rendered_image(driver, preview.shape)
        # the RGB visualisation, at the dataset's aspect ratio, with the dataset's colours
        assert "RGB" in driver.execute_script(  # h5web's visualisation tab in use
            "return [...document.querySelectorAll('button[role=tab][aria-selected=true]')]"
            ".map(b => b.textContent.trim())"
        )
        assert abs(box[1] / box[0] - preview.shape[1] / preview.shape[0]) < 0.05
        assert psnr(drawn, preview) > 40  # exact here (inf); resampling may blur an edge
        assert np.abs(drawn.astype(int) - drawn[..., [1, 2, 0]]).mean() > 5  # not grey
        driver.save_screenshot(str(tmp_path / "h5web-preview.png"))
        if keep:
            driver.save_screenshot(os.path.join(keep, "h5web-preview.png"))
        assert console_errors(driver) == []

        driver.get(f"{url}/index.html?file=demo.h5&path={stack}")
        drawn, box = rendered_image(driver, first_image.shape)
        assert abs(box[1] / box[0] - 1) < 0.05
        assert psnr(drawn, first_image) > 35  # 49 dB here; 15 dB against the next image
        assert driver.execute_script("return window.h5webPluginsAsked") == ["jpeg"]
        driver.save_screenshot(str(tmp_path / "h5web-jpeg.png"))
        if keep:
            driver.save_screenshot(os.path.join(keep, "h5web-jpeg.png"))
        assert console_errors(driver) == []

        # No filter for PNG: h5web says so rather than drawing wrong pixels.
        driver.get(f"{url}/index.html?file=png.h5&path=/classes/cat/64x64x3_uint8")
        deadline = time.monotonic() + 60
        while "is not registered" not in driver.find_element("tag name", "body").text:
            assert time.monotonic() < deadline, "h5web showed no error for a PNG stack"
            time.sleep(1)
        assert (
            driver.execute_script("const c = document.querySelector('canvas'); return c === null")
            is True
        )
    shutil.rmtree(tmp_path, ignore_errors=True)
