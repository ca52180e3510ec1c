"""What a store holds besides its index rows: class labels, each class's codec, and the image
stacks (one per class, shape and dtype). Readers and the writer share one catalogue; the
writer grows it only after the objects it describes exist in the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any, NamedTuple

import h5py
import numpy as np

from . import _inputs
from . import format as fmt
from ._containment import class_attributes
from .codecs import Codec, ImageInfo, codec_from_config, image_shape
from .errors import InvalidInputError


class StackKey(NamedTuple):
    """What decides which stack an image goes to."""

    label: int
    height: int
    width: int
    channels: int
    dtype: str

    def decoder(self, codec: Codec) -> Callable[..., np.ndarray]:
        """``codec``'s payload -> pixels function for this stack's images."""
        shape = image_shape(self.height, self.width, self.channels)
        return codec.decoder(shape, np.dtype(self.dtype))


class Geometry(NamedTuple):
    """An image's shape and pixel type, before a class is known."""

    height: int
    width: int
    channels: int
    dtype: str


@dataclass
class Stack:
    key: StackKey
    codec: Codec
    path: str
    length: int = 0  # committed images (positions 0 .. length-1)
    #: a decode_payload and header_problem to share (those of a stack of the same codec and
    #: geometry); None: built for this stack
    shared_decoder: InitVar[Callable[..., np.ndarray] | None] = None
    shared_checker: InitVar[Callable[[Any], str | None] | None] = None
    #: payload (and optionally out=) -> pixels, built once per stack: the read path calls it
    #: for every image.
    decode_payload: Callable[..., np.ndarray] = field(init=False, repr=False)
    #: payload -> why its header cannot be one of this stack's images (None: it can)
    header_problem: Callable[[Any], str | None] = field(init=False, repr=False)

    def __post_init__(
        self,
        shared_decoder: Callable[..., np.ndarray] | None,
        shared_checker: Callable[[Any], str | None] | None,
    ) -> None:
        self.decode_payload = (
            self.key.decoder(self.codec) if shared_decoder is None else shared_decoder
        )
        self.header_problem = (
            self.codec.header_checker(self.geometry) if shared_checker is None else shared_checker
        )

    @property
    def shape(self) -> tuple[int, ...]:
        return image_shape(self.key.height, self.key.width, self.key.channels)

    @property
    def geometry(self) -> ImageInfo:
        """What every payload of the stack must declare (see Codec.header_problem)."""
        key = self.key
        return ImageInfo(key.height, key.width, key.channels, np.dtype(key.dtype))


def did_you_mean(label: Any, known: Sequence[str]) -> str:
    """ "did you mean 'cat'? " for a name close to one of ``known`` (a typo), else ""."""
    import difflib

    if not isinstance(label, str):
        return ""
    near = difflib.get_close_matches(label, list(known), n=1, cutoff=0.5)
    return f"did you mean {near[0]!r}? " if near else ""


def existing_label_id(
    value: Any, labels: list[str], label_ids: dict[str, int], what: str, owner: str
) -> int:
    """The id of a label ``labels`` has, given by name or id; InvalidInputError otherwise."""
    if _inputs.is_integer(value):
        if 0 <= value < len(labels):
            return int(value)
    elif isinstance(value, str) and value in label_ids:
        return label_ids[value]
    hint = did_you_mean(value, labels)
    raise InvalidInputError(
        f"{what} {value!r} is not a label of {owner}" + (f"; {hint.rstrip()}" if hint else "")
    )


def query_label_ids(
    value: Any, label_id: Callable[[Any, str], int], what: str
) -> np.ndarray | None:
    """A query's label condition (one label or several, by name or id) as class ids."""
    if value is None:
        return None
    values = [value] if isinstance(value, (str, int, np.integer)) else list(value)
    return np.array([label_id(v, what) for v in values], dtype=np.int64)


