"""What a benchmark run produces: one :class:`CellResult` per codec setting measured, the
settings skipped and why, and the run as a whole (:class:`BenchResult`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import report
from .recommend import MIN_DECODE_SPEED, Floors, Recommendation, decode_floor, recommend


@dataclass
class CellResult:
    """One codec setting measured on every image of the input.

    Throughputs are megapixels per second (median over blocks), with one thread and two.
    ``agreement``/``flips`` compare the classifier's predictions on decoded images with its
    predictions on the originals (None without a classifier). ``violation`` says what broke a
    promise: a lossless codec that changed pixels, or a decoder returning another shape."""

    codec: str
    setting: str
    config: dict[str, Any]
    lossless: bool
    images: int
    bytes_per_image: float
    bits_per_pixel: float
    ratio: float
    encode_mpx_s: float | None
    encode_mpx_s_2t: float | None
    decode_mpx_s: float | None
    decode_mpx_s_2t: float | None
    psnr_mean: float | None  # None: not measured (the decoder broke the image's shape)
    psnr_min: float | None
    ssim_mean: float | None
    ssim_min: float | None
    ssim_images: int  # images the SSIM figures average over (the first ones of the input)
    max_abs_error: int | None
    exact_images: int | None  # images decoded to exactly the original pixels
    agreement: float | None = None
    flips: int | None = None
    violation: str | None = None
    seconds: float = 0.0  # wall time the benchmark spent on this setting, metrics included

    @property
    def name(self) -> str:
        return f"{self.codec} {self.setting}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data; infinite PSNR (exact images) becomes None, which JSON can hold."""
        return {
            k: (None if isinstance(v, float) and math.isinf(v) else v)
            for k, v in asdict(self).items()
        }


@dataclass
class Skipped:
    """A codec setting that was not measured: the codec cannot hold these images, or failed."""

    codec: str
    setting: str
    reason: str


@dataclass
class ClassifierInfo:
    """Whose predictions were compared, and how good the default classifier was."""

    kind: str  # "default", "user" or "none"
    accuracy: float | None = None  # default classifier, on held-out originals
    chance: float | None = None
    train_size: int | None = None
    test_size: int | None = None
    note: str = ""


@dataclass
class BenchResult:
    """What :func:`h5store.bench.run` measured, and its recommendation.

    Parameters
    ----------
    cells
        One result per codec setting measured.
    skipped
        The settings not measured, each with the reason.
    classifier
        The classifier that judged agreement (yours, or the default one and its accuracy).
    meta
        The run: input, image count and size, repeats, timing method, the input's own codec.
    recommendation
        The choice under the run's floors.
    files
        The files :meth:`save` wrote, by kind.
    """

    cells: list[CellResult]
    skipped: list[Skipped]
    classifier: ClassifierInfo
    meta: dict[str, Any]
    recommendation: Recommendation | None = None
    files: dict[str, str] = field(default_factory=dict)

    def cell(self, codec: str, setting: str | None = None) -> CellResult:
        """The result of one setting (the only one of ``codec`` when ``setting`` is None)."""
        found = [c for c in self.cells if c.codec == codec and setting in (None, c.setting)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} results for {codec} {setting or ''}".strip())
        return found[0]

    def recommend(
        self,
        *,
        min_ssim: float | None = None,
        min_psnr: float | None = None,
        min_agreement: float | None = None,
        min_decode_speed: float | None = MIN_DECODE_SPEED,
        prefer: str = "smallest",
    ) -> Recommendation:
        """Choose again under other floors, without measuring again.

        Parameters
        ----------
        min_ssim, min_psnr, min_agreement
            Quality floors (None for none).
        min_decode_speed
            The fraction of the input's own codec's decode speed the choice must reach; see
            :func:`~h5store.bench.recommend.decode_floor` (0 or None for no such floor).
        prefer
            ``"smallest"`` or ``"fastest"`` (to decode).

        Returns
        -------
        Recommendation
            The chosen setting, the fastest alternative, and the smaller settings the decode
            floor excluded.

        Raises
        ------
        InvalidInputError
            A floor out of range or an unknown ``prefer``.
        """
        floors = Floors(min_ssim, min_psnr, min_agreement)
        meta = self.meta
        speed = decode_floor(
            self.cells,
            floors,
            min_decode_speed,
            meta.get("own_codec"),
            meta.get("own_codec_origin"),
        )
        chosen = recommend(self.cells, replace(floors, decode=speed), prefer)
        chosen.lossy_origin = meta.get("lossy_input")
        chosen.store_path = meta.get("store_path")
        return chosen

    def to_dict(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "classifier": asdict(self.classifier),
            "recommendation": (
                None if self.recommendation is None else self.recommendation.to_dict()
            ),
            "cells": [c.to_dict() for c in self.cells],
            "skipped": [asdict(s) for s in self.skipped],
        }

    def table(self) -> str:
        """Every setting's measurements as a markdown table (for a terminal or a README)."""
        return report.markdown_table(self)

    def save(self, out: str) -> dict[str, str]:
        """Write bench.json, bench.csv, bench.md and bench.png into the folder ``out``.

        Parameters
        ----------
        out
            The folder (created if missing).

        Returns
        -------
        dict
            The paths written, by kind.
        """
        self.files = report.write_all(self, out)
        return self.files

    def __repr__(self) -> str:
        return (
            f"<BenchResult {len(self.cells)} settings measured, {len(self.skipped)} skipped, "
            f"{self.meta.get('input', '')}>"
        )
