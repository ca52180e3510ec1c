"""A file someone sent: h5store reads nothing outside it (issue 22, item 1).

Each crafted file is a real store in which plain h5py replaced one object h5store reads by an
external link to another HDF5 file, a soft link, a dataset whose raw data lies in an external
"secret" file, or a virtual dataset sourcing another file, each holding a copy of the original
object, so that following it would work without an error. Opening it (read, append, the CLI)
must raise a FormatError naming the object and change nothing; traced with strace, no file but
the store is opened: the secret file and the other HDF5 file never appear in the trace.
"""

import os
import shutil

import h5py
import numpy as np
import pytest
from conftest import file_digest, files_opened, needs_strace, photo_crops

import h5store
from h5store import _containment
from h5store import format as fmt
from h5store._containment import NOWHERE, access_list
from h5store._file import WriterLock
from h5store.cli import main as cli
from h5store.errors import FormatError

KINDS = ("external_link", "soft_link", "external_storage", "virtual")
SECRET = b"TOPSECRET root:x:0:0\n" * 4096


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small store with everything h5store reads: two classes, score vectors, sources and
    previews; and the paths of one class group, its stack and its preview."""
    root = tmp_path_factory.mktemp("untrusted")
    path = root / "base.h5"
    images, labels = photo_crops()
    names = sorted(set(labels))
    vectors = np.full((len(labels), len(names)), 0.1, np.float32)
    vectors[np.arange(len(labels)), [names.index(x) for x in labels]] = 0.5
    with h5store.open(path, "w", labels=names) as store:
        store.add_batch(
            images, labels=labels, scores=vectors, sources=[f"s{k}" for k in range(len(labels))]
        )
    with h5py.File(path, "r") as f:
        group = f"/{fmt.CLASSES}/{sorted(f[fmt.CLASSES])[0]}"
        stack = f"{group}/{next(n for n in f[group] if n != 'preview')}"
        preview = f"/{fmt.PREVIEWS}/{group.rsplit('/', 1)[1]}/data"
    (root / "secret.txt").write_bytes(SECRET)
    return root, path, {"group": group, "stack": stack, "preview": preview}


def _targets(base) -> list[str]:
    named = base[2]
    return [
        f"/{fmt.LABELS}",
        f"/{fmt.SCORES}",
        f"/{fmt.INDEX}",
        f"/{fmt.INDEX_TAIL}",
        f"/{fmt.STACKS}",
        f"/{fmt.SOURCES}",
        named["stack"],
        named["group"],
        named["preview"],
        f"/{fmt.PREVIEWS}/{named['preview'].split('/')[2]}",
        f"/{fmt.CLASSES}",
    ]


def craft(base, target: str, kind: str):
    """A copy of the base store with ``target`` replaced as ``kind`` says (None where the kind
    does not apply: a group has no raw storage)."""
    root, path, _ = base
    name = f"{kind}{target.replace('/', '_')}"
    out, other, secret = root / f"{name}.h5", root / f"{name}-other.h5", root / "secret.txt"
    shutil.copyfile(path, out)
    with h5py.File(out, "r+") as f:
        original = f[target]
        is_group = isinstance(original, h5py.Group)
        if is_group and kind in ("external_storage", "virtual"):
            out.unlink()
            return None
        with h5py.File(other, "w") as g:
            f.copy(original, g, "copy")
        if kind == "soft_link":
            f.copy(original, f, "/hidden_copy")
        shape, dtype = (None, None) if is_group else (original.shape, original.dtype)
        del original
        del f[target]
        if kind == "external_link":
            f[target] = h5py.ExternalLink(str(other), "/copy")
        elif kind == "soft_link":
            f[target] = h5py.SoftLink("/hidden_copy")
        elif kind == "external_storage":
            external = [(str(secret), 0, h5py.h5f.UNLIMITED)]
            f.create_dataset(target, shape=shape, dtype=dtype, external=external)
        else:
            layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
            layout[...] = h5py.VirtualSource(str(other), "copy", shape=shape, dtype=dtype)
            f.create_virtual_dataset(target, layout)
    return out


def cases(base):
    out = []
    for target in _targets(base):
        for kind in KINDS:
            path = craft(base, target, kind)
            if path is not None:
                out.append((target, kind, path))
    return out


@pytest.fixture(scope="module")
def crafted(base):
    return cases(base)


def test_every_kind_on_every_path_is_refused_naming_it(crafted, capsys):
    assert len(crafted) >= 30
    for target, kind, path in crafted:
        before = file_digest(path)
        feature = {
            "external_link": "an external link",
            "soft_link": "a soft link",
            "external_storage": "stored in external files",
            "virtual": "a virtual dataset",
        }[kind]
        # Only a writer reads the previews (their attributes): a reader does not walk them.
        preview = target.startswith(f"/{fmt.PREVIEWS}/")
        for mode in ("a", "r+") if preview else ("r", "a", "r+"):
            with pytest.raises(FormatError) as info:
                h5store.open(path, mode)
            message = str(info.value)
            assert f"{target} is " in message and feature in message, (kind, target, message)
            assert not WriterLock.is_held(path)
        if preview:
            with h5store.open(path) as store:
                assert store.verify().ok
            assert cli(["info", str(path)]) == 0
        else:
            assert cli(["info", str(path)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "TOPSECRET" not in err
        assert preview or target in err
        # refused and unchanged
        assert file_digest(path) == before, (kind, target)


def test_sharded_view_merge_and_repack_refuse_them_too(crafted, base, tmp_path):
    _, good, _ = base
    target, kind, path = next(c for c in crafted if c[1] == "external_storage")
    with pytest.raises(FormatError, match=target):
        h5store.open([good, path])
    with pytest.raises(FormatError, match=target):
        h5store.merge([good, path], tmp_path / "merged.h5")
    with pytest.raises(FormatError, match=target):
        h5store.repack(path, tmp_path / "repacked.h5")


def test_the_base_store_and_its_own_preview_links_are_accepted(base):
    _, path, named = base
    with h5py.File(path, "r") as f:  # h5store writes this one soft link itself, for viewers
        assert f[named["group"]].get("preview", getlink=True).path == named["preview"]
    with h5store.open(path) as store:
        assert len(store) == len(photo_crops()[1])
        assert store.verify().ok


_TRACED = """
import sys
import h5store
from h5store.cli import main
from h5store.errors import FormatError
refused = 0
for path in sys.argv[1:]:
    for mode in ("r", "a"):
        try:
            h5store.open(path, mode).close()
        except FormatError:
            refused += 1
    refused += main(["info", path]) == 2
