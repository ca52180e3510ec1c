"""Turning what callers pass (numpy, PIL or torch images; label strings or ids; score vectors)
into validated numpy data, or an InvalidInputError that names the culprit. Nothing here touches
the file, so a rejected batch leaves it exactly as it was."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import DuplicateIdError, InvalidInputError
from .format import MAX_LABEL_BYTES, PIXEL_DTYPES

#: How callers hand over and take back colour pixels; stores always hold RGB(A).
CHANNEL_ORDERS = ("rgb", "bgr")

_PIL_MODES = {"L": "uint8", "RGB": "uint8", "RGBA": "uint8", "I;16": "uint16", "I;16L": "uint16"}


def _is_torch(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "numpy")


def _is_pil(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "PIL" and hasattr(obj, "getbands")


def as_image(obj: Any, where: str = "image") -> np.ndarray:
    """A C-contiguous little-endian (H, W) or (H, W, C) uint8/uint16 array, C in {3, 4}."""
    if _is_pil(obj):
        if obj.mode not in _PIL_MODES:
            raise InvalidInputError(
                f"{where} is a PIL image in mode {obj.mode!r}; convert it to 'L', 'RGB', "
                "'RGBA' or 'I;16' first"
            )
        arr = np.asarray(obj)
    elif _is_torch(obj):
        arr = obj.detach().cpu().numpy()
        if arr.ndim == 3:  # torchvision's (C, H, W)
            arr = arr.transpose(1, 2, 0)
    elif isinstance(obj, (str, bytes, bytearray, memoryview, os.PathLike)):
        raise InvalidInputError(_not_pixels(obj, where))
    else:
        arr = np.asarray(obj)
    if arr.dtype.kind not in "u" or arr.dtype.itemsize * 8 not in (8, 16):
        raise InvalidInputError(
            f"{where} has dtype {arr.dtype}; h5store stores {' or '.join(PIXEL_DTYPES)} pixels "
            "(scale and convert first)"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3):
        raise InvalidInputError(f"{where} has {arr.ndim} dimensions; expected (H, W) or (H, W, C)")
    if arr.ndim == 3 and arr.shape[2] not in (3, 4):
        if arr.shape[0] in (1, 3, 4) and arr.shape[2] > 4:
            raise InvalidInputError(
                f"{where} has shape {arr.shape}, which looks channels-first (C, H, W); h5store "
                "takes channels-last numpy images: pass image.transpose(1, 2, 0), or for a "
                "(N, C, H, W) batch batch.transpose(0, 2, 3, 1) (torch tensors are converted "
                "for you)"
            )
        raise InvalidInputError(f"{where} has {arr.shape[2]} channels; expected 1, 3 or 4")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInputError(f"{where} is empty (shape {arr.shape})")
    native = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
    return np.ascontiguousarray(arr, dtype=native)


def check_channel_order(order: Any) -> bool:
    """True for "bgr" (OpenCV's order), False for "rgb"; anything else is an error."""
    if order not in CHANNEL_ORDERS:
        raise InvalidInputError(
            f"channel_order must be one of {list(CHANNEL_ORDERS)}, got {order!r}"
        )
    return order == "bgr"


def swap_rb(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A new C-contiguous array (or ``out``, of the same shape and dtype) with red and blue
    swapped (BGR(A) <-> RGB(A)); grayscale images come back as they are. A copy: the caller's
    array (or a read-only decode) is never changed."""
    if image.ndim != 3:
        return image
    # One plane copy per channel: 0.2 ms at 224 px, half of np.take's time (fancy indexing
    # is faster still but returns a non-contiguous array, which OpenCV refuses).
    if out is None:
        out = np.empty_like(image)
    out[:, :, 0], out[:, :, 1], out[:, :, 2] = image[:, :, 2], image[:, :, 1], image[:, :, 0]
    if image.shape[2] == 4:
        out[:, :, 3] = image[:, :, 3]
    return out


def swap_rb_into(out: np.ndarray) -> None:
    """Swap red and blue of (N, H, W, C) images in place (a get_batch ``out``)."""
    if out.ndim == 4:
        red = out[..., 0].copy()
        out[..., 0] = out[..., 2]
        out[..., 2] = red


def _not_pixels(obj: Any, where: str) -> str:
    """Why a path or a file's bytes is not an image array, and what to call instead."""
    if isinstance(obj, (str, os.PathLike)):
        return (
            f"{where} is a path ({os.fspath(obj)!r}), not an image: h5store does not read "
            "files; pass the file's bytes to add_encoded (stored as they are, e.g. "
            "add_encoded(open(path, 'rb').read(), ...)) or the pixels "
            "(PIL.Image.open(path), cv2.imread(path) with channel_order='bgr')"
        )
    return (
        f"{where} is {type(obj).__name__}, not an image: for an encoded file's bytes use "
        "add_encoded / add_encoded_batch"
    )


def as_images(images: Any) -> list[np.ndarray]:
    """A batch: a sequence of images, or one (N, H, W[, C]) array (or (N, C, H, W) tensor)."""
    if _is_torch(images) and images.ndim == 4:
        images = list(images)
    elif isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise InvalidInputError(
                f"a batch array must be (N, H, W) or (N, H, W, C), got shape {images.shape}"
            )
        return _as_image_block(images)
    elif isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike)):
        raise InvalidInputError(_not_pixels(images, "images").replace("an image", "images"))
    elif not isinstance(images, Sequence):
        raise InvalidInputError("images must be a sequence of images or an (N, H, W[, C]) array")
    return [as_image(img, f"image {k}") for k, img in enumerate(images)]


