"""PyTorch adapter: an h5store file as a map-style ``Dataset``.

    from h5store.torch import ImageStoreDataset
    ds = ImageStoreDataset("run.h5", target="true_label")
    loader = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=2, shuffle=True)
    loader = ds.loader(64, shuffle=True, num_workers=2)   # faster: whole batches, no collation

Each DataLoader worker (fork or spawn) opens its own read-only handle on first use. Batched
fetches (``__getitems__``, used by DataLoader's automatic batching) decode the batch in
h5store's thread pool (one thread inside workers, which already use every core).

``ds.loader()`` workers decode each batch into shared memory they reuse: a new shared-memory
block per batch (what DataLoader does otherwise) costs a page fault per 4 kB page (shared memory
gets no huge pages), measured here at about as much CPU time as decoding the batch's 224 px
JPEGs. A block is reused only once the main process holds no tensor on it any more (see
:class:`_SlotLoader`); until then workers take fresh blocks.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

import h5store

from ._inputs import check_channel_order
from .codecs import image_shape
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

    Each DataLoader worker, fork or spawn, opens its own read handle.

    Parameters
    ----------
    path
        A store, or a list of shards read as one (``h5store.open([...])``).
    ids
        Which images, in which order (default: all live images in insertion order).
    target
        ``"label"`` (predicted class id), ``"true_label"`` (ground-truth class id, -1 if
        unknown), ``"id"``, or None for images only. Class ids index :attr:`classes`.
    transform
        Called with what the fetch produced, which depends on the loader: per sample, with
        one (C, H, W) tensor, under ``DataLoader(ds, ...)`` and ``ds[k]``; per batch, with the
        whole (B, C, H, W) tensor, under ``ds.loader()`` and ``ds.batch(ks)`` (so torchvision
        transforms written for one image must handle a batch dimension there).
    verify_reads
        Passed to :func:`h5store.open` in every process (a damaged image raises
        ``DamagedImageError``).
    channel_order
        ``"rgb"`` (default) or ``"bgr"``, the channel order of colour tensors (a model
        trained on OpenCV's BGR arrays).

    Raises
    ------
    InvalidInputError
        An unknown ``target`` or ``channel_order``.
    UnknownIdError
        An id of ``ids`` is not a live image of the store.
    """

    def __init__(
        self,
        path: str | os.PathLike | Sequence[str | os.PathLike],
        ids: Sequence[int] | None = None,
        *,
        target: str | None = "label",
        transform: Callable[[torch.Tensor], Any] | None = None,
        verify_reads: bool = True,
        channel_order: str = "rgb",
    ):
        if target not in TARGETS:
            raise InvalidInputError(f"target must be one of {TARGETS}, got {target!r}")
        check_channel_order(channel_order)
        self.channel_order = channel_order
        # A list of paths: shards read as one store (h5store.open([...])).
        self.path = (
            [os.fspath(p) for p in path] if isinstance(path, (list, tuple)) else os.fspath(path)
        )
        self.transform = transform
        self.target = target
        self.verify_reads = verify_reads
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
        # Each sample's (shape, dtype), so a batch needs no metadata read to size its tensor.
        geometry = list(
            zip(
                live["height"][rows].tolist(),
                live["width"][rows].tolist(),
                live["channels"][rows].tolist(),
                live["dtype"][rows].tolist(),
            )
        )
        kinds = {key: k for k, key in enumerate(dict.fromkeys(geometry))}
        self._geometries = [(image_shape(h, w, c), np.dtype(d.decode())) for h, w, c, d in kinds]
        self._geometry_of = np.array([kinds[key] for key in geometry], dtype=np.int32)
        self._store: h5store.ImageStore | None = None
        self._pid: int | None = None
        self._slots: _Slots | None = None  # set on loader()'s copy: blocks workers reuse

    def _handle(self) -> h5store.ImageStore:
        # A forked worker inherits the parent's handle; HDF5 handles must not cross a fork.
        if self._store is None or self._pid != os.getpid():
            if torch.utils.data.get_worker_info() is not None:
                h5store.set_threads(1)  # the DataLoader's workers already use every core
            self._store = h5store.open(
                self.path,
                verify_reads=self.verify_reads,
                channel_order=self.channel_order,
            )
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
        """Samples ``ks`` as one batch, decoded straight into one tensor.

        Inside a DataLoader worker the tensor is in shared memory, so nothing is copied on the
        way to the main process. ``transform`` applies to the whole batch.

        Parameters
        ----------
        ks
            Positions in this dataset (not image ids). All their images must share one shape.

        Returns
        -------
        torch.Tensor or tuple of torch.Tensor
            A (B, C, H, W) uint8 tensor in channels_last layout (uint16 images are widened
            as :func:`to_tensor` does), with a (B,) tensor of targets unless ``target`` is
            None; what ``transform`` returns in place of the images when one is set.

        Raises
        ------
        DamagedImageError
            An image's bytes fail their CRC-32 (with ``verify_reads``).
        """
        store = self._handle()
        ks = [int(k) for k in ks]
        ids = self.ids[ks]
        shape, dtype = self._geometries[self._geometry_of[ks[0]]]
        if dtype == np.uint16:  # torch has no uint16 arithmetic: widen, as to_tensor does
            return self._widened_batch(ks)
        nbytes = len(ids) * int(np.prod(shape))
        # Inside a worker the batch is born in shared memory: nothing is copied to send it.
        worker = torch.utils.data.get_worker_info()
        slot = None
        if worker is None:
            flat = torch.empty(nbytes, dtype=torch.uint8)
        elif self._slots is not None and self.transform is None:
            slot, flat = self._slots.take(worker.id, nbytes)
        else:
            flat = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(nbytes))
        try:
            store.get_batch(ids, out=flat.numpy().reshape(len(ids), *shape))
        except BaseException:
            if slot is not None:
                self._slots.give_back(slot)
            raise
        channels = 1 if len(shape) == 2 else shape[2]
        batch_shape = (len(ids), shape[0], shape[1], channels)
        if slot is not None:
            return self._slots.reference(slot, batch_shape, self._targets_of(ks))
        images = flat.view(*batch_shape).permute(0, 3, 1, 2)
        return self._finish_batch(images, ks)

    def _targets_of(self, ks: list[int]) -> np.ndarray | None:
        if self.target is None:
            return None
        return np.ascontiguousarray(self.ids[ks] if self.target == "id" else self.targets[ks])

    def _finish_batch(self, images: torch.Tensor, ks: list[int]) -> Any:
        if self.transform is not None:
            images = self.transform(images)
        targets = self._targets_of(ks)
        return images if targets is None else (images, torch.from_numpy(targets))

    def _widened_batch(self, ks: list[int]) -> Any:
        images = torch.stack([to_tensor(image) for image in self._handle().get_batch(self.ids[ks])])
        return self._finish_batch(images, ks)

    def loader(
        self,
        batch_size: int = 64,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> DataLoader:
        """A DataLoader that fetches whole batches with :meth:`batch` (no per-sample collation).

        Its workers reuse shared-memory blocks for the batches the main process has let go
        of. It needs one image size per batch; ``DataLoader(ds)`` takes anything.

        Parameters
        ----------
        batch_size
            Images per batch.
        shuffle
            Draw the samples in random order (with ``generator``).
        drop_last
            Leave out a last batch smaller than ``batch_size``.
        generator
            The random generator of the shuffle.
        **kwargs
            Go to DataLoader (``num_workers``, ``pin_memory``, ``persistent_workers``, ...).

        Returns
        -------
        torch.utils.data.DataLoader
            Yields what :meth:`batch` returns.
        """
        order = RandomSampler(self, generator=generator) if shuffle else SequentialSampler(self)
        sampler = BatchSampler(order, batch_size=batch_size, drop_last=drop_last)
        workers = kwargs.get("num_workers", 0)
        if not workers:
            return DataLoader(self, sampler=sampler, batch_size=None, **kwargs)
        # Blocks in flight per worker: the prefetched batches, the one being consumed, the one
        # the loop variable still holds when the next arrives, and one spare.
        per_worker = (kwargs.get("prefetch_factor") or 2) + 3
        # A copy per loader: two loaders' workers must never share one set of slots.
        dataset = copy.copy(self)
        dataset._store, dataset._pid = None, None  # its own handle, opened on first use
        dataset._slots = _Slots(workers, per_worker)
        return _SlotLoader(dataset, sampler=sampler, batch_size=None, **kwargs)

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


class _Slots:
    """Shared-memory blocks ``ds.loader()`` workers decode batches into and reuse.

    ``busy`` is a byte per slot in shared memory: a worker sets it when it takes a free slot
    for a batch; only the main process clears it, once no tensor there refers to the block any
    more (it watches a weak reference to each batch's storage, see :class:`_SlotLoader`). A
    worker with no free slot decodes into a fresh block, so a caller keeping batches alive
    never sees them overwritten. A worker sends a slot's block to the main process once, and
    then only the slot's number (:meth:`reference`).
    """

    def __init__(self, workers: int, per_worker: int):
        self.per_worker = per_worker
        self.busy = torch.zeros(workers * per_worker, dtype=torch.uint8).share_memory_()
        self._blocks: dict[int, torch.Tensor] = {}  # this worker's blocks (per process)
        self._sent: set[int] = set()  # slots whose current block the main process has
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {"per_worker": self.per_worker, "busy": self.busy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _blocks={}, _sent=set(), _pid=os.getpid())

    def reference(
        self, slot: int, shape: tuple[int, ...], targets: np.ndarray | None
    ) -> _SlotBatch:
        """What a worker sends for a batch decoded into ``slot``: the block itself the first
        time (the main process keeps it mapped), then only the slot number. Sending a
        shared-memory tensor passes its file descriptor through a socket handshake, about
        1.5 ms of the main process's time a batch; a slot number costs nothing."""
        block = None if slot in self._sent else self._blocks[slot]
        self._sent.add(slot)
        return _SlotBatch(slot, shape, targets, block)

    def take(self, worker: int, nbytes: int) -> tuple[int | None, torch.Tensor]:
        """(slot, a flat uint8 tensor of ``nbytes`` in shared memory) for one batch; slot is
        None when every slot of this worker is in use (the tensor is then a fresh block)."""
        if self._pid != os.getpid():  # forked: the parent's blocks are not ours to reuse
            self._blocks, self._sent, self._pid = {}, set(), os.getpid()
        busy = self.busy.numpy()
        first = worker * self.per_worker
        for slot in range(first, first + self.per_worker):
            if busy[slot]:
                continue
            block = self._blocks.get(slot)
            if block is None or block.numel() != nbytes:
                block = torch.empty(0, dtype=torch.uint8).set_(
                    torch.UntypedStorage._new_shared(nbytes)
                )
                self._sent.discard(slot)  # a new block: the main process has not seen it
                self._blocks[slot] = block
            busy[slot] = 1
            return slot, block
        fresh = torch.UntypedStorage._new_shared(nbytes)
        return None, torch.empty(0, dtype=torch.uint8).set_(fresh)

    def give_back(self, slot: int) -> None:
        self.busy.numpy()[slot] = 0


class _SlotBatch:
    """A batch a ``ds.loader()`` worker decoded into a slot: the slot, the batch's (B, H, W, C)
    shape and targets, and the slot's block the first time it is sent."""

    __slots__ = ("block", "shape", "slot", "targets")

    def __init__(
        self,
        slot: int,
        shape: tuple[int, ...],
        targets: np.ndarray | None,
        block: torch.Tensor | None,
    ):
        self.slot, self.shape, self.targets, self.block = slot, shape, targets, block


class _SlotLoader(DataLoader):
    """DataLoader whose iterator turns slot references into batches on the blocks it keeps
    mapped, and hands a slot back to its worker once the main process no longer holds any
    tensor on it (checked at each batch)."""

    def __iter__(self) -> Iterator[Any]:
        slots = self.dataset._slots
        # Kept across epochs: the last batch of one epoch is let go of during the next, and
        # persistent workers keep sending references to the blocks of the first.
        held: dict[int, StorageWeakRef] = self.__dict__.setdefault("_held_slots", {})
        mapped: dict[int, np.ndarray] = self.__dict__.setdefault("_mapped_slots", {})
        busy = slots.busy.numpy()
        # As DataLoader decides: pinning needs an accelerator (it warns and skips otherwise).
        accelerator = getattr(torch, "accelerator", None)
        pin = self.pin_memory and (
            accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
        )
        for batch in super().__iter__():
            for slot in [s for s, ref in held.items() if ref.expired()]:
                del held[slot]
                busy[slot] = 0
            if not isinstance(batch, _SlotBatch):
                yield batch
                continue
            if batch.block is not None:
                mapped[batch.slot] = batch.block.numpy()
            # A tensor of its own storage over the block, so that a weak reference tells when
            # the caller has let go of every tensor on it.
            size = int(np.prod(batch.shape))
            images = torch.frombuffer(mapped[batch.slot][:size], dtype=torch.uint8)
            images = images.view(*batch.shape).permute(0, 3, 1, 2)
            if pin:  # the pinning thread passed the reference through as it was
                images = images.pin_memory()  # a copy: the block is free again at once
                busy[batch.slot] = 0
            else:
                held[batch.slot] = StorageWeakRef(images.untyped_storage())
            if batch.targets is None:
                yield images
            else:
                yield images, torch.from_numpy(batch.targets)
            del images
