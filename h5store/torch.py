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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

import h5store

from . import _spans
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
    storage_options
        For a store at a URL, passed to :func:`h5store.open` in every process: the client's
        settings (by default the usual environment variables, which workers inherit).

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
        storage_options: dict[str, Any] | None = None,
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
        # Passed only when given: a local open takes no client settings.
        self._open_options = {} if storage_options is None else {"storage_options": storage_options}
        with h5store.open(self.path, **self._open_options) as store:
            self.classes = list(store.labels)
            index = store.index
            live = index[index["deleted"] == 0]
            shard_of_row = _shard_numbers(store, live["id"])
        row_of = {int(i): k for k, i in enumerate(live["id"])}
        self.ids = np.asarray(live["id"] if ids is None else ids, dtype=np.int64)
        try:
            rows = np.array([row_of[int(i)] for i in self.ids], dtype=np.int64)
        except KeyError as exc:
            raise h5store.UnknownIdError(f"no image with id {exc.args[0]} in {self.path}") from None
        self.targets = None if target in (None, "id") else live[target][rows].astype(np.int64)
        # Where each sample lies (shard, file offset, stored bytes): the streaming shuffle's spans.
        self._layout = (shard_of_row[rows], live["offset"][rows], live["nbytes"][rows])
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
                **self._open_options,
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
        return self._batch_into(ks, shape, lambda out: store.get_batch(ids, out=out))

    def _batch_into(
        self, ks: list[int], shape: tuple[int, ...], fill: Callable[[np.ndarray], Any]
    ) -> Any:
        """The batch of samples ``ks`` (images of ``shape``), its pixels written by
        ``fill(out)`` into a (B, H, W[, C]) array. Inside a worker the batch is born in shared
        memory: nothing is copied to send it."""
        nbytes = len(ks) * int(np.prod(shape))
        worker = torch.utils.data.get_worker_info()
        slot = None
        if worker is None:
            flat = torch.empty(nbytes, dtype=torch.uint8)
        elif self._slots is not None and self.transform is None:
            slot, flat = self._slots.take(worker.id, nbytes)
        else:
            flat = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(nbytes))
        try:
            fill(flat.numpy().reshape(len(ks), *shape))
        except BaseException:
            if slot is not None:
                self._slots.give_back(slot)
            raise
        channels = 1 if len(shape) == 2 else shape[2]
        batch_shape = (len(ks), shape[0], shape[1], channels)
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
        if not kwargs.get("num_workers", 0):
            return DataLoader(self, sampler=sampler, batch_size=None, **kwargs)
        return _SlotLoader(self._for_loader(kwargs), sampler=sampler, batch_size=None, **kwargs)

    def _for_loader(self, kwargs: dict[str, Any]) -> ImageStoreDataset:
        """A copy for one loader, with shared-memory slots for its workers (if it has any):
        two loaders' workers must never share one set of slots."""
        dataset = copy.copy(self)
        dataset._store, dataset._pid = None, None  # its own handle, opened on first use
        workers = kwargs.get("num_workers", 0)
        if workers:
            # Blocks in flight per worker: the prefetched batches, the one being consumed, the
            # one the loop variable still holds when the next arrives, and one spare.
            per_worker = (kwargs.get("prefetch_factor") or 2) + 3
            dataset._slots = _Slots(workers, per_worker)
        return dataset

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


def _shard_numbers(store: Any, ids: np.ndarray) -> np.ndarray:
    """Which shard of a sharded view holds each id (all 0 for a single store): offsets are
    per file, so spans must not mix shards."""
    shards = getattr(store, "shards", None)
    if not shards:
        return np.zeros(len(ids), dtype=np.int64)
    shard_ids = [shard.ids() for shard in shards]
    every = np.concatenate(shard_ids)
    which = np.repeat(np.arange(len(shards)), [len(k) for k in shard_ids])
    sorter = np.argsort(every, kind="stable")
    return which[sorter[np.searchsorted(every, ids, sorter=sorter)]]


