"""The HTML error-analysis report (issue 13): what it says, what it embeds, and how it behaves in
a real browser (Debian's headless Chromium)."""

import base64
import html.parser
import io
import json
import os
import re

import numpy as np
import pytest
from browser import chromium, console_errors
from conftest import file_digest, photo_crops
from hypothesis import given, settings
from hypothesis import strategies as st

import h5store
from h5store.cli import main as cli_main

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

CLASSES = ["astronaut", "cat", "coffee", "rocket", "motorcycle", "galaxy"]


class _Page(html.parser.HTMLParser):
    """Ids, in-page links, images and the JSON island of a report."""

    def __init__(self, text: str):
        super().__init__()
        self.ids, self.links, self.images, self.data, self._in_data = [], [], [], None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        href = attrs.get("href") or attrs.get("xlink:href")
        if href and href.startswith("#"):
            self.links.append(href[1:])
        if tag == "img":
            self.images.append(attrs)
        self._in_data = attrs.get("id") == "report-data"

    def handle_data(self, data):
        if self._in_data:
            self.data = json.loads(data)
            self._in_data = False


def read_page(path) -> tuple[str, _Page]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return text, _Page(text)


def decoded_thumbnails(page: _Page) -> list:
    out = []
    for attrs in page.images:
        src = attrs["src"]
        if src.startswith("data:image/jpeg;base64,"):
            out.append(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
    return out


def make_store(path, predicted, truth, scores, *, labels=CLASSES, size=32):
    """Pre-encoded JPEGs of the photo crops, cycled, with the given predictions."""
    images, _ = photo_crops(16, size)
    with h5store.open(path, "w", labels=labels) as store:
        store.add_batch(images[:1], labels=[labels[0]])  # encodes the class's JPEG once
        pool = [store.get_encoded(0)]
        store.delete([0])
    with h5store.open(path, "r+") as store:
        store.add_encoded_batch(
            [pool[0]] * len(predicted),
            labels=list(predicted),
            true_labels=list(truth),
            scores=None if scores is None else np.asarray(scores, np.float32),
        )
    return path


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    """240 photo crops in six classes, a simulated classifier's labels, scores and the truth."""
    from h5store.sample import sample_set

    path = str(tmp_path_factory.mktemp("report") / "classified.h5")
    sample = sample_set(240, 48, seed=3)
    keep = [k for k, t in enumerate(sample.true_labels) if t in CLASSES]
    with h5store.open(path, "w", labels=CLASSES) as store:
        store.add_batch(
            sample.images[keep],
            labels=[sample.labels[k] if sample.labels[k] in CLASSES else "cat" for k in keep],
            scores=sample.top1[keep],
            true_labels=[sample.true_labels[k] for k in keep],
        )
    return path


def expected_matrix(path) -> tuple[np.ndarray, float]:
    with h5store.open(path) as store:
        frame = store.to_pandas()
    names = list(CLASSES)
    known = frame[frame.true_label.notna()]
    matrix = np.zeros((len(names), len(names)), dtype=int)
    for t, p in zip(known.true_label, known.label):
        matrix[names.index(t), names.index(p)] += 1
    return matrix, float((known.true_label == known.label).mean())


def test_report_matrix_accuracy_and_galleries_match_the_index(classified, tmp_path):
    out = tmp_path / "r.html"
    result = h5store.report(classified, out, progress=False)
    text, page = read_page(out)
    matrix, accuracy = expected_matrix(classified)
    assert page.data["matrix"]["labels"] == CLASSES
    assert np.array_equal(page.data["matrix"]["counts"], matrix)
    assert result["accuracy"] == pytest.approx(accuracy)
    assert f"{accuracy:.2%}" in text
    with h5store.open(classified) as store:
        assert result["images"] == page.data["summary"]["images"] == len(store)
        mistakes = store.query(correct=False)
        scores = {int(r["id"]): float(r["score"]) for r in store.index}
        frame = store.to_pandas().set_index("id")
    # Every non-empty cell links to a gallery of exactly its images (a sample of them).
    assert len(set(page.ids)) == len(page.ids)
    assert set(page.links) <= set(page.ids)
    nonzero = {f"cell-{t}-{p}" for t, p in zip(*np.nonzero(matrix))}
    assert nonzero <= set(page.links)
    for cell in nonzero:
        t, p = map(int, cell.split("-")[1:])
        section = text[text.index(f'id="{cell}"') :]
        section = section[: section.index("</section>")]
        shown = [int(i) for i in re.findall(r'alt="image (\d+)"', section)]
        assert shown, cell
        assert all(
            frame.loc[i, "true_label"] == CLASSES[t] and frame.loc[i, "label"] == CLASSES[p]
            for i in shown
        )
    # The confident mistakes are the highest-scored misclassified images, in order.
    section = text[text.index('id="mistakes"') :]
    section = section[: section.index("</section>")]
    shown = [int(i) for i in re.findall(r'alt="image (\d+)"', section)]
    best = sorted(mistakes.tolist(), key=lambda i: -scores[i])[: len(shown)]
    assert [scores[i] for i in shown] == [scores[i] for i in best]
    assert all(frame.loc[i, "label"] != frame.loc[i, "true_label"] for i in shown)
    # Every thumbnail is a real JPEG no larger than asked.
    thumbnails = decoded_thumbnails(page)
    assert len(thumbnails) >= result["thumbnails"] > 0
    assert all(max(im.size) <= 96 for im in thumbnails)


def test_report_is_self_contained(classified, tmp_path):
    out = tmp_path / "r.html"
    h5store.report(classified, out, progress=False)
    text, page = read_page(out)
    # Nothing is fetched: no src/href to another document, no @import or url() to the web.
    assert not re.search(r'(src|href)="(?!data:|#)', text)
    assert "@import" not in text and "url(http" not in text
    assert all(attrs["src"].startswith("data:image/") for attrs in page.images)
    assert "<script" not in text.replace('<script type="application/json"', "")
    assert text.count("<svg") == 1 and 'target="_blank"' not in text


def test_thumbnail_budget_bounds_the_decoded_images(classified, tmp_path):
    out = tmp_path / "r.html"
    result = h5store.report(classified, out, max_thumbnails=5, progress=False)
    text, page = read_page(out)
    ids = {a["alt"] for a in page.images if a["src"].startswith("data:image/jpeg")}
    assert result["thumbnails"] == len(ids) == 5
    assert "thumbnail budget reached" in text  # the other galleries list their images by id
    assert set(page.links) <= set(page.ids)


def test_many_classes_fold_into_other(tmp_path):
    names = [f"class {k}" for k in range(12)]
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 12, 300)
    predicted = np.where(rng.random(300) < 0.7, truth, rng.integers(0, 12, 300))
    path = make_store(
        tmp_path / "s.h5",
        [names[k] for k in predicted],
        [names[k] for k in truth],
        rng.random(300),
        labels=names,
    )
    result = h5store.report(path, tmp_path / "r.html", max_classes=5, progress=False)
    _, page = read_page(tmp_path / "r.html")
    labels = page.data["matrix"]["labels"]
    counts = np.array(page.data["matrix"]["counts"])
    assert result["matrix_classes"] == len(labels) == 5 and labels[-1] == "other (8 classes)"
    frequency = np.bincount(truth, minlength=12) + np.bincount(predicted, minlength=12)
    top = sorted(np.argsort(-frequency, kind="stable")[:4].tolist())
    assert labels[:4] == [names[k] for k in top]
    assert counts.sum() == 300
    assert counts[:4, :4].trace() == sum(int(((truth == k) & (predicted == k)).sum()) for k in top)


