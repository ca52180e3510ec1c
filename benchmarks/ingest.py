"""Writing at the speed of HDF5 itself: h5store's ingest against HDF5's own cost per chunk.

    python benchmarks/ingest.py [--quick] [--out benchmarks/results]

Questions, each measured side by side in one run, contenders rotated between repetitions,
medians (the contenders are the ones of ``peers.py``, on the same JPEG q90 bytes):

* pre-encoded ingest (``add_encoded_batch``, batches of ``--batch``) of 5,000 images of 224 px
  and 20,000 of 32 px against a bare h5py loop of ``write_direct_chunk`` (HDF5's own cost, no
  index and no crash safety), LMDB in one transaction, a folder of files + CSV, and a folder +
  SQLite; every store is created, filled and closed inside the timed span;
* ingest with encoding (``add_batch`` of uint8 arrays, JPEG q90, 5,000 images of 224 px, batches
  of ``--encode-batch``) against imagecodecs encoding the same arrays alone, at 1 and 2 threads.

Beside them, the way most users write (issue 20): a loop of ``add_encoded``, one image per call,
in the pre-encoded runs, and a loop of ``add(array)`` in the encoding runs, each against its
batch form on the same bytes and threads. With group commit (an h5store whose stores have
``commit``) the loops run in the default durability, and ``add_encoded`` also with
``durability="call"`` (a commit per call); without it every call commits, and the rows say so.

At scale (``--scale-n``, default 50,000 images of 224 px, 706 MB): ``add_encoded_batch``
committed and closed against the bare loop with its file fsynced at its end, and without the
fsync, with each run's spread and CPU time per image.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import peers
from _util import (
    Payloads,
    command_line,
    fmt,
    has_group_commit,
    machine,
    make_payloads,
    markdown_table,
    median,
    rotated,
    write_results,
)

import h5store


class H5StorePerImage:
    """``add_encoded`` in a loop, one image per call, as a user porting a per-file loop writes
    it (metadata as Python values, which is what such a loop holds)."""

    def __init__(self, name, durability=None):
        self.name = name
        self.durability = durability

    def write(self, path, data, batch):
        kwargs = {} if self.durability is None else {"durability": self.durability}
        metadata = zip(data.labels.tolist(), data.scores.tolist(), data.true_labels.tolist())
        with h5store.open(
            path, "w", codec="jpeg", quality=90, labels=data.class_names, **kwargs
        ) as store:
            add = store.add_encoded
            for payload, (label, score, true_label) in zip(data.payloads, metadata):
                add(payload, label=label, score=score, true_label=true_label)


GROUP_COMMIT = has_group_commit()
#: the mode h5store's own rows ran in, for the table headings
MODE = "group commit" if GROUP_COMMIT else "commit per call (no group commit in this h5store)"
BATCH_NAME = peers.H5Store.name
PER_IMAGE_NAME = "h5store add_encoded per image"
PER_CALL_NAME = "h5store add_encoded per image, durability='call'"


class BareLoopFsynced(peers.H5pyBareLoop):
    """The bare loop with its file fsynced once at its end: what a writer that wants its images
    on disk before it reports done pays beyond the loop."""

    name = "bare h5py direct-chunk loop, fsynced at its end"

    def write(self, path, data, batch):
        super().write(path, data, batch)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


#: Pre-encoded ingest at scale (issue 20 item 5): h5store committed and closed, against the
#: bare loop fsynced at its end and, for the CPU floor, without the fsync.
SCALE_CONTENDERS = [peers.H5Store(), BareLoopFsynced(), peers.H5pyBareLoop()]

CONTENDERS = [
    peers.H5Store(),
    H5StorePerImage(PER_IMAGE_NAME),
    *([H5StorePerImage(PER_CALL_NAME, durability="call")] if GROUP_COMMIT else []),
    peers.H5pyBareLoop(),
    peers.LMDB(),
    peers.FolderCSV("imagecodecs"),
    peers.FolderSQLite(),
]


def measure(size: int, n: int, tmp: str, pool, args) -> dict:
    print(f"{size} px: making {n} images", file=sys.stderr)
    data = make_payloads(n, size)
    contenders = [c for c in CONTENDERS if peers.installed(c)]
    args.batch = args.pre_encoded_batch
    paths, rates = peers.measure_ingest(contenders, data, tmp, args)
    out = {"n": n, "payload_bytes": data.payload_bytes, "ingest": rates}
    if size == 224:
        args.data224 = data
    for p in paths.values():
        peers.remove(p)
    if size == 224:
        print(f"{size} px: ingest with encoding", file=sys.stderr)
        out["encoding_cpu_us"] = {}
        out["encoding_ingest"] = peers.measure_encoding_ingest(
            data,
            tmp,
            pool,
            args,
            batch=args.encode_batch,
            per_image=True,
            cpu=out["encoding_cpu_us"],
        )
    return out


def measure_scale(data: Payloads, n: int, tmp: str, args) -> dict:
    """``n`` images cycled from ``data``'s payloads (the same bytes repeated: the arrays of
    50,000 distinct crops would take 7.5 GB), each contender writing them ``args.ingest_reps``
    times, order rotated; each file is deleted right after its run, so no run starts with
    another's gigabyte of dirty pages to write back. Wall time and the process's CPU time."""
    take = np.arange(n) % len(data)
    big = Payloads(
        size=data.size,
        images=data.images[:0],
        payloads=[data.payloads[i] for i in take.tolist()],
        labels=data.labels[take],
        true_labels=data.true_labels[take],
        scores=data.scores[take],
        class_names=data.class_names,
    )
    path = os.path.join(tmp, "scale.h5")
    runs = {c.name: {"wall": [], "cpu": [], "load": []} for c in SCALE_CONTENDERS}
    for rep in range(args.ingest_reps):
        for c in rotated(SCALE_CONTENDERS, rep):
            peers.remove(path)
            wall, cpu = time.perf_counter(), time.process_time()
            c.write(path, big, args.pre_encoded_batch)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            peers.remove(path)
            r = runs[c.name]
            r["wall"].append(wall)
            r["cpu"].append(cpu)
            r["load"].append(os.getloadavg()[0])
        print(f"  scale: repetition {rep + 1}/{args.ingest_reps} done", file=sys.stderr)
    for r in runs.values():
        rates = [n / w for w in r["wall"]]
        r["rate"], r["min"], r["max"] = median(rates), min(rates), max(rates)
        r["cpu_us"] = 1e6 * median(r["cpu"]) / n
    return {"n": n, "payload_bytes": big.payload_bytes, "runs": runs}


def scale_table(s: dict) -> str:
    fsynced = s["runs"][BareLoopFsynced.name]
    rows = []
    for name, r in s["runs"].items():
        rows.append(
            [
                name,
                fmt(r["rate"]),
                f"{fmt(r['min'])}-{fmt(r['max'])}",
                fmt(r["max"] / r["min"]),
                fmt(r["rate"] / fsynced["rate"]),
                fmt(r["cpu_us"], 1),
                fmt(fsynced["cpu_us"] / r["cpu_us"]),
            ]
        )
    return markdown_table(
        [
            "writer",
            "img/s (median)",
            "range",
            "max / min",
            "x bare loop fsynced",
            "CPU per image (us)",
            "CPU x bare loop fsynced",
        ],
        rows,
    )


def report(results: dict, args) -> str:
    m = results["machine"]
    lines = [
        "# Ingest: h5store against HDF5's own cost",
        "",
        f"Produced by `{results['command']}` on {m['date']} ({m['cpus']} cores, load average "
        f"{m['load_average'][0]:.1f} at start and {results['load_average_end'][0]:.1f} at end; "
        f"h5store {m['h5store_commit']}{' + uncommitted changes' if m['h5store_dirty'] else ''}, "
        f"h5py {m['h5py']} / HDF5 {m['hdf5']}). Wall time, medians of {args.ingest_reps} "
        f"rotated repetitions; pre-encoded batches of {args.pre_encoded_batch}, encoding "
        f"batches of {args.encode_batch}.",
        "",
        "## Pre-encoded ingest (img/s)",
        "",
    ]
    names = list(results["224"]["ingest"])
    rows = []
    for name in names:
        row = [name]
        for size in ("224", "32"):
            rates = results[size]["ingest"]
            row += [
                fmt(rates[name]),
                fmt(rates[name] / rates[peers.H5pyBareLoop.name]),
                fmt(rates[name] / rates[peers.LMDB.name]) if peers.LMDB.name in rates else "-",
            ]
        rows.append(row)
    lines.append(
        markdown_table(
            [
                "store",
                f"224 px ({results['224']['n']} images)",
                "x bare loop",
                "x LMDB",
                f"32 px ({results['32']['n']} images)",
                "x bare loop",
                "x LMDB",
            ],
            rows,
        )
    )
    lines += [
        "",
        "## Ingest with encoding (JPEG q90, 224 px)",
        "",
        peers.encoding_table({"encoding_ingest": results["224"]["encoding_ingest"]}),
        "",
        cpu_paragraph(results["224"]),
        "",
        f"## One image per call against the batch API (issue 20; h5store: {MODE})",
        "",
        targets_table(results),
    ]
    s = results.get("scale")
    if s:
        lines += [
            "",
            f"## Pre-encoded ingest at scale: {s['n']:,} images of 224 px "
            f"({s['payload_bytes'] / 1e6:,.0f} MB)",
            "",
            f"`add_encoded_batch` of {results['pre_encoded_batch']}, committed and closed, against "
            "the bare loop with its file fsynced at its end (issue 20 item 5's yardstick) and "
            "without (the CPU floor). The 224 px payloads cycled; each file deleted after its run. "
            "CPU per image: the process's CPU time, which the machine's other jobs do not "
            "inflate the way they stretch wall time (an fsync waits on the disk, not the CPU). "
            "Load average during the runs: "
            + ", ".join(f"{x:.1f}" for x in s["runs"][BATCH_NAME]["load"])
            + ".",
            "",
            scale_table(s),
        ]
    return "\n".join(lines) + "\n"


def cpu_paragraph(r: dict) -> str:
    """Where the 2-thread gap goes: on two cores the encoders fill both, so every microsecond
    of CPU h5store adds per image (its writes included) is taken from them."""
    cpu = r.get("encoding_cpu_us")
    if not cpu:
        return ""
    parts = [
        f"{name}: {fmt(cpu[name], 1)} us"
        for name in cpu
        if name.startswith(("encode", "h5store add_batch"))
    ]
    added = cpu["h5store add_batch, 2 threads"] - cpu["encode, 2 threads"]
    return (
        "CPU time per image, every thread of the process (medians): "
        + "; ".join(parts)
        + f". At 2 threads h5store adds {fmt(added, 1)} us of CPU per image to the encoding "
        "(validation, writing the chunks, the index, the commits, opening and closing the "
        "file); with both cores encoding, that CPU comes out of the encoders' time, so "
        "add_batch / encode alone at 2 threads cannot exceed encode / (encode + added) "
        f"= {fmt(cpu['encode, 2 threads'] / cpu['h5store add_batch, 2 threads'])} here."
    )


def targets_table(results: dict) -> str:
    """Issue 20's ratios, each from contenders timed side by side in this run."""
    e = results["224"]["encoding_ingest"]
    rows = []

    def row(what, a, b, target, size="224 px"):
        rows.append([what, size, fmt(a), fmt(b), fmt(a / b), target])

    for size, target in (("224", ">= 0.8"), ("32", ">= 0.5")):
        r = results[size]["ingest"]
        row(
            f"add_encoded loop / add_encoded_batch of {results['pre_encoded_batch']}",
            r[PER_IMAGE_NAME],
            r[BATCH_NAME],
            target,
            f"{size} px",
        )
        if PER_CALL_NAME in r:
            row(
                "add_encoded loop, durability='call' / add_encoded_batch",
                r[PER_CALL_NAME],
                r[BATCH_NAME],
                "-",
                f"{size} px",
            )
    for threads in ("1 thread", "2 threads"):
        row(
            f"add loop / add_batch of {results['encode_batch']}, {threads}",
            e[f"h5store add per image, {threads}"],
            e[f"h5store add_batch, {threads}"],
            ">= 0.8" if threads == "1 thread" else "-",
        )
    for threads in ("1 thread", "2 threads"):
        row(
            f"add_batch / imagecodecs encode alone, {threads}",
            e[f"h5store add_batch, {threads}"],
            e[f"encode, {threads}"],
            ">= 0.9",
        )
    bare = "encode, 2 threads, each chunk written (bare h5py)"
    if bare in e:
        row(
            "bare pipeline (encode + write_direct_chunk) / imagecodecs encode alone, 2 threads",
            e[bare],
            e["encode, 2 threads"],
            "-",
        )
        row(
            "add_batch / bare pipeline (encode + write_direct_chunk), 2 threads",
            e["h5store add_batch, 2 threads"],
            e[bare],
            "-",
        )
    for threads in ("1 thread", "2 threads"):
        row(
            f"add loop / imagecodecs encode alone, {threads}",
            e[f"h5store add per image, {threads}"],
            e[f"encode, {threads}"],
            "-",
        )
    return markdown_table(["ratio", "images", "img/s", "against (img/s)", "ratio", "target"], rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sets, fewer repetitions")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--n224", type=int, help="images of 224 px (default 5000)")
    parser.add_argument("--n32", type=int, help="images of 32 px (default 20000)")
    parser.add_argument("--reps", type=int, help="repetitions (default 5)")
    parser.add_argument("--pre-encoded-batch", type=int, default=1024)
    parser.add_argument("--encode-batch", type=int, default=256)
    parser.add_argument(
        "--scale-n",
        type=int,
        help="images in the at-scale pre-encoded run (default 50000, --quick 10000; 0: skip)",
    )
    args = parser.parse_args(argv)
    args.n224 = args.n224 or (1000 if args.quick else 5000)
    args.n32 = args.n32 or (4000 if args.quick else 20000)
    args.ingest_reps = args.reps or (3 if args.quick else 5)
    if args.scale_n is None:
        args.scale_n = 10000 if args.quick else 50000
    results = {
        "machine": machine(),
        "command": command_line(),
        "group_commit": GROUP_COMMIT,
        "pre_encoded_batch": args.pre_encoded_batch,
        "encode_batch": args.encode_batch,
    }
    tmp = tempfile.mkdtemp(prefix="h5store-ingest-", dir="/tmp")
    pool = ThreadPoolExecutor(2)
    try:
        for size, n in ((224, args.n224), (32, args.n32)):
            results[str(size)] = measure(size, n, tmp, pool, args)
            if size == 224 and args.scale_n:
                print(f"scale: {args.scale_n} images of 224 px", file=sys.stderr)
                results["scale"] = measure_scale(args.data224, args.scale_n, tmp, args)
    finally:
        pool.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_average_end"] = os.getloadavg()
    markdown = report(results, args)
    write_results(args.out, "ingest", markdown, results)
    print(markdown)


if __name__ == "__main__":
    main()
