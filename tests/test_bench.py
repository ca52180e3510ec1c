"""The benchmark suite (h5store.bench, `h5store bench`): it measures what it claims, flags a
lossless codec that is not, ranks codecs as known on photographs, and recommends honestly."""

import csv
import json
import math
import os
import time
from dataclasses import replace

import imagecodecs
import numpy as np
import pytest

import h5store
from h5store import bench
from h5store.bench.classifier import train_default
from h5store.bench.inputs import BenchInput, load_input
from h5store.bench.recommend import decode_floor, size_at_ssim
from h5store.bench.runner import measure_cell
from h5store.bench.timing import BlockTimer, block_plan
from h5store.cli import main

pytest.importorskip("skimage")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

LOSSLESS = [name for name in h5store.available_codecs() if h5store.get_codec(name).lossless]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """One benchmark of every registered codec on 16 sample crops, written to a folder."""
    out = tmp_path_factory.mktemp("bench")
    return bench.run(n=16, size=64, min_ssim=0.95, out=out, progress=False)


def test_lossless_codecs_reproduce_every_pixel(small_run):
    measured = {c.codec for c in small_run.cells if c.lossless}
    assert set(LOSSLESS) <= measured | {s.codec for s in small_run.skipped}
    for cell in small_run.cells:
        if cell.lossless:
            assert cell.max_abs_error == 0 and cell.violation is None, cell
            assert cell.ssim_mean == 1.0 and math.isinf(cell.psnr_mean)
        else:  # the error is really measured: lossy settings do change pixels
            assert cell.max_abs_error > 0 and cell.ssim_mean < 1.0 and cell.exact_images < 16


def test_every_registered_codec_is_measured_or_skipped_for_a_stated_limit(small_run):
    """8-bit RGB photos: a codec may decline them only through check_image, never by failing."""
    failed = [
        (s.codec, s.setting, s.reason) for s in small_run.skipped if s.reason.startswith("failed")
    ]
    assert not failed
    covered = {c.codec for c in small_run.cells} | {s.codec for s in small_run.skipped}
    assert covered == set(h5store.available_codecs())


class _LyingCodec(h5store.Codec):
    """Says lossless, drops the lowest bit."""

    codec_id = "lying"

    @property
    def lossless(self):
        return True

    def encode(self, image):
        return (image & 0xFE).tobytes()

    def decode(self, data, shape, dtype):
        return np.frombuffer(data, dtype=dtype).reshape(shape)

    def get_config(self):
        return {"id": self.codec_id}


def test_a_lossless_codec_that_changes_pixels_is_flagged_and_never_recommended():
    inp = load_input(None, n=6, size=32)
    with BlockTimer(repeats=2) as timer:
        cell = measure_cell(_LyingCodec(), "default", inp, timer)
    assert cell.max_abs_error == 1
    assert "declared lossless" in cell.violation
    rec = bench.recommend([cell], bench.Floors(min_ssim=0.5))
    assert rec.cell is None and rec.meeting == 0


def _jpegxl_name():
    for name in ("jpegxl", "jxl"):
        if name in h5store.available_codecs():
            return name
    return None


@pytest.mark.skipif(
    _jpegxl_name() is None, reason="no JPEG XL codec registered yet (the codec issue adds it)"
)
def test_jpegxl_is_smaller_than_jpeg_at_the_same_ssim():
    jxl = _jpegxl_name()
    jpeg_grid = [{"quality": q} for q in range(10, 100, 5)]  # dense, to interpolate along
    result = bench.run(
        n=24,
        seed=3,
        codecs=[],
        grid={"jpeg": jpeg_grid, jxl: type(h5store.get_codec(jxl)).bench_grid},
        progress=False,
    )
    jpeg = sorted((c for c in result.cells if c.codec == "jpeg"), key=lambda c: c.ssim_mean)
    assert all(a.bytes_per_image < b.bytes_per_image for a, b in zip(jpeg, jpeg[1:])), (
        "JPEG's size must grow with its SSIM"
    )
    matched = [
        (c, size_at_ssim(result.cells, "jpeg", c.ssim_mean))
        for c in result.cells
        if c.codec == jxl and not c.lossless
    ]
    matched = [(c, jpeg_bytes) for c, jpeg_bytes in matched if jpeg_bytes is not None]
    assert matched, (
        "no lossy JPEG XL setting inside JPEG's SSIM range",
        result.cells,
        result.skipped,
    )
    for cell, jpeg_bytes in matched:
        assert cell.bytes_per_image < jpeg_bytes, (cell.name, cell.bytes_per_image, jpeg_bytes)


