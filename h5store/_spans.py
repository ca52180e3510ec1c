"""The streaming shuffle's plan: which images a reader reads, in which spans, in which order.

A span is a run of images adjacent in the file (index rows sorted by offset), about
``span_bytes`` of payload: one ranged read on a remote store. Each epoch the spans are put in a
random order and the resulting stream of images is cut into one contiguous slice per consumer
(DDP rank x DataLoader worker), so that every image is read by exactly one consumer and each
consumer reads whole spans except at its slice's two ends. Each consumer then shuffles its slice
within a window: every image gets the key ``position + U[0, window)`` and the images are emitted
in key order (MosaicML Streaming's py1e does this with its shuffle block; here the stream is
already span-permuted). An image therefore moves at most ``window`` places within its slice,
and a reader holds at most about ``window`` images read but not yet emitted.

Everything here is a pure function of (layout, seed, epoch, consumer): no torch, no store, so
the plan is the same in every process, and the tests and benchmarks can examine it directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def spans_of(shard: np.ndarray, offsets: np.ndarray, nbytes: np.ndarray, span_bytes: int):
    """(positions sorted by (shard, offset), start of each span in that order plus the end).

    A span holds the consecutive images whose payloads start within one ``span_bytes`` window
    of the selected images' payload bytes (counted per shard, so that leaving images out of a
    selection does not shrink the spans); a span never crosses shards."""
    order = np.lexsort((offsets, shard))
    shard, sizes = shard[order], nbytes[order].astype(np.int64)
    n = len(order)
    if n == 0:
        return order, np.zeros(1, np.int64)
    new_shard = np.r_[True, shard[1:] != shard[:-1]]
    before = np.cumsum(sizes) - sizes  # payload bytes of the selection before each image
    shard_start = np.maximum.accumulate(np.where(new_shard, before, 0))
    window = (before - shard_start) // max(int(span_bytes), 1)
    cut = new_shard | np.r_[True, window[1:] != window[:-1]]
    return order, np.r_[np.flatnonzero(cut), n].astype(np.int64)


@dataclass(frozen=True)
class Plan:
    """One consumer's epoch. ``stream``: dataset positions in read order; ``pieces``: where
    each read (a span, or the part of one at the slice's ends) starts in ``stream``, plus its
    end; ``order``: indices into ``stream`` in emission order."""

    stream: np.ndarray
    pieces: np.ndarray
    order: np.ndarray

    def emitted(self) -> np.ndarray:
        """Dataset positions in emission order."""
        return self.stream[self.order]

    def needed(self) -> np.ndarray:
        """For each emission step, how much of ``stream`` must have been read before it."""
        if not len(self.order):
            return self.order
        return np.maximum.accumulate(self.order) + 1


def plan(
    order: np.ndarray,
    bounds: np.ndarray,
    *,
    seed: int,
    epoch: int,
    shuffle: bool,
    window: int,
    consumer: int,
    consumers: int,
) -> Plan:
    """The plan of consumer ``consumer`` of ``consumers`` for ``epoch`` (see the module doc);
    ``order`` and ``bounds`` come from :func:`spans_of`. Without ``shuffle``: file order, no
    window."""
    n_spans = len(bounds) - 1
    lengths = np.diff(bounds)
    if shuffle:
        span_order = np.random.default_rng([seed, epoch]).permutation(n_spans)
    else:
        span_order = np.arange(n_spans)
    # The epoch's stream: spans in span_order, each in file order.
    starts = bounds[:-1][span_order]
    ends = np.cumsum(lengths[span_order])
    n = int(ends[-1]) if n_spans else 0
    within = np.arange(n) - np.repeat(ends - lengths[span_order], lengths[span_order])
    stream = order[np.repeat(starts, lengths[span_order]) + within]
    lo, hi = consumer * n // consumers, (consumer + 1) * n // consumers
    stream = stream[lo:hi]
    # Reads: the span boundaries falling inside this slice, plus its two ends.
    inside = ends[(ends > lo) & (ends < hi)] - lo
    pieces = np.unique(np.r_[0, inside, hi - lo]).astype(np.int64)
    m = hi - lo
    if shuffle and window > 1 and m > 1:
        rng = np.random.default_rng([seed, epoch, consumers, consumer])
        keys = np.arange(m) + rng.random(m) * window
        emit = np.argsort(keys, kind="stable")
    else:
        emit = np.arange(m)
    return Plan(stream, pieces, emit)
