"""An error-analysis report of a store: one self-contained HTML file for the browser.

    h5store.report("run.h5", "run-report.html")

The page holds a summary, the confusion matrix (each cell links to a gallery of its images),
per-class precision and recall, each class's score histogram, and galleries: the most confident
mistakes, the least confident correct predictions and a sample of every class. Plots are drawn by
matplotlib, thumbnails are JPEG data URIs: the file opens from disk with no server and no network.

Everything but the thumbnails is computed from the index columns with numpy, so the cost of a
report grows with the number of images only through a few vectorised passes; the galleries are
samples, and at most ``max_thumbnails`` images are ever decoded.

Uses only h5store's public API. Needs matplotlib (``pip install 'h5store[report]'``).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import os
import re
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

import h5store

from .errors import InvalidInputError

if TYPE_CHECKING:  # (an optional extra: imported where a plot is drawn)
    import matplotlib.figure

HISTOGRAM_BINS = 20  # over [0, 1]
# Tick labels longer than this are cut (the full name is in the tooltip and the table).
LABEL_CHARS = 22
THUMBNAIL_QUALITY = 80
DECODE_BATCH = 64


@dataclass
class _Gallery:
    anchor: str
    title: str
    note: str
    rows: np.ndarray  # positions in the live index, in display order
    total: int  # images the gallery samples from


@dataclass
class _Analysis:
    """What the page shows, computed from the live index rows."""

    labels: list[str]
    ids: np.ndarray
    predicted: np.ndarray
    truth: np.ndarray  # -1 where unknown
    score: np.ndarray  # NaN where not stored
    shown: list[int] = field(default_factory=list)  # classes with their own matrix row
    group: np.ndarray | None = None  # class id -> matrix row (the last row is "other")
    other: int = 0  # how many classes were folded into "other"
    matrix: np.ndarray | None = None  # rows true, columns predicted


def report(
    store_or_path: h5store.ImageStore | str | os.PathLike,
    out: str | os.PathLike,
    *,
    max_classes: int = 30,
    per_gallery: int = 24,
    per_cell: int = 6,
    per_class: int = 8,
    max_thumbnails: int = 500,
    thumbnail_px: int = 96,
    seed: int = 0,
    title: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the HTML report of a store to ``out``: one file that opens from disk.

    Parameters
    ----------
    store_or_path
        An open :class:`ImageStore` or the path of a store.
    out
        The HTML file to write.
    max_classes
        The confusion matrix and the histograms show the most frequent classes and fold the
        rest into one "other" row and column.
    per_gallery
        Thumbnails in the mistakes and least-confident galleries.
    per_cell
        Thumbnails for each confusion-matrix cell.
    per_class
        Thumbnails in each class's sample.
    max_thumbnails
        At most this many distinct images are decoded (images past it are listed by id).
    thumbnail_px
        The longer side of a thumbnail, in pixels.
    seed
        Draws the samples.
    title
        The page title (default: the store's file name).
    progress
        Show a progress bar on stderr.

    Returns
    -------
    dict
        A summary: the output path, its bytes, the seconds it took and the counts shown.

    Raises
    ------
    InvalidInputError
        A count out of range, or ``out`` is a folder or lies in a folder that does not
        exist; raised before anything is written.
    ImportError
        matplotlib or Pillow is missing (``pip install 'h5store[report]'``).
    """
    t0 = time.perf_counter()
    for name, value, least in (
        ("max_classes", max_classes, 1),
        ("per_gallery", per_gallery, 0),
        ("per_cell", per_cell, 0),
        ("per_class", per_class, 0),
        ("max_thumbnails", max_thumbnails, 0),
        ("thumbnail_px", thumbnail_px, 8),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise InvalidInputError(f"{name} must be an integer >= {least}, got {value!r}")
    out = os.fspath(out)
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise InvalidInputError(f"cannot write the report to {out!r}: {parent!r} is not a folder")
    if os.path.isdir(out):
        raise InvalidInputError(f"cannot write the report to {out!r}: it is a folder")

    if isinstance(store_or_path, h5store.ImageStore):
        store, owned = store_or_path, False
    else:
        store, owned = h5store.open(store_or_path), True
    try:
        bar = tqdm(total=4, desc="h5store report", unit="step", disable=not progress)
        with bar:
            bar.set_postfix_str("index")
            stats = store.stats()
            # The page shows the index's top-1 scores; the vectors they came from are checked
            # too, so that a damaged /scores is an error here as on every other read.
            store._check_score_vectors()
            rows = store.index
            rows = rows[rows["deleted"] == 0]
            data = _analyse(rows, list(store.labels), max_classes)
            rng = np.random.default_rng(seed)
            galleries = _galleries(data, rng, per_gallery, per_cell, per_class)
            bar.update()

            bar.set_postfix_str("plots")
            matrix_svg = _matrix_svg(data, data.matrix) if data.matrix is not None else ""
            histogram_png = _histograms_png(data)
            bar.update()

            chosen = _choose_thumbnails(galleries, max_thumbnails)
            bar.set_postfix_str(f"{len(chosen)} thumbnails")
            tiles = _thumbnails(store, data.ids[chosen], thumbnail_px)
            thumbnails = dict(zip(chosen.tolist(), tiles))
            bar.update()

            bar.set_postfix_str("write")
            summary = _summary(rows, data, stats, store)
            page = _page(
                title or f"h5store report: {os.path.basename(store.path)}",
                summary,
                data,
                galleries,
                thumbnails,
                matrix_svg,
                histogram_png,
            )
            # a whole page or none: a browser never opens half a report
            partial = out + ".partial"
            with open(partial, "w", encoding="utf-8") as f:
                f.write(page)
            os.replace(partial, out)
            bar.update()
    finally:
        if owned:
            store.close()
    return {
        "out": out,
        "bytes": os.path.getsize(out),
        "seconds": round(time.perf_counter() - t0, 3),
        "images": len(data.ids),
        "classes": len(data.labels),
        "matrix_classes": len(data.shown) + (1 if data.other else 0),
        "thumbnails": len(thumbnails),
        "accuracy": summary["accuracy"],
    }


# ---------------------------------------------------------------------------- analysis


def _analyse(rows: np.ndarray, labels: list[str], max_classes: int) -> _Analysis:
    data = _Analysis(
        labels=labels,
        ids=rows["id"].astype(np.int64),
        predicted=rows["label"].astype(np.int64),
        truth=rows["true_label"].astype(np.int64),
        score=rows["score"].astype(np.float64),
    )
    k = len(labels)
    known = data.truth >= 0
    frequency = np.bincount(data.predicted, minlength=k) + np.bincount(
        data.truth[known], minlength=k
    )
    present = np.flatnonzero(frequency)
    if len(present) > max_classes:
        # The most frequent classes keep their own row; the rest share the last one.
        keep = present[np.argsort(-frequency[present], kind="stable")[: max_classes - 1]]
        data.shown = sorted(keep.tolist())
        data.other = len(present) - len(data.shown)
    else:
        data.shown = present.tolist()
    data.group = np.full(k, len(data.shown), dtype=np.int64)
    data.group[data.shown] = np.arange(len(data.shown))
    if known.any():
        m = len(data.shown) + (1 if data.other else 0)
        cell = data.group[data.truth[known]] * m + data.group[data.predicted[known]]
        data.matrix = np.bincount(cell, minlength=m * m).reshape(m, m)
    return data


def _sample_per_group(
    groups: np.ndarray, rows: np.ndarray, k: int, rng: np.random.Generator
) -> dict[int, np.ndarray]:
    """Up to k random rows of each group, without a Python loop over the rows."""
    if not len(rows) or k == 0:
        return {}
    # one float sort (group + a random fraction) is several times faster than a lexsort
    order = np.argsort(groups + rng.random(len(rows)), kind="stable")
    groups, rows = groups[order], rows[order]
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    keep = rank < k
    groups, rows = groups[keep], rows[keep]
    bounds = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True])
    return {int(groups[a]): rows[a:b] for a, b in itertools.pairwise(bounds)}


