"""Measure the quality tables of the lossy codecs: ``python -m h5store.codecs._calibrate``.

For every anchor quality (``_quality.ANCHOR_QUALITIES``) it measures the mean PSNR of the
default JPEG codec on ``sample_set(n, size)``; for every other lossy codec it sweeps the
codec's knob over ``knob_range`` (at the codec's default effort), and inverts the measured
PSNR curve at JPEG's PSNR of each anchor. It prints ``ANCHOR_PSNR`` and each codec's
``quality_knobs``, to paste into ``_quality.py`` and the codec modules, then checks the result:
bytes, PSNR and SSIM of every codec at every anchor quality through the new tables.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

import numpy as np

from ..sample import sample_set
from ._image import ImageCodec
from ._quality import ANCHOR_QUALITIES
from .base import Codec
from .registry import _REGISTRY, get_codec


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 100.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _decode_like(codec: Codec, payload: bytes, image: np.ndarray) -> np.ndarray:
    return codec.decode(payload, image.shape, image.dtype)


def _mean_psnr(
    images: np.ndarray,
    encode: Callable[[np.ndarray], bytes],
    decode: Callable[[bytes, np.ndarray], np.ndarray],
) -> float:
    """Mean PSNR of one setting over ``images``; ``decode(payload, image)``."""
    return float(np.mean([psnr(image, decode(encode(image), image)) for image in images]))


def _sweep(codec: ImageCodec, steps: int) -> np.ndarray:
    low, high = codec.knob_range
    if codec.knob_scale == "log":
        return np.geomspace(low, high, steps)
    knobs = np.linspace(low, high, steps)
    if codec.knob_scale == "int":
        knobs = np.unique(np.round(knobs))
        return knobs if low < high else knobs[::-1]  # keep the sweep's direction
    return knobs


def calibrate(
    codec: ImageCodec, images: np.ndarray, targets: list[float], steps: int
) -> tuple[float, ...]:
    """Knob values whose mean PSNR equals each target (clamped to the knob's range)."""
    knobs = _sweep(codec, steps)
    curve = np.array(
        [
            _mean_psnr(
                images,
                functools.partial(codec._encode_lossy, knob=k),
                lambda p, im: codec._decode(p, None),
            )
            for k in knobs
        ]
    )
    curve = np.maximum.accumulate(curve)  # PSNR rises along the sweep; flatten noise
    out = []
    for target in targets:
        position = np.interp(target, curve, np.arange(len(knobs)))
        low = int(np.floor(position))
        high = min(low + 1, len(knobs) - 1)
        frac = position - low
        if codec.knob_scale == "log":
            knob = float(np.exp((1 - frac) * np.log(knobs[low]) + frac * np.log(knobs[high])))
        else:
            knob = float((1 - frac) * knobs[low] + frac * knobs[high])
        out.append(round(knob) if codec.knob_scale == "int" else float(f"{knob:.4g}"))
    return tuple(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=64, help="number of sample images (default 64)")
    parser.add_argument("--size", type=int, default=224, help="image side in px (default 224)")
    parser.add_argument("--steps", type=int, default=24, help="knob values swept per codec")
    parser.add_argument(
        "--codecs", nargs="*", help="codecs to calibrate (default: every lossy one)"
    )
    parser.add_argument("--check", action="store_true", help="only check the tables in the modules")
    args = parser.parse_args(argv)
    images = sample_set(args.n, args.size).images
    anchors = []
    for q in ANCHOR_QUALITIES:
        jpeg = get_codec("jpeg", quality=q)
        anchors.append(_mean_psnr(images, jpeg.encode, functools.partial(_decode_like, jpeg)))
    print("ANCHOR_PSNR = (" + ", ".join(f"{p:.2f}" for p in anchors) + ")")
    names = args.codecs or [
        n for n, c in sorted(_REGISTRY.items()) if issubclass(c, ImageCodec) and c.takes_quality
    ]
    for name in [] if args.check else names:
        codec_class = _REGISTRY[name]
        if not (issubclass(codec_class, ImageCodec) and codec_class.takes_quality):
            parser.error(f"codec {name!r} has no lossy mode to calibrate")
        codec = codec_class(lossless=False)
        knobs = calibrate(codec, images, anchors, args.steps)
        print(f"{name}: quality_knobs = {knobs}")
    if not args.check:
        return
    print("Quality: bytes/image, PSNR dB, SSIM, through the tables in the modules:")
    from skimage.metrics import structural_similarity

    for name in ["jpeg", *names]:
        row = []
        for q in ANCHOR_QUALITIES:
            table_codec = get_codec(
                name, quality=q, **({} if name == "jpeg" else {"lossless": False})
            )
            sizes, values, ssims = [], [], []
            for image in images:
                payload = table_codec.encode(image)
                back = table_codec.decode(payload, image.shape, image.dtype)
                sizes.append(len(payload))
                values.append(psnr(image, back))
                ssims.append(structural_similarity(image, back, channel_axis=2))
            row.append(
                f"q{q}: {np.mean(sizes):.0f} B {np.mean(values):.2f} dB {np.mean(ssims):.3f}"
            )
        print(f"{name:8s} " + " | ".join(row))


if __name__ == "__main__":
    main()
