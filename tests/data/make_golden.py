"""Write a golden file of the format version this h5store writes, and what a reader must find
in it.

    PYTHONPATH=. python tests/data/make_golden.py

The names carry the version (``golden-<major>.<minor>*``), and an existing golden file is never
overwritten: run at a later commit, the script adds the files of a new format version and
leaves the older ones as they are. The committed files were written by h5store at

  a3b28f7 (format 1.0): golden-1.0.*
  7dc4f43 (format 1.1, adds /source_crc32): golden-1.1.*
  2096678 (format 1.2, adds /score_crc32 and /scores @columns, NUL-terminated /labels, an
           empty /index_tail after close, the root's h5store_committed_rows): golden-1.2.*

from the same images, labels, scores and sources. Do not regenerate them to make
tests/test_golden.py pass: a failure there means today's code no longer reads what an earlier
release wrote. A new format version gets a new golden file next to these.

Files written next to this script (V is the format version):
  golden-V.h5             the store
  golden-V-expected.npz   per id: the original pixels (``original_<id>``; the "tiny" class
                          as ``tiny_ids`` and ``tiny_originals``) and, for the lossy
                          class, the pixels the writing release decoded (``decoded_<id>``);
                          the class previews (``preview_<class>``); ``index`` (what
                          ``store.index`` returned), ``scores`` and ``sources`` as stored
  golden-V-expected.json  root attributes, labels, /stacks, records of all but the middle
                          "tiny" images, stats, preview ids
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import imagecodecs
import numpy as np

import h5store
from h5store import format as fmt

HERE = Path(__file__).resolve().parent
VERSION = "{}.{}".format(*fmt.FORMAT_VERSION)
STORE = HERE / f"golden-{VERSION}.h5"
ARRAYS = HERE / f"golden-{VERSION}-expected.npz"
EXPECTED = HERE / f"golden-{VERSION}-expected.json"

#: K = 6: "unused" is declared and never predicted, so score vectors cover a label with no class.
LABELS = ["cat", "dog", "mask", "blob", "tiny", "unused"]
#: More rows than one compressed /index chunk holds, so the file has both /index and
#: /index_tail rows.
TINY_ROWS = fmt.INDEX_CHUNK_ROWS + 8


def _pattern(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Smooth gradients plus noise: compressible, but not trivially so."""
    peak = 255 if dtype == "uint8" else 65535
    h, w = shape[:2]
    base = np.add.outer(np.linspace(0, 0.6, h), np.linspace(0, 0.3, w))
    if len(shape) == 3:
        base = base[..., None] + np.linspace(0, 0.1, shape[2])
    noise = rng.normal(0, 0.03, shape)
    return (np.clip(base + noise, 0, 1) * peak).astype(dtype)


def _vectors(rng: np.random.Generator, labels: list[str]) -> np.ndarray:
    """Score vectors whose arg-max is the predicted label (as a softmax output would be)."""
    raw = rng.random((len(labels), len(LABELS))).astype(np.float32)
    for k, name in enumerate(labels):
        raw[k, LABELS.index(name)] = raw[k].max() + 1.0
    return raw / raw.sum(axis=1, keepdims=True)


def build() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(20261130)
    originals: dict[int, np.ndarray] = {}

    def remember(ids, images) -> None:
        for image_id, image in zip(np.asarray(ids).tolist(), images):
            originals[int(image_id)] = np.asarray(image)

    STORE.unlink(missing_ok=True)
    with h5store.open(STORE, "w", codec="jpeg", quality=90, labels=LABELS) as store:
        store.create_class("dog", "png")
        store.create_class("mask", "zstd")
        store.create_class("blob", "blosc2")
        store.create_class("tiny", "raw")

        # jpeg, H != W, (N, K) score vectors, sources, partly known truth
        cats = [_pattern(rng, (24, 32, 3), "uint8") for _ in range(5)]
        ids = store.add_batch(
            cats,
            labels=["cat"] * 5,
            scores=_vectors(rng, ["cat"] * 5),
            true_labels=["cat", "dog", None, "cat", -1],
            sources=[f"photos/cat{k}.jpg" for k in range(5)],
        )
        remember(ids, cats)

        # png in two stacks of one class (RGB uint8, gray uint16), caller's ids with gaps
        dogs = [_pattern(rng, (20, 20, 3), "uint8") for _ in range(3)]
        ids = store.add_batch(
            dogs,
            labels=["dog"] * 3,
            scores=_vectors(rng, ["dog"] * 3),
            true_labels=["dog", "dog", "cat"],
            ids=[1000, 1007, 1003],
            sources=["dogs/a.png", "", "dogs/c.png"],
        )
        remember(ids, dogs)
        gray = [_pattern(rng, (12, 12), "uint16") for _ in range(2)]
        ids = store.add_batch(gray, labels=[1, 1], scores=_vectors(rng, ["dog", "dog"]))
        remember(ids, gray)

        # zstd uint16 single channel and blosc2 RGB; top-1 scores only, no vectors, no sources
        masks = [_pattern(rng, (16, 16, 1), "uint16") for _ in range(3)]
        ids = store.add_batch(
            masks, labels=["mask"] * 3, scores=[0.5, 0.25, 0.75], true_labels=["mask"] * 3
        )
        remember(ids, [m[..., 0] for m in masks])  # (H, W, 1) is stored and read as (H, W)
        blobs = [_pattern(rng, (8, 10, 3), "uint8") for _ in range(3)]
        ids = store.add_batch(blobs, labels=["blob"] * 3)
        remember(ids, blobs)

        # a pre-encoded JPEG stored as-is
        encoded = h5store.get_codec("jpeg", quality=75).encode(_pattern(rng, (24, 32, 3), "uint8"))
        image_id = store.add_encoded(
            encoded, label="cat", score=0.875, true_label="cat", source="photos/encoded.jpg"
        )
        originals[image_id] = imagecodecs.jpeg8_decode(encoded)

        # raw, enough rows to fill one compressed /index chunk
        tiny = rng.integers(0, 256, (TINY_ROWS, 4, 4), dtype=np.uint8)
        ids = store.add_batch(
            tiny, labels=["tiny"] * TINY_ROWS, scores=_vectors(rng, ["tiny"] * TINY_ROWS)
        )
        remember(ids, tiny)

        deleted = sorted(originals)[1]  # the second cat
        store.delete([deleted])
    return originals, deleted


