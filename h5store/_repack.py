"""Rewrite a store into a new file: without its deleted images, and optionally converting
classes to another codec (the codec ``h5store bench`` recommends).

Classes whose codec stays the same are copied chunk by chunk as stored (no decode, no
re-encode, CRC-32 checked); only the classes that change are decoded and encoded again. Both
kinds of payload enter the new file through the one commit protocol
(:meth:`h5store._ingest.Ingest.add_stored`). Ids, labels, true labels, scores, score
vectors and sources are kept, in the order the images were added. The new store is written
under a temporary name beside ``dst`` and renamed at the end: ``dst`` is either the complete
new store or untouched.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm  # text on stderr: tqdm.auto wants ipywidgets in notebooks

from ._catalog import Geometry
from ._ingest import Ingest
from ._parallel import thread_map
from ._remote import is_url
from .api import open as open_store
from .codecs import Codec, get_codec
from .errors import CodecError, InvalidInputError, TargetExistsError
from .format import crc32
from .store import ImageStore

ClassSpec = str | Codec | tuple[str, int]


class GenerationLossWarning(UserWarning):
    """A lossy class is re-encoded with another lossy setting: the new file's images carry
    both codecs' errors (decoded lossy pixels compressed again), not just the new one's."""


@dataclass
class RepackReport:
    """What :func:`repack` did."""

    src: str
    dst: str
    images: int
    dropped_deleted: int
    copied: int  # payloads copied as stored
    reencoded: int  # payloads decoded and encoded with a new codec
    src_bytes: int
    dst_bytes: int
    #: per class: (codec before, codec after); equal codecs mean a raw copy
    classes: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __str__(self) -> str:
        conversions: dict[tuple[str, str], list[str]] = {}
        for label, (a, b) in self.classes.items():
            if a != b:
                conversions.setdefault((a, b), []).append(label)
        changed = [
            f"{a} -> {b} ("
            + (", ".join(labels) if len(labels) <= 3 else f"{len(labels)} classes")
            + ")"
            for (a, b), labels in conversions.items()
        ]
        return (
            f"{self.src} -> {self.dst}: {self.images} images ({self.copied} copied as "
            f"stored, {self.reencoded} re-encoded, {self.dropped_deleted} deleted dropped); "
            f"{self.src_bytes:,} -> {self.dst_bytes:,} bytes "
            f"(x{self.dst_bytes / max(self.src_bytes, 1):.3f})"
            + ("" if not changed else "; " + "; ".join(changed))
        )


def describe_codec(codec: Codec) -> str:
    """``jpeg quality=90``: the quality, and the settings that differ from the defaults."""
    defaults = get_codec(codec.codec_id).get_config()
    shown = [
        f"{k}={v}"
        for k, v in codec.get_config().items()
        if k != "id" and (k == "quality" or defaults.get(k) != v)
    ]
    return " ".join([codec.codec_id, *shown])


def _as_codec(spec: Any, what: str) -> Codec:
    if isinstance(spec, Codec):
        return spec
    if isinstance(spec, str):
        return get_codec(spec)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        return get_codec(spec[0], quality=spec[1])
    raise InvalidInputError(
        f"{what} must be a codec name, a Codec or (name, quality), got {spec!r}"
    )


def plan_codecs(
    store: ImageStore,
    codec: str | Codec | None,
    quality: int | None,
    classes: Mapping[str, ClassSpec] | None,
    codec_options: dict[str, Any],
) -> dict[str, tuple[Codec, Codec]]:
    """(current codec, target codec) of every class holding live images."""
    labels = store.labels
    classes = dict(classes or {})
    for label in classes:
        if label not in labels:
            near = difflib.get_close_matches(str(label), labels, n=1)
            raise InvalidInputError(
                f"classes names {label!r}, which is not a class of {store.path}"
                + (f" (did you mean {near[0]!r}?)" if near else "")
            )
    if codec is not None:
        default = get_codec(codec, quality=quality, **codec_options)
    elif codec_options:
        raise InvalidInputError("codec options need a codec (codec='...')")
    else:
        default = None
    live = store.index
    live = live[live["deleted"] == 0]
    plan = {}
    for k in np.unique(live["label"]).tolist():
        label = labels[k]
        current = store.codec_of(label)
        if label in classes:
            target = _as_codec(classes[label], f"classes[{label!r}]")
        elif default is not None:
            target = default
        elif quality is not None:
            target = get_codec(current.codec_id, quality=quality)
        else:
            target = current
        plan[label] = (current, target)
    return plan


def _check_conversions(store: ImageStore, plan: dict[str, tuple[Codec, Codec]]) -> None:
    """Every image of every converted class must fit its new codec: refuse before writing."""
    index = store.index
    live = index[index["deleted"] == 0]
    label_ids = {name: k for k, name in enumerate(store.labels)}
    for label, (current, target) in plan.items():
        if current == target:
            continue
        rows = live[live["label"] == label_ids[label]]
        kinds = {
            (int(r["height"]), int(r["width"]), int(r["channels"]), r["dtype"].decode())
            for r in rows
        }
        for height, width, channels, dtype in sorted(kinds):
            try:
                target.check_image(height, width, channels, np.dtype(dtype))
            except CodecError as exc:
                raise CodecError(
                    f"class {label!r} cannot be converted to {describe_codec(target)}: its "
                    f"{height}x{width}x{channels} {dtype} images do not fit ({exc}); nothing "
                    "was written"
                ) from None


def repack(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    codec: str | Codec | None = None,
    quality: int | None = None,
    classes: Mapping[str, ClassSpec] | None = None,
    overwrite: bool = False,
    batch_size: int = 512,
    progress: bool = True,
    **codec_options: Any,
) -> RepackReport:
    """Write ``src``'s live images into a new store ``dst``, dropping deleted ones.

    Classes whose codec does not change are copied as stored (no decode); the rest are
    decoded and encoded again. Ids, labels, true labels, scores, score vectors and sources are
    kept, in the order they were added. The new file is written under a temporary name beside
    ``dst`` and renamed at the end.

    Parameters
    ----------
    src
        The store to read (only read).
    dst
        The new store. It must not exist, unless ``overwrite``.
    codec
        Convert every class to this codec (a name or a configured Codec), with ``quality``
        and ``codec_options``. Without ``codec``, ``quality`` or ``classes`` every payload is
        copied as stored.
    quality
        Alone: change the quality of each class's own codec (lossy codecs, 1-100).
    classes
        Maps a label to its own target: a codec name, a Codec, or ``(name, quality)``. Wins
        over ``codec`` and ``quality``.
    overwrite
        Replace an existing ``dst``.
    batch_size
        Images decoded and encoded at a time (bounds memory).
    progress
        Show a progress bar on stderr.
    **codec_options
        Settings of ``codec`` (``lossless=True``, ``effort=1``, ...).

    Returns
    -------
    RepackReport
        The images copied as stored and re-encoded, and the sizes before and after.

    Raises
    ------
    TargetExistsError
        ``dst`` exists and ``overwrite`` is false.
    CodecError
        A conversion a codec cannot hold (uint16 into JPEG), an unknown codec or setting;
        raised before anything is written.
    InvalidInputError
        ``dst`` is ``src`` itself, or ``batch_size`` is not a positive integer.

    Warns
    -----
    GenerationLossWarning
        A lossy class is re-encoded with a lossy codec: the new images carry both codecs'
        errors.
    """
    src_path, dst_path = os.fspath(src), os.fspath(dst)
    # (a source read by URL is never the local destination)
    if not is_url(src_path) and os.path.exists(dst_path) and os.path.samefile(src_path, dst_path):
        raise InvalidInputError(f"repack writes a new file: {dst_path} is {src_path} itself")
    if os.path.lexists(dst_path) and not overwrite:
        raise TargetExistsError(
            f"{dst_path} exists; pass overwrite=True (--overwrite) to replace it"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    with open_store(src_path) as source:
        plan = plan_codecs(source, codec, quality, classes, codec_options)
        _check_conversions(source, plan)
        lossy_again = sorted(
            label for label, (a, b) in plan.items() if a != b and not a.lossless and not b.lossless
        )
        if lossy_again:
            warnings.warn(
                f"re-encoding lossy classes with another lossy codec ({', '.join(lossy_again)}):"
                " generation loss, the new images carry both codecs' errors",
                GenerationLossWarning,
                stacklevel=2,
            )
        folder = os.path.dirname(os.path.abspath(dst_path))
        tmp = os.path.join(folder, f".{os.path.basename(dst_path)}.repack-{os.getpid()}.tmp")
        try:
            counts = _copy(source, tmp, plan, batch_size, progress)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        dropped = int((source.index["deleted"] != 0).sum())
        src_bytes = source.stats()["file_bytes"]
    os.replace(tmp, dst_path)
    return RepackReport(
        src=src_path,
        dst=dst_path,
        images=counts[0] + counts[1],
        dropped_deleted=dropped,
        copied=counts[0],
        reencoded=counts[1],
        src_bytes=src_bytes,
        dst_bytes=os.path.getsize(dst_path),
        classes={label: (describe_codec(a), describe_codec(b)) for label, (a, b) in plan.items()},
    )


def _copy(
    source: ImageStore,
    tmp: str,
    plan: dict[str, tuple[Codec, Codec]],
    batch_size: int,
    progress: bool,
) -> tuple[int, int]:
    labels = list(source.labels)
    index = source.index
    live = index[index["deleted"] == 0]
    vectors = source.scores
    vector_width = 0 if vectors is None else vectors.shape[1]
    sources = source.sources
    copied = reencoded = 0
    with open_store(tmp, "x") as out:
        writer = out._check_writable_ingest()
        created: set[str] = set()
        bar = tqdm(total=len(live), desc="repack", unit="img", disable=not progress)
        for start in range(0, len(live), batch_size):
            stop = min(start + batch_size, len(live))
            kinds = [
                "vector"
                if vectors is not None and not np.isnan(vectors[k]).all()
                else "none"
                if np.isnan(live["score"][k])
                else "top1"
                for k in range(start, stop)
            ]
            # Runs of one kind of score, in order (a batch has one kind). Labels are declared
            # in the source's order just before a run needs them, so every label keeps its id
            # and score vectors meet the labels they were written over.
            run_start = start
            for k in range(start, stop + 1):
                if k < stop and kinds[k - start] == kinds[run_start - start]:
                    continue
                members = list(range(run_start, k))
                rows = live[members]
                used = max(int(rows["label"].max()), int(rows["true_label"].max()))
                if kinds[run_start - start] == "vector":  # vectors need all of their labels
                    used = max(used, vector_width - 1)
                missing = [name for name in labels[: used + 1] if name not in out.labels]
                if missing:
                    out.add_labels(missing)
                for name in dict.fromkeys(labels[j] for j in rows["label"].tolist()):
                    if name not in created:
                        out.create_class(name, plan[name][1])
                        created.add(name)
                c, r = _commit(
                    source,
                    writer,
                    live,
                    members,
                    labels,
                    plan,
                    vectors,
                    sources,
                    kinds[run_start - start],
                )
                copied, reencoded = copied + c, reencoded + r
                run_start = k
            bar.update(stop - start)
        bar.close()
        missing = [name for name in labels if name not in out.labels]
        if missing:  # labels no live image uses keep their place too
            out.add_labels(missing)
    return copied, reencoded


def _commit(
    source: ImageStore,
    writer: Ingest,
    live: np.ndarray,
    members: list[int],
    labels: list[str],
    plan: dict[str, tuple[Codec, Codec]],
    vectors: np.ndarray | None,
    sources: list[str | None],
    kind: str,
) -> tuple[int, int]:
    rows = live[members]
    ids = rows["id"].astype(np.int64)
    names = [labels[k] for k in rows["label"].tolist()]
    convert = [plan[name][0] != plan[name][1] for name in names]
    payloads: list[bytes] = [b""] * len(members)
    crcs = rows["crc32"].astype(np.int64).tolist()
    codecs = [plan[name][1] if change else plan[name][0] for name, change in zip(names, convert)]
    for k, change in enumerate(convert):
        if not change:
            payloads[k] = source.get_encoded(int(ids[k]))
    again = [k for k, change in enumerate(convert) if change]
    if again:
        images = source.get_batch(ids[again].tolist(), channel_order="rgb")
        encoded = thread_map(lambda j: codecs[again[j]].encode(images[j]), range(len(again)))
        for k, payload in zip(again, encoded):
            payloads[k], crcs[k] = payload, crc32(payload)
    truth = rows["true_label"].astype(np.int64)
    scores = (
        vectors[members]
        if kind == "vector" and vectors is not None  # ("vector": the source has /scores)
        else rows["score"].astype(np.float32)
        if kind == "top1"
        else None
    )
    writer.add_stored(
        payloads,
        [
            Geometry(int(r["height"]), int(r["width"]), int(r["channels"]), r["dtype"].decode())
            for r in rows
        ],
        codecs,
        crcs=crcs,
        labels=names,
        true_labels=[labels[t] if t >= 0 else None for t in truth.tolist()],
        scores=scores,
        ids=ids,
        sources=None if not any(sources[k] for k in members) else [sources[k] for k in members],
    )
    return len(members) - len(again), len(again)
