"""channel_order: OpenCV's BGR arrays in and out without a swap, RGB in the file."""

import base64
import io
import os
import pickle
import re

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import h5store
from h5store.folders import export_folder

cv2 = pytest.importorskip("cv2")


def red_bgr(height: int = 24, width: int = 32, alpha: bool = False) -> np.ndarray:
    """A red-dominant picture with some texture, in OpenCV's BGR(A) order."""
    rng = np.random.default_rng(1)
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = rng.integers(180, 220, (height, width))
    rgb[..., 1] = rng.integers(60, 90, (height, width))
    rgb[..., 2] = rng.integers(40, 70, (height, width))
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if alpha:
        bgr = np.dstack([bgr, rng.integers(0, 256, (height, width), dtype=np.uint8)])
    return bgr


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_opencv_round_trip_without_a_swap(tmp_path, ext):
    picture = str(tmp_path / f"crop{ext}")
    assert cv2.imwrite(picture, red_bgr())
    bgr = cv2.imread(picture)  # as an OpenCV pipeline has it
    path = str(tmp_path / "s.h5")
    with h5store.open(path, "w", codec="png") as store:
        image_id = store.add(bgr, label="retina", channel_order="bgr")
    with h5store.open(path, channel_order="bgr") as store:
        np.testing.assert_array_equal(store[image_id], bgr)
        np.testing.assert_array_equal(store.get_batch([image_id])[0], bgr)
        rgb = store.get_batch([image_id], channel_order="rgb")[0]
        np.testing.assert_array_equal(rgb, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        assert store[image_id].flags.c_contiguous  # cv2 functions take it as it is
        assert cv2.imencode(".png", store[image_id])[0]
    with h5store.open(path) as store:  # the file holds RGB
        np.testing.assert_array_equal(store[image_id], cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def test_open_level_order_applies_to_adds_and_reads_and_calls_override_it(store_path):
    bgr = red_bgr()
    bgra = red_bgr(alpha=True)
    gray = bgr[..., 1].copy()
    rgb, rgba = bgr[..., ::-1], bgra[..., [2, 1, 0, 3]]
    with h5store.open(store_path, "w", codec="png", channel_order="bgr") as store:
        a = store.add(bgr, label="x")  # the store's order
        b = store.add(rgb, label="x", channel_order="rgb")  # a call's own
        c, d, e = store.add_batch([bgra, gray, bgra], labels=["x"] * 3)
        (f,) = store.add_batch([rgba], labels=["x"], channel_order="rgb")
        np.testing.assert_array_equal(store[a], bgr)  # read-your-writes, in the store's order
    with h5store.open(store_path) as store:
        for image_id in (a, b):
            np.testing.assert_array_equal(store[image_id], rgb)
        np.testing.assert_array_equal(store[c], rgba)
        np.testing.assert_array_equal(store[d], gray)  # grayscale unaffected
        for image_id in (e, f):
            np.testing.assert_array_equal(store[image_id], rgba)
        out = np.zeros((2, *bgra.shape), np.uint8)
        store.get_batch([c, f], out=out, channel_order="bgr")
        np.testing.assert_array_equal(out[0], bgra)
        np.testing.assert_array_equal(out[1], bgra)


@settings(max_examples=40, deadline=None)
@given(
    images=st.lists(
        st.sampled_from([1, 3, 4]).flatmap(
            lambda c: hnp.arrays(
                np.uint8, (3, 5) if c == 1 else (3, 5, c), elements=st.integers(0, 255)
            )
        ),
        min_size=1,
        max_size=4,
    ),
    one_by_one=st.booleans(),
)
def test_bgr_in_is_rgb_stored_and_bgr_out(tmp_path_factory, images, one_by_one):
    path = str(tmp_path_factory.mktemp("order") / "s.h5")
    with h5store.open(path, "w", codec="png") as store:
        if one_by_one:
            ids = [store.add(im, label="x", channel_order="bgr") for im in images]
        else:
            ids = store.add_batch(images, labels=["x"] * len(images), channel_order="bgr")
    with h5store.open(path, channel_order="bgr") as bgr_view, h5store.open(path) as rgb_view:
        for image, image_id in zip(images, ids):
            np.testing.assert_array_equal(bgr_view[int(image_id)], image)
            swapped = image if image.ndim == 2 else image[..., [2, 1, 0, 3][: image.shape[2]]]
            np.testing.assert_array_equal(rgb_view[int(image_id)], swapped)
    for image in images:  # the caller's arrays are not swapped in place
        assert image.flags.writeable


@pytest.mark.parametrize("codec", ["png", "zstd"])  # files copied as stored / re-encoded
def test_a_bgr_store_shows_true_colours_in_previews_and_exports(tmp_path, codec):
    bgr = red_bgr(64, 64)
    path = str(tmp_path / "s.h5")
    with h5store.open(path, "w", codec=codec, channel_order="bgr") as store:
        store.add_batch([bgr] * 3, labels=["retina"] * 3)
    with h5store.open(path, channel_order="bgr") as store:  # a BGR handle exports RGB files
        export_folder(store, tmp_path / "out", progress=False)
    for name in os.listdir(tmp_path / "out" / "retina"):
        exported = np.asarray(Image.open(tmp_path / "out" / "retina" / name).convert("RGB"))
        means = exported.reshape(-1, 3).mean(axis=0)
        assert means[0] > 150 and means[2] < 80, means  # red stays red
    with h5py.File(path, "r") as f:
        (group,) = f["classes"].values()
        sheet = group["preview"][()]
    tiles = sheet[sheet.sum(axis=2) > 0].reshape(-1, 3).mean(axis=0)
    assert tiles[0] > 150 and tiles[2] < 80, tiles
    # The report's thumbnails, drawn through a BGR handle: red too.
    pytest.importorskip("jinja2")
    with h5store.open(path, channel_order="bgr") as store:
        h5store.report(store, tmp_path / "report.html", progress=False)
    html = (tmp_path / "report.html").read_text()
    thumbnails = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", html)
    assert thumbnails
    for encoded in thumbnails:
        picture = Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB")
        means = np.asarray(picture).reshape(-1, 3).mean(axis=0)
        assert means[0] > 150 and means[2] < 80, means


@pytest.mark.parametrize("order", ["BGR", "brg", None, 3])
def test_a_bad_channel_order_is_refused_before_anything_is_made(tmp_path, order):
    path = tmp_path / "s.h5"
    with pytest.raises(h5store.InvalidInputError, match="channel_order must be one of"):
        h5store.open(path, "w", channel_order=order)
    assert not path.exists()
    if order is None:  # per call, None means the store's order
        return
    with h5store.open(path, "w", codec="png") as store:
        for call in (
            lambda: store.add(red_bgr(), label="x", channel_order=order),
            lambda: store.add_batch([red_bgr()], labels=["x"], channel_order=order),
            lambda: store.get_batch([], channel_order=order),
        ):
            with pytest.raises(h5store.InvalidInputError, match="channel_order must be one of"):
                call()
        assert store.pending == 0 and len(store) == 0


def test_the_order_survives_pickling_and_shards(tmp_path):
    bgr = red_bgr()
    paths = [str(tmp_path / f"{k}.h5") for k in range(2)]
    for k, path in enumerate(paths):
        with h5store.open(path, "w", codec="png") as store:
            store.add(bgr, label="x", id=k, channel_order="bgr")
    with h5store.open(paths[0], channel_order="bgr") as store:
        again = pickle.loads(pickle.dumps(store))
        np.testing.assert_array_equal(again[0], bgr)
        again.close()
    with h5store.open(paths, channel_order="bgr") as shards:
        np.testing.assert_array_equal(shards[1], bgr)
        np.testing.assert_array_equal(shards.get_batch([0, 1])[1], bgr)
        out = np.zeros((2, *bgr.shape), np.uint8)
        np.testing.assert_array_equal(shards.get_batch([0, 1], out=out)[0], bgr)
        rgb = shards.get_batch([0], channel_order="rgb")[0]
        np.testing.assert_array_equal(rgb, bgr[..., ::-1])
        again = pickle.loads(pickle.dumps(shards))
        np.testing.assert_array_equal(again[0], bgr)
        again.close()


def test_torch_dataset_gives_bgr_tensors_when_asked(store_path):
    torch = pytest.importorskip("torch")
    from h5store.torch import ImageStoreDataset

    bgr = red_bgr()
    with h5store.open(store_path, "w", codec="png") as store:
        store.add_batch([bgr, bgr], labels=["x", "x"], channel_order="bgr")
    with pytest.raises(h5store.InvalidInputError, match="channel_order"):
        ImageStoreDataset(store_path, channel_order="GBR")
    ds = ImageStoreDataset(store_path, channel_order="bgr")
    want = torch.from_numpy(bgr).permute(2, 0, 1)
    assert torch.equal(ds[0][0], want)
    images, _ = ds.batch([0, 1])
    assert torch.equal(images[1], want)
    rgb = torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1)
    assert torch.equal(ImageStoreDataset(store_path)[0][0], rgb)
    ds.close()
