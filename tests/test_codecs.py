"""Every registered codec: round trips (directly and through a store), what each refuses, the
quality scale, HDF5 filters that plain h5py + hdf5plugin decode, and bad pre-encoded input."""

import json
import textwrap

import h5py
import numpy as np
import pytest
from conftest import file_digest, psnr, run_python
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import h5store
from h5store.codecs import OPAQUE_FILTER_ID, codec_from_config, get_codec
from h5store.codecs._image import ImageCodec
from h5store.codecs._quality import ANCHOR_QUALITIES
from h5store.sample import photos, sample_set

# (codec, parameters) for every mode of every registered codec.
LOSSLESS = [
    ("png", {}),
    ("qoi", {}),
    ("webp", {"lossless": True}),
    ("avif", {"lossless": True}),
    ("jpegxl", {"lossless": True, "effort": 3}),
    ("jpeg2k", {}),
    ("htj2k", {}),
    ("jpegls", {}),
    ("zstd", {}),
    ("lz4", {}),
    ("deflate", {}),
    ("raw", {}),
    ("blosc2", {"filter": "noshuffle"}),
    ("blosc2", {"filter": "shuffle"}),
    ("blosc2", {"filter": "bitshuffle"}),
    ("blosc2", {"filter": "bytedelta"}),
]
# Lossy modes at their default quality (90), with the PSNR (dB) each must keep on photo crops of
# 32-64 px. Quality 90 is calibrated to JPEG's 37.5 dB mean on 224 px photos; the lowest seen on
# 300 random crops of 32-64 px was 29.5 (JPEG), 29.7 (WebP, JPEG XL), 30.9 (AVIF) and 35.8
# (JPEG-LS near-lossless, NEAR 6), hence these bounds.
# PSNR floors at quality 90 on photo crops of 32-64 px. Minima over random crops of the
# sample photos (3000 for JPEG, 300-800 for the slower codecs): JPEG 28.5, WebP 29.0, AVIF 31.8,
# JPEG XL 29.6, JPEG-LS near-lossless 35.7 dB; hypothesis hunts for worse crops (it found a
# 27.0 dB one for JPEG), hence the margin.
LOSSY = [
    ("jpeg", {}, 25.0),
    ("jpeg", {"optimize": True}, 25.0),
    ("webp", {}, 25.0),
    ("avif", {}, 27.0),
    ("jpegxl", {}, 25.0),
    ("jpegls", {"lossless": False}, 33.0),
]
PRE_ENCODABLE = ["png", "jpeg", "webp", "avif", "jpegxl", "jpeg2k", "htj2k", "jpegls", "qoi"]

FEW = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SOME = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def case_id(case):
    name, params = case[0], case[1]
    return name + "".join(f"-{k}={v}" for k, v in params.items())


def to_channels(rgb: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        return np.ascontiguousarray(rgb.mean(axis=2).astype(rgb.dtype))
    if channels == 3:
        return np.ascontiguousarray(rgb)
    # An alpha channel with transparent, translucent and opaque areas.
    h, w = rgb.shape[:2]
    ramp = np.linspace(0, np.iinfo(rgb.dtype).max, w * h).reshape(h, w).astype(rgb.dtype)
    return np.ascontiguousarray(np.dstack([rgb, ramp]))


def to_uint16(rgb8: np.ndarray, low_bits: np.ndarray) -> np.ndarray:
    """A 16-bit image that uses all 16 bits: the photo in the high byte, noise in the low."""
    return (rgb8.astype(np.uint16) << 8) | low_bits.astype(np.uint16)


@st.composite
def photo_images(draw, dtypes=("uint8",), channels=(3,), min_side=1, max_side=48):
    """Crops of the scikit-image photos (gray, RGB or RGBA; uint8 or full-range uint16)."""
    sources = photos()
    photo = sources[draw(st.sampled_from(sorted(sources)))]
    h = draw(st.integers(min_side, max_side))
    w = draw(st.integers(min_side, max_side))
    top = draw(st.integers(0, photo.shape[0] - h))
    left = draw(st.integers(0, photo.shape[1] - w))
    crop = photo[top : top + h, left : left + w]
    if draw(st.sampled_from(sorted(dtypes))) == "uint16":
        noise = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, crop.shape)
        crop = to_uint16(crop, noise)
    return to_channels(crop, draw(st.sampled_from(sorted(channels))))