def _cell(codec, ssim, size, lossless=False, decode=1.0, encode=1.0, config=None):
    """A measured setting built by hand: recommendations are tested without timing anything.
    ``config`` is the codec's constructor keywords (the setting's name is made of them)."""
    config = config or {}
    return bench.CellResult(
        codec=codec,
        setting=" ".join(f"{k}={v}" for k, v in config.items()) or f"s{ssim}",
        config={"id": codec, **config},
        lossless=lossless,
        images=1,
        bytes_per_image=size,
        bits_per_pixel=8 * size / 50_176,  # a 224 x 224 image
        ratio=1.0,
        encode_mpx_s=encode,
        encode_mpx_s_2t=2 * encode,
        decode_mpx_s=decode,
        decode_mpx_s_2t=2 * decode,
        psnr_mean=30.0,
        psnr_min=30.0,
        ssim_mean=ssim,
        ssim_min=ssim,
        ssim_images=1,
        max_abs_error=0 if lossless else 9,
        exact_images=0,
    )


def test_size_at_ssim_interpolates_log_size_inside_the_measured_range_only():
    cells = [
        _cell("a", 0.90, 1000.0),
        _cell("a", 0.95, 4000.0),
        _cell("a", 1.0, 9e9, True),
        _cell("b", 0.93, 10.0),
    ]
    assert size_at_ssim(cells, "a", 0.925) == pytest.approx(2000.0)  # geometric midpoint
    assert size_at_ssim(cells, "a", 0.90) == pytest.approx(1000.0)
    assert size_at_ssim(cells, "a", 0.96) is None  # lossless settings are not a curve point
    assert size_at_ssim(cells, "b", 0.93) is None  # one setting: no curve


def test_default_classifier_learns_the_classes_and_not_noise():
    inp = load_input(None, n=64, size=64, seed=1)
    trained = train_default(inp.images, inp.labels, seed=0)
    assert trained.chance == pytest.approx(1 / 8)
    assert trained.accuracy >= 0.6, trained.accuracy  # chance is 0.125
    # The accuracy is measured on held-out images: shuffled labels leave nothing to learn.
    shuffled = list(np.random.default_rng(0).permutation(inp.labels))
    assert train_default(inp.images, shuffled, seed=0).accuracy < 0.45


def test_the_user_predict_sees_decoded_images_and_flips_are_counted():
    seen = []

    def brightness_parity(images):  # changes whenever compression moves the pixel sum
        seen.append(np.asarray(images).shape)
        return [int(im.astype(np.int64).sum()) % 2 for im in images]

    result = bench.run(
        n=12,
        size=48,
        codecs=["jpeg", "png"],
        predict=brightness_parity,
        min_ssim=None,
        progress=False,
    )
    assert result.classifier.kind == "user"
    assert seen[0] == (12, 48, 48, 3)
    jpeg = [c for c in result.cells if c.codec == "jpeg"]
    assert all(c.flips == round((1 - c.agreement) * 12) for c in jpeg)
    assert sum(c.flips for c in jpeg) > 0
    assert all(c.agreement == 1.0 and c.flips == 0 for c in result.cells if c.codec == "png")


def _meets(cell, floors):
    return not floors.failures(cell)


