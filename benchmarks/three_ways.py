"""The three common ways of saving classified images, one image per call, against h5store.

    python benchmarks/three_ways.py [--n 5000] [--quick] [--reps 3] [--out benchmarks/results]

Each approach writes the same ``--n`` crops of 224 px (h5store's sample set: the scikit-image
photos) with a predicted label, the true label and the top-1 score, JPEG q90, one image per
call, the way its users write it:

* Ex.1, Pillow: ``Image.save("<class>/<id>_<true>_<score>.jpg", quality=90)``; the folder is
  the predicted class, the true label and the score ride in the file name;
* Ex.2, OpenCV: ``cv2.imwrite("<id>_<label>.jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])``, then
  the label, true label and score written into the file's EXIF (ImageDescription, JSON) with
  ``piexif.insert``;
* Ex.3, a file per image (Pillow) plus one SQLAlchemy ORM row per image in SQLite
  (``classified_images(id, filepath, class_label, image_id, score, true_label)``): ``session.add``
  then ``session.commit()`` per image, and again with one commit at the end. SQLite runs with
  its defaults (rollback journal, ``synchronous=FULL``): each commit syncs to disk, as it does
  for whoever writes this recipe;
* h5store: ``store.add`` per image with the default threads, with ``h5store.set_threads(1)``,
  and with ``durability="call"`` (a commit per call); ``store.add_batch`` of ``--batch``.
  With group commit (h5store >= the release that has ``store.commit``) ``add`` returns at once
  and the store commits on a bound and at close; an h5store without it commits every call,
  and its rows say so.

Reported: images per second (wall time from an empty directory to the store closed, median
of ``--reps`` repetitions run interleaved, contenders rotated, so load drift hits all alike),
bytes allocated on disk (``du``: st_blocks x 512 of files and directories), files created, and
the time to answer "confident but wrong in class X" afterwards, each approach its natural way
(list the class folder and parse names; glob the label in the names and read each EXIF; one SQL
query; ``store.query(label=X, min_score=0.9, correct=False)``), opening included.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from _util import (
    command_line,
    fmt,
    has_group_commit,
    machine,
    markdown_table,
    median,
    rotated,
    write_results,
)

import h5store
from h5store.sample import sample_set

QUALITY = 90
MIN_SCORE = 0.9


class Data:
    """The images with their metadata, in the forms each approach's users hold them."""

    def __init__(self, n: int, size: int):
        s = sample_set(n, size, seed=0)
        self.images = s.images
        self.bgr = np.ascontiguousarray(s.images[..., ::-1])  # what OpenCV pipelines hold
        self.class_names = list(s.class_names)
        self.labels = list(s.labels)
        self.true_labels = list(s.true_labels)
        # top-1 as a Python float holding exactly the float32 h5store keeps, so every approach
        # compares the same number with MIN_SCORE
        self.scores = [float(x) for x in s.top1.astype(np.float32)]

    def __len__(self) -> int:
        return len(self.images)

    def confident_wrong(self, label: str) -> set[int]:
        return {
            i
            for i in range(len(self))
            if self.labels[i] == label
            and self.scores[i] >= MIN_SCORE
            and self.true_labels[i] != label
        }


# =========================================================================== the approaches
#
# An approach has ``name``, ``write(root, data)`` (root: a directory that does not exist yet;
# writes every image one call each and finishes, as its users' loop does) and
# ``confident_wrong(root, label) -> ids``.


class PillowFolder:
    name = "Ex.1 Pillow save, folder per class"

    def write(self, root, data):
        from PIL import Image

        for name in data.class_names:
            os.makedirs(os.path.join(root, name))
        for i, img in enumerate(data.images):
            path = os.path.join(
                root,
                data.labels[i],
                f"{i}_{data.true_labels[i]}_{data.scores[i]!r}.jpg",
            )
            Image.fromarray(img).save(path, quality=QUALITY)

    def confident_wrong(self, root, label):
        out = []
        for filename in os.listdir(os.path.join(root, label)):
            image_id, true_label, score = filename[: -len(".jpg")].split("_")
            if float(score) >= MIN_SCORE and true_label != label:
                out.append(int(image_id))
        return out