def accepted(name, params):
    codec = get_codec(name, **params)
    return sorted(codec.dtypes), sorted(codec.channels)


def test_every_registered_codec_is_covered():
    covered = {name for name, _ in LOSSLESS} | {name for name, _, _ in LOSSY}
    assert covered == set(h5store.available_codecs())


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("case", LOSSLESS, ids=case_id)
@SOME
@given(data=st.data())
def test_lossless_codec_round_trips_bit_exact(case, data):
    name, params = case
    codec = get_codec(name, **params)
    dtypes, channels = accepted(name, params)
    image = data.draw(photo_images(dtypes, channels))
    assert codec.lossless
    out = codec.decode(codec.encode(image), image.shape, image.dtype)
    assert out.dtype == image.dtype and out.shape == image.shape
    assert np.array_equal(out, image)


@pytest.mark.parametrize("case", LOSSLESS, ids=case_id)
def test_lossless_codec_is_exact_on_noise_and_extremes(case):
    """Noise defeats prediction and the extremes catch clipping; every accepted layout."""
    name, params = case
    codec = get_codec(name, **params)
    rng = np.random.default_rng(5)
    for dtype in codec.dtypes:
        for channels in codec.channels:
            top = np.iinfo(dtype).max
            shape = (13, 29) if channels == 1 else (13, 29, channels)
            image = rng.integers(0, top, shape, endpoint=True).astype(dtype)
            image[0] = 0
            image[1] = top
            out = codec.decode(codec.encode(image), image.shape, image.dtype)
            assert np.array_equal(out, image), (dtype, channels)


@pytest.mark.parametrize("case", LOSSY, ids=case_id)
@SOME
@given(data=st.data())
def test_lossy_codec_round_trips_within_its_psnr_bound(case, data):
    name, params, bound = case
    codec = get_codec(name, **params)
    assert not codec.lossless and codec.get_config()["quality"] == 90
    image = data.draw(
        photo_images(("uint8",), sorted(set(codec.channels) & {1, 3}), min_side=32, max_side=64)
    )
    out = codec.decode(codec.encode(image), image.shape, image.dtype)
    assert out.dtype == image.dtype and out.shape == image.shape
    assert psnr(image, out) >= bound


@pytest.mark.parametrize("case", LOSSY, ids=case_id)
def test_lossy_codec_keeps_an_alpha_channel_it_accepts(case):
    name, params, _ = case
    codec = get_codec(name, **params)
    if 4 not in codec.channels:
        pytest.skip(f"{name} holds no alpha channel")
    rgb = sample_set(1, 48).images[0]
    for alpha in (to_channels(rgb, 4)[..., 3], np.full(rgb.shape[:2], 255, np.uint8)):
        image = np.ascontiguousarray(np.dstack([rgb, alpha]))
        out = codec.decode(codec.encode(image), image.shape, image.dtype)
        assert out.shape == image.shape
        assert psnr(image[..., 3], out[..., 3]) >= 30


@pytest.mark.parametrize("near_quality", [100, 90, 60])
def test_jpegls_near_lossless_bounds_every_sample_error_by_near(near_quality):
    codec = get_codec("jpegls", lossless=False, quality=near_quality)
    image = sample_set(2, 64).images[1]
    out = codec.decode(codec.encode(image), image.shape, image.dtype)
    assert np.abs(out.astype(int) - image.astype(int)).max() <= codec.knob


@pytest.mark.parametrize("case", [*LOSSLESS, *((n, p) for n, p, _ in LOSSY)], ids=case_id)
@FEW
@given(data=st.data())
def test_store_round_trips_every_codec(tmp_path_factory, case, data):
    name, params = case
    codec = get_codec(name, **params)
    dtypes, channels = sorted(codec.dtypes), sorted(codec.channels)
    batch = data.draw(
        st.lists(photo_images(dtypes, channels, min_side=16, max_side=40), min_size=1, max_size=4)
    )
    path = tmp_path_factory.mktemp("store") / "s.h5"
    with h5store.open(path, "w", codec=name, **params) as store:
        ids = store.add_batch(batch, labels=["x"] * len(batch))
    with h5store.open(path) as store:
        for image_id, image in zip(ids, batch):
            out = store[image_id]
            assert out.dtype == image.dtype and out.shape == image.shape
            if codec.lossless:
                assert np.array_equal(out, image)
            else:
                assert psnr(image, out) >= 25
        assert store.verify().ok