def test_store_without_truth_or_scores(tmp_path):
    images, _ = photo_crops()
    path = tmp_path / "s.h5"
    with h5store.open(path, "w") as store:
        store.add_batch(images, labels=["a", "b"] * 8)
    result = h5store.report(path, tmp_path / "r.html", progress=False)
    text, page = read_page(tmp_path / "r.html")
    assert result["accuracy"] is None and page.data["matrix"] is None
    assert "no true labels stored" in text and 'id="matrix"' not in text
    assert 'id="scores"' not in text  # no histogram without scores
    assert {"class-0", "class-1"} <= set(page.ids)
    assert len(decoded_thumbnails(page)) == 16


def test_empty_store(tmp_path):
    with h5store.open(tmp_path / "s.h5", "w"):
        pass
    result = h5store.report(tmp_path / "s.h5", tmp_path / "r.html", progress=False)
    _, page = read_page(tmp_path / "r.html")
    assert result["images"] == page.data["summary"]["images"] == 0
    assert page.images == [] and set(page.links) <= set(page.ids)


def test_any_stored_image_kind_gets_a_thumbnail(tmp_path):
    """Grey uint16, RGBA, two sizes and a lossless codec: every one becomes an 8-bit JPEG."""
    path = tmp_path / "s.h5"
    images, _ = photo_crops()
    with h5store.open(path, "w", codec="png") as store:
        store.add(images[0], label="rgb", true_label="rgb", score=0.9)
        store.add(images[1][:20, :40], label="rgb", true_label="gray", score=0.4)
        store.add(
            images[2][..., 0].astype(np.uint16) * 257, label="gray", true_label="gray", score=0.8
        )
        rgba = np.concatenate([images[3], np.full(images[3].shape[:2] + (1,), 255, np.uint8)], 2)
        store.add(rgba, label="rgba", true_label="rgb", score=0.7)
        store.delete([store.add(images[4], label="gone", score=0.99)])
    h5store.report(path, tmp_path / "r.html", thumbnail_px=24, progress=False)
    text, page = read_page(tmp_path / "r.html")
    thumbnails = decoded_thumbnails(page)
    assert thumbnails and all(max(t.size) <= 24 for t in thumbnails)
    assert {t.mode for t in thumbnails} == {"RGB", "L"}
    summary = page.data["summary"]
    assert summary["images"] == 4  # the deleted one is not shown
    assert summary["codecs"]["png"]["images"] == 4
    assert {s: c for c, s in summary["shapes"]} == {
        "64x64x3 uint8": 1,
        "20x40x3 uint8": 1,
        "64x64x1 uint16": 1,
        "64x64x4 uint8": 1,
    }
    assert "1 deleted not shown" in text and "pred: gone" not in text
    grey = next(t for t in thumbnails if t.mode == "L")
    assert np.asarray(grey).max() > 100  # 16-bit scaled down, not clipped to black or white


