"""``h5store demo``: store the built-in sample photos and report on the file."""

from __future__ import annotations

import argparse
import time

import h5store

from ..repack import describe_codec
from ._common import _human, _print


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    demo = sub.add_parser(
        "demo",
        help="store the built-in sample photos and report on the file",
        description="Store crops of the photos shipped with scikit-image, with "
        "simulated predictions and scores, then query, read back and verify.",
    )
    demo.add_argument(
        "--out", default="h5store-demo.h5", help="file to write (default: %(default)s)"
    )
    demo.add_argument("--n", type=int, default=512, help="number of images (default: %(default)s)")
    demo.add_argument(
        "--size", type=int, default=224, help="image side in px (default: %(default)s)"
    )
    demo.add_argument("--codec", default="jpeg", choices=h5store.available_codecs())
    demo.add_argument("--quality", type=int, default=90, help="quality for lossy codecs (1-100)")
    demo.add_argument("--batch", type=int, default=64, help="images per add_batch call")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print JSON instead of text")
    return demo


def run(args: argparse.Namespace) -> int:
    from ..sample import sample_set

    t0 = time.perf_counter()
    sample = sample_set(args.n, args.size, seed=args.seed)
    t_sample = time.perf_counter() - t0
    t0 = time.perf_counter()
    with h5store.open(
        args.out, "w", codec=args.codec, quality=args.quality, labels=sample.class_names
    ) as store:
        for start in range(0, len(sample), args.batch):
            stop = start + args.batch
            store.add_batch(
                sample.images[start:stop],
                labels=sample.labels[start:stop],
                scores=sample.scores[start:stop],
                true_labels=sample.true_labels[start:stop],
                sources=[f"sample/{i}" for i in range(start, min(stop, len(sample)))],
            )
    t_write = time.perf_counter() - t0
    with h5store.open(args.out) as store:
        stats = store.stats()
        confident_wrong = store.query(min_score=0.9, correct=False)
        wrong = store.query(correct=False)
        t0 = time.perf_counter()
        for image_id in store:
            store[image_id]
        t_read = time.perf_counter() - t0
        report = store.verify()
    raw_bytes = sample.images.nbytes
    result = {
        **stats,
        "source": sample.source,
        "size_px": args.size,
        "codec": args.codec,
        "quality": args.quality,
        "raw_bytes": raw_bytes,
        "misclassified": len(wrong),
        "confident_but_wrong": len(confident_wrong),
        "write_seconds": round(t_write, 3),
        "read_all_seconds": round(t_read, 3),
        "verify_ok": report.ok,
    }
    per_label = ", ".join(f"{k} {v}" for k, v in stats["images_per_label"].items())
    lines = [
        f"h5store demo: {stats['images']} crops ({args.size}x{args.size} px) of the "
        f"{sample.source} in {len(stats['images_per_label'])} predicted classes "
        f"(sample made in {t_sample:.1f} s)",
        f"  stored in   {args.out} with "
        f"{describe_codec(h5store.get_codec(args.codec, quality=args.quality))} in {t_write:.2f} s "
        f"({stats['images'] / t_write:.0f} images/s)",
        f"  classes     {per_label}",
        f"  size        {_human(stats['file_bytes'])} on disk for {_human(stats['payload_bytes'])} "
        f"of encoded images (x{stats['file_bytes'] / stats['payload_bytes']:.3f}); "
        f"{_human(raw_bytes)} uncompressed (ratio {raw_bytes / stats['file_bytes']:.1f}:1)",
        f"  queries     {len(wrong)} misclassified, "
        f"{len(confident_wrong)} of them with score >= 0.9",
        f"  read back   all {stats['images']} images in {t_read:.2f} s; verify: {report}",
        f"  report      h5store report {args.out} -o report.html   (confusion matrix, "
        f"galleries; opens in a browser)",
        f"  next        h5store info {args.out}   |   h5store query {args.out} --min-score 0.9 "
        f"--correct no   |   h5store bench {args.out}",
    ]
    _print(result, args.json, lines)
    return 0