class OpenCVExif:
    name = "Ex.2 cv2.imwrite + piexif EXIF"
    needs = ("cv2", "piexif")

    def write(self, root, data):
        import cv2
        import piexif

        os.makedirs(root)
        params = [cv2.IMWRITE_JPEG_QUALITY, QUALITY]
        for i, bgr in enumerate(data.bgr):
            path = os.path.join(root, f"{i}_{data.labels[i]}.jpg")
            cv2.imwrite(path, bgr, params)
            meta = {
                "label": data.labels[i],
                "true_label": data.true_labels[i],
                "score": data.scores[i],
            }
            exif = {"0th": {piexif.ImageIFD.ImageDescription: json.dumps(meta).encode()}}
            piexif.insert(piexif.dump(exif), path)

    def confident_wrong(self, root, label):
        import piexif

        out = []
        for path in glob.glob(os.path.join(glob.escape(root), f"*_{label}.jpg")):
            exif = piexif.load(path)
            meta = json.loads(exif["0th"][piexif.ImageIFD.ImageDescription])
            if meta["score"] >= MIN_SCORE and meta["true_label"] != label:
                out.append(int(os.path.basename(path).split("_")[0]))
        return out


def _orm():
    """The SQLAlchemy model the recipe declares (built on first use: the import is optional;
    plain Column attributes, since annotations are strings under this module's future import)."""
    from sqlalchemy import Column, Float, Integer, String
    from sqlalchemy.orm import declarative_base

    Base = declarative_base()

    class ClassifiedImage(Base):
        __tablename__ = "classified_images"
        id = Column(Integer, primary_key=True)
        filepath = Column(String)
        class_label = Column(String)
        image_id = Column(Integer)
        score = Column(Float)
        true_label = Column(String)

    return Base, ClassifiedImage


class FilesSQLAlchemy:
    needs = ("sqlalchemy", "PIL")

    def __init__(self, commit_each: bool):
        self.commit_each = commit_each
        self.name = "Ex.3 file + SQLAlchemy row, " + (
            "commit per image" if commit_each else "one commit at the end"
        )

    def write(self, root, data):
        from PIL import Image
        from sqlalchemy import create_engine
        from sqlalchemy.orm import Session

        Base, ClassifiedImage = _orm()
        for name in data.class_names:
            os.makedirs(os.path.join(root, name))
        engine = create_engine(f"sqlite:///{os.path.join(root, 'images.db')}")
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            for i, img in enumerate(data.images):
                rel = f"{data.labels[i]}/{i}.jpg"
                Image.fromarray(img).save(os.path.join(root, rel), quality=QUALITY)
                session.add(
                    ClassifiedImage(
                        filepath=rel,
                        class_label=data.labels[i],
                        image_id=i,
                        score=data.scores[i],
                        true_label=data.true_labels[i],
                    )
                )
                if self.commit_each:
                    session.commit()
            session.commit()
        engine.dispose()

    def confident_wrong(self, root, label):
        from sqlalchemy import create_engine, select
        from sqlalchemy.orm import Session

        _, ClassifiedImage = _orm()
        engine = create_engine(f"sqlite:///{os.path.join(root, 'images.db')}")
        with Session(engine) as session:
            ids = session.scalars(
                select(ClassifiedImage.image_id).where(
                    ClassifiedImage.class_label == label,
                    ClassifiedImage.score >= MIN_SCORE,
                    ClassifiedImage.true_label != ClassifiedImage.class_label,
                )
            ).all()
        engine.dispose()
        return ids