@pytest.mark.parametrize(
    "floors",
    [
        dict(min_ssim=0.9),
        dict(min_ssim=0.97),
        dict(min_psnr=36.0),
        dict(min_ssim=0.95, min_agreement=1.0),
        dict(min_ssim=0.999),
    ],
)
def test_the_recommendation_is_the_smallest_or_fastest_setting_meeting_the_floors(
    small_run, floors
):
    f = bench.Floors(**floors)
    ok = [c for c in small_run.cells if _meets(c, f)]
    assert ok, "every floor here is met by the lossless codecs"
    floors = {**floors, "min_decode_speed": 0}  # quality floors only: speed is tested below
    smallest = small_run.recommend(**floors)
    assert smallest.cell in ok
    assert smallest.cell.bytes_per_image == min(c.bytes_per_image for c in ok)
    fastest = small_run.recommend(**floors, prefer="fastest")
    assert fastest.cell.decode_mpx_s == max(c.decode_mpx_s for c in ok)
    below = [c for c in small_run.cells if c.bytes_per_image < smallest.cell.bytes_per_image]
    assert all(not _meets(c, f) for c in below)


def _png_store_cells():
    """A PNG store's benchmark as issue 23 met it: JPEG XL lossless is smallest but decodes at
    a quarter of PNG's speed; WebP lossless is smaller than PNG and faster."""
    return [
        _cell("png", 1.0, 80_000, True, decode=40.0, encode=4.0, config=dict(level=6)),
        _cell("png", 1.0, 84_000, True, decode=39.0, encode=13.0, config=dict(level=1)),
        _cell(
            "jpegxl",
            1.0,
            56_000,
            True,
            decode=10.0,
            encode=5.0,
            config=dict(lossless=True, effort=3),
        ),
        _cell(
            "webp", 1.0, 61_000, True, decode=53.0, encode=5.0, config=dict(lossless=True, effort=1)
        ),
        _cell("zstd", 1.0, 112_000, True, decode=215.0, encode=16.0, config=dict(level=9)),
        _cell("jpeg", 0.9814, 29_000, decode=167.0, encode=261.0, config=dict(quality=98)),
        _cell("jpeg", 0.9715, 20_000, decode=205.0, encode=313.0, config=dict(quality=95)),
        _cell("webp", 0.9850, 18_000, decode=80.0, encode=12.0, config=dict(quality=95)),
    ]


def _recommend(cells, min_ssim=0.98, fraction=0.9, own=None, prefer="smallest"):
    floors = bench.Floors(min_ssim=min_ssim)
    speed = decode_floor(cells, floors, fraction, own, "stored in the file")
    return bench.recommend(cells, replace(floors, decode=speed), prefer)


def test_the_decode_floor_excludes_settings_slower_than_the_inputs_own_codec():
    cells = _png_store_cells()
    png = {"id": "png", "level": 6}
    without = _recommend(cells, fraction=0, own=png)
    assert without.cell.name == "webp quality=95" and without.floors.decode is None
    rec = _recommend(cells, own=png)
    assert rec.floors.decode.reference == "png level=6"
    assert rec.floors.decode.mpx_s == pytest.approx(0.9 * 40.0)
    # webp quality=95 (18 kB, 80 MP/s) meets everything; the lossless floor shows the exclusion
    lossless = _recommend(cells, min_ssim=1.0, own=png)
    assert lossless.cell.name == "webp lossless=True effort=1"
    assert lossless.too_slow.name == "jpegxl lossless=True effort=3"
    assert "decodes 10 MP/s < 36 MP/s" in lossless.floors.failures(lossless.too_slow)
    assert _recommend(cells, min_ssim=1.0, fraction=0, own=png).cell.codec == "jpegxl"
    assert _recommend(cells, min_ssim=1.0, fraction=0.2, own=png).cell.codec == "jpegxl"
    # A higher floor leaves only what decodes faster than PNG by that much.
    assert _recommend(cells, min_ssim=1.0, fraction=2.0, own=png).cell.codec == "zstd"
    # Every recommended setting decodes at or above the floor, whatever is preferred.
    for prefer in ("smallest", "fastest"):
        for fraction in (0.5, 0.9, 1.0, 1.5, 5.0):
            chosen = _recommend(cells, min_ssim=1.0, fraction=fraction, own=png, prefer=prefer)
            assert chosen.cell.decode_mpx_s >= fraction * 40.0


