"""Which setting to use: the smallest (or fastest to decode) one that meets the quality floors,
and the settings no other beats on both size and SSIM (the Pareto front)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from h5store import InvalidInputError

if TYPE_CHECKING:  # results imports this module; the cell type is only named here
    from .results import CellResult

PREFERENCES = ("smallest", "fastest")


@dataclass(frozen=True)
class Floors:
    """Quality a setting must reach; None means no floor on that measure. SSIM and agreement
    are means over the images (agreement is a fraction, 0-1), PSNR the mean in dB."""

    min_ssim: float | None = None
    min_psnr: float | None = None
    min_agreement: float | None = None

    def __post_init__(self) -> None:
        for name, low, high in (
            ("min_ssim", -1.0, 1.0),
            ("min_psnr", 0.0, math.inf),
            ("min_agreement", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not low <= value <= high
            ):
                raise InvalidInputError(
                    f"{name} must be a number in [{low}, {high}], got {value!r}"
                )

    def failures(self, cell: CellResult) -> list[str]:
        """Why ``cell`` misses the floors (empty when it meets them all)."""
        out = []
        if cell.violation:
            out.append(cell.violation)
        if self.min_ssim is not None and (cell.ssim_mean is None or cell.ssim_mean < self.min_ssim):
            out.append(f"SSIM {cell.ssim_mean} < {self.min_ssim}")
        if self.min_psnr is not None and (cell.psnr_mean is None or cell.psnr_mean < self.min_psnr):
            out.append(f"PSNR {cell.psnr_mean:.2f} < {self.min_psnr}")
        if self.min_agreement is not None and (
            cell.agreement is None or cell.agreement < self.min_agreement
        ):
            out.append(f"agreement {cell.agreement} < {self.min_agreement}")
        return out

    def describe(self) -> str:
        parts = [
            f"SSIM >= {self.min_ssim}" if self.min_ssim is not None else "",
            f"PSNR >= {self.min_psnr} dB" if self.min_psnr is not None else "",
            f"agreement >= {self.min_agreement}" if self.min_agreement is not None else "",
        ]
        return ", ".join(p for p in parts if p) or "no quality floor"


@dataclass
class Recommendation:
    """``cell`` is the choice under ``prefer``; ``smallest`` and ``fastest`` are both answers."""

    floors: Floors
    prefer: str
    cell: CellResult | None
    smallest: CellResult | None
    fastest: CellResult | None
    meeting: int  # settings that meet the floors
    measured: int
    #: Why fidelity was measured against already-lossy images (None: against originals).
    lossy_origin: str | None = None
    #: The store the images came from: the repack command converts it.
    store_path: str | None = None

    @property
    def caveat(self) -> str | None:
        if self.lossy_origin is None:
            return None
        return (
            f"Caution: {self.lossy_origin}, so PSNR and SSIM compare each setting with "
            "already-compressed images, not the originals: re-encoding a lossy image "
            "adds generation loss, and settings near the stored one look better than "
            "they would on originals."
        )

    def repack_command(self) -> str | None:
        """The ``h5store repack`` command that converts the store to the chosen setting."""
        if self.cell is None:
            return None
        return repack_command(self.cell, self.store_path)

    @property
    def message(self) -> str:
        head = f"{self.meeting} of {self.measured} settings meet {self.floors.describe()}"
        caveat = "" if self.caveat is None else f"\n{self.caveat}"
        if self.cell is None:
            return f"No setting meets {self.floors.describe()}: lower the floors. ({head}){caveat}"
        lines = [
            f"Recommended ({self.prefer} meeting {self.floors.describe()}): "
            f"{describe_cell(self.cell)}"
        ]
        other = self.fastest if self.prefer == "smallest" else self.smallest
        if other is not None and other is not self.cell:
            lines.append(
                f"  {'fastest' if self.prefer == 'smallest' else 'smallest'} "
                f"instead: {describe_cell(other)}"
            )
        lines.append(f"  ({head})")
        if self.caveat:
            lines.append(self.caveat)
        lines.append(f"Apply it: {self.repack_command()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        def name(cell):
            return (
                None
                if cell is None
                else {"codec": cell.codec, "setting": cell.setting, "config": cell.config}
            )

        return {
            "floors": self.floors.describe(),
            "prefer": self.prefer,
            "choice": name(self.cell),
            "smallest": name(self.smallest),
            "fastest": name(self.fastest),
            "meeting": self.meeting,
            "measured": self.measured,
            "message": self.message,
            "lossy_input": self.lossy_origin,
            "repack_command": self.repack_command(),
        }


def repack_command(cell: CellResult, store_path: str | None = None) -> str:
    """``h5store repack SRC DST --codec ... --quality ... [--option k=v ...]``: the options
    that differ from the codec's defaults, so the command stays short and exact."""
    import json
    import os
    import shlex

    import h5store

    defaults = h5store.get_codec(cell.codec).get_config()
    src = store_path or "YOUR_STORE.h5"
    stem = os.path.splitext(src)[0]
    parts = ["h5store", "repack", src, f"{stem}-{cell.codec}.h5", "--codec", cell.codec]
    config = {k: v for k, v in cell.config.items() if k != "id"}
    if "quality" in config:
        parts += ["--quality", str(config.pop("quality"))]
    for key, value in config.items():
        if defaults.get(key) != value:
            parts += ["--option", f"{key}={json.dumps(value)}"]
    return shlex.join(parts)


