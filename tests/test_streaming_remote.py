"""StreamingImageDataset on stores behind real servers (SeaweedFS's S3 gateway, nginx with
HTTP ranges; fixtures in tests/remote_servers.py): the same plan as the local file, every image
once per epoch over 2 workers (fork and spawn), the same pixels."""

import numpy as np
import pytest
from test_streaming import PIXELS, _images, _joined, _read

import h5store

torch = pytest.importorskip("torch")
from h5store.torch import StreamingImageDataset  # noqa: E402

SETTINGS = {"span_bytes": 20 * PIXELS, "window": 64, "seed": 4, "target": "id"}


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("streaming-remote") / "stream.h5")
    images = _images(200, seed=3)
    with h5store.open(path, "w", codec="raw") as store:
        store.add_batch(images, labels=[f"c{k // 40}" for k in range(200)])
        store.delete([11])
    return path, images, [i for i in range(200) if i != 11]


@pytest.mark.parametrize("context", ["fork", "spawn"])
@pytest.mark.parametrize("server", ["s3_server", "http_server"])
def test_remote_store_streams_every_image_once_in_the_local_plan(
    request, local_store, server, context
):
    path, images, live = local_store
    url = request.getfixturevalue(server).upload(path, f"streaming-{server}.h5")
    remote = StreamingImageDataset(url, **SETTINGS)
    local = StreamingImageDataset(path, **SETTINGS)
    assert remote.spans == local.spans > 1
    for epoch in range(2):
        for worker in range(2):
            assert np.array_equal(
                remote.epoch_ids(epoch, worker=worker, workers=2),
                local.epoch_ids(epoch, worker=worker, workers=2),
            )
    loader = remote.loader(16, num_workers=2, multiprocessing_context=context)
    for epoch in range(2):
        batches, seen = _read(loader)
        assert sorted(_joined(batches)) == live
        for worker in range(2):
            planned = remote.epoch_ids(epoch, worker=worker, workers=2).tolist()
            assert _joined(batches[worker::2]) == planned
        for image_id in live:
            assert np.array_equal(seen[image_id], images[image_id])


def test_storage_options_reach_every_open(local_store, s3_server):
    path, images, live = local_store
    url = s3_server.upload(path, "streaming-options.h5")
    ds = StreamingImageDataset(url, storage_options=s3_server.storage_options, **SETTINGS)
    seen = {int(i): image for image, i in ds}  # read in this process, through its own handle
    assert sorted(seen) == live
    assert all(np.array_equal(seen[i].permute(1, 2, 0).numpy(), images[i]) for i in live)
