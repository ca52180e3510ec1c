"""What format 1.2's checks cost: open time and a full read of the score vectors, before and after.

    python benchmarks/format12.py [--images 100000] [--classes 100] [--reps 7] [--base f831d66]

"Before" is h5store at ``--base`` (format 1.1, the commit this branch started from), exported
with ``git archive`` into a temporary folder and run from there on a store it wrote itself;
"after" is this tree on a 1.2 store (class groups checked against /labels and /stacks at open,
every score row against /score_crc32 and the top-1 cross-check on ``store.scores``) and on the
1.1 store (read without the new checks). Both stores hold the same pre-encoded 32 px JPEGs,
labels and (N, classes) score vectors. Each repetition runs every variant in a fresh process
(the timing is taken inside it, imports excluded), in an order rotated per repetition, so load
lands on every variant alike; medians of wall-clock seconds are reported, and ratios to before.
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

BUILD = r"""
import sys, numpy as np, imagecodecs, h5store
path, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
pool = [imagecodecs.jpeg8_encode(rng.integers(0, 255, (32, 32, 3), np.uint8), level=90)
        for _ in range(256)]
labels = [f"class {j:04d}" for j in range(k)]
with h5store.open(path, "w", codec="jpeg", labels=labels) as store:
    for start in range(0, n, 10000):
        m = min(10000, n - start)
        vectors = rng.random((m, k)).astype(np.float32)
        store.add_encoded_batch([pool[i % 256] for i in range(start, start + m)],
                                labels=vectors.argmax(axis=1).tolist(), scores=vectors)
"""

MEASURE = r"""
import json, sys, time, h5store
path = sys.argv[1]
t = time.perf_counter()
store = h5store.open(path)
opened = time.perf_counter() - t
t = time.perf_counter()
scores = store.scores
read = time.perf_counter() - t
store.close()
print(json.dumps({"open_s": opened, "scores_s": read, "rows": len(scores)}))
"""


def run(code: str, pythonpath: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode:
        raise SystemExit(done.stderr)
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--base", default="f831d66")
    parser.add_argument("--out", default=None, help="write format12.md/.json there")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        os.mkdir(base)
        archive = subprocess.run(
            ["git", "-C", ROOT, "archive", args.base, "h5store"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", base], input=archive, check=True)
        old, new = os.path.join(tmp, "old.h5"), os.path.join(tmp, "new.h5")
        run(BUILD, base, old, str(args.images), str(args.classes))
        run(BUILD, ROOT, new, str(args.images), str(args.classes))
        variants = {
            "before: 1.1 code, 1.1 file": (base, old),
            "after: 1.2 code, 1.1 file (no new checks)": (ROOT, old),
            "after: 1.2 code, 1.2 file (checked)": (ROOT, new),
        }
        times: dict[str, list[dict]] = {name: [] for name in variants}
        for rep in range(args.reps + 1):  # the first repetition warms the page cache
            for name in rotated(list(variants), rep):
                pythonpath, path = variants[name]
                result = json.loads(run(MEASURE, pythonpath, path))
                if rep:
                    times[name].append(result)
    before = {
        key: median([t[key] for t in times[next(iter(times))]]) for key in ("open_s", "scores_s")
    }
    rows, data = [], {}
    for name, results in times.items():
        m = {key: median([t[key] for t in results]) for key in ("open_s", "scores_s")}
        data[name] = m
        rows.append(
            [
                name,
                fmt(1e3 * m["open_s"], 1),
                fmt(m["open_s"] / before["open_s"], 2),
                fmt(1e3 * m["scores_s"], 1),
                fmt(m["scores_s"] / before["scores_s"], 2),
            ]
        )
    table = markdown_table(
        ["variant", "open (ms)", "x before", "store.scores (ms)", "x before"], rows
    )
    text = (
        f"{args.images:,} images, {args.classes} classes, (N, {args.classes}) score vectors; "
        f"medians of {args.reps} repetitions, wall clock\n\n{table}\n"
    )
    print(text)
    if args.out:
        write_results(
            args.out,
            "format12",
            f"# Format 1.2 checks\n\n`{command_line()}`\n\n{text}",
            {"args": vars(args), "machine": machine(), "medians": data},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