class Catalog:
    """Labels, class codecs and stacks of one open store.

    ``class_group`` looks a class's group up in the file as it is open now (the writer
    reopens the file when it leaves SWMR mode, so the catalogue holds no h5py object).
    """

    def __init__(
        self,
        f: h5py.File,
        class_group: Callable[[str], h5py.Group | None],
        *,
        checked: bool = False,
        tables: tuple[np.ndarray, list[str]] | None = None,
    ):
        """``tables``: /stacks and /labels as read already (in that order), else read here."""
        # /stacks before /labels, the reverse of the order a writer appends them: a stack
        # read then names a label that is on disk by the time the labels are read.
        #: the /stacks table as read (checked against the index rows by the store)
        self.filename = f.filename
        self.table, self.labels = (
            (fmt.read_stacks(f), fmt.read_labels(f)) if tables is None else tables
        )
        fmt.check_stacks(self.table, len(self.labels), f.filename)
        if checked:  # a format-1.2 file: class groups against /labels and /stacks
            fmt.check_classes(class_attributes(f), self.labels, self.table, f.filename)
        self.label_ids = {name: k for k, name in enumerate(self.labels)}
        self._class_group = class_group
        self._class_codecs: dict[str, Codec] = {}
        #: classes known to have no group (kept only for a writer: see keep_absent_classes)
        self._absent: set[str] | None = None
        self.stacks: list[Stack] = []
        self._by_geometry: dict[tuple, Stack] = {}  # (see _add_stack)
        self.stack_ids: dict[StackKey, int] = {}
        #: each stack's decode_payload, by stack id: the read path indexes this list directly.
        self.decoders: list[Callable[..., np.ndarray]] = []
        # One codec per distinct configuration: a store of 1,000 classes has 1,000 stacks of
        # usually one configuration, and rebuilding it per stack was a tenth of its open.
        codecs: dict[bytes, Codec] = {}
        columns = ("label", "height", "width", "channels", "dtype", "codec_config")
        for label, height, width, channels, dtype, config in zip(
            *(self.table[name].tolist() for name in columns)
        ):
            codec = codecs.get(config)
            if codec is None:
                codec = codecs[config] = codec_from_config(json.loads(config.decode("utf-8")))
            self._add_stack(StackKey(label, height, width, channels, dtype.decode()), codec)

    # ------------------------------------------------------------------ labels

    def label_id(self, value: Any, what: str) -> int:
        """The id of an existing label given by name or id; InvalidInputError otherwise."""
        return existing_label_id(value, self.labels, self.label_ids, what, "this store")

    def name_of(self, value: Any) -> str | None:
        """The label name ``value`` stands for (a name, or the id of a known label); None for
        an id the store does not have."""
        if _inputs.is_integer(value):
            return self.labels[value] if 0 <= value < len(self.labels) else None
        return str(value) if isinstance(value, (str, np.str_)) else None

    def add_label(self, name: str) -> int:
        self.label_ids[name] = len(self.labels)
        self.labels.append(name)
        return self.label_ids[name]

    # ------------------------------------------------------------------ classes

    def class_codec(self, label: str) -> Codec | None:
        """The codec class ``label`` stores its images with; None if the class has no group."""
        codec = self._class_codecs.get(label)
        if codec is None:
            if self._absent is not None and label in self._absent:
                return None
            # (a crafted file's class group can be a link loop, or have no codec attribute)
            with fmt.damage_reported(self.filename):
                group = self._class_group(label)
                if group is None:
                    if self._absent is not None:
                        self._absent.add(label)
                    return None
                codec = self._class_codecs[label] = fmt.class_codec(group)
        return codec

    def keep_absent_classes(self) -> None:
        """Remember classes that have no group: the writer holding the store's lock is the only
        one that can create one (through :meth:`set_class_codec`), and until its first commit
        every batch asked for them in the file (a lookup costs ~50 us, a 224 px image's write
        ~20). A reader must not: the writer may create the class at any time."""
        self._absent = set()

    def set_class_codec(self, label: str, codec: Codec) -> None:
        self._class_codecs[label] = codec
        if self._absent is not None:
            self._absent.discard(label)

    # ------------------------------------------------------------------ stacks

    def _add_stack(self, key: StackKey, codec: Codec) -> int:
        path = fmt.stack_path(
            self.labels[key.label], key.height, key.width, key.channels, key.dtype
        )
        # Stacks of one codec (object) and geometry share its functions: 1,000 classes of one
        # image size need one decoder, not 1,000.
        geometry = (id(codec), *key[1:])
        like = self._by_geometry.get(geometry)
        if like is None:
            stack = Stack(key, codec, path)
            self._by_geometry[geometry] = stack
        else:
            stack = Stack(key, codec, path, 0, like.decode_payload, like.header_problem)
        self.stacks.append(stack)
        self.decoders.append(self.stacks[-1].decode_payload)
        self.stack_ids[key] = len(self.stacks) - 1
        return len(self.stacks) - 1

    def add_stack(self, key: StackKey, codec: Codec) -> Stack:
        return self.stacks[self._add_stack(key, codec)]

    def set_lengths(self, stack_column: np.ndarray, position_column: np.ndarray) -> None:
        """Each stack's committed length, from the index rows."""
        if not len(stack_column):
            return
        lengths = np.zeros(len(self.stacks), dtype=np.int64)
        np.maximum.at(lengths, stack_column.astype(np.int64), position_column.astype(np.int64) + 1)
        for stack, length in zip(self.stacks, lengths.tolist()):
            stack.length = length
