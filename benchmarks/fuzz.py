"""File fuzzer: damage small real stores and check that reading them never lies.

Builds a few small stores with h5store's public API (JPEG, PNG grey and 16-bit, Blosc2 and
Zstandard, deleted rows, (N, K) score vectors, true labels, sources), locates their parts with
h5py's low-level API (superblock, object headers, /index chunks, /index_tail, /stacks, /labels,
/scores, /sources, /source_crc32, image chunks, the rest of the metadata), then damages one part
per trial: flips bits, overwrites bytes, zeroes a range, truncates the file inside it, or copies
another block of the same kind over it. Each damaged file is opened read-only and every image
read back (pixels, label, true label, score, score vector, source; then the sources as one
column) in a forked child with a time limit. Each trial's outcome is one of

    exact   every image and record as written
    error   some reads raised an h5store error (H5StoreError), the rest were exact
    other   an exception that is not an H5StoreError escaped (an h5store bug, not a lie)
    wrong   some read returned a value that differs from what was written, without an error
    crash   the child died of a signal (inside HDF5 or a codec)
    hang    the child ran past the time limit

    python benchmarks/fuzz.py                      # 2,000 trials on 2 processes
    python benchmarks/fuzz.py --trials 200 --seed 1 --json out.json

Prints a table by damaged part, and every crash, hang, other and wrong trial with the mutation
that caused it (store, part, offset, kind), so each can be replayed with --replay.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import random
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback

import h5py
import numpy as np

import h5store

OUTCOMES = ("exact", "error", "other", "wrong", "crash", "hang")
KINDS = ("flip", "bytes", "zero", "truncate", "duplicate")

# --------------------------------------------------------------------------- stores


def _picture(rng: np.random.Generator, h: int, w: int, c: int, dtype=np.uint8) -> np.ndarray:
    """A smooth picture with some noise: compresses like a photo, not like noise."""
    y, x = np.mgrid[0:h, 0:w]
    peak = 255 if dtype == np.uint8 else 65535
    base = [(np.sin(x / rng.uniform(2, 8) + k) + np.cos(y / rng.uniform(2, 8))) for k in range(c)]
    img = (np.stack(base, -1) + 2) / 4 * peak + rng.normal(0, peak / 50, (h, w, c))
    img = np.clip(img, 0, peak).astype(dtype)
    return img[..., 0] if c == 1 else img


def build_stores(folder: str) -> dict[str, dict]:
    """The stores to damage, and what each holds (the truth reads are checked against)."""
    rng = np.random.default_rng(2024)
    classes = ["cat", "dog", "bird"]
    specs = {
        "jpeg": dict(codec="jpeg", shapes=[(24, 24, 3), (16, 20, 3)], vectors=True),
        "png": dict(codec="png", shapes=[(20, 20, 1), (12, 12, 3)], vectors=False),
        "png16": dict(codec="png", shapes=[(16, 16, 1)], vectors=False, dtype=np.uint16),
        "blosc2": dict(codec="blosc2", shapes=[(16, 16, 3)], vectors=True),
        "zstd": dict(codec="zstd", shapes=[(18, 14, 1), (10, 10, 4)], vectors=False),
    }
    stores = {}
    for name, spec in specs.items():
        path = os.path.join(folder, f"{name}.h5")
        truth: dict[int, tuple] = {}
        with h5store.open(path, "w", codec=spec["codec"], labels=classes) as store:
            for batch in range(3):
                n = 8
                shape = spec["shapes"][batch % len(spec["shapes"])]
                images = [_picture(rng, *shape, spec.get("dtype", np.uint8)) for _ in range(n)]
                labels = [classes[int(k)] for k in rng.integers(0, 3, n)]
                truths = [classes[int(k)] if k < 3 else None for k in rng.integers(0, 4, n)]
                if spec["vectors"]:
                    scores = rng.dirichlet(np.ones(3), n).astype(np.float32)
                    labels = [classes[k] for k in scores.argmax(1)]  # labels are predictions
                else:
                    scores = rng.random(n).astype(np.float32)
                ids = store.add_batch(
                    images,
                    labels=labels,
                    scores=scores,
                    true_labels=truths,
                    sources=[f"{name}/{batch}/{k}.png" for k in range(n)],
                )
                for k, i in enumerate(ids.tolist()):
                    record = store.record(i)
                    truth[i] = (
                        store[i],
                        labels[k],
                        truths[k],
                        record.score,
                        record.scores,
                        record.source,
                    )
            deleted = [int(i) for i in rng.choice(sorted(truth), 3, replace=False)]
            store.delete(deleted)
            for i in deleted:
                del truth[i]
        stores[name] = {"path": path, "truth": truth}
    return stores


# --------------------------------------------------------------------------- the parts of a file


def _chunks(ds: h5py.Dataset) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    if ds.chunks is None:
        offset = ds.id.get_offset()
        return [] if offset is None else [(offset, ds.id.get_storage_size())]
    ds.id.chunk_iter(lambda c: found.append((c.byte_offset, c.size)))
    return found


def _heap_collections(path: str, ds: h5py.Dataset) -> list[tuple[int, int]]:
    """The global-heap collections holding the strings of /sources (whose chunks hold only
    references: length, collection address, object index)."""
    reference = np.dtype([("length", "<u4"), ("heap", "<u8"), ("index", "<u4")])
    addresses: set[int] = set()
    for start, size in _chunks(ds):
        with open(path, "rb") as fh:
            fh.seek(start)
            refs = np.frombuffer(fh.read(size), reference)
        addresses.update(refs["heap"][refs["length"] > 0].tolist())
    out = []
    with open(path, "rb") as fh:
        for address in sorted(addresses):
            fh.seek(address)
            header = fh.read(16)  # "GCOL", version, 3 reserved, collection size
            if header[:4] == b"GCOL":
                out.append((address, int.from_bytes(header[8:16], "little")))
    return out


def parts_of(path: str) -> dict[str, list[tuple[int, int]]]:
    """Byte ranges (start, length) of each part of the file."""
    parts: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    parts["superblock"].append((0, 48))
    with h5py.File(path, "r", locking=False) as f:
        objects = [f]
        f.visititems(lambda _name, obj: objects.append(obj))
        for obj in objects:
            info = h5py.h5o.get_info(obj.id)
            parts["object header"].append((info.addr, max(16, info.hdr.space.total)))
            if not isinstance(obj, h5py.Dataset):
                continue
            name = obj.name.lstrip("/")
            if name in ("index", "index_tail", "stacks", "labels", "scores"):
                key = name.replace("_", " ")
            elif name == "source_crc32":
                key = "source checks"
            elif name == "sources":
                key = "sources"
                parts["source strings"].extend(_heap_collections(path, obj))
            elif name.startswith("classes/"):
                key = "image chunk"
            else:
                key = "preview"
            parts[key].extend(_chunks(obj))
    size = os.path.getsize(path)
    taken = sorted(r for rs in parts.values() for r in rs)
    # Everything else is HDF5 metadata we did not name (chunk indexes, heaps, free space).
    gaps, cursor = [], 0
    for start, length in taken:
        if start > cursor:
            gaps.append((cursor, start - cursor))
        cursor = max(cursor, start + length)
    if cursor < size:
        gaps.append((cursor, size - cursor))
    parts["other metadata"] = [g for g in gaps if g[1] > 0]
    return {k: [r for r in v if r[1] > 0] for k, v in parts.items() if v}


# --------------------------------------------------------------------------- mutations


def plan(stores: dict[str, dict], trials: int, seed: int) -> list[dict]:
    """The trials: which store, which part, which byte range, which damage."""
    rng = random.Random(seed)
    names = sorted(stores)
    parts = {name: parts_of(stores[name]["path"]) for name in names}
    out = []
    for t in range(trials):
        name = names[t % len(names)]
        part = rng.choice(sorted(parts[name]))
        start, length = rng.choice(parts[name][part])
        kind = rng.choice(KINDS)
        span = max(1, min(length, rng.choice([1, 4, 16, 64, length])))
        at = start + rng.randrange(max(1, length - span + 1))
        trial = {
            "trial": t,
            "store": name,
            "part": part,
            "kind": kind,
            "offset": at,
            "length": span,
            "seed": rng.randrange(1 << 30),
        }
        if kind == "duplicate":
            sources = [r for r in parts[name][part] if r[0] != start] or parts[name][part]
            src_start, src_len = rng.choice(sources)
            trial["source"] = src_start
            trial["length"] = min(length, src_len)
            trial["offset"] = start
        out.append(trial)
    return out


def damage(data: bytes, trial: dict) -> bytes:
    buf = bytearray(data)
    rng = random.Random(trial["seed"])
    at, n = trial["offset"], trial["length"]
    kind = trial["kind"]
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            k = at + rng.randrange(n)
            buf[k] ^= 1 << rng.randrange(8)
    elif kind == "bytes":
        for k in range(at, at + n):
            buf[k] = rng.randrange(256)
    elif kind == "zero":
        buf[at : at + n] = bytes(n)
    elif kind == "truncate":
        del buf[at:]
    elif kind == "duplicate":
        src = trial["source"]
        buf[at : at + n] = data[src : src + n]
    return bytes(buf)


# --------------------------------------------------------------------------- reading back


def read_back(path: str, truth: dict[int, tuple]) -> tuple[str, str]:
    """Open the damaged file and compare every read with the truth: (outcome, detail)."""
    try:
        store = h5store.open(path)
    except h5store.H5StoreError as exc:
        return "error", f"open: {type(exc).__name__}: {exc}"[:300]
    except Exception as exc:
        return "other", f"open: {type(exc).__name__}: {exc}"[:300]
    errors, wrong = [], []
    with store:
        try:
            live = set(store.ids().tolist())
        except Exception as exc:
            return "other", f"ids: {type(exc).__name__}: {exc}"[:300]
        missing = sorted(set(truth) - live)
        extra = sorted(live - set(truth))
        if missing or extra:
            example = (missing + extra)[:3]
            wrong.append(f"ids: {len(missing)} missing, {len(extra)} extra (e.g. {example})")
        for image_id in sorted(set(truth) & live):
            pixels, label, true_label, score, vector, source = truth[image_id]
            try:
                got = store[image_id]
                record = store.record(image_id)
            except h5store.H5StoreError as exc:
                errors.append(f"{image_id}: {type(exc).__name__}: {exc}")
                continue
            except Exception as exc:
                return "other", f"read {image_id}: {type(exc).__name__}: {exc}"[:300]
            if got.dtype != pixels.dtype or not np.array_equal(got, pixels):
                wrong.append(f"{image_id}: pixels differ")
            elif (record.label, record.true_label) != (label, true_label):
                wrong.append(f"{image_id}: label {record.label!r}/{record.true_label!r}")
            elif not (record.score == score or (record.score is None and score is None)):
                wrong.append(f"{image_id}: score {record.score} != {score}")
            elif (vector is None) != (record.scores is None) or (
                vector is not None and not np.array_equal(vector, record.scores)
            ):
                wrong.append(f"{image_id}: score vector differs")
            elif record.source != source:
                wrong.append(f"{image_id}: source {record.source!r}")
        # The sources again, as one column (the vectorised read path of to_pandas and export).
        try:
            column = dict(zip(store.ids().tolist(), store.sources))
        except h5store.H5StoreError as exc:
            errors.append(f"sources: {type(exc).__name__}: {exc}")
        except Exception as exc:
            return "other", f"sources: {type(exc).__name__}: {exc}"[:300]
        else:
            bad = [i for i in sorted(set(truth) & set(column)) if column[i] != truth[i][5]]
            if bad:
                wrong.append(f"sources column: {len(bad)} differ (e.g. {bad[0]})")
    if wrong:
        return "wrong", "; ".join(wrong[:3])[:300]
    if errors:
        return "error", errors[0][:300]
    return "exact", ""


def run_trial(trial: dict, data: bytes, truth: dict, folder: str, timeout: float) -> dict:
    """Damage, then read back in a forked child (so a crash or a hang is the child's)."""
    path = os.path.join(folder, f"t{trial['trial']}.h5")
    with open(path, "wb") as fh:
        fh.write(damage(data, trial))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: read, report, leave without cleanup
        os.close(read_end)
        try:
            outcome, detail = read_back(path, truth)
        except BaseException:
            outcome, detail = "other", traceback.format_exc(limit=3)[-300:]
        os.write(write_end, json.dumps([outcome, detail]).encode())
        os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([read_end], [], [], max(0.0, left))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            result = ("hang", f"no answer in {timeout} s")
            break
        block = os.read(read_end, 1 << 16)
        if block:
            chunks.append(block)
            continue
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            result = ("crash", f"signal {signal.Signals(os.WTERMSIG(status)).name}")
        else:
            result = tuple(json.loads(b"".join(chunks).decode()))
        break
    os.close(read_end)
    os.unlink(path)
    return {**trial, "outcome": result[0], "detail": result[1]}


# --------------------------------------------------------------------------- running in parallel

_WORKER: dict = {}


def _init_worker(stores: dict, folder: str, timeout: float) -> None:
    # No store is opened in a worker, so no thread exists when it forks.
    _WORKER["data"] = {}
    for name, store in stores.items():
        with open(store["path"], "rb") as fh:
            _WORKER["data"][name] = fh.read()
    _WORKER["truth"] = {name: s["truth"] for name, s in stores.items()}
    _WORKER["folder"] = tempfile.mkdtemp(dir=folder)
    _WORKER["timeout"] = timeout


def _work(trial: dict) -> dict:
    name = trial["store"]
    return run_trial(
        trial, _WORKER["data"][name], _WORKER["truth"][name], _WORKER["folder"], _WORKER["timeout"]
    )


def fuzz(
    trials: int = 2000,
    seed: int = 0,
    processes: int = 2,
    timeout: float = 20.0,
    replay: list[int] | None = None,
    progress: bool = False,
) -> dict:
    folder = tempfile.mkdtemp(prefix="h5store-fuzz-")
    try:
        stores = build_stores(folder)
        todo = plan(stores, trials, seed)
        if replay is not None:
            todo = [todo[k] for k in replay]
        results = []
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(processes, _init_worker, (stores, folder, timeout)) as pool:
            for k, result in enumerate(pool.imap_unordered(_work, todo, chunksize=4)):
                results.append(result)
                if progress and (k + 1) % 100 == 0:
                    print(f"  {k + 1}/{len(todo)}", file=sys.stderr, flush=True)
        results.sort(key=lambda r: r["trial"])
        return {
            "seed": seed,
            "trials": len(results),
            "results": results,
            "h5store": h5store.__version__,
            "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def table(report: dict) -> str:
    by_part: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    total: collections.Counter = collections.Counter()
    for r in report["results"]:
        by_part[r["part"]][r["outcome"]] += 1
        total[r["outcome"]] += 1
    lines = [
        "| damaged part | trials | " + " | ".join(OUTCOMES) + " |",
        "|---|---:|" + "---:|" * len(OUTCOMES),
    ]
    for part in sorted(by_part):
        c = by_part[part]
        counts = " | ".join(str(c[o]) for o in OUTCOMES)
        lines.append(f"| {part} | {sum(c.values())} | {counts} |")
    lines.append(
        f"| **all** | **{sum(total.values())}** | "
        + " | ".join(f"**{total[o]}**" for o in OUTCOMES)
        + " |"
    )
    return "\n".join(lines)


def notable(report: dict, limit: int = 40) -> list[str]:
    out = []
    for r in report["results"]:
        if r["outcome"] in ("exact", "error"):
            continue
        out.append(
            f"trial {r['trial']} {r['outcome']}: {r['store']} {r['part']} {r['kind']} "
            f"at {r['offset']}+{r['length']}: {r['detail']}"
        )
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per trial")
    parser.add_argument("--replay", type=int, nargs="*", help="run only these trial numbers")
    parser.add_argument("--json", help="write every trial's outcome here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = fuzz(args.trials, args.seed, args.processes, args.timeout, args.replay, progress=True)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["load"] = os.getloadavg()
    print(
        f"h5store fuzz: {report['trials']} trials, seed {args.seed}, "
        f"{report['seconds']} s on {args.processes} processes, load {report['load'][0]:.1f} "
        f"(h5py {report['h5py']}, HDF5 {report['hdf5']})\n"
    )
    print(table(report))
    for line in notable(report):
        print(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
