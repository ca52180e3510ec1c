"""The default stand-in for the user's model: a small scikit-learn classifier trained in-process
on the original images, and how its predictions on decoded images are compared.

The features mix what a CNN looks at coarsely (an 8x8 thumbnail, colour histograms) with what
compression disturbs first (pixel-to-pixel gradients), so that a codec that smooths or blocks the
image can flip a prediction. It is no CNN: pass your own ``predict`` for your model's verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from h5store import InvalidInputError

THUMB = 8  # thumbnail side, in blocks
HIST_BINS = 16
# |gradient| thresholds, in 8-bit steps: flat areas (<= 1) grow when a codec smooths, strong
# edges (>= 32) shift when it blocks or rings.
GRADIENT_STEPS = (1, 4, 16, 32)

Predict = Callable[[Any], Sequence[Any] | np.ndarray]


@dataclass
class TrainedClassifier:
    predict: Predict
    accuracy: float  # on held-out originals
    chance: float  # accuracy of always answering the commonest class of the held-out part
    train_size: int
    test_size: int
    classes: list[str]


def features(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """(N, F) float32 features of an (N, H, W[, C]) array or a list of images (those of one
    shape are processed as one batch)."""
    if isinstance(images, np.ndarray):
        return _batch_features(images)
    out = np.empty((len(images), _feature_count()), dtype=np.float32)
    groups: dict[tuple, list[int]] = {}
    for k, image in enumerate(images):
        groups.setdefault((image.shape, image.dtype.str), []).append(k)
    for members in groups.values():
        out[members] = _batch_features(np.stack([images[k] for k in members]))
    return out


def _feature_count() -> int:
    return THUMB * THUMB * 3 + HIST_BINS * 3 + 2 * len(GRADIENT_STEPS) + 2


def _batch_features(batch: np.ndarray) -> np.ndarray:
    """Features of (N, H, W[, C]) integer images, scaled as if they were 8-bit RGB.

    Written as whole-batch sums over contiguous axes: numpy's means over small or strided axes
    cost seconds on 500 images, and every benchmark cell pays for this again."""
    if batch.ndim == 3:
        batch = batch[..., None]
    rgb = np.repeat(batch, 3, axis=3) if batch.shape[3] == 1 else batch[..., :3]
    scale = 255.0 / float(np.iinfo(batch.dtype).max)
    n, h, w, _ = rgb.shape
    gh, gw = min(THUMB, h), min(THUMB, w)
    bh, bw = h // gh, w // gw
    rows = rgb[:, : gh * bh, : gw * bw].reshape(n, gh, bh, gw * bw * 3)
    rows = rows.sum(axis=2, dtype=np.float32)
    blocks = rows.reshape(n, gh, gw, bw * 3)
    thumb = np.zeros((n, THUMB, THUMB, 3), dtype=np.float32)
    for c in range(3):
        thumb[:, :gh, :gw, c] = blocks[..., c::3].sum(axis=3) * (scale / (255.0 * bh * bw))
    # Histograms on every fourth pixel: the colour distribution needs no more.
    coarse = rgb[:, ::4, ::4].reshape(n, -1, 3)
    bins = (coarse.astype(np.float32) * (scale * HIST_BINS / 256.0)).astype(np.int32)
    # One bincount for all: image k, channel c, bin b counts at k * 3 * BINS + c * BINS + b.
    bins += HIST_BINS * np.arange(3, dtype=np.int32)
    bins += 3 * HIST_BINS * np.arange(n, dtype=np.int32)[:, None, None]
    counts = np.bincount(bins.ravel(), minlength=n * 3 * HIST_BINS).reshape(n, 3 * HIST_BINS)
    hist = counts.astype(np.float32) / coarse.shape[1]
    # Gradients of the green channel (most of luma) at full resolution, in 8-bit steps.
    green = rgb[..., 1] >> (8 * batch.dtype.itemsize - 8)
    green = green.astype(np.int16)
    texture = []
    for grad in (np.abs(np.diff(green, axis=1)), np.abs(np.diff(green, axis=2))):
        grad = grad.reshape(n, -1)
        texture.append(grad.sum(axis=1, keepdims=True) / (255.0 * grad.shape[1]))
        texture += [
            np.count_nonzero(grad <= s, axis=1)[:, None] / grad.shape[1] for s in GRADIENT_STEPS
        ]
    return np.concatenate([thumb.reshape(n, -1), hist, *texture], axis=1)


def train_default(
    images: Sequence[np.ndarray], labels: Sequence[str] | None, seed: int = 0
) -> TrainedClassifier:
    """Fit on half of the originals (stratified by class), score on the other half."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if labels is None:
        raise InvalidInputError("the input has no class labels to train the default classifier on")
    y = np.asarray(labels, dtype=str)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or len(y) < 4:
        raise InvalidInputError(
            f"the default classifier needs >= 2 classes and >= 4 images, got {len(classes)} "
            f"classes in {len(y)} images"
        )
    x = features(images)
    stratify = y if counts.min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.5, random_state=seed, stratify=stratify
    )
    if len(np.unique(y_train)) < 2:
        raise InvalidInputError("the training half holds a single class; use more images")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    model.fit(x_train, y_train)
    accuracy = float((model.predict(x_test) == y_test).mean())
    _, test_counts = np.unique(y_test, return_counts=True)

    def predict(batch: Any) -> np.ndarray:
        return model.predict(features(batch))

    return TrainedClassifier(
        predict=predict,
        accuracy=accuracy,
        chance=float(test_counts.max() / len(y_test)),
        train_size=len(y_train),
        test_size=len(y_test),
        classes=[str(c) for c in classes],
    )


def call_predict(predict: Predict, batch: Any, expected: int) -> np.ndarray:
    """The user's (or default) predictions as an array, checked for length."""
    labels = np.asarray(predict(batch))
    if labels.ndim != 1 or len(labels) != expected:
        raise InvalidInputError(
            f"predict must return one label per image ({expected}), got shape {labels.shape}"
        )
    return labels


def agreement(reference: np.ndarray, predicted: np.ndarray) -> tuple[float, int]:
    """(fraction of images whose prediction is unchanged, number of flips)."""
    flips = int((reference != predicted).sum())
    return 1.0 - flips / len(reference), flips
