"""How long the HTML report takes, and how big it gets, as a store grows.

    python benchmarks/report_speed.py [--sizes 100000,1000000] [--demo h5store-demo.h5] [--out DIR]

Each store holds pre-encoded 64 px JPEG q90 crops of the scikit-image photos; a pool of 256
distinct payloads is reused cyclically (the report decodes a few hundred images whatever the
store's size, so distinct pixels do not matter past that), with labels, true labels (80 % right)
and scores drawn at random over ``--classes`` classes. Reported per size: seconds to build the
report (median of ``--repeat`` runs, the sizes taking turns) and its bytes. ``h5store demo``'s
store (512 images of 224 px, 8 classes) is measured too with ``--demo FILE``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import imagecodecs
import numpy as np
from _util import command_line, machine

import h5store

POOL = 256
BATCH = 8192


def build_store(path: str, n: int, classes: int, seed: int = 0) -> None:
    from h5store.sample import sample_set

    sample = sample_set(POOL, 64, seed=seed)
    pool = [imagecodecs.jpeg8_encode(image, level=90) for image in sample.images]
    names = [f"class {k:03d}" for k in range(classes)]
    rng = np.random.default_rng(seed)
    with h5store.open(path, "w", labels=names) as store:
        for start in range(0, n, BATCH):
            m = min(BATCH, n - start)
            truth = rng.integers(0, classes, m)
            predicted = np.where(rng.random(m) < 0.8, truth, rng.integers(0, classes, m))
            scores = np.where(predicted == truth, rng.beta(5, 2, m), rng.beta(2, 3, m))
            store.add_encoded_batch(
                [pool[(start + k) % POOL] for k in range(m)],
                labels=predicted.tolist(),
                true_labels=truth.tolist(),
                scores=scores.astype(np.float32),
            )


def time_report(path: str, out: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    h5store.report(path, out, progress=False)
    return time.perf_counter() - t0, os.path.getsize(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--demo", help="also time the report of this store (h5store demo's)")
    parser.add_argument("--out", help="folder for report.md (default: print only)")
    args = parser.parse_args(argv)

    # All stores first; then each repetition times every store, so machine noise lands on
    # every size alike.
    stores = []  # (name, path, images, classes)
    with tempfile.TemporaryDirectory() as tmp:
        if args.demo:
            with h5store.open(args.demo) as store:
                stores.append(
                    (os.path.basename(args.demo), args.demo, len(store), len(store.labels))
                )
        for n in [int(s) for s in args.sizes.split(",") if s]:
            path = os.path.join(tmp, f"{n}.h5")
            build_store(path, n, args.classes)
            stores.append((f"synthetic {n:,}", path, n, args.classes))
        seconds = {name: [] for name, *_ in stores}
        sizes = {}
        for _ in range(args.repeat):
            for name, path, _, _ in stores:
                took, sizes[name] = time_report(path, os.path.join(tmp, "r.html"))
                seconds[name].append(took)
                print(f"{name}: {took:.2f} s", file=sys.stderr)
    rows = [(name, n, k, statistics.median(seconds[name]), sizes[name]) for name, _, n, k in stores]

    m = machine()
    load = ", ".join(f"{x:.2f}" for x in m["load_average"])
    lines = [
        (
            f"`{command_line()}`: h5store {m['h5store_commit']}"
            f"{' (dirty)' if m['h5store_dirty'] else ''}, {m['cpus']} CPUs, load {load}, "
            f"{m['date']}"
        ),
        "",
        "| store | images | classes | report build (s, median) | report size (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {name} | {n:,} | {k} | {s:.2f} | {b / 1e6:.2f} |" for name, n, k, s, b in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(os.path.join(args.out, "report.md"), "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
