"""The way in: every image handed to a store is validated here, waits here in the pending
group, and leaves here for the file in one call of ``StoreWriter.commit`` (``_write.py``).

An image's whole path, one direction::

    ImageStore.add / add_batch / add_encoded / add_encoded_batch     (store.py: arguments only)
    -> Ingest.add_*: validate against the catalogue, the index and what is pending; encode
       on the thread pool (a batch: while the group before it is written, and before the call
       returns; one image: a copy, encoded with the next few); return the ids  (this module)
    -> the pending group, until a bound, commit(), flush() or close()  (this module)
    -> StoreWriter.commit: new objects, chunks, one flush, index rows  (_write.py)
    -> WriterFile: the commit protocol on disk                         (_file.py)

Group commit, as databases do it: a durable commit costs two flushes (about 650 us here), which
one image per call cannot afford (1,400 img/s against 45,000 for batches of 1,024). So calls
return at once and images become durable together: when :meth:`Ingest.commit` returns, or when
what was pending before a call reaches a bound (:class:`GroupCommit`). The group is one batch to
the commit protocol: it lands whole or leaves no trace, so a user's batch is never split.
Validation happens in the call, so bad input raises there and leaves nothing pending.

Merge and repack enter through :meth:`Ingest.add_stored`, which commits at once (their own
all-or-nothing needs each call durable before the next source is read).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _inputs
from . import format as fmt
from ._catalog import Catalog, Geometry, StackKey, did_you_mean
from ._index import Index
from ._parallel import InOrder, get_threads, submit
from ._previews import PreviewJob
from ._write import Batch, StoreWriter
from .codecs import Codec, ImageInfo
from .errors import (
    CodecError,
    DamagedImageError,
    DuplicateIdError,
    InvalidInputError,
)
from .format import crc32

#: numpy's dtype.name is slow (~1 us); images are validated to be one of these.
_DTYPE_NAMES = {np.dtype(name): name for name in fmt.PIXEL_DTYPES}

DURABILITY_MODES = ("group", "call")


@dataclass(frozen=True)
class GroupCommit:
    """When pending images are committed without being asked (``durability="group"``).

    Checked at every add call against what was pending *before* it, so the images of the call
    itself keep encoding on the pool while the earlier ones are written: a group reaches the
    file when it holds ``images`` images or ``nbytes`` bytes (payloads, or pixels while they
    wait to be encoded), or when its oldest image has waited ``seconds``. A store that stops
    being called keeps its pending images until ``commit()``, ``flush()`` or ``close()``.

    Defaults, measured (benchmarks/ingest.py): at 1,024 images a group commit costs under 1 %
    of the images' own writes at 224 px; 64 MiB bounds the memory the pending pixels and
    payloads hold; one second bounds what a crash can lose in a slow inference loop.

    Parameters
    ----------
    images
        Commit when this many images are pending.
    nbytes
        Commit when the pending payloads (or pixels waiting to be encoded) reach this size.
    seconds
        Commit when the oldest pending image has waited this long.

    Raises
    ------
    InvalidInputError
        A bound that is not a positive number (``images`` and ``nbytes``: integers).
    """

    images: int = 1024
    nbytes: int = 64 << 20
    seconds: float = 1.0

    def __post_init__(self) -> None:
        for name in ("images", "nbytes"):
            value = getattr(self, name)
            if not _inputs.is_integer(value) or value < 1:
                raise InvalidInputError(f"group commit {name} must be a positive integer")
        if not isinstance(self.seconds, (int, float)) or not self.seconds > 0:
            raise InvalidInputError("group commit seconds must be a positive number")


def check_durability(durability: str) -> None:
    if durability not in DURABILITY_MODES:
        raise InvalidInputError(
            f"durability must be one of {list(DURABILITY_MODES)}, got {durability!r}"
        )


# --------------------------------------------------------------------------- validation


def _label_resolver(
    catalog: Catalog, new: dict[str, int], closed: str | None = None
) -> Callable[[Any, str], int]:
    """Label names or ids -> class ids; unknown names get provisional ids in ``new``, unless
    the label set is ``closed`` (the reason why), when they are an error."""
    known = catalog.labels

    def resolve(value: Any, where: str) -> int:
        if _inputs.is_integer(value):
            if 0 <= value < len(known):
                return int(value)
            raise InvalidInputError(
                f"{where} is class id {value}, but the store has {len(known)} labels "
                "(declare names with add_labels)"
            )
        label = _inputs.check_label(value, where)
        lid = catalog.label_ids.get(label)
        if lid is None:
            if closed is not None:
                raise InvalidInputError(unknown_label_message(label, where, known, closed))
            lid = new.setdefault(label, len(known) + len(new))
        return lid

    return resolve


def unknown_label_message(label: str, where: str, known: Sequence[str], closed: str) -> str:
    hint = did_you_mean(label, known)
    return (
        f"{where} is {label!r}, which is not one of the store's {len(known)} labels "
        f"({closed}); {hint}to add a class, declare it first: "
        f"store.add_labels([{label!r}])"
    )


def _resolve_all(
    values: list, resolve: Callable[[Any, str], int], what: str, unknown: Any = ...
) -> np.ndarray:
    """Class ids of a batch's labels (``unknown`` values give NO_TRUE_LABEL). A batch repeats a
    few labels many times: each distinct one is resolved once."""
    out = np.empty(len(values), dtype=np.int64)
    kinds = set(map(type, values))
    if kinds <= {str, int, type(None)}:
        # No bools or floats, so dict keys cannot confuse 1 with True or 1.0.
        ids = {}
        for value in dict.fromkeys(values):
            if value is None or (unknown is not ... and value == unknown):
                if unknown is ...:
                    _inputs.check_label(value, f"{what} {values.index(value)}")
                ids[value] = fmt.NO_TRUE_LABEL
            else:
                ids[value] = resolve(value, f"{what} {values.index(value)}")
        out[:] = list(map(ids.__getitem__, values))
        return out
    for k, value in enumerate(values):
        if value is None or (unknown is not ... and _inputs.is_integer(value) and value == unknown):
            if unknown is ...:
                _inputs.check_label(value, f"{what} {k}")
            out[k] = fmt.NO_TRUE_LABEL
        else:
            out[k] = resolve(value, f"{what} {k}")
    return out


def _closed_reason(labels_declared: bool, score_width: int | None) -> str | None:
    if labels_declared:
        return "declared with labels= or add_labels"
    if score_width is not None:
        return "its score vectors cover exactly those"
    return None


def _check_vectors(
    k_classes: int,
    n_labels: int,
    new: dict[str, int],
    label_ids: np.ndarray,
    score_width: int | None,
    vectors_cover_first_labels: bool,
) -> None:
    """Can (N, K) score vectors stand beside these labels? (One rule for every entry.)"""
    if new and k_classes == n_labels:
        raise InvalidInputError(
            f"score vectors have {k_classes} entries, one per label of the store, but the "
            f"batch also names labels the store does not have: {sorted(new)}; vectors "
            "cannot cover a class added by the batch (declare every class first with "
            "add_labels, or open(..., labels=names))"
        )
    if vectors_cover_first_labels:
        beyond = np.flatnonzero(label_ids >= k_classes)
        if len(beyond):
            raise InvalidInputError(
                f"image {int(beyond[0])}'s label has no entry in the {k_classes} scores"
            )
    elif k_classes != n_labels or new:
        raise InvalidInputError(
            f"score vectors have {k_classes} entries but the store has "
            f"{n_labels + len(new)} labels; declare the class names first "
            "(add_labels, or open(..., labels=names))"
        )
    if score_width is not None and score_width != k_classes:
        raise InvalidInputError(
            f"the store holds score vectors of length {score_width}, not {k_classes}"
        )


def _check_argmax(vectors: np.ndarray, label_ids: np.ndarray, labels: Sequence[str]) -> None:
    """The label is the model's prediction and the vector its probabilities, so the label must
    score highest (a tie is fine): a label that does not is almost always a bug (true-class
    vectors, shuffled rows, a label of another model). (One rule for both add paths.)"""
    rows = np.arange(len(label_ids))
    best = vectors.argmax(axis=1)
    wrong = np.flatnonzero(vectors[rows, label_ids] < vectors[rows, best])
    if not len(wrong):
        return
    k = int(wrong[0])
    mine, top = labels[int(label_ids[k])], labels[int(best[k])]
    raise InvalidInputError(
        f"image {k}'s label {mine!r} is not the highest of its score vector ({top!r} has "
        f"{float(vectors[k, best[k]]):.4g}, {mine!r} {float(vectors[k, label_ids[k]]):.4g}); "
        "the label is the prediction and the vector the model's probabilities: pass "
        "labels=scores.argmax(1), or open(..., argmax_labels=False) if your decision rule "
        "is not the argmax (a threshold)"
    )


def stack_keys(
    label_ids: np.ndarray, geometries: Sequence[Geometry]
) -> tuple[list[StackKey], np.ndarray]:
    """The distinct stacks of a batch and each image's position among them."""
    n = len(label_ids)
    # Images of one geometry usually share one Geometry object: number the distinct ones, then
    # the distinct (label, geometry) pairs, without a Python object per image.
    geometry_numbers: dict[Geometry, int] = {}
    if geometries.count(geometries[0]) == n:  # one object for all: an identity count, in C
        geometry_numbers[geometries[0]] = 0
        numbered = np.zeros(n, dtype=np.int64)
    else:
        numbered = np.fromiter(
            (geometry_numbers.setdefault(g, len(geometry_numbers)) for g in geometries),
            np.int64,
            n,
        )
    pairs, key_of_image = np.unique(
        label_ids.astype(np.int64) * len(geometry_numbers) + numbered, return_inverse=True
    )
    distinct = list(geometry_numbers)
    keys = [
        StackKey(int(p) // len(distinct), *distinct[int(p) % len(distinct)]) for p in pairs.tolist()
    ]
    return keys, key_of_image.reshape(-1)


def prepare_batch(
    catalog: Catalog,
    index: Index,
    default_codec: Codec,
    n: int,
    labels: Any,
    scores: Any,
    true_labels: Any,
    ids: Any,
    sources: Any,
    *,
    geometries: Sequence[Geometry],
    score_width: int | None,
    labels_declared: bool = False,
    pending_ids: set[int] | frozenset[int] = frozenset(),
    next_id: int = 0,
    vectors_cover_first_labels: bool = False,
    argmax_labels: bool = False,
) -> Batch:
    """Validate a batch against the store's catalogue, its index and the ids pending, and
    decide every image's class, stack and codec. Touches no file and no state: a rejected batch
    leaves the store as it was. New labels come back in ``batch.new_labels``.

    ``score_width``: K of the (rows, K) score vectors the store holds or has pending, None if
    none. ``vectors_cover_first_labels``: (N, K) vectors may cover only the first K labels
    (merge: a shard may have declared labels after its vectors); each image's label must be one
    of them. The label set is closed (an unknown label is an error, not a new class) when the
    labels were declared in this session (``labels_declared``) or the store holds score
    vectors, whose columns are the labels. ``next_id``: the first automatic id.
    ``argmax_labels``: each label must score highest in its vector (:func:`_check_argmax`).
    """
    if n == 0:
        raise InvalidInputError("the batch is empty")
    new: dict[str, int] = {}
    resolve = _label_resolver(catalog, new, _closed_reason(labels_declared, score_width))
    label_ids = _resolve_all(
        _inputs.as_sequence(labels, n, "labels"), resolve, "label of image"
    ).astype(np.uint32)
    true_ids = np.full(n, fmt.NO_TRUE_LABEL, dtype=np.int32)
    if true_labels is not None:
        true_ids[:] = _resolve_all(
            _inputs.as_sequence(true_labels, n, "true_labels"),
            resolve,
            "true label of image",
            unknown=-1,
        )
    arr = _inputs.as_scores(scores, n)
    vectors = None
    top1 = np.full(n, np.nan, dtype=np.float32)
    if arr is not None and arr.ndim == 2:
        _check_vectors(
            arr.shape[1],
            len(catalog.labels),
            new,
            label_ids,
            score_width,
            vectors_cover_first_labels,
        )
        if argmax_labels:
            _check_argmax(arr, label_ids, catalog.labels)
        vectors = arr
        top1 = arr[np.arange(n), label_ids]
    elif arr is not None:
        top1 = arr
    id_arr = _inputs.as_ids(ids, n)
    if id_arr is None:
        start = max(index.next_id(), next_id)
        id_arr = np.arange(start, start + n, dtype=np.int64)
    else:
        taken = index.duplicates_of(id_arr).tolist()
        if not taken and pending_ids:
            taken = [i for i in id_arr.tolist() if i in pending_ids]
        if taken:
            raise DuplicateIdError(
                f"id {int(taken[0])} is already used in the store (ids are never reused)"
            )
    source_list = _inputs.as_sources(sources, n)
    keys, key_of_image = stack_keys(label_ids, geometries)
    batch = Batch(
        label_ids, true_ids, top1, vectors, id_arr, source_list, keys, key_of_image, list(new)
    )
    batch.codecs = _codecs_for(batch, catalog, default_codec)
    return batch


def _codecs_for(batch: Batch, catalog: Catalog, default_codec: Codec) -> list[Codec]:
    """The codec of every stack of the batch: can that class's codec hold such images?"""
    codecs = []
    for number, key in enumerate(batch.keys):
        label = batch.label_name(key.label, catalog.labels)
        codec = catalog.class_codec(label) or default_codec
        try:
            codec.check_image(key.height, key.width, key.channels, np.dtype(key.dtype))
        except CodecError as exc:
            k = int(np.flatnonzero(batch.key_of_image == number)[0])
            raise CodecError(f"image {k} (class {label!r}): {exc}") from None
        codecs.append(codec)
    return codecs


def _as_payload(k: int, item: object) -> bytes:
    if not isinstance(item, (bytes, bytearray, memoryview)):
        raise InvalidInputError(f"encoded image {k} is {type(item).__name__}, not bytes")
    return bytes(item)


def _encode_with_crc(codec: Codec, image: np.ndarray) -> tuple[bytes, int]:
    payload = codec.encode(image)
    return payload, crc32(payload)


def _encode_image(codec: Codec, image: np.ndarray, k: int) -> tuple[bytes, int]:
    try:
        return _encode_with_crc(codec, image)
    except CodecError as exc:
        raise CodecError(f"image {k}: {exc}") from None


def _geometries(images: list[np.ndarray]) -> list[Geometry]:
    """Each image's Geometry, one object per distinct (shape, dtype): a batch of one shape
    shares one, which keeps :func:`stack_keys` free of Python steps per image."""
    made: dict[tuple, Geometry] = {}
    out = []
    for a in images:
        key = (a.shape, a.dtype)
        geometry = made.get(key)
        if geometry is None:
            shape = a.shape
            geometry = made[key] = Geometry(
                shape[0], shape[1], 1 if a.ndim == 2 else shape[2], _DTYPE_NAMES[a.dtype]
            )
        out.append(geometry)
    return out


# --------------------------------------------------------------------------- pending


class _Part:
    """What one or more add calls left pending: a validated batch, its (payload, CRC-32)
    pairs as the pool delivers them, and its previews' thumbnails."""

    __slots__ = ("batch", "encoded", "previews", "cancel")

    def __init__(
        self,
        batch: Batch,
        encoded: Iterable[tuple[bytes, int]],
        previews: PreviewJob,
        cancel: Callable[[], None] | None = None,
    ):
        self.batch, self.encoded, self.previews, self.cancel = batch, encoded, previews, cancel


#: Images of one-image calls handed to the pool together: one task (a Future, a thread's
#: wake-up) per image cost the calling thread about as much as a 224 px image's write.
SINGLES_PER_TASK = 8


class _Scratch:
    """Arrays the pixels of one-image calls are copied into, reused once encoded: a fresh
    150 kB array costs its first-touch page faults (18-70 us at 224 px here), a reused one
    only the copy (7 us). Taken by the calling thread, given back by the pool's."""

    #: shapes kept (variable-sized images are simply not reused)
    SHAPES = 16

    def __init__(self) -> None:
        self._free: dict[tuple, list[np.ndarray]] = {}

    def copy_of(self, image: np.ndarray, bgr: bool) -> np.ndarray:
        free = self._free.get((image.shape, image.dtype))
        out = free.pop() if free else np.empty_like(image)  # (pop and append hold the GIL)
        if bgr and image.ndim == 3:  # stored RGB, as add_batch does
            _inputs.swap_rb(image, out)
        else:
            np.copyto(out, image)
        return out

    def give_back(self, images: Iterable[np.ndarray]) -> None:
        for image in images:
            key = (image.shape, image.dtype)
            free = self._free.get(key)
            if free is None:
                if len(self._free) >= self.SHAPES:
                    continue
                free = self._free.setdefault(key, [])
            # (as many as _Singles lets be in flight, and the task being filled)
            if len(free) < SINGLES_PER_TASK * (2 * get_threads() + 2):
                free.append(image)


def _encode_all(jobs: list[tuple[Codec, np.ndarray]], scratch: _Scratch) -> list[tuple[bytes, int]]:
    encoded = [_encode_with_crc(codec, image) for codec, image in jobs]
    scratch.give_back(image for _, image in jobs)
    return encoded


class _Joined(Sequence[Any]):
    """Item k of several sequences laid end to end, found when asked for: parts may be
    Futures of lists (a group of one-image calls still encoding), which only the items the
    previews ask for are waited on. ``item`` picks what to return of an element."""

    def __init__(self, parts: list, sizes: list[int], item: Callable[[Any], Any] = lambda x: x):
        self._parts, self._item = parts, item
        self._starts = np.cumsum([0, *sizes])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, k: Any) -> Any:
        if not isinstance(k, (int, np.integer)):
            raise TypeError("one item at a time")
        if not 0 <= k < len(self):
            raise IndexError(k)
        number = int(np.searchsorted(self._starts, k, side="right")) - 1
        part = self._parts[number]
        part = part.result() if isinstance(part, Future) else part
        return self._item(part[k - int(self._starts[number])])


