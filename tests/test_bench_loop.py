"""What the benchmark says when its input was already lossy, `--predict module:function`, and a
plot whose setting labels do not overlap (issue 12, parts 1 and 6b, 6i)."""

import json

import numpy as np
import pytest

import h5store
from h5store.bench import run
from h5store.bench.cli import load_predict
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
