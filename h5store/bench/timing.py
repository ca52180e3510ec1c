"""Throughput with one and with two threads, from the one pass over the images that the
benchmark needs anyway.

Seconds are CPU seconds of the thread doing the work (:func:`time.thread_time`), not wall
time: on a shared machine a thread waiting for a core accrues none, so other processes' load
does not slow the numbers down (wall time on a loaded 2-core machine had made encoders look
4-9 times slower than they are, and one thread faster than two). Every codec is called with
one internal thread (``numthreads=1``), so the measuring thread's CPU time is all the codec
spends. The two-thread rate is a block's pixels over the CPU seconds of the busier of its two
threads: what two free cores give, counting contention for memory and caches but not time
spent waiting for the other thread (imagecodecs releases the GIL while coding).

A few small blocks of images run on one thread; the rest, in ``repeats`` large blocks, on two
(each half of a block on its own thread). Every image is thus encoded and decoded once, mostly
on both cores, which keeps slow codecs inside the time budget; each mode's number is the median
over its blocks, so one hiccup of a shared machine does not move it, and the blocks of the two
modes alternate so that a change in the machine's load hits both. Only a block shorter than
:data:`MIN_BLOCK_SECONDS` (a fast codec, few images) is run again until it lasts that long. The
input is a random sample, so blocks are alike; every codec setting sees the same blocks in the
same modes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Throughput:
    """Megapixels per second (median over blocks); None where there were too few images."""

    one_thread: float | None
    two_threads: float | None


#: Shortest a timed block may last (CPU seconds): a shorter one (a 4-image block of JPEG
#: decodes in half a millisecond) is run again until it lasts this long, so that the per-call
#: overhead and the clock's resolution (about a microsecond) stay under 1 %. CPU time does not
#: charge waking a thread, so this can be short; at 20 ms, re-running the fast codecs' blocks
#: took 5 of the 17 CPU seconds of a ``--quick`` run.
MIN_BLOCK_SECONDS = 0.005
#: Images in each one-thread block: enough for a stable rate, few enough that a codec encoding
#: 1 MP/s spends under a second a block.
SINGLE_BLOCK = 16


def block_plan(count: int, repeats: int) -> list[tuple[np.ndarray, int]]:
    """(positions, threads) of each block, one-thread and two-thread blocks alternating."""
    per = max(1, min(SINGLE_BLOCK, count // (2 * repeats)))
    singles = [np.arange(k * per, (k + 1) * per) for k in range(min(repeats, count // per))]
    rest = np.arange(len(singles) * per, count)
    doubles = np.array_split(rest, min(repeats, len(rest) // 2)) if len(rest) >= 2 else []
    plan = []
    for k in range(max(len(singles), len(doubles))):
        plan += [(singles[k], 1)] if k < len(singles) else []
        plan += [(doubles[k], 2)] if k < len(doubles) else []
    if len(rest) == 1:  # too few images for a two-thread block
        plan.append((rest, 1))
    return plan


class BlockTimer:
    """Runs a function over items block by block as :func:`block_plan` says, and times it."""

    def __init__(self, repeats: int):
        if repeats < 1:
            raise ValueError("repeats must be >= 1")
        self.repeats = repeats
        # One pool for the whole benchmark: starting threads inside a timed block would be
        # charged to the codec.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="h5store-bench")

    def close(self) -> None:
        self._pool.shutdown()

    def __enter__(self) -> BlockTimer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], pixels: Sequence[int]
    ) -> tuple[list[R], Throughput]:
        """``[fn(x) for x in items]`` and the throughput in megapixels (``pixels[k]`` of item k)
        per second, with one and with two threads."""
        # (every slot is filled below, by the one or two threads' runs)
        results: list[R] = [None] * len(items)  # type: ignore[list-item]
        rates: dict[int, list[float]] = {1: [], 2: []}
        for block, threads in block_plan(len(items), self.repeats):
            passes = 1
            outputs, seconds = self._run_block(fn, items, block, threads, passes)
            if seconds < MIN_BLOCK_SECONDS:  # too quick for the clock: time enough passes
                passes = min(1000, math.ceil(MIN_BLOCK_SECONDS / max(seconds, 1e-6)))
                outputs, seconds = self._run_block(fn, items, block, threads, passes)
            for k, out in zip(block, outputs):
                results[k] = out
            rates[threads].append(passes * sum(pixels[k] for k in block) / 1e6 / seconds)
        return results, Throughput(
            *(float(np.median(rates[t])) if rates[t] else None for t in (1, 2))
        )

    def _run_block(
        self, fn: Callable[[T], R], items: Sequence[T], block: np.ndarray, threads: int, passes: int
    ) -> tuple[list[R], float]:
        """Outputs of ``fn`` over the block and the CPU seconds ``passes`` runs of it took
        (of the busier thread, with two). Each thread repeats its own half, so that waking it
        is paid once, not once a pass."""

        def work(part: np.ndarray) -> tuple[list[R], float]:
            start = time.thread_time()
            for _ in range(passes):
                out = [fn(items[k]) for k in part]
            return out, time.thread_time() - start

        if threads == 1:
            return work(block)
        futures = [self._pool.submit(work, half) for half in np.array_split(block, 2)]
        done = [future.result() for future in futures]
        return [x for out, _ in done for x in out], max(seconds for _, seconds in done)

    def parallel_map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Untimed ``[fn(x) for x in items]`` over both threads (for the metrics)."""
        return list(self._pool.map(fn, items))