def test_without_a_codec_of_its_own_the_floor_is_jpeg_at_the_same_quality():
    cells = _png_store_cells()
    rec = _recommend(cells)  # arrays or the sample set: JPEG would store them
    assert rec.floors.decode.reference == "jpeg quality=98"  # the smallest JPEG with SSIM 0.98
    assert rec.cell.name == "jpeg quality=98" and rec.too_slow.name == "webp quality=95"
    # A floor no JPEG meets: its largest setting is the reference
    assert _recommend(cells, min_ssim=1.0).floors.decode.reference == "jpeg quality=98"
    # The reference not measured: no floor, and the message says so
    unmeasured = _recommend(cells, own={"id": "qoi"})
    assert unmeasured.floors.decode.mpx_s is None and unmeasured.cell.name == "webp quality=95"
    assert "No decode floor: the reference, qoi default" in unmeasured.message


def test_the_recommendation_names_decode_and_encode_speed_next_to_its_size():
    rec = _recommend(_png_store_cells(), min_ssim=1.0, own={"id": "png", "level": 6})
    first, *rest = rec.message.splitlines()
    assert first.startswith("Recommended (smallest meeting SSIM >= 1.0, decode >= 36 MP/s): ")
    # 53 MP/s of 224 x 224 images is 1,056 images a second
    assert "webp lossless=True effort=1 -- 61.0 kB/image" in first
    assert "decodes 53 MP/s = 1,056 img/s, encodes 5 MP/s = 100 img/s (one thread)" in first
    text = "\n".join(rest)
    assert "smaller but below the decode floor: jpegxl lossless=True effort=3 -- 56.0 kB" in text
    assert "decodes 10 MP/s = 199 img/s" in text
    assert "Decode floor: 0.9 x 40 MP/s of png level=6 (the input's own codec" in text
    assert "--min-decode-speed" in text
    assert rec.to_dict()["decode_floor_mpx_s"] == pytest.approx(36.0)


@pytest.mark.parametrize("fraction", [-0.5, math.inf, math.nan, "1", True])
def test_a_bad_decode_floor_raises(fraction):
    with pytest.raises(h5store.InvalidInputError, match="min_decode_speed must be a number"):
        decode_floor([], bench.Floors(), fraction)
    with pytest.raises(h5store.InvalidInputError, match="min_decode_speed"):
        bench.run(n=2, size=16, codecs=["raw"], min_decode_speed=fraction, progress=False)


def test_timing_charges_cpu_time_not_waiting():
    """A thread that waits (as one does for a core on a loaded machine) is not charged: 16
    sleeps of 10 ms cost 160 ms of wall time and almost no CPU time, with one or two threads."""

    def wait(_):
        time.sleep(0.01)

    with BlockTimer(repeats=1) as timer:
        for threads in (1, 2):
            started = time.perf_counter()
            _, seconds = timer._run_block(wait, list(range(16)), np.arange(16), threads, 1)
            assert time.perf_counter() - started >= 0.08
            assert seconds < 0.03, (threads, seconds)


def test_no_recommendation_when_nothing_meets_the_floors(small_run):
    rec = bench.recommend(
        [c for c in small_run.cells if not c.lossless], bench.Floors(min_ssim=0.9999)
    )
    assert rec.cell is None and "No setting meets" in rec.message


