"""How long a warm open takes (issue 20, item 6): ``h5store.open(path)`` for reading on a store
of many classes (1,000 classes of 10 images) and on stores of 200,000 and 1,000,000 images,
this tree against older commits, side by side.

    python benchmarks/open_speed.py [--base 32127cb ...] [--rounds 9] [--opens 5] [--no-large]

Each ``--base`` commit is exported with ``git archive`` into a temporary folder and run from
there; every variant opens stores it wrote itself (kept in ``--dir``, written once, so a
format change between commits is measured as each commit reads its own files). A round runs
every variant in a fresh process, in an order rotated per round; the process opens each store
once untimed (page cache, lazy imports) and then ``--opens`` times, timing ``h5store.open``
alone (imports excluded; the close after it is not timed). Medians over all rounds of wall
and CPU seconds (CPU: every thread of the process; what a loaded machine leaves comparable).
Public API only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _util import command_line, fmt, machine, markdown_table, median, rotated, write_results

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: name -> (images, classes)
STORES = {
    "1,000 classes x 10": (10_000, 1_000),
    "200,000 images": (200_000, 10),
    "1,000,000 images": (1_000_000, 10),
}

BUILD = r"""
import sys, numpy as np, imagecodecs, h5store
path, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
pool = [imagecodecs.jpeg8_encode(rng.integers(0, 255, (16, 16, 3), np.uint8), level=90)
        for _ in range(64)]
labels = [f"class {j:04d}" for j in range(k)]
with h5store.open(path + ".part", "w", codec="jpeg", labels=labels) as store:
    for start in range(0, n, 10000):
        m = min(10000, n - start)
        store.add_encoded_batch([pool[i % 64] for i in range(start, start + m)],
                                labels=[i % k for i in range(start, start + m)],
                                scores=rng.random(m, dtype=np.float32))
import os; os.replace(path + ".part", path)
"""

MEASURE = r"""
import json, sys, time, h5store
opens, paths = int(sys.argv[1]), sys.argv[2:]
out = {}
for path in paths:
    h5store.open(path).close()
    wall, cpu = [], []
    for _ in range(opens):
        w, c = time.perf_counter(), time.process_time()
        store = h5store.open(path)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
        store.close()
    out[path] = {"wall": wall, "cpu": cpu}
print(json.dumps(out))
"""


def run(code: str, pythonpath: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, cwd="/"
    )
    if done.returncode:
        raise RuntimeError(f"{pythonpath}: {done.stderr.strip()}")
    return done.stdout


def export(commit: str, into: str) -> str:
    """``commit`` of this repository as a plain folder (no git metadata, nothing checked out)."""
    folder = os.path.join(into, commit.replace("/", "_"))
    os.makedirs(folder)
    archive = subprocess.run(
        ["git", "-C", ROOT, "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", action="append", default=[], help="commit(s) to compare")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--opens", type=int, default=5, help="timed opens per store a round")
    parser.add_argument("--no-large", action="store_true", help="skip the 1,000,000 store")
    parser.add_argument("--dir", default="/tmp/h5store-open-speed")
    parser.add_argument("--out", default=None, help="write open_speed.md/.json here")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)  # machine() names this tree's h5store, not an installed one
    load_before = os.getloadavg()[0]
    stores = {k: v for k, v in STORES.items() if not (args.no_large and v[0] >= 1_000_000)}
    with tempfile.TemporaryDirectory() as tmp:
        variants = {f"base {c}": export(c, tmp) for c in args.base}
        variants["this tree"] = ROOT
        paths: dict[str, dict[str, str]] = {}
        for variant, tree in variants.items():
            folder = os.path.join(args.dir, variant.replace(" ", "-").replace("^", "p"))
            os.makedirs(folder, exist_ok=True)
            paths[variant] = {}
            for name, (n, k) in stores.items():
                path = paths[variant][name] = os.path.join(folder, f"{n}x{k}.h5")
                if not os.path.exists(path):
                    print(f"writing {path} with {variant}", file=sys.stderr)
                    run(BUILD, tree, path, str(n), str(k))
        times = {v: {s: {"wall": [], "cpu": []} for s in stores} for v in variants}
        for r in range(args.rounds):
            for variant in rotated(list(variants), r):
                result = json.loads(
                    run(MEASURE, variants[variant], str(args.opens), *paths[variant].values())
                )
                for name, path in paths[variant].items():
                    for clock in ("wall", "cpu"):
                        times[variant][name][clock] += result[path][clock]
    medians = {
        v: {s: {c: median(t) for c, t in clocks.items()} for s, clocks in per.items()}
        for v, per in times.items()
    }
    mine = medians["this tree"]
    headers = ["store"] + [f"{v} wall / CPU (ms)" for v in variants]
    headers += [f"this / {v}" for v in variants if v != "this tree"]
    rows = []
    for name in stores:
        row = [name]
        for v in variants:
            row.append(
                f"{fmt(medians[v][name]['wall'] * 1e3, 1)} / "
                f"{fmt(medians[v][name]['cpu'] * 1e3, 1)}"
            )
        for v in variants:
            if v != "this tree":
                row.append(fmt(mine[name]["wall"] / medians[v][name]["wall"], 2))
        rows.append(row)
    count = args.rounds * args.opens
    info = machine()
    text = (
        f"Warm `h5store.open(path)` (reader), medians of {count} opens a variant "
        f"({args.rounds} rounds x {args.opens}, variants alternated in fresh processes); "
        f"this tree is h5store {info['h5store_commit']}"
        f"{' (uncommitted changes)' if info['h5store_dirty'] else ''}, load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        f"({os.cpu_count()} CPUs)\n\n" + markdown_table(headers, rows)
    )
    print(text)
    if args.out:
        write_results(
            args.out,
            "open_speed",
            f"# Open speed\n\n`{command_line()}`\n\n{text}",
            {"args": vars(args), "machine": info, "medians": medians, "times": times},
        )


if __name__ == "__main__":
    main()
