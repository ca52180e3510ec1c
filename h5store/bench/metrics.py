"""Fidelity of decoded images against the originals: PSNR and SSIM as scikit-image computes
them, and the largest absolute error (which must be 0 for a lossless codec)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: SSIM's default window side in scikit-image; smaller images get the largest odd side that fits.
SSIM_WINDOW = 7


@dataclass(frozen=True)
class Fidelity:
    """Per-set summary. PSNR means leave out images reproduced exactly (their PSNR is
    infinite); ``psnr_mean`` is infinite only when every image is exact."""

    psnr_mean: float
    psnr_min: float
    ssim_mean: float | None
    ssim_min: float | None
    ssim_images: int  # how many images the SSIM figures average over
    max_abs_error: int
    exact_images: int


def data_range(dtype: np.dtype) -> int:
    return int(np.iinfo(dtype).max - np.iinfo(dtype).min)


def image_fidelity(
    original: np.ndarray, decoded: np.ndarray, ssim: bool = True
) -> tuple[float, float | None, int]:
    """(PSNR dB, SSIM or None if not asked for, max absolute error) of one decoded image."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    # |a - b| in the images' own unsigned dtype: a fifth of the time of a widening subtraction.
    max_err = int((np.maximum(original, decoded) - np.minimum(original, decoded)).max())
    if max_err == 0:
        # Identical images: PSNR is infinite (skimage would divide by zero) and SSIM is 1 by
        # definition, so the costliest metric is skipped for every lossless cell.
        return math.inf, 1.0 if ssim else None, 0
    rng = data_range(original.dtype)
    psnr = float(peak_signal_noise_ratio(original, decoded, data_range=rng))
    side = min(original.shape[:2])
    win = min(SSIM_WINDOW, side if side % 2 else side - 1)
    value = None
    if ssim and win >= 3:
        value = float(
            structural_similarity(
                original,
                decoded,
                data_range=rng,
                win_size=win,
                channel_axis=-1 if original.ndim == 3 else None,
            )
        )
    return psnr, value, max_err


def set_fidelity(
    originals: Sequence[np.ndarray],
    decoded: Sequence[np.ndarray],
    map_fn: Callable = map,
    ssim_images: int | None = None,
) -> Fidelity:
    """Summarise :func:`image_fidelity` over a set; ``map_fn`` may spread it over threads
    (scikit-image's SSIM releases the GIL for much of its work). SSIM, which costs 20 times
    what PSNR does, is averaged over the first ``ssim_images`` images only (all if None)."""
    limit = len(originals) if ssim_images is None else ssim_images
    per_image = list(
        map_fn(lambda k: image_fidelity(originals[k], decoded[k], k < limit), range(len(originals)))
    )
    psnr = np.array([p for p, _, _ in per_image])
    ssim = [s for _, s, _ in per_image if s is not None]
    finite = psnr[np.isfinite(psnr)]
    return Fidelity(
        psnr_mean=float(finite.mean()) if finite.size else math.inf,
        psnr_min=float(psnr.min()),
        ssim_mean=float(np.mean(ssim)) if ssim else None,
        ssim_min=float(np.min(ssim)) if ssim else None,
        ssim_images=len(ssim),
        max_abs_error=max(e for _, _, e in per_image),
        exact_images=int((~np.isfinite(psnr)).sum()),
    )