def _first(pair: tuple[bytes, int]) -> bytes:
    return pair[0]


class _Singles:
    """Images of one-image calls, as columns: a Python append per field is what one image may
    cost at 32 px (the batch path spends about 10 us per image in all)."""

    def __init__(self, scratch: _Scratch) -> None:
        self.ids: list[int] = []
        self.label_ids: list[int] = []
        self.true_ids: list[int] = []
        self.top1: list[float] = []
        self.vectors: list[np.ndarray | None] = []
        self.sources: list[str | None] = []
        self.geometries: list[Geometry] = []
        #: (payload, CRC-32) pairs in image order: lists of pre-encoded ones, and Futures of
        #: the pool's encodings of SINGLES_PER_TASK images; and how many pairs each holds
        self.encoded: list[Future[list[tuple[bytes, int]]] | list[tuple[bytes, int]]] = []
        self.sizes: list[int] = []
        self._to_encode: list[tuple[Codec, np.ndarray]] = []
        self._in_flight: deque[Future] = deque()
        self._scratch = scratch

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self, codec: Codec, image: np.ndarray, bgr: bool) -> None:
        """Encode ``image`` on the pool after the call returns: from a copy of its own, so that
        the caller may reuse its array at once without changing what is stored."""
        self._to_encode.append((codec, self._scratch.copy_of(image, bgr)))
        if len(self._to_encode) >= SINGLES_PER_TASK:
            self._start_encoding()

    def encoded_already(self, payload: bytes, crc: int) -> None:
        self._start_encoding()  # (the images before it keep their place)
        self.encoded.append([(payload, crc)])
        self.sizes.append(1)

    def _start_encoding(self) -> None:
        if self._to_encode:
            task = submit(_encode_all, self._to_encode, self._scratch)
            self.encoded.append(task)
            self.sizes.append(len(self._to_encode))
            self._to_encode = []
            # A caller faster than the encoders waits here rather than piling up copies: two
            # tasks a thread keep the pool busy, and a bounded number of scratch arrays in
            # flight is what lets them be reused (and bounds their memory).
            self._in_flight.append(task)
            while len(self._in_flight) > 2 * get_threads():
                wait((self._in_flight.popleft(),))

    def seal(self, writer: StoreWriter) -> _Part:
        """One part for the commit (the values were validated call by call)."""
        catalog, default_codec = writer.catalog, writer.default_codec
        self._start_encoding()
        n = len(self.ids)
        label_ids = np.array(self.label_ids, dtype=np.uint32)
        keys, key_of_image = stack_keys(label_ids, self.geometries)
        vectors = None
        if any(v is not None for v in self.vectors):
            width = next(v for v in self.vectors if v is not None).shape[0]
            vectors = np.full((n, width), np.nan, dtype=np.float32)
            for k, v in enumerate(self.vectors):
                if v is not None:
                    vectors[k] = v
        sources = None
        if any(s is not None for s in self.sources):
            sources = ["" if s is None else s for s in self.sources]
        batch = Batch(
            label_ids,
            np.array(self.true_ids, dtype=np.int32),
            np.array(self.top1, dtype=np.float32),
            vectors,
            np.array(self.ids, dtype=np.int64),
            sources,
            keys,
            key_of_image,
            [],
        )
        batch.codecs = _codecs_for(batch, catalog, default_codec)
        futures = [f for f in self.encoded if type(f) is Future]

        def cancel() -> None:
            for f in futures:
                f.cancel()

        results: Iterator[tuple[bytes, int]] = (
            pair
            for pairs in self.encoded
            for pair in (pairs.result() if isinstance(pairs, Future) else pairs)
        )
        # The previews decode their few thumbnails from payloads: the scratch arrays the
        # pixels were copied into are reused once encoded.
        previews = writer.start_previews(batch, _Joined(self.encoded, self.sizes, _first))
        return _Part(batch, results, previews, cancel)


