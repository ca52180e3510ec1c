"""File fuzzer: damage small real stores, or rebuild parts of them as an attacker would, and
check that reading them never lies, never reads another file and never takes unbounded memory.

Builds a few small stores with h5store's public API (JPEG, PNG grey and 16-bit, Blosc2 and
Zstandard, deleted rows, (N, K) score vectors, true labels, sources), locates their parts with
h5py's low-level API (superblock, object headers, /index chunks, /index_tail, /stacks, /labels,
/scores, /sources, /source_crc32, image chunks, the rest of the metadata), then runs two kinds
of trial:

* byte trials damage one part: flip bits, overwrite bytes, zero a range, truncate the file
  inside it, or copy another block of the same kind over it;
* structural trials rewrite the file with h5py as a crafted file would be: a known path, class
  group, stack or preview replaced by an external link or a soft link, a dataset moved to
  external raw storage or rebuilt as a virtual dataset (both over an identical copy outside
  the file, so following them reads the right values and only the trace shows it; or over a
  foreign text file), a dataset resized to an absurd size, an attribute edited (class label,
  class id, codec, codec configuration, count, format name and version), the height and width
  inside a JPEG or PNG payload edited with the index's CRC-32 fixed up, or an /index or
  /stacks row claiming another shape, dtype or codec.

Each file is opened read-only and every image read back (pixels, shape, label, true label,
score, score vector, source; then the scores and sources as columns, then verify()) in a forked
child with a time limit, traced by ``strace -f -e trace=open,openat,openat2`` (HDF5 opens
linked and external files in C, where Python's audit hooks see nothing): every file the child
opens after it starts reading, other than the store itself and the interpreter's own libraries
and modules, is a read outside the file (counted whether or not the open succeeded: the
path came from the file). The child's address space may grow by at most ``--memory`` MiB
while reading (RLIMIT_AS, a hard bound: past it allocations fail); its peak resident memory is
measured too (VmHWM, reset before reading). Each trial's outcome is one of

    exact    every image and record as written
    error    some reads raised an h5store error (H5StoreError), the rest were exact
    other    an exception that is not an H5StoreError escaped (an h5store bug, not a lie)
    wrong    some read returned a value that differs from what was written, without an error
    crash    the child died of a signal (inside HDF5 or a codec)
    hang     the child ran past the time limit
    outside  the child opened a file other than the store (whatever it then answered)
    memory   the reads needed more memory than the bound (MemoryError, or a resident peak
             over it)

    python benchmarks/fuzz.py                      # 2,000 byte + 2,000 structural trials
    python benchmarks/fuzz.py --trials 200 --structural 200 --seed 1 --json out.json

Prints a table by damaged part or structural mutation, and every trial whose outcome is not
exact or error with the mutation that caused it, so each can be replayed with --replay.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import json
import multiprocessing
import os
import random
import re
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib

import h5py
import numpy as np

import h5store

OUTCOMES = ("exact", "error", "other", "wrong", "crash", "hang", "outside", "memory")
KINDS = ("flip", "bytes", "zero", "truncate", "duplicate")

# --------------------------------------------------------------------------- stores


def _picture(rng: np.random.Generator, h: int, w: int, c: int, dtype=np.uint8) -> np.ndarray:
    """A smooth picture with some noise: compresses like a photo, not like noise."""
    y, x = np.mgrid[0:h, 0:w]
    peak = 255 if dtype == np.uint8 else 65535
    base = [(np.sin(x / rng.uniform(2, 8) + k) + np.cos(y / rng.uniform(2, 8))) for k in range(c)]
    img = (np.stack(base, -1) + 2) / 4 * peak + rng.normal(0, peak / 50, (h, w, c))
    img = np.clip(img, 0, peak).astype(dtype)
    return img[..., 0] if c == 1 else img


def build_stores(folder: str) -> dict[str, dict]:
    """The stores to damage, and what each holds (the truth reads are checked against)."""
    rng = np.random.default_rng(2024)
    classes = ["cat", "dog", "bird"]
    specs = {
        "jpeg": dict(codec="jpeg", shapes=[(24, 24, 3), (16, 20, 3)], vectors=True),
        "png": dict(codec="png", shapes=[(20, 20, 1), (12, 12, 3)], vectors=False),
        "png16": dict(codec="png", shapes=[(16, 16, 1)], vectors=False, dtype=np.uint16),
        "blosc2": dict(codec="blosc2", shapes=[(16, 16, 3)], vectors=True),
        "zstd": dict(codec="zstd", shapes=[(18, 14, 1), (10, 10, 4)], vectors=False),
    }
    stores = {}
    for name, spec in specs.items():
        path = os.path.join(folder, f"{name}.h5")
        truth: dict[int, tuple] = {}
        with h5store.open(path, "w", codec=spec["codec"], labels=classes) as store:
            for batch in range(3):
                n = 8
                shape = spec["shapes"][batch % len(spec["shapes"])]
                images = [_picture(rng, *shape, spec.get("dtype", np.uint8)) for _ in range(n)]
                labels = [classes[int(k)] for k in rng.integers(0, 3, n)]
                truths = [classes[int(k)] if k < 3 else None for k in rng.integers(0, 4, n)]
                if spec["vectors"]:
                    scores = rng.dirichlet(np.ones(3), n).astype(np.float32)
                    labels = [classes[k] for k in scores.argmax(1)]  # labels are predictions
                else:
                    scores = rng.random(n).astype(np.float32)
                ids = store.add_batch(
                    images,
                    labels=labels,
                    scores=scores,
                    true_labels=truths,
                    sources=[f"{name}/{batch}/{k}.png" for k in range(n)],
                )
                for k, i in enumerate(ids.tolist()):
                    record = store.record(i)
                    truth[i] = (
                        store[i],
                        labels[k],
                        truths[k],
                        record.score,
                        record.scores,
                        record.source,
                    )
            deleted = [int(i) for i in rng.choice(sorted(truth), 3, replace=False)]
            store.delete(deleted)
            for i in deleted:
                del truth[i]
        stores[name] = {"path": path, "truth": truth}
    return stores


# --------------------------------------------------------------------------- the parts of a file


def _chunks(ds: h5py.Dataset) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    if ds.chunks is None:
        offset = ds.id.get_offset()
        return [] if offset is None else [(offset, ds.id.get_storage_size())]
    ds.id.chunk_iter(lambda c: found.append((c.byte_offset, c.size)))
    return found


def _heap_collections(path: str, ds: h5py.Dataset) -> list[tuple[int, int]]:
    """The global-heap collections holding the strings of /sources (whose chunks hold only
    references: length, collection address, object index)."""
    reference = np.dtype([("length", "<u4"), ("heap", "<u8"), ("index", "<u4")])
    addresses: set[int] = set()
    for start, size in _chunks(ds):
        with open(path, "rb") as fh:
            fh.seek(start)
            refs = np.frombuffer(fh.read(size), reference)
        addresses.update(refs["heap"][refs["length"] > 0].tolist())
    out = []
    with open(path, "rb") as fh:
        for address in sorted(addresses):
            fh.seek(address)
            header = fh.read(16)  # "GCOL", version, 3 reserved, collection size
            if header[:4] == b"GCOL":
                out.append((address, int.from_bytes(header[8:16], "little")))
    return out


def parts_of(path: str) -> dict[str, list[tuple[int, int]]]:
    """Byte ranges (start, length) of each part of the file."""
    parts: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    parts["superblock"].append((0, 48))
    with h5py.File(path, "r", locking=False) as f:
        objects = [f]
        f.visititems(lambda _name, obj: objects.append(obj))
        for obj in objects:
            info = h5py.h5o.get_info(obj.id)
            parts["object header"].append((info.addr, max(16, info.hdr.space.total)))
            if not isinstance(obj, h5py.Dataset):
                continue
            name = obj.name.lstrip("/")
            if name in ("index", "index_tail", "stacks", "labels", "scores"):
                key = name.replace("_", " ")
            elif name == "source_crc32":
                key = "source checks"
            elif name == "score_crc32":
                key = "score checks"
            elif name == "sources":
                key = "sources"
                parts["source strings"].extend(_heap_collections(path, obj))
            elif name.startswith("classes/"):
                key = "image chunk"
            else:
                key = "preview"
            parts[key].extend(_chunks(obj))
    size = os.path.getsize(path)
    taken = sorted(r for rs in parts.values() for r in rs)
    # Everything else is HDF5 metadata we did not name (chunk indexes, heaps, free space).
    gaps, cursor = [], 0
    for start, length in taken:
        if start > cursor:
            gaps.append((cursor, start - cursor))
        cursor = max(cursor, start + length)
    if cursor < size:
        gaps.append((cursor, size - cursor))
    parts["other metadata"] = [g for g in gaps if g[1] > 0]
    return {k: [r for r in v if r[1] > 0] for k, v in parts.items() if v}


# --------------------------------------------------------------------------- mutations


def plan(stores: dict[str, dict], trials: int, seed: int) -> list[dict]:
    """The trials: which store, which part, which byte range, which damage."""
    rng = random.Random(seed)
    names = sorted(stores)
    parts = {name: parts_of(stores[name]["path"]) for name in names}
    out = []
    for t in range(trials):
        name = names[t % len(names)]
        part = rng.choice(sorted(parts[name]))
        start, length = rng.choice(parts[name][part])
        kind = rng.choice(KINDS)
        span = max(1, min(length, rng.choice([1, 4, 16, 64, length])))
        at = start + rng.randrange(max(1, length - span + 1))
        trial = {
            "trial": t,
            "store": name,
            "part": part,
            "kind": kind,
            "offset": at,
            "length": span,
            "seed": rng.randrange(1 << 30),
        }
        if kind == "duplicate":
            sources = [r for r in parts[name][part] if r[0] != start] or parts[name][part]
            src_start, src_len = rng.choice(sources)
            trial["source"] = src_start
            trial["length"] = min(length, src_len)
            trial["offset"] = start
        out.append(trial)
    return out


def damage(data: bytes, trial: dict) -> bytes:
    buf = bytearray(data)
    rng = random.Random(trial["seed"])
    at, n = trial["offset"], trial["length"]
    kind = trial["kind"]
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            k = at + rng.randrange(n)
            buf[k] ^= 1 << rng.randrange(8)
    elif kind == "bytes":
        for k in range(at, at + n):
            buf[k] = rng.randrange(256)
    elif kind == "zero":
        buf[at : at + n] = bytes(n)
    elif kind == "truncate":
        del buf[at:]
    elif kind == "duplicate":
        src = trial["source"]
        buf[at : at + n] = data[src : src + n]
    return bytes(buf)


# --------------------------------------------------------------------------- structural mutations

STRUCTURAL = (
    "external link",
    "soft link",
    "external storage",
    "virtual dataset",
    "resize",
    "attribute",
    "header dims",
    "index row",
)
#: Where a crafted file's outside references point (below the trial's own folder).
OUTSIDE = "outside"
#: A foreign file the crafted references may read: text, as /etc/passwd would be.
FOREIGN_TEXT = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/nologin\n"
#: Where a moved original is kept when a link or virtual dataset points back into the file.
MOVED = "/_moved"
RESIZES = ("+1", "x2", 10**6, 10**9, 10**12, 2**40, 0)
HEADER_DIMS = ("huge", "double height", "double width", "half height", "one pixel", "tall")
ROW_EDITS = {
    "index": {
        "height": ("x2", "half", 65000, 0),
        "width": ("x2", "half", 65000, 0),
        "channels": (1, 3, 4, 0),
        "dtype": ("uint8", "uint16", "float64"),
    },
    "stacks": {
        "height": ("x2", "half", 65000, 0),
        "width": ("x2", "half", 65000, 0),
        "channels": (1, 3, 4, 0),
        "dtype": ("uint8", "uint16", "float64"),
        "codec": ("jpeg", "png", "raw", "zstd", "nonexistent"),
    },
}
ROW_TEXT = {v for table in ROW_EDITS.values() for f in ("dtype", "codec") for v in table.get(f, ())}
_CONFIGS = (
    '{"id": "png", "level": 6}',
    '{"id": "jpeg", "optimize": false, "quality": 1000, "subsampling": "420"}',
    "{}",
    "not json",
    '{"id": "nonexistent"}',
)
ATTRIBUTE_EDITS = {
    "root": {
        "h5store_version": ([1, 2], [1, 99], [2, 0], [0, 9], [1, -1], "1.1", [1], None),
        "h5store_format": ("h5storf", "", "H5STORE", None),
    },
    "class": {
        "label": ("<other>", "evil", "", "x" * 300, None),
        "class_id": ("<other>", 99, 2**32 - 1, None),
        "codec": ("jpeg", "png", "raw", "zstd", "nonexistent", None),
        "codec_config": _CONFIGS + (None,),
        "count": (0, 10**12, None),
        "lossless": (0, 1, None),
    },
    "stack": {
        "codec": ("jpeg", "png", "raw", "zstd", "nonexistent", None),
        "codec_config": _CONFIGS + (None,),
    },
}


def generic(name: str) -> str:
    """A path with the class and stack names replaced by placeholders (for the table)."""
    parts = name.strip("/").split("/")
    if parts[0] in ("classes", "previews"):
        parts[1:2] = ["<class>"] if len(parts) > 1 else []
        parts[2:3] = ["<stack>" if parts[0] == "classes" else parts[2]] if len(parts) > 2 else []
    return "/" + "/".join(parts)


def objects_of(path: str) -> dict[str, dict]:
    """Every object of a store by path: what the structural mutations can aim at."""
    found: dict[str, dict] = {}

    def visit(name: str, obj: h5py.HLObject) -> None:
        entry = {"group": isinstance(obj, h5py.Group)}
        if not entry["group"]:
            entry.update(
                resizable=obj.maxshape[0] is None,
                vlen=h5py.check_string_dtype(obj.dtype) is not None
                and h5py.check_string_dtype(obj.dtype).length is None,
                stack=name.startswith("classes/"),
            )
        found["/" + name] = entry

    with h5py.File(path, "r", locking=False) as f:
        f.visititems(visit)
    return found


def plan_structural(stores: dict[str, dict], trials: int, seed: int, first: int) -> list[dict]:
    """The structural trials: which store, which mutation, which object, which variant."""
    rng = random.Random(seed ^ 0x5EED)
    names = sorted(stores)
    objects = {name: objects_of(stores[name]["path"]) for name in names}
    out = []
    for t in range(trials):
        name = names[t % len(names)]
        objs = objects[name]
        datasets = sorted(p for p, o in objs.items() if not o["group"])
        raw = [p for p in datasets if not objs[p]["vlen"]]
        kinds = [k for k in STRUCTURAL if k != "header dims" or name in ("jpeg", "png", "png16")]
        kind = rng.choice(kinds)
        trial = {"trial": first + t, "store": name, "part": kind, "kind": kind}
        if kind in ("external link", "soft link"):
            target = rng.choice(sorted(objs))
            trial["target"] = target
            if kind == "external link":
                trial["variant"] = rng.choice(["absolute", "relative"])
            else:
                trial["variant"] = rng.choice(["same data", "other object", "dangling", "loop"])
                alike = [
                    p for p in objs if p != target and objs[p]["group"] == objs[target]["group"]
                ]
                trial["other"] = rng.choice(sorted(alike or set(objs) - {target}))
        elif kind == "external storage":
            trial["target"] = rng.choice(raw)
            trial["variant"] = rng.choice(["copy", "foreign", "relative copy"])
        elif kind == "virtual dataset":
            trial["target"] = rng.choice(raw)
            trial["variant"] = rng.choice(["outside", "inside"])
        elif kind == "resize":
            trial["target"] = rng.choice([p for p in datasets if objs[p]["resizable"]])
            trial["variant"] = rng.choice(RESIZES)
        elif kind == "attribute":
            where = rng.choice(sorted(ATTRIBUTE_EDITS))
            if where == "root":
                trial["target"] = "/"
            elif where == "class":
                trial["target"] = rng.choice(
                    [p for p in objs if objs[p]["group"] and re.fullmatch("/classes/[^/]+", p)]
                )
            else:
                trial["target"] = rng.choice([p for p in datasets if objs[p]["stack"]])
            attr = rng.choice(sorted(ATTRIBUTE_EDITS[where]))
            trial["attribute"] = attr
            trial["variant"] = rng.choice(ATTRIBUTE_EDITS[where][attr])
        elif kind == "header dims":
            trial["target"] = "/classes/<class>/<stack> payload"
            trial["id"] = rng.choice(sorted(stores[name]["truth"]))
            trial["variant"] = rng.choice(HEADER_DIMS)
        else:  # index row
            table = rng.choice(sorted(ROW_EDITS))
            field = rng.choice(sorted(ROW_EDITS[table]))
            trial["target"] = "/" + table
            trial["field"] = field
            trial["variant"] = rng.choice(ROW_EDITS[table][field])
            trial["id"] = rng.choice(sorted(stores[name]["truth"]))
        out.append(trial)
    return out


def _outside_copy(folder: str, data: bytes) -> str:
    """An identical copy of the undamaged store outside the trial's file."""
    path = os.path.join(folder, OUTSIDE, "decoy.h5")
    if not os.path.exists(path):
        with open(path, "wb") as fh:
            fh.write(data)
    return path