def _by_score(data: _Analysis, rows: np.ndarray, descending: bool) -> np.ndarray:
    scores = data.score[rows]
    scores = np.where(np.isnan(scores), -np.inf if descending else np.inf, scores)
    return rows[np.argsort(-scores if descending else scores, kind="stable")]


def _extreme(data: _Analysis, mask: np.ndarray, k: int, highest: bool) -> np.ndarray:
    rows = np.flatnonzero(mask & ~np.isnan(data.score))
    if k == 0:
        return rows[:0]
    if len(rows) > k:
        scores = data.score[rows]
        rows = rows[np.argpartition(-scores if highest else scores, k - 1)[:k]]
    return _by_score(data, rows, descending=highest)


def _galleries(
    data: _Analysis, rng: np.random.Generator, per_gallery: int, per_cell: int, per_class: int
) -> list[_Gallery]:
    known = data.truth >= 0
    wrong = known & (data.truth != data.predicted)
    right = known & (data.truth == data.predicted)
    galleries = []
    if known.any():
        galleries.append(
            _Gallery(
                "mistakes",
                "Most confident mistakes",
                "Wrong predictions with the highest scores.",
                _extreme(data, wrong, per_gallery, highest=True),
                int(wrong.sum()),
            )
        )
        galleries.append(
            _Gallery(
                "unsure",
                "Least confident correct predictions",
                "Right predictions with the lowest scores.",
                _extreme(data, right, per_gallery, highest=False),
                int(right.sum()),
            )
        )
    else:
        everything = np.ones(len(data.ids), dtype=bool)
        galleries.append(
            _Gallery(
                "unsure",
                "Least confident predictions",
                "No true labels are stored: the predictions with the lowest scores.",
                _extreme(data, everything, per_gallery, highest=False),
                len(data.ids),
            )
        )

    counts = np.bincount(data.predicted, minlength=len(data.labels))
    samples = _sample_per_group(data.predicted, np.arange(len(data.ids)), per_class, rng)
    for label in data.shown:
        galleries.append(
            _Gallery(
                f"class-{label}",
                f"Predicted {data.labels[label]}",
                "A random sample of the images predicted as this class.",
                _by_score(data, samples.get(label, np.array([], np.int64)), True),
                int(counts[label]),
            )
        )

    if data.matrix is not None and data.group is not None:  # (set together: truth is known)
        m = data.matrix.shape[0]
        rows = np.flatnonzero(known)
        cell = data.group[data.truth[rows]] * m + data.group[data.predicted[rows]]
        samples = _sample_per_group(cell, rows, per_cell, rng)
        names = _group_names(data)
        for code in np.flatnonzero(data.matrix.ravel()).tolist():
            t, p = divmod(code, m)
            galleries.append(
                _Gallery(
                    f"cell-{t}-{p}",
                    f"True {names[t]}, predicted {names[p]}",
                    "A random sample of this confusion-matrix cell.",
                    _by_score(data, samples.get(code, np.array([], np.int64)), True),
                    int(data.matrix[t, p]),
                )
            )
    return galleries


