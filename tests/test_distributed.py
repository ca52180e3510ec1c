"""Ingest on a real 2-worker Dask LocalCluster equals a single-process ``h5store import``."""

import os
import sys

import distributed  # no skip: .[test] includes .[dask], so CI always starts the cluster
import imagecodecs
import numpy as np
import pytest
from shards_util import assert_same_images

import h5store
import h5store.distributed
from h5store.cli import main
from h5store.folders import import_folder
from h5store.sample import sample_set


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """600 files (more than two partitions of 256) in 8 classes: JPEG files, which JPEG classes
    store as they are, and in 'cat' PNG files too, which are decoded and encoded."""
    root = tmp_path_factory.mktemp("folder")
    s = sample_set(600, 32, seed=3)
    for k, (image, label) in enumerate(zip(s.images, s.true_labels)):
        os.makedirs(root / label, exist_ok=True)
        as_png = label == "cat" and k % 2
        data = imagecodecs.png_encode(image) if as_png else imagecodecs.jpeg_encode(image, level=85)
        (root / label / f"{k:04d}.{'png' if as_png else 'jpg'}").write_bytes(data)
    return str(root)


@pytest.fixture(scope="module")
def single(folder, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("single") / "single.h5")
    with h5store.open(path, "w") as store:
        import_folder(store, folder, progress=False)
    return path


@pytest.fixture(scope="module")
def client():
    import logging

    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def test_local_cluster_ingest_equals_single_process_import(folder, single, tmp_path):
    out = str(tmp_path / "dask.h5")
    assert h5store.distributed.ingest(folder, out, workers=2) == [
        out
    ]  # starts its own LocalCluster
    with h5store.open(out) as got, h5store.open(single) as want:
        assert len(want) > 2 * h5store.distributed.BATCH_FILES  # so there were several shards
        assert_same_images(got, want)  # ids, labels, sources, stored bytes, pixels
        jpeg_file = os.path.join(folder, got.record(0).source)
        with open(jpeg_file, "rb") as fh:
            assert got.get_encoded(0) == fh.read()  # JPEG files stored as they are
    assert sorted(os.listdir(tmp_path)) == ["dask.h5"]  # the shards are gone


def test_kept_shards_read_as_one_store(folder, single, tmp_path, client):
    shards = h5store.distributed.ingest(
        folder, tmp_path / "run.h5", client=client, keep_shards=True
    )
    assert len(shards) == 3 and all(
        os.path.dirname(p) == str(tmp_path / "run.h5.shards") for p in shards
    )
    assert not os.path.exists(tmp_path / "run.h5")
    with h5store.open(shards) as view, h5store.open(single) as want:
        assert_same_images(view, want)


CRASH_ONCE = """
def install(marker):
    import os
    from h5store.store import ImageStore
    real = ImageStore.add_encoded_batch
    def add_then_die(self, *args, **kwargs):
        ids = real(self, *args, **kwargs)
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return ids
        os._exit(1)  # the worker process dies with half a shard written
    ImageStore.add_encoded_batch = add_then_die
"""


def test_a_worker_dying_mid_partition_leaves_no_half_shard(folder, single, tmp_path, client):
    import cloudpickle

    namespace = {"__name__": "crash_once"}
    exec(CRASH_ONCE, namespace)
    module = type(sys)("crash_once")
    module.__dict__.update(namespace)
    sys.modules["crash_once"] = module
    cloudpickle.register_pickle_by_value(module)
    try:
        marker = str(tmp_path / "died")
        client.run(module.install, marker)
        out = str(tmp_path / "run.h5")
        h5store.distributed.ingest(folder, out, client=client, keep_shards=True)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        del sys.modules["crash_once"]
        client.restart()  # workers without the patch for the other tests
    assert os.path.exists(marker)  # a worker did die mid-partition
    shards_dir = out + ".shards"
    assert sorted(os.listdir(shards_dir)) == ["part-00000.h5", "part-00001.h5", "part-00002.h5"]
    with (
        h5store.open([os.path.join(shards_dir, n) for n in sorted(os.listdir(shards_dir))]) as view,
        h5store.open(single) as want,
    ):
        assert_same_images(view, want)


def test_table_source_with_ids_scores_and_truth(folder, tmp_path, client):
    pd = pytest.importorskip("pandas")
    paths = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(folder) for f in fs)[:40]
    frame = pd.DataFrame(
        {
            "path": paths,
            "label": ["rocket" if k % 2 else "coffee" for k in range(40)],
            "true_label": [None if k % 5 == 0 else "coffee" for k in range(40)],
            "score": np.linspace(0.1, 0.9, 40),
            "id": np.arange(1000, 1040)[::-1],
        }
    )
    frame.to_csv(tmp_path / "table.csv", index=False)
    out = str(tmp_path / "table.h5")
    h5store.distributed.ingest(str(tmp_path / "table.csv"), out, client=client, codec="png")
    with h5store.open(out) as store:
        assert sorted(store.ids().tolist()) == list(range(1000, 1040))
        r = store.record(1039)
        assert (r.label, r.true_label, r.source, r.codec) == ("coffee", None, paths[0], "png")
        assert abs(store.record(1000).score - 0.9) < 1e-6
        np.testing.assert_array_equal(store[1039], imagecodecs.imread(paths[0]))


def test_bad_sources_and_existing_out(tmp_path, client):
    with pytest.raises(h5store.InvalidInputError, match="neither an ImageFolder root nor a CSV"):
        h5store.distributed.ingest(tmp_path / "nope", tmp_path / "x.h5", client=client)
    pd = pytest.importorskip("pandas")
    with pytest.raises(h5store.InvalidInputError, match="no column 'label'"):
        h5store.distributed.ingest(
            pd.DataFrame({"path": ["a.jpg"]}), tmp_path / "x.h5", client=client
        )
    (tmp_path / "x.h5").write_bytes(b"keep")
    with pytest.raises(h5store.StoreExistsError):
        h5store.distributed.ingest(
            pd.DataFrame({"path": ["a.jpg"], "label": ["a"]}), tmp_path / "x.h5", client=client
        )
    assert (tmp_path / "x.h5").read_bytes() == b"keep"


@pytest.mark.parametrize("keep_shards", [False, True])
def test_a_failing_partition_is_named_and_nothing_is_left(tmp_path, client, keep_shards):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"path": [str(tmp_path / "missing.jpg")], "label": ["a"]})
    with pytest.raises(h5store.H5StoreError, match="partition part-00000.h5 failed"):
        h5store.distributed.ingest(
            frame, tmp_path / "x.h5", client=client, retries=0, keep_shards=keep_shards
        )
    assert os.listdir(tmp_path) == []


def test_cli_import_on_local_scheduler(folder, single, tmp_path):
    out = str(tmp_path / "cli.h5")
    assert main(["import", folder, out, "--scheduler", "local", "--workers", "2", "--quiet"]) == 0
    with h5store.open(out) as got, h5store.open(single) as want:
        assert_same_images(got, want)


def test_cli_import_on_a_running_scheduler(folder, single, tmp_path, client):
    out = str(tmp_path / "tcp.h5")
    address = client.scheduler.address
    assert address.startswith("tcp://")
    assert main(["import", folder, out, "--scheduler", address, "--quiet"]) == 0
    with h5store.open(out) as got, h5store.open(single) as want:
        assert_same_images(got, want)