def test_labels_are_escaped(tmp_path):
    names = ["<b>bold</b>", "a/b & c", "</script><script>alert(1)</script>", 'ünï "q"']
    path = make_store(
        tmp_path / "s.h5",
        [names[k % 4] for k in range(8)],
        [names[(k + k // 4) % 4] for k in range(8)],
        np.linspace(0, 1, 8),
        labels=names,
    )
    h5store.report(path, tmp_path / "r.html", progress=False)
    text, page = read_page(tmp_path / "r.html")
    assert "<b>bold" not in text and "<script>alert" not in text
    assert page.data["matrix"]["labels"] == names
    assert all(name in [c["name"] for c in page.data["classes"]] for name in names)


@settings(max_examples=12, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3), st.one_of(st.none(), st.integers(0, 3)), st.floats(0, 1, width=32)
        ),
        min_size=1,
        max_size=40,
    ),
    st.booleans(),
    st.integers(1, 5),
)
def test_property_matrix_and_links_hold_for_any_labels(
    tmp_path_factory, rows, with_scores, max_classes
):
    tmp = tmp_path_factory.mktemp("prop")
    names = ["w", "x", "y", "z"]
    predicted = [names[p] for p, _, _ in rows]
    truth = [None if t is None else names[t] for _, t, _ in rows]
    scores = [s for _, _, s in rows] if with_scores else None
    path = make_store(tmp / "s.h5", predicted, truth, scores, labels=names)
    result = h5store.report(path, tmp / "r.html", max_classes=max_classes, progress=False)
    _, page = read_page(tmp / "r.html")
    assert len(set(page.ids)) == len(page.ids) and set(page.links) <= set(page.ids)
    known = [(t, p) for (p, t, _) in rows if t is not None]
    if not known:
        assert page.data["matrix"] is None and result["accuracy"] is None
        return
    counts = np.array(page.data["matrix"]["counts"])
    assert counts.sum() == len(known)
    assert result["accuracy"] == pytest.approx(np.mean([t == p for t, p in known]))
    assert counts.shape[0] <= max_classes