def test_outputs_are_written_and_agree_with_the_result(small_run):
    files = small_run.files
    assert sorted(files) == ["csv", "json", "markdown", "plot"]
    with open(files["json"]) as f:
        data = json.load(f)
    assert len(data["cells"]) == len(small_run.cells) > 0
    assert data["recommendation"]["choice"]["codec"] == small_run.recommendation.cell.codec
    with open(files["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["codec"], float(r["bytes_per_image"])) for r in rows] == [
        (c.codec, c.bytes_per_image) for c in small_run.cells
    ]
    with open(files["markdown"]) as f:
        text = f.read()
    assert "| codec | setting | bytes/img" in text and "**recommended**" in text
    assert "Bytes per image at equal SSIM" in text and "| SSIM | " in text
    assert small_run.recommendation.message in text
    with open(files["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(files["plot"]) > 10_000


def test_sizes_and_rates_are_consistent(small_run):
    for c in small_run.cells:
        assert c.bits_per_pixel == pytest.approx(8 * c.bytes_per_image / 64**2)
        assert c.ratio == pytest.approx(64 * 64 * 3 / c.bytes_per_image)
        assert c.encode_mpx_s > 0 and c.encode_mpx_s_2t > 0
        assert c.decode_mpx_s > 0 and c.decode_mpx_s_2t > 0
    raw = small_run.cell("raw")
    assert raw.bytes_per_image == 64 * 64 * 3 and raw.ratio == 1.0


def test_a_codec_that_cannot_hold_the_images_is_skipped_with_the_reason():
    rng = np.random.default_rng(0)
    images = (rng.integers(0, 4096, (6, 24, 24, 3)) * 16).astype(np.uint16)
    result = bench.run(images, labels=["a", "b"] * 3, codecs=["jpeg", "png"], progress=False)
    assert {c.codec for c in result.cells} == {"png"}
    reasons = {s.reason for s in result.skipped if s.codec == "jpeg"}
    assert reasons and all("uint16" in r for r in reasons)
    assert all(c.max_abs_error == 0 for c in result.cells)


def test_timing_blocks_cover_every_image_once_in_both_modes():
    for count in (1, 2, 5, 16, 99, 500):
        plan = block_plan(count, repeats=3)
        positions = np.concatenate([block for block, _ in plan])
        assert sorted(positions.tolist()) == list(range(count))
        if count >= 12:
            assert sum(t == 1 for _, t in plan) == 3 and sum(t == 2 for _, t in plan) == 3


def _write_image_folder(root, images, labels):
    for k, (image, label) in enumerate(zip(images, labels)):
        os.makedirs(root / label, exist_ok=True)
        imagecodecs.imwrite(str(root / label / f"{k}.png"), image)


def test_inputs_from_an_image_folder_and_an_h5store_file(tmp_path):
    sample = load_input(None, n=8, size=40, seed=2)
    _write_image_folder(tmp_path / "folder", sample.images, sample.labels)
    (tmp_path / "folder" / "notes.txt").write_text("not an image")
    folder = load_input(tmp_path / "folder", n=5, seed=0)
    assert len(folder) == 5 and set(folder.labels) <= set(sample.labels)
    originals = {im.tobytes() for im in sample.images}
    assert all(im.tobytes() in originals for im in folder.images)
    # the decode floor's reference: the files' format, at h5store's defaults for it
    assert folder.own_codec == h5store.get_codec("png").get_config()
    assert folder.own_codec_origin.startswith("the files' format")

    path = str(tmp_path / "s.h5")
    with h5store.open(path, "w", codec="png", level=2) as store:
        store.add_batch(np.stack(sample.images), labels=sample.labels)
    stored = load_input(path, n=100, size=32)
    assert len(stored) == 8 and sorted(stored.labels) == sorted(sample.labels)
    assert all(im.shape == (32, 32, 3) for im in stored.images)
    assert stored.own_codec == h5store.get_codec("png", level=2).get_config()  # resized: kept
    assert load_input(None, n=2, size=16).own_codec is None  # arrays have no codec of their own


@pytest.mark.parametrize(
    "source, kwargs, error",
    [
        ("/no/such/place", {}, h5store.InvalidInputError),
        (np.zeros((2, 8, 8, 3), np.float32), {}, h5store.InvalidInputError),
        (np.zeros((2, 8, 8, 2), np.uint8), {}, h5store.InvalidInputError),
        (None, {"n": 0}, h5store.InvalidInputError),
        (None, {"min_ssim": 1.5}, h5store.InvalidInputError),
        (None, {"prefer": "cheapest"}, h5store.InvalidInputError),
        (None, {"codecs": ["nosuchcodec"]}, h5store.CodecError),
        (None, {"grid": {"jpeg": [{"quality": 500}]}}, h5store.CodecError),
        (np.zeros((4, 8, 8), np.uint8), {"min_agreement": 0.9}, h5store.InvalidInputError),
    ],
)
def test_bad_input_raises_h5store_errors(source, kwargs, error, tmp_path):
    with pytest.raises(error):
        bench.run(source, **{"n": 4, "progress": False, **kwargs})


def test_not_a_store_and_empty_folder(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(h5store.NotAStoreError):
        load_input(tmp_path / "junk.h5")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(h5store.InvalidInputError, match="ImageFolder"):
        load_input(tmp_path / "empty")


def test_cli_bench_prints_json_writes_files_and_exit_status(tmp_path, capsys):
    out = tmp_path / "res"
    args = ["bench", "--n", "8", "--size", "48", "--quiet", "--out", str(out)]
    assert main([*args, "--codecs", "jpeg,png", "--json", "--min-ssim", "0.95"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {c["codec"] for c in data["cells"]} == {"jpeg", "png"}
    assert data["recommendation"]["choice"] is not None
    assert sorted(os.listdir(out)) == ["bench.csv", "bench.json", "bench.md", "bench.png"]
    # Only lossy JPEG and a floor it cannot reach: no recommendation, exit status 1.
    assert main([*args, "--codecs", "jpeg", "--min-ssim", "0.9999"]) == 1
    text = capsys.readouterr().out
    assert "| jpeg | quality=50 |" in text and "No setting meets SSIM >= 0.9999" in text


def test_lossless_input_with_gray_and_rgba_images():
    rng = np.random.default_rng(5)
    images = [
        rng.integers(0, 256, (20, 30), dtype=np.uint8),
        rng.integers(0, 256, (20, 30, 4), dtype=np.uint8),
    ]
    inp = BenchInput(images, None, "mixed")
    with BlockTimer(repeats=1) as timer:
        cell = measure_cell(h5store.get_codec("png"), "default", inp, timer)
    assert cell.max_abs_error == 0 and cell.bits_per_pixel > 0


def test_the_notebook_runs(tmp_path, monkeypatch):
    """notebooks/choosing-compression.ipynb executes top to bottom (CI must have the
    'notebooks' extra: there a missing kernel is a failure, not a skip)."""
    # The kernel runs in tmp_path: without this it would import the installed h5store, which
    # need not be the checkout under test (a worktree, an editable install of another tree).
    root = os.path.dirname(os.path.dirname(h5store.__file__))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    try:
        import ipykernel  # noqa: F401
        import nbclient
        import nbformat
    except ImportError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"install h5store[notebooks] to run the notebook ({exc.name} missing)")
    path = os.path.join(
        os.path.dirname(__file__), os.pardir, "notebooks", "choosing-compression.ipynb"
    )
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    printed = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "Recommended (smallest meeting SSIM >= 0.98, decode >= " in printed
    assert (tmp_path / "bench-results" / "bench.png").exists()


def test_ssim_is_scikit_images_over_the_first_ssim_images_and_the_rest_over_all():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    inp = load_input(None, n=10, size=48, seed=4)
    codec = h5store.get_codec("jpeg", quality=60)
    with BlockTimer(repeats=1) as timer:
        cell = measure_cell(codec, "quality=60", inp, timer, ssim_images=4)
    decoded = [codec.decode(codec.encode(im), im.shape, im.dtype) for im in inp.images]
    ssim = [
        structural_similarity(a, b, channel_axis=-1, data_range=255)
        for a, b in zip(inp.images[:4], decoded[:4])
    ]
    psnr = [peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(inp.images, decoded)]
    assert cell.ssim_images == 4
    assert cell.ssim_mean == pytest.approx(np.mean(ssim), abs=1e-12)
    assert cell.ssim_min == pytest.approx(min(ssim), abs=1e-12)
    assert cell.psnr_mean == pytest.approx(np.mean(psnr), abs=1e-9)
    assert cell.max_abs_error == max(
        int(np.abs(a.astype(int) - b).max()) for a, b in zip(inp.images, decoded)
    )


class _BrokenCodec(_LyingCodec):
    codec_id = "broken"

    def encode(self, image):
        raise RuntimeError("encoder crashed")


def test_a_codec_that_crashes_is_reported_as_failed_and_a_broken_predict_raises():
    inp = load_input(None, n=4, size=32)
    with BlockTimer(repeats=1) as timer:
        with pytest.raises(bench.runner.CodecFailure, match="RuntimeError: encoder crashed"):
            measure_cell(_BrokenCodec(), "default", inp, timer)
        reference = np.zeros(4)
        with pytest.raises(h5store.InvalidInputError, match="one label per image"):
            measure_cell(
                h5store.get_codec("jpeg"),
                "q",
                inp,
                timer,
                predict=lambda images: [0],
                reference=reference,
            )