def _replace_dataset(f: h5py.File, target: str, **kwargs) -> h5py.Dataset:
    """Recreate ``target`` with the same values and attributes but another storage."""
    write = kwargs.pop("write", True)
    old = f[target]
    attrs = {k: old.attrs[k] for k in old.attrs}
    try:
        values = old[()]
    except OSError:  # a stack whose filter this process lacks: its shape and type suffice
        values = np.zeros(old.shape, old.dtype)
    del f[target]
    new = f.create_dataset(target, shape=values.shape, dtype=values.dtype, **kwargs)
    if write:
        new[()] = values
    for k, v in attrs.items():
        new.attrs[k] = v
    return new


def _row_number(ds: h5py.Dataset, image_id: int) -> int:
    rows = np.flatnonzero(ds["id"][()] == image_id)
    return int(rows[-1])


def _scaled(value: int, how: object) -> int:
    if how == "x2":
        return value * 2
    if how == "half":
        return max(1, value // 2)
    return int(how)


def _sof(payload: bytearray) -> int:
    """Offset of a JPEG's frame header (height at +5, width at +7)."""
    at = 2
    while at + 4 < len(payload):
        if payload[at] != 0xFF:
            raise ValueError("not a JPEG marker")
        marker = payload[at + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE):
            return at
        at += 2 + int.from_bytes(payload[at + 2 : at + 4], "big")
    raise ValueError("no frame header")


def _edit_header(payload: bytes, variant: str) -> bytes:
    """``payload`` (JPEG or PNG) with other dimensions in its header."""
    buf = bytearray(payload)
    png = buf[:8] == b"\x89PNG\r\n\x1a\n"
    if png:
        w, h = struct.unpack(">II", buf[16:24])
    else:
        sof = _sof(buf)
        h, w = struct.unpack(">HH", buf[sof + 5 : sof + 9])
    top = 100000 if png else 65000
    h, w = {
        "huge": (top, top),
        "double height": (2 * h, w),
        "double width": (h, 2 * w),
        "half height": (max(1, h // 2), w),
        "one pixel": (1, 1),
        "tall": (top, 1),
    }[variant]
    if png:
        buf[16:24] = struct.pack(">II", w, h)
        buf[29:33] = struct.pack(">I", zlib.crc32(bytes(buf[12:29])))  # the IHDR chunk's CRC
    else:
        buf[sof + 5 : sof + 9] = struct.pack(">HH", h, w)
    return bytes(buf)


def mutate(path: str, trial: dict, data: bytes) -> None:
    """Apply a structural trial's mutation to the store at ``path`` (a copy of ``data``)."""
    folder = os.path.dirname(path)
    os.makedirs(os.path.join(folder, OUTSIDE), exist_ok=True)
    kind, variant = trial["kind"], trial.get("variant")
    target = trial.get("target")
    with h5py.File(path, "r+", locking=False) as f:
        if kind == "external link":
            decoy = _outside_copy(folder, data)
            name = decoy if variant == "absolute" else os.path.relpath(decoy, folder)
            del f[target]
            f[target] = h5py.ExternalLink(name, target)
        elif kind == "soft link":
            if variant == "same data":
                f.move(target, MOVED)
                f[target] = h5py.SoftLink(MOVED)
            else:
                del f[target]
                f[target] = h5py.SoftLink(
                    {"other object": trial["other"], "dangling": "/nowhere", "loop": target}[
                        variant
                    ]
                )
        elif kind == "external storage":
            raw = os.path.join(folder, OUTSIDE, "raw.bin")
            nbytes = f[target].size * f[target].dtype.itemsize
            if variant == "foreign":
                with open(raw, "wb") as fh:
                    fh.write((FOREIGN_TEXT * (nbytes // len(FOREIGN_TEXT) + 1))[:nbytes])
            name = raw if variant != "relative copy" else os.path.join(OUTSIDE, "raw.bin")
            # Relative external names resolve from the working directory: the trial's folder.
            _replace_dataset(
                f,
                target,
                external=[(raw, 0, nbytes)],
                write=variant != "foreign",
                fill_time="never",
            )
            if name != raw:
                _relink_external(f, target, name)
        elif kind == "virtual dataset":
            ds = f[target]
            if variant == "outside":
                source_file, source_path = _outside_copy(folder, data), target
            else:
                f.move(target, MOVED)
                source_file, source_path = ".", MOVED
                ds = f[MOVED]
            attrs = {k: ds.attrs[k] for k in ds.attrs}
            layout = h5py.VirtualLayout(shape=ds.shape, dtype=ds.dtype)
            layout[...] = h5py.VirtualSource(source_file, source_path, shape=ds.shape)
            if variant == "outside":
                del f[target]
            new = f.create_virtual_dataset(target, layout)
            for k, v in attrs.items():
                new.attrs[k] = v
        elif kind == "resize":
            ds = f[target]
            n = ds.shape[0]
            ds.resize(n + 1 if variant == "+1" else 2 * n if variant == "x2" else variant, axis=0)
        elif kind == "attribute":
            obj = f[target]
            name = trial["attribute"]
            if variant is None:
                if name in obj.attrs:
                    del obj.attrs[name]
            else:
                value = variant
                if value == "<other>":
                    others = [g for g in f["classes"].values() if g.name != obj.name]
                    value = others[0].attrs[name] if others else obj.attrs[name]
                elif isinstance(value, int) and not isinstance(value, bool):
                    value = np.uint64(value) if value >= 0 else np.int64(value)
                elif isinstance(value, list):
                    value = np.array(value, "<i4")
                obj.attrs[name] = value
        elif kind == "header dims":
            index = f["index"]
            k = _row_number(index, trial["id"])
            row = index[k]
            offset, nbytes = int(row["offset"]), int(row["nbytes"])
            payload = _edit_header(data[offset : offset + nbytes], variant)
            row["crc32"] = zlib.crc32(payload)
            index[k] = row
        else:  # index row
            ds = f[target]
            index_row = f["index"][_row_number(f["index"], trial["id"])]
            k = _row_number(ds, trial["id"]) if target == "/index" else int(index_row["stack"])
            row = ds[k]
            field = trial["field"]
            # (text values are the byte-string fields: dtype, codec; kept as text for --json)
            row[field] = variant.encode() if variant in ROW_TEXT else _scaled(row[field], variant)
            ds[k] = row
    if kind == "header dims":
        with open(path, "r+b") as fh:
            fh.seek(offset)
            fh.write(payload)


def _relink_external(f: h5py.File, target: str, name: str) -> None:
    """Rewrite a dataset's external file name (h5py writes through the name it is given, so
    the values are written with an absolute name first)."""
    ds = f[target]
    attrs = {k: ds.attrs[k] for k in ds.attrs}
    nbytes = ds.size * ds.dtype.itemsize
    shape, dtype = ds.shape, ds.dtype
    del f[target]
    new = f.create_dataset(
        target, shape=shape, dtype=dtype, external=[(name, 0, nbytes)], fill_time="never"
    )
    for k, v in attrs.items():
        new.attrs[k] = v


# --------------------------------------------------------------------------- reading back


def _failure(exc: BaseException) -> str:
    """The outcome an exception escaping a read stands for."""
    if isinstance(exc, h5store.H5StoreError):
        return "error"
    return "memory" if isinstance(exc, MemoryError) else "other"


def read_back(path: str, truth: dict[int, tuple]) -> tuple[str, str]:
    """Open the damaged file and compare every read with the truth: (outcome, detail)."""
    try:
        store = h5store.open(path)
    except Exception as exc:
        return _failure(exc), f"open: {type(exc).__name__}: {exc}"[:300]
    errors, wrong = [], []
    with store:
        try:
            live = set(store.ids().tolist())
        except Exception as exc:
            return _failure(exc), f"ids: {type(exc).__name__}: {exc}"[:300]
        missing = sorted(set(truth) - live)
        extra = sorted(live - set(truth))
        if missing or extra:
            example = (missing + extra)[:3]
            wrong.append(f"ids: {len(missing)} missing, {len(extra)} extra (e.g. {example})")
        for image_id in sorted(set(truth) & live):
            pixels, label, true_label, score, vector, source = truth[image_id]
            try:
                got = store[image_id]
                record = store.record(image_id)
            except h5store.H5StoreError as exc:
                errors.append(f"{image_id}: {type(exc).__name__}: {exc}")
                continue
            except Exception as exc:
                return _failure(exc), f"read {image_id}: {type(exc).__name__}: {exc}"[:300]
            if got.dtype != pixels.dtype or not np.array_equal(got, pixels):
                wrong.append(f"{image_id}: pixels differ")
            elif tuple(record.shape) != pixels.shape or record.dtype != pixels.dtype.name:
                wrong.append(f"{image_id}: record says {record.shape} {record.dtype}")
            elif (record.label, record.true_label) != (label, true_label):
                wrong.append(f"{image_id}: label {record.label!r}/{record.true_label!r}")
            elif not (record.score == score or (record.score is None and score is None)):
                wrong.append(f"{image_id}: score {record.score} != {score}")
            elif (vector is None) != (record.scores is None) or (
                vector is not None and not np.array_equal(vector, record.scores)
            ):
                wrong.append(f"{image_id}: score vector differs")
            elif record.source != source:
                wrong.append(f"{image_id}: source {record.source!r}")
        # The sources and score vectors again, as columns (the vectorised read paths of
        # to_pandas, to_sql and export), then verify(), which must not raise.
        try:
            ids = store.ids().tolist()
            sources = dict(zip(ids, store.sources))
            scores = store.scores
            scores = None if scores is None else dict(zip(ids, scores))
            store.verify()
        except h5store.H5StoreError as exc:
            errors.append(f"columns: {type(exc).__name__}: {exc}")
        except Exception as exc:
            return _failure(exc), f"columns: {type(exc).__name__}: {exc}"[:300]
        else:
            both = sorted(set(truth) & set(sources))
            bad = [i for i in both if sources[i] != truth[i][5]]
            if bad:
                wrong.append(f"sources column: {len(bad)} differ (e.g. {bad[0]})")
            vectors = [i for i in both if truth[i][4] is not None]
            if vectors and scores is None:
                wrong.append("scores column: missing")
            bad = [i for i in vectors if scores and not np.array_equal(scores[i], truth[i][4])]
            if bad:
                wrong.append(f"scores column: {len(bad)} differ (e.g. {bad[0]})")
    if wrong:
        return "wrong", "; ".join(wrong[:3])[:300]
    if errors:
        return "error", errors[0][:300]
    return "exact", ""


# --------------------------------------------------------------------------- tracing, memory

#: Opened by the child just before it starts reading: the trace counts opens after this one.
MARKER = "/nonexistent-h5store-fuzz/reading-starts"
_OPEN = re.compile(r'^\d+\s+open(?:at2?)?\((?:AT_FDCWD|(-?\d+)), "((?:[^"\\]|\\.)*)"')


def allowed_prefixes() -> tuple[str, ...]:
    """What a reader may open besides the store: the interpreter's modules and libraries
    (loaded lazily, e.g. a codec's extension on its first image), the C libraries, the kernel's
    files, and HDF5's filter plugins."""
    plugin_dirs = os.environ.get("HDF5_PLUGIN_PATH", "/usr/local/hdf5/lib/plugin").split(":")
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(h5store.__file__)}
    roots.update(os.path.dirname(os.path.realpath(m.__file__)) for m in (np, h5py))
    system = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/proc", "/sys", "/dev")
    dirs = {os.path.realpath(r) for r in roots | set(plugin_dirs) | set(system) if r}
    # The folders themselves too: HDF5 lists its plugin folder when a filter is missing.
    return tuple(sorted(d + os.sep for d in dirs)) + tuple(sorted(dirs)) + ("/etc/ld.so.cache",)


def outside_opens(trace: str, store: str, cwd: str, allowed: tuple[str, ...]) -> list[str]:
    """The files a traced child opened after MARKER, other than the store and ``allowed``."""
    lines = trace.splitlines()
    start = next((k for k, line in enumerate(lines) if MARKER in line), None)
    if start is None:
        return []  # the child never started reading (died mutating): nothing to count
    found = []
    for line in lines[start + 1 :]:
        match = _OPEN.match(line)
        if match is None:
            continue
        name = match.group(2).encode().decode("unicode_escape")
        if match.group(1) is not None and not name.startswith("/"):
            name = f"<fd {match.group(1)}>/{name}"
        full = os.path.normpath(os.path.join(cwd, name))
        if full in (store, *allowed) or full.startswith(allowed) or full in found:
            continue
        found.append(full)
    return found


def _status() -> dict[str, int]:
    """/proc/self/status's memory figures, in kB."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Vm"):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out


def _bound_memory(mib: int) -> int:
    """Reset the peak resident size, cap the address space at its present size plus ``mib``,
    and return the resident size now (kB)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM := VmRSS
    status = _status()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = status["VmSize"] * 1024 + mib * 2**20
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return status["VmRSS"]


def _allow_tracer() -> None:
    """Let a sibling process (strace, started by our parent) attach under Yama's ptrace_scope 1."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(0x59616D61, ctypes.c_ulong(-1), 0, 0, 0)  # PR_SET_PTRACER, PR_SET_PTRACER_ANY


# --------------------------------------------------------------------------- one trial


def _described(exc: BaseException) -> str:
    """An exception and where it came from, without its source lines: reading them would open
    source files in the traced child."""
    frames = traceback.StackSummary.extract(
        traceback.walk_tb(exc.__traceback__), lookup_lines=False
    )
    where = " < ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(frames))
    return f"{type(exc).__name__}: {exc} (at {where})"[-300:]


def _child(
    trial: dict, path: str, data: bytes, truth: dict, go: int, memory_mib: int, reader
) -> list:
    """In the forked child: mutate, wait for the tracer, read back: [outcome, detail, peak]."""
    # Codecs' warnings (libpng's) would only clutter the run's output; the outcome has the error.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    if trial["kind"] in STRUCTURAL:
        try:
            mutate(path, trial, data)
        except Exception as exc:
            return ["invalid", "mutation failed: " + _described(exc), 0]
    _allow_tracer()
    os.read(go, 1)
    os.chdir(os.path.dirname(path))  # relative external names resolve from here
    base = _bound_memory(memory_mib)
    with contextlib.suppress(OSError):
        os.open(MARKER, os.O_RDONLY)
    try:
        outcome, detail = reader(path, truth)
    except BaseException as exc:
        outcome, detail = _failure(exc), _described(exc)
    peak = max(0, _status().get("VmHWM", 0) - base) / 1024
    if peak > memory_mib and outcome not in ("memory", "crash"):
        outcome, detail = "memory", f"resident peak {peak:.0f} MiB (then: {outcome}: {detail})"
    return [outcome, detail, round(peak, 1)]


def run_trial(
    trial: dict,
    data: bytes,
    truth: dict,
    folder: str,
    timeout: float,
    memory_mib: int = 256,
    allowed: tuple[str, ...] | None = None,
    reader=read_back,
) -> dict:
    """Damage or mutate, then read back in a forked child (so a crash or a hang is the
    child's), traced when ``allowed`` is given. ``reader(path, truth)`` returns (outcome,
    detail); the tests pass others to check that the harness sees what it should."""
    trial_dir = os.path.join(folder, f"t{trial['trial']}")
    os.makedirs(trial_dir)
    path = os.path.join(trial_dir, "store.h5")
    with open(path, "wb") as fh:
        fh.write(data if trial["kind"] in STRUCTURAL else damage(data, trial))
    go_read, go_write = os.pipe()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: read, report, leave without cleanup
        os.close(read_end)
        os.close(go_write)
        try:
            result = _child(trial, path, data, truth, go_read, memory_mib, reader)
        except BaseException as exc:
            result = ["other", _described(exc), 0]
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    os.close(go_read)
    tracer, trace_path = None, os.path.join(trial_dir, "trace")
    if allowed is not None:
        tracer = subprocess.Popen(
            ["strace", "-f", "-e", "trace=open,openat,openat2", "-o", trace_path, "-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        attached = tracer.stderr.readline()
        if b"attached" not in attached:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise RuntimeError(f"strace could not attach: {attached.decode(errors='replace')}")
    os.write(go_write, b"x")
    os.close(go_write)
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([read_end], [], [], max(0.0, left))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            result = ["hang", f"no answer in {timeout} s", None]
            break
        block = os.read(read_end, 1 << 16)
        if block:
            chunks.append(block)
            continue
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            result = ["crash", f"signal {signal.Signals(os.WTERMSIG(status)).name}", None]
        else:
            result = json.loads(b"".join(chunks).decode())
        break
    os.close(read_end)
    if tracer is not None:
        tracer.wait()  # ends with its last tracee, the trace file complete
        tracer.stderr.close()
        with open(trace_path, errors="replace") as fh:
            opened = outside_opens(fh.read(), path, trial_dir, allowed)
        if opened:
            result[:2] = ["outside", f"opened {opened} (then {result[0]}: {result[1]})"[:400]]
    shutil.rmtree(trial_dir, ignore_errors=True)
    return {**trial, "outcome": result[0], "detail": result[1], "peak_mib": result[2]}


# --------------------------------------------------------------------------- running in parallel

_WORKER: dict = {}


def _init_worker(stores: dict, folder: str, timeout: float, memory_mib: int, trace: bool) -> None:
    # No store is opened in a worker, so no thread exists when it forks.
    _WORKER["data"] = {}
    for name, store in stores.items():
        with open(store["path"], "rb") as fh:
            _WORKER["data"][name] = fh.read()
    _WORKER["truth"] = {name: s["truth"] for name, s in stores.items()}
    _WORKER["folder"] = tempfile.mkdtemp(dir=folder)
    _WORKER["options"] = (timeout, memory_mib, allowed_prefixes() if trace else None)


def _work(trial: dict) -> dict:
    name = trial["store"]
    return run_trial(
        trial, _WORKER["data"][name], _WORKER["truth"][name], _WORKER["folder"], *_WORKER["options"]
    )


def fuzz(
    trials: int = 2000,
    seed: int = 0,
    processes: int = 2,
    timeout: float = 20.0,
    replay: list[int] | None = None,
    progress: bool = False,
    structural: int = 0,
    memory_mib: int = 256,
    trace: bool = True,
) -> dict:
    """Run ``trials`` byte trials then ``structural`` structural ones (numbered after them)."""
    if trace and shutil.which("strace") is None:
        raise RuntimeError("strace is not installed: run with trace=False (--no-trace)")
    folder = tempfile.mkdtemp(prefix="h5store-fuzz-")
    try:
        stores = build_stores(folder)
        todo = plan(stores, trials, seed) + plan_structural(stores, structural, seed, trials)
        if replay is not None:
            todo = [todo[k] for k in replay]
        results = []
        ctx = multiprocessing.get_context("spawn")
        options = (stores, folder, timeout, memory_mib, trace)
        with ctx.Pool(processes, _init_worker, options) as pool:
            for k, result in enumerate(pool.imap_unordered(_work, todo, chunksize=4)):
                results.append(result)
                if progress and (k + 1) % 100 == 0:
                    print(f"  {k + 1}/{len(todo)}", file=sys.stderr, flush=True)
        results.sort(key=lambda r: r["trial"])
        return {
            "seed": seed,
            "trials": len(results),
            "traced": trace,
            "memory_bound_mib": memory_mib,
            "results": results,
            "h5store": h5store.__version__,
            "h5store_path": os.path.dirname(h5store.__file__),
            "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def table(report: dict, structural: bool = False, key: str = "part") -> str:
    """Outcomes by damaged part (byte trials) or by mutation or target (structural ones)."""
    rows: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    peaks: dict[str, float] = collections.defaultdict(float)
    total: collections.Counter = collections.Counter()
    for r in report["results"]:
        if (r["kind"] in STRUCTURAL) != structural:
            continue
        name = generic(r["target"]) if key == "target" else r[key]
        rows[name][r["outcome"]] += 1
        total[r["outcome"]] += 1
        peaks[name] = max(peaks[name], r.get("peak_mib") or 0)
    heading = ("mutated " + key) if structural else "damaged part"
    outcomes = OUTCOMES + (("invalid",) if total["invalid"] else ())
    lines = [
        f"| {heading} | trials | " + " | ".join(outcomes) + " | peak MiB |",
        "|---|---:|" + "---:|" * (len(outcomes) + 1),
    ]
    for name in sorted(rows):
        c = rows[name]
        counts = " | ".join(str(c[o]) for o in outcomes)
        lines.append(f"| {name} | {sum(c.values())} | {counts} | {peaks[name]:.0f} |")
    lines.append(
        f"| **all** | **{sum(total.values())}** | "
        + " | ".join(f"**{total[o]}**" for o in outcomes)
        + f" | **{max(peaks.values(), default=0):.0f}** |"
    )
    return "\n".join(lines)


def describe(r: dict) -> str:
    """One trial's mutation, enough to find it again (and replay it with --replay)."""
    if r["kind"] not in STRUCTURAL:
        return f"{r['store']} {r['part']} {r['kind']} at {r['offset']}+{r['length']}"
    extra = " ".join(
        f"{k}={r[k]!r}" for k in ("target", "attribute", "field", "id", "variant") if k in r
    )
    return f"{r['store']} {r['kind']} {extra}"


def notable(report: dict, limit: int = 40, outcomes: tuple[str, ...] | None = None) -> list[str]:
    """The trials whose outcome is in ``outcomes`` (by default, all but exact and error)."""
    out = []
    for r in report["results"]:
        if r["outcome"] not in (outcomes or set(OUTCOMES + ("invalid",)) - {"exact", "error"}):
            continue
        out.append(f"trial {r['trial']} {r['outcome']}: {describe(r)}: {r['detail']}")
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2000, help="byte trials")
    parser.add_argument("--structural", type=int, default=2000, help="structural trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per trial")
    parser.add_argument(
        "--memory", type=int, default=256, help="MiB the reads may add to the address space"
    )
    parser.add_argument("--no-trace", action="store_true", help="do not run strace")
    parser.add_argument("--replay", type=int, nargs="*", help="run only these trial numbers")
    parser.add_argument("--json", help="write every trial's outcome here")
    parser.add_argument("--limit", type=int, default=40, help="notable trials printed")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = fuzz(
        args.trials,
        args.seed,
        args.processes,
        args.timeout,
        args.replay,
        progress=True,
        structural=args.structural,
        memory_mib=args.memory,
        trace=not args.no_trace,
    )
    report["seconds"] = round(time.monotonic() - started, 1)
    report["load"] = os.getloadavg()
    print(
        f"h5store fuzz: {report['trials']} trials, seed {args.seed}, "
        f"{report['seconds']} s on {args.processes} processes, load {report['load'][0]:.1f} "
        f"(h5store from {report['h5store_path']}, h5py {report['h5py']}, HDF5 {report['hdf5']}); "
        + ("opens traced with strace" if report["traced"] else "not traced")
        + f"; address space bound +{args.memory} MiB per read\n"
    )
    print(table(report))
    print()
    print(table(report, structural=True, key="part"))
    print()
    print(table(report, structural=True, key="target"))
    print()
    for line in notable(report, args.limit):
        print(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