def _concat(parts: list[Batch]) -> Batch:
    """One batch of several (their labels are all in the catalogue already)."""
    if len(parts) == 1:
        return parts[0]
    n = sum(map(len, parts))
    keys: dict[StackKey, int] = {}
    codecs: list[Codec] = []
    numbers = []
    for part in parts:
        mapping = []
        for key, codec in zip(part.keys, part.codecs):
            if key not in keys:
                keys[key] = len(keys)
                codecs.append(codec)
            mapping.append(keys[key])
        numbers.append(np.array(mapping, dtype=np.int64)[part.key_of_image])
    vectors = None
    widths = {part.vectors.shape[1] for part in parts if part.vectors is not None}
    if widths:
        (width,) = widths  # validation keeps one width per store
        vectors = np.full((n, width), np.nan, dtype=np.float32)
        start = 0
        for part in parts:
            if part.vectors is not None:
                vectors[start : start + len(part)] = part.vectors
            start += len(part)
    sources = None
    if any(part.sources is not None for part in parts):
        sources = []
        for part in parts:
            sources.extend([""] * len(part) if part.sources is None else part.sources)
    batch = Batch(
        np.concatenate([p.label_ids for p in parts]),
        np.concatenate([p.true_ids for p in parts]),
        np.concatenate([p.top1 for p in parts]),
        vectors,
        np.concatenate([p.ids for p in parts]),
        sources,
        list(keys),
        np.concatenate(numbers),
        [],
    )
    batch.codecs = codecs
    return batch


