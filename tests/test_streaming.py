"""StreamingImageDataset: spans in a random order, a bounded shuffle window, every image once
per epoch across DDP ranks and DataLoader workers (fork and spawn), the same order for the
same (seed, epoch)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import h5store

torch = pytest.importorskip("torch")
from h5store import _spans  # noqa: E402
from h5store.torch import StreamingImageDataset  # noqa: E402

N = 300
PIXELS = 8 * 8 * 3
CLASSES = 6


def _images(n=N, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def _classes(n=N):
    return np.arange(n) * CLASSES // n  # written class by class: the worst case for mixing


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("streaming") / "stream.h5")
    images = _images()
    with h5store.open(path, "w", codec="raw") as store:
        store.add_batch(images, labels=[f"c{c}" for c in _classes()])
        store.delete([7, 150])
    live = [i for i in range(N) if i not in (7, 150)]
    return path, images, live


def _dataset(path, **kwargs):
    kwargs.setdefault("span_bytes", 20 * PIXELS)  # 20 images a span: 15 spans
    kwargs.setdefault("window", 64)
    return StreamingImageDataset(path, **kwargs)


def _read(loader):
    """(the ids of each batch, {id: image}) from batches of (images, ids)."""
    batches, seen = [], {}
    for batch, ids in loader:
        batches.append(ids.tolist())
        for tensor, image_id in zip(batch, ids.tolist()):
            seen[image_id] = tensor.permute(1, 2, 0).numpy().copy()
    return batches, seen


def _joined(batches):
    return [i for batch in batches for i in batch]


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_two_workers_read_every_image_once_per_epoch_in_the_planned_order(stream_file, context):
    path, images, live = stream_file
    ds = _dataset(path, target="id", seed=3)
    loader = ds.loader(16, num_workers=2, multiprocessing_context=context)
    orders = []
    for epoch in range(2):
        batches, seen = _read(loader)
        order = _joined(batches)
        assert sorted(order) == live and len(order) == len(live)
        for image_id in live:
            assert np.array_equal(seen[image_id], images[image_id])
        # DataLoader takes batches from its workers in turn: worker w's batches, joined,
        # are what the plan says worker w reads this epoch.
        for worker in range(2):
            mine = _joined(batches[worker::2])
            assert mine == ds.epoch_ids(epoch, worker=worker, workers=2).tolist()
        orders.append(order)
    assert orders[0] != orders[1]  # each pass over the loader is the next epoch
    assert len(loader) == len(batches)


def test_plain_dataloader_gets_samples_and_set_epoch_chooses_the_order(stream_file):
    path, images, live = stream_file
    ds = _dataset(path, target="label", seed=1)
    classes = _classes()

    def epoch(e):
        ds.set_epoch(e)
        loader = torch.utils.data.DataLoader(ds, batch_size=10, num_workers=2)
        return [(batch, labels) for batch, labels in loader]

    first = epoch(4)
    labels = [ds.classes[t] for _, targets in first for t in targets.tolist()]
    pixels = [tensor.permute(1, 2, 0).numpy() for batch, _ in first for tensor in batch]
    assert len(pixels) == len(live) == len(ds)
    # Every image once: match each yielded image to its id through its pixels.
    by_bytes = {images[i].tobytes(): i for i in live}
    ids = [by_bytes[p.tobytes()] for p in pixels]
    assert sorted(ids) == live
    assert labels == [f"c{classes[i]}" for i in ids]
    again = epoch(4)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, epoch(5)))


def test_persistent_workers_follow_the_epochs(stream_file):
    path, _, live = stream_file
    ds = _dataset(path, target="id")
    loader = ds.loader(32, num_workers=2, persistent_workers=True)

    def planned(epoch):
        return sorted(ds.epoch_ids(epoch, worker=0, workers=2).tolist())

    def worker0(batches):  # the ids of the batches worker 0 made (batches alternate)
        return sorted(_joined(batches[::2]))

    first, _ = _read(loader)
    second, _ = _read(loader)
    assert worker0(first) == planned(0) and worker0(second) == planned(1)
    ds.set_epoch(7)
    seventh, _ = _read(loader)
    assert worker0(seventh) == planned(7) and sorted(_joined(seventh)) == live
    assert worker0(_read(loader)[0]) == planned(8)  # then on from there


def test_the_order_is_a_function_of_seed_and_epoch(stream_file):
    path, _, live = stream_file
    a, b = _dataset(path, seed=5, target="id"), _dataset(path, seed=5)
    assert a.epoch_ids(2).tolist() == b.epoch_ids(2).tolist()
    assert a.epoch_ids(2).tolist() != a.epoch_ids(3).tolist()
    assert a.epoch_ids(2).tolist() != _dataset(path, seed=6).epoch_ids(2).tolist()
    assert sorted(a.epoch_ids(2).tolist()) == live
    # Iterating in this process reads what the plan says.
    a.set_epoch(2)
    assert [int(t) for _, t in a] == a.epoch_ids(2).tolist()
    plain = _dataset(path, shuffle=False, target="id")
    assert [int(t) for _, t in plain] == live  # file order


def _positions(order, live):
    """Where each image was read, and where it lies in the file (both 0..n-1)."""
    read_at = {image_id: k for k, image_id in enumerate(order)}
    return np.array([read_at[i] for i in live]), np.arange(len(live))


def test_images_move_far_and_batches_mix_classes_unlike_no_shuffle(stream_file):
    """The statistics of benchmarks/shuffle_quality.py, against the unshuffled baseline."""
    path, _, live = stream_file
    n = len(live)
    classes = _classes()

    def quality(ds):
        moved, gaps, mixing = [], [], []
        for epoch in range(4):
            order = ds.epoch_ids(epoch).tolist()
            read_at, file_at = _positions(order, live)
            moved.append(np.abs(read_at - file_at) / n)
            gaps.append(np.abs(np.diff(read_at)))
            batches = [classes[order[k : k + 16]] for k in range(0, n - 15, 16)]
            mixing.extend(len(set(b.tolist())) for b in batches)
        return np.concatenate(moved), np.median(np.concatenate(gaps)), np.mean(mixing)

    plain = quality(_dataset(path, shuffle=False))
    shuffled = quality(_dataset(path, window=128))
    assert plain[0].max() == 0 and plain[1] == 1
    # Spans in a random order: images move a third of the epoch on average, as in a full
    # permutation (1/3), and file neighbours end up far apart.
    assert 0.25 < shuffled[0].mean() < 0.42
    assert np.median(shuffled[0]) > 0.15
    assert shuffled[1] > 10
    # Batches mix classes written one after another: more classes per batch than unshuffled.
    assert shuffled[2] > plain[2] + 1


def test_the_window_bounds_how_far_images_move_and_what_a_reader_holds():
    rng = np.random.default_rng(0)
    sizes = rng.integers(100, 5000, 2000)
    order, bounds = _spans.spans_of(np.zeros(2000, int), np.cumsum(sizes), sizes, 50_000)
    for window in (0, 1, 100, 500):
        plan = _spans.plan(
            order, bounds, seed=1, epoch=0, shuffle=True, window=window, consumer=0, consumers=1
        )
        moved = np.abs(plan.order - np.arange(len(plan.order)))
        assert moved.max() <= max(window, 0)
        # Read but not yet emitted, just before each step: at most the window plus one read.
        held = plan.needed() - np.arange(len(plan.order))
        assert held.max() <= window + np.diff(plan.pieces).max()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    span_images=st.integers(1, 400),
    window=st.integers(0, 400),
    world=st.integers(1, 4),
    workers=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    epoch=st.integers(0, 1000),
    keep=st.integers(1, 7),
)
def test_ranks_and_workers_partition_every_epoch(
    stream_file, span_images, window, world, workers, seed, epoch, keep
):
    path, _, live = stream_file
    ids = live[::keep]
    shares = []
    for rank in range(world):
        ds = _dataset(
            path,
            ids=ids,
            span_bytes=span_images * PIXELS,
            window=window,
            seed=seed,
            rank=rank,
            world_size=world,
        )
        rank_share = [ds.epoch_ids(epoch, worker=w, workers=workers) for w in range(workers)]
        assert len(ds) == sum(len(s) for s in rank_share)
        shares.extend(rank_share)
    every = np.concatenate(shares)
    assert sorted(every.tolist()) == sorted(ids)  # each image exactly once
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1


def test_spans_are_runs_of_neighbours_within_one_shard():
    offsets = np.array([500, 0, 100, 0, 300, 200, 100])
    shard = np.array([0, 0, 0, 1, 0, 0, 1])
    sizes = np.full(7, 100)
    order, bounds = _spans.spans_of(shard, offsets, sizes, 250)
    spans = [order[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]
    # Shard 0 by offset: 1 (0), 2 (100), 5 (200) | 4 (300), 0 (500); shard 1: 3, 6.
    assert spans == [[1, 2, 5], [4, 0], [3, 6]]


def test_a_sharded_view_streams_each_shard_in_its_own_spans(tmp_path):
    images = _images(120, seed=2)
    paths = [str(tmp_path / f"shard{k}.h5") for k in range(2)]
    for k, path in enumerate(paths):
        with h5store.open(path, "w", codec="raw") as store:
            ids = list(range(k, 120, 2))  # interleaved, as DDP ranks write them
            store.add_batch(images[ids], labels=["a"] * 60, ids=ids)
    ds = StreamingImageDataset(paths, target="id", span_bytes=10 * PIXELS, window=16)
    assert ds.spans == 12
    batches, seen = _read(ds.loader(8, num_workers=2))
    assert sorted(_joined(batches)) == list(range(120))
    for image_id in range(120):
        assert np.array_equal(seen[image_id], images[image_id])


def test_a_damaged_image_raises_from_the_worker(tmp_path):
    path = str(tmp_path / "damaged.h5")
    with h5store.open(path, "w", codec="raw") as store:
        store.add_batch(_images(40), labels=["a"] * 40)
        offset = int(store.index["offset"][17])
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    ds = _dataset(path, target="id")
    with pytest.raises(h5store.DamagedImageError, match="image 17"):
        list(ds.loader(8, num_workers=1))


def test_batches_need_one_image_size(tmp_path):
    path = str(tmp_path / "mixed.h5")
    with h5store.open(path, "w", codec="raw") as store:
        store.add_batch(_images(10), labels=["a"] * 10)
        store.add(np.zeros((4, 4, 3), np.uint8), label="a")
    ds = _dataset(path, shuffle=False)
    with pytest.raises(h5store.InvalidInputError, match="one size"):
        list(ds.loader(11))
    assert len(list(ds.loader(10, drop_last=True))) == 1
    assert [tuple(image.shape) for image, _ in ds][-1] == (3, 4, 4)  # samples: any size


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"span_bytes": 0}, "span_bytes"),
        ({"window": -1}, "window"),
        ({"prefetch": 0}, "prefetch"),
        ({"seed": -1}, "seed"),
        ({"span_bytes": 1.5}, "span_bytes"),
        ({"rank": 2, "world_size": 2}, "rank"),
        ({"target": "nope"}, "target"),
    ],
)
def test_bad_settings_are_refused(stream_file, kwargs, match):
    with pytest.raises(h5store.InvalidInputError, match=match):
        StreamingImageDataset(stream_file[0], **kwargs)


def test_loader_refuses_a_sampler_of_its_own(stream_file):
    ds = _dataset(stream_file[0])
    for kwargs in ({"shuffle": True}, {"sampler": [0, 1]}, {"batch_sampler": [[0]]}):
        with pytest.raises(h5store.InvalidInputError, match="orders its own"):
            ds.loader(8, **kwargs)
    with pytest.raises(h5store.InvalidInputError, match="batch_size"):
        ds.loader(0)
    with pytest.raises(h5store.InvalidInputError, match="worker"):
        ds.epoch_ids(0, worker=2, workers=2)


def _ddp_rank(rank, world, init, path, out):
    """One DDP rank: the dataset takes its rank from torch.distributed and reads its share."""
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ds = _dataset(path, target="id", seed=9)
        assert (ds.rank, ds.world_size) == (rank, world)
        loader = ds.loader(16, num_workers=2)
        for epoch in range(2):
            ids = [i for _, batch in loader for i in batch.tolist()]
            np.save(f"{out}/rank{rank}-epoch{epoch}.npy", np.array(ids))
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_ranks_read_disjoint_shares_that_cover_every_epoch(stream_file, tmp_path):
    from test_ddp import free_port

    path, _, live = stream_file
    init = f"tcp://127.0.0.1:{free_port()}"
    torch.multiprocessing.spawn(_ddp_rank, args=(2, init, path, str(tmp_path)), nprocs=2, join=True)
    orders = []
    for epoch in range(2):
        shares = [np.load(tmp_path / f"rank{r}-epoch{epoch}.npy").tolist() for r in range(2)]
        assert not set(shares[0]) & set(shares[1])
        assert sorted(shares[0] + shares[1]) == live
        assert abs(len(shares[0]) - len(shares[1])) <= 1
        orders.append(shares[0])
    assert orders[0] != orders[1]
