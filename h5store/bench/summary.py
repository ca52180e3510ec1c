"""Writing a :class:`~h5store.bench.results.BenchResult` down: JSON (everything), CSV (one row a
setting, for pandas or a spreadsheet), a markdown table (for a terminal or a README) and the
Pareto plot (see :mod:`h5store.bench.plot`)."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from h5store import InvalidInputError

from .recommend import pareto_front, size_at_ssim

if TYPE_CHECKING:  # results imports this module to save itself
    from .results import BenchResult, CellResult

FILES = {"json": "bench.json", "csv": "bench.csv", "markdown": "bench.md", "plot": "bench.png"}


def write_all(result: BenchResult, out: str | os.PathLike) -> dict[str, str]:
    """Write every output into the folder ``out`` (created if missing); their paths by kind."""
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise InvalidInputError(f"output folder {out!r} is a file")
    os.makedirs(out, exist_ok=True)
    from .plot import pareto_plot

    paths = {kind: os.path.join(out, name) for kind, name in FILES.items()}
    write_json(result, paths["json"])
    write_csv(result, paths["csv"])
    with open(paths["markdown"], "w", encoding="utf-8") as f:
        f.write(markdown_report(result))
    pareto_plot(result, paths["plot"])
    return paths


def write_json(result: BenchResult, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result.to_dict(), f, indent=2, allow_nan=False)
        f.write("\n")


CSV_COLUMNS = [
    "codec",
    "setting",
    "lossless",
    "images",
    "bytes_per_image",
    "bits_per_pixel",
    "ratio",
    "encode_mpx_s",
    "encode_mpx_s_2t",
    "decode_mpx_s",
    "decode_mpx_s_2t",
    "psnr_mean",
    "psnr_min",
    "ssim_mean",
    "ssim_min",
    "ssim_images",
    "max_abs_error",
    "exact_images",
    "agreement",
    "flips",
    "violation",
    "seconds",
    "config",
]


def write_csv(result: BenchResult, path: str) -> None:
    """One row a measured setting; PSNR of exactly reproduced sets is written ``inf``."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for cell in result.cells:
            row = {k: getattr(cell, k) for k in CSV_COLUMNS if k != "config"}
            row["config"] = json.dumps(cell.config, sort_keys=True)
            writer.writerow(row)


def _num(fmt: str) -> Callable[[Any], str]:
    def show(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float) and math.isinf(value):
            return "∞"
        return format(value, fmt)

    return show


def _pair(a: float | None, b: float | None) -> str:
    return f"{_num('.0f')(a)} / {_num('.0f')(b)}"


def _note(cell: CellResult, result: BenchResult, front: set[int]) -> str:
    notes = []
    rec = result.recommendation
    if rec is not None and rec.cell is cell:
        notes.append("**recommended**")
    elif rec is not None and cell in (rec.smallest, rec.fastest):
        notes.append("smallest" if cell is rec.smallest else "fastest")
    if cell.violation:
        notes.append(f"VIOLATION: {cell.violation}")
    if id(cell) in front:
        notes.append("Pareto")
    return ", ".join(notes)


def markdown_table(result: BenchResult) -> str:
    """One row a setting, codecs in registry order, each codec's settings by size."""
    lossy = result.meta.get("lossy_input")
    mark = "*" if lossy else ""  # fidelity against decoded lossy input: footnoted
    header = [
        "codec",
        "setting",
        "bytes/img",
        "bpp",
        "ratio",
        "enc MP/s 1t / 2t",
        "dec MP/s 1t / 2t",
        f"PSNR dB{mark}",
        f"SSIM{mark}",
        f"max err{mark}",
        "agree",
        "flips",
        "note",
    ]
    front = {id(c) for c in pareto_front(result.cells)}
    order = {name: k for k, name in enumerate(dict.fromkeys(c.codec for c in result.cells))}
    rows = []
    for c in sorted(result.cells, key=lambda c: (order[c.codec], c.bytes_per_image)):
        rows.append(
            [
                c.codec,
                c.setting or "default",
                f"{c.bytes_per_image:,.0f}",
                f"{c.bits_per_pixel:.2f}",
                f"{c.ratio:.1f}",
                _pair(c.encode_mpx_s, c.encode_mpx_s_2t),
                _pair(c.decode_mpx_s, c.decode_mpx_s_2t),
                _num(".2f")(c.psnr_mean),
                _num(".4f")(c.ssim_mean),
                str(c.max_abs_error),
                _num(".3f")(c.agreement),
                _num("d")(c.flips),
                _note(c, result, front),
            ]
        )
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if lossy:
        lines.append(f"\n{mark} against the input as decoded, which is not the originals: {lossy}.")
    return "\n".join(lines)


