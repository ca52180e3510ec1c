"""PyTorch adapter: an h5store file as a map-style ``Dataset``.

    from h5store.torch import ImageStoreDataset
    ds = ImageStoreDataset("run.h5", target="true_label")
    loader = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=2, shuffle=True)

Each DataLoader worker (fork or spawn) opens its own read-only handle on first use. Batched
fetches (``__getitems__``, used by DataLoader's automatic batching) decode the batch in
h5store's thread pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

import h5store

from .errors import InvalidInputError

TARGETS = ("label", "true_label", "id", None)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) array -> (C, H, W) tensor, sharing memory (uint16 -> int32, which
    torch can hold)."""
    if image.dtype == np.uint16:
        image = image.astype(np.int32)
    tensor = torch.from_numpy(np.ascontiguousarray(image))
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


class ImageStoreDataset(Dataset):
    """Images of an h5store file with a target per image.

    ``ids``: which images, in which order (default: all live images in insertion order).
    ``target``: ``"label"`` (predicted class id), ``"true_label"`` (ground-truth class id,
    -1 if unknown), ``"id"``, or None for images only. ``transform`` is applied to the
    (C, H, W) tensor. Class ids index :attr:`classes`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        ids: Sequence[int] | None = None,
        *,
        target: str | None = "label",
        transform: Callable[[torch.Tensor], Any] | None = None,
    ):
        if target not in TARGETS:
            raise InvalidInputError(f"target must be one of {TARGETS}, got {target!r}")
        self.path = os.fspath(path)
        self.transform = transform
        self.target = target
        with h5store.open(self.path) as store:
            self.classes = list(store.labels)
            index = store.index
        live = index[index["deleted"] == 0]
        row_of = {int(i): k for k, i in enumerate(live["id"])}
        self.ids = np.asarray(live["id"] if ids is None else ids, dtype=np.int64)
        try:
            rows = np.array([row_of[int(i)] for i in self.ids], dtype=np.int64)
        except KeyError as exc:
            raise h5store.UnknownIdError(f"no image with id {exc.args[0]} in {self.path}") from None
        self.targets = None if target in (None, "id") else live[target][rows].astype(np.int64)
        self._store: h5store.ImageStore | None = None
        self._pid: int | None = None

    def _handle(self) -> h5store.ImageStore:
        # A forked worker inherits the parent's handle; HDF5 handles must not cross a fork.
        if self._store is None or self._pid != os.getpid():
            self._store = h5store.open(self.path)
            self._pid = os.getpid()
        return self._store

    def __len__(self) -> int:
        return len(self.ids)

    def _item(self, k: int, image: np.ndarray) -> Any:
        tensor = to_tensor(image)
        if self.transform is not None:
            tensor = self.transform(tensor)
        if self.target is None:
            return tensor
        if self.target == "id":
            return tensor, int(self.ids[k])
        return tensor, int(self.targets[k])

    def __getitem__(self, k: int) -> Any:
        return self._item(k, self._handle()[int(self.ids[k])])

    def __getitems__(self, ks: Sequence[int]) -> list[Any]:
        images = self._handle().get_batch(self.ids[list(ks)])
        return [self._item(k, image) for k, image in zip(ks, images)]

    def close(self) -> None:
        """Close this process's read handle (reopened on the next access)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __del__(self) -> None:
        # The handle is the dataset's own, opened lazily per process: closing it is routine.
        if getattr(self, "_store", None) is not None and self._pid == os.getpid():
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None
        state["_pid"] = None
        return state