def _group_names(data: _Analysis) -> list[str]:
    names = [data.labels[k] for k in data.shown]
    if data.other:
        names.append(f"other ({data.other} classes)")
    return names


def _choose_thumbnails(galleries: list[_Gallery], budget: int) -> np.ndarray:
    """Which rows get a decoded thumbnail: every gallery's first image before any gallery's
    second, so each gallery shows pictures even when there are more galleries than budget."""
    chosen: dict[int, None] = {}
    depth = max((len(g.rows) for g in galleries), default=0)
    for rank in range(depth):
        for gallery in galleries:
            if len(chosen) >= budget:
                return np.fromiter(chosen, dtype=np.int64)
            if rank < len(gallery.rows):
                chosen.setdefault(int(gallery.rows[rank]))
    return np.fromiter(chosen, dtype=np.int64, count=len(chosen))


def _summary(
    rows: np.ndarray, data: _Analysis, stats: dict[str, Any], store: h5store.ImageStore
) -> dict[str, Any]:
    n = len(rows)
    known = data.truth >= 0
    # Every image of one stack shares its shape, dtype and codec: count per stack (a small
    # integer column), then read those from one row of each stack.
    stack = rows["stack"].astype(np.int64)
    per_stack = np.bincount(stack)
    bytes_per_stack = np.bincount(stack, weights=rows["nbytes"])
    first = np.zeros(len(per_stack), dtype=np.int64)
    first[stack[::-1]] = np.arange(n - 1, -1, -1)
    codecs: dict[str, list[float]] = {}
    shapes: dict[str, int] = {}
    for k in np.flatnonzero(per_stack).tolist():
        r = rows[first[k]]
        totals = codecs.setdefault(r["codec"].decode(), [0, 0.0])
        totals[0] += int(per_stack[k])
        totals[1] += float(bytes_per_stack[k])
        shape = f"{int(r['height'])}x{int(r['width'])}x{int(r['channels'])} {r['dtype'].decode()}"
        shapes[shape] = shapes.get(shape, 0) + int(per_stack[k])
    per_codec = {
        name: {"images": count, "bytes_per_image": total / count}
        for name, (count, total) in sorted(codecs.items())
    }
    shape_counts = sorted(((c, shape) for shape, c in shapes.items()), reverse=True)
    return {
        "file": os.path.basename(store.path),
        "images": n,
        "deleted": stats["deleted"],
        "classes": len(data.labels),
        "with_true_label": int(known.sum()),
        "accuracy": (
            float((data.truth[known] == data.predicted[known]).mean()) if known.any() else None
        ),
        "with_score": int((~np.isnan(data.score)).sum()),
        "codecs": per_codec,
        "payload_bytes": int(rows["nbytes"].astype(np.int64).sum()),
        "file_bytes": stats["file_bytes"],
        "shapes": shape_counts[:5],
        "other_shapes": max(0, len(shape_counts) - 5),
    }