class H5Store:
    """h5store, one ``add`` per image (or ``add_batch`` of ``batch``)."""

    def __init__(self, name, *, threads=None, durability=None, batch=None, target=None):
        self.name = name
        self.target = target  # issue 20's target, as a multiple of the fastest common way
        self.threads = threads
        self.durability = durability
        self.batch = batch

    def write(self, root, data):
        os.makedirs(root)
        path = os.path.join(root, "images.h5")
        kwargs = {} if self.durability is None else {"durability": self.durability}
        default_threads = h5store.get_threads()
        if self.threads is not None:
            h5store.set_threads(self.threads)
        try:
            with h5store.open(
                path, "w", codec="jpeg", quality=QUALITY, labels=data.class_names, **kwargs
            ) as store:
                if self.batch is None:
                    for i, img in enumerate(data.images):
                        store.add(
                            img,
                            label=data.labels[i],
                            score=data.scores[i],
                            true_label=data.true_labels[i],
                        )
                else:
                    for k in range(0, len(data), self.batch):
                        s = slice(k, k + self.batch)
                        store.add_batch(
                            data.images[s],
                            labels=data.labels[s],
                            scores=data.scores[s],
                            true_labels=data.true_labels[s],
                        )
        finally:
            h5store.set_threads(default_threads)

    def confident_wrong(self, root, label):
        with h5store.open(os.path.join(root, "images.h5")) as store:
            return store.query(label=label, min_score=MIN_SCORE, correct=False).tolist()


def h5store_approaches(group: bool, batch: int) -> list[H5Store]:
    threads = h5store.get_threads()
    if group:
        return [
            H5Store(f"h5store add per image, group commit, {threads} threads", target=1.6),
            H5Store("h5store add per image, group commit, set_threads(1)", threads=1, target=1.0),
            H5Store(
                f"h5store add per image, durability='call', {threads} threads",
                durability="call",
            ),
            H5Store(f"h5store add_batch of {batch}, group commit, {threads} threads", batch=batch),
        ]
    # This h5store commits every call: the rows say so, and there is no third mode to time.
    return [
        H5Store(f"h5store add per image, commit per call, {threads} threads", target=1.6),
        H5Store("h5store add per image, commit per call, set_threads(1)", threads=1, target=1.0),
        H5Store(f"h5store add_batch of {batch}, commit per call, {threads} threads", batch=batch),
    ]


def installed(approach) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in getattr(approach, "needs", ()))


# =========================================================================== measuring


def du(path: str) -> tuple[int, int]:
    """(files, bytes allocated) of a directory tree, directories included, as ``du`` counts."""
    files = 0
    allocated = os.stat(path).st_blocks * 512
    for top, dirs, names in os.walk(path):
        for d in dirs:
            allocated += os.stat(os.path.join(top, d)).st_blocks * 512
        for name in names:
            allocated += os.stat(os.path.join(top, name)).st_blocks * 512
            files += 1
    return files, allocated


def measure(approaches, data, label, tmp, reps) -> dict:
    expected = data.confident_wrong(label)
    out = {
        a.name: {
            "seconds": [],
            "cpu_seconds": [],
            "query_seconds": [],
            "target": getattr(a, "target", None),
        }
        for a in approaches
    }
    for rep in range(reps):
        for a in rotated(approaches, rep):
            root = os.path.join(tmp, "store")
            shutil.rmtree(root, ignore_errors=True)
            start, cpu = time.perf_counter(), time.process_time()
            a.write(root, data)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            start = time.perf_counter()
            found = a.confident_wrong(root, label)
            query = time.perf_counter() - start
            if set(found) != expected or len(found) != len(expected):
                raise AssertionError(
                    f"{a.name}: 'confident but wrong in {label}' gave {len(found)} ids, "
                    f"expected {len(expected)}"
                )
            m = out[a.name]
            m["seconds"].append(elapsed)
            m["cpu_seconds"].append(cpu)
            m["query_seconds"].append(query)
            m["files"], m["allocated"] = du(root)
            shutil.rmtree(root)
            print(
                f"  rep {rep + 1}/{reps}: {a.name}: {len(data) / elapsed:,.0f} img/s "
                f"(load {os.getloadavg()[0]:.1f})",
                file=sys.stderr,
            )
    for m in out.values():
        m["img_per_s"] = len(data) / median(m["seconds"])
        m["cpu_us_per_image"] = 1e6 * median(m["cpu_seconds"]) / len(data)
        m["query_ms"] = 1e3 * median(m["query_seconds"])
    out["_hits"] = len(expected)
    return out