#: Payload bytes per span, the unit a streaming reader reads (one ranged request on a remote
#: store). Smaller spans mix better: a batch draws on about window / (images per span) spans,
#: so at 224 px (~20 kB a JPEG q90, ~50 images a MiB) and the default window a batch of a
#: store written class by class holds 0.60 x the classes of a full shuffle at 1 MiB, 0.39 x at
#: 2 MiB, 0.25 x at 4 MiB (benchmarks/shuffle_quality.py, docs/streaming.md). Large enough that
#: a request's round trip hides behind decoding what the other read in flight brought (50
#: images, ~50 ms of decoding, against a 20 ms round trip).
SPAN_BYTES = 1 << 20
#: Images a streaming reader's shuffle window spans: how far an image may move within its
#: worker's share, and about how many decoded images a worker holds (2048 at 224 px: 300 MB).
WINDOW = 2048


class StreamingImageDataset(IterableDataset):
    """Images of an h5store file (a path, a URL, or a list of shards) streamed in spans: the
    way to train from object storage, and as fast locally.

    Each epoch, the images are read in spans of neighbouring images (``span_bytes`` of
    payload each, one ranged read on a remote store) taken in a random order, and shuffled
    within a window of ``window`` images across several spans (MosaicML Streaming's py1e and
    LitData's chunk shuffle do the same; how close this comes to a full shuffle is measured
    in docs/streaming.md). The order is a function of (``seed``, epoch, ranks, workers): every
    image is read exactly once per epoch, by one DDP rank and one DataLoader worker.

    Iterating yields ``(image, target)`` samples like :class:`ImageStoreDataset` (so
    ``DataLoader(ds, batch_size=64, num_workers=2)`` works as usual); :meth:`loader` yields
    whole batches decoded into shared memory, which is faster. Each pass over
    :meth:`loader` is the next epoch unless :meth:`set_epoch` says which; a plain DataLoader
    needs ``set_epoch(epoch)`` before each epoch, as with DistributedSampler.

    ``rank`` and ``world_size`` default to torch.distributed's when it is initialized (the
    ranks' shares differ by at most one image; with DDP use ``drop_last`` or ``join()`` if
    equal batch counts matter). ``prefetch``: spans each reader fetches ahead, concurrently,
    so that a request's round trip overlaps decoding. A reader holds about ``window`` decoded
    images plus ``prefetch`` spans. Other arguments as for :class:`ImageStoreDataset`.
    """

    def __init__(
        self,
        path: str | os.PathLike | Sequence[str | os.PathLike],
        ids: Sequence[int] | None = None,
        *,
        target: str | None = "label",
        transform: Callable[[torch.Tensor], Any] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        span_bytes: int = SPAN_BYTES,
        window: int = WINDOW,
        prefetch: int = 2,
        rank: int | None = None,
        world_size: int | None = None,
        verify_reads: bool = True,
        channel_order: str = "rgb",
        storage_options: dict[str, Any] | None = None,
    ):
        for name, value, least in (
            ("span_bytes", span_bytes, 1),
            ("window", window, 0),
            ("prefetch", prefetch, 1),
            ("seed", seed, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise InvalidInputError(f"{name} must be an integer >= {least}, got {value!r}")
        if rank is None and world_size is None and _distributed():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        rank, world_size = rank or 0, world_size or 1
        if not 0 <= rank < world_size:
            raise InvalidInputError(
                f"rank must be in [0, world_size), got rank {rank} of {world_size}"
            )
        self.samples = ImageStoreDataset(
            path,
            ids,
            target=target,
            transform=transform,
            verify_reads=verify_reads,
            channel_order=channel_order,
            storage_options=storage_options,
        )
        self.shuffle, self.seed, self.window, self.prefetch = bool(shuffle), seed, window, prefetch
        self.span_bytes = span_bytes
        self.rank, self.world_size = rank, world_size
        self._spans = _spans.spans_of(*self.samples._layout, span_bytes)
        # [epoch, whether set_epoch gave it]: shared memory, so that workers (persistent ones
        # too) see what the main process sets.
        self._epoch = torch.zeros(2, dtype=torch.int64).share_memory_()
        self.batch_size: int | None = None  # set on loader()'s copy: it yields whole batches
        self.drop_last = False
        self._workers = 1

    @property
    def classes(self) -> list[str]:
        return self.samples.classes

    @property
    def ids(self) -> np.ndarray:
        return self.samples.ids

    @property
    def spans(self) -> int:
        """How many spans the images fall into."""
        return len(self._spans[1]) - 1

    @property
    def _slots(self) -> _Slots | None:  # what _SlotLoader looks for
        return self.samples._slots

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next pass reads (shared with the workers)."""
        self._epoch[0], self._epoch[1] = int(epoch), 1

    def _share(self, worker: int, workers: int) -> tuple[int, int]:
        """(consumer, consumers): ranks first, then each rank's workers."""
        consumers = self.world_size * workers
        return self.rank * workers + worker, consumers

    def _plan(self, epoch: int, worker: int, workers: int) -> _spans.Plan:
        consumer, consumers = self._share(worker, workers)
        return _spans.plan(
            *self._spans,
            seed=self.seed,
            epoch=epoch,
            shuffle=self.shuffle,
            window=self.window,
            consumer=consumer,
            consumers=consumers,
        )

    def epoch_ids(self, epoch: int, *, worker: int = 0, workers: int = 1) -> np.ndarray:
        """The ids that DataLoader worker ``worker`` of ``workers`` on this rank yields in
        ``epoch``, in order (for checks and reproducibility; nothing is read)."""
        if not 0 <= worker < workers:
            raise InvalidInputError(f"worker must be in [0, workers), got {worker} of {workers}")
        return self.ids[self._plan(epoch, worker, workers).emitted()]

    def _count(self, worker: int, workers: int) -> int:
        consumer, consumers = self._share(worker, workers)
        n = len(self.ids)
        return (consumer + 1) * n // consumers - consumer * n // consumers

    def __len__(self) -> int:
        """Samples this rank yields per epoch; under :meth:`loader`, batches."""
        counts = [self._count(w, self._workers) for w in range(self._workers)]
        if self.batch_size is None:
            return sum(counts)
        whole = (np.floor_divide if self.drop_last else _ceil_div)(counts, self.batch_size)
        return int(np.sum(whole))

    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        plan = self._plan(int(self._epoch[0]), worker, workers)
        step = self.batch_size or 1
        reader = _SpanReader(self.samples, plan, self.prefetch)
        try:
            needed = plan.needed()
            for start in range(0, len(plan.order), step):
                emit = plan.order[start : start + step]
                if self.batch_size is not None and self.drop_last and len(emit) < step:
                    return
                images = reader.take(emit, int(needed[start + len(emit) - 1]))
                ks = plan.stream[emit].tolist()
                if self.batch_size is None:
                    yield self.samples._item(ks[0], images[0])
                else:
                    yield self._batch(ks, images)
        finally:
            reader.close()

    def _batch(self, ks: list[int], images: list[np.ndarray]) -> Any:
        samples = self.samples
        kinds = samples._geometry_of[ks]
        if (kinds != kinds[0]).any():
            odd = int(np.flatnonzero(kinds != kinds[0])[0])
            raise InvalidInputError(
                f"a batch needs images of one size: image {int(samples.ids[ks[0]])} is "
                f"{images[0].shape}, image {int(samples.ids[ks[odd]])} is {images[odd].shape}"
            )
        shape, dtype = samples._geometries[kinds[0]]
        if dtype == np.uint16:  # torch has no uint16 arithmetic: widen, as to_tensor does
            return samples._finish_batch(torch.stack([to_tensor(i) for i in images]), ks)

        def fill(out: np.ndarray) -> None:
            for k, image in enumerate(images):
                out[k] = image

        return samples._batch_into(ks, shape, fill)

    def loader(self, batch_size: int = 64, *, drop_last: bool = False, **kwargs: Any) -> DataLoader:
        """A DataLoader of whole batches, each decoded into shared memory inside its worker
        (as :meth:`ImageStoreDataset.loader`); keyword arguments (``num_workers``,
        ``persistent_workers``, ``pin_memory``, ...) go to DataLoader. The dataset does the
        shuffling: DataLoader's ``shuffle``, ``sampler`` and ``batch_sampler`` are refused."""
        refused = sorted({"shuffle", "sampler", "batch_sampler"} & kwargs.keys())
        if refused:
            raise InvalidInputError(
                f"{', '.join(refused)}: a StreamingImageDataset orders its own images "
                "(shuffle=, seed=, window= on the dataset)"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        dataset = copy.copy(self)
        dataset.samples = self.samples._for_loader(kwargs)
        dataset.batch_size, dataset.drop_last = batch_size, drop_last
        dataset._workers = max(kwargs.get("num_workers", 0), 1)
        return _StreamLoader(dataset, batch_size=None, **kwargs)

    def close(self) -> None:
        """Close this process's read handle (reopened on the next access)."""
        self.samples.close()


def _ceil_div(a: Any, b: int) -> Any:
    return -np.floor_divide(np.negative(a), b)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class _SpanReader:
    """A worker's reads for one plan: pieces (spans) in stream order, ``prefetch`` of them in
    flight on threads, each decoded image held until it is emitted."""

    def __init__(self, samples: ImageStoreDataset, plan: _spans.Plan, prefetch: int):
        self.samples, self.plan, self.prefetch = samples, plan, prefetch
        self.held: dict[int, np.ndarray] = {}
        self.read = 0  # stream positions read so far
        self.next_piece = 0
        self.pending: deque[Future] = deque()
        self.pool: ThreadPoolExecutor | None = None

    def _fetch(self, piece: int) -> tuple[int, list[np.ndarray]]:
        start, end = self.plan.pieces[piece], self.plan.pieces[piece + 1]
        samples = self.samples
        return int(start), samples._handle().get_batch(samples.ids[self.plan.stream[start:end]])

    def take(self, emit: np.ndarray, needed: int) -> list[np.ndarray]:
        """The images at stream positions ``emit``, once the first ``needed`` are read."""
        pieces = len(self.plan.pieces) - 1
        while self.read < needed:
            if self.pool is None:
                self.samples._handle()  # opened here, not concurrently on the pool's threads
                self.pool = ThreadPoolExecutor(self.prefetch, thread_name_prefix="h5store-span")
            while self.next_piece < pieces and len(self.pending) < self.prefetch:
                self.pending.append(self.pool.submit(self._fetch, self.next_piece))
                self.next_piece += 1
            start, images = self.pending.popleft().result()
            self.held.update(zip(range(start, start + len(images)), images))
            self.read = start + len(images)
        return [self.held.pop(int(k)) for k in emit]

    def close(self) -> None:
        for future in self.pending:
            future.cancel()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        self.held.clear()


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


class _StreamLoader(_SlotLoader):
    """``StreamingImageDataset.loader()``: each pass is the next epoch unless ``set_epoch``
    named one, and batches in worker slots are turned into tensors as :class:`_SlotLoader`
    does."""

    def __iter__(self) -> Iterator[Any]:
        epoch = self.dataset._epoch
        if epoch[1]:
            epoch[1] = 0
        else:
            epoch[0] = self.__dict__.get("_last_epoch", -1) + 1
        self.__dict__["_last_epoch"] = int(epoch[0])
        if self.dataset._slots is None:
            return DataLoader.__iter__(self)
        return super().__iter__()