# --------------------------------------------------------------------------- the entry


class Ingest:
    """Validation, the pending group and its commit, for one writer."""

    def __init__(
        self,
        writer: StoreWriter,
        durability: str = "group",
        bounds: GroupCommit | None = None,
        argmax_labels: bool = True,
    ):
        check_durability(durability)
        #: a label must score highest in its vector (merge and repack copy what was stored)
        self.argmax_labels = argmax_labels
        self.writer = writer
        self.catalog = writer.catalog
        self.index = writer.index
        self.default_codec = writer.default_codec
        self.per_call = durability == "call"
        self.bounds = bounds or GroupCommit()
        self._parts: list[_Part] = []
        self._scratch = _Scratch()
        self._singles = _Singles(self._scratch)
        self._pending_ids: set[int] = set()
        self._pending_n = 0
        self._pending_bytes = 0
        self._failed_ids: set[int] = set()  # of a group whose commit failed
        self._oldest = 0.0  # monotonic time the oldest pending image arrived
        self._score_width: int | None = None  # K of pending vectors
        #: K of the vectors in /scores (None: none yet); asked of HDF5 once, then kept as each
        #: commit leaves it (a lookup in the file costs more than a one-image call may)
        self._stored_width = writer.stored_score_width()
        #: per label id: its codec (None until first asked); per (codec, geometry): checked
        self._label_codecs: dict[int, Codec] = {}
        self._geometries: dict[tuple, Geometry] = {}
        self._next_id = self.index.next_id()
        #: how a due group is committed: the store routes it through its write guard
        self.commit_now: Callable[[], None] = self.commit

    @property
    def pending(self) -> int:
        """Images accepted but not committed yet."""
        return self._pending_n

    def _score_width_now(self) -> int | None:
        return self._score_width if self._score_width is not None else self._stored_width

    def _codec_of_label(self, label_id: int) -> Codec:
        # Cached until the next commit, which may create the class (a class's codec never
        # changes once it exists; create_class commits first). Looking a class group up in
        # the file costs ~50 us, far more than the image's own write.
        codec = self._label_codecs.get(label_id)
        if codec is None:
            name = self.catalog.labels[label_id]
            codec = self._label_codecs[label_id] = (
                self.catalog.class_codec(name) or self.default_codec
            )
        return codec

    def _image_codecs(self, labels: Sequence[Any]) -> list[Codec]:
        """The codec each image of a batch goes to: its class's, the default for a new class
        (an invalid label gets the default too: validation refuses it)."""

        def codec_for(label: Any) -> Codec:
            name = self.catalog.name_of(label)
            if name is None:
                return self.default_codec
            return self.catalog.class_codec(name) or self.default_codec

        try:
            distinct = {label: codec_for(label) for label in dict.fromkeys(labels)}
        except TypeError:  # an unhashable label
            return [codec_for(label) for label in labels]
        codecs = list(distinct.values())
        if codecs and codecs.count(codecs[0]) == len(codecs):
            return [codecs[0]] * len(labels)  # one codec: no lookup per image
        return list(map(distinct.__getitem__, labels))

    def _prepare(
        self,
        n: int,
        labels: Any,
        scores: Any,
        true_labels: Any,
        ids: Any,
        sources: Any,
        geometries: Any,
        stored: bool = False,
    ) -> Batch:
        """prepare_batch against this store and what is pending. ``stored``: payloads copied
        from another store (merge, repack), whose vectors may cover only the first labels and
        whose labels were accepted there (no argmax rule)."""
        return prepare_batch(
            self.catalog,
            self.index,
            self.default_codec,
            n,
            labels,
            scores,
            true_labels,
            ids,
            sources,
            geometries=geometries,
            score_width=self._score_width_now(),
            labels_declared=self.writer.labels_declared,
            pending_ids=self._pending_ids,
            next_id=self._next_id,
            argmax_labels=self.argmax_labels and not stored,
            vectors_cover_first_labels=stored,
        )

    def _accept(self, batch: Batch, nbytes: int) -> None:
        """A validated batch's bookkeeping: its new labels join the catalogue (written with
        the group), its ids are taken."""
        if batch.new_labels:
            self.writer.adopt_labels(batch.new_labels)
            batch.new_labels = []
        if not self._pending_n:
            self._oldest = time.monotonic()
        ids = batch.ids.tolist()
        self._pending_ids.update(ids)
        self._next_id = max(self._next_id, max(ids) + 1, self.index.next_id())
        if batch.vectors is not None:
            self._score_width = batch.vectors.shape[1]
        self._pending_n += len(batch)
        self._pending_bytes += nbytes

    def _due(self) -> bool:
        b = self.bounds
        return self._pending_n > 0 and (
            self._pending_n >= b.images
            or self._pending_bytes >= b.nbytes
            or time.monotonic() - self._oldest >= b.seconds
        )

    def _before_adding(self) -> None:
        """The bound is checked on what was pending before a call: the call's own images go on
        encoding while the earlier ones are written."""
        if self._due():
            self.commit_now()

    def _seal_singles(self) -> None:
        if len(self._singles):
            self._parts.append(self._singles.seal(self.writer))
            self._singles = _Singles(self._scratch)

    # ------------------------------------------------------------------ batches

    def add_images(
        self,
        images: Any,
        labels: Any,
        scores: Any,
        true_labels: Any,
        ids: Any,
        sources: Any,
        bgr: bool = False,
    ) -> np.ndarray:
        imgs = _inputs.as_images(images)
        if bgr:  # stored RGB, so that viewers, exports and the report show true colours
            imgs = [_inputs.swap_rb(a) for a in imgs]
        codecs = self._image_codecs(_inputs.as_sequence(labels, len(imgs), "labels"))
        # The pool starts encoding while this thread validates the batch and commits the group
        # pending before it (a batch refused meanwhile cancels what has not started).
        encoded = InOrder(lambda k: _encode_image(codecs[k], imgs[k], k), range(len(imgs)))
        try:
            batch = self._prepare(
                len(imgs), labels, scores, true_labels, ids, sources, _geometries(imgs)
            )
            previews = self._start_batch(batch, imgs, now=True)
            # The call returns once its pixels are encoded: the caller may then reuse its
            # arrays (a DataLoader's buffer, an image drawn on) without changing what is
            # stored, and an image its codec refuses fails this call, not a later commit.
            pairs = list(encoded)
        except BaseException:
            encoded.close()
            raise
        return self._add_part(_Part(batch, pairs, previews), sum(len(p) for p, _ in pairs))

    def add_payloads(
        self, data: Any, labels: Any, scores: Any, true_labels: Any, ids: Any, sources: Any
    ) -> np.ndarray:
        if isinstance(data, (bytes, bytearray, memoryview)) or not isinstance(data, Sequence):
            raise InvalidInputError("data must be a sequence of encoded images (bytes)")
        payloads = list(data)
        if set(map(type, payloads)) != {bytes}:
            payloads = [
                item if type(item) is bytes else _as_payload(k, item)
                for k, item in enumerate(payloads)
            ]
        n = len(payloads)
        label_list = _inputs.as_sequence(labels, n, "labels")
        geometries = self._probe(payloads, self._image_codecs(label_list)) if n else []
        batch = self._prepare(n, labels, scores, true_labels, ids, sources, geometries)
        previews = self._start_batch(batch, payloads)
        # CRCs inline, not on the thread pool: 1 us per 14 kB image, less than handing work to
        # a thread costs on a busy machine.
        part = _Part(batch, list(zip(payloads, map(crc32, payloads))), previews)
        return self._add_part(part, sum(map(len, payloads)))

    def _start_batch(self, batch: Batch, originals: Sequence[Any], now: bool = False) -> PreviewJob:
        """What a batch call does once its batch is validated, in this order: commit what was
        pending if it is due, seal the one-image calls before it into a part of their own,
        then begin its previews (chosen in the order parts are committed)."""
        self._before_adding()
        self._seal_singles()
        return self.writer.start_previews(batch, originals, now=now)

    def _add_part(self, part: _Part, nbytes: int) -> np.ndarray:
        self._accept(part.batch, nbytes)
        self._parts.append(part)  # (after the one-image calls before it: sealed by its caller)
        if self.per_call:
            self.commit_now()
        return part.batch.ids.copy()

    def _geometry(self, codec: Codec, info: ImageInfo | tuple, where: str) -> Geometry:
        """The Geometry of an image (height, width, channels, dtype) for this codec, checked
        once per (codec, geometry); ``where`` names the image in the error."""
        key = (id(codec), *info)
        geometry = self._geometries.get(key)
        if geometry is None:
            height, width, channels, dtype = info
            try:
                codec.check_image(height, width, channels, dtype)
            except CodecError as exc:
                raise CodecError(f"{where}: {exc}") from None
            geometry = Geometry(height, width, channels, np.dtype(dtype).name)
            if len(self._geometries) < 4096:  # variable-sized images must not grow it forever
                self._geometries[key] = geometry
        return geometry

    def _probe(self, payloads: list[bytes], image_codecs: list[Codec]) -> list[Geometry]:
        """Each stream's geometry, read with its class's codec: one probe_many per codec (a
        store with one codec: one call for the whole batch)."""
        n = len(payloads)
        by_codec: dict[int, tuple[Codec, Sequence[int]]]
        if image_codecs.count(image_codecs[0]) == n:
            by_codec = {id(image_codecs[0]): (image_codecs[0], range(n))}
        else:
            by_codec = {}  # by id(): codecs hash slowly
            for k, codec in enumerate(image_codecs):
                members = by_codec.setdefault(id(codec), (codec, []))[1]
                # (a list made just above: the declared Sequence also holds range(n))
                members.append(k)  # type: ignore[attr-defined]
        # (every slot is filled below: each image belongs to one codec's members)
        geometries: list[Geometry] = [None] * n  # type: ignore[list-item]
        for codec, members in by_codec.values():
            try:
                infos = codec.probe_many(
                    payloads if len(members) == n else [payloads[k] for k in members]
                )
            except CodecError:
                for k in members:  # which one, numbered in the whole batch
                    try:
                        codec.probe(payloads[k])
                    except CodecError as exc:
                        raise CodecError(f"encoded image {k}: {exc}") from None
                raise
            # Identity counts (list.count) keep the usual batch, one codec and one geometry,
            # free of Python steps per image: at 32 px each costs a tenth of the image's write.
            if len(members) == n and infos.count(infos[0]) == n:
                geometries = [self._geometry(codec, infos[0], "encoded image 0")] * n
                continue
            for k, info in zip(members, infos):
                geometries[k] = self._geometry(codec, info, f"encoded image {k}")
        return geometries

    # ------------------------------------------------------------------ one image per call

    def add_image(
        self,
        image: Any,
        label: Any,
        score: Any,
        true_label: Any,
        image_id: Any,
        source: Any,
        bgr: bool = False,
    ) -> int:
        arr = _inputs.as_image(image)
        lid, new = self._label(label, "label of image 0")
        codec = self._codec_of_label(lid) if not new else self.default_codec
        shape = arr.shape
        channels = 1 if len(shape) == 2 else shape[2]
        geometry = self._geometry(codec, (shape[0], shape[1], channels, arr.dtype), "image 0")
        fields = self._check_one(lid, new, score, true_label, image_id, source)
        self._before_adding()
        image_id = self._append_one(lid, new, geometry, *fields)
        self._singles.encode(codec, arr, bgr)
        self._pending_bytes += arr.nbytes
        return self._after_one(image_id)

    def add_payload(
        self, data: Any, label: Any, score: Any, true_label: Any, image_id: Any, source: Any
    ) -> int:
        if type(data) is not bytes:
            data = _as_payload(0, data)
        lid, new = self._label(label, "label of image 0")
        codec = self._codec_of_label(lid) if not new else self.default_codec
        try:
            info = codec.probe(data)
        except CodecError as exc:
            raise CodecError(f"encoded image 0: {exc}") from None
        geometry = self._geometry(codec, info, "encoded image 0")
        fields = self._check_one(lid, new, score, true_label, image_id, source)
        self._before_adding()
        image_id = self._append_one(lid, new, geometry, *fields)
        self._singles.encoded_already(data, crc32(data))
        self._pending_bytes += len(data)
        return self._after_one(image_id)

    def _label(self, value: Any, where: str) -> tuple[int, str | None]:
        """(class id, the name if it is new to the store) of one label."""
        if type(value) is str:
            lid = self.catalog.label_ids.get(value)
            if lid is not None:
                return lid, None
        elif type(value) is int and 0 <= value < len(self.catalog.labels):
            return value, None
        new: dict[str, int] = {}
        closed = _closed_reason(self.writer.labels_declared, self._score_width_now())
        lid = _label_resolver(self.catalog, new, closed)(value, where)
        return lid, next(iter(new), None)

    def _check_one(
        self, lid: int, new: str | None, score: Any, true_label: Any, image_id: Any, source: Any
    ) -> tuple:
        """Validate the rest of one image's fields as :func:`prepare_batch` would for a batch
        of one (same rules, same messages); changes nothing."""
        # true label
        if true_label is None or (type(true_label) is int and true_label == -1):
            true_id = fmt.NO_TRUE_LABEL
            true_new = None
        else:
            if type(true_label) is str:
                known = self.catalog.label_ids.get(true_label)
            elif type(true_label) is int and 0 <= true_label < len(self.catalog.labels):
                known = true_label
            else:
                known = None
            true_new = None
            if known is not None:
                true_id = known
            else:
                new_names = {new: lid} if new is not None else {}
                closed = _closed_reason(self.writer.labels_declared, self._score_width_now())
                true_id = _resolve_all(
                    [true_label],
                    _label_resolver(self.catalog, new_names, closed),
                    "true label of image",
                    unknown=-1,
                )[0]
                if true_id >= len(self.catalog.labels) and true_id != lid:
                    true_new = next(n for n, i in new_names.items() if i == true_id)
        # score
        vector = None
        if score is None:
            top1 = float("nan")
        elif type(score) is float and 0.0 <= score <= 1.0:
            top1 = score
        else:
            arr = _inputs.as_scores([score], 1)
            assert arr is not None  # (None only for scores=None)
            if arr.ndim == 2:
                introduced = [n for n in (new, true_new) if n is not None]
                _check_vectors(
                    arr.shape[1],
                    len(self.catalog.labels),
                    dict.fromkeys(introduced, 0),
                    np.array([lid]),
                    self._score_width_now(),
                    False,
                )
                if self.argmax_labels:
                    _check_argmax(arr, np.array([lid]), self.catalog.labels)
                vector = arr[0]
                top1 = float(vector[lid])
            else:
                top1 = float(arr[0])
        # id
        if image_id is not None:
            if not _inputs.is_integer(image_id):
                raise InvalidInputError(f"id of image 0 must be an integer, got {image_id!r}")
            if not 0 <= image_id < 2**63:
                raise InvalidInputError(
                    f"id of image 0 must be a non-negative int64, got {image_id}"
                )
            image_id = int(image_id)
            if self.index.find(image_id) >= 0 or image_id in self._pending_ids:
                raise DuplicateIdError(
                    f"id {image_id} is already used in the store (ids are never reused)"
                )
        # source
        if source is not None and not (
            type(source) is str and source.isascii() and "\x00" not in source
        ):
            checked = _inputs.as_sources([source], 1)
            assert checked is not None
            source = checked[0]
        return true_id, true_new, top1, vector, image_id, source

    def _append_one(
        self,
        lid: int,
        new: str | None,
        geometry: Geometry,
        true_id: int,
        true_new: str | None,
        top1: float,
        vector: np.ndarray | None,
        image_id: int | None,
        source: str | None,
    ) -> int:
        """Take a checked image's id and labels and append it to the pending group."""
        if image_id is None:  # computed after a due commit: the same value
            image_id = max(self.index.next_id(), self._next_id)
        singles = self._singles
        adopted = [n for n in (new, true_new) if n is not None]
        if adopted:
            self.writer.adopt_labels(adopted)
        if not self._pending_n:
            self._oldest = time.monotonic()
        if vector is not None:
            self._score_width = len(vector)
        self._pending_ids.add(image_id)
        self._next_id = max(self._next_id, image_id + 1)
        self._pending_n += 1
        singles.ids.append(image_id)
        singles.label_ids.append(lid)
        singles.true_ids.append(true_id)
        singles.top1.append(top1)
        singles.vectors.append(vector)
        singles.sources.append(source)
        singles.geometries.append(geometry)
        return image_id

    def _after_one(self, image_id: int) -> int:
        if self.per_call:
            self.commit_now()
        return image_id

    # ------------------------------------------------------------------ stored payloads

    def add_stored(
        self,
        payloads: Sequence[bytes],
        geometries: Sequence[Geometry],
        codecs: Sequence[Codec],
        *,
        crcs: Sequence[int],
        labels: Any,
        scores: Any = None,
        true_labels: Any = None,
        ids: Any = None,
        sources: Any = None,
    ) -> np.ndarray:
        """Commit payloads taken from another store as they are (merge, repack): their geometry,
        codec and CRC-32 come from that store's index and are trusted only after checking that
        each class here uses the same codec and each payload still matches its CRC-32."""
        self.commit()
        batch = self._prepare(
            len(payloads), labels, scores, true_labels, ids, sources, geometries, stored=True
        )
        checked: set[tuple[int, int]] = set()
        for k, (number, theirs) in enumerate(zip(batch.key_of_image.tolist(), codecs)):
            if (number, id(theirs)) not in checked:
                mine = batch.codecs[number]
                if mine != theirs:
                    label = batch.label_name(batch.keys[number].label, self.catalog.labels)
                    raise CodecError(
                        f"image {k}: class {label!r} stores {mine!r} here but the payload is "
                        f"{theirs!r}; stored bytes can only be copied between equal codecs"
                    )
                checked.add((number, id(theirs)))
        actual = [crc32(p) for p in payloads]
        for k, (got, want) in enumerate(zip(actual, crcs)):
            if got != want:
                raise DamagedImageError(
                    f"image {k} (id {int(batch.ids[k])}) does not match its CRC-32: its source "
                    "is damaged"
                )
        previews = self.writer.start_previews(batch, payloads)
        stored = self.writer.commit(batch, zip(payloads, actual), [previews])
        self._stored_width = self.writer.stored_score_width()
        self._next_id = max(self._next_id, self.index.next_id())
        return stored

    # ------------------------------------------------------------------ commit

    def commit(self) -> None:
        """Make every pending image durable: one batch for the commit protocol. If it fails,
        the error names the ids not stored; the caller closes the store (what is on disk is
        what the last successful commit left)."""
        self._seal_singles()
        parts, self._parts = self._parts, []
        if not parts:
            return
        ids = self._pending_ids
        self._pending_ids, self._pending_n, self._pending_bytes = set(), 0, 0
        self._score_width = None
        self._label_codecs.clear()
        try:
            batch = _concat([p.batch for p in parts])
            encoded: Iterator[tuple[bytes, int]] = itertools.chain.from_iterable(
                p.encoded for p in parts
            )
            self.writer.commit(batch, encoded, [p.previews for p in parts])
            if batch.vectors is not None:
                self._stored_width = batch.vectors.shape[1]
        except BaseException:
            for part in parts:
                if part.cancel is not None:
                    part.cancel()
            self._failed_ids = ids
            raise

    def name_unstored(self, exc: BaseException) -> None:
        """The store is closing on ``exc``: say in it which accepted ids were not stored."""
        ids = sorted(self._failed_ids | self._pending_ids)
        if ids:
            _name_unstored(exc, ids)

    def discard(self) -> None:
        """Forget what is pending without writing it (the store is being abandoned)."""
        self._seal_singles()
        for part in self._parts:
            if part.cancel is not None:
                part.cancel()
        self._parts = []
        self._pending_ids, self._pending_n, self._pending_bytes = set(), 0, 0


def _name_unstored(exc: BaseException, ids: list[int]) -> None:
    """Say in the error which ids a failed group commit did not store."""
    shown = ", ".join(map(str, ids[:10])) + (f", ... ({len(ids)} in all)" if len(ids) > 10 else "")
    note = f"not stored: the {len(ids)} pending image(s) with ids {shown}"
    # (an attribute added to whatever exception the commit raised)
    exc.unstored_ids = tuple(ids)  # type: ignore[attr-defined]
    if isinstance(exc, OSError) and exc.strerror:
        exc.strerror = f"{exc.strerror}; {note}"
        exc.args = (exc.errno, exc.strerror)
    elif exc.args and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]}; {note}", *exc.args[1:])