def test_two_classes_of_one_file_use_different_codecs(store_path):
    images = sample_set(4, 64).images
    with h5store.open(store_path, "w") as store:
        store.create_class("a", "png")
        store.create_class("b", "webp", quality=80)
        ids_a = store.add_batch(images[:2], labels=["a", "a"])
        ids_b = store.add_batch(images[2:], labels=["b", "b"])
    with h5py.File(store_path, "r") as f:
        configs = {
            f[f"classes/{c}"].attrs["label"]: json.loads(f[f"classes/{c}"].attrs["codec_config"])
            for c in f["classes"]
        }
    assert codec_from_config(configs["a"]) == get_codec("png")
    assert codec_from_config(configs["b"]) == get_codec("webp", quality=80)
    with h5store.open(store_path) as store:
        assert [store.record(i).codec for i in (*ids_a, *ids_b)] == ["png", "png", "webp", "webp"]
        for image_id, image in zip(ids_a, images[:2]):
            assert np.array_equal(store[image_id], image)
        for image_id, image in zip(ids_b, images[2:]):
            assert store[image_id].shape == image.shape and psnr(image, store[image_id]) >= 28
            assert store.get_encoded(image_id)[8:12] == b"WEBP"


# --------------------------------------------------------------------------- what codecs refuse


def refused_layouts(codec):
    return [
        (dtype, channels)
        for dtype in ("uint8", "uint16")
        for channels in (1, 3, 4)
        if dtype not in codec.dtypes or channels not in codec.channels
    ]


@pytest.mark.parametrize("case", [*LOSSLESS, *((n, p) for n, p, _ in LOSSY)], ids=case_id)
def test_codec_refuses_what_it_cannot_hold_and_the_file_stays_unchanged(store_path, case):
    name, params = case
    codec = get_codec(name, **params)
    refused = refused_layouts(codec)
    if not refused:
        pytest.skip(f"{name} holds every dtype and channel count")
    with h5store.open(store_path, "w", codec="png") as store:
        store.add_batch(sample_set(2, 16).images, labels=["existing", "existing"])
    before = file_digest(store_path)
    rgb = sample_set(1, 16).images[0]
    for dtype, channels in refused:
        with pytest.raises(h5store.CodecError, match=name):
            codec.check_image(16, 16, channels, np.dtype(dtype))
        image = to_channels(rgb.astype(dtype), channels)
        good = to_channels(rgb.astype("uint8"), 3)
        with h5store.open(store_path, "a", codec=name, **params) as store:
            with pytest.raises(h5store.CodecError) as excinfo:
                store.add_batch([good, image], labels=["new", "new"])
        assert isinstance(excinfo.value, h5store.H5StoreError)
        assert f"{channels}-channel" in str(excinfo.value) or dtype in str(excinfo.value)
        assert file_digest(store_path) == before


@pytest.mark.parametrize("name", sorted(h5store.available_codecs()))
def test_codecs_refuse_images_larger_than_their_streams_describe(name):
    codec = get_codec(name)
    side = codec.max_side
    if side >= 2**31 - 1 and getattr(codec, "max_pixels", None) is None:
        pytest.skip(f"{name} sets no size limit of its own")
    channels, dtype = min(codec.channels), np.dtype(min(codec.dtypes))
    codec.check_image(1, min(side, 1024), channels, dtype)
    too_big = [(1, side + 1), (side + 1, 1)]
    if getattr(codec, "max_pixels", None):
        root = int(codec.max_pixels**0.5) + 1
        too_big.append((root, root))
    for height, width in too_big:
        with pytest.raises(h5store.CodecError, match=name):
            codec.check_image(height, width, channels, dtype)


def test_lossy_modes_refuse_uint16_that_their_lossless_modes_hold():
    for name in ("jpegxl", "jpegls"):
        assert "uint16" in get_codec(name, lossless=True).dtypes
        with pytest.raises(h5store.CodecError, match="uint16"):
            get_codec(name, lossless=False).check_image(8, 8, 3, np.dtype("uint16"))


