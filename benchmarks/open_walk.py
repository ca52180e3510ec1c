"""What refusing outside references costs at open (issue 22, item 1): ``h5store.open`` (a
reader) with the containment walk and HDF5's refusing access list, against the same open with
both switched off, alternated in one run, medians of many opens (the file in the page cache, as
for a warm open), wall-clock and CPU time.

    python benchmarks/open_walk.py [--images 100000] [--repeat 41]

Stores: the demo's (``h5store demo``) and one of ``--images`` small JPEGs in ten classes
(written once with ``add_encoded_batch``, kept in ``--dir``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time

import h5py
import imagecodecs
import numpy as np

import h5store
from h5store import _file


def demo_store(folder: str) -> str:
    path = os.path.join(folder, "demo.h5")
    if not os.path.exists(path):
        subprocess.run(
            [sys.executable, "-m", "h5store.cli", "demo", "--out", path],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def large_store(folder: str, n: int) -> str:
    path = os.path.join(folder, f"jpeg-{n}.h5")
    if os.path.exists(path):
        return path
    rng = np.random.default_rng(0)
    payloads = [
        imagecodecs.jpeg8_encode(rng.integers(0, 255, (16, 16, 3), np.uint8), level=90)
        for _ in range(64)
    ]
    labels = [f"class{k}" for k in range(10)]
    with h5store.open(path, "w", labels=labels) as store:
        for start in range(0, n, 10_000):
            count = min(10_000, n - start)
            store.add_encoded_batch(
                [payloads[k % 64] for k in range(start, start + count)],
                labels=[labels[k % 10] for k in range(start, start + count)],
                scores=rng.random(count, dtype=np.float32),
            )
    return path


@contextlib.contextmanager
def unguarded():
    """The open as it was before: no walk, plain h5py.File."""
    saved = _file.check_contained, _file.ContainedFile
    _file.check_contained, _file.ContainedFile = (lambda f, path, **_: None), h5py.File
    try:
        yield
    finally:
        _file.check_contained, _file.ContainedFile = saved


def open_seconds(path: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one open and close. CPU time counts every thread (the index is
    inflated on several) and is what a loaded machine leaves comparable."""
    wall, cpu = time.perf_counter(), time.process_time()
    h5store.open(path).close()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(path: str, repeat: int) -> dict[str, tuple[float, float]]:
    """Medians of (wall, CPU) seconds, without and with the walk, alternated."""
    runs: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
    open_seconds(path)  # page cache
    for _ in range(repeat):
        runs["with"].append(open_seconds(path))
        with unguarded():
            runs["without"].append(open_seconds(path))
    return {
        key: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
        for key, values in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=41)
    parser.add_argument("--dir", default="/tmp/h5store-open-walk")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    for name, path in (
        ("demo", demo_store(args.dir)),
        (f"{args.images} JPEGs", large_store(args.dir, args.images)),
    ):
        with h5store.open(path) as store:
            classes = len(store.labels)
        result = compare(path, args.repeat)
        for k, clock in enumerate(("wall", "CPU")):
            plain, guarded = result["without"][k], result["with"][k]
            print(
                f"{name:>14} ({classes} classes), {clock:>4}: open without the walk "
                f"{plain * 1e3:.2f} ms, with {guarded * 1e3:.2f} ms: {guarded / plain:.3f} x "
                f"(+{(guarded - plain) * 1e6:.0f} us; medians of {args.repeat})"
            )


if __name__ == "__main__":
    main()