print(refused)
"""


@needs_strace
def test_no_file_but_the_store_is_opened_under_strace(crafted, base):
    root = base[0]
    paths = [str(path) for _, _, path in crafted]
    opened, trace = files_opened(_TRACED, *paths)
    inside = {os.path.realpath(p) for p in opened if p.startswith(str(root))}
    assert inside == {os.path.realpath(p) for p in paths}, inside - set(paths)
    for other in [root / "secret.txt", *root.glob("*-other.h5")]:
        assert other.name not in trace
    assert NOWHERE.decode() not in trace  # nothing even reached HDF5's search paths
    assert "TOPSECRET" not in trace


def test_plain_h5py_still_opens_the_crafted_files(crafted):
    """We refuse to follow; the files are not changed and h5py (its defaults) follows them."""
    target, _, path = next(c for c in crafted if c[1] == "external_storage")
    with h5py.File(path, "r") as f:
        assert f[target][()].tobytes()[:9] == b"TOPSECRET"


def test_a_link_h5store_does_not_read_is_harmless_but_not_followed_from_the_store(base, tmp_path):
    """The second line: an external link h5store's walk does not know about stays where it is,
    and a lookup through the store's own file handle refuses to follow it (HDF5's external-link
    callback), where plain h5py would."""
    _, path, _ = base
    out = tmp_path / "extra.h5"
    shutil.copyfile(path, out)
    with h5py.File(tmp_path / "other.h5", "w") as g:
        g["x"] = np.arange(3)
    with h5py.File(out, "r+") as f:
        f["unrelated"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/x")
    with h5store.open(out) as store:
        assert len(store) == len(photo_crops()[1])
        with pytest.raises(KeyError):
            store._file["unrelated"]
    with h5py.File(out, "r") as f:
        assert f["unrelated"][()].tolist() == [0, 1, 2]
    assert access_list().get_virtual_view() == h5py.h5d.VDS_FIRST_MISSING


def test_without_hdf5s_c_functions_the_walk_refuses_the_same(crafted, monkeypatch):
    """The class groups are walked through HDF5's C functions where the library has them
    (1.12 on); without them, through h5py's objects: the same files refused, the same words."""
    refused = {}
    for _ in range(2):
        for target, kind, path in crafted:
            if target.startswith(f"/{fmt.CLASSES}"):
                with pytest.raises(FormatError) as info:
                    h5store.open(path)
                refused.setdefault((target, kind), set()).add(str(info.value))
        monkeypatch.setattr(_containment, "_hdf5", lambda: None)
    assert len(refused) >= 8 and all(len(words) == 1 for words in refused.values())


def test_class_group_members_their_header_does_not_settle_are_opened_and_checked(
    base, tmp_path, monkeypatch
):
    """The fast walk passes a member whose header shows a chunk index (or a group's) and no
    external files; any other member (an empty chunked or a contiguous dataset, a named type)
    is opened and checked as before: accepted, and refused when it is virtual or external."""
    _, path, named = base
    out = tmp_path / "members.h5"
    shutil.copyfile(path, out)
    with h5py.File(out, "r+") as f:
        group = f[named["group"]]
        group.create_dataset("empty", (0, 4), "<u4", maxshape=(None, 4), chunks=(1, 4))
        group["contiguous"] = np.arange(4)
        group.create_group("sub")
        group["type"] = np.dtype("<u4")
    opened = []
    check = _containment._check_object
    monkeypatch.setattr(
        _containment, "_check_object", lambda *a, **k: opened.append(a[1]) or check(*a, **k)
    )
    with h5store.open(out) as store:
        assert len(store) == len(photo_crops()[1])
    assert {b"empty", b"contiguous", b"type"} <= set(opened)
    assert named["stack"].rsplit("/", 1)[1].encode() not in opened  # settled by its header
    with h5py.File(out, "r+") as f:
        f[named["group"]].create_dataset("outside", (4,), "<u4", external=[(str(out), 0, 16)])
    with pytest.raises(FormatError, match=f"{named['group']}/outside is a dataset stored in"):
        h5store.open(out)


def test_the_walks_class_attributes_are_those_read_again(base):
    """check_classes compares what the walk at open read; reading the attributes again (a
    writer's handle, a SWMR reader's reopened one) gives the same."""
    _, path, _ = base
    with h5store.open(path) as store:
        walked = store._file.class_attributes
        assert walked and all(walked.values())
        store._file.class_attributes = None
        assert _containment.class_attributes(store._file) == walked
    with h5store.open(path, "a") as store:
        assert store._file.class_attributes is None  # (recovery may still change them)
