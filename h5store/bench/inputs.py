"""Where the benchmark's images come from, and the sample of them it measures.

Four sources, one result (:class:`BenchInput`): the built-in sample set (crops of the photos
that ship with scikit-image), an h5store file, a torchvision ImageFolder directory (one
subfolder per class), or arrays the caller already holds. Whatever the source, ``n`` images are
drawn at random with ``seed`` so that every codec setting sees exactly the same pixels.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import h5store
from h5store import InvalidInputError
from h5store._remote import is_url

#: File suffixes torchvision's ImageFolder accepts (``torchvision.datasets.folder``).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: Suffixes of files that are always lossy (JPEG); WebP may be either and is not flagged.
LOSSY_SUFFIXES = (".jpg", ".jpeg")
#: Side of the built-in sample's crops unless the caller asks for another.
DEFAULT_SAMPLE_SIZE = 224


@dataclass
class BenchInput:
    """The images every codec setting is measured on, with their classes (None if unknown)."""

    images: list[np.ndarray]
    labels: list[str] | None
    description: str
    #: Set when the images were already compressed lossily (JPEG files, a JPEG store): then
    #: fidelity is measured against decoded lossy images, not the originals, and says so.
    lossy_origin: str | None = None
    #: The h5store file the images came from (the recommendation's repack command uses it).
    store_path: str | None = None
    #: The codec the images are held in now (``get_config()`` of the store's codec, or the
    #: files' format at h5store's defaults for it), and which of them: the decode-speed floor
    #: is relative to it. None for arrays and the sample set, which have no codec of their own.
    own_codec: dict[str, Any] | None = None
    own_codec_origin: str | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def pixels(self) -> int:
        """Pixels (not samples) over all images: what megapixels per second count."""
        return sum(image.shape[0] * image.shape[1] for image in self.images)

    @property
    def raw_bytes(self) -> int:
        return sum(image.nbytes for image in self.images)

    def kinds(self) -> set[tuple[int, int, int, str]]:
        """Distinct (height, width, channels, dtype) of the images: what a codec must hold."""
        return {(im.shape[0], im.shape[1], channels_of(im), im.dtype.name) for im in self.images}


def as_batch(images: Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """One (N, H, W[, C]) array when all images share a shape and dtype, else a list: what a
    ``predict`` function is given."""
    kinds = {(im.shape, im.dtype) for im in images}
    return np.stack(images) if len(kinds) == 1 else list(images)


def check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")


def channels_of(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else image.shape[2]


def load_input(
    source: Any = None,
    *,
    n: int = 500,
    size: int | None = None,
    seed: int = 0,
    labels: Sequence[Any] | None = None,
) -> BenchInput:
    """``n`` images from ``source``: None (the built-in sample set), a path to an h5store file
    or an ImageFolder directory, or an array (N, H, W[, C]) / a list of images with optional
    ``labels``. ``size`` makes the sample set's crops that many px a side (default 224) and
    centre-crops and resizes other sources' images to it (default: kept as they are)."""
    check_count("n", n)
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8
    ):
        raise InvalidInputError(f"size must be an integer >= 8 px, got {size!r}")
    if source is None:
        return _sample_input(int(n), size or DEFAULT_SAMPLE_SIZE, seed)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            found = _folder_input(path, int(n), seed)
        elif os.path.isfile(path) or is_url(path):  # a store, here or by URL
            found = _store_input(path, int(n), seed)
        else:
            raise InvalidInputError(f"no such file or directory: {path!r}")
    else:
        found = _array_input(source, labels, int(n), seed)
    return _resized(found, size) if size else found


def _sample_input(n: int, size: int, seed: int) -> BenchInput:
    from h5store.sample import sample_set

    sample = sample_set(n, size, seed=seed)
    return BenchInput(
        images=list(sample.images),
        labels=list(sample.true_labels),
        description=f"{n} crops of {size}x{size} px from the {sample.source} (seed {seed})",
    )


def _draw(count: int, n: int, seed: int) -> np.ndarray:
    """Positions of ``min(n, count)`` items drawn without replacement, in their original order."""
    if count == 0:
        raise InvalidInputError("the input holds no images")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=min(n, count), replace=False))


def _store_input(path: str, n: int, seed: int) -> BenchInput:
    with h5store.open(path) as store:
        ids = store.ids()
        chosen = ids[_draw(len(ids), n, seed)].tolist()
        images = [checked_image(im, f"image {i}") for i, im in zip(chosen, store.get_batch(chosen))]
        records = [store.record(i) for i in chosen]
        configs = Counter(
            json.dumps(store.codec_of(r.label).get_config(), sort_keys=True) for r in records
        )
        lossy = {
            r.label: store.codec_of(r.label)
            for r in records
            if not store.codec_of(r.label).lossless
        }
    labels = [r.label for r in records]
    origin = None
    if lossy:
        settings = sorted(
            {
                " ".join(
                    [c.codec_id] + [f"{k}={v}" for k, v in c.get_config().items() if k == "quality"]
                )
                for c in lossy.values()
            }
        )
        count = sum(r.label in lossy for r in records)
        origin = f"{count} of the {len(records)} images are stored as {', '.join(settings)}"
    return BenchInput(
        images,
        labels,
        f"{len(images)} of {len(ids)} images of {path}",
        lossy_origin=origin,
        store_path=path,
        **_own_codec(configs, "stored in the file"),
    )


