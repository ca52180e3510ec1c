"""Every class keeps a contact sheet that any HDF5 viewer shows without a filter plugin."""

import h5py
import numpy as np
from conftest import photo_crops, run_python
from hypothesis import example, given, settings
from hypothesis import strategies as st

import h5store
from h5store import format as fmt
from h5store._imaging import contact_sheet, resize_area, thumbnail


def sheet_of(images) -> np.ndarray:
    """The contact sheet the original images make (the store's own decode is not the reference)."""
    tiles = [thumbnail(image, fmt.PREVIEW_SIDE) for image in images]
    return contact_sheet(tiles, fmt.PREVIEW_SIDE, fmt.PREVIEW_COLUMNS)


def test_each_class_has_a_plain_gzip_rgb_preview(store_path):
    images, classes = photo_crops()
    with h5store.open(store_path, "w", codec="jpeg") as store:
        store.create_class("depth", "png")
        store.add_batch(images, labels=classes)
        store.add_batch(
            np.random.default_rng(0).integers(0, 4000, (3, 20, 10), dtype=np.uint16),
            labels=["depth"] * 3,
        )
    code = (
        "import sys, h5py\n"
        "with h5py.File(sys.argv[1], 'r') as f:\n"  # no hdf5plugin, no h5store
        "    for g in f['classes'].values():\n"
        "        d = g['preview']\n"
        "        print(g.attrs['label'], d.shape, d.dtype, d.compression, int(d[()].max()))\n"
    )
    result = run_python(code, store_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(set(classes)) + 1
    for line in lines:
        assert "(32, 128, 3) uint8 gzip" in line
        assert int(line.split()[-1]) > 0  # not a blank sheet
    with h5py.File(store_path, "r") as f:
        group = f["previews"][fmt.safe_name("depth")]
        assert group.attrs["NX_class"] == b"NXdata" and group.attrs["signal"] == b"data"
        data = group["data"]
        assert data.attrs["CLASS"] == b"IMAGE" and data.attrs["interpretation"] == b"rgba-image"
        assert data.attrs["INTERLACE_MODE"] == b"INTERLACE_PIXEL"
        assert list(data.attrs["ids"]) == list(range(len(images), len(images) + 3))


def test_preview_follows_deletions_and_can_be_rebuilt(store_path):
    images, _ = photo_crops()
    with h5store.open(store_path, "w", codec="png") as store:
        ids = store.add_batch(images[:10], labels=["a"] * 10)
    with h5py.File(store_path, "r") as f:
        first = f[fmt.preview_path("a")][()]
        assert list(f[fmt.preview_path("a")].attrs["ids"]) == list(ids[: fmt.PREVIEW_IMAGES])
        assert np.array_equal(first, sheet_of(images[: fmt.PREVIEW_IMAGES]))
    with h5store.open(store_path, "a") as store:
        store.delete([ids[0]])
    with h5py.File(store_path, "r") as f:
        assert list(f[fmt.preview_path("a")].attrs["ids"]) == list(ids[1 : fmt.PREVIEW_IMAGES + 1])
        assert np.array_equal(
            f[fmt.preview_path("a")][()], sheet_of(images[1 : fmt.PREVIEW_IMAGES + 1])
        )
    with h5py.File(store_path, "r+") as f:
        del f["previews"]
    with h5store.open(store_path, "a") as store:
        store.rebuild_previews()
    with h5py.File(store_path, "r") as f:
        assert f[fmt.preview_path("a")].shape == (32, 128, 3)
        assert np.array_equal(
            f[fmt.preview_path("a")][()], sheet_of(images[1 : fmt.PREVIEW_IMAGES + 1])
        )


def test_thumbnails_drawn_while_writing_match_the_stored_images(store_path):
    """Previews of pre-encoded batches come from thumbnails drawn while each batch was
    written; where a preview image has none (it replaced a deleted one), it is read back.
    Either way the sheet is the stored images' sheet, in the order of their ids."""
    import imagecodecs

    images, _ = photo_crops()
    payloads = [imagecodecs.jpeg8_encode(image, level=90) for image in images[:8]]
    with h5store.open(store_path, "w", codec="jpeg") as store:
        first = store.add_encoded_batch(payloads[:2], labels=["a", "b"])
        second = store.add_encoded_batch(payloads[2:], labels=["a", "a", "b", "a", "a", "a"])
        store.delete([first[0]])  # "a" now shows its 2nd to 5th images
        shown = {
            label: [i for i in [*first, *second] if i in store and store.record(i).label == label][
                : fmt.PREVIEW_IMAGES
            ]
            for label in ("a", "b")
        }
        expected = {label: sheet_of([store[i] for i in ids]) for label, ids in shown.items()}
    with h5py.File(store_path, "r") as f:
        for label, ids in shown.items():
            assert list(f[fmt.preview_path(label)].attrs["ids"]) == ids
            assert np.array_equal(f[fmt.preview_path(label)][()], expected[label])


@settings(max_examples=60, deadline=None)
@given(
    side=st.integers(1, 6),
    fy=st.integers(1, 20),
    fx=st.integers(1, 20),
    channels=st.sampled_from([1, 3]),
    wide=st.booleans(),
    bright=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
@example(side=2, fy=20, fx=20, channels=3, wide=False, bright=True, seed=0)
def test_shrinking_by_a_whole_factor_averages_each_block(
    side, fy, fx, channels, wide, bright, seed
):
    # Bright images make the block sums as large as they get (where narrow sums overflow).
    dtype = np.uint16 if wide else np.uint8
    high = np.iinfo(dtype).max
    image = np.random.default_rng(seed).integers(
        high - 8 if bright else 0,
        high,
        (side * fy, side * fx, channels),
        endpoint=True,
        dtype=dtype,
    )
    want = image.reshape(side, fy, side, fx, channels).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_allclose(resize_area(image, side, side), want, rtol=1e-5, atol=1e-3)
