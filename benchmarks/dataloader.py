"""PyTorch DataLoader throughput: h5store's ImageStoreDataset against an ImageFolder tree read
with Pillow (what torchvision's ImageFolder does), on the same JPEG q90 bytes.

    python benchmarks/dataloader.py [--n 6000] [--size 224] [--workers 2] [--reps 3]

Every loader yields (B, C, H, W) uint8 batches and class ids; batches of 64, shuffled.
h5store is measured both through its own ``ds.loader()`` (whole batches decoded into one
tensor) and through a plain ``DataLoader(ds)`` with per-sample collation.
Reported: images per second, medians of repetitions alternating the loaders (DESIGN
section 4 asks for h5store >= 1.5 x the folder with 2 workers).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import torch
from _util import command_line, machine, make_payloads, markdown_table, median, write_results
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import h5store
from h5store.folders import export_folder
from h5store.torch import ImageStoreDataset


class PillowFolder(Dataset):
    """torchvision.datasets.ImageFolder's reading path without torchvision: a file per image,
    decoded with Pillow, converted to RGB."""

    def __init__(self, root: str):
        self.classes = sorted(os.listdir(root))
        self.items = [(os.path.join(root, c, f), k) for k, c in enumerate(self.classes)
                      for f in sorted(os.listdir(os.path.join(root, c)))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int):
        path, target = self.items[k]
        with open(path, "rb") as fh:
            image = np.array(Image.open(fh).convert("RGB"))  # a writable copy, as ToTensor makes
        return torch.from_numpy(image).permute(2, 0, 1), target


def make_loader(dataset: Dataset, workers: int, batch: int, batched: bool) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    if batched:  # h5store's own batch loading: decoded straight into the batch tensor
        return dataset.loader(batch, shuffle=True, generator=generator, num_workers=workers)
    return DataLoader(dataset, batch_size=batch, shuffle=True, generator=generator, num_workers=workers)


def throughput(loader: DataLoader) -> float:
    start = time.perf_counter()
    seen = 0
    for images, _ in loader:
        seen += len(images)
    return seen / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000, help="images (worker start-up weighs on fewer)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)

    data = make_payloads(args.n, args.size)
    work = tempfile.mkdtemp(prefix="h5store-dataloader-")
    try:
        store_path = os.path.join(work, "store.h5")
        with h5store.open(store_path, "w", codec="jpeg") as store:
            store.add_encoded_batch(data.payloads, labels=[data.class_names[k] for k in data.labels])
            folder = os.path.join(work, "folder")
            export_folder(store, folder, progress=False)  # the same JPEG bytes as files
        h5 = ImageStoreDataset(store_path)
        contenders = {
            "h5store, ds.loader() (whole batches)": make_loader(h5, args.workers, args.batch, True),
            "h5store, DataLoader(ds) (per-sample collation)": make_loader(h5, args.workers, args.batch, False),
            "ImageFolder layout + Pillow": make_loader(PillowFolder(folder), args.workers, args.batch, False),
        }
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        for rep in range(args.reps):
            names = list(contenders) if rep % 2 == 0 else list(reversed(contenders))
            for name in names:
                rates[name].append(throughput(contenders[name]))
        med = {name: median(v) for name, v in rates.items()}
        folder_rate = med["ImageFolder layout + Pillow"]
        rows = [[name, f"{rate:,.0f}", f"{rate / folder_rate:.2f}"] for name, rate in med.items()]
        where = machine()
        md = (
            f"# PyTorch DataLoader: h5store against an ImageFolder tree read with Pillow\n\n"
            f"Produced by `{command_line()}` on {where['date']} ({where['cpus']} cores, load "
            f"average {where['load_average'][0]:.1f}; h5store {where['h5store_commit']}, torch "
            f"{torch.__version__}).\n\n"
            f"{args.n} JPEG q90 images of {args.size} px, batches of {args.batch}, "
            f"{args.workers} workers, shuffled; medians of {args.reps} alternating runs.\n\n"
            + markdown_table(["dataset", "images/s", "x ImageFolder + Pillow"], rows)
            + "\n"
        )
        print(md)
        write_results(args.out, "dataloader", md, {"machine": where, "args": vars(args),
                                                   "rates": rates, "median": med})
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