def _folder_input(path: str, n: int, seed: int) -> BenchInput:
    import imagecodecs

    files = image_folder_files(path)
    picked = [files[k] for k in _draw(len(files), n, seed)]
    images = []
    for file, _ in picked:
        try:
            image = imagecodecs.imread(file)
        except Exception as exc:  # imagecodecs raises per-format error classes
            raise InvalidInputError(f"cannot read image {file!r}: {exc}") from None
        images.append(checked_image(image, file))
    classes = len({label for _, label in files})
    jpegs = sum(file.lower().endswith(LOSSY_SUFFIXES) for file, _ in picked)
    origin = f"{jpegs} of the {len(picked)} images are JPEG files" if jpegs else None
    formats = Counter(_file_codec(file) for file, _ in picked)
    formats.pop(None, None)
    return BenchInput(
        images,
        [label for _, label in picked],
        f"{len(images)} of {len(files)} images in {classes} classes of {path}",
        lossy_origin=origin,
        **_own_codec(formats, "the files' format, at h5store's default settings for it"),
    )


def _file_codec(file: str) -> str | None:
    """Config (JSON) of the registered codec whose stream a file is, at its default settings."""
    from h5store.codecs import codec_of_file

    codec_id = codec_of_file(file)
    if codec_id is None:
        return None
    return json.dumps(h5store.get_codec(codec_id).get_config(), sort_keys=True)


def _own_codec(configs: Counter, origin: str) -> dict[str, Any]:
    """BenchInput's own_codec fields: the codec most of the drawn images are held in."""
    if not configs:
        return {}
    config, count = configs.most_common(1)[0]
    total = sum(configs.values())
    share = "" if count == total else f" ({count} of {total} images)"
    return {"own_codec": json.loads(config), "own_codec_origin": f"{origin}{share}"}


def image_folder_files(path: str) -> list[tuple[str, str]]:
    """(file, class) pairs of an ImageFolder tree: each subfolder is a class, searched
    recursively, sorted as torchvision sorts them."""
    classes = sorted(entry.name for entry in os.scandir(path) if entry.is_dir())
    files = []
    for label in classes:
        for root, _, names in sorted(os.walk(os.path.join(path, label), followlinks=True)):
            files += [
                (os.path.join(root, name), label)
                for name in sorted(names)
                if name.lower().endswith(IMAGE_SUFFIXES)
            ]
    if not files:
        raise InvalidInputError(
            f"{path!r} is not an ImageFolder directory: no class subfolders with image files "
            f"({', '.join(IMAGE_SUFFIXES)})"
        )
    return files


def _array_input(source: Any, labels: Sequence[Any] | None, n: int, seed: int) -> BenchInput:
    if isinstance(source, np.ndarray) and source.ndim in (3, 4):
        items = list(source)
    elif isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        items = list(source)
    else:
        raise InvalidInputError(
            "source must be None (the sample set), a path, an (N, H, W[, C]) array or a list of "
            f"images, got {type(source).__name__}"
        )
    if labels is not None and len(labels) != len(items):
        raise InvalidInputError(f"{len(labels)} labels for {len(items)} images")
    chosen = _draw(len(items), n, seed)
    images = [checked_image(items[k], f"image {k}") for k in chosen]
    picked = None if labels is None else [str(labels[k]) for k in chosen]
    return BenchInput(images, picked, f"{len(images)} of {len(items)} images given")


def checked_image(image: Any, where: str) -> np.ndarray:
    """A C-contiguous (H, W) or (H, W, 3|4) unsigned integer image; (H, W, 1) becomes (H, W)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InvalidInputError(f"{where}: expected (H, W) or (H, W, 3|4), got shape {image.shape}")
    if image.size == 0:
        raise InvalidInputError(f"{where} is empty")
    if image.dtype.kind != "u":
        raise InvalidInputError(f"{where}: expected an unsigned integer image, got {image.dtype}")
    return np.ascontiguousarray(image)


def _resized(found: BenchInput, size: int) -> BenchInput:
    """Centre square crop resized to ``size`` px with anti-aliasing, as a CNN's input."""
    from skimage.transform import resize

    images = []
    for image in found.images:
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = image[top : top + side, left : left + side]
        out = resize(crop, (size, size), preserve_range=True, anti_aliasing=side > size)
        images.append(np.ascontiguousarray(np.rint(out).astype(image.dtype)))
    # Resized images are no longer the input's stored ones, but the codec they are held in
    # (the store's, the files') is still what reads would compare against.
    return BenchInput(
        images,
        found.labels,
        f"{found.description}, resized to {size}x{size} px",
        own_codec=found.own_codec,
        own_codec_origin=found.own_codec_origin,
    )
