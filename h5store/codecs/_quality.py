"""One quality scale for every lossy codec.

``quality`` (1-100) means the same for every codec: the visual quality, measured as mean PSNR
on photographs, that h5store's default JPEG codec (libjpeg-turbo, 4:2:0) reaches at that
quality. Each lossy codec maps quality onto its own knob (WebP and AVIF quality, JPEG XL
distance, JPEG-LS NEAR) through a table
measured at the anchor qualities below and interpolated between them.

The tables come from ``python -m h5store.codecs._calibrate``: it encodes
``h5store.sample.sample_set(64, 224)`` with the JPEG codec at each anchor quality, sweeps each
codec's knob over its range, and picks the knob value whose mean PSNR equals JPEG's. PSNR rather
than SSIM, because SSIM saturates near 1 at high quality where the tables need resolution; the
script prints SSIM too, as a check that the codecs agree on it as well. A quality whose JPEG PSNR
a codec cannot reach maps to the end of that codec's knob range.
"""

from __future__ import annotations

import numpy as np

#: Qualities at which the codec tables are measured.
ANCHOR_QUALITIES = (1, 10, 20, 30, 40, 50, 60, 70, 80, 85, 90, 95, 100)

#: Mean PSNR (dB) of the default JPEG codec at each anchor quality on sample_set(64, 224).
ANCHOR_PSNR = (
    21.92,
    27.64,
    30.14,
    31.46,
    32.30,
    32.97,
    33.57,
    34.38,
    35.50,
    36.32,
    37.47,
    39.28,
    42.17,
)


def knob_for_quality(quality: int, knobs: tuple[float, ...], scale: str = "linear") -> float:
    """The codec knob for ``quality``, interpolated in the codec's table ``knobs`` (one value per
    anchor quality). ``scale`` "log" interpolates the logarithm (step sizes, distances);
    "int" rounds to the nearest integer (JPEG-LS NEAR)."""
    values = np.asarray(knobs, dtype=np.float64)
    if scale == "log":
        return float(np.exp(np.interp(quality, ANCHOR_QUALITIES, np.log(values))))
    knob = float(np.interp(quality, ANCHOR_QUALITIES, values))
    return float(round(knob)) if scale == "int" else knob
