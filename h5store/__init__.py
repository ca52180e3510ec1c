"""h5store: images a CNN classified, with their labels and scores, in one HDF5 file.

import h5store
with h5store.open("run.h5", "w") as store:
    ids = store.add_batch(images, labels=predicted, scores=probabilities, true_labels=truth)
with h5store.open("run.h5") as store:
    for image_id in store.query(min_score=0.9, correct=False):
        image = store[image_id]
"""

from importlib.metadata import PackageNotFoundError, version

# hdf5plugin registers the Blosc2, Zstd and LZ4 HDF5 filters in this process, so that stacks
# can be created with them (and plain h5py reads work in the same interpreter).
import hdf5plugin  # noqa: F401

from ._contract import ReadableStore, Record, VerifyReport, image_ref, parse_ref
from ._ingest import GroupCommit
from ._merge import merge
from ._parallel import get_threads, set_threads
from .api import load, open
from .codecs import Codec, available_codecs, get_codec, register_codec
from .errors import (
    AlreadyImportedError,
    ClosedStoreError,
    CodecError,
    DamagedImageError,
    DatabaseError,
    DuplicateIdError,
    FormatError,
    H5StoreError,
    InvalidInputError,
    NotAStoreError,
    ReadOnlyError,
    RecoveryNeededError,
    RemoteReadError,
    StorageFullError,
    StoreExistsError,
    StoreLockedError,
    StoreNotFoundError,
    StorePermissionError,
    StoreVanishedError,
    TargetExistsError,
    UnknownIdError,
    UnrepairableError,
    VersionError,
    WriteFailedError,
)
from .format import FORMAT_VERSION
from .repack import GenerationLossWarning, RepackReport, repack
from .report import report
from .sharded import ShardedStore
from .store import ImageStore

try:
    __version__ = version("h5store")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "FORMAT_VERSION",
    "AlreadyImportedError",
    "ClosedStoreError",
    "Codec",
    "CodecError",
    "DamagedImageError",
    "DatabaseError",
    "DuplicateIdError",
    "FormatError",
    "GenerationLossWarning",
    "GroupCommit",
    "H5StoreError",
    "ImageStore",
    "InvalidInputError",
    "NotAStoreError",
    "ReadOnlyError",
    "ReadableStore",
    "Record",
    "RecoveryNeededError",
    "RemoteReadError",
    "ShardedStore",
    "RepackReport",
    "StoreExistsError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StorePermissionError",
    "StoreVanishedError",
    "StorageFullError",
    "TargetExistsError",
    "UnknownIdError",
    "UnrepairableError",
    "VerifyReport",
    "VersionError",
    "WriteFailedError",
    "available_codecs",
    "get_codec",
    "get_threads",
    "image_ref",
    "load",
    "merge",
    "open",
    "parse_ref",
    "register_codec",
    "repack",
    "report",
    "set_threads",
]
