"""PyTorch in and out where a mix-up would not show on square images with ids 0, 1, 2, ...

Tensors come in channels-first, (C, H, W); the store keeps (H, W, C). The Dataset's
``target="id"`` must give the ids, which differ from positions once ids are the caller's.
"""

import numpy as np
import pytest

import h5store

torch = pytest.importorskip("torch")
from h5store.torch import ImageStoreDataset  # noqa: E402

RNG = np.random.default_rng(21)
HWC = RNG.integers(0, 255, (6, 5, 9, 3), dtype=np.uint8)  # H=5 != W=9
IDS = [100, 7, 55, 3000, 12, 9]


def test_channels_first_tensors_with_h_not_w_are_stored_as_the_hwc_original(store_path):
    chw = torch.from_numpy(HWC).permute(0, 3, 1, 2)  # (N, C, H, W), not contiguous
    gray = torch.from_numpy(HWC[0, :, :, :1]).permute(2, 0, 1)  # (1, H, W)
    with h5store.open(store_path, "w", codec="png") as store:
        batch = store.add_batch(chw, labels=["a"] * len(HWC))  # one (N, C, H, W) tensor
        listed = store.add_batch(list(chw[:2].contiguous()), labels=["a", "a"])  # (C, H, W) each
        single = store.add(chw[3], label="a")
        one_channel = store.add(gray, label="a")
    with h5store.open(store_path) as store:
        for image_id, image in zip([*batch, *listed, single], [*HWC, *HWC[:2], HWC[3]]):
            assert store[image_id].shape == (5, 9, 3)
            assert np.array_equal(store[image_id], image), image_id
        assert np.array_equal(store[one_channel], HWC[0, :, :, 0])


@pytest.fixture
def id_store(store_path):
    with h5store.open(store_path, "w", codec="png") as store:
        store.add_batch(HWC, labels=["a", "b", "a", "b", "a", "b"], ids=IDS)
        store.delete([55])
    return store_path


def test_target_id_gives_ids_on_the_single_item_path(id_store):
    live = [i for i in IDS if i != 55]
    ds = ImageStoreDataset(id_store, target="id")
    assert len(ds) == len(live)
    for k, image_id in enumerate(live):
        tensor, target = ds[k]
        assert target == image_id
        assert np.array_equal(tensor.permute(1, 2, 0).numpy(), HWC[IDS.index(image_id)])


def test_target_id_gives_ids_on_the_batch_paths(id_store):
    chosen = [3000, 9, 100, 12]
    ds = ImageStoreDataset(id_store, ids=chosen, target="id")
    images, targets = ds.batch([2, 0, 3])
    assert targets.tolist() == [100, 3000, 12]
    for tensor, image_id in zip(images, targets.tolist()):
        assert np.array_equal(tensor.permute(1, 2, 0).numpy(), HWC[IDS.index(image_id)])
    seen = []
    for batch, targets in ds.loader(3, num_workers=0):
        assert batch.shape[1:] == (3, 5, 9)
        for tensor, image_id in zip(batch, targets.tolist()):
            assert np.array_equal(tensor.permute(1, 2, 0).numpy(), HWC[IDS.index(image_id)])
            seen.append(image_id)
    assert seen == chosen
    # DataLoader's own batching goes through __getitems__
    loaded = [t for _, targets in torch.utils.data.DataLoader(ds, batch_size=3) for t in targets]
    assert [int(t) for t in loaded] == chosen
