"""How close is the streaming shuffle (``StreamingImageDataset``) to a full shuffle?

    python benchmarks/shuffle_quality.py [--n 50000] [--classes 100] [--batch 64]

The order depends only on where images lie in the file (the index's offsets and sizes), so the
store here holds tiny raw images and ``span_bytes`` is set to hold a given number of images
per span: at 224 px a JPEG q90 is ~20 kB, so the default 4 MiB span is ~200 images. Images
are written class by class (as an import from a folder per class writes them): the worst case
for class mixing. For each (images per span, window) and the two baselines (no shuffle, a full
permutation) it prints, over one epoch read by one worker:

* **displacement**: |position read - position in the file| / n, per image: median, mean and
  10th/90th percentiles (a full permutation: mean 1/3, median 0.29);
* **neighbour gap**: how many places apart two images adjacent in the file are read (median):
  what the spans keep together (1 without shuffling, ~n/3 for a full permutation);
* **classes per batch**: distinct classes in a batch of ``--batch`` (mean), and as a fraction
  of a full permutation's; and the largest share one class takes of a batch (mean).

Uses only h5store's public API (``StreamingImageDataset.epoch_ids``; nothing is decoded).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

import h5store
from h5store.torch import StreamingImageDataset

PIXELS = 8 * 8 * 3  # bytes of one raw image here


def metrics(order: np.ndarray, classes: np.ndarray, batch: int) -> dict[str, float]:
    """``order``: file positions (= ids here) in the order read."""
    n = len(order)
    read_at = np.empty(n, np.int64)
    read_at[order] = np.arange(n)
    moved = np.abs(read_at - np.arange(n)) / n
    gap = np.abs(np.diff(read_at))
    whole = n // batch * batch
    batches = classes[order[:whole]].reshape(-1, batch)
    distinct = [len(np.unique(b)) for b in batches]
    top = [np.bincount(b).max() / batch for b in batches]
    return {
        "median": float(np.median(moved)),
        "mean": float(moved.mean()),
        "p10": float(np.percentile(moved, 10)),
        "p90": float(np.percentile(moved, 90)),
        "gap": float(np.median(gap)),
        "distinct": float(np.mean(distinct)),
        "top": float(np.mean(top)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--spans", type=int, nargs="+", default=[50, 200, 800])
    parser.add_argument("--windows", type=int, nargs="+", default=[0, 512, 2048, 8192])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    n = args.n
    classes = np.arange(n) * args.classes // n  # written class by class
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "quality.h5")
        images = np.random.default_rng(0).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        with h5store.open(path, "w", codec="raw") as store:
            ids = store.add_batch(images, labels=[f"c{c}" for c in classes])
        assert list(ids) == list(range(n))

        rows = []
        plain = StreamingImageDataset(path, target=None, shuffle=False)
        rows.append(("no shuffle", "", metrics(plain.epoch_ids(0), classes, args.batch)))
        for per_span in args.spans:
            for window in args.windows:
                ds = StreamingImageDataset(
                    path, target=None, seed=args.seed, span_bytes=per_span * PIXELS, window=window
                )
                quality = metrics(ds.epoch_ids(0), classes, args.batch)
                rows.append((f"{per_span}", f"{window}", quality))
        full = np.random.default_rng(args.seed).permutation(n)
        rows.append(("full permutation", "", metrics(full, classes, args.batch)))

    reference = rows[-1][2]["distinct"]
    print(
        f"n = {n} images, {args.classes} classes written class by class "
        f"({n // args.classes} each), batches of {args.batch}, one worker, epoch 0\n"
    )
    print(
        "| images per span | window | displacement median | mean | p10 | p90 "
        "| neighbour gap (median) | classes per batch | vs full | top class share |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for span, window, m in rows:
        print(
            f"| {span} | {window} | {m['median']:.3f} | {m['mean']:.3f} | {m['p10']:.3f} "
            f"| {m['p90']:.3f} | {m['gap']:.0f} | {m['distinct']:.1f} "
            f"| {m['distinct'] / reference:.2f} | {m['top']:.2f} |"
        )


if __name__ == "__main__":
    main()
