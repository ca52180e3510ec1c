"""The one place h5store runs work on threads: encoding on ingest, decoding in get_batch, and
one background thread for side work a writer overlaps with its writes (preview thumbnails).

imagecodecs, blosc2 and zlib release the GIL, so plain threads scale across cores. Work is cut
into contiguous slices rather than one task per image, so that tiny images do not drown in task
overhead, and a batch too small to pay for waking a thread is done inline.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_threads = max(1, os.cpu_count() or 1)
_background: ThreadPoolExecutor | None = None


def set_threads(n: int) -> None:
    """Set the number of threads h5store encodes and decodes with (default: one per core).

    The thread calling ``add_batch`` writes the images of earlier calls while they encode
    its own; class previews' thumbnails are drawn on one more background thread.

    Parameters
    ----------
    n
        Threads, at least 1.

    Raises
    ------
    ValueError
        ``n < 1``.
    """
    global _threads, _pool
    if n < 1:
        raise ValueError("threads must be >= 1")
    with _lock:
        _threads = int(n)
        if _pool is not None:
            _pool.shutdown(wait=False)
            _pool = None


def get_threads() -> int:
    """The number of threads h5store encodes and decodes with (see :func:`set_threads`).

    Returns
    -------
    int
        Threads in h5store's pool.
    """
    return _threads


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_threads, thread_name_prefix="h5store")
        return _pool


def _forget_pool_after_fork() -> None:
    # A forked child (DataLoader worker) inherits the executor object but not its threads.
    global _pool, _lock, _background
    _pool = None
    _background = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def in_background(fn: Callable[..., R], *args: object) -> Future[R]:
    """Run ``fn(*args)`` on h5store's one background thread: apart from the codec pool, so
    that side work neither waits behind a batch's encoding nor holds it up."""
    global _background
    with _lock:
        if _background is None:
            _background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="h5store-side")
        return _background.submit(fn, *args)


#: Payload bytes a thread decoding part of a batch gets at least (``decode_threads``): about
#: 2 ms of JPEG decoding, against tens of microseconds to wake a thread (far more on a busy
#: machine). On 1 kB JPEGs, two threads decoding a batch of 64 had run at 0.70 x one.
DECODE_BYTES_PER_THREAD = 256 << 10


def decode_threads(payload_bytes: int) -> int:
    """How many threads to decode a batch of ``payload_bytes`` stored bytes with."""
    return max(1, min(_threads, payload_bytes // DECODE_BYTES_PER_THREAD))


def thread_map(fn: Callable[[T], R], items: Sequence[T], threads: int | None = None) -> list[R]:
    """``[fn(x) for x in items]``, spread over ``threads`` threads (default: all of the pool's)
    with the calling thread among them. Exceptions propagate (the first item's, where
    several fail)."""
    n = len(items)
    workers = min(_threads if threads is None else threads, n)
    if workers <= 1:
        return [fn(x) for x in items]
    # Slices (several per thread, not one task per item: tiny items would drown in task
    # overhead) are claimed in order from one iterator, so that a thread the machine leaves
    # without a core does not hold up the batch: the others take its share.
    size = -(-n // (8 * workers))
    starts = iter(range(0, n, size))  # next() runs under the GIL: each slice goes to one thread
    out: list = [None] * n
    failed: list[tuple[int, Exception]] = []

    def run() -> None:
        # Slices are claimed in order and every claimed slice is finished, so the failure
        # with the lowest start is that of the first failing item.
        while not failed:
            start = next(starts, None)
            if start is None:
                return
            try:
                out[start : start + size] = [fn(x) for x in items[start : start + size]]
            except Exception as exc:
                failed.append((start, exc))

    pool = _get_pool()
    futures = [pool.submit(run) for _ in range(workers - 1)]
    run()  # the calling thread takes slices too instead of waiting idle
    for fut in futures:
        if not fut.cancel():  # (one that never started had nothing left to do)
            fut.result()
    if failed:
        raise min(failed, key=lambda failure: failure[0])[1]
    return out


def _guided_slices(n: int, workers: int, largest: int) -> list[tuple[int, int]]:
    """Slices of ``range(n)`` that shrink towards the end (guided scheduling): large ones
    while there is plenty left, so task overhead stays small, then smaller and smaller, so
    the threads finish together and none idles through the last slice of a batch. The first
    ones grow from 2, so that every thread has work almost at once."""
    slices: list[tuple[int, int]] = []
    start = 0
    while start < n:
        size = max(1, min(largest, (n - start) // (2 * workers), 2 << len(slices)))
        slices.append((start, start + size))
        start += size
    return slices


class InOrder(Iterator[R]):
    """Results of ``fn`` over ``items``, computed on the pool from the moment this is made and
    yielded in order, so that the caller does other work (``add_batch``: validating the batch,
    committing the group before it) while the pool encodes. :meth:`close` cancels what has
    not started."""

    def __init__(self, fn: Callable[[T], R], items: Sequence[T], chunk: int = 16):
        n = len(items)
        self._futures: list[Future[list[R]]] = []
        if n <= chunk:  # not worth a thread
            self._results: Iterator[R] = map(fn, items)
            return
        pool = _get_pool()

        def compute(start: int, stop: int) -> list[R]:
            return [fn(x) for x in items[start:stop]]

        self._futures = [
            pool.submit(compute, start, stop) for start, stop in _guided_slices(n, _threads, chunk)
        ]
        self._results = (result for fut in self._futures for result in fut.result())

    def __next__(self) -> R:
        return next(self._results)

    def close(self) -> None:
        for fut in self._futures:
            fut.cancel()


def submit(fn: Callable[..., R], *args: object) -> Future[R]:
    """Run ``fn(*args)`` on the codec pool (the encoding of a few one-image calls' images)."""
    return _get_pool().submit(fn, *args)
