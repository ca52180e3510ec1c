"""Which setting to use: the smallest (or fastest to decode) one that meets the quality floors,
and the settings no other beats on both size and SSIM (the Pareto front)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from h5store import InvalidInputError

if TYPE_CHECKING:  # results imports this module; the cell type is only named here
    from .results import CellResult

PREFERENCES = ("smallest", "fastest")
#: Default floor on decode speed, as a fraction of the reference's (see :func:`decode_floor`):
#: "not slower to read than what you have now", less a margin for the 10-20 % by which repeated
#: measurements of one setting differ on a loaded machine, so that the reference codec's other
#: settings (or the reference itself, measured again) are not dropped by noise.
MIN_DECODE_SPEED = 0.9


@dataclass(frozen=True)
class DecodeFloor:
    """Decode speed (one thread, MP/s) a setting must reach: ``fraction`` of the reference
    setting's, measured in the same run. ``reference_mpx_s`` is None when the reference was not
    measured (then there is no floor, and :meth:`explain` says why)."""

    fraction: float
    reference: str  # the reference setting, e.g. "png level=6"
    why: str  # why it is the reference
    reference_mpx_s: float | None

    @property
    def mpx_s(self) -> float | None:
        return None if self.reference_mpx_s is None else self.fraction * self.reference_mpx_s

    def describe(self) -> str:
        return "no decode floor" if self.mpx_s is None else f"decode >= {self.mpx_s:.0f} MP/s"

    def explain(self) -> str:
        """Where the floor comes from, and how to change it."""
        if self.reference_mpx_s is None:
            return (
                f"No decode floor: the reference, {self.reference} ({self.why}), was not measured."
            )
        return (
            f"Decode floor: {self.fraction:g} x {self.reference_mpx_s:.0f} MP/s of "
            f"{self.reference} ({self.why}); --min-decode-speed (min_decode_speed=) changes "
            "the fraction, 0 removes the floor."
        )


@dataclass(frozen=True)
class Floors:
    """Quality a setting must reach; None means no floor on that measure. SSIM and agreement
    are means over the images (agreement is a fraction, 0-1), PSNR the mean in dB."""

    min_ssim: float | None = None
    min_psnr: float | None = None
    min_agreement: float | None = None
    decode: DecodeFloor | None = None

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
        out += self.speed_failures(cell)
        return out

    def speed_failures(self, cell: CellResult) -> list[str]:
        """Why ``cell`` decodes too slowly (empty when it is fast enough or there is no floor)."""
        floor = None if self.decode is None else self.decode.mpx_s
        if floor is None or (cell.decode_mpx_s is not None and cell.decode_mpx_s >= floor):
            return []
        return [f"decodes {_num(cell.decode_mpx_s)} MP/s < {floor:.0f} MP/s"]

    def quality_only(self) -> Floors:
        return replace(self, decode=None)

    def describe(self) -> str:
        parts = [
            f"SSIM >= {self.min_ssim}" if self.min_ssim is not None else "",
            f"PSNR >= {self.min_psnr} dB" if self.min_psnr is not None else "",
            f"agreement >= {self.min_agreement}" if self.min_agreement is not None else "",
        ]
        quality = ", ".join(p for p in parts if p) or "no quality floor"
        return quality if self.decode is None else f"{quality}, {self.decode.describe()}"


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
    #: The smallest setting that meets the quality floors but decodes below the speed floor,
    #: when it is smaller than ``cell``: what the floor costs in size.
    too_slow: CellResult | None = None

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
        head = f"{self.meeting} of {self.measured} settings meet them"
        speed = [] if self.floors.decode is None else [f"  {self.floors.decode.explain()}"]
        slow = []
        if self.too_slow is not None:
            slow = [
                f"  {'smaller but ' if self.cell else ''}below the decode floor: "
                f"{describe_cell(self.too_slow)}"
            ]
        caveat = [] if self.caveat is None else [self.caveat]
        if self.cell is None:
            lines = [f"No setting meets {self.floors.describe()}: lower the floors. ({head})"]
            return "\n".join(lines + speed + slow + caveat)
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
        lines += slow + speed + [f"  ({head})"] + caveat
        lines.append(f"Apply it: {self.repack_command()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        def name(cell: CellResult | None) -> dict[str, Any] | None:
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
            "too_slow": name(self.too_slow),
            "decode_floor_mpx_s": None if self.floors.decode is None else self.floors.decode.mpx_s,
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
    from h5store._remote import is_url

    defaults = h5store.get_codec(cell.codec).get_config()
    src = store_path or "YOUR_STORE.h5"
    # a store read by URL is repacked into a local file (a URL opens read-only)
    stem = os.path.splitext(os.path.basename(src) if is_url(src) else src)[0]
    parts = ["h5store", "repack", src, f"{stem}-{cell.codec}.h5", "--codec", cell.codec]
    config = {k: v for k, v in cell.config.items() if k != "id"}
    if "quality" in config:
        parts += ["--quality", str(config.pop("quality"))]
    for key, value in config.items():
        if defaults.get(key) != value:
            parts += ["--option", f"{key}={json.dumps(value)}"]
    return shlex.join(parts)


def describe_cell(cell: CellResult) -> str:
    """Size, fidelity and speed of a setting: what a choice between settings weighs."""
    ssim = (
        "exact"
        if cell.max_abs_error == 0
        else f"SSIM {cell.ssim_mean:.4f}, PSNR {cell.psnr_mean:.1f} dB"
    )
    return (
        f"{cell.name} -- {cell.bytes_per_image / 1000:.1f} kB/image "
        f"({cell.bits_per_pixel:.2f} bpp, {cell.ratio:.1f}:1), {ssim}, "
        f"decodes {_speed(cell, cell.decode_mpx_s)}, encodes {_speed(cell, cell.encode_mpx_s)} "
        "(one thread)"
    )


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def _speed(cell: CellResult, mpx_s: float | None) -> str:
    """``"167 MP/s = 3,330 img/s"``: images per second is what a training loop feels."""
    if mpx_s is None:
        return "? MP/s"
    pixels = 8 * cell.bytes_per_image / cell.bits_per_pixel if cell.bits_per_pixel else 0
    per_image = f" = {mpx_s * 1e6 / pixels:,.0f} img/s" if pixels else ""
    return f"{mpx_s:.0f} MP/s{per_image}"


def setting_name(params: Mapping[str, Any]) -> str:
    """``"quality=90 optimize=True"``: a codec's constructor keywords, as the table names them."""
    return " ".join(f"{k}={v}" for k, v in params.items()) or "default"


