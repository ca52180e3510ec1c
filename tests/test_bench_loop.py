"""What the benchmark says when its input was already lossy, `--predict module:function`, and a
plot whose setting labels do not overlap (issue 12, parts 1 and 6b, 6i)."""

import json

import numpy as np
import pytest

import h5store
from h5store.bench import run
from h5store.bench.cli import load_predict
from h5store.bench.runner import QUICK_IMAGES, quick_settings
from h5store.cli import main
from h5store.sample import sample_set

pytest.importorskip("matplotlib")
pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def jpeg_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("lossy") / "j.h5"
    sample = sample_set(24, 48, seed=3)
    with h5store.open(path, "w", codec="jpeg", quality=90) as store:
        store.add_batch(sample.images, labels=sample.true_labels)
    return path


def test_a_lossy_input_is_named_in_the_table_the_recommendation_and_the_plot(jpeg_store, tmp_path):
    result = run(jpeg_store, n=24, codecs=["jpeg", "png"], repeats=1, out=tmp_path, progress=False)
    assert result.meta["lossy_input"] == "24 of the 24 images are stored as jpeg quality=90"
    assert "PSNR dB* | SSIM* |" in result.table()
    assert "* against the input as decoded, which is not the originals" in result.table()
    message = result.recommendation.message
    assert "Caution: 24 of the 24 images are stored as jpeg quality=90" in message
    assert "already-compressed images, not the originals" in message
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["recommendation"]["lossy_input"] == result.meta["lossy_input"]
    # originals: no caution, and the command names no store
    clean = run(None, n=8, size=32, codecs=["png"], repeats=1, progress=False)
    assert clean.meta["lossy_input"] is None and "Caution" not in clean.recommendation.message
    assert clean.recommendation.repack_command() == (
        "h5store repack YOUR_STORE.h5 YOUR_STORE-png.h5 --codec png"
    )


def test_the_repack_command_carries_every_setting_that_differs_from_the_defaults(jpeg_store):
    result = run(
        jpeg_store,
        n=8,
        repeats=1,
        progress=False,
        min_ssim=None,
        grid={"jpeg": [{"quality": 80, "optimize": True, "subsampling": "444"}]},
        codecs=[],
    )
    command = result.recommendation.repack_command()
    assert command.startswith(f"h5store repack {jpeg_store} ")
    assert "--quality 80" in command and "--option 'subsampling=\"444\"'" in command
    assert "--option optimize=true" in command


def test_predict_module_function_from_the_shell(tmp_path, monkeypatch, capsys):
    (tmp_path / "mymodel.py").write_text(
        "import numpy as np\n"
        "CALLS = []\n"
        "def predict(images):\n"
        "    CALLS.append(len(images))\n"
        "    return (np.asarray(images).reshape(len(images), -1).mean(axis=1) > 110).astype(int)\n"
    )
    monkeypatch.chdir(tmp_path)
    args = [
        "bench",
        "--n",
        "8",
        "--size",
        "32",
        "--codecs",
        "jpeg",
        "--quiet",
        "--repeats",
        "1",
        "--min-ssim",
        "-1",
        "--out",
        str(tmp_path / "res"),
        "--json",
        "--predict",
        "mymodel:predict",
    ]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["classifier"]["kind"] == "user"
    assert all(cell["agreement"] is not None for cell in data["cells"])
    import mymodel

    assert sum(mymodel.CALLS) == 8 * (1 + len(data["cells"]))  # originals + every setting
    for spec, message in [
        ("mymodel", "MODULE:FUNCTION"),
        ("nosuchmodule:f", "cannot import"),
        ("mymodel:nothing", "has no 'nothing'"),
        ("mymodel:CALLS", "not a function"),
    ]:
        with pytest.raises(h5store.InvalidInputError, match=message):
            load_predict(spec)


def test_plot_labels_do_not_overlap(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from h5store.bench import plot

    placed = []
    original = plot._place_labels

    def spy(fig, ax, labels):
        original(fig, ax, labels)
        renderer = fig.canvas.get_renderer()
        placed.extend(t.get_window_extent(renderer) for t in ax.texts)

    result = run(
        None,
        n=12,
        size=32,
        codecs=["jpeg", "webp", "avif"],
        repeats=1,
        ssim_images=12,
        progress=False,
    )
    try:
        plot._place_labels = spy
        plot.pareto_plot(result, str(tmp_path / "p.png"))
    finally:
        plot._place_labels = original
    assert len(placed) >= 5
    for k, a in enumerate(placed):
        for b in placed[k + 1 :]:
            assert not a.overlaps(b), (a, b)
    assert np.asarray(matplotlib.image.imread(tmp_path / "p.png")).size > 0


@pytest.fixture(scope="module")
def png_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("lossless") / "p.h5"
    sample = sample_set(16, 64, seed=4)
    with h5store.open(path, "w", codec="png", level=9) as store:
        store.add_batch(sample.images, labels=sample.true_labels)
    return path


def test_a_png_store_is_recommended_a_setting_within_its_own_codecs_read_speed(png_store):
    """Issue 23: on a PNG store the default floors picked JPEG XL lossless, which decodes at a
    quarter of PNG's speed. The store's own setting (level=9, not in PNG's quick grid) is
    measured and is the floor's reference."""
    result = run(png_store, quick=True, codecs=["png", "jpegxl", "zstd"], progress=False)
    assert result.meta["own_codec"] == h5store.get_codec("png", level=9).get_config()
    assert {c.setting for c in result.cells if c.codec == "png"} >= {"level=9"}
    rec = result.recommendation
    assert rec.floors.decode.reference == "png level=9"
    assert rec.floors.decode.why == "the input's own codec, stored in the file"
    assert rec.cell is not None and rec.cell.decode_mpx_s >= rec.floors.decode.mpx_s
    for cell in result.cells:  # nothing below the floor counts as meeting it
        if cell.decode_mpx_s < rec.floors.decode.mpx_s:
            assert rec.floors.speed_failures(cell)
    assert "Decode floor: 0.9 x" in rec.message and "of png level=9" in rec.message


def test_quick_answers_with_a_reduced_grid_and_says_so(tmp_path, capsys):
    out = tmp_path / "quick"
    args = ["bench", "--quick", "--size", "48", "--quiet", "--out", str(out)]
    assert main([*args, "--json"]) in (0, 1)
    data = json.loads(capsys.readouterr().out)
    assert data["meta"]["quick"] is True and data["meta"]["images"] == QUICK_IMAGES
    assert data["meta"]["clock"] == "time.thread_time"
    measured = {}
    for cell in data["cells"]:
        measured.setdefault(cell["codec"], []).append(cell["config"])
    for name in h5store.available_codecs():
        grid = type(h5store.get_codec(name)).bench_grid
        settings = quick_settings(name)
        assert len(settings) <= 3 and all(s in grid for s in settings)
        lossy = [s for s in grid if not h5store.get_codec(name, **s).lossless]
        if lossy:  # the highest qualities are kept, the lowest dropped
            top = max(s.get("quality", 0) for s in lossy)
            assert any(s.get("quality", 0) == top for s in settings)
        configs = [h5store.get_codec(name, **s).get_config() for s in settings]
        assert name not in measured or measured[name] == configs
    assert len(data["cells"]) < sum(
        len(type(h5store.get_codec(n)).bench_grid) for n in h5store.available_codecs()
    )
    assert data["recommendation"]["choice"] is not None
    assert "decodes" in data["recommendation"]["message"]
    assert "encodes" in data["recommendation"]["message"]
    text = (out / "bench.md").read_text()
    assert "Quick run (--quick)" in text and "CPU time of the measuring thread" in text
