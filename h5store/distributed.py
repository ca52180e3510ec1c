"""Ingest on a Dask cluster: each partition of the images is encoded and written by a worker to
its own shard, then the shards are merged into one store (or kept and read as one).

    import h5store.distributed
    h5store.distributed.ingest("photos/", "photos.h5")                 # a LocalCluster
    h5store.distributed.ingest(table, "run.h5", client=Client("tcp://scheduler:8786"))

Dask does the scheduling: with a client from dask-jobqueue (Slurm, PBS) or dask-kubernetes the
same call runs there. The workers and this process must see the same file system (shards are
written beside ``out``). Requires ``pip install 'h5store[dask]'``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from typing import Any

from ._merge import merge
from ._parallel import set_threads
from .api import open as open_store
from .codecs import get_codec
from .errors import H5StoreError, InvalidInputError, StoreExistsError
from .folders import add_files, list_folder

#: Files per add call on a worker, as ``h5store import`` adds them; partitions are whole
#: multiples of it, so the ids match a single-process import of the same folder.
BATCH_FILES = 256
#: Partitions per worker: a dead worker's share can be redone by the others, and each shard
#: costs a file creation and a set of previews (~0.1 s here), so not many more.
PARTITIONS_PER_WORKER = 2


def ingest(
    source: Any,
    out: str | os.PathLike,
    *,
    client: Any = None,
    workers: int | None = None,
    codec: str = "jpeg",
    quality: int = 90,
    keep_shards: bool = False,
    partition_size: int | None = None,
    retries: int = 2,
    follow_links: bool = False,
    progress: bool = False,
    **codec_options: Any,
) -> list[str]:
    """Store every image of ``source`` in the new store ``out``, encoded on Dask workers.

    JPEG files go into JPEG classes as they are. Each partition becomes a shard, written under
    a temporary name and renamed when complete, so a worker that dies leaves nothing half
    written in the result; Dask reruns the partition, or the call fails naming it. The shards
    are then merged into ``out`` and removed. Workers and caller must share the file system.

    Parameters
    ----------
    source
        An ImageFolder root (``root/<class>/<file>``: the folder is the predicted label and
        the true label is unknown, as ``h5store import`` has it by default), or a table
        (pandas DataFrame or CSV path) with columns ``path`` and ``label`` and optional
        ``score`` (top-1), ``true_label``, ``id``.
    out
        The new store.
    client
        A ``distributed.Client`` (a cluster of yours: dask-jobqueue, dask-kubernetes, ...);
        without one a ``LocalCluster`` of ``workers`` processes is started and stopped.
    workers
        Processes of the local cluster (default 2).
    codec, quality, **codec_options
        The codec of the classes (JPEG files of a JPEG class are stored as they are).
    keep_shards
        Keep the shards in ``<out>.shards/`` instead of merging them (open them with
        ``h5store.open(paths)``).
    partition_size
        Files per shard (default: about two shards per worker, in multiples of 256, which
        gives the ids a single-process ``h5store import`` gives).
    retries
        Times Dask reruns a partition whose worker failed.
    follow_links
        As for :func:`h5store.folders.import_folder` (links leading out of a folder are
        refused without it).
    progress
        Show a progress bar on stderr.

    Returns
    -------
    list of str
        ``[out]``, or the shard paths with ``keep_shards``.

    Raises
    ------
    StoreExistsError
        ``out`` exists.
    InvalidInputError
        A bad source, table column or option, before any work is sent.
    H5StoreError
        A partition failed past its retries (the error names it); neither shards nor
        ``out`` are left.
    """
    import distributed

    out = os.fspath(out)
    rows = _table(source, follow_links)
    if os.path.exists(out):
        raise StoreExistsError(f"{out} already exists; ingest writes a new store")
    get_codec(codec, quality=quality, **codec_options)  # a bad codec fails here, not on a worker
    own_cluster = None
    if client is None:
        own_cluster = distributed.LocalCluster(
            n_workers=workers or 2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        client = distributed.Client(own_cluster)
    folder = _shard_folder(out, keep_shards)
    complete = False
    try:
        n_workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        size = partition_size or _partition_size(len(rows["path"]), n_workers)
        starts = list(range(0, len(rows["path"]), size))
        names = [os.path.join(folder, f"part-{k:05d}.h5") for k in range(len(starts))]
        options = {"codec": codec, "quality": quality, **codec_options}
        futures = [
            client.submit(
                write_shard,
                name,
                {c: v[s : s + size] for c, v in rows.items()},
                s,
                options,
                key=f"h5store-shard-{k}-{uuid.uuid4().hex}",
                retries=retries,
                pure=False,
            )
            for k, (name, s) in enumerate(zip(names, starts))
        ]
        shards = _gather(distributed, futures, names, progress)
        _remove_leftovers(folder)
        if not keep_shards:
            merge(shards, out, progress=progress)
        complete = True
        return shards if keep_shards else [out]
    finally:
        if not (keep_shards and complete):  # all or nothing, like merge
            shutil.rmtree(folder, ignore_errors=True)
        if own_cluster is not None:
            client.close()
            own_cluster.close()


def write_shard(path: str, rows: dict[str, list], first_id: int, options: dict[str, Any]) -> str:
    """On a worker: one partition -> the shard ``path``, written under a temporary name and
    renamed once complete. Returns ``path``. Labels enter each shard as its images bring them
    and the merge unites them in shard order: the order one process adding everything has."""
    set_threads(1)  # Dask runs one task per worker thread: the parallelism is Dask's
    temp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open_store(temp, "x", **options) as store:
            add_files(
                store,
                rows["path"],
                rows["label"],
                true_labels=rows.get("true_label"),
                scores=rows.get("score"),
                ids=rows.get("id"),
                sources=rows["source"],
                first_id=first_id,
                batch_size=BATCH_FILES,
                progress=False,
            )
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return path


def _table(source: Any, follow_links: bool = False) -> dict[str, list]:
    """Columns path, label, source and the optional true_label, score, id, as lists."""
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        root = os.fspath(source)
        files = list_folder(root, follow_links=follow_links)
        return {
            "path": [p for _, p in files],
            "label": [label for label, _ in files],
            "source": [p for _, p in files],  # as import_folder records it
        }
    import pandas as pd

    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise InvalidInputError(
                f"{os.fspath(source)} is neither an ImageFolder root nor a CSV file"
            )
        frame = pd.read_csv(source)
    elif isinstance(source, pd.DataFrame):
        frame = source
    else:
        raise InvalidInputError(
            "source must be an ImageFolder root, a CSV path or a pandas DataFrame"
        )
    missing = {"path", "label"} - set(frame.columns)
    if missing:
        raise InvalidInputError(
            f"the table has no column {sorted(missing)[0]!r} (needs path and label)"
        )
    if not len(frame):
        raise InvalidInputError("the table has no rows")
    table = {"path": [str(p) for p in frame["path"]], "label": [str(v) for v in frame["label"]]}
    table["source"] = list(table["path"])
    if "true_label" in frame:
        table["true_label"] = [None if pd.isna(v) else str(v) for v in frame["true_label"]]
    if "score" in frame:
        table["score"] = [float(v) for v in frame["score"]]
    if "id" in frame:
        table["id"] = [int(v) for v in frame["id"]]
        if len(set(table["id"])) != len(table["id"]):
            raise InvalidInputError("the table's id column repeats an id")
    return table


def _partition_size(n: int, workers: int) -> int:
    per = math.ceil(n / (workers * PARTITIONS_PER_WORKER))
    return max(BATCH_FILES, math.ceil(per / BATCH_FILES) * BATCH_FILES)


def _shard_folder(out: str, keep: bool) -> str:
    parent = os.path.dirname(os.path.abspath(out))
    if not keep:
        return tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.shards-", dir=parent)
    folder = f"{out}.shards"
    try:
        os.mkdir(folder)
    except FileExistsError:
        raise StoreExistsError(
            f"{folder} already exists; keep_shards writes a new folder"
        ) from None
    return folder


def _gather(distributed: Any, futures: list, names: Sequence[str], progress: bool) -> list[str]:
    from tqdm.auto import tqdm

    with tqdm(total=len(futures), desc="ingest", unit="shard", disable=not progress) as bar:
        for _ in distributed.as_completed(futures):
            bar.update(1)
    shards = []
    for name, future in zip(names, futures):
        if future.status != "finished":
            try:
                future.result()
            except Exception as exc:
                raise H5StoreError(
                    f"partition {os.path.basename(name)} failed on the cluster: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        shards.append(future.result())
    return shards


def _remove_leftovers(folder: str) -> None:
    """Temporary files of attempts whose worker died."""
    for name in os.listdir(folder):
        if ".tmp-" in name:
            os.unlink(os.path.join(folder, name))


__all__ = ["ingest", "write_shard"]
