"""The PyTorch DDP recipe of docs/many-writers.md as the DDP test runs it: every rank
classifies its share of a dataset and writes its own shard with ids = dataset indices; rank 0
merges after a barrier."""

import os

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

import h5store
from h5store.sample import sample_set


class Photos(Dataset):
    def __init__(self, n: int, size: int):
        s = sample_set(n, size, seed=5)
        self.images, self.truth, self.classes = s.images, s.true_labels, s.class_names

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return torch.from_numpy(self.images[index]).permute(2, 0, 1), index


def model(classes: int) -> torch.nn.Module:
    torch.manual_seed(0)  # the same weights in every process
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, classes),
    )


def classify(loader: DataLoader, dataset: Photos, store: h5store.ImageStore) -> None:
    net = model(len(dataset.classes)).eval()
    with torch.no_grad():
        for images, index in loader:
            probabilities = net(images.float() / 255).softmax(dim=1).numpy()
            store.add_batch(
                np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy()),
                labels=probabilities.argmax(axis=1),
                scores=probabilities,
                true_labels=[dataset.truth[i] for i in index.tolist()],
                ids=index.numpy(),
            )  # the dataset index is the global id


def rank_main(rank: int, world: int, init_method: str, folder: str, n: int, size: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    dataset = Photos(n, size)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=0)
    # DistributedSampler pads the last ranks with repeats of other ranks' indices so that all
    # ranks get the same count; a repeat would be a duplicate id, so leave them out.
    mine = list(sampler)[: len(range(rank, len(dataset), world))]
    loader = DataLoader(dataset, batch_size=8, sampler=mine)
    with h5store.open(
        os.path.join(folder, f"run-rank{rank}.h5"), "w", labels=dataset.classes
    ) as store:
        classify(loader, dataset, store)
    dist.barrier()  # every shard is closed
    if rank == 0:
        shards = [os.path.join(folder, f"run-rank{r}.h5") for r in range(world)]
        h5store.merge(shards, os.path.join(folder, "run.h5"))
    dist.barrier()
    dist.destroy_process_group()
