"""Reading images from object storage: h5store against the streaming datasets, one server.

    eval "$(bash .ci/seaweedfs.sh start)"; eval "$(bash .ci/nginx.sh start)"  # else started here
    python benchmarks/remote.py [--images 20000] [--quick] [--rtt-ms 0,20] [--reps 3]

The same JPEG q90 bytes (224 px crops of the scikit-image photos) are stored five ways and
served by one SeaweedFS S3 server on 127.0.0.1 (WebDataset's tar shards by nginx, over HTTP,
as WebDataset is used):

* h5store: one .h5 in the bucket, opened by URL (``h5store.open("s3://...")``), random
  ``get_batch(256)`` by id; two loaders: the streaming one,
  ``StreamingImageDataset(url).loader()`` (spans of neighbouring images in a random order,
  shuffled within a window: the peers' way), and random batches by id,
  ``ImageStoreDataset(url).loader(shuffle=True)``;
* h5py + fsspec: the same .h5 through an s3fs file object (``h5py.File(fs.open(...))``, what
  a user tries first), the index read whole, each image's raw chunk read by h5py;
* LitData: ``litdata.optimize`` chunks in the bucket, ``StreamingDataset`` +
  ``StreamingDataLoader``;
* MosaicML Streaming: MDS shards in the bucket, ``StreamingDataset`` + ``DataLoader``;
* WebDataset: tar shards of 1,000 images over HTTP, ``WebDataset`` + ``DataLoader``.

Every client talks to its server through benchmarks/delay_proxy.py, which adds a round trip
to each request (``--rtt-ms``; 20 ms is a realistic S3 round trip) and counts requests and
bytes. Measured, medians of ``--reps``:

* open: wall time and requests until the reader knows every image (h5store: ``open``;
  h5py: ``File`` + the whole /index; LitData/MDS: the dataset object with its index);
* random batch: 256 random ids, wall time, requests, bytes down / payload bytes (LitData's
  and MDS's random access fetch whole chunks: that is their answer to a random read);
* loader, ``--workers`` DataLoader workers, batches of 64, shuffled, every image decoded by
  imagecodecs into uint8 arrays: the cold first epoch (from ``iter()``, empty caches), and the
  steady state (the next epoch with persistent workers, its first batches skipped), both as
  ratios to the local decode ceiling (imagecodecs decoding the same payloads from memory on
  ``--workers`` threads, measured in the same run), and bytes down / payload bytes.

The peers are not in the bench extra (they do not install cleanly beside h5store's pins):
LitData (``pip install litdata torch==2.13.0 botocore==<the installed one>``; its torchvision
dependency, the CUDA wheel, cannot load beside the CPU torch and is best uninstalled: LitData
runs without it) and MosaicML Streaming (pins numpy<2.2 and pulls transformers: installed
here with ``pip install --no-deps --target DIR mosaicml-streaming xxhash catalogue
'transformers<5' 'huggingface_hub<1' tokenizers==0.22.2 safetensors regex brotli
'python-snappy<1' cramjam 'zstd<2'`` and ``PYTHONPATH=DIR``). A peer that cannot be imported
is reported as not measured.

h5store is measured only through its public API; while the installed h5store cannot open a
URL, its columns say so and every peer is still measured. MosaicML Streaming 0.13 imports
torchvision at import time; where torchvision cannot load (the CUDA wheel beside a CPU torch)
a stub with the two names it imports stands in (no torchvision code is on the MDS read path).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import io
import multiprocessing as mp
import os
import queue as queue_module
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np
import torch
from _util import command_line, fmt, machine, make_payloads, markdown_table, median, write_results
from dataloader import decode_ceiling, epoch
from delay_proxy import DelayProxy, Meter
from torch.utils.data import DataLoader, Dataset

import h5store

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "remote-bench"
BATCH = 64
RANDOM_BATCH = 256
SKIP = 3  # batches skipped at the start of a steady epoch (the prefetch queue filling)

H5STORE, H5STREAM, H5PY, LITDATA, MDS, WDS = (
    "h5store",
    "h5store streaming",
    "h5py + fsspec (s3fs)",
    "LitData",
    "MosaicML Streaming",
    "WebDataset (HTTP)",
)
LOADER_NAMES = {
    H5STREAM: "h5store, streaming (`StreamingImageDataset`)",
    H5STORE: "h5store, random batches by id (`ImageStoreDataset`)",
}


# --------------------------------------------------------------------------- servers


def servers() -> tuple[dict, list[Callable[[], None]]]:
    """The S3 and HTTP servers: the ones whose variables are set, else started here."""
    stops = []
    for script, probe in (("seaweedfs.sh", "AWS_ENDPOINT_URL"), ("nginx.sh", "H5STORE_HTTP_ROOT")):
        if os.environ.get(probe):
            continue
        done = subprocess.run(
            ["bash", str(ROOT / ".ci" / script), "start"],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHON=sys.executable),
            check=False,
        )
        if done.returncode:
            sys.exit(f".ci/{script} start failed:\n{done.stderr[-2000:]}")
        values = dict(
            w.split("=", 1) for w in shlex.split(done.stdout.strip().splitlines()[-1])[1:]
        )
        os.environ.update(values)
        state = next(v for k, v in values.items() if k.endswith("_DIR"))
        stops.append(
            lambda s=script, d=state: subprocess.run(["bash", str(ROOT / ".ci" / s), "stop", d])
        )
    env = {
        "endpoint": os.environ["AWS_ENDPOINT_URL"],
        "bucket": os.environ.get("H5STORE_TEST_S3_BUCKET", "h5store-test"),
        "key": os.environ["AWS_ACCESS_KEY_ID"],
        "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
        "region": os.environ.get("AWS_REGION", "us-east-1"),
        "http": os.environ["H5STORE_TEST_HTTP_URL"],
        "http_root": os.environ["H5STORE_HTTP_ROOT"],
    }
    return env, stops


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


@contextlib.contextmanager
def endpoint_env(endpoint: str):
    """Point every S3 client at ``endpoint`` (the proxy): obstore, boto3 and LitData read
    AWS_ENDPOINT_URL, MosaicML Streaming reads S3_ENDPOINT_URL. DataLoader workers inherit it."""
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "S3_ENDPOINT_URL")}
    os.environ["AWS_ENDPOINT_URL"] = os.environ["S3_ENDPOINT_URL"] = endpoint
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3_store(env: dict, endpoint: str | None = None):
    from obstore.store import S3Store

    return S3Store(
        env["bucket"],
        config={
            "endpoint": endpoint or env["endpoint"],
            "access_key_id": env["key"],
            "secret_access_key": env["secret"],
            "region": env["region"],
        },
        client_options={"allow_http": True},
    )


def upload_tree(env: dict, local: Path, prefix: str) -> None:
    import obstore

    store = s3_store(env)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        obstore.put(store, f"{prefix}/{path.relative_to(local).as_posix()}", path)


# --------------------------------------------------------------------------- the five copies


def litdata_record(item):
    payload, label = item
    return {"image": payload, "label": label}


def build(payloads, env: dict, work: Path) -> dict:
    """Write the five copies of the same payloads and put them on the servers."""
    n = len(payloads)
    labels = [int(x) for x in payloads.labels]
    info = {}

    start = time.perf_counter()
    h5 = work / "store.h5"
    with h5store.open(str(h5), "w", labels=payloads.class_names) as store:
        for k in range(0, n, 1000):
            store.add_encoded_batch(
                payloads.payloads[k : k + 1000],
                labels=labels[k : k + 1000],
                scores=payloads.scores[k : k + 1000],
            )
    with h5store.open(str(h5)) as store:
        info["ids"] = np.asarray(store.ids(), dtype=np.int64)
    import obstore

    obstore.put(s3_store(env), f"{PREFIX}/h5store/store.h5", h5)
    info["h5_bytes"] = h5.stat().st_size

    try:
        import litdata

        out = work / "litdata"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            litdata.optimize(
                fn=litdata_record,
                inputs=list(zip(payloads.payloads, labels)),
                output_dir=str(out),
                chunk_bytes="64MB",
                num_workers=1,
                reorder_files=False,
            )
        upload_tree(env, out, f"{PREFIX}/litdata")
    except Exception as exc:
        info["litdata_error"] = repr(exc)

    try:
        streaming = import_streaming()
        out = work / "mds"
        with streaming.MDSWriter(
            out=str(out), columns={"image": "bytes", "label": "int"}, size_limit="64mb"
        ) as writer:
            for payload, label in zip(payloads.payloads, labels):
                writer.write({"image": payload, "label": label})
        upload_tree(env, out, f"{PREFIX}/mds")
    except Exception as exc:
        info["mds_error"] = repr(exc)

    shards = Path(env["http_root"]) / PREFIX
    shutil.rmtree(shards, ignore_errors=True)
    shards.mkdir(parents=True)
    names = []
    for s, k0 in enumerate(range(0, n, 1000)):
        name = f"shard-{s:06d}.tar"
        with tarfile.open(shards / name, "w") as tar:
            for k in range(k0, min(k0 + 1000, n)):
                for ext, data in (("jpg", payloads.payloads[k]), ("cls", str(labels[k]).encode())):
                    member = tarfile.TarInfo(f"{k:08d}.{ext}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
        names.append(name)
    info["wds_shards"] = names
    info["build_s"] = time.perf_counter() - start
    return info


def import_streaming():
    """MosaicML Streaming, with a torchvision stub where the real one cannot load."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        import types

        for name in list(sys.modules):
            if name == "torchvision" or name.startswith("torchvision."):
                del sys.modules[name]
        import importlib.machinery

        def stub(name):
            module = types.ModuleType(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            return module

        tv = stub("torchvision")
        datasets = stub("torchvision.datasets")
        transforms = stub("torchvision.transforms")
        functional = stub("torchvision.transforms.functional")
        datasets.VisionDataset = type("VisionDataset", (Dataset,), {})
        datasets.CIFAR10 = None
        functional.to_tensor = None
        tv.datasets, tv.transforms, transforms.functional = datasets, transforms, functional
        sys.modules.update(
            {
                "torchvision": tv,
                "torchvision.datasets": datasets,
                "torchvision.transforms": transforms,
                "torchvision.transforms.functional": functional,
            }
        )
    import streaming

    return streaming


# --------------------------------------------------------------------------- readers


def decode(payload) -> np.ndarray:
    return imagecodecs.jpeg8_decode(bytes(payload))


def decode_record(record: dict):
    return torch.from_numpy(decode(record["image"])), int(record["label"])


def h5store_remote() -> str | None:
    """Why h5store cannot be measured by URL here, or None when it can."""
    if "storage_options" not in inspect.signature(h5store.open).parameters:
        return (
            "this h5store has no h5store.open(url, storage_options=...) yet "
            "(issue 19 items 1-2, branch remote-core)"
        )
    return None


class H5pyFsspec:
    """The same .h5 read with h5py through an s3fs file object: the index read whole, then each
    image's stored chunk read raw by h5py (no h5store code) and decoded by imagecodecs."""

    def __init__(self, env: dict, endpoint: str):
        import h5py
        import s3fs

        self.fs = s3fs.S3FileSystem(
            key=env["key"],
            secret=env["secret"],
            endpoint_url=endpoint,
            client_kwargs={"region_name": env["region"]},
            skip_instance_cache=True,
        )
        self.fh = self.fs.open(f"{env['bucket']}/{PREFIX}/h5store/store.h5", "rb")
        self.f = h5py.File(self.fh, "r")
        index = self.f["index"][()]
        labels = [x.decode() if isinstance(x, bytes) else x for x in self.f["labels"][()]]
        stacks = self.f["stacks"][()]
        paths = [
            f"classes/{labels[s['label']]}/{s['height']}x{s['width']}x{s['channels']}_"
            f"{s['dtype'].decode()}"
            for s in stacks
        ]
        self.datasets = [self.f[p] for p in paths]
        self.rows = {int(r["id"]): (int(r["stack"]), int(r["position"])) for r in index}

    def get_batch(self, ids) -> list[np.ndarray]:
        out = []
        for i in ids:
            stack, position = self.rows[int(i)]
            ds = self.datasets[stack]
            _, chunk = ds.id.read_direct_chunk((position,) + (0,) * (ds.ndim - 1))
            out.append(decode(chunk))
        return out

    def close(self) -> None:
        self.f.close()
        self.fh.close()


class MappedStreaming(Dataset):
    """Wraps a map-style streaming dataset so every sample is decoded like the others."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, k):
        return decode_record(self.ds[k])


def litdata_dataset(env: dict, cache: Path, shuffle: bool = True):
    import litdata
    from litdata.streaming import downloader
    from litdata.streaming.resolver import Dir

    # LitData fetches chunks with obstore and passes it client options, which makes obstore
    # ignore AWS_ALLOW_HTTP: a plain-http endpoint (this server; real S3 is https) is refused
    # with "builder error" unless allow_http is among those options.
    downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"

    return litdata.StreamingDataset(
        Dir(path=str(cache), url=f"s3://{env['bucket']}/{PREFIX}/litdata"),
        shuffle=shuffle,
        transform=decode_record,
        max_cache_size="10GB",
    )


_DECODED_MDS = None


def decoded_mds_class(streaming):
    """MosaicML's StreamingDataset decoding each sample (a module attribute, so that forked
    workers and pickling find it)."""
    global _DECODED_MDS
    if _DECODED_MDS is None:

        class DecodedMDS(streaming.StreamingDataset):
            def __getitem__(self, k):
                return decode_record(super().__getitem__(k))

        DecodedMDS.__qualname__ = "DecodedMDS"
        globals()["DecodedMDS"] = _DECODED_MDS = DecodedMDS
    return _DECODED_MDS


def mds_dataset(env: dict, cache: Path, shuffle: bool = True):
    streaming = import_streaming()
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()

    return decoded_mds_class(streaming)(
        remote=f"s3://{env['bucket']}/{PREFIX}/mds",
        local=str(cache),
        shuffle=shuffle,
        batch_size=BATCH,
        shuffle_seed=0,
    )


def wds_sample(sample: dict):
    return torch.from_numpy(decode(sample["jpg"])), int(sample["cls"])


def wds_loader(http: str, names: list[str], workers: int, persistent: bool):
    import webdataset as wds

    urls = [f"{http}/{PREFIX}/{name}" for name in names]
    ds = (
        wds.WebDataset(urls, shardshuffle=len(urls), empty_check=False, seed=0)
        .shuffle(1000)
        .map(wds_sample)
        .batched(BATCH, partial=True)
    )
    return DataLoader(ds, batch_size=None, num_workers=workers, persistent_workers=persistent)


def stacked(batch):
    images, labels = zip(*batch)
    return torch.stack(images), torch.tensor(labels)


# --------------------------------------------------------------------------- measurements


def measured(proxy: Meter, fn: Callable[[], object]) -> tuple[object, dict]:
    proxy.reset()
    start = time.perf_counter()
    result = fn()
    counts = proxy.counts()
    counts["seconds"] = time.perf_counter() - start
    return result, counts


def preload(name: str) -> None:
    """Import what a reader needs before it is timed (imports are not an open's cost)."""
    if name == H5PY:
        import h5py  # noqa: F401
        import s3fs  # noqa: F401
    elif name == LITDATA:
        import litdata  # noqa: F401
    elif name == MDS:
        import_streaming()
    elif name in (H5STORE, H5STREAM):
        import obstore  # noqa: F401


def open_and_batch(name, env, proxy, batch_ids, positions, cache) -> tuple[dict, dict]:
    """One repetition: open a reader on empty caches, then read one batch of random ids
    (``positions``: the same images as rows, for the peers that address by position)."""
    endpoint = proxy.url()
    preload(name)
    if name == H5STORE:
        url = f"s3://{env['bucket']}/{PREFIX}/h5store/store.h5"
        options = {
            "endpoint": endpoint,
            "access_key_id": env["key"],
            "secret_access_key": env["secret"],
            "region": env["region"],
            "allow_http": "true",
        }
        reader, opened = measured(proxy, lambda: h5store.open(url, storage_options=options))
        _, batch = measured(proxy, lambda: reader.get_batch(batch_ids))
        reader.close()
    elif name == H5PY:
        reader, opened = measured(proxy, lambda: H5pyFsspec(env, endpoint))
        _, batch = measured(proxy, lambda: reader.get_batch(batch_ids))
        reader.close()
    else:
        make = litdata_dataset if name == LITDATA else mds_dataset
        reader, opened = measured(proxy, lambda: make(env, cache, shuffle=False))
        _, batch = measured(proxy, lambda: [reader[k] for k in positions])
    return opened, batch


def open_and_random(name, env, proxy, sizes, ids, picks, work) -> dict:
    """Open time and requests; random get_batch(256) latency, requests, bytes down / payload
    (``picks``: one array of row numbers per repetition)."""
    rows = {k: [] for k in ("open_s", "open_requests", "batch_s", "batch_requests", "ratio")}
    for rep, pick in enumerate(picks):
        cache = work / f"cache-{name[:3]}-{rep}-{time.monotonic_ns()}"
        with endpoint_env(proxy.url()):
            opened, batch = open_and_batch(
                name, env, proxy, ids[pick].tolist(), pick.tolist(), cache
            )
        gc.collect()
        shutil.rmtree(cache, ignore_errors=True)
        rows["open_s"].append(opened["seconds"])
        rows["open_requests"].append(opened["requests"])
        rows["batch_s"].append(batch["seconds"])
        rows["batch_requests"].append(batch["requests"])
        rows["ratio"].append(batch["bytes_down"] / int(sizes[pick].sum()))
    return {k: median(v) for k, v in rows.items()}


def loader_epochs(name, env, proxy, info, args, work, rep) -> dict:
    """A new loader on empty caches: the cold first epoch, then one steady epoch."""
    endpoint = proxy.url()
    cache = work / f"loader-{name[:3]}-{rep}-{time.monotonic_ns()}"
    options = {"num_workers": args.workers, "persistent_workers": True}
    preload(name)
    with endpoint_env(endpoint):
        if name == H5STREAM:
            from h5store.torch import StreamingImageDataset

            url = f"s3://{env['bucket']}/{PREFIX}/h5store/store.h5"
            loader = StreamingImageDataset(url).loader(BATCH, **options)
        elif name == H5STORE:
            from h5store.torch import ImageStoreDataset

            url = f"s3://{env['bucket']}/{PREFIX}/h5store/store.h5"
            ds = ImageStoreDataset(url)
            loader = ds.loader(BATCH, shuffle=True, **options)
        elif name == LITDATA:
            import litdata

            loader = litdata.StreamingDataLoader(
                litdata_dataset(env, cache), batch_size=BATCH, collate_fn=stacked, **options
            )
        elif name == MDS:
            loader = DataLoader(
                mds_dataset(env, cache), batch_size=BATCH, collate_fn=stacked, **options
            )
        else:
            http = proxy.url()
            loader = wds_loader(http, info["wds_shards"], args.workers, persistent=True)
        proxy.reset()
        cold = epoch(loader, SKIP)
        cold_counts = proxy.counts()
        proxy.reset()
        steady = epoch(loader, SKIP)
        steady_counts = proxy.counts()
    del loader
    gc.collect()
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "cold": cold["epoch"],
        "steady": steady["steady"],
        "cold_requests": cold_counts["requests"],
        "cold_bytes": cold_counts["bytes_down"],
        "steady_bytes": steady_counts["bytes_down"],
    }