def report(results: dict) -> str:
    m = results["machine"]
    r = results["approaches"]
    names = [k for k in r if not k.startswith("_")]
    folders = [k for k in names if k.startswith("Ex.")]
    fastest = max(folders, key=lambda k: r[k]["img_per_s"]) if folders else None
    rows = []
    for name in names:
        x = r[name]
        rows.append(
            [
                name,
                fmt(x["img_per_s"]),
                fmt(x["img_per_s"] / r[fastest]["img_per_s"]) if fastest else "-",
                f">= {x['target']}" if x.get("target") else "",
                fmt(x["cpu_us_per_image"], 0),
                f"{x['allocated'] / 1e6:.1f}",
                str(x["files"]),
                fmt(x["query_ms"], 1),
            ]
        )
    mode = (
        "group commit (h5store defers commits; `store.commit()` exists)"
        if results["group_commit"]
        else "no group commit in this h5store: every `add`/`add_batch` call commits on its own"
    )
    return "\n".join(
        [
            "# Three common ways of saving classified images, against h5store",
            "",
            f"Produced by `{results['command']}` on {m['date']} ({m['cpus']} cores, load average "
            f"{m['load_average'][0]:.1f} at start and {results['load_average_end'][0]:.1f} at "
            f"end; h5store {m['h5store_commit']}"
            f"{' + uncommitted changes' if m['h5store_dirty'] else ''}, {mode}).",
            "",
            f"{results['n']:,} crops of 224 px (scikit-image photos), JPEG q90, one image per call "
            "unless the row says batch; wall time from an empty directory to everything closed, "
            f"median of {results['reps']} interleaved repetitions (order rotated). "
            f"'x fastest Ex.': rate over the fastest of the three common ways ({fastest}). "
            "CPU per image: the process's CPU time (all threads) over the images, which time "
            "slices taken by other jobs on a shared machine do not inflate. "
            "On disk: allocated bytes of files and directories, as `du` counts. Query: ids "
            f"of images predicted {results['label']!r} with score >= {MIN_SCORE} whose true "
            f"label differs ({r['_hits']} hits), each approach its own way, opening included.",
            "",
            markdown_table(
                [
                    "approach",
                    "img/s",
                    "x fastest Ex.",
                    "target",
                    "CPU per image (us)",
                    "on disk (MB)",
                    "files",
                    "confident but wrong (ms)",
                ],
                rows,
            ),
        ]
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, help="images (default 5000; --quick 500)")
    parser.add_argument("--quick", action="store_true", help="500 images")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--batch", type=int, default=256, help="add_batch size")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    n = args.n or (500 if args.quick else 5000)
    results = {"machine": machine(), "command": command_line(), "n": n, "reps": args.reps}
    print(f"making {n} images", file=sys.stderr)
    data = Data(n, 224)
    # the class with the most confident mistakes, so the query has answers to find
    label = max(data.class_names, key=lambda c: len(data.confident_wrong(c)))
    results["label"] = label
    results["group_commit"] = group = has_group_commit()
    approaches = [
        a
        for a in [PillowFolder(), OpenCVExif(), FilesSQLAlchemy(True), FilesSQLAlchemy(False)]
        if installed(a)
    ]
    approaches += h5store_approaches(group, args.batch)
    tmp = tempfile.mkdtemp(prefix="h5store-three-ways-", dir="/tmp")
    try:
        results["approaches"] = measure(approaches, data, label, tmp, args.reps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_average_end"] = os.getloadavg()
    markdown = report(results)
    write_results(args.out, "three_ways", markdown, results)
    print(markdown)


if __name__ == "__main__":
    main()
