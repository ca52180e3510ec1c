"""A built-in sample of classified images: crops of the photographs that ship with
scikit-image, with simulated model predictions and scores. Used by ``h5store demo``, the
benchmarks and the tests; nothing is downloaded.

Each photo is one true class; every image is a random crop (random scale, position and mirror)
resized to ``size`` with area averaging. A simulated classifier predicts the right class most of
the time, with softmax scores that are confident when right and often confident when wrong, so
queries such as "confident but wrong" have answers.

Without scikit-image installed, procedurally drawn images stand in for the photos.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._imaging import resize_area

#: class name -> file in skimage/data
PHOTOS = {
    "astronaut": "astronaut.png",
    "cat": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle": "motorcycle_left.png",
    "galaxy": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
    "tissue": "ihc.png",
}


@dataclass
class SampleSet:
    """Images, their true classes and a simulated classifier's output (:func:`sample_set`).

    Parameters
    ----------
    images
        (N, size, size, 3) uint8.
    true_labels
        The class each image was cut from.
    labels
        The simulated model's predictions (the argmax of ``scores``).
    scores
        (N, K) softmax over ``class_names``.
    class_names
        The K classes, one per photo.
    source
        ``"scikit-image photos"``, or ``"synthetic"`` without scikit-image.
    """

    images: np.ndarray
    true_labels: list[str]
    labels: list[str]
    scores: np.ndarray
    class_names: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.images)

    @property
    def top1(self) -> np.ndarray:
        return self.scores.max(axis=1)


def _skimage_data_dir() -> str | None:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "data")
    return folder if all(os.path.exists(os.path.join(folder, f)) for f in PHOTOS.values()) else None


@lru_cache(maxsize=1)
def photos() -> dict[str, np.ndarray]:
    """The source photographs as RGB uint8 arrays (synthetic stand-ins without scikit-image)."""
    import imagecodecs

    folder = _skimage_data_dir()
    if folder is None:
        return _synthetic_photos()
    out = {}
    for name, filename in PHOTOS.items():
        img = imagecodecs.imread(os.path.join(folder, filename))
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        out[name] = np.ascontiguousarray(img[..., :3])
    return out


def _synthetic_photos(side: int = 512) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    out = {}
    for k, name in enumerate(PHOTOS):
        freq = 3 + 4 * k
        base = np.stack(
            [
                np.sin(freq * x * (1 + c) + c + k) * np.cos(freq * y * (2 - c / 2) + k)
                for c in range(3)
            ],
            axis=-1,
        )
        noise = rng.normal(0, 0.15, base.shape)
        out[name] = np.clip((base + noise + 1) * 127.5, 0, 255).astype(np.uint8)
    return out


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.clip(np.rint(resize_area(image, height, width)), 0, 255).astype(np.uint8)


def sample_set(
    n: int = 256, size: int = 224, *, seed: int = 0, accuracy: float = 0.85
) -> SampleSet:
    """``n`` crops of ``size`` x ``size`` px, balanced over the classes, with predictions.

    Parameters
    ----------
    n
        Number of images.
    size
        Side of each (square) image in pixels.
    seed
        Seeds the crops and the simulated predictions (the same seed gives the same set).
    accuracy
        The share of images the simulated classifier predicts right.

    Returns
    -------
    SampleSet
        The images (N, size, size, 3) uint8, their true classes, the predicted classes and
        the (N, K) softmax scores.

    Raises
    ------
    ValueError
        ``n < 1`` or ``size < 8``.
    """
    if n < 1 or size < 8:
        raise ValueError("n must be >= 1 and size >= 8")
    rng = np.random.default_rng(seed)
    sources = photos()
    names = list(sources)
    k = len(names)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    truth = [names[i % k] for i in range(n)]
    for i, name in enumerate(truth):
        photo = sources[name]
        h, w = photo.shape[:2]
        side = int(rng.uniform(0.3, 0.9) * min(h, w))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        crop = photo[top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        images[i] = _resize(crop, size, size)
    true_ids = np.array([i % k for i in range(n)])
    wrong = rng.random(n) > accuracy
    predicted = np.where(wrong, (true_ids + rng.integers(1, k, n)) % k, true_ids)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), predicted] += rng.uniform(1.0, 6.0, n)
    scores = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores = (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)
    predicted = scores.argmax(axis=1)  # a model predicts its top-1 class
    return SampleSet(
        images=images,
        true_labels=truth,
        labels=[names[p] for p in predicted],
        scores=scores,
        class_names=names,
        source="scikit-image photos" if _skimage_data_dir() else "synthetic",
    )