def _child(queue, fn, args) -> None:
    # A spawned process inherits "spawn" as its start method; DataLoader workers are forked,
    # as in a training script on Linux (Python < 3.14).
    mp.set_start_method("fork", force=True)
    try:
        queue.put((fn(*args), None))
    except BaseException as exc:
        traceback.print_exc(file=sys.stderr)
        message = str(exc).splitlines()[0][:200] if str(exc) else ""
        queue.put((None, f"{type(exc).__name__}: {message}"))


def attempt(fn, *args, timeout: float = 1800):
    """``fn(*args)`` in a new process (spawned): every reader starts from a clean interpreter
    with nothing cached and no client runtime (obstore's, boto3's) inherited, and forks its
    DataLoader workers itself, as a training script does. One reader failing loses nothing
    else. Returns (result, None) or (None, what went wrong)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(queue, fn, args))
    process.start()
    deadline = time.monotonic() + timeout
    try:
        while True:  # until it answers, dies without answering, or runs out of time
            try:
                return queue.get(timeout=1)
            except queue_module.Empty:
                if not process.is_alive() and queue.empty():
                    return None, f"the process died (exit code {process.exitcode})"
                if time.monotonic() > deadline:
                    return None, f"no answer within {timeout:.0f} s"
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rtt-ms", default="0,20", help="round trips to add, comma-separated")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--readers", default="", help="only these (comma-separated prefixes, e.g. h5store,Lit)"
    )
    parser.add_argument("--quick", action="store_true", help="2,000 images, 2 repetitions")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.reps = min(args.images, 2000), min(args.reps, 2)
    rtts = [float(x) / 1e3 for x in args.rtt_ms.split(",")]

    env, stops = servers()
    work = Path(tempfile.mkdtemp(prefix="h5store-remote-", dir="/tmp"))
    skipped = {}
    if args.readers:
        wanted = [w.strip().lower() for w in args.readers.split(",")]
        for name in (H5STORE, H5STREAM, H5PY, LITDATA, MDS, WDS):
            if not any(name.lower().startswith(w) for w in wanted):
                skipped[name] = "not asked for (--readers)"
    why = h5store_remote()
    if why and H5STORE not in skipped:
        skipped[H5STORE] = skipped[H5STREAM] = why
        print(f"h5store columns skipped: {why}", file=sys.stderr)
    try:
        payloads = make_payloads(args.images, args.size)
        total = payloads.payload_bytes
        info = build(payloads, env, work)
        for key, peer in (("litdata_error", LITDATA), ("mds_error", MDS)):
            if key in info:
                skipped[peer] = info[key]
        ids = info["ids"]
        print(
            f"built in {info['build_s']:.0f} s: {args.images} images, {total / 1e6:.1f} MB",
            file=sys.stderr,
        )

        pool = ThreadPoolExecutor(args.workers)
        ceilings = [decode_ceiling(payloads.payloads, args.workers, pool) for _ in range(3)]
        s3_proxy = DelayProxy("127.0.0.1", port_of(env["endpoint"])).start()
        http_proxy = DelayProxy("127.0.0.1", port_of(env["http"])).start()
        rng = np.random.default_rng(0)
        sizes = np.array([len(p) for p in payloads.payloads])
        results = {}
        for rtt in rtts:
            s3_proxy.rtt = http_proxy.rtt = rtt
            key = f"{rtt * 1e3:g} ms"
            results[key] = {"random": {}, "loader": {}}
            for name in (H5STORE, H5PY, LITDATA, MDS):
                if name in skipped:
                    continue
                print(f"[{key}] open + random batch: {name}", file=sys.stderr)
                picks = [
                    rng.choice(len(ids), RANDOM_BATCH, replace=False) for _ in range(args.reps)
                ]
                got, err = attempt(
                    open_and_random, name, env, s3_proxy.meter, sizes, ids, picks, work
                )
                results[key]["random"][name] = got or {"error": err}
            for rep in range(args.reps):
                for name in (H5STREAM, H5STORE, LITDATA, MDS, WDS):
                    if name in skipped:
                        continue
                    proxy = (http_proxy if name == WDS else s3_proxy).meter
                    print(f"[{key}] loader rep {rep}: {name}", file=sys.stderr)
                    got, err = attempt(loader_epochs, name, env, proxy, info, args, work, rep)
                    runs = results[key]["loader"].setdefault(name, [])
                    runs.append(got or {"error": err})
                    ceilings.append(decode_ceiling(payloads.payloads, args.workers, pool))
                    save(args, results, skipped, ceilings, total, info)
        s3_proxy.stop()
        http_proxy.stop()
        save(args, results, skipped, ceilings, total, info)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for stop in stops:
            stop()


def save(args, results, skipped, ceilings, total, info) -> None:
    """Write what is measured so far (after every loader run: a run that dies part-way
    still leaves its results)."""
    ceiling = median(ceilings)
    write_results(
        args.out,
        "remote",
        report(args, results, skipped, ceiling, total, info),
        {
            "command": command_line(),
            "machine": machine(),
            "images": args.images,
            "payload_bytes": total,
            "ceiling": ceiling,
            "ceilings": ceilings,
            "skipped": skipped,
            "results": results,
        },
    )


def report(args, results, skipped, ceiling, total, info) -> str:
    lines = [
        "# Reading from object storage: h5store and the streaming datasets",
        "",
        f"Command: `{command_line()}`",
        "",
        f"{args.images:,} JPEG q90 images, {args.size} px, {total / 1e6:.1f} MB of payloads, "
        f"all served by one SeaweedFS on 127.0.0.1 (WebDataset by nginx), through "
        f"benchmarks/delay_proxy.py adding each round trip. Medians of {args.reps} "
        f"repetitions. Local decode ceiling ({args.workers} threads, imagecodecs, same run): "
        f"{ceiling:,.0f} img/s.",
        "",
    ]
    if skipped:
        lines += ["Not measured:", ""]
        lines += [f"* {name}: {why}" for name, why in skipped.items()]
        lines.append("")
    for key, res in results.items():
        lines += [f"## Round trip {key}", "", "Open and one random batch of 256 ids:", ""]
        rows = []
        for name, r in res["random"].items():
            if "error" in r:
                rows.append([name, r["error"], "", "", "", ""])
                continue
            rows.append(
                [
                    name,
                    fmt(r["open_s"] * 1e3, 0),
                    fmt(r["open_requests"], 0),
                    fmt(r["batch_s"] * 1e3, 0),
                    fmt(r["batch_requests"], 0),
                    fmt(r["ratio"], 2),
                ]
            )
        lines.append(
            markdown_table(
                [
                    "reader",
                    "open (ms)",
                    "open requests",
                    "get 256 random (ms)",
                    "requests",
                    "bytes down / payload",
                ],
                rows,
            )
        )
        lines += ["", f"Loader, {args.workers} workers, batches of {BATCH}, shuffled:", ""]
        rows = []
        for name, runs in res["loader"].items():
            shown = LOADER_NAMES.get(name, name)
            good = [r for r in runs if "error" not in r]
            if not good:
                rows.append([shown, runs[0]["error"], "", "", "", "", ""])
                continue
            cold, steady = median([r["cold"] for r in good]), median([r["steady"] for r in good])
            rows.append(
                [
                    shown,
                    fmt(cold, 0),
                    fmt(cold / ceiling, 2),
                    fmt(steady, 0),
                    fmt(steady / ceiling, 2),
                    fmt(median([r["cold_requests"] for r in good]), 0),
                    fmt(median([r["cold_bytes"] for r in good]) / total, 2),
                ]
            )
        lines.append(
            markdown_table(
                [
                    "loader",
                    "cold epoch (img/s)",
                    "x ceiling",
                    "steady (img/s)",
                    "x ceiling",
                    "cold-epoch requests",
                    "cold bytes down / payload",
                ],
                rows,
            )
        )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
