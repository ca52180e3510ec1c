"""The Pareto plot: bytes per image against SSIM, one colour and line per codec, marker area
by decode speed, the front of settings nothing beats on both, the floor, and the choice."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from .recommend import pareto_front

if TYPE_CHECKING:  # results imports summary, which imports this module
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.transforms import Bbox

    from .results import BenchResult, CellResult

#: a matplotlib colour: a name ("red") or an RGB(A) tuple of a colour map
Colour = str | tuple[float, ...]

# Marker area (points^2) of a setting decoding at SPEED_REF MP/s on one thread; area grows with
# the square root of the speed so that 20 and 2000 MP/s both stay readable.
AREA_REF, SPEED_REF = 60.0, 100.0
#: Shapes as well as colours tell codecs apart (14 and more are registered).
MARKERS = "os^DvPXhp<>H8d"


def _area(speed: float | None) -> float:
    return AREA_REF * math.sqrt(max(speed or 1.0, 1.0) / SPEED_REF)


def pareto_plot(result: BenchResult, path: str) -> None:
    """Write the plot as a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display, works in CI
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    cells = [c for c in result.cells if c.ssim_mean is not None]
    by_codec: dict[str, list[CellResult]] = defaultdict(list)
    for cell in cells:
        by_codec[cell.codec].append(cell)
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=110)
    cmap = plt.get_cmap("tab20")
    assert isinstance(cmap, ListedColormap)  # (a qualitative map: a list of 20 colours)
    tab20 = [tuple(rgb) for rgb in np.asarray(cmap.colors)]
    colours = [*tab20[::2], *tab20[1::2]]  # the 10 strong hues first, then their light twins
    front = pareto_front(cells)
    ax.plot(
        [c.bytes_per_image for c in front],
        [_ssim(c) for c in front],
        "-",
        color="0.6",
        lw=6,
        alpha=0.35,
        solid_capstyle="round",
        zorder=1,
    )
    handles = [Line2D([], [], color="0.6", lw=6, alpha=0.35, label="Pareto front")]
    labels: list[tuple[CellResult, str, Colour]] = []
    for k, (codec, group) in enumerate(by_codec.items()):
        group.sort(key=lambda c: c.bytes_per_image)
        colour, marker = colours[k % len(colours)], MARKERS[k % len(MARKERS)]
        curve = [c for c in group if c.max_abs_error]  # a quality curve joins lossy settings only
        ax.plot(
            [c.bytes_per_image for c in curve],
            [_ssim(c) for c in curve],
            "-",
            color=colour,
            alpha=0.7,
            lw=1.2,
            zorder=2,
        )
        ax.scatter(
            [c.bytes_per_image for c in group],
            [_ssim(c) for c in group],
            s=[_area(c.decode_mpx_s) for c in group],
            color=colour,
            marker=marker,
            edgecolor="black",
            linewidth=0.4,
            zorder=3,
        )
        handles.append(
            Line2D(
                [],
                [],
                ls="-",
                marker=marker,
                color=colour,
                markeredgecolor="black",
                markeredgewidth=0.4,
                label=codec,
            )
        )
        for c in group:
            if c.violation:
                labels.append((c, "violation", "red"))
            elif c.max_abs_error:  # lossless settings pile up at SSIM 1; label the lossy ones
                labels.append((c, c.setting, colour))
    rec = result.recommendation
    if rec is not None and rec.floors.min_ssim is not None:
        ax.axhline(rec.floors.min_ssim, color="grey", ls="--", lw=0.8)
        handles.append(
            Line2D(
                [], [], color="grey", ls="--", lw=0.8, label=f"floor: SSIM {rec.floors.min_ssim}"
            )
        )
    if rec is not None and rec.cell is not None and rec.cell.ssim_mean is not None:
        ax.scatter(
            [rec.cell.bytes_per_image],
            [rec.cell.ssim_mean],
            marker="*",
            s=320,
            facecolor="none",
            edgecolor="red",
            linewidth=1.5,
            zorder=4,
        )
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker="*",
                markersize=14,
                markerfacecolor="none",
                markeredgecolor="red",
                label=f"recommended: {rec.cell.name}",
            )
        )
    for speed in (10, 100, 1000):  # a key to the marker areas
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker="o",
                markersize=math.sqrt(_area(speed)),
                color="lightgrey",
                markeredgecolor="black",
                markeredgewidth=0.4,
                label=f"decodes {speed} MP/s (1 thread)",
            )
        )
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image (log scale)")
    ax.set_ylabel("mean SSIM (1 = exact)")
    title = f"Size against fidelity: {result.meta['input']}"
    if result.meta.get("lossy_input"):
        title += (
            f"\nfidelity against already-lossy input, not originals ({result.meta['lossy_input']})"
        )
    ax.set_title(title, fontsize=10, color="black" if "\n" not in title else "darkred")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(handles=handles, fontsize=7, loc="lower right", ncol=2, framealpha=0.9)
    fig.tight_layout()
    _place_labels(fig, ax, labels)  # after the layout: overlap is judged where they end up
    fig.savefig(path)
    plt.close(fig)


# Offsets (points) tried in turn for a setting's label: right-below, right-above, left-below,
# left-above. A label that fits nowhere without overlapping one already placed is left out
# (the table and bench.csv name every setting).
_OFFSETS = ((4, -9), (4, 3), (-4, -9), (-4, 3))
_FONT = 6


def _ssim(cell: CellResult) -> float:
    """The cell's mean SSIM (every cell plotted has one; None would plot as a gap)."""
    return math.nan if cell.ssim_mean is None else cell.ssim_mean


def _place_labels(fig: Figure, ax: Axes, labels: list[tuple[CellResult, str, Colour]]) -> None:
    ax.autoscale_view()
    # (the Agg canvas pareto_plot draws on has get_renderer; FigureCanvasBase declares none)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    placed: list[Bbox] = []
    # Settings on the Pareto front and the recommended one first: they matter most.
    front = {id(c) for c in pareto_front([c for c, _, _ in labels])}
    for cell, text, colour in sorted(labels, key=lambda item: id(item[0]) not in front):
        for dx, dy in _OFFSETS:
            note = ax.annotate(
                text,
                (cell.bytes_per_image, cell.ssim_mean),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=_FONT,
                color=colour,
                ha="left" if dx > 0 else "right",
            )
            box = note.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(other) for other in placed):
                placed.append(box)
                break
            note.remove()