def _per_class(data: _Analysis) -> list[dict[str, Any]]:
    k = len(data.labels)
    known = data.truth >= 0
    predicted = np.bincount(data.predicted, minlength=k)
    predicted_known = np.bincount(data.predicted[known], minlength=k)
    true = np.bincount(data.truth[known], minlength=k)
    hit = known & (data.truth == data.predicted)
    correct = np.bincount(data.predicted[hit], minlength=k)
    has_score = ~np.isnan(data.score)
    score_sum = np.bincount(data.predicted[has_score], weights=data.score[has_score], minlength=k)
    score_n = np.bincount(data.predicted[has_score], minlength=k)
    out = []
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = correct / predicted_known
        recall = correct / true
        mean_score = score_sum / score_n
    for label in range(k):
        if not predicted[label] and not true[label]:
            continue
        out.append(
            {
                "id": label,
                "name": data.labels[label],
                "predicted": int(predicted[label]),
                "true": int(true[label]),
                "correct": int(correct[label]),
                "precision": _finite(precision[label]),
                "recall": _finite(recall[label]),
                "mean_score": _finite(mean_score[label]),
            }
        )
    return out


def _finite(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


# ---------------------------------------------------------------------------- plots


def _pyplot() -> tuple[ModuleType, type[matplotlib.figure.Figure]]:
    try:
        import matplotlib
    except ImportError as exc:  # an optional extra
        raise ImportError("h5store.report needs matplotlib: pip install 'h5store[report]'") from exc
    # Figure without pyplot: no global state, and savefig picks Agg or SVG by format.
    from matplotlib.figure import Figure

    return matplotlib, Figure


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "\u2026"


def _matrix_svg(data: _Analysis, matrix: np.ndarray) -> str:
    """The confusion matrix as inline SVG: cells coloured by the row-normalised share, labelled
    with counts, each non-empty cell a link to its gallery with the numbers as its tooltip."""
    matplotlib, Figure = _pyplot()
    from matplotlib.patches import Rectangle

    m = matrix.shape[0]
    names = _group_names(data)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    cmap = matplotlib.colormaps["Blues"]
    font = max(6.0, min(10.0, 180 / max(m, 1)))
    # Fixed margins from the longest tick label, not tight_layout: its extra draws of every
    # cell cost seconds at 30 x 30.
    cell = min(0.42, 12.0 / max(m, 1))
    label_in = 0.6 * font / 72 * max(len(_short(n)) for n in names)
    left, bottom, right, top = label_in + 0.6, 0.87 * label_in + 0.6, 1.3, 0.2
    width, height = left + m * cell + right, bottom + m * cell + top
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((left / width, bottom / height, m * cell / width, m * cell / height))
    ax.set_gid("matrix-axes")
    tooltips = {}
    for t in range(m):
        for p in range(m):
            count = int(matrix[t, p])
            rect = Rectangle(
                (p - 0.5, t - 0.5),
                1,
                1,
                facecolor=cmap(share[t, p]),
                edgecolor="white",
                linewidth=0.5,
            )
            if count:
                rect.set_url(f"#cell-{t}-{p}")
                rect.set_gid(f"cm-{t}-{p}")
                tooltips[f"cm-{t}-{p}"] = (
                    f"true {names[t]}, predicted {names[p]}: {count} images, "
                    f"{share[t, p]:.1%} of true {names[t]}"
                )
            ax.add_patch(rect)
            if count and m <= 40:
                ax.text(
                    p,
                    t,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=font,
                    color="white" if share[t, p] > 0.5 else "black",
                    gid=f"count-{t}-{p}",
                )
    ax.set_xlim(-0.5, m - 0.5)
    ax.set_ylim(m - 0.5, -0.5)
    ax.set_xticks(
        range(m),
        [_short(n) for n in names],
        rotation=60,
        ha="right",
        rotation_mode="anchor",
        fontsize=font,
    )
    ax.set_yticks(range(m), [_short(n) for n in names], fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 1), cmap)
    bar = fig.add_axes(
        ((left + m * cell + 0.15) / width, bottom / height, 0.18 / width, m * cell / height)
    )
    fig.colorbar(mappable, cax=bar, label="share of the true class (row)")
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "h5store"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    # matplotlib opens links in a new window; here they are jumps within the page.
    svg = svg.replace(' target="_blank"', "")
    svg = re.sub(
        r'<g id="(cm-\d+-\d+)">',
        lambda g: f"{g.group(0)}<title>{html.escape(tooltips[g.group(1)])}</title>",
        svg,
    )
    return svg.replace("<svg ", '<svg class="matrix" role="img" aria-label="confusion matrix" ', 1)


