"""Small helpers shared by the benchmarks: payloads, timing, disk usage, result files.

Timing rules every benchmark here follows:
* a measurement repeats its pass until ``min_seconds`` have gone by, so fast and slow contenders
  are timed over a similar wall-clock span, and returns a rate;
* each pass keeps what it produced (decoded arrays, fetched bytes) alive until the pass ends,
  so allocation patterns are the same for every contender (decode speed here swings ~10 %
  with where the output lands in memory);
* the caller repeats measurements and reports medians.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import imagecodecs
import numpy as np

QUALITY = 90


@dataclass
class Payloads:
    """One image set, encoded once: every contender stores exactly these bytes."""

    size: int
    images: np.ndarray  # (N, size, size, 3) uint8, for the ingest-with-encoding test
    payloads: list[bytes]  # JPEG q90 of each image
    labels: np.ndarray  # predicted class id per image (int32)
    true_labels: np.ndarray  # true class id per image (int32)
    scores: np.ndarray  # top-1 score per image (float32)
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.payloads)

    @property
    def payload_bytes(self) -> int:
        return sum(len(p) for p in self.payloads)


def encode(image: np.ndarray) -> bytes:
    return imagecodecs.jpeg8_encode(image, level=QUALITY)


def make_payloads(n: int, size: int, seed: int = 0) -> Payloads:
    """``n`` crops of the scikit-image photos (h5store's sample set), JPEG q90 encoded once."""
    from h5store.sample import sample_set

    s = sample_set(n, size, seed=seed)
    index = {name: k for k, name in enumerate(s.class_names)}
    return Payloads(
        size=size,
        images=s.images,
        payloads=[encode(img) for img in s.images],
        labels=np.array([index[x] for x in s.labels], dtype=np.int32),
        true_labels=np.array([index[x] for x in s.true_labels], dtype=np.int32),
        scores=s.top1.astype(np.float32),
        class_names=list(s.class_names),
    )


def batches(n: int, size: int) -> list[slice]:
    return [slice(k, min(k + size, n)) for k in range(0, n, size)]


# --------------------------------------------------------------------------- timing


#: Clock for one-thread work: the CPU time of the whole process (every thread, so work a
#: library hands to a helper thread, like zarr's event loop, counts). On this shared machine
#: other jobs take the core for whole time slices; CPU time leaves those out, and equals wall
#: time on a quiet machine. Work on two threads is timed on the wall clock, which is the point.
CPU = time.process_time
WALL = time.perf_counter


def rate(
    one_pass: Callable[[], int], min_seconds: float, clock: Callable[[], float] = WALL
) -> float:
    """Operations per second: run ``one_pass`` (returns its operation count) until at least
    ``min_seconds`` have elapsed. Whatever a pass returns is dropped only after it is timed."""
    done = 0
    start = clock()
    while True:
        done += one_pass()
        elapsed = clock() - start
        if elapsed >= min_seconds:
            return done / elapsed


def paired_rates(
    pass_a: Callable[[], int],
    pass_b: Callable[[], int],
    min_seconds: float,
    clock: Callable[[], float] = WALL,
) -> tuple[float, float]:
    """Rates of two passes run alternately until each has had ``min_seconds``. On a shared
    machine the load changes over seconds; alternating pass by pass puts both under the same
    load, so their ratio holds even when the absolute rates drift."""
    done, spent = [0, 0], [0.0, 0.0]
    order = [0, 1]
    while min(spent) < min_seconds:
        for k in order:
            start = clock()
            done[k] += (pass_a, pass_b)[k]()
            spent[k] += clock() - start
        order.reverse()  # A B B A ...: neither always runs right after the other warmed up
    return done[0] / spent[0], done[1] / spent[1]


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def rotated(items: Sequence, k: int) -> list:
    """``items`` rotated by ``k``: repetition k starts with a different contender, so that no
    contender always runs first (cold) or right after the heaviest one."""
    k %= len(items)
    return list(items[k:]) + list(items[:k])


# --------------------------------------------------------------------------- h5store modes


def has_group_commit() -> bool:
    """Whether this h5store defers commits (group commit: ``store.commit`` exists and
    ``h5store.open`` takes ``durability=``); asked of a real store, so a benchmark runs against
    an h5store with or without it and labels its rows accordingly."""
    import shutil
    import tempfile

    import h5store

    tmp = tempfile.mkdtemp(prefix="h5store-probe-", dir="/tmp")
    try:
        with h5store.open(os.path.join(tmp, "probe.h5"), "w") as store:
            return hasattr(store, "commit")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- disk


def disk_usage(path: str) -> tuple[int, int, int]:
    """(files, apparent bytes, allocated bytes) of a file or a folder tree."""
    paths = [path]
    if os.path.isdir(path):
        paths = [os.path.join(d, f) for d, _, files in os.walk(path) for f in files]
    stats = [os.stat(p) for p in paths]
    return len(stats), sum(s.st_size for s in stats), sum(s.st_blocks * 512 for s in stats)


# --------------------------------------------------------------------------- output


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def command_line() -> str:
    args = [os.path.relpath(sys.argv[0])] + sys.argv[1:]
    return "python " + " ".join(shlex.quote(a) for a in args)


def machine() -> dict:
    """What the numbers were measured on, including which h5store (the tree may be dirty): the
    one imported, which is not this checkout's when h5store is installed from another one."""
    import subprocess

    import h5py

    import h5store

    package = os.path.dirname(os.path.abspath(h5store.__file__))
    repo = os.path.dirname(package)

    def git(*args):
        try:
            return subprocess.run(
                ["git", "-C", repo, *args], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    return {
        "h5store_commit": git("rev-parse", "--short", "HEAD"),
        "h5store_dirty": bool(git("status", "--porcelain", "--", package)),
        "h5store_path": package,
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version,
        "imagecodecs": imagecodecs.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def write_results(out_dir: str, name: str, markdown: str, data: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as fh:
        fh.write(markdown.rstrip() + "\n")
    with open(os.path.join(out_dir, f"{name}.json"), "w") as fh:
        json.dump(data, fh, indent=1, default=float)
        fh.write("\n")
