"""Many writers, one store: Dask ingest against one process, merge against ``cp``, the sharded
view against the merged file.

    python benchmarks/shards.py [--n 5000] [--size 224] [--workers 2] [--reps 3] [--quick]

* **Ingest.** An ImageFolder of PNG files (so every image is decoded and JPEG q90 encoded: the
  work) stored by ``h5store.folders.import_folder`` in this process, against
  ``h5store.distributed.ingest`` on a LocalCluster of ``--workers`` processes (started once,
  outside the timing; its start-up is reported apart). The single process is timed twice: with
  h5store's encoder threads limited to one (``set_threads(1)``: one core, as a script that is
  not parallel) and with its default (one thread per core). Dask's time includes the merge.
* **Merge.** ``h5store.merge`` of the shards the ingest kept, against ``cp`` of the same files,
  alternating, both from and to the page cache; rate = shard bytes / seconds.
* **Sharded view.** Reading every image by id (``store[id]``, shuffled ids, one thread) and in
  batches of 64 (``get_batch``) from ``h5store.open(shards)`` against the merged file, paired
  passes on the CPU clock; at ``--size`` and at 32 px, with two shards whose ids interleave as
  DDP ranks' do.

Medians of ``--reps``. Uses only h5store's public API.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import tempfile
import time

import imagecodecs
import numpy as np
from _util import (
    CPU,
    command_line,
    machine,
    make_payloads,
    markdown_table,
    median,
    paired_rates,
    write_results,
)

import h5store
import h5store.distributed
from h5store.folders import import_folder


def write_folder(root: str, data) -> None:
    for k, (image, label) in enumerate(zip(data.images, data.labels)):
        folder = os.path.join(root, data.class_names[label])
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{k:06d}.png"), "wb") as fh:
            fh.write(imagecodecs.png_encode(image, level=1))


def time_single(folder: str, out: str, threads: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process)."""
    before = h5store.get_threads()
    h5store.set_threads(threads)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        with h5store.open(out, "w", codec="jpeg", quality=90) as store:
            import_folder(store, folder, progress=False)
        return time.perf_counter() - start, time.process_time() - cpu
    finally:
        h5store.set_threads(before)
        os.unlink(out)


