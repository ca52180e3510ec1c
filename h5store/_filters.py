"""Which HDF5 filters a store's stacks declare, and whether this machine's HDF5 has them: what
a viewer without h5store (h5py, h5dump, HDFView, silx, h5web) needs to show the pixels.

h5store itself never needs a filter (it reads each chunk's stored bytes and decodes them), so
nothing here affects reading; ``h5store info`` prints :meth:`StackFilter.note` for each
filter a viewer on this machine would miss. docs/viewers.md says how to get each one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py

from .format import CLASSES

#: Where docs/viewers.md is, for the notes.
VIEWERS_DOC = "docs/viewers.md"


@dataclass(frozen=True)
class StackFilter:
    """One filter declared by the stacks of one codec.

    ``available``: HDF5 in this process decodes it (``h5py.h5z.filter_avail``: registered, or
    found on ``HDF5_PLUGIN_PATH``); ``registered``: a standard HDF5 filter exists for the codec
    (False for h5store's placeholder id on codecs nobody registered); ``hdf5plugin``: the
    filter is one hdf5plugin registers (h5store imports it, a viewer must too)."""

    codec: str
    filter_id: int
    name: str
    stacks: tuple[str, ...]
    available: bool
    registered: bool
    hdf5plugin: bool

    def note(self) -> str | None:
        """What a user should know about this filter on this machine, or None (nothing)."""
        one = len(self.stacks) == 1
        what = f"{len(self.stacks)} {self.codec} stack{'' if one else 's'}"
        if not self.registered:
            return (
                f"{what}: no HDF5 filter exists for {self.codec} (placeholder id "
                f"{self.filter_id}); viewers without h5store show no pixels, `h5store export` "
                "writes the files"
            )
        if not self.available:
            return (
                f"{what} need{'s' if one else ''} HDF5 filter {self.filter_id}{self._named()}, "
                "which this machine lacks: h5py, h5dump and HDFView here show no pixels "
                f"(h5store reads them); see {VIEWERS_DOC}"
            )
        if self.hdf5plugin:
            return (
                f"{what}: HDF5 filter {self.filter_id}{self._named()} comes from hdf5plugin: "
                "plain h5py needs `import hdf5plugin`, h5dump and HDFView "
                "HDF5_PLUGIN_PATH=$(python -c 'import hdf5plugin; print(hdf5plugin.PLUGIN_PATH)')"
            )
        return None

    def _named(self) -> str:
        return f" ({self.name})" if self.name else ""


def _hdf5plugin_ids() -> set[int]:
    try:
        import hdf5plugin
    except ImportError:  # pragma: no cover - a dependency of h5store
        return set()
    return {f.filter_id for f in hdf5plugin.get_filters()}


def stack_filters(path: str | os.PathLike) -> list[StackFilter]:
    """The filters the stacks of the store at ``path`` declare, one per (codec, filter id),
    in the order first met; none for a path that is not a local file (a URL)."""
    if not os.path.isfile(path):
        return []
    found: dict[tuple[str, int], dict] = {}
    from_plugin = _hdf5plugin_ids()

    def visit(name: str, obj: object) -> None:
        if not isinstance(obj, h5py.Dataset) or "codec" not in obj.attrs:
            return  # a class's preview (gzip, which every HDF5 has) is no stack
        plist = obj.id.get_create_plist()
        codec = obj.attrs["codec"]
        codec = codec.decode() if isinstance(codec, bytes) else str(codec)
        registered = bool(obj.attrs.get("filter_registered", 1))
        for k in range(plist.get_nfilters()):
            filter_id, _, _, filter_name = plist.get_filter(k)
            entry = found.setdefault(
                (codec, filter_id),
                {"name": filter_name.decode("latin-1"), "stacks": [], "registered": registered},
            )
            entry["stacks"].append(f"/{CLASSES}/{name}")

    with h5py.File(path, "r", locking=False) as f:
        if CLASSES in f:
            f[CLASSES].visititems(visit)
    return [
        StackFilter(
            codec,
            filter_id,
            entry["name"],
            tuple(entry["stacks"]),
            bool(h5py.h5z.filter_avail(filter_id)),
            entry["registered"],
            filter_id in from_plugin,
        )
        for (codec, filter_id), entry in found.items()
    ]
