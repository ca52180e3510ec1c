"""h5store against the usual ways of keeping classified images, on the same JPEG bytes.

    python benchmarks/peers.py [--quick] [--out benchmarks/results]

Every contender stores exactly the same JPEG q90 payloads (224 px RGB crops and a 32 px
CIFAR-like set, both from h5store's sample set) with the same metadata (predicted class, true
class, top-1 score). Measured in one run, contenders rotated between repetitions, medians:

* ingest of the pre-encoded bytes (batches of ``--batch`` images, store opened and closed);
* ingest with encoding on 2 threads, for the store that encodes (h5store), against plain
  imagecodecs encoding on 1 and 2 threads;
* random read + decode by id on 1 and 2 threads, as a ratio to the ceiling (imagecodecs decoding
  the same bytes held in memory) measured the same way;
* raw fetch: the stored bytes of one image by id, no decode (the cost of the storage alone);
* sequential scan in storage order with decode, 1 thread;
* metadata query ``label == 3 and score >= 0.9``;
* files, bytes on disk over payload bytes.

Reads are warm (the stores were just written and sit in the page cache). No contender syncs to
disk per batch: LMDB runs with ``sync=False`` and SQLite in WAL mode with ``synchronous=NORMAL``,
which, like h5store, survive a killed process but not a power cut.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import shutil
import sqlite3
import struct
import sys
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import h5py
import imagecodecs
import numpy as np
from _util import (
    CPU,
    WALL,
    Payloads,
    batches,
    command_line,
    disk_usage,
    encode,
    fmt,
    machine,
    make_payloads,
    markdown_table,
    median,
    paired_rates,
    rate,
    rotated,
    seconds,
    write_results,
)

import h5store

decode = imagecodecs.jpeg8_decode
QUERY = (3, 0.9)  # label id, min score


# =========================================================================== contenders
#
# A contender writes a store (``write``) and opens a reader on it (``open``). A reader has
# ``read(id) -> array``, ``fetch(id) -> bytes``, ``scan() -> arrays in storage order`` and
# ``query(label, min_score) -> ids``; a capability a store lacks is None. ``read`` and
# ``fetch`` must be safe to call from two threads at once.


class Ceiling:
    """The codec alone: the payloads held in a Python list."""

    name = "ceiling: imagecodecs on bytes in memory"
    write = None

    def open(self, path, data):
        return MemoryReader(data)


class MemoryReader:
    def __init__(self, data: Payloads):
        self.data = data

    def read(self, i):
        return decode(self.data.payloads[i])

    def fetch(self, i):
        return self.data.payloads[i]

    def scan(self):
        return (decode(p) for p in self.data.payloads)

    def query(self, label, min_score):
        d = self.data
        return np.flatnonzero((d.labels == label) & (d.scores >= np.float32(min_score)))

    def close(self):
        pass


class H5Store:
    name = "h5store"

    def write(self, path, data, batch):
        with h5store.open(path, "w", codec="jpeg", quality=90, labels=data.class_names) as store:
            for s in batches(len(data), batch):
                store.add_encoded_batch(
                    data.payloads[s],
                    labels=data.labels[s],
                    scores=data.scores[s],
                    true_labels=data.true_labels[s],
                )

    def open(self, path, data):
        return H5StoreReader(path)


class H5StoreUnchecked:
    """h5store's reads without the CRC-32 check (``verify_reads=False``), on h5store's file:
    what checking every read costs, measured in the same run."""

    name = "h5store, verify_reads=False"
    write = None
    reads_file_of = H5Store.name

    def open(self, path, data):
        return H5StoreReader(path, verify_reads=False)


class H5StoreReader:
    def __init__(self, path, verify_reads=True):
        self.store = h5store.open(path, verify_reads=verify_reads)
        self.read = self.store.__getitem__
        self.fetch = self.store.get_encoded
        self.read_batch = self.store.get_batch  # h5store's own parallel decode

    def scan(self):
        return (self.store[i] for i in self.store)

    def query(self, label, min_score):
        return self.store.query(label=label, min_score=min_score)

    def close(self):
        self.store.close()


# --------------------------------------------------------------------------- folders


def write_folder(path, data, batch, on_batch=None):
    """torchvision ImageFolder layout: <root>/<class>/<id>.jpg. Returns (id, path, meta) rows."""
    rows = []
    for name in data.class_names:
        os.makedirs(os.path.join(path, name), exist_ok=True)
    for s in batches(len(data), batch):
        chunk = []
        for i in range(s.start, s.stop):
            rel = f"{data.class_names[data.labels[i]]}/{i:08d}.jpg"
            with open(os.path.join(path, rel), "wb") as fh:
                fh.write(data.payloads[i])
            chunk.append(
                (i, rel, int(data.labels[i]), int(data.true_labels[i]), float(data.scores[i]))
            )
        if on_batch is not None:
            on_batch(chunk)
        rows += chunk
    return rows


def read_file(path):
    with open(path, "rb") as fh:
        return fh.read()


def pillow_decode(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class FolderCSV:
    """A folder per class plus index.csv, the usual way; decoded with Pillow or imagecodecs."""

    def __init__(self, decoder: str):
        self.decoder = decoder
        self.name = f"folder + CSV, {decoder}"

    def write(self, path, data, batch):
        rows = write_folder(path, data, batch)
        with open(os.path.join(path, "index.csv"), "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["id", "path", "label", "true_label", "score"])
            out.writerows(rows)

    def open(self, path, data):
        return FolderCSVReader(path, self.decoder)


class FolderCSVReader:
    def __init__(self, root, decoder):
        import pandas as pd

        self.table = pd.read_csv(os.path.join(root, "index.csv"))
        # ids are 0..n-1 in file order, so a list is the id -> path lookup
        self.paths = [os.path.join(root, p) for p in self.table["path"]]
        self.decode_file = pillow_decode if decoder == "pillow" else lambda p: decode(read_file(p))

    def read(self, i):
        return self.decode_file(self.paths[i])

    def fetch(self, i):
        return read_file(self.paths[i])

    def scan(self):
        return (self.decode_file(p) for p in self.paths)

    def query(self, label, min_score):
        t = self.table
        return t["id"].to_numpy()[((t["label"] == label) & (t["score"] >= min_score)).to_numpy()]

    def close(self):
        pass


class FolderSQLite:
    """A folder per class; metadata in SQLite with an index on (label, score)."""

    name = "folder + SQLite, imagecodecs"

    def write(self, path, data, batch):
        os.makedirs(path)
        db = sqlite3.connect(os.path.join(path, "index.sqlite"))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE images (id INTEGER PRIMARY KEY, path TEXT, label INTEGER, "
            "true_label INTEGER, score REAL)"
        )
        db.execute("CREATE INDEX by_label_score ON images (label, score)")

        def commit(rows):  # one transaction per batch, like an h5store batch
            with db:
                db.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?)", rows)

        write_folder(path, data, batch, on_batch=commit)
        db.close()

    def open(self, path, data):
        return SQLiteReader(path)


class SQLiteReader:
    def __init__(self, root):
        self.root = root
        self.local = threading.local()  # sqlite3 connections are per thread
        self.db()

    def db(self):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = sqlite3.connect(os.path.join(self.root, "index.sqlite"))
        return conn

    def path(self, i):
        (rel,) = self.db().execute("SELECT path FROM images WHERE id = ?", (i,)).fetchone()
        return os.path.join(self.root, rel)

    def read(self, i):
        return decode(read_file(self.path(i)))

    def fetch(self, i):
        return read_file(self.path(i))

    def scan(self):
        rels = self.db().execute("SELECT path FROM images ORDER BY id").fetchall()
        return (decode(read_file(os.path.join(self.root, r))) for (r,) in rels)

    def query(self, label, min_score):
        rows = (
            self.db()
            .execute("SELECT id FROM images WHERE label = ? AND score >= ?", (label, min_score))
            .fetchall()
        )
        return np.array([r for (r,) in rows], dtype=np.int64)

    def close(self):
        pass  # per-thread connections close when their threads' locals go


# --------------------------------------------------------------------------- LMDB


def lmdb_key(i):
    return struct.pack(">Q", i)  # big-endian: key order is id order


META = struct.Struct("<iif")  # label, true label, score


class LMDB:
    """Payload per id in one database, packed metadata in another; ``sync=False``."""

    name = "LMDB"
    needs = "lmdb"

    def write(self, path, data, batch):
        import lmdb

        env = lmdb.open(path, map_size=1 << 36, max_dbs=2, sync=False)
        images, meta = env.open_db(b"images"), env.open_db(b"meta")
        for s in batches(len(data), batch):
            with env.begin(write=True) as txn:
                for i in range(s.start, s.stop):
                    key = lmdb_key(i)
                    txn.put(key, data.payloads[i], db=images)
                    meta_row = META.pack(data.labels[i], data.true_labels[i], data.scores[i])
                    txn.put(key, meta_row, db=meta)
        env.close()

    def open(self, path, data):
        return LMDBReader(path)


class LMDBReader:
    def __init__(self, path):
        import lmdb

        self.env = lmdb.open(path, readonly=True, max_dbs=2)
        self.images, self.meta = self.env.open_db(b"images"), self.env.open_db(b"meta")
        self.local = threading.local()  # one long-lived read transaction per thread

    def txn(self):
        txn = getattr(self.local, "txn", None)
        if txn is None:
            txn = self.local.txn = self.env.begin(db=self.images, buffers=True)
        return txn

    def read(self, i):
        return decode(self.txn().get(lmdb_key(i)))  # zero-copy view into the map

    def fetch(self, i):
        return bytes(self.txn().get(lmdb_key(i)))

    def scan(self):
        with self.env.begin(db=self.images, buffers=True) as txn:
            for _, value in txn.cursor():
                yield decode(value)

    def query(self, label, min_score):
        with self.env.begin(db=self.meta) as txn:  # no secondary index: scan the metadata
            return np.array(
                [
                    struct.unpack(">Q", k)[0]
                    for k, v in txn.cursor()
                    if (m := META.unpack(v))[0] == label and m[2] >= np.float32(min_score)
                ],
                dtype=np.int64,
            )

    def close(self):
        self.env.close()


# --------------------------------------------------------------------------- WebDataset


class WebDataset:
    """Tar shards in WebDataset layout (``.jpg``, ``.cls``, ``.json`` per key): sequential only."""

    name = "WebDataset tar shards"
    needs = "webdataset"
    shard_size = 1000

    def write(self, path, data, batch):
        import webdataset as wds

        os.makedirs(path)
        with wds.ShardWriter(
            os.path.join(path, "shard-%06d.tar"), maxcount=self.shard_size, verbose=0
        ) as sink:
            for i in range(len(data)):
                sink.write(
                    {
                        "__key__": f"{i:08d}",
                        "jpg": data.payloads[i],
                        "cls": int(data.labels[i]),
                        "json": {
                            "true_label": int(data.true_labels[i]),
                            "score": float(data.scores[i]),
                        },
                    }
                )

    def open(self, path, data):
        return WebDatasetReader(path)


class WebDatasetReader:
    read = fetch = query = None

    def __init__(self, root):
        self.shards = sorted(os.path.join(root, f) for f in os.listdir(root))

    def scan(self):
        import webdataset as wds

        return (decode(s["jpg"]) for s in wds.WebDataset(self.shards, shardshuffle=False))

    def close(self):
        pass


# --------------------------------------------------------------------------- Zarr


class Zarr:
    """Zarr v3: a variable-length-bytes array, one image per chunk, no compressor (JPEG does not
    compress further), plus metadata arrays; grown by appending each batch."""

    name = "Zarr v3, one image per chunk"
    needs = "zarr"

    def write(self, path, data, batch):
        import zarr
        from zarr.dtype import VariableLengthBytes

        # zarr warns that variable-length bytes have no v3 spec yet: known, and the honest way
        # to keep pre-encoded JPEGs as they are
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        root = zarr.open_group(path, mode="w")
        images = root.create_array(
            "images", shape=(0,), chunks=(1,), dtype=VariableLengthBytes(), compressors=None
        )
        columns = {
            name: root.create_array(name, shape=(0,), chunks=(65536,), dtype=dtype)
            for name, dtype in (("label", "i4"), ("true_label", "i4"), ("score", "f4"))
        }
        for s in batches(len(data), batch):
            block = np.empty(s.stop - s.start, dtype=object)
            block[:] = data.payloads[s]
            images.append(block)
            columns["label"].append(data.labels[s])
            columns["true_label"].append(data.true_labels[s])
            columns["score"].append(data.scores[s])

    def open(self, path, data):
        return ZarrReader(path)


class ZarrReader:
    def __init__(self, path):
        import zarr

        self.root = zarr.open_group(path, mode="r")
        self.images = self.root["images"]

    def fetch(self, i):
        # images[i] returns a 0-d array wrapping another 0-d array; a 1-slice gives the bytes
        return self.images[i : i + 1][0]

    def read(self, i):
        return decode(self.fetch(i))

    def scan(self):
        n = self.images.shape[0]
        for s in batches(n, 256):  # whole blocks, so zarr can fetch chunks concurrently
            yield from (decode(b) for b in self.images[s])

    def query(self, label, min_score):
        labels, scores = self.root["label"][:], self.root["score"][:]
        return np.flatnonzero((labels == label) & (scores >= np.float32(min_score)))

    def close(self):
        pass


# --------------------------------------------------------------------------- plain h5py


def h5py_columns(f, data, s):
    """Append metadata columns for slice ``s`` (created on first use)."""
    columns = (("label", data.labels), ("true_label", data.true_labels), ("score", data.scores))
    for name, values in columns:
        if name not in f:
            f.create_dataset(
                name, shape=(0,), maxshape=(None,), dtype=values.dtype, chunks=(65536,)
            )
        f[name].resize(s.stop, axis=0)
        f[name][s] = values[s]


class H5pyReader:
    """What both plain-h5py designs share: the file, the metadata columns, a numpy query."""

    def __init__(self, path):
        self.f = h5py.File(path, "r")
        self.images = self.f["images"]

    def query(self, label, min_score):
        f = self.f
        return np.flatnonzero((f["label"][()] == label) & (f["score"][()] >= np.float32(min_score)))

    def close(self):
        self.f.close()


class H5pyVlen:
    """The obvious h5py design: one vlen-bytes dataset, one element per image."""

    name = "h5py, vlen bytes"

    def write(self, path, data, batch):
        with h5py.File(path, "w") as f:
            ds = f.create_dataset(
                "images", shape=(0,), maxshape=(None,), dtype=h5py.vlen_dtype(np.uint8), chunks=True
            )
            for s in batches(len(data), batch):
                ds.resize(s.stop, axis=0)
                ds[s] = [np.frombuffer(p, np.uint8) for p in data.payloads[s]]
                h5py_columns(f, data, s)

    def open(self, path, data):
        return H5pyVlenReader(path)


class H5pyVlenReader(H5pyReader):
    def read(self, i):
        return decode(self.images[i])

    def fetch(self, i):
        return self.images[i].tobytes()

    def scan(self):
        for s in batches(self.images.shape[0], 256):
            yield from (decode(b) for b in self.images[s])


class H5pyChunks:
    """A careful h5py design: (N, H, W, 3) with one JPEG per chunk, declared as HDF5 filter
    32019, written and read with the direct chunk calls (no filter pipeline, no selection)."""

    name = "h5py, JPEG per chunk, direct chunk I/O"

    def write(self, path, data, batch):
        n = data.size
        with h5py.File(path, "w", libver=("v110", "v110")) as f:
            ds = f.create_dataset(
                "images",
                shape=(0, n, n, 3),
                maxshape=(None, n, n, 3),
                chunks=(1, n, n, 3),
                dtype="u1",
                compression=32019,
                compression_opts=(90, n, n, 1),
                allow_unknown_filter=True,
            )
            dsid = ds.id
            for s in batches(len(data), batch):
                ds.resize(s.stop, axis=0)
                for i in range(s.start, s.stop):
                    dsid.write_direct_chunk((i, 0, 0, 0), data.payloads[i])
                h5py_columns(f, data, s)

    def open(self, path, data):
        return H5pyChunksReader(path)


class H5pyBareLoop:
    """HDF5's own cost per image, the floor for any one-chunk-per-image design: one chunked
    (N, H, W, 3) dataset per class, appendable like h5store's stacks (maxshape None, resized
    every batch, libver v110), one ``write_direct_chunk`` per image; no index, no metadata, no
    flush, no crash safety. Ingest only."""

    name = "bare h5py direct-chunk loop"

    def write(self, path, data, batch):
        n = data.size
        with h5py.File(path, "w", libver=("v110", "v110")) as f:
            stacks, lengths = {}, {}
            for s in batches(len(data), batch):
                labels = data.labels[s].tolist()
                for label in set(labels):
                    if label not in stacks:
                        stacks[label] = f.create_dataset(
                            f"class{label}",
                            shape=(0, n, n, 3),
                            maxshape=(None, n, n, 3),
                            chunks=(1, n, n, 3),
                            dtype="u1",
                        )
                        lengths[label] = 0
                    stacks[label].resize(lengths[label] + labels.count(label), axis=0)
                writers = {label: ds.id.write_direct_chunk for label, ds in stacks.items()}
                for i, label in zip(range(s.start, s.stop), labels):
                    writers[label]((lengths[label], 0, 0, 0), data.payloads[i])
                    lengths[label] += 1


class H5pyChunksReader(H5pyReader):
    def __init__(self, path):
        super().__init__(path)
        self.dsid = self.images.id  # the low-level handle, kept: no lookup per read

    def fetch(self, i):
        return self.dsid.read_direct_chunk((i, 0, 0, 0))[1]

    def read(self, i):
        return decode(self.fetch(i))

    def scan(self):
        return (self.read(i) for i in range(self.images.shape[0]))


def installed(contender):
    needs = getattr(contender, "needs", None)
    return needs is None or importlib.util.find_spec(needs) is not None


#: Contenders that only write: measured in the ingest table, never read.
INGEST_ONLY = [H5pyBareLoop()]

CONTENDERS = [
    Ceiling(),
    H5Store(),
    H5StoreUnchecked(),
    LMDB(),
    H5pyChunks(),
    FolderCSV("imagecodecs"),
    FolderCSV("pillow"),
    FolderSQLite(),
    H5pyVlen(),
    Zarr(),
    WebDataset(),
]


# =========================================================================== measuring


def check(reader, data):
    """Every contender must give back the payload bytes and the pixels the ceiling decodes."""
    if reader.fetch is not None:
        assert bytes(reader.fetch(1)) == data.payloads[1], "fetch returned other bytes"
    if reader.read is not None:
        img = reader.read(1)
        assert img.shape == data.images[1].shape, f"read returned shape {img.shape}"
        if not isinstance(reader, FolderCSVReader) or reader.decode_file is not pillow_decode:
            assert np.array_equal(img, decode(data.payloads[1])), "read returned other pixels"


def passes(reader, ids, pool):
    """The timed passes a reader supports, each a function that runs one pass over the shuffled
    ``ids`` (or the whole store, for a scan) and returns how many operations it did."""
    halves = [ids[0::2], ids[1::2]]

    def two_threads(fn):
        def one_pass():
            futures = [pool.submit(lambda part: [fn(i) for i in part], h) for h in halves]
            return sum(len(f.result()) for f in futures)

        return one_pass

    out = {"scan": lambda: len(list(reader.scan()))}
    if reader.fetch is not None:
        out["fetch"] = lambda: len([reader.fetch(i) for i in ids])
    if reader.read is not None:
        out["read1"] = lambda: len([reader.read(i) for i in ids])
        out["read2"] = two_threads(reader.read)
    if getattr(reader, "read_batch", None) is not None:
        out["read_batch2"] = lambda: len(reader.read_batch(ids))
    if reader.query is not None:
        out["query"] = lambda: (reader.query(*QUERY), 1)[1]
    return out


#: the reference pass each pass is timed against, alternately: decoding against the ceiling,
#: raw fetch against LMDB's (the ceiling's fetch is a list index, no storage at all)
PAIRED_WITH = {
    "read1": ("ceiling", "read1"),
    "read2": ("ceiling", "read2"),
    "read_batch2": ("ceiling", "read2"),
    "scan": ("ceiling", "scan"),
    "fetch": ("lmdb", "fetch"),
}
#: passes on two threads, timed on the wall clock; the rest on CPU time (see _util.CPU)
TWO_THREADS = {"read2", "read_batch2"}


def measure_reader(reader, references, ids, pool, min_seconds):
    """One repetition of every read measurement of one store. Each pass alternates with its
    reference's same pass (``PAIRED_WITH``), so their ratio compares the two under the same
    machine load; ``references`` maps "ceiling" (and "lmdb" if installed) to open readers."""
    mine = passes(reader, ids, pool)
    refs = {name: passes(r, ids, pool) for name, r in references.items()}
    out = {}
    for name, one_pass in mine.items():
        clock = WALL if name in TWO_THREADS else CPU
        ref, ref_pass = PAIRED_WITH.get(name, (None, None))
        if ref in refs:
            ref_rate, out[name] = paired_rates(refs[ref][ref_pass], one_pass, min_seconds, clock)
            out[name + "_x"] = out[name] / ref_rate
        else:
            out[name] = rate(one_pass, min_seconds, clock)
    if "fetch" in out:
        out["fetch_us"] = 1e6 / out.pop("fetch")
        if "fetch_x" in out:  # as a time: < 1 means faster than LMDB
            out["fetch_x_lmdb"] = 1 / out.pop("fetch_x")
    if "query" in out:
        out["query_ms"] = 1e3 / out.pop("query")
        out["query_hits"] = len(reader.query(*QUERY))
    return out


def measure_ingest(contenders, data, tmp, args):
    """Write every store ``args.ingest_reps`` times (rotated); keep the last copy of each."""
    paths, times = {}, {c.name: [] for c in contenders}
    for rep in range(args.ingest_reps):
        for c in rotated(contenders, rep):
            if c.write is None:
                continue
            path = os.path.join(tmp, f"{contenders.index(c)}-{data.size}")
            remove(path)
            times[c.name].append(seconds(lambda c=c, path=path: c.write(path, data, args.batch)))
            paths[c.name] = path
    rates = {name: len(data) / median(t) for name, t in times.items() if t}
    return paths, rates


def measure_encoding_ingest(data, tmp, pool, args, batch=None, per_image=False, cpu=None):
    """Ingest with encoding: h5store's add_batch on 1 and 2 threads against imagecodecs alone;
    with ``per_image``, also a loop of ``add`` (one image per call) on 1 and 2 threads. Returns
    img/s by step; ``cpu``, a dict, receives each step's median process CPU time per image in
    microseconds (every thread's: what h5store adds to the encoding, whatever the load)."""
    images = list(data.images)
    halves = [images[0::2], images[1::2]]
    path = os.path.join(tmp, f"encode-{data.size}.h5")
    default_threads = h5store.get_threads()  # set_threads is process-wide: put it back after

    def h5store_ingest(threads):
        h5store.set_threads(threads)
        with h5store.open(path, "w", codec="jpeg", quality=90, labels=data.class_names) as store:
            for s in batches(len(data), batch or args.batch):
                store.add_batch(
                    data.images[s],
                    labels=data.labels[s],
                    scores=data.scores[s],
                    true_labels=data.true_labels[s],
                )

    def h5store_add_loop(threads):
        h5store.set_threads(threads)
        metadata = zip(data.labels.tolist(), data.scores.tolist(), data.true_labels.tolist())
        with h5store.open(path, "w", codec="jpeg", quality=90, labels=data.class_names) as store:
            add = store.add
            for image, (label, score, true_label) in zip(images, metadata):
                add(image, label=label, score=score, true_label=true_label)

    def encode_and_write():
        # What writing at all costs beside two encoders: imagecodecs on the pool (slices of
        # 16, in order), each result written as one chunk by this thread as it arrives, into
        # one h5py dataset; no index, no checks, no commits.
        size = data.size
        with h5py.File(path, "w", libver=("v110", "v110")) as f:
            ds = f.create_dataset(
                "images", shape=(len(images), size, size, 3), chunks=(1, size, size, 3), dtype="u1"
            )
            write = ds.id.write_direct_chunk
            slices = [
                pool.submit(lambda a: [encode(im) for im in images[a : a + 16]], a)
                for a in range(0, len(images), 16)
            ]
            position = 0
            for done in slices:
                for payload in done.result():
                    write((position, 0, 0, 0), payload)
                    position += 1

    steps = {
        "encode, 1 thread": lambda: [encode(im) for im in images],
        "encode, 2 threads": lambda: [
            f.result() for f in [pool.submit(lambda h: [encode(im) for im in h], h) for h in halves]
        ],
        "encode, 2 threads, each chunk written (bare h5py)": encode_and_write,
        "h5store add_batch, 1 thread": lambda: h5store_ingest(1),
        "h5store add_batch, 2 threads": lambda: h5store_ingest(2),
    }
    if per_image:
        steps["h5store add per image, 1 thread"] = lambda: h5store_add_loop(1)
        steps["h5store add per image, 2 threads"] = lambda: h5store_add_loop(2)
    times = {name: [] for name in steps}
    cpu_times = {name: [] for name in steps}
    for rep in range(args.ingest_reps):
        for name in rotated(list(steps), rep):
            # Deleted before the clock starts, as in measure_ingest: truncating the last run's
            # file at open is freeing its page cache, not ingest.
            remove(path)
            start = CPU()
            times[name].append(seconds(steps[name]))
            cpu_times[name].append(CPU() - start)
    h5store.set_threads(default_threads)
    remove(path)
    if cpu is not None:
        cpu.update({name: 1e6 * median(t) / len(data) for name, t in cpu_times.items()})
    return {name: len(data) / median(t) for name, t in times.items()}


def measure_set(data, tmp, pool, args):
    contenders = [c for c in CONTENDERS if installed(c)]
    paths, ingest = measure_ingest(contenders + INGEST_ONLY, data, tmp, args)
    disk = {name: disk_usage(p) for name, p in paths.items()}
    ingest_only = {}
    for c in INGEST_ONLY:
        files, apparent, allocated = disk.pop(c.name)
        ingest_only[c.name] = {
            "ingest": ingest[c.name],
            "files": files,
            "apparent": apparent,
            "allocated": allocated,
        }
        remove(paths.pop(c.name))
    encoding = measure_encoding_ingest(data, tmp, pool, args)

    rng = np.random.default_rng(1)
    reps = {c.name: [] for c in contenders}
    opens = {c.name: [] for c in contenders}
    references = {"ceiling": MemoryReader(data)}
    if LMDB.name in paths:
        # a copy: LMDB refuses a second handle on one environment in a process
        shutil.copytree(paths[LMDB.name], paths[LMDB.name] + "-reference")
        references["lmdb"] = LMDB().open(paths[LMDB.name] + "-reference", data)
    for rep in range(args.reps):
        ids = rng.permutation(len(data)).tolist()  # the same random order for every contender
        for c in rotated(contenders, rep):
            path = paths.get(getattr(c, "reads_file_of", c.name))
            start = WALL()
            reader = c.open(path, data)
            opens[c.name].append(WALL() - start)
            if rep == 0:
                check(reader, data)
            reps[c.name].append(measure_reader(reader, references, ids, pool, args.min_seconds))
            reader.close()
        print(f"  {data.size} px: repetition {rep + 1}/{args.reps} done", file=sys.stderr)
    for r in references.values():
        r.close()
    remove(paths.get(LMDB.name, "") + "-reference")

    for p in paths.values():
        remove(p)
    results = {}
    for c in contenders:
        m = {k: median([r[k] for r in reps[c.name]]) for k in reps[c.name][0]}
        m["repetitions"] = reps[c.name]
        m["open_ms"] = 1e3 * median(opens[c.name])
        m["ingest"] = ingest.get(c.name)
        if c.name in disk:
            m["files"], m["apparent"], m["allocated"] = disk[c.name]
        results[c.name] = m
    return {
        "n": len(data),
        "payload_bytes": data.payload_bytes,
        "stores": results,
        "ingest_only": ingest_only,
        "encoding_ingest": encoding,
    }


def measure_query_at(data, rows, tmp, min_seconds, reps):
    """h5store's query against SQLite with an index, both holding ``rows`` rows (payloads and
    metadata of ``data`` reused cyclically)."""
    take = np.arange(rows) % len(data)
    h5_path, db_path = os.path.join(tmp, "query.h5"), os.path.join(tmp, "query.sqlite")
    with h5store.open(h5_path, "w", labels=data.class_names) as store:
        for s in batches(rows, 1000):
            k = take[s]
            store.add_encoded_batch(
                [data.payloads[i] for i in k],
                labels=data.labels[k],
                scores=data.scores[k],
                true_labels=data.true_labels[k],
            )
    db = sqlite3.connect(db_path)
    db.execute(
        "CREATE TABLE images (id INTEGER PRIMARY KEY, path TEXT, label INTEGER, "
        "true_label INTEGER, score REAL)"
    )
    db.execute("CREATE INDEX by_label_score ON images (label, score)")
    with db:
        db.executemany(
            "INSERT INTO images VALUES (?, ?, ?, ?, ?)",
            (
                (
                    r,
                    f"{data.class_names[data.labels[i]]}/{r:08d}.jpg",
                    int(data.labels[i]),
                    int(data.true_labels[i]),
                    float(data.scores[i]),
                )
                for r, i in enumerate(take.tolist())
            ),
        )
    label, min_score = QUERY
    sql = "SELECT id FROM images WHERE label = ? AND score >= ?"
    with h5store.open(h5_path) as store:
        runs = {
            "h5store": lambda: store.query(label=label, min_score=min_score),
            "SQLite, indexed": lambda: db.execute(sql, (label, min_score)).fetchall(),
        }
        hits = {name: len(run()) for name, run in runs.items()}
        times = {name: [] for name in runs}
        for rep in range(reps):
            for name in rotated(list(runs), rep):
                times[name].append(1e3 / rate(lambda name=name: (runs[name](), 1)[1], min_seconds))
    db.close()
    remove(h5_path)
    remove(db_path)
    return {"rows": rows, "query_ms": {k: median(v) for k, v in times.items()}, "hits": hits}


def remove(path):
    if path is None or not os.path.exists(path):
        return
    if os.path.isdir(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


# =========================================================================== report


def ratio(a, b):
    return None if a is None or b is None or not b else a / b


def read_table(r):
    headers = [
        "store",
        "read+decode 1 thread (img/s)",
        "x ceiling",
        "2 threads (img/s)",
        "x ceiling",
        "raw fetch (us)",
        "fetch time x LMDB's",
        "sequential scan (img/s)",
        "x ceiling",
        "query (ms)",
        "open (ms)",
    ]
    rows = []
    for name, m in r["stores"].items():
        rows.append(
            [
                name,
                fmt(m.get("read1")),
                fmt(m.get("read1_x")),
                fmt(m.get("read2")),
                fmt(m.get("read2_x")),
                fmt(m.get("fetch_us")) if name != Ceiling.name else "(list index)",
                fmt(m.get("fetch_x_lmdb")),
                fmt(m.get("scan")),
                fmt(m.get("scan_x")),
                fmt(m.get("query_ms"), 3),
                fmt(m.get("open_ms")),
            ]
        )
    return markdown_table(headers, rows)


def checksum_cost(r):
    """What checking each read's CRC-32 (h5store's default) costs, from the two h5store rows."""
    on = r["stores"][H5Store.name]
    off = r["stores"].get(H5StoreUnchecked.name)
    if off is None:
        return ""
    parts = [
        f"{label} {fmt(on.get(key))} x the ceiling checked, {fmt(off.get(key))} unchecked"
        for label, key in (("1 thread", "read1_x"), ("2 threads", "read2_x"))
    ]
    return (
        "Checksummed reads (the default: each image's CRC-32 checked before it is decoded) "
        f"against `verify_reads=False`, read+decode: {'; '.join(parts)}; raw fetch "
        f"{fmt(on.get('fetch_us'))} against {fmt(off.get('fetch_us'))} us."
    )


def ingest_table(r):
    stores = {**r["stores"], **r.get("ingest_only", {})}
    lmdb_rate = stores.get(LMDB.name, {}).get("ingest")
    bare_rate = stores.get(H5pyBareLoop.name, {}).get("ingest")
    payload = r["payload_bytes"]
    headers = [
        "store",
        "ingest pre-encoded (img/s)",
        "x LMDB",
        "x bare h5py loop",
        "files",
        "on disk / payload",
        "allocated / payload",
    ]
    rows = []
    for name, m in stores.items():
        if m.get("ingest") is None:
            continue
        rows.append(
            [
                name,
                fmt(m["ingest"]),
                fmt(ratio(m["ingest"], lmdb_rate)),
                fmt(ratio(m["ingest"], bare_rate)),
                str(m["files"]),
                fmt(m["apparent"] / payload, 3),
                fmt(m["allocated"] / payload, 3),
            ]
        )
    return markdown_table(headers, rows)


def encoding_table(r):
    e = r["encoding_ingest"]
    one = e["encode, 1 thread"]
    rows = []
    for threads in (1, 2):
        enc, h5 = (
            e[f"encode, {threads} thread" + "s" * (threads > 1)],
            e[f"h5store add_batch, {threads} thread" + "s" * (threads > 1)],
        )
        rows.append([str(threads), fmt(enc), fmt(h5), fmt(h5 / enc), fmt(h5 / (threads * one))])
    return markdown_table(
        [
            "threads",
            "imagecodecs encode alone (img/s)",
            "h5store add_batch (img/s)",
            "h5store / encode alone",
            "h5store / (threads x 1-thread encode)",
        ],
        rows,
    )


def report(results, args):
    m = results["machine"]
    out = [
        "# h5store against its peers",
        "",
        f"Produced by `{results['command']}` on {m['date']} ({m['cpus']} cores, load average "
        f"{m['load_average'][0]:.1f} at start and {results['load_average_end'][0]:.1f} at end; "
        f"h5store {m['h5store_commit']}{' + uncommitted changes' if m['h5store_dirty'] else ''}, "
        f"Python {m['python']}, h5py {m['h5py']} / HDF5 {m['hdf5']}, "
        f"imagecodecs {m['imagecodecs']}).",
        "",
        f"Same JPEG q90 payload bytes for every store. Medians of {args.reps} repetitions "
        f"(ingest: {args.ingest_reps}), contender order rotated between repetitions; ingest in "
        f"batches of {args.batch}. 'x ceiling': rate over the ceiling's (imagecodecs decoding the "
        "same bytes from memory), the two timed in alternating passes so both see the same "
        "machine load; median of the per-repetition ratios (the ceiling's own row, timed against "
        "itself, shows the noise left). One-thread figures (read, fetch, scan, query) are CPU "
        "time of the process, so time slices other jobs on this shared machine took do not "
        "count; two-thread figures and ingest are wall time. Reads are warm (page cache), every "
        "pass keeps its decoded arrays alive until it ends. Query: "
        f"`label == {QUERY[0]} and score >= {QUERY[1]}`; '—' where the store has no such "
        "operation (WebDataset: sequential only).",
    ]
    skipped = [c.name for c in CONTENDERS if not installed(c)]
    if skipped:
        out += ["", f"Skipped, package not installed: {', '.join(skipped)}."]
    for size in (224, 32):
        r = results.get(str(size))
        if r is None:
            continue
        h5, ceiling = r["stores"][H5Store.name], r["stores"][Ceiling.name]
        out += [
            "",
            f"## {size} px: {r['n']} images, "
            f"{r['payload_bytes'] / r['n'] / 1e3:.1f} kB payload each",
            "",
            "### Reads",
            "",
            read_table(r),
            "",
            f"The ceiling's 2-thread rate (wall) was {fmt(ceiling['read2'] / ceiling['read1'])} x "
            "its 1-thread rate (CPU time): how much of a second core this run got from the shared "
            "machine (2.0 on an idle one). h5store "
            f"`get_batch` (its own thread pool, 2 threads): {fmt(h5.get('read_batch2'))} img/s "
            f"= {fmt(h5.get('read_batch2_x'))} x the ceiling's 2-thread rate.",
            "",
            checksum_cost(r),
            "",
            "### Ingest and size",
            "",
            ingest_table(r),
            "",
            encoding_table(r),
        ]
    q = results.get("query")
    if q:
        out += [
            "",
            f"## Query at {q['rows']:,} rows (32 px payloads reused)",
            "",
            markdown_table(
                ["store", "query (ms)", "hits"],
                [[k, fmt(v, 3), str(q["hits"][k])] for k, v in q["query_ms"].items()],
            ),
        ]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sets, fewer repetitions")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--n224", type=int, help="images in the 224 px set (default 1000)")
    parser.add_argument("--n32", type=int, help="images in the 32 px set (default 4000)")
    parser.add_argument("--reps", type=int, help="read repetitions (default 5)")
    parser.add_argument("--batch", type=int, default=256, help="images per ingest batch")
    parser.add_argument("--query-rows", type=int, default=50_000)
    args = parser.parse_args(argv)
    quick = args.quick
    args.n224 = args.n224 or (200 if quick else 1000)
    args.n32 = args.n32 or (1000 if quick else 4000)
    args.reps = args.reps or (3 if quick else 5)
    args.ingest_reps = 2 if quick else 3
    args.min_seconds = 0.1 if quick else 0.3

    results = {"machine": machine(), "command": command_line(), "batch": args.batch}
    tmp = tempfile.mkdtemp(prefix="h5store-peers-", dir="/tmp")
    pool = ThreadPoolExecutor(2)
    try:
        for size, n in ((224, args.n224), (32, args.n32)):
            print(f"{size} px: making {n} images", file=sys.stderr)
            data = make_payloads(n, size)
            results[str(size)] = measure_set(data, tmp, pool, args)
        results["query"] = measure_query_at(data, args.query_rows, tmp, args.min_seconds, args.reps)
    finally:
        pool.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_average_end"] = os.getloadavg()
    markdown = report(results, args)
    write_results(args.out, "peers", markdown, results)
    print(markdown)


if __name__ == "__main__":
    main()