def _histograms_png(data: _Analysis) -> str | None:
    """Each shown class's histogram of top-1 scores, right and wrong predictions stacked, as a
    base64 PNG (small multiples; a raster stays small however many images there are)."""
    has_score = ~np.isnan(data.score)
    if not has_score.any() or not data.shown:
        return None
    _, Figure = _pyplot()
    score = data.score[has_score]  # h5store keeps scores in [0, 1]
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    bins = np.minimum((score * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
    truth = data.truth[has_score]
    kind = np.where(truth < 0, 2, np.where(truth == data.predicted[has_score], 0, 1))
    panels = [*data.shown, -1]  # -1: every class together
    group = np.full(len(data.labels), -1, dtype=np.int64)
    group[data.shown] = np.arange(len(data.shown))
    cls = group[data.predicted[has_score]]
    counts = np.zeros((len(panels), 3, HISTOGRAM_BINS), dtype=np.int64)
    shown = cls >= 0
    np.add.at(counts, (cls[shown], kind[shown], bins[shown]), 1)
    counts[-1] = np.bincount(kind * HISTOGRAM_BINS + bins, minlength=3 * HISTOGRAM_BINS).reshape(
        3, HISTOGRAM_BINS
    )

    columns = 4
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(columns * 2.7, rows * 1.9 + 0.5))
    # Fixed spacing rather than tight_layout, whose extra draws cost seconds at 30 panels.
    fig.subplots_adjust(
        left=0.05,
        right=0.99,
        top=1 - 0.3 / (rows * 1.9 + 0.5),
        bottom=0.55 / (rows * 1.9 + 0.5),
        wspace=0.25,
        hspace=0.45,
    )
    axes = fig.subplots(rows, columns, squeeze=False, sharex=True)
    colours = ["#2b8a3e", "#c92a2a", "#868e96"]
    names = ["right", "wrong", "true label unknown"]
    for n, panel in enumerate(panels):
        ax = axes.flat[n]
        baseline = np.zeros(HISTOGRAM_BINS)
        for k in range(3):
            if counts[:, k].any():
                top = baseline + counts[n, k]
                ax.stairs(
                    top, edges, baseline=baseline, fill=True, color=colours[k], label=names[k]
                )
                baseline = top
        name = "all classes" if panel < 0 else _short(data.labels[panel])
        ax.set_title(f"{name} (n={int(counts[n].sum()):,})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.yaxis.get_major_locator().set_params(nbins=3)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for n in range(max(0, len(panels) - columns), len(panels)):  # lowest panel of each column
        axes.flat[n].xaxis.set_tick_params(labelbottom=True)
    axes.flat[len(panels) - 1].legend(fontsize=7, frameon=False, loc="upper left")
    fig.supxlabel("top-1 score (predicted class)", fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------- thumbnails


def _thumbnails(store: h5store.ImageStore, ids: np.ndarray, px: int) -> list[tuple[int, int, str]]:
    """(width, height, base64 JPEG) of each image, its longer side at most px."""
    from PIL import Image

    out = []
    for start in range(0, len(ids), DECODE_BATCH):
        batch = ids[start : start + DECODE_BATCH].tolist()
        for image in store.get_batch(batch, channel_order="rgb"):
            picture = Image.fromarray(_as_8bit(image))
            picture.thumbnail((px, px), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
            out.append(
                (picture.width, picture.height, base64.b64encode(buffer.getvalue()).decode("ascii"))
            )
    return out


def _as_8bit(image: np.ndarray) -> np.ndarray:
    """Grey or RGB uint8 for a JPEG thumbnail, whatever the stored dtype and channels."""
    if image.ndim == 3:
        image = image[..., 0] if image.shape[2] < 3 else image[..., :3]
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    values = image.astype(np.float64)
    if image.dtype.kind == "f":
        low, high = 0.0, 1.0
    elif image.dtype.kind == "u":
        low, high = 0.0, float(np.iinfo(image.dtype).max)
    else:
        low, high = float(values.min()), float(values.max())
    scaled = (values - low) / max(high - low, 1e-12) * 255
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- page

STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #212529; background: #f8f9fa; }
header, main { max-width: 1200px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 18px; }
main { padding-bottom: 90vh; }  /* so that even the last gallery can scroll to the top */
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #dee2e6; }
h3 { font-size: 15px; margin: 18px 0 6px; }
nav a { margin-right: 14px; }
a { color: #1864ab; }
.note { color: #495057; margin: 2px 0 8px; }
dl.summary { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 10px 0; }
dl.summary dt { color: #495057; }
dl.summary dd { margin: 0; }
svg.matrix { max-width: 100%; height: auto; background: white; }
svg.matrix a:hover path { stroke: #e67700; stroke-width: 2; }
svg.matrix g[id^="count-"] { pointer-events: none; }  /* a click on a count hits its cell */
img.plot { max-width: 100%; background: white; }
table.classes { border-collapse: collapse; background: white; }
table.classes th, table.classes td { padding: 3px 10px; border-bottom: 1px solid #e9ecef;
                                    text-align: right; }
table.classes th:first-child, table.classes td:first-child { text-align: left; }
section.gallery { scroll-margin-top: 8px; padding: 2px 8px 8px; border-radius: 6px; }
section.gallery:target { background: #fff3bf; }
.thumbs { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: 112px; background: white; border: 1px solid #dee2e6;
         border-radius: 4px; padding: 4px; }
figure img { display: block; margin: 0 auto; }
figure.wrong { border-color: #c92a2a; }
figcaption { font-size: 11px; line-height: 1.3; overflow-wrap: anywhere; margin-top: 3px; }
figcaption .wrong { color: #c92a2a; }
.more { color: #495057; font-size: 12px; }
a.back { font-size: 12px; font-weight: normal; margin-left: 8px; }
"""


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "\u2013" if value is None else pattern.format(value)


def _human(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} GB"


def _figure(data: _Analysis, row: int, thumbnail: tuple[int, int, str]) -> str:
    e = html.escape
    truth = int(data.truth[row])
    predicted = int(data.predicted[row])
    score = data.score[row]
    wrong = 0 <= truth != predicted
    lines = [
        f"#{int(data.ids[row])} \u00b7 score {_fmt(None if np.isnan(score) else score)}",
        f"pred: {e(data.labels[predicted])}",
    ]
    true_text = "unknown" if truth < 0 else e(data.labels[truth])
    lines.append(f'<span class="wrong">true: {true_text}</span>' if wrong else f"true: {true_text}")
    width, height, payload = thumbnail
    return (
        f'<figure class="{"wrong" if wrong else "right"}"><img src="data:image/jpeg;base64,'
        f'{payload}" width="{width}" height="{height}" alt="image {int(data.ids[row])}">'
        f"<figcaption>{'<br>'.join(lines)}</figcaption></figure>"
    )


def _gallery_html(data: _Analysis, gallery: _Gallery, thumbnails: dict) -> str:
    e = html.escape
    pictured = [r for r in gallery.rows.tolist() if r in thumbnails]
    listed = [r for r in gallery.rows.tolist() if r not in thumbnails]
    back = (
        ' <a class="back" href="#matrix">\u2191 matrix</a>'
        if gallery.anchor.startswith("cell-")
        else ""
    )
    parts = [
        f'<section class="gallery" id="{gallery.anchor}"><h3>{e(gallery.title)}{back}</h3>',
        (
            f'<p class="note">{e(gallery.note)} Showing {len(gallery.rows)} of '
            f"{gallery.total:,} images.</p>"
        ),
    ]
    if pictured:
        parts.append('<div class="thumbs">')
        parts.extend(_figure(data, r, thumbnails[r]) for r in pictured)
        parts.append("</div>")
    if listed:
        ids = ", ".join(f"#{int(data.ids[r])}" for r in listed)
        parts.append(f'<p class="more">Not pictured (thumbnail budget reached): {ids}</p>')
    if not len(gallery.rows):
        parts.append('<p class="more">No images.</p>')
    parts.append("</section>")
    return "".join(parts)


def _page(
    title: str,
    summary: dict[str, Any],
    data: _Analysis,
    galleries: list[_Gallery],
    thumbnails: dict,
    matrix_svg: str,
    histogram_png: str | None,
) -> str:
    e = html.escape
    per_class = _per_class(data)
    codecs = (
        "; ".join(
            f"{e(name)}: {c['images']:,} images, {_human(c['bytes_per_image'])}/image"
            for name, c in summary["codecs"].items()
        )
        or "\u2013"
    )
    shapes = ", ".join(f"{e(s)} ({c:,})" for c, s in summary["shapes"])
    if summary["other_shapes"]:
        shapes += f", and {summary['other_shapes']} more"
    accuracy = summary["accuracy"]
    facts = [
        ("file", e(summary["file"])),
        (
            "images",
            f"{summary['images']:,}"
            + (f" ({summary['deleted']:,} deleted not shown)" if summary["deleted"] else ""),
        ),
        ("classes", f"{summary['classes']:,}"),
        (
            "accuracy",
            "no true labels stored"
            if accuracy is None
            else f"{accuracy:.2%} of the {summary['with_true_label']:,} images with a true label",
        ),
        ("scores", f"{summary['with_score']:,} images have a top-1 score"),
        ("codecs", codecs),
        (
            "stored bytes",
            (
                f"{_human(summary['payload_bytes'])} of images in a "
                f"{_human(summary['file_bytes'])} file"
            ),
        ),
        ("image shapes", shapes or "\u2013"),
    ]
    by_anchor = {g.anchor: g for g in galleries}
    nav = ['<a href="#summary">summary</a>']
    body = ['<section id="summary"><h2>Summary</h2><dl class="summary">']
    body.extend(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    body.append("</dl></section>")

    if matrix_svg:
        nav.append('<a href="#matrix">confusion matrix</a>')
        folded = (
            f" The {data.other} least frequent classes are folded into \u201cother\u201d."
            if data.other
            else ""
        )
        body.append(
            '<section id="matrix"><h2>Confusion matrix</h2><p class="note">Rows: true class; '
            "columns: predicted class. Numbers are image counts, colour is the share of the row "
            "(hover a cell for both); click a cell to see its images."
            + folded
            + "</p>"
            + matrix_svg
            + "</section>"
        )
    nav.append('<a href="#classes">classes</a>')
    body.append(
        '<section id="classes"><h2>Classes</h2><table class="classes"><thead><tr>'
        "<th>class</th><th>predicted</th><th>true</th><th>correct</th><th>precision</th>"
        "<th>recall</th><th>mean score</th></tr></thead><tbody>"
    )
    for c in per_class:
        anchor = f"class-{c['id']}"
        name = e(c["name"])
        if anchor in by_anchor:
            name = f'<a href="#{anchor}">{name}</a>'
        body.append(
            f"<tr><td>{name}</td><td>{c['predicted']:,}</td><td>{c['true']:,}</td>"
            f"<td>{c['correct']:,}</td><td>{_fmt(c['precision'])}</td>"
            f"<td>{_fmt(c['recall'])}</td><td>{_fmt(c['mean_score'])}</td></tr>"
        )
    body.append("</tbody></table></section>")

    if histogram_png:
        nav.append('<a href="#scores">scores</a>')
        body.append(
            '<section id="scores"><h2>Score histograms</h2><p class="note">Top-1 score '
            "of the images predicted as each class, right and wrong predictions stacked."
            '</p><img class="plot" alt="score histograms per class" '
            f'src="data:image/png;base64,{histogram_png}"></section>'
        )

    nav.append('<a href="#galleries">galleries</a>')
    body.append('<section id="galleries"><h2>Galleries</h2>')
    for gallery in galleries:
        if not gallery.anchor.startswith("cell-"):
            body.append(_gallery_html(data, gallery, thumbnails))
    cells = [g for g in galleries if g.anchor.startswith("cell-")]
    if cells:
        body.append('<h2 id="cells">Confusion-matrix cells</h2>')
        body.extend(_gallery_html(data, g, thumbnails) for g in cells)
    body.append("</section>")

    machine = {
        "summary": summary,
        "classes": per_class,
        "matrix": None
        if data.matrix is None
        else {"labels": _group_names(data), "counts": data.matrix.tolist()},
    }
    # A JSON island for scripts and tests; every "<" escaped, so no label can end the element
    # or open a comment inside it.
    data_json = json.dumps(machine, ensure_ascii=False).replace("<", "\\u003c")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{e(title)}</h1><nav>{''.join(nav)}</nav></header><main>"
        + "".join(body)
        + f'</main><script type="application/json" id="report-data">{data_json}</script>'
        "</body></html>\n"
    )
