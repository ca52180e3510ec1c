"""What opening a store by URL costs: requests, round trips and bytes, against the targets of
issue 19 (<= 4 requests, <= 3 round trips, bytes <= the index's stored size + 2 MB).

    python benchmarks/remote_open.py s3://bucket/run.h5 [--local run.h5]

(credentials and endpoint from the AWS_* variables). ``--local`` names the same store on disk,
to report the index's stored size and compare the ids read. Each later call is measured the
same way (one row per call: rounds, requests, bytes, seconds).
"""

from __future__ import annotations

import argparse
import time

import h5py

import h5store
from h5store import format as fmt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--local", help="the same store on disk (for the index's size)")
    args = parser.parse_args()
    start = time.perf_counter()
    store = h5store.open(args.url)
    seconds = time.perf_counter() - start
    source = store.engine.source
    print(f"{args.url}: {len(store):,} images")
    print(
        f"open: {source.requests} requests, {source.rounds} round trips, "
        f"{source.bytes_read:,} bytes, {seconds * 1e3:.0f} ms"
    )
    if args.local:
        with h5py.File(args.local, "r", locking=False) as f:
            index_bytes = f[fmt.INDEX].id.get_storage_size()
        print(
            f"targets: requests <= 4, round trips <= 3, bytes <= {index_bytes:,} (index) + "
            f"2 MB = {index_bytes + (2 << 20):,}"
        )
        with h5store.open(args.local) as local:
            assert store.ids().tolist() == local.ids().tolist(), "ids differ"
    ids = store.ids()
    calls = {
        "store[id]": lambda: store[int(ids[len(ids) // 2])],
        "get_batch(256 random)": lambda: store.get_batch(ids[:: max(1, len(ids) // 256)][:256]),
        "record(id)": lambda: store.record(int(ids[len(ids) // 3])),
        "to_pandas()": lambda: store.to_pandas(),
        "scores": lambda: store.scores,
    }
    for name, call in calls.items():
        rounds, requests, nbytes = source.rounds, source.requests, source.bytes_read
        start = time.perf_counter()
        call()
        print(
            f"{name:22s} {source.rounds - rounds:4d} round trips {source.requests - requests:5d} "
            f"requests {source.bytes_read - nbytes:12,} bytes "
            f"{(time.perf_counter() - start) * 1e3:7.0f} ms"
        )
    store.close()


if __name__ == "__main__":
    main()