def test_bad_input_raises_and_leaves_the_store_alone(classified, tmp_path):
    before = file_digest(classified)
    for options in (
        {"max_classes": 0},
        {"per_cell": -1},
        {"thumbnail_px": 2},
        {"max_thumbnails": 1.5},
        {"per_gallery": True},
    ):
        with pytest.raises(h5store.InvalidInputError, match=next(iter(options))):
            h5store.report(classified, tmp_path / "r.html", progress=False, **options)
    with pytest.raises(h5store.InvalidInputError, match="not a folder"):
        h5store.report(classified, tmp_path / "missing" / "r.html", progress=False)
    with pytest.raises(h5store.InvalidInputError, match="is a folder"):
        h5store.report(classified, tmp_path, progress=False)
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    with pytest.raises(h5store.NotAStoreError):
        h5store.report(tmp_path / "x.h5", tmp_path / "r.html", progress=False)
    assert not (tmp_path / "r.html").exists()
    assert file_digest(classified) == before


def test_cli_report_and_demo_mention_it(classified, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["report", classified, "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["out"] == "classified-report.html"
    assert os.path.getsize(tmp_path / "classified-report.html") == result["bytes"]
    assert cli_main(["report", classified, "-o", "x.html", "--max-thumbnails", "3", "--quiet"]) == 0
    assert "wrote x.html" in capsys.readouterr().out
    assert cli_main(["report", str(tmp_path / "nothing.h5"), "--quiet"]) == 2
    assert cli_main(["demo", "--n", "16", "--size", "32", "--out", "d.h5"]) == 0
    assert "h5store report d.h5" in capsys.readouterr().out


# ---------------------------------------------------------------------------- in Chromium


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    """The report of the store ``h5store demo`` writes (512 images of 224 px, 8 classes)."""
    folder = tmp_path_factory.mktemp("demo")
    store = str(folder / "h5store-demo.h5")
    assert cli_main(["demo", "--out", store]) == 0
    out = folder / "report.html"
    result = h5store.report(store, out, progress=False)
    return store, out, result


def test_demo_report_stays_small(demo_report):
    store, out, result = demo_report
    assert result["bytes"] == os.path.getsize(out) <= 5_000_000
    with h5store.open(store) as s:
        assert result["images"] == len(s) == 512


def test_report_in_chromium(demo_report, tmp_path):
    """Loads with no console error, every thumbnail decodes, one matrix row per class, and a
    click on a cell scrolls to that cell's gallery. Screenshots go to tmp_path (and to docs/
    with H5STORE_SCREENSHOTS=docs)."""
    from selenium.webdriver.common.by import By

    store, out, _ = demo_report
    with h5store.open(store) as s:
        classes = list(s.labels)
    keep = os.environ.get("H5STORE_SCREENSHOTS")
    with chromium(1200, 1500) as driver:
        driver.get(out.as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        widths = driver.execute_script(
            "return [...document.images].map(i => i.complete ? i.naturalWidth : -1)"
        )
        assert len(widths) > 100 and all(w > 0 for w in widths), widths
        rows = driver.execute_script(
            "return [...document.querySelectorAll('#matrix-axes g[id^=ytick_] text')]"
            ".map(t => t.textContent)"
        )
        assert rows == classes
        cells = driver.find_elements(By.CSS_SELECTOR, "svg.matrix g[id^='cm-']")
        assert {c.get_attribute("id").split("-")[1] for c in cells} == {
            str(k) for k in range(len(classes))
        }
        driver.save_screenshot(str(tmp_path / "report.png"))
        if keep:
            driver.save_screenshot(os.path.join(keep, "report.png"))

        # an off-diagonal cell far down the page: its link must scroll there
        cell_ids = [c.get_attribute("id")[3:] for c in cells]  # "t-p"
        k = next(k for k in reversed(range(len(cells))) if len(set(cell_ids[k].split("-"))) == 2)
        target, anchor = cells[k], "cell-" + cell_ids[k]
        assert driver.execute_script("return window.scrollY") == 0
        target.find_element(By.TAG_NAME, "path").click()
        assert driver.execute_script("return location.hash") == "#" + anchor
        top, scrolled = driver.execute_script(
            "const r = document.getElementById(arguments[0]).getBoundingClientRect();"
            "return [r.top, window.scrollY]",
            anchor,
        )
        assert scrolled > 1000 and 0 <= top < 50, (top, scrolled)
        highlighted = driver.execute_script(
            "return getComputedStyle(document.getElementById(arguments[0])).backgroundColor", anchor
        )
        assert highlighted == "rgb(255, 243, 191)"  # :target matched
        driver.save_screenshot(str(tmp_path / "report-cell.png"))
        if keep:
            driver.save_screenshot(os.path.join(keep, "report-cell.png"))
        assert console_errors(driver) == []
