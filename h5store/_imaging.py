"""Small pixel operations shared by the sample set and the class previews."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=64)
def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix averaging the input interval each output pixel covers."""
    edges = np.linspace(0, n_in, n_out + 1)
    cells = np.arange(n_in)
    lo = np.clip(edges[:-1, None] - cells[None, :], 0, 1)
    hi = np.clip(edges[1:, None] - cells[None, :], 0, 1)
    weights = (hi - lo).astype(np.float32)
    return weights / weights.sum(axis=1, keepdims=True)


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an (H, W, C) image with area averaging (anti-aliased when shrinking); float32."""
    # Shrinking by a large factor: sum whole blocks first (cheap reshape, integer sums), so
    # the weight matrices below stay small. Dropping the few edge pixels that don't fill a
    # block is invisible at thumbnail size.
    fy, fx = image.shape[0] // (2 * height), image.shape[1] // (2 * width)
    if image.shape[0] % height == 0 and image.shape[1] % width == 0:
        # A whole factor (224 px to 32 px): the block sums are the result, no weights needed.
        fy, fx = image.shape[0] // height, image.shape[1] // width
    if fy > 1 or fx > 1:
        fy, fx = max(fy, 1), max(fx, 1)
        h, w, c = image.shape[0] // fy * fy, image.shape[1] // fx * fx, image.shape[2]
        # Rows of blocks first, then columns, each as a few in-place adds of whole slices
        # (narrow sums where uint8 allows): twice as fast as numpy's reduction over a middle
        # axis, and a thumbnail is drawn for every class preview image.
        narrow = image.dtype == np.uint8 and fy * fx <= 257
        by_row = image[:h, :w].reshape(h // fy, fy, w * c)
        rows = by_row[:, 0].astype(np.uint16 if narrow else np.uint32)
        for k in range(1, fy):
            rows += by_row[:, k]
        by_column = rows.reshape(h // fy, w // fx, fx, c)
        blocks = by_column[:, :, 0].copy()
        for k in range(1, fx):
            blocks += by_column[:, :, k]
        image = blocks.astype(np.float32) / (fy * fx)
        if image.shape[:2] == (height, width):
            return image
    else:
        image = image.astype(np.float32)
    wy = _area_weights(image.shape[0], height)
    wx = _area_weights(image.shape[1], width)
    rows = np.tensordot(wy, image, axes=(1, 0))  # (height, W, C)
    return np.tensordot(rows, wx, axes=(1, 1)).transpose(0, 2, 1)  # (height, width, C)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any stored image as (H, W, 3) uint8 for display: gray replicated, alpha dropped,
    uint16 stretched from its own minimum to maximum (depth maps and microscopy rarely use
    the full range)."""
    if image.ndim == 2:
        image = image[:, :, None]
    image = image[:, :, :3]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.dtype == np.uint16:
        low, high = int(image.min()), int(image.max())
        scaled = (image.astype(np.float32) - low) * (255.0 / max(high - low, 1))
        return scaled.astype(np.uint8)
    return image.astype(np.uint8, copy=False)


def thumbnail(image: np.ndarray, side: int) -> np.ndarray:
    """Fit ``image`` into a ``side`` x ``side`` RGB tile, keeping its aspect, centred on black."""
    rgb = to_rgb8(image)
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.clip(np.rint(resize_area(rgb, th, tw)), 0, 255).astype(np.uint8)
    tile = np.zeros((side, side, 3), np.uint8)
    top, left = (side - th) // 2, (side - tw) // 2
    tile[top : top + th, left : left + tw] = small
    return tile


def contact_sheet(tiles: list[np.ndarray], side: int, columns: int) -> np.ndarray:
    """``side`` x ``side`` thumbnails (see :func:`thumbnail`) in rows of ``columns``, one
    (rows*side, columns*side, 3) uint8 image."""
    rows = max(1, -(-len(tiles) // columns))
    sheet = np.zeros((rows * side, columns * side, 3), np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        sheet[r * side : (r + 1) * side, c * side : (c + 1) * side] = tile
    return sheet