def equal_ssim_table(result: BenchResult, levels: int = 4) -> str:
    """Bytes per image of each lossy codec at a few common SSIM values, interpolated between
    its settings: the fair way to say which codec is smaller. Empty without two such codecs."""
    lossy = [
        c
        for c in result.cells
        if not c.lossless and c.ssim_mean is not None and c.max_abs_error and not c.violation
    ]
    counts = Counter(c.codec for c in lossy)
    codecs = [codec for codec, count in counts.items() if count >= 2]  # one point: no curve
    if len(codecs) < 2:
        return ""
    ssims = [c.ssim_mean for c in lossy if c.codec in codecs and c.ssim_mean is not None]
    targets = np.round(np.linspace(min(ssims), max(ssims), levels + 2)[1:-1], 3)
    header = ["SSIM", *codecs]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for target in targets:
        sizes = [size_at_ssim(lossy, codec, float(target)) for codec in codecs]
        lines.append("| " + " | ".join([f"{target:.3f}", *(_num(",.0f")(s) for s in sizes)]) + " |")
    return "\n".join(lines)


def summary_lines(result: BenchResult) -> list[str]:
    """The facts around the table: input, timing, classifier, settings skipped."""
    meta, clf = result.meta, result.classifier
    load = meta.get("load_average")
    lines = [
        f"Input: {meta['input']}; {len(result.cells)} settings measured in "
        f"{meta['seconds']:.0f} s on {meta['cpus']} cores"
        + ("" if load is None else f" (load average {load:.1f} at the end)")
        + ". Size, speed, PSNR and max error "
        f"over all {meta['images']} images, SSIM over the first {meta['ssim_images']} (the "
        "same for every setting).",
        SPEED_CAPTION.format(repeats=meta.get("repeats", "?")),
    ]
    if meta.get("quick"):
        lines.append(
            "Quick run (--quick): fewer images, and of each codec's settings only its first "
            "lossless one and its two lossy ones of highest quality; run without --quick "
            "for the whole grid."
        )
    if clf.kind == "default":
        lines.append(
            f"Classifier: default scikit-learn model, accuracy {clf.accuracy:.3f} on "
            f"{clf.test_size} held-out originals (chance {clf.chance:.3f}); agree = "
            "share of its predictions unchanged by compression, flips = images changed."
        )
    elif clf.kind == "user":
        lines.append(
            "Classifier: the predict function given; agree = share of its predictions "
            "unchanged by compression, flips = images changed."
        )
    else:
        lines.append(f"Classifier: none ({clf.note}).")
    reasons: dict[tuple[str, str], list[str]] = {}
    for s in result.skipped:  # one line for all settings of a codec skipped for one reason
        reasons.setdefault((s.codec, s.reason), []).append(s.setting)
    lines += [
        f"Skipped {codec} ({', '.join(settings)}): {reason}"
        for (codec, reason), settings in reasons.items()
    ]
    return lines


SPEED_CAPTION = (
    "MP/s = megapixels per second in CPU time of the measuring thread (time.thread_time), "
    "median of {repeats} blocks per thread count, so other processes' load does not lower "
    "them; 2t = two threads, each block's pixels over the CPU time of its busier thread (what "
    "two free cores give)."
)

EQUAL_SSIM_CAPTION = (
    "Bytes per image at equal SSIM (each lossy codec's size interpolated "
    "between its settings; - where its settings do not reach):"
)


def markdown_report(result: BenchResult) -> str:
    bullets = "\n".join(f"- {line}" for line in summary_lines(result))
    text = f"# Codec benchmark\n\n{bullets}\n\n{markdown_table(result)}\n"
    equal = equal_ssim_table(result)
    if equal:
        text += f"\n{EQUAL_SSIM_CAPTION}\n\n{equal}\n"
    if result.recommendation is not None:
        text += f"\n```text\n{result.recommendation.message}\n```\n"
    return text
