"""PyTorch DataLoader throughput: h5store's ImageStoreDataset against an ImageFolder tree read
with Pillow (what torchvision's ImageFolder does), on the same JPEG q90 bytes, and against the
codec's own limit on the same cores.

    python benchmarks/dataloader.py [--n 6000] [--size 224] [--workers 2] [--reps 3]

Every loader yields (B, C, H, W) uint8 batches and class ids; batches of 64, shuffled.
h5store is measured both through its own ``ds.loader()`` (whole batches decoded into one
tensor) and through a plain ``DataLoader(ds)`` with per-sample collation, and so is the
streaming loader (``StreamingImageDataset.loader()``: spans of neighbouring images in a random
order, shuffled within a window) at each ``--spans`` size (MiB).

Measured for each loader, repetitions alternating the loaders:

* cold epoch: a new DataLoader, one epoch, from ``iter()`` (which starts the workers) to the
  last batch;
* steady state, as a training loop sees it: persistent workers, epochs after the first, each
  timed from the arrival of batch ``--skip`` to the last batch (the first batches of an
  epoch wait for the prefetch queue to fill);
* the ceiling, in the same run: imagecodecs decoding the same payloads from memory on
  ``--workers`` threads (wall time), alternated with the loaders.

Where the rest goes, measured in the same run: the workers' own work without the DataLoader
(``ds.batch`` in this process on one thread, against one-thread decoding of the same images),
the main process's CPU time per batch received, and worker start-up (cold epoch time minus a
steady epoch). Targets (issue 9): steady state >= 0.85 x the ceiling and >= 1.5 x ImageFolder +
Pillow.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import imagecodecs
import numpy as np
import torch
from _util import command_line, machine, make_payloads, markdown_table, median, write_results
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import h5store
from h5store.folders import export_folder
from h5store.torch import WINDOW, ImageStoreDataset, StreamingImageDataset

BATCHED = "h5store, ds.loader() (whole batches)"
COLLATED = "h5store, DataLoader(ds) (per-sample collation)"
FOLDER = "ImageFolder layout + Pillow"


class PillowFolder(Dataset):
    """torchvision.datasets.ImageFolder's reading path without torchvision: a file per image,
    decoded with Pillow, converted to RGB."""

    def __init__(self, root: str):
        # class folders only: an h5store export also writes its index file beside them
        self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        self.items = [
            (os.path.join(root, c, f), k)
            for k, c in enumerate(self.classes)
            for f in sorted(os.listdir(os.path.join(root, c)))
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int):
        path, target = self.items[k]
        with open(path, "rb") as fh:
            image = np.array(Image.open(fh).convert("RGB"))  # a writable copy, as ToTensor makes
        return torch.from_numpy(image).permute(2, 0, 1), target


def make_loader(name: str, datasets: dict, args, persistent: bool) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    options = {"num_workers": args.workers, "persistent_workers": persistent}
    if name == BATCHED:  # h5store's own batch loading: decoded straight into the batch tensor
        return datasets[name].loader(args.batch, shuffle=True, generator=generator, **options)
    if isinstance(datasets[name], StreamingImageDataset):  # it shuffles itself
        return datasets[name].loader(args.batch, **options)
    return DataLoader(
        datasets[name], batch_size=args.batch, shuffle=True, generator=generator, **options
    )


def epoch(loader: DataLoader, skip: int) -> dict[str, float]:
    """One epoch: the whole epoch's rate (from iter(), so worker start-up counts when the
    loader starts them), the rate after the first ``skip`` batches, and the main process's CPU
    seconds per batch while batches arrive."""
    start = time.perf_counter()
    cpu_start = time.process_time()
    arrivals, sizes = [], []
    for images, _ in loader:
        arrivals.append(time.perf_counter())
        sizes.append(len(images))
        if len(arrivals) == skip:
            cpu_steady = time.process_time()
    end = arrivals[-1]
    return {
        "epoch": sum(sizes) / (end - start),
        "steady": sum(sizes[skip:]) / (end - arrivals[skip - 1]),
        "main_cpu_ms_per_batch": 1e3 * (time.process_time() - cpu_steady) / (len(sizes) - skip),
        "epoch_s": end - start,
        "main_cpu_total_s": time.process_time() - cpu_start,
    }


def decode_ceiling(payloads: list[bytes], threads: int, pool: ThreadPoolExecutor) -> float:
    """imagecodecs alone decoding ``payloads`` on ``threads`` threads (images/s, wall)."""
    parts = [payloads[k::threads] for k in range(threads)]
    start = time.perf_counter()
    futures = [
        pool.submit(lambda part: [imagecodecs.jpeg8_decode(p) for p in part], part)
        for part in parts
    ]
    for f in futures:
        f.result()
    return len(payloads) / (time.perf_counter() - start)


def worker_work(
    path: str, ids: np.ndarray, payloads: list[bytes], batch: int, shape: tuple[int, ...]
) -> dict[str, float]:
    """What a ds.loader() worker does per batch, here in this process on one thread (CPU time):
    ``get_batch(ids, out=)`` into a reused batch buffer (CRC-32 check, lookups, decode),
    against imagecodecs alone decoding the same images into new arrays (the ceiling's work)."""
    order = np.random.default_rng(0).permutation(len(ids))
    chunks = [order[k : k + batch] for k in range(0, len(order), batch)]
    out = np.empty((batch, *shape), np.uint8)
    threads = h5store.get_threads()
    h5store.set_threads(1)
    try:
        with h5store.open(path) as store:
            start = time.process_time()
            for ks in chunks:
                store.get_batch(ids[ks], out=out[: len(ks)])
            batch_rate = len(order) / (time.process_time() - start)
        start = time.process_time()
        for ks in chunks:
            kept = [imagecodecs.jpeg8_decode(payloads[k]) for k in ks.tolist()]
        del kept
        decode_rate = len(order) / (time.process_time() - start)
    finally:
        h5store.set_threads(threads)
    return {"batch_1thread": batch_rate, "decode_1thread": decode_rate}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000, help="images per epoch")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="steady-state epochs per repetition (persistent workers)",
    )
    parser.add_argument(
        "--skip", type=int, default=8, help="batches excluded at the start of each steady epoch"
    )
    parser.add_argument(
        "--spans",
        type=float,
        nargs="*",
        default=[1.0],
        help="span sizes (MiB) of the streaming loaders measured",
    )
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)

    data = make_payloads(args.n, args.size)
    work = tempfile.mkdtemp(prefix="h5store-dataloader-")
    pool = ThreadPoolExecutor(args.workers)
    try:
        store_path = os.path.join(work, "store.h5")
        with h5store.open(store_path, "w", codec="jpeg") as store:
            ids = store.add_encoded_batch(
                data.payloads, labels=[data.class_names[k] for k in data.labels]
            )
            folder = os.path.join(work, "folder")
            export_folder(store, folder, progress=False)  # the same JPEG bytes as files
        h5 = ImageStoreDataset(store_path)
        datasets = {BATCHED: h5, COLLATED: h5, FOLDER: PillowFolder(folder)}
        for mib in args.spans:
            datasets[f"h5store, streaming loader, {mib:g} MiB spans, window {WINDOW}"] = (
                StreamingImageDataset(store_path, span_bytes=int(mib * (1 << 20)))
            )
        by_id = dict(zip(ids.tolist(), data.payloads))
        payloads = [by_id[int(i)] for i in h5.ids]  # in the dataset's order

        cold = {name: [] for name in datasets}
        steady = {name: [] for name in datasets}
        ceiling: list[float] = []
        for rep in range(args.reps):
            names = list(datasets) if rep % 2 == 0 else list(reversed(datasets))
            for name in names:
                ceiling.append(decode_ceiling(payloads, args.workers, pool))
                cold[name].append(epoch(make_loader(name, datasets, args, False), args.skip))
                loader = make_loader(name, datasets, args, True)
                epoch(loader, args.skip)  # starts the persistent workers
                for _ in range(args.epochs):
                    ceiling.append(decode_ceiling(payloads, args.workers, pool))
                    steady[name].append(epoch(loader, args.skip))
                del loader  # stops its workers
        h5.close()
        work_alone = worker_work(
            store_path, h5.ids, payloads, args.batch, (args.size, args.size, 3)
        )

        ceiling_rate = median(ceiling)
        folder_steady = median([e["steady"] for e in steady[FOLDER]])
        rows = []
        summary = {}
        for name in datasets:
            s = median([e["steady"] for e in steady[name]])
            whole = median([e["epoch"] for e in steady[name]])
            c = median([e["epoch"] for e in cold[name]])
            start_up = median([e["epoch_s"] for e in cold[name]]) - median(
                [e["epoch_s"] for e in steady[name]]
            )
            main_cpu = median([e["main_cpu_ms_per_batch"] for e in steady[name]])
            summary[name] = {
                "steady": s,
                "steady_whole_epoch": whole,
                "cold_epoch": c,
                "start_up_s": start_up,
                "main_cpu_ms_per_batch": main_cpu,
            }
            rows.append(
                [
                    name,
                    f"{s:,.0f}",
                    f"{s / ceiling_rate:.2f}",
                    f"{s / folder_steady:.2f}",
                    f"{whole:,.0f}",
                    f"{whole / ceiling_rate:.2f}",
                    f"{c:,.0f}",
                    f"{start_up:.2f}",
                    f"{main_cpu:.2f}",
                ]
            )
        rows.append(
            [
                f"ceiling: imagecodecs decoding on {args.workers} threads",
                f"{ceiling_rate:,.0f}",
                "1.00",
                f"{ceiling_rate / folder_steady:.2f}",
                "",
                "",
                "",
                "",
                "",
            ]
        )
        batch_ms = 1e3 * args.batch
        overhead = 1 - work_alone["batch_1thread"] / work_alone["decode_1thread"]
        where = machine()
        md = (
            f"# PyTorch DataLoader: h5store against an ImageFolder tree read with Pillow and "
            f"against the codec's limit\n\n"
            f"Produced by `{command_line()}` on {where['date']} ({where['cpus']} cores, load "
            f"average {where['load_average'][0]:.1f} at start and {os.getloadavg()[0]:.1f} at "
            f"end; h5store {where['h5store_commit']}"
            f"{' + uncommitted changes' if where['h5store_dirty'] else ''}, torch "
            f"{torch.__version__}).\n\n"
            f"{args.n} JPEG q90 images of {args.size} px, batches of {args.batch}, "
            f"{args.workers} workers, shuffled; medians of {args.reps} repetitions alternating "
            f"the loaders. Steady state: persistent workers, {args.epochs} epochs per "
            f"repetition after a first one, each timed from batch {args.skip} on (whole steady "
            "epoch: from `iter()`, which is fair to the streaming loader: its workers decode "
            "about a window of images ahead of the first batches). Cold epoch: a "
            "new DataLoader, timed from `iter()`. Start-up: cold epoch time minus a steady "
            "epoch's. Main CPU: the main process's CPU time per batch received (steady "
            f"state). Ceiling: imagecodecs decoding the same payloads from memory on "
            f"{args.workers} threads, alternated with the loaders.\n\n"
            + markdown_table(
                [
                    "loader",
                    "steady (img/s)",
                    "x ceiling",
                    "x ImageFolder + Pillow",
                    "whole steady epoch (img/s)",
                    "x ceiling",
                    "cold epoch (img/s)",
                    "start-up (s)",
                    "main CPU (ms/batch)",
                ],
                rows,
            )
            + "\n\n"
            f"A worker's own work, in this process on one thread (CPU time): "
            f"`get_batch(ids, out=)` into a reused batch buffer "
            f"{work_alone['batch_1thread']:,.0f} img/s against imagecodecs decoding the same "
            f"images into new arrays {work_alone['decode_1thread']:,.0f} img/s "
            f"({100 * overhead:.1f} % of the time outside the decoder, "
            f"{batch_ms * overhead / work_alone['batch_1thread']:.2f} ms per batch of "
            f"{args.batch}). The rest of the gap to the ceiling is the DataLoader's: batch "
            "transfer, the main process and scheduling three processes on the cores.\n"
        )
        print(md)
        write_results(
            args.out,
            "dataloader",
            md,
            {
                "machine": where,
                "args": vars(args),
                "ceiling": ceiling,
                "summary": summary,
                "steady": steady,
                "cold": cold,
                "worker_work": work_alone,
            },
        )
    finally:
        pool.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
