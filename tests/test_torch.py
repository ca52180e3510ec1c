"""The PyTorch Dataset: every DataLoader worker (fork and spawn) reads correctly."""

import warnings

import numpy as np
import pytest
from conftest import photo_crops

import h5store

torch = pytest.importorskip("torch")
from h5store.torch import ImageStoreDataset  # noqa: E402


@pytest.fixture
def dataset_file(store_path):
    images, classes = photo_crops()
    with h5store.open(store_path, "w", codec="png") as store:
        store.add_batch(images, labels=classes, true_labels=classes[::-1])
        store.add(images[0].mean(axis=2).astype(np.uint8), label="gray")
        store.delete([3])
    return store_path, images, classes


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_read_every_image(dataset_file, context):
    path, images, classes = dataset_file
    ds = ImageStoreDataset(path, ids=[i for i in range(len(images)) if i != 3], target="true_label")
    loader = torch.utils.data.DataLoader(
        ds, batch_size=5, num_workers=2, multiprocessing_context=context
    )
    seen = []
    for batch, targets in loader:
        assert batch.shape[1:] == (3, 64, 64) and batch.dtype == torch.uint8
        seen.extend(zip(batch, targets.tolist()))
    assert len(seen) == len(images) - 1
    for (tensor, target), i in zip(seen, ds.ids):
        assert np.array_equal(tensor.permute(1, 2, 0).numpy(), images[i])
        assert ds.classes[target] == classes[::-1][i]


def test_single_items_targets_and_transform(dataset_file):
    path, images, classes = dataset_file
    ds = ImageStoreDataset(path, transform=lambda t: t.float() / 255)
    assert len(ds) == len(images)  # one deleted, one gray added
    image, label = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
    assert ds.classes[label] == classes[0]
    gray, label = ds[len(ds) - 1]
    assert gray.shape == (1, 64, 64) and ds.classes[label] == "gray"
    ids_only = ImageStoreDataset(path, target="id")
    assert ids_only[2][1] == 2
    with pytest.raises(h5store.UnknownIdError):
        ImageStoreDataset(path, ids=[3])


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_loader_decodes_straight_into_channels_last_batches(dataset_file, workers):
    path, images, classes = dataset_file
    ids = [i for i in range(len(images)) if i != 3]
    ds = ImageStoreDataset(path, ids=ids)
    seen = {}
    for batch, targets in ds.loader(
        4, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(1)
    ):
        assert batch.shape[1:] == (3, 64, 64) and batch.dtype == torch.uint8
        assert batch.is_contiguous(memory_format=torch.channels_last)
        for tensor, target in zip(batch, targets.tolist()):
            hwc = tensor.permute(1, 2, 0).numpy()
            k = next(k for k in ids if np.array_equal(images[k], hwc))
            seen[k] = ds.classes[target]
    assert seen == {k: classes[k] for k in ids}


def test_batches_need_one_image_size(dataset_file):
    path, _, _ = dataset_file
    ds = ImageStoreDataset(path)
    with pytest.raises(h5store.InvalidInputError, match="out holds"):
        ds.batch([0, len(ds) - 1])  # an RGB crop and the gray image


def _block_of(batch):
    # The main process maps each block once: a block is where its batches' pixels lie.
    return batch.data_ptr()


@pytest.mark.parametrize("keep", [False, True])
def test_loader_workers_reuse_blocks_only_once_let_go(dataset_file, keep):
    """ds.loader() workers decode into shared-memory blocks they reuse (a fresh block per batch
    costs as much as decoding it), but never one the main process still holds a batch on."""
    path, images, _ = dataset_file
    ids = [i for i in range(len(images)) if i != 3]
    ds = ImageStoreDataset(path, ids=ids, target="id")
    loader = ds.loader(1, num_workers=1, persistent_workers=True)
    kept, blocks = [], set()
    for _ in range(3):  # epochs
        for batch, batch_ids in loader:
            blocks.add(_block_of(batch))
            if keep:
                kept.append((batch, int(batch_ids[0])))
    batches = 3 * len(ids)
    if keep:  # every batch still holds its own image: none was overwritten
        assert len(blocks) == batches
        for batch, image_id in kept:
            assert np.array_equal(batch[0].permute(1, 2, 0).numpy(), images[image_id])
    else:  # the prefetch depth plus a few: far fewer blocks than batches
        assert len(blocks) <= 5 < batches
    del loader


def test_loader_with_pin_memory_gives_the_same_batches(dataset_file):
    """pin_memory=True: pinned copies where an accelerator exists, the slot's own tensors (and
    DataLoader's warning) where none does; either way the same images."""
    path, images, _ = dataset_file
    ids = [i for i in range(len(images)) if i != 3]
    ds = ImageStoreDataset(path, ids=ids, target="id")
    seen = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no accelerator is found" on a CPU-only machine
        for batch, batch_ids in ds.loader(2, num_workers=1, pin_memory=True):
            for tensor, image_id in zip(batch, batch_ids.tolist()):
                seen[image_id] = tensor.permute(1, 2, 0).numpy().copy()
    assert sorted(seen) == ids
    for image_id in ids:
        assert np.array_equal(seen[image_id], images[image_id])


def test_targets_follow_ids_given_out_of_order(dataset_file):
    path, images, classes = dataset_file
    ids = [5, 0, 2]
    for target, expected in (("label", classes), ("true_label", classes[::-1])):
        ds = ImageStoreDataset(path, ids=ids, target=target)
        assert ds.ids.tolist() == ids
        for k, image_id in enumerate(ids):
            image, label = ds[k]
            assert np.array_equal(image.permute(1, 2, 0).numpy(), images[image_id])
            assert ds.classes[label] == expected[image_id]
        batch, labels = ds.batch([0, 1, 2])
        assert [ds.classes[t] for t in labels.tolist()] == [expected[i] for i in ids]
        assert np.array_equal(batch[2].permute(1, 2, 0).numpy(), images[2])


def test_shuffled_loader_order_follows_the_generator_seed(dataset_file):
    path, images, _ = dataset_file
    ds = ImageStoreDataset(path, ids=[i for i in range(len(images)) if i != 3], target="id")

    def order(seed):
        loader = ds.loader(4, shuffle=True, generator=torch.Generator().manual_seed(seed))
        return [i for _, batch_ids in loader for i in batch_ids.tolist()]

    first = order(7)
    assert sorted(first) == ds.ids.tolist() and first != ds.ids.tolist()
    assert order(7) == first
    assert order(8) != first


def test_transform_gets_a_sample_from_dataloader_and_a_batch_from_loader(dataset_file):
    """What the docstring says, which changes what a torchvision transform must accept."""
    seen = []

    def transform(tensor):
        seen.append(tuple(tensor.shape))
        return tensor

    ds = ImageStoreDataset(dataset_file[0], transform=transform)
    next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    per_sample = list(seen)
    seen.clear()
    next(iter(ds.loader(4)))
    assert {len(shape) for shape in per_sample} == {3} and len(per_sample) == 4
    assert [len(shape) for shape in seen] == [4] and seen[0][0] == 4
    doc = " ".join(ImageStoreDataset.__doc__.split())
    assert "per sample, with one (C, H, W) tensor, under ``DataLoader(ds, ...)``" in doc
    assert "per batch, with the whole (B, C, H, W) tensor, under ``ds.loader()``" in doc
    ds.close()