def time_dask(client, folder: str, out: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds on the busiest worker plus in this process, which merges and
    runs the scheduler): what the wall time would be with a free core per worker."""
    cpu_before = client.run(time.process_time)
    start, cpu = time.perf_counter(), time.process_time()
    h5store.distributed.ingest(folder, out, client=client, codec="jpeg", quality=90)
    elapsed, here = time.perf_counter() - start, time.process_time() - cpu
    cpu_after = client.run(time.process_time)
    os.unlink(out)
    return elapsed, max(cpu_after[w] - cpu_before[w] for w in cpu_after) + here


def time_merge(shards: list[str], out: str) -> float:
    start = time.perf_counter()
    h5store.merge(shards, out)
    elapsed = time.perf_counter() - start
    os.unlink(out)
    return elapsed


def time_cp(shards: list[str], target: str) -> float:
    os.makedirs(target)
    start = time.perf_counter()
    subprocess.run(["cp", *shards, target], check=True)
    elapsed = time.perf_counter() - start
    shutil.rmtree(target)
    return elapsed


def rank_shards(work: str, data, size: int) -> tuple[list[str], str]:
    """Two shards with ids interleaved as DDP ranks write them, and their merge."""
    if size != data.size:
        from _util import encode

        from h5store.sample import sample_set

        images = sample_set(len(data), size, seed=1).images
        payloads = [encode(image) for image in images]
    else:
        payloads = data.payloads
    names = [data.class_names[k] for k in data.labels]
    shards = []
    for rank in range(2):
        path = os.path.join(work, f"view{size}-rank{rank}.h5")
        with h5store.open(path, "w", labels=data.class_names) as store:
            mine = list(range(rank, len(payloads), 2))
            store.add_encoded_batch(
                [payloads[i] for i in mine],
                labels=[names[i] for i in mine],
                scores=data.scores[mine],
                ids=mine,
            )
        shards.append(path)
    merged = os.path.join(work, f"view{size}-merged.h5")
    h5store.merge(shards, merged)
    return shards, merged


def view_rates(
    shards: list[str], merged: str, min_seconds: float
) -> dict[str, tuple[float, float]]:
    with h5store.open(shards) as view, h5store.open(merged) as one:
        ids = np.random.default_rng(0).permutation(one.ids()).tolist()
        batches = [ids[k : k + 64] for k in range(0, len(ids), 64)]

        def by_id(store):
            def one_pass():
                kept = [store[i] for i in ids]
                return len(kept)

            return one_pass

        def by_batch(store):
            def one_pass():
                kept = [store.get_batch(b) for b in batches]
                return sum(len(b) for b in kept)

            return one_pass

        h5store.set_threads(1)
        try:
            single = paired_rates(by_id(view), by_id(one), min_seconds, clock=CPU)
        finally:
            h5store.set_threads(os.cpu_count() or 1)
        batch = paired_rates(by_batch(view), by_batch(one), min_seconds)
    return {"store[id], 1 thread": single, "get_batch(64), threads": batch}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--min-seconds", type=float, default=1.0, help="per side of each view comparison"
    )
    parser.add_argument("--quick", action="store_true", help="1,000 images, 1 repetition")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.reps, args.min_seconds = 1000, 1, 0.3

    import distributed

    data = make_payloads(args.n, args.size)
    work = tempfile.mkdtemp(prefix="h5store-shards-")
    try:
        folder = os.path.join(work, "folder")
        write_folder(folder, data)
        started = time.perf_counter()
        cluster = distributed.LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        client = distributed.Client(cluster)
        client.wait_for_workers(args.workers)
        cluster_start = time.perf_counter() - started
        try:
            out = os.path.join(work, "out.h5")
            ingest: dict[str, list[float]] = {
                "one process, 1 thread": [],
                "one process, default threads": [],
                f"Dask, {args.workers} workers": [],
            }
            for rep in range(args.reps):
                runs = [
                    ("one process, 1 thread", lambda: time_single(folder, out, 1)),
                    (
                        "one process, default threads",
                        lambda: time_single(folder, out, os.cpu_count() or 1),
                    ),
                    (f"Dask, {args.workers} workers", lambda: time_dask(client, folder, out)),
                ]
                for name, run in runs if rep % 2 == 0 else runs[::-1]:
                    ingest[name].append(run())
            shards = h5store.distributed.ingest(folder, out, client=client, keep_shards=True)
        finally:
            client.close()
            cluster.close()

        shard_bytes = sum(os.path.getsize(p) for p in shards)
        merge_s: list[float] = []
        cp_s: list[float] = []
        for rep in range(max(3, args.reps)):
            pair = [
                lambda: merge_s.append(time_merge(shards, os.path.join(work, "merged.h5"))),
                lambda: cp_s.append(time_cp(shards, os.path.join(work, "copied"))),
            ]
            for run in pair if rep % 2 == 0 else pair[::-1]:
                run()

        views = {}
        for size in dict.fromkeys([args.size, 32]):
            rank_files, merged = rank_shards(work, data, size)
            reps = [view_rates(rank_files, merged, args.min_seconds) for _ in range(args.reps)]
            for what in reps[0]:
                views[(size, what)] = (
                    median([r[what][0] for r in reps]),
                    median([r[what][1] for r in reps]),
                )

        where = machine()
        wall = {name: median([w for w, _ in runs]) for name, runs in ingest.items()}
        cpu = {name: median([c for _, c in runs]) for name, runs in ingest.items()}
        base, base_cpu = wall["one process, 1 thread"], cpu["one process, 1 thread"]
        ingest_rows = [
            [
                name,
                f"{wall[name]:.2f}",
                f"{args.n / wall[name]:,.0f}",
                f"{base / wall[name]:.2f}",
                *(
                    (f"{cpu[name]:.2f}", f"{base_cpu / cpu[name]:.2f}")
                    if "default" not in name
                    else ("—", "—")
                ),
            ]
            for name in ingest
        ]
        merge_rate, cp_rate = shard_bytes / median(merge_s) / 1e9, shard_bytes / median(cp_s) / 1e9
        merge_rows = [
            [
                "h5store.merge",
                f"{median(merge_s):.3f}",
                f"{merge_rate:.2f}",
                f"{merge_rate / cp_rate:.2f}",
            ],
            ["cp", f"{median(cp_s):.3f}", f"{cp_rate:.2f}", "1.00"],
        ]
        view_rows = [
            [f"{size} px", what, f"{v:,.0f}", f"{m:,.0f}", f"{v / m:.3f}"]
            for (size, what), (v, m) in views.items()
        ]
        md = (
            f"# Shards: Dask ingest, merge, sharded view\n\n"
            f"Produced by `{command_line()}` on {where['date']} ({where['cpus']} cores, load "
            f"average {where['load_average'][0]:.1f}; h5store {where['h5store_commit']}).\n\n"
            f"## Ingest of {args.n:,} images of {args.size} px (PNG files -> JPEG q90)\n\n"
            f"Medians of {args.reps} runs; the LocalCluster started once in {cluster_start:.1f} s "
            "(not in the times). Dask's time includes merging its "
            f"{len(shards)} shards.\n\n"
            + markdown_table(
                [
                    "ingest",
                    "seconds",
                    "images/s",
                    "x one process, 1 thread",
                    "critical-path CPU s",
                    "x, from CPU",
                ],
                ingest_rows,
            )
            + "\n\nCritical-path CPU: this process's CPU time; for Dask, the busiest worker's plus "
            "this process's (scheduler, merge). On a loaded machine the wall-clock speed-up cannot "
            "show a second core nobody gives it; the CPU figure is the speed-up with a free core "
            "per worker."
            + f"\n\n## Merge of the {len(shards)} shards ({shard_bytes / 1e6:,.1f} MB) "
            "against cp\n\n"
            f"Medians of {len(merge_s)} alternating runs, page cache to page cache.\n\n"
            + markdown_table(["copy", "seconds", "GB/s", "x cp"], merge_rows)
            + f"\n\n## Sharded view against the merged file\n\n"
            f"Two shards with interleaved ids (as DDP ranks write them), {args.n:,} images; paired "
            f"passes, medians of {args.reps}.\n\n"
            + markdown_table(
                ["images", "read", "view images/s", "merged images/s", "view / merged"], view_rows
            )
            + "\n"
        )
        print(md)
        write_results(
            args.out,
            "shards",
            md,
            {
                "machine": where,
                "args": vars(args),
                "cluster_start_s": cluster_start,
                "ingest_wall_cpu_s": ingest,
                "shard_bytes": shard_bytes,
                "merge_s": merge_s,
                "cp_s": cp_s,
                "view": {f"{size} px, {what}": list(v) for (size, what), v in views.items()},
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
