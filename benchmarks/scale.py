"""Does h5store stay flat as a store grows? Stores of 10 thousand to 1 million 32 px images.

    python benchmarks/scale.py [--sizes 10000,100000,1000000] [--large] [--out benchmarks/results]

Each store holds pre-encoded JPEG q90 payloads of 32 px crops; to save time a pool of a few
thousand distinct payloads (with their metadata) is reused cyclically, so per-image costs are
those of real 1 kB JPEGs. Reported per size: ingest rate, open time, random read + decode and raw
fetch per image (right after open, on ids drawn uniformly from the whole store, so a bigger
store touches more distinct pages; minor page faults per read are shown as the evidence), query
time, bytes per image. Targets (DESIGN section 4): per-image read cost at 1,000,000 <= 1.2 x the
cost at 10,000; open <= 0.5 s; query over 1,000,000 rows <= 20 ms.

All stores are built first; the measurements then rotate over the sizes in each repetition, so
machine noise lands on every size alike. ``--large`` adds 10,000,000 images (~13 GB in /tmp).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

import imagecodecs
import numpy as np
from _util import (
    CPU,
    WALL,
    batches,
    command_line,
    fmt,
    machine,
    make_payloads,
    markdown_table,
    median,
    rotated,
    seconds,
    write_results,
)

import h5store

decode = imagecodecs.jpeg8_decode
QUERY = (3, 0.9)
#: opens timed per repetition (their median is the repetition's)
OPENS = 5


def build(path, pool, n, batch):
    """Ingest ``n`` images cycling through ``pool``; returns (img/s overall, img/s over the last
    tenth of the batches) so a slowdown as the file grows shows."""
    P = len(pool)
    batch_times = []
    start = time.perf_counter()
    with h5store.open(path, "w", codec="jpeg", quality=90, labels=pool.class_names) as store:
        for s in batches(n, batch):
            k = np.arange(s.start, s.stop) % P
            t = time.perf_counter()
            store.add_encoded_batch(
                [pool.payloads[i] for i in k],
                labels=pool.labels[k],
                scores=pool.scores[k],
                true_labels=pool.true_labels[k],
            )
            batch_times.append((s.stop - s.start, time.perf_counter() - t))
    total = time.perf_counter() - start
    tail = batch_times[-max(1, len(batch_times) // 10) :]
    return n / total, sum(c for c, _ in tail) / sum(t for _, t in tail)


def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def per_op_us(fn, ids):
    """Microseconds (CPU time, see _util.CPU) per call of ``fn`` over ``ids``, with the minor
    page faults per call. Results are kept alive until the pass ends."""
    faults = minor_faults()
    start = CPU()
    kept = [fn(i) for i in ids]
    elapsed = CPU() - start
    faults = minor_faults() - faults
    del kept
    return 1e6 * elapsed / len(ids), faults / len(ids)


def measure(path, n, pool, reads, rng):
    """One repetition on one store: open, raw fetch, read + decode (fresh handle each, ids fresh
    each), the ceiling on the same payloads, query."""
    out = {}
    walls, cpus = [], []
    for _ in range(OPENS):
        wall, cpu = WALL(), CPU()
        store = h5store.open(path)
        walls.append(WALL() - wall)
        cpus.append(CPU() - cpu)
        store.close()
    # CPU time (both threads' work) as well: on a shared machine the wall time of one open
    # is mostly other jobs' time slices.
    out["open_s"], out["open_cpu_s"] = median(walls), median(cpus)

    ids = rng.integers(0, n, reads).tolist()
    with h5store.open(path) as store:
        out["fetch_us"], out["fetch_faults"] = per_op_us(store.get_encoded, ids)
    ids = rng.integers(0, n, reads).tolist()
    with h5store.open(path) as store:
        out["read_us"], out["read_faults"] = per_op_us(store.__getitem__, ids)
        out["read_warm_us"], _ = per_op_us(store.__getitem__, ids)  # same ids, pages mapped now
        label, min_score = QUERY
        out["query_hits"] = len(store.query(label=label, min_score=min_score))
        times = [seconds(lambda: store.query(label=label, min_score=min_score)) for _ in range(20)]
        out["query_ms"] = 1e3 * median(times)
    P = len(pool)
    out["ceiling_us"], _ = per_op_us(lambda i: decode(pool.payloads[i % P]), ids)
    return out


def report(results, args):
    sizes = results["sizes"]
    base = results["stores"][str(sizes[0])]
    headers = [
        "images",
        "ingest (img/s)",
        "ingest, last 10 % (img/s)",
        "open (s)",
        "open, CPU (s)",
        "read+decode (us)",
        f"x at {sizes[0]:,}",
        "x ceiling",
        "2nd pass (us)",
        "raw fetch (us)",
        f"x at {sizes[0]:,}",
        "page faults / read",
        "query (ms)",
        "bytes / image",
        "file / payload",
    ]
    rows = []
    for n in sizes:
        m = results["stores"][str(n)]
        rows.append(
            [
                f"{n:,}",
                fmt(m["ingest"]),
                fmt(m["ingest_tail"]),
                fmt(m["open_s"], 3),
                fmt(m["open_cpu_s"], 3),
                fmt(m["read_us"]),
                fmt(m["read_us"] / base["read_us"]),
                fmt(m["ceiling_us"] / m["read_us"]),
                fmt(m["read_warm_us"]),
                fmt(m["fetch_us"]),
                fmt(m["fetch_us"] / base["fetch_us"]),
                fmt(m["read_faults"]),
                fmt(m["query_ms"], 3),
                fmt(m["file_bytes"] / n, 0),
                fmt(m["file_bytes"] / m["payload_bytes"], 3),
            ]
        )
    machine_ = results["machine"]
    return "\n".join(
        [
            "# h5store at scale: 32 px JPEG q90",
            "",
            f"Produced by `{results['command']}` on {machine_['date']} ({machine_['cpus']} cores, "
            f"load average {machine_['load_average'][0]:.1f} at start; h5store "
            f"{machine_['h5store_commit']}"
            f"{' + uncommitted changes' if machine_['h5store_dirty'] else ''}, "
            f"h5py {machine_['h5py']} / HDF5 {machine_['hdf5']}, "
            f"imagecodecs {machine_['imagecodecs']}).",
            "",
            f"A pool of {args.pool:,} distinct payloads reused cyclically; ingest in batches of "
            f"{args.batch:,}. Medians of {args.reps} repetitions, sizes rotated. Open: median of "
            f"{OPENS} opens per repetition, wall clock and CPU time of the process. "
            f"Reads: {args.reads:,} random ids over the whole store on a freshly opened store "
            "(warm page cache), timed in "
            "CPU time of the process (other jobs' time slices on this shared machine left out); "
            "'2nd pass' "
            "repeats the same ids on the same handle. 'x ceiling' is imagecodecs decoding the same "
            f"payloads from memory, over the read+decode time. Query: `label == {QUERY[0]} and "
            f"score >= {QUERY[1]}`.",
            "",
            markdown_table(headers, rows),
        ]
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="10000,100000,1000000",
        help="comma-separated store sizes, smallest first (the baseline)",
    )
    parser.add_argument("--large", action="store_true", help="also 10,000,000 images")
    parser.add_argument("--pool", type=int, default=2000, help="distinct payloads to cycle")
    parser.add_argument("--batch", type=int, default=1000, help="images per ingest batch")
    parser.add_argument("--reads", type=int, default=20_000, help="random reads per measurement")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if args.large:
        sizes.append(10_000_000)

    print(f"making {args.pool} images", file=sys.stderr)
    pool = make_payloads(args.pool, 32)
    results = {"machine": machine(), "command": command_line(), "sizes": sizes, "stores": {}}
    tmp = tempfile.mkdtemp(prefix="h5store-scale-", dir="/tmp")
    try:
        paths, stores = {}, {}
        lengths = np.array([len(p) for p in pool.payloads], dtype=np.int64)
        for n in sizes:
            paths[n] = os.path.join(tmp, f"{n}.h5")
            ingest, tail = build(paths[n], pool, n, args.batch)
            payload = int(lengths[np.arange(n) % len(pool)].sum())
            stores[n] = {
                "ingest": ingest,
                "ingest_tail": tail,
                "payload_bytes": payload,
                "file_bytes": os.path.getsize(paths[n]),
            }
            print(f"built {n:,}: {ingest:,.0f} img/s", file=sys.stderr)
        rng = np.random.default_rng(0)
        reps = {n: [] for n in sizes}
        for rep in range(args.reps):
            for n in rotated(sizes, rep):
                reps[n].append(measure(paths[n], n, pool, args.reads, rng))
            print(f"repetition {rep + 1}/{args.reps} done", file=sys.stderr)
        for n in sizes:
            stores[n].update({k: median([r[k] for r in reps[n]]) for k in reps[n][0]})
            results["stores"][str(n)] = stores[n]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    markdown = report(results, args)
    write_results(args.out, "scale", markdown, results)
    print(markdown)


if __name__ == "__main__":
    main()