def expected_state(originals: dict[int, np.ndarray], deleted: int) -> tuple[dict, dict]:
    arrays: dict[str, np.ndarray] = {}
    with h5store.open(STORE) as store:
        # the raw class in one array (one .npy each would make the archive ten times larger)
        tiny_ids = store.query(label="tiny")
        arrays["tiny_ids"] = tiny_ids
        arrays["tiny_originals"] = np.stack([originals[i] for i in tiny_ids.tolist()])
        for image_id, image in originals.items():
            if image_id not in set(tiny_ids.tolist()):
                arrays[f"original_{image_id}"] = image
        lossy = {int(i) for i in store.query(label="cat")} | {deleted}
        for image_id in sorted(lossy - {deleted}):
            arrays[f"decoded_{image_id}"] = store[image_id]
        records = {}
        middle = set(tiny_ids[3:-2].tolist())
        described = [i for i in store.ids().tolist() if i not in middle]
        for image_id in described:
            rec = store.record(image_id)
            records[str(image_id)] = {
                "label": rec.label,
                "true_label": rec.true_label,
                "score": rec.score,
                "shape": list(rec.shape),
                "dtype": rec.dtype,
                "codec": rec.codec,
                "nbytes": rec.nbytes,
                "crc32": rec.crc32,
                "source": rec.source,
                "scores": None if rec.scores is None else rec.scores.tolist(),
                "stack": rec.stack,
                "position": rec.position,
            }
        index = store.index
        live_ids = store.ids().tolist()
        stats = store.stats()
        stats.pop("path")
        stats.pop("file_bytes")
    with h5py.File(STORE, "r") as f:
        stacks = [
            {
                name: (row[name].decode() if isinstance(row[name], bytes) else int(row[name]))
                for name in fmt.STACKS_DTYPE.names
            }
            for row in f[fmt.STACKS][()]
        ]
        previews = {}
        for name in f[fmt.PREVIEWS]:
            arrays[f"preview_{name}"] = f[fmt.PREVIEWS][name]["data"][()]
            previews[name] = fmt.preview_ids(f, name).tolist()
        root = {key: np.asarray(f.attrs[key]).tolist() for key in sorted(f.attrs)}
        root = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in root.items()}
        arrays["scores"] = f[fmt.SCORES][()]
        arrays["sources"] = f[fmt.SOURCES].asstr()[()].astype("U")
    expected = {
        "written_by": _commit(),
        "root_attrs": root,
        "labels": LABELS,
        "deleted": [deleted],
        "live_ids": live_ids,  # in insertion order
        "stacks": stacks,
        "records": records,
        "stats": stats,
        "previews": previews,
    }
    arrays["index"] = index
    return expected, arrays


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=HERE,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    written = [path.name for path in (STORE, ARRAYS, EXPECTED) if path.exists()]
    if written:
        # They are what an earlier commit wrote; rewriting them would hide a format change.
        print(f"not overwriting {', '.join(written)}", file=sys.stderr)
        return 1
    originals, deleted = build()
    expected, arrays = expected_state(originals, deleted)
    np.savez_compressed(ARRAYS, **arrays)
    EXPECTED.write_text(json.dumps(expected, indent=1) + "\n")
    for path in (STORE, ARRAYS, EXPECTED):
        print(f"{path.name}: {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
