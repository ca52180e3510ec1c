"""The grid: every registered codec x each setting it declares (``bench_grid``), measured on the
same images. :func:`run` is the whole benchmark; :func:`measure_cell` is one setting."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import h5store
from h5store import Codec, CodecError, InvalidInputError
from h5store.codecs import codec_from_config

from .classifier import Predict, agreement, call_predict, train_default
from .inputs import BenchInput, as_batch, check_count, load_input
from .metrics import set_fidelity
from .recommend import (
    MIN_DECODE_SPEED,
    Floors,
    check_decode_speed,
    check_prefer,
    setting_name,
)
from .results import BenchResult, CellResult, ClassifierInfo, Skipped
from .timing import BlockTimer

Grid = Mapping[str, Sequence[Mapping[str, Any]]]


class CodecFailure(CodecError):
    """A codec's encode or decode raised on an image it had accepted (a bug in the codec): the
    benchmark records the setting as failed and goes on with the others."""


#: Images a ``quick`` run measures (unless ``n`` says otherwise): enough for sizes and speeds
#: within a few per cent of a 500-image run's, and a first look at fidelity.
QUICK_IMAGES = 32


def quick_settings(name: str) -> list[dict[str, Any]]:
    """A ``quick`` run's settings of a codec: the first lossless setting of its ``bench_grid``
    and its two lossy ones of highest quality (where floors like SSIM 0.98 fall; the lower
    qualities, which cost as much to judge, are left to the full grid)."""
    lossless, lossy = [], []
    for params in type(h5store.get_codec(name)).bench_grid:
        try:
            exact = h5store.get_codec(name, **params).lossless
        except CodecError:  # plan_grid reports it as skipped
            exact = True
        (lossless if exact else lossy).append(params)
    lossy.sort(key=lambda params: params.get("quality", 0))  # stable: grid order among equals
    return lossless[:1] + lossy[-2:]


def plan_grid(
    inp: BenchInput,
    codecs: Sequence[str] | None = None,
    grid: Grid | None = None,
    quick: bool = False,
) -> tuple[list[tuple[Codec, str]], list[Skipped]]:
    """The configured codecs to measure (with their setting names), and the settings skipped
    because the codec cannot hold these images. ``codecs`` restricts the registry; ``grid``
    replaces a codec's ``bench_grid``; ``quick`` thins the others (:func:`quick_settings`).
    The input's own codec setting, if it has one, is measured too: the decode floor's
    reference. Bad names or settings given here raise CodecError."""
    names = list(codecs) if codecs is not None else h5store.available_codecs()
    if grid is not None:
        names += [name for name in grid if name not in names]
    kinds = sorted(inp.kinds())
    planned, skipped = [], []
    for name in names:
        given = grid is not None and name in grid
        if given:
            settings = grid[name]
        elif quick:
            settings = quick_settings(name)
        else:
            settings = type(h5store.get_codec(name)).bench_grid
        for params in settings:
            setting = setting_name(params)
            try:
                codec = h5store.get_codec(name, **params)
            except CodecError as exc:
                if given:
                    raise
                skipped.append(Skipped(name, setting, f"its bench_grid setting is invalid: {exc}"))
                continue
            reason = _cannot_hold(codec, kinds)
            if reason:
                skipped.append(Skipped(name, setting, reason))
            else:
                planned.append((codec, setting))
    own = _own_setting(inp, kinds)
    if own is not None and all(c.get_config() != own[0].get_config() for c, _ in planned):
        planned.append(own)
    return planned, skipped


def _own_setting(inp: BenchInput, kinds: Sequence[tuple]) -> tuple[Codec, str] | None:
    """The input's own codec setting, configured, if this installation has it and it can hold
    the (possibly resized) images."""
    if inp.own_codec is None:
        return None
    try:
        codec = codec_from_config(dict(inp.own_codec))
    except CodecError:  # a codec of a plugin not installed here: no reference to compare with
        return None
    if _cannot_hold(codec, kinds):
        return None
    return codec, setting_name({k: v for k, v in inp.own_codec.items() if k != "id"})


def _cannot_hold(codec: Codec, kinds: Sequence[tuple[int, int, int, str]]) -> str | None:
    for height, width, channels, dtype in kinds:
        try:
            codec.check_image(height, width, channels, np.dtype(dtype))
        except CodecError as exc:
            return str(exc)
    return None


def measure_cell(
    codec: Codec,
    setting: str,
    inp: BenchInput,
    timer: BlockTimer,
    predict: Predict | None = None,
    reference: np.ndarray | None = None,
    ssim_images: int | None = None,
) -> CellResult:
    """Encode and decode every image once (timed), then judge the decoded images (SSIM on the
    first ``ssim_images`` only, all if None)."""
    started = time.perf_counter()
    images = inp.images
    pixels = [im.shape[0] * im.shape[1] for im in images]
    try:
        payloads, enc = timer.map(codec.encode, images, pixels)
        decoded, dec = timer.map(
            lambda k: np.asarray(codec.decode(payloads[k], images[k].shape, images[k].dtype)),
            range(len(images)),
            pixels,
        )
    except Exception as exc:  # whatever a codec's own code raises
        raise CodecFailure(f"{type(exc).__name__}: {exc}") from exc
    violation = _shape_violation(images, decoded)
    fid = None
    if violation is None:
        fid = set_fidelity(images, decoded, timer.parallel_map, ssim_images)
    if fid is not None and codec.lossless and fid.max_abs_error:
        violation = (
            f"declared lossless but changed pixels by up to {fid.max_abs_error} "
            f"({len(images) - fid.exact_images} of {len(images)} images differ)"
        )
    agree = flips = None
    if predict is not None and fid is not None and fid.max_abs_error == 0:
        agree, flips = 1.0, 0  # the very same pixels: asking the model again would be wasted
    elif predict is not None and violation is None:
        agree, flips = agreement(reference, call_predict(predict, as_batch(decoded), len(images)))
    total = sum(len(p) for p in payloads)
    return CellResult(
        codec=codec.codec_id,
        setting=setting,
        config=codec.get_config(),
        lossless=codec.lossless,
        images=len(images),
        bytes_per_image=total / len(images),
        bits_per_pixel=8 * total / sum(pixels),
        ratio=inp.raw_bytes / max(total, 1),
        encode_mpx_s=enc.one_thread,
        encode_mpx_s_2t=enc.two_threads,
        decode_mpx_s=dec.one_thread,
        decode_mpx_s_2t=dec.two_threads,
        psnr_mean=fid.psnr_mean if fid else None,
        psnr_min=fid.psnr_min if fid else None,
        ssim_mean=fid.ssim_mean if fid else None,
        ssim_min=fid.ssim_min if fid else None,
        ssim_images=fid.ssim_images if fid else 0,
        max_abs_error=fid.max_abs_error if fid else None,
        exact_images=fid.exact_images if fid else None,
        agreement=agree,
        flips=flips,
        violation=violation,
        seconds=time.perf_counter() - started,
    )


def _shape_violation(images: Sequence[np.ndarray], decoded: Sequence[np.ndarray]) -> str | None:
    for k, (a, b) in enumerate(zip(images, decoded)):
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"image {k} decoded as {b.shape} {b.dtype}, stored {a.shape} {a.dtype}"
    return None


def _judge(
    inp: BenchInput, predict: Predict | None, seed: int, need: bool
) -> tuple[Predict | None, ClassifierInfo]:
    """The predict function to compare with, and what to say about it. Without the user's, the
    default classifier is trained; an input it cannot learn from leaves no classifier, which
    is an error only when a floor on agreement needs one."""
    if predict is not None:
        if not callable(predict):
            raise InvalidInputError(f"predict must be callable, got {type(predict).__name__}")
        return predict, ClassifierInfo(kind="user")
    try:
        trained = train_default(inp.images, inp.labels, seed=seed)
    except InvalidInputError as exc:
        if need:
            raise InvalidInputError(f"min_agreement needs a classifier, but {exc}") from None
        return None, ClassifierInfo(kind="none", note=str(exc))
    return trained.predict, ClassifierInfo(
        kind="default",
        accuracy=trained.accuracy,
        chance=trained.chance,
        train_size=trained.train_size,
        test_size=trained.test_size,
    )


def run(
    source: Any = None,
    *,
    n: int | None = None,
    size: int | None = None,
    seed: int = 0,
    labels: Sequence[Any] | None = None,
    codecs: Sequence[str] | None = None,
    grid: Grid | None = None,
    predict: Predict | None = None,
    min_ssim: float | None = 0.98,
    min_psnr: float | None = None,
    min_agreement: float | None = None,
    min_decode_speed: float | None = MIN_DECODE_SPEED,
    prefer: str = "smallest",
    quick: bool = False,
    repeats: int = 3,
    ssim_images: int | None = 200,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> BenchResult:
    """Benchmark every codec setting on ``n`` images and recommend one.

    Settings a codec cannot hold are skipped with the reason.

    Parameters
    ----------
    source
        None for the built-in sample set, a path to an h5store file or an ImageFolder
        directory, or images (an (N, H, W[, C]) array or a list).
    n
        Images measured (default 500, or :data:`QUICK_IMAGES` with ``quick``).
    size
        Side the built-in sample's crops are cut to; see
        :func:`~h5store.bench.inputs.load_input`.
    seed
        Draws the images, the SSIM subset and the default classifier's split.
    labels
        Labels of images given as arrays (for the default classifier).
    codecs
        Only these codecs (default: every registered one).
    grid
        Maps a codec name to the settings (constructor keywords) to try instead of its
        ``bench_grid``.
    predict
        Your model: ``predict(images) -> labels``, given an (N, H, W[, C]) array, or a list
        when shapes differ. It must be deterministic: settings that reproduce every pixel
        are not re-predicted. Without it a small classifier is trained on the originals.
    min_ssim, min_psnr, min_agreement
        Quality floors of the recommendation (None for none).
    min_decode_speed
        The recommendation must decode at least this many times as fast as the input's own
        codec, or as JPEG at the same quality floors when the input has none (see
        :func:`~h5store.bench.recommend.decode_floor`); 0 or None for no such floor.
    prefer
        ``"smallest"`` or ``"fastest"`` (to decode), among the settings meeting the floors.
    quick
        A first look in under a minute: fewer images and, unless ``grid`` names a codec,
        each codec's settings thinned by :func:`quick_settings`.
    repeats
        Timed blocks per thread count for each setting (their median is reported).
    ssim_images
        SSIM, the costliest measure, is averaged over the first ``ssim_images`` images (a
        random subset, the same for every setting; None for all); everything else over all.
    out
        A folder for bench.json, .csv, .md and .png.
    progress
        Show a progress bar on stderr.

    Returns
    -------
    BenchResult
        Every setting's measurements, the skipped settings and the recommendation
        (``result.recommendation``); ``result.recommend(...)`` applies other floors without
        measuring again.

    Raises
    ------
    InvalidInputError
        A bad floor, ``prefer``, count or input, before anything is measured.
    CodecError
        An unknown codec in ``codecs`` or ``grid``.
    """
    started = time.perf_counter()
    Floors(min_ssim, min_psnr, min_agreement)  # bad floors fail before the measuring
    check_decode_speed(min_decode_speed)
    check_prefer(prefer)
    check_count("repeats", repeats)
    if ssim_images is not None:
        check_count("ssim_images", ssim_images)
    if n is None:
        n = QUICK_IMAGES if quick else 500
    inp = load_input(source, n=n, size=size, seed=seed, labels=labels)
    planned, skipped = plan_grid(inp, codecs, grid, quick=bool(quick))
    judge, classifier = _judge(inp, predict, seed, need=min_agreement is not None)
    reference = None if judge is None else call_predict(judge, as_batch(inp.images), len(inp))
    cells = []
    from tqdm import tqdm  # text on stderr: tqdm.auto would want ipywidgets in notebooks

    with BlockTimer(repeats) as timer:
        bar = tqdm(planned, desc="h5store bench", unit="setting", disable=not progress)
        for codec, setting in bar:
            bar.set_postfix_str(f"{codec.codec_id} {setting}")
            try:
                cells.append(
                    measure_cell(codec, setting, inp, timer, judge, reference, ssim_images)
                )
            except CodecFailure as exc:  # one broken codec must not end the run
                skipped.append(Skipped(codec.codec_id, setting, f"failed: {exc}"))
    meta = _meta(inp, seed, repeats, started)
    meta["ssim_images"] = min(len(inp), ssim_images or len(inp))
    meta["quick"] = bool(quick)
    result = BenchResult(cells, skipped, classifier, meta)
    result.recommendation = result.recommend(
        min_ssim=min_ssim,
        min_psnr=min_psnr,
        min_agreement=min_agreement,
        min_decode_speed=min_decode_speed,
        prefer=prefer,
    )
    if out is not None:
        result.save(out)
    return result


def _meta(inp: BenchInput, seed: int, repeats: int, started: float) -> dict[str, Any]:
    import imagecodecs

    kinds = sorted(inp.kinds())
    return {
        "input": inp.description,
        "lossy_input": inp.lossy_origin,
        "store_path": inp.store_path,
        "own_codec": inp.own_codec,
        "own_codec_origin": inp.own_codec_origin,
        "images": len(inp),
        "image_kinds": [f"{h}x{w}x{c} {d}" for h, w, c, d in kinds[:10]]
        + (["..."] if len(kinds) > 10 else []),
        "megapixels": inp.pixels / 1e6,
        "raw_bytes": inp.raw_bytes,
        "seed": seed,
        "repeats": repeats,
        # Speeds are CPU time of the measuring thread (BlockTimer): comparable across loads.
        "clock": "time.thread_time",
        "seconds": time.perf_counter() - started,
        "cpus": os.cpu_count(),
        # Other processes' load is why speeds on a shared machine vary from run to run.
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "machine": f"{platform.machine()} {platform.system()} {platform.release()}",
        "versions": {
            "h5store": h5store.__version__,
            "imagecodecs": imagecodecs.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