def describe_cell(cell: CellResult) -> str:
    ssim = (
        "exact"
        if cell.max_abs_error == 0
        else f"SSIM {cell.ssim_mean:.4f}, PSNR {cell.psnr_mean:.1f} dB"
    )
    speed = "" if cell.decode_mpx_s is None else f", decodes {cell.decode_mpx_s:.0f} MP/s"
    return (
        f"{cell.name} -- {cell.bytes_per_image / 1000:.1f} kB/image "
        f"({cell.bits_per_pixel:.2f} bpp, {cell.ratio:.1f}:1), {ssim}{speed}"
    )


def _decode_speed(cell: CellResult) -> float:
    return cell.decode_mpx_s or 0.0


def check_prefer(prefer: str) -> None:
    if prefer not in PREFERENCES:
        raise InvalidInputError(f"prefer must be one of {PREFERENCES}, got {prefer!r}")


def recommend(
    cells: Sequence[CellResult], floors: Floors, prefer: str = "smallest"
) -> Recommendation:
    """Among the cells meeting ``floors``: the smallest (ties: faster decode) and the fastest to
    decode on one thread (ties: smaller); ``prefer`` says which is the answer."""
    check_prefer(prefer)
    ok = [c for c in cells if not floors.failures(c)]
    smallest = min(ok, key=lambda c: (c.bytes_per_image, -_decode_speed(c)), default=None)
    fastest = min(ok, key=lambda c: (-_decode_speed(c), c.bytes_per_image), default=None)
    return Recommendation(
        floors=floors,
        prefer=prefer,
        cell=smallest if prefer == "smallest" else fastest,
        smallest=smallest,
        fastest=fastest,
        meeting=len(ok),
        measured=len(cells),
    )


def size_at_ssim(cells: Sequence[CellResult], codec: str, ssim: float) -> float | None:
    """Bytes per image ``codec``'s lossy settings would take at mean SSIM ``ssim``: log size
    interpolated linearly between its two settings around it; None outside its measured range
    (no extrapolation) or if it has fewer than two lossy settings."""
    points = sorted(
        (c.ssim_mean, math.log(c.bytes_per_image))
        for c in cells
        if c.codec == codec
        and not c.lossless
        and not c.violation
        and c.ssim_mean is not None
        and c.max_abs_error
    )
    if len(points) < 2 or not points[0][0] <= ssim <= points[-1][0]:
        return None
    return math.exp(float(np.interp(ssim, [p[0] for p in points], [p[1] for p in points])))


def pareto_front(cells: Sequence[CellResult]) -> list[CellResult]:
    """Cells no other cell beats on both bytes per image and mean SSIM, by increasing size.
    Cells that broke a promise (``violation``) or have no SSIM take no part."""
    usable = sorted(
        (c for c in cells if c.ssim_mean is not None and not c.violation),
        key=lambda c: (c.bytes_per_image, -c.ssim_mean),
    )
    front: list[CellResult] = []
    for cell in usable:
        if not front or cell.ssim_mean > front[-1].ssim_mean:
            front.append(cell)
    return front