@pytest.mark.parametrize(
    "name, params",
    [
        ("webp", {"quality": 0}),
        ("webp", {"quality": 101}),
        ("avif", {"quality": 50.5}),
        ("jpegxl", {"lossless": "yes"}),
        ("jpegxl", {"effort": 10}),
        ("webp", {"effort": 7}),
        ("jpeg2k", {"effort": 3}),
        ("jpeg2k", {"lossless": False}),
        ("qoi", {"lossless": False}),
        ("zstd", {"level": 23}),
        ("deflate", {"level": 0}),
        ("lz4", {"level": 1}),
        ("htj2k", {"lossless": False}),
        ("htj2k", {"speed": 1}),
    ],
)
def test_bad_codec_settings_are_refused(store_path, name, params):
    with pytest.raises(h5store.CodecError, match=next(iter(params))):
        get_codec(name, **params)
    with pytest.raises(h5store.CodecError):
        h5store.open(store_path, "w", codec=name, **params)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("case", [*LOSSLESS, *((n, p) for n, p, _ in LOSSY)], ids=case_id)
def test_config_is_plain_data_that_rebuilds_the_codec(case):
    name, params = case
    codec = get_codec(name, **params)
    config = json.loads(json.dumps(codec.get_config()))
    assert config["id"] == name
    rebuilt = codec_from_config(config)
    assert (
        rebuilt == codec and rebuilt.lossless == codec.lossless and rebuilt.dtypes == codec.dtypes
    )


def test_quality_reaches_lossy_codecs_only_and_lossless_configs_ignore_it():
    assert get_codec("webp", quality=70).get_config()["quality"] == 70
    assert get_codec("webp", quality=70, lossless=True) == get_codec(
        "webp", quality=20, lossless=True
    )
    assert "quality" not in get_codec("png", quality=70).get_config()
    for name in ("qoi", "jpeg2k", "htj2k"):  # lossless only: the switch is accepted, not needed
        assert get_codec(name, lossless=True) == get_codec(name) and get_codec(name).lossless


def test_bench_grid_settings_are_valid_and_distinct():
    for name in h5store.available_codecs():
        grid = type(get_codec(name)).bench_grid
        configs = [
            json.dumps(get_codec(name, **setting).get_config(), sort_keys=True) for setting in grid
        ]
        assert len(set(configs)) == len(grid), name


# --------------------------------------------------------------------------- the quality scale


@pytest.mark.parametrize("case", [c for c in LOSSY if c[0] != "jpeg"], ids=case_id)
def test_equal_quality_means_psnr_close_to_jpeg(case):
    """The calibration's promise, checked on photos it was not measured on."""
    name, params, _ = case
    images = sample_set(6, 224, seed=11).images

    def mean_psnr(codec):
        return np.mean(
            [psnr(im, codec.decode(codec.encode(im), im.shape, im.dtype)) for im in images]
        )

    by_quality = {}
    for quality in (50, 90):
        ours = mean_psnr(get_codec(name, quality=quality, **params))
        jpeg = mean_psnr(get_codec("jpeg", quality=quality))
        assert abs(ours - jpeg) < 1.5, (quality, ours, jpeg)
        by_quality[quality] = ours
    assert by_quality[90] > by_quality[50]


def test_optimized_jpeg_is_smaller_baseline_with_the_same_pixels():
    image = sample_set(1, 224).images[0]
    plain, optimized = get_codec("jpeg"), get_codec("jpeg", optimize=True)
    a, b = plain.encode(image), optimized.encode(image)
    assert len(b) < len(a)
    assert np.array_equal(
        plain.decode(a, image.shape, image.dtype), optimized.decode(b, image.shape, image.dtype)
    )
    assert b"\xff\xc0" in b and b"\xff\xc2" not in b  # baseline frame: filter 32019 decodes it


# --------------------------------------------------------------------------- HDF5 filters

# Stacks whose chunks HDF5 itself or hdf5plugin decode, with the filter each must declare.
FILTERED = [
    ("deflate", {}, 1, ("uint8", "uint16"), (1, 3, 4)),
    ("zstd", {}, 32015, ("uint8", "uint16"), (1, 3, 4)),
    ("lz4", {}, 32004, ("uint8", "uint16"), (1, 3, 4)),
    ("blosc2", {"filter": "noshuffle"}, 32026, ("uint8", "uint16"), (1, 3)),
    ("blosc2", {"filter": "shuffle"}, 32026, ("uint8", "uint16"), (1, 3, 4)),
    ("blosc2", {"filter": "bitshuffle"}, 32026, ("uint8", "uint16"), (1, 3, 4)),
    ("blosc2", {"filter": "bytedelta"}, 32026, ("uint8", "uint16"), (1, 3, 4)),
    ("htj2k", {}, 32033, ("uint8", "uint16"), (1, 3)),
    ("raw", {}, None, ("uint8", "uint16"), (1, 3, 4)),
]