def default_codec() -> str:
    """The codec ``h5store.open`` stores images with unless told otherwise."""
    import inspect

    import h5store

    return inspect.signature(h5store.open).parameters["codec"].default


def check_decode_speed(fraction: float | None) -> None:
    if fraction is not None and (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0 <= fraction < math.inf
    ):
        raise InvalidInputError(
            "min_decode_speed must be a number >= 0 (a fraction of the reference codec's "
            f"decode speed; 0 for no floor), got {fraction!r}"
        )


def decode_floor(
    cells: Sequence[CellResult],
    floors: Floors,
    fraction: float | None = MIN_DECODE_SPEED,
    own_codec: Mapping[str, Any] | None = None,
    own_codec_origin: str | None = None,
) -> DecodeFloor | None:
    """The decode-speed floor: ``fraction`` of the reference setting's one-thread decode speed
    (None or 0: no floor).

    The reference is the input's own codec (``own_codec``, a ``get_config()``): reads from
    the converted store should not be slower than reads are now. An input with no codec of
    its own (arrays, the sample set) would be stored with h5store's default codec, JPEG, so
    the reference is that codec's smallest setting meeting the quality ``floors`` (its
    largest if none does): JPEG at the same quality, not at a lower one that decodes faster."""
    check_decode_speed(fraction)
    if not fraction:
        return None
    usable = [c for c in cells if not c.violation and c.decode_mpx_s is not None]
    if own_codec is not None:
        params = {k: v for k, v in own_codec.items() if k != "id"}
        found = [c for c in usable if c.config == dict(own_codec)]
        name = found[0].name if found else f"{own_codec.get('id')} {setting_name(params)}"
        why = f"the input's own codec, {own_codec_origin or 'as stored'}"
        return DecodeFloor(fraction, name, why, found[0].decode_mpx_s if found else None)
    codec = default_codec()
    candidates = [c for c in usable if c.codec == codec]
    meeting = [c for c in candidates if not floors.quality_only().failures(c)]
    if meeting:
        ref = min(meeting, key=lambda c: c.bytes_per_image)
        why = (
            "the input has no codec of its own: h5store's default codec, its smallest setting "
            "meeting the quality floors"
        )
    elif candidates:
        ref = max(candidates, key=lambda c: c.bytes_per_image)
        why = (
            "the input has no codec of its own: h5store's default codec, its largest setting, "
            "as none meets the quality floors"
        )
    else:
        return DecodeFloor(fraction, codec, "h5store's default codec", None)
    return DecodeFloor(fraction, ref.name, why, ref.decode_mpx_s)


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
    cell = smallest if prefer == "smallest" else fastest
    quality = floors.quality_only()
    slow = [c for c in cells if floors.speed_failures(c) and not quality.failures(c)]
    too_slow = min(slow, key=lambda c: c.bytes_per_image, default=None)
    if too_slow and cell and too_slow.bytes_per_image >= cell.bytes_per_image:
        too_slow = None
    return Recommendation(
        floors=floors,
        prefer=prefer,
        cell=cell,
        smallest=smallest,
        fastest=fastest,
        meeting=len(ok),
        measured=len(cells),
        too_slow=too_slow,
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
        ((c, c.ssim_mean) for c in cells if c.ssim_mean is not None and not c.violation),
        key=lambda pair: (pair[0].bytes_per_image, -pair[1]),
    )
    front: list[CellResult] = []
    best: float | None = None  # the last cell on the front's SSIM
    for cell, ssim in usable:
        if best is None or ssim > best:
            front.append(cell)
            best = ssim
    return front