def _as_image_block(block: np.ndarray) -> list[np.ndarray]:
    """The images of one (N, H, W[, C]) array: they share dtype and shape, so the first one's
    checks stand for all (the same errors, naming image 0), and one conversion of the whole
    block replaces N (a Python check per image is about a tenth of its write at 224 px)."""
    if not len(block):
        return []
    first = as_image(block[0], "image 0")
    if first.ndim == 2 and block.ndim == 4:  # (N, H, W, 1)
        block = block[..., 0]
    return list(np.ascontiguousarray(block, dtype=first.dtype))


def is_integer(value: Any) -> bool:
    """An int or numpy integer, but not a bool (which Python counts as an int)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_label(label: Any, where: str = "label") -> str:
    if isinstance(label, np.str_):
        label = str(label)
    if not isinstance(label, str):
        raise InvalidInputError(
            f"{where} must be a string or a class id, got {type(label).__name__}"
        )
    if not label:
        raise InvalidInputError(f"{where} is empty")
    if "\x00" in label:
        raise InvalidInputError(f"{where} {label!r} contains a NUL character")
    try:
        size = len(label.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError(f"{where} {label!r} is not valid Unicode") from None
    if size > MAX_LABEL_BYTES:
        raise InvalidInputError(
            f"{where} is {size} bytes in UTF-8; at most {MAX_LABEL_BYTES} allowed"
        )
    return label


def as_label_names(labels: Any, what: str = "labels") -> list[str]:
    """A list of class names, each checked (a string would otherwise be read as its letters)."""
    if isinstance(labels, (str, bytes)) or not isinstance(labels, (Sequence, np.ndarray)):
        raise InvalidInputError(
            f"{what} must be a sequence of class names, got {type(labels).__name__}"
        )
    return [check_label(name, f"label {k}") for k, name in enumerate(labels)]


def as_sequence(values: Any, n: int, what: str) -> list:
    if _is_torch(values):
        values = values.detach().cpu().numpy()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise InvalidInputError(f"{what} must be a sequence with one entry per image")
    if len(values) != n:
        raise InvalidInputError(f"{what} has {len(values)} entries for {n} images")
    return list(values.tolist() if isinstance(values, np.ndarray) else values)


def as_scores(scores: Any, n: int) -> np.ndarray | None:
    """(n,) top-1 confidences or (n, K) probability vectors, float32, finite, in [0, 1]."""
    if scores is None:
        return None
    if _is_torch(scores):
        scores = scores.detach().cpu().numpy()
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(
            "scores must be numbers: (N,) confidences or (N, K) vectors"
        ) from None
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise InvalidInputError(f"scores must have shape ({n},) or ({n}, K), got {arr.shape}")
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise InvalidInputError("score vectors are empty")
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise InvalidInputError(f"scores of image {row} contain NaN or infinity")
    out_of_range = (arr < 0) | (arr > 1)
    if out_of_range.any():
        row = int(np.argwhere(out_of_range)[0][0])
        raise InvalidInputError(
            f"scores of image {row} are outside [0, 1]; pass probabilities (softmax), not logits"
        )
    return arr.astype(np.float32)


def as_ids(ids: Any, n: int) -> np.ndarray | None:
    if ids is None:
        return None
    values = as_sequence(ids, n, "ids")
    for k, value in enumerate(values):
        if not is_integer(value):
            raise InvalidInputError(f"id of image {k} must be an integer, got {value!r}")
        if not 0 <= value < 2**63:
            raise InvalidInputError(f"id of image {k} must be a non-negative int64, got {value}")
    arr = np.array(values, dtype=np.int64)
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise DuplicateIdError(f"id {int(uniq[counts > 1][0])} appears twice in the batch")
    return arr


def as_sources(sources: Any, n: int) -> list[str] | None:
    if sources is None:
        return None
    out = []
    for k, value in enumerate(as_sequence(sources, n, "sources")):
        if value is None:
            value = ""
        value = str(value) if not isinstance(value, str) else value
        if "\x00" in value:
            raise InvalidInputError(f"source of image {k} contains a NUL character")
        if not value.isascii():  # stored as UTF-8: a lone surrogate cannot be
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInputError(
                    f"source of image {k} is not valid Unicode (it holds a lone surrogate)"
                ) from None
        out.append(value)
    return out