PLAIN_H5PY_READER = textwrap.dedent(
    """
    import json, sys
    import h5py, hdf5plugin, numpy as np
    path, out = sys.argv[1], sys.argv[2]
    arrays, filters, failures = {}, {}, {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.startswith("classes/") and obj.ndim >= 3:
                plist = obj.id.get_create_plist()
                filters[name] = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
                try:
                    arrays[name] = obj[()]
                except OSError as exc:
                    failures[name] = str(exc)
        f.visititems(visit)
    np.savez(out, **{name.replace("/", "|"): a for name, a in arrays.items()})
    print(json.dumps({"filters": filters, "failures": failures,
                      "h5store_imported": "h5store" in sys.modules}))
    """
)


def test_plain_h5py_with_hdf5plugin_reads_what_h5store_returns(tmp_path):
    path = tmp_path / "viewers.h5"
    rgb = sample_set(3, 40).images
    expected_filter, expected = {}, {}
    with h5store.open(path, "w") as store:
        for k, (name, params, filter_id, dtypes, channels) in enumerate(FILTERED):
            label = f"{k}-{case_id((name, params))}"
            store.create_class(label, name, **params)
            batch = [
                to_channels(to_uint16(im, im[::-1]) if dtype == "uint16" else im, c)
                for dtype in dtypes
                for c in channels
                for im in rgb
            ]
            ids = store.add_batch(batch, labels=[label] * len(batch))
            for image_id in ids:
                expected.setdefault(store.record(image_id).stack, []).append(image_id)
                expected_filter[store.record(image_id).stack] = filter_id
        # A stack with no registered filter must not be readable without h5store.
        store.create_class("opaque", "webp")
        opaque_stack = store.record(int(store.add_batch(rgb, labels=["opaque"] * 3)[0])).stack
    result = run_python(PLAIN_H5PY_READER, str(path), str(tmp_path / "plain.npz"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["h5store_imported"] is False
    plain = np.load(tmp_path / "plain.npz")
    with h5store.open(path) as store:
        for stack, ids in expected.items():
            key = stack.lstrip("/")
            want = [] if expected_filter[stack] is None else [expected_filter[stack]]
            assert report["filters"][key] == want, stack
            got = plain[key.replace("/", "|")]
            for image_id in ids:
                assert np.array_equal(got[store.record(image_id).position], store[image_id]), stack
    assert report["filters"][opaque_stack.lstrip("/")] == [OPAQUE_FILTER_ID]
    assert opaque_stack.lstrip("/") in report["failures"]


@pytest.mark.parametrize("name", ["webp", "avif", "jpegxl", "jpeg2k", "jpegls", "qoi", "png"])
def test_codecs_without_a_registered_filter_declare_the_opaque_id(name):
    declared = get_codec(name).hdf5_filter((8, 8, 3), np.dtype("uint8"))
    assert declared.filter_id == OPAQUE_FILTER_ID and not declared.registered


def test_htj2k_rgba_stacks_keep_the_opaque_id():
    declared = get_codec("htj2k").hdf5_filter((8, 8, 4), np.dtype("uint8"))
    assert declared.filter_id == OPAQUE_FILTER_ID and not declared.registered


# --------------------------------------------------------------------------- pre-encoded input


def encoded_sample(name):
    image = sample_set(1, 48).images[0]
    return get_codec(name).encode(image), image


@pytest.mark.parametrize("name", PRE_ENCODABLE)
def test_valid_pre_encoded_streams_are_stored_as_is(store_path, name):
    payload, image = encoded_sample(name)
    with h5store.open(store_path, "w", codec=name) as store:
        image_id = store.add_encoded(payload, label="x")
    with h5store.open(store_path) as store:
        assert store.get_encoded(image_id) == bytes(payload)
        assert store[image_id].shape == image.shape


@pytest.mark.parametrize("name", PRE_ENCODABLE)
@FEW
@given(cut=st.floats(0.0, 0.999))
def test_truncated_pre_encoded_streams_are_refused(tmp_path_factory, name, cut):
    payload, _ = encoded_sample(name)
    path = tmp_path_factory.mktemp("pre") / "s.h5"
    with h5store.open(path, "w", codec=name) as store:
        store.add_encoded(payload, label="x")
    before = file_digest(path)
    with h5store.open(path, "a", codec=name) as store:
        with pytest.raises(h5store.CodecError):
            store.add_encoded(payload[: int(cut * len(payload))], label="x")
    assert file_digest(path) == before


@pytest.mark.parametrize("name", PRE_ENCODABLE)
def test_corrupt_or_foreign_pre_encoded_streams_are_refused(store_path, name):
    payload, image = encoded_sample(name)
    foreign = get_codec("png" if name != "png" else "qoi").encode(image)
    bad = [b"", b"\x00" * len(payload), b"garbage" + bytes(payload), foreign]
    if name != "jpegxl":  # a bare JPEG XL codestream has no end marker; libjxl ignores a tail
        bad.append(bytes(payload) + b"trailing garbage")
    with h5store.open(store_path, "w", codec=name) as store:
        for data in bad:
            with pytest.raises(h5store.CodecError):
                store.add_encoded(data, label="x")
        assert len(store) == 0


@pytest.mark.parametrize("name", ["zstd", "lz4", "deflate", "blosc2", "raw"])
def test_byte_codecs_refuse_pre_encoded_input(store_path, name):
    payload = get_codec(name).encode(sample_set(1, 16).images[0])
    with h5store.open(store_path, "w", codec=name) as store:
        with pytest.raises(h5store.CodecError, match="pre-encoded"):
            store.add_encoded(payload, label="x")


@pytest.mark.parametrize(
    "case", [c for c in LOSSLESS if c[0] in ("zstd", "lz4", "deflate")], ids=case_id
)
def test_byte_codecs_detect_a_payload_of_the_wrong_size(case):
    codec = get_codec(*case[:1], **case[1])
    image = sample_set(1, 16).images[0]
    with pytest.raises(h5store.CodecError, match="damaged"):
        codec.decode(codec.encode(image[:8]), image.shape, image.dtype)


def test_image_codecs_share_one_parameter_scheme():
    for name in h5store.available_codecs():
        cls = type(get_codec(name))
        if issubclass(cls, ImageCodec) and cls.takes_quality:
            assert len(cls.quality_knobs) == len(ANCHOR_QUALITIES), name


def _jpeg_header_outcome(data: bytes):
    from h5store.codecs.jpeg import parse_jpeg_header

    try:
        return parse_jpeg_header(data)
    except h5store.CodecError:
        return "refused"


@FEW
@given(st.data())
def test_known_jpeg_headers_decide_as_a_fresh_walk_does(data):
    """Pre-encoded JPEG headers seen before skip the marker walk; a damaged copy of a known
    header must still get the walk's verdict, whether that header is known or not."""
    from h5store.codecs import jpeg

    payload = get_codec("jpeg").encode(sample_set(1, 24).images[0])
    damaged = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        damaged[data.draw(st.integers(0, min(len(payload), 700) - 1))] = data.draw(
            st.integers(0, 255)
        )
    damaged = bytes(damaged[: data.draw(st.integers(4, len(damaged)))]) + b"\xff\xd9"
    jpeg._KNOWN_HEADERS.clear()
    fresh = _jpeg_header_outcome(damaged)
    jpeg.parse_jpeg_header(payload)  # its header is now known
    assert _jpeg_header_outcome(damaged) == fresh
    assert _jpeg_header_outcome(damaged) == fresh  # and again, if it became known itself
    scan = payload.index(b"\xff\xda")  # a known header whose scan header runs past the end
    assert _jpeg_header_outcome(payload[: scan + 6] + b"\xff\xd9") == "refused"


def test_a_scan_marker_inside_a_segment_does_not_mix_up_known_headers():
    """0xFFDA inside an APP segment precedes the real scan: two streams sharing everything up to
    it but with different frames must each report their own size."""
    from h5store.codecs.jpeg import parse_jpeg_header

    decoy = b"\xff\xda\x00\x08" + bytes(8)
    app1 = b"\xff\xe1" + (2 + len(decoy)).to_bytes(2, "big") + decoy
    images = [np.zeros((16, 24, 3), np.uint8), np.zeros((40, 8, 3), np.uint8)]
    streams = [b"\xff\xd8" + app1 + get_codec("jpeg").encode(im)[2:] for im in images]
    for _ in range(2):
        for stream, image in zip(streams, images):
            assert tuple(parse_jpeg_header(stream))[:3] == image.shape
            assert get_codec("jpeg").decode(stream, image.shape, image.dtype).shape == image.shape
