"""PyTorch adapter: an h5store file as a map-style ``Dataset``.

    from h5store.torch import ImageStoreDataset
    ds = ImageStoreDataset("run.h5", target="true_label")
    loader = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=2, shuffle=True)
    loader = ds.loader(64, shuffle=True, num_workers=2)   # faster: whole batches, no collation

Each DataLoader worker (fork or spawn) opens its own read-only handle on first use. Batched
fetches (``__getitems__``, used by DataLoader's automatic batching) decode the batch in
h5store's thread pool (one thread inside workers, which already use every core).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

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
        path: str | os.PathLike | Sequence[str | os.PathLike],
        ids: Sequence[int] | None = None,
        *,
        target: str | None = "label",
        transform: Callable[[torch.Tensor], Any] | None = None,
    ):
        if target not in TARGETS:
            raise InvalidInputError(f"target must be one of {TARGETS}, got {target!r}")
        # A list of paths: shards read as one store (h5store.open([...])).
        self.path = [os.fspath(p) for p in path] if isinstance(path, (list, tuple)) else os.fspath(path)
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
            if torch.utils.data.get_worker_info() is not None:
                h5store.set_threads(1)  # the DataLoader's workers already use every core
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

    def __getitem__(self, k: int | Sequence[int]) -> Any:
        if isinstance(k, (list, tuple, np.ndarray, torch.Tensor)):
            return self.batch(k)
        return self._item(k, self._handle()[int(self.ids[k])])

    def batch(self, ks: Sequence[int]) -> Any:
        """Samples ``ks`` as one batch: a (B, C, H, W) uint8 tensor in channels_last layout,
        which the images are decoded straight into (in shared memory inside a DataLoader
        worker, so nothing is copied on the way to the main process), and a (B,) tensor of
        targets. ``transform`` applies to the whole batch. All images must share one shape."""
        store = self._handle()
        ks = [int(k) for k in ks]
        ids = self.ids[ks]
        shape, dtype = self._shape_of(store, int(ids[0]))
        if dtype == np.uint16:  # torch has no uint16 arithmetic: widen, as to_tensor does
            return self._widened_batch(ks)
        nbytes = len(ids) * int(np.prod(shape))
        # Inside a worker the batch is born in shared memory: nothing is copied to send it.
        inside_worker = torch.utils.data.get_worker_info() is not None
        storage = torch.UntypedStorage._new_shared(nbytes) if inside_worker else torch.UntypedStorage(nbytes)
        flat = torch.empty(0, dtype=torch.uint8).set_(storage)
        store.get_batch(ids, out=flat.numpy().reshape(len(ids), *shape))
        channels = 1 if len(shape) == 2 else shape[2]
        images = flat.view(len(ids), shape[0], shape[1], channels).permute(0, 3, 1, 2)
        return self._finish_batch(images, ks)

    def _finish_batch(self, images: torch.Tensor, ks: list[int]) -> Any:
        if self.transform is not None:
            images = self.transform(images)
        if self.target is None:
            return images
        targets = self.ids[ks] if self.target == "id" else self.targets[ks]
        return images, torch.from_numpy(np.ascontiguousarray(targets))

    @staticmethod
    def _shape_of(store: h5store.ImageStore, image_id: int) -> tuple[tuple[int, ...], np.dtype]:
        record = store.record(image_id)
        return record.shape, np.dtype(record.dtype)

    def _widened_batch(self, ks: list[int]) -> Any:
        images = torch.stack([to_tensor(image) for image in self._handle().get_batch(self.ids[ks])])
        return self._finish_batch(images, ks)

    def loader(self, batch_size: int = 64, *, shuffle: bool = False, drop_last: bool = False,
               generator: torch.Generator | None = None, **kwargs: Any) -> DataLoader:
        """A DataLoader that fetches whole batches with :meth:`batch` (no per-sample collation);
        other keyword arguments (``num_workers``, ``pin_memory``, ...) go to DataLoader."""
        order = RandomSampler(self, generator=generator) if shuffle else SequentialSampler(self)
        sampler = BatchSampler(order, batch_size=batch_size, drop_last=drop_last)
        return DataLoader(self, sampler=sampler, batch_size=None, **kwargs)

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
