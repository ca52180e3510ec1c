"""Writes the operating system refuses: a full disk (EFBIG through RLIMIT_FSIZE, ENOSPC on a
small tmpfs where the machine allows mounting one), I/O errors (EIO injected into the write
system calls with strace), read-only files and directories, permission denied, a path that
vanishes. Each gives its own H5StoreError, and every committed image survives."""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import file_digest

import h5store
from h5store._file import WriterLock

SHAPES = [(24, 24, 3), (20, 28), (16, 16, 4)]


def image_of(image_id: int) -> np.ndarray:
    """The pixels of image ``image_id``: derived from the id, so any process can check them."""
    shape = SHAPES[image_id % 3]
    return np.random.default_rng(image_id).integers(0, 256, shape, dtype=np.uint8)


# Appends batches to a store until a write is refused, logging the ids of every batch a commit
# covered (group commit: the returned ids but those still pending, as commits go in order) and
# those it deleted; then reports what it raised and waits, still alive, until stdin closes.
WRITER = textwrap.dedent(
    """
    import json, resource, signal, sys
    import numpy as np
    import h5store
    sys.path.insert(0, sys.argv[3])
    from test_io_errors import image_of
    path, limit = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    if limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    returned, committed, deleted, outcome = [], [], [], None
    try:
        # Small groups: a write refused after several commits, and mid-group.
        store = h5store.open(path, "a", codec="png", labels=[f"c{k}" for k in range(4)],
                             group_commit=h5store.GroupCommit(images=8))
        next_id = len(store)
        for batch in range(10_000):
            n = 1 + batch % 37
            ids = list(range(next_id, next_id + n))
            labels = [f"c{(i // 5) % 4}" for i in ids]
            if batch % 7 == 6:
                labels = [f"new{batch}"] * n  # a new class: structure written mid-session
                store.add_labels(labels[:1])
                store.add_batch([image_of(i) for i in ids], labels=labels, ids=ids)
            else:
                scores = np.full((n, len(store.labels)), 1 / len(store.labels), np.float32)
                store.add_batch([image_of(i) for i in ids], labels=labels, ids=ids,
                                scores=scores if len(store.labels) == 4 else None,
                                sources=[f"s{i}" for i in ids])
            returned.extend(ids)
            if batch % 11 == 10:
                store.delete(ids[:1])  # (commits what is pending first)
                deleted.append(ids[0])
            committed = returned[: len(returned) - store.pending]
            next_id += n
        store.close()
    except h5store.H5StoreError as exc:
        outcome = [type(exc).__name__, getattr(exc, "errno", None), str(exc)]
    except BaseException as exc:
        outcome = ["raw " + type(exc).__name__, None, str(exc)]
    print(json.dumps({"committed": committed, "deleted": deleted, "outcome": outcome}), flush=True)
    sys.stdin.read()
    """
)


def start_writer(path, limit=0, prefix=()):
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", WRITER, path, str(limit), os.path.dirname(__file__)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def writer_result(proc, timeout=120):
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return json.loads(line)


def check_recovers(path, committed, deleted=()):
    """Every committed image comes back exactly (but those deleted), and the next writer
    appends."""
    with h5store.open(path, "a", codec="png") as store:
        missing = [i for i in committed if i not in store and i not in set(deleted)]
        assert not missing, f"committed images lost: {missing[:10]}"
        for i in committed:
            if i in store:
                assert np.array_equal(store[i], image_of(i)), i
        start = 1_000_000
        store.add_labels(["after"])
        store.add_batch(
            [image_of(i) for i in range(start, start + 3)],
            labels=["after"] * 3,
            ids=range(start, start + 3),
        )
    with h5store.open(path) as store:
        assert store.verify().ok
        assert np.array_equal(store[start + 2], image_of(start + 2))


def seed_store(path):
    with h5store.open(path, "w", codec="png", labels=[f"c{k}" for k in range(4)]) as store:
        store.add_batch(
            [image_of(i) for i in range(10)], labels=[f"c{i % 4}" for i in range(10)], ids=range(10)
        )


@pytest.mark.parametrize("extra_kb", [0, 3, 9, 17, 30, 46, 80, 131, 200, 333])
def test_file_size_limit_mid_batch_keeps_every_committed_image(tmp_path, extra_kb):
    path = str(tmp_path / "full.h5")
    seed_store(path)
    limit = os.path.getsize(path) + extra_kb * 1024 + 517  # odd: lands inside writes
    proc = start_writer(path, limit)
    try:
        result = writer_result(proc)
        name, code, message = result["outcome"]
        assert name == "StorageFullError" and code == errno.EFBIG, result["outcome"]
        assert "reopen with mode 'a'" in message
        # The failed writer is still alive, and its lock is gone.
        assert not WriterLock.is_held(path)
        check_recovers(path, list(range(10)) + result["committed"], result["deleted"])
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    # Its exit wrote nothing more (HDF5's handle was pointed away from the file).
    with h5store.open(path) as store:
        assert store.verify().ok


def test_reader_of_a_store_whose_writer_hit_the_limit_gets_a_clear_error(tmp_path):
    path = str(tmp_path / "full.h5")
    seed_store(path)
    proc = start_writer(path, os.path.getsize(path) + 40_000)
    try:
        writer_result(proc)
        # Readers never modify the file: they read what is committed or say how to recover.
        try:
            with h5store.open(path) as store:
                assert all(np.array_equal(store[i], image_of(i)) for i in range(10))
        except h5store.RecoveryNeededError as exc:
            assert "mode 'a'" in str(exc)
    finally:
        proc.communicate(timeout=60)


def test_short_file_closed_cleanly_is_extended_and_recovered(tmp_path):
    """What h5store before this fix left on a full disk: flags cleared, the file shorter than
    the end HDF5 recorded. Recovery extends it (a hole) and keeps every committed image."""
    path = str(tmp_path / "short.h5")
    seed_store(path)
    with h5store.open(path, "a") as store:
        store.add_batch([image_of(i) for i in range(10, 20)], labels=["c1"] * 10, ids=range(10, 20))
    # HDF5 recorded space it did not get to write: the EOA moves past the end of the file.
    import struct

    from h5store._superblock import lookup3

    with open(path, "r+b") as fh:
        block = bytearray(fh.read(48))
        eoa = struct.unpack_from("<Q", block, 28)[0]
        struct.pack_into("<Q", block, 28, eoa + 20_000)
        struct.pack_into("<I", block, 44, lookup3(bytes(block[:44])))
        fh.seek(0)
        fh.write(block)
    with pytest.raises(h5store.RecoveryNeededError, match="mode 'a'"):
        h5store.open(path)
    check_recovers(path, list(range(20)))


def test_file_cut_short_is_not_papered_over(tmp_path):
    """A copy cut short loses committed images: recovery says so and leaves the file as it
    was, instead of extending it with zeros."""
    path = str(tmp_path / "cut.h5")
    seed_store(path)
    with h5store.open(path, "a") as store:
        store.add_batch([image_of(i) for i in range(10, 40)], labels=["c1"] * 30, ids=range(10, 40))
    with h5store.open(path) as store:
        last_chunk = int(store.index["offset"][-1])
    os.truncate(path, last_chunk + 10)
    before = file_digest(path)
    with pytest.raises(h5store.FormatError, match="truncated"):
        h5store.open(path, "a")
    assert file_digest(path) == before


def _can_mount_tmpfs(where) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    ok = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(where)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    return ok


def test_full_file_system_enospc(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if not _can_mount_tmpfs(mnt):
        pytest.skip("cannot mount a small tmpfs here (needs root); EFBIG tests cover the path")
    try:
        path = str(mnt / "full.h5")
        seed_store(path)
        proc = start_writer(path)
        result = writer_result(proc)
        name, code, _ = result["outcome"]
        assert name == "StorageFullError" and code == errno.ENOSPC, result["outcome"]
        proc.communicate(timeout=60)
        # Free space (as a user would), then recover in a roomier place.
        moved = str(tmp_path / "moved.h5")
        shutil.copyfile(path, moved)
        check_recovers(moved, list(range(10)) + result["committed"], result["deleted"])
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.skipif(
    not shutil.which("strace"), reason="strace injects the I/O error (.ci/run installs it)"
)
@pytest.mark.parametrize("nth_write", [40, 90, 150, 260])
def test_io_error_mid_batch(tmp_path, nth_write):
    """EIO for real at the system-call boundary: strace makes the nth write (pwrite64) to the
    store file fail, and every later one, as a dying disk would. Only writes to that file: the
    writer, stopping, points HDF5's descriptor at /dev/null so that HDF5's close writes
    nowhere, and a disk that fails does not make /dev/null fail (injected there too, HDF5's
    close failed halfway and the process crashed later)."""
    path = str(tmp_path / "eio.h5")
    seed_store(path)
    prefix = [
        "strace",
        "-f",
        "-qq",
        "-o",
        os.devnull,
        "-P",
        path,
        "-e",
        "trace=pwrite64",
        "-e",
        f"inject=pwrite64:error=EIO:when={nth_write}+",
    ]
    proc = start_writer(path, prefix=prefix)
    try:
        result = writer_result(proc)
        name, code, message = result["outcome"]
        assert name == "WriteFailedError" and code == errno.EIO, result["outcome"]
        assert "Input/output error" in message
        check_recovers(path, list(range(10)) + result["committed"], result["deleted"])
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == 0, "the writer's process did not survive its disk failing"


def _as_nobody(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run code as user nobody (root ignores file permissions). The interpreter starts as
    root, imports h5store, then drops to nobody (who cannot read the virtualenv)."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    drop = (
        f"import h5store, numpy, h5py, os\nos.setgid({nobody.pw_gid}); os.setuid({nobody.pw_uid})\n"
    )
    return subprocess.run(
        [sys.executable, "-c", drop + code, *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )


TRY_OPEN = textwrap.dedent(
    """
    import sys, numpy as np, h5store
    try:
        with h5store.open(sys.argv[1], sys.argv[2]) as s:
            s.add(np.zeros((4, 4), np.uint8), label="x")
        print("ok")
    except h5store.H5StoreError as exc:
        print(type(exc).__name__, "|", exc)
    """
)


@pytest.fixture
def shared_dir():
    """A directory user nobody can reach (pytest's tmp_path lies in a directory private to
    root)."""
    import tempfile

    d = tempfile.mkdtemp(prefix="h5store-perm-")
    os.chmod(d, 0o777)
    yield Path(d)
    os.chmod(d, 0o755)
    shutil.rmtree(d)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="drops to user nobody (CI runs as root)")


@needs_root
def test_read_only_file_permission_denied(shared_dir):
    path = str(shared_dir / "ro.h5")
    seed_store(path)
    os.chmod(path, 0o444)
    before = file_digest(path)
    out = _as_nobody(TRY_OPEN, path, "a")
    assert out.stdout.startswith("StorePermissionError | "), out.stdout + out.stderr
    assert "not writable" in out.stdout and "mode 'r'" in out.stdout
    assert file_digest(path) == before
    # Reading it is fine.
    read = _as_nobody("import sys, h5store; print(len(h5store.open(sys.argv[1])))", path)
    assert read.stdout.strip() == "10", read.stderr


@needs_root
def test_unreadable_file_permission_denied(shared_dir):
    path = str(shared_dir / "secret.h5")
    seed_store(path)
    os.chmod(path, 0o200)
    code = textwrap.dedent(
        """
        import sys
        try:
            h5store.open(sys.argv[1])
        except h5store.H5StoreError as exc:
            print(type(exc).__name__, "|", exc)
        """
    )
    out = _as_nobody(code, path)
    assert out.stdout.startswith("StorePermissionError | "), out.stdout + out.stderr
    assert "not readable" in out.stdout


@needs_root
def test_read_only_directory_permission_denied(shared_dir):
    os.chmod(shared_dir, 0o555)
    path = str(shared_dir / "new.h5")
    out = _as_nobody(TRY_OPEN, path, "w")
    assert out.stdout.startswith("StorePermissionError | "), out.stdout + out.stderr
    assert "directory" in out.stdout and "not writable" in out.stdout
    assert not os.path.exists(path)


def test_read_only_file_system(tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if not _can_mount_tmpfs(mnt):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        path = str(mnt / "s.h5")
        seed_store(path)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(h5store.StorePermissionError, match="read-only"):
            h5store.open(path, "a")
        with h5store.open(path) as store:  # reading still works
            assert np.array_equal(store[3], image_of(3))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("how", ["deleted", "replaced", "directory renamed"])
def test_path_vanishing_under_a_writer(tmp_path, how):
    folder = tmp_path / "run"
    folder.mkdir()
    path = str(folder / "s.h5")
    seed_store(path)
    store = h5store.open(path, "a")
    store.add(image_of(10), label="c1", id=10)
    store.commit()
    if how == "deleted":
        os.unlink(path)
    elif how == "replaced":
        os.rename(path, path + ".old")
        shutil.copyfile(path + ".old", path)
    else:
        os.rename(folder, tmp_path / "elsewhere")
    store.add(image_of(11), label="c1", id=11)  # pending: nothing is written yet
    with pytest.raises(h5store.StoreVanishedError, match="deleted or replaced") as raised:
        store.commit()
    assert "not stored" in str(raised.value) and "11" in str(raised.value)
    assert raised.value.unstored_ids == (11,)
    assert store.closed
    store.close()  # harmless
    with pytest.raises(h5store.StoreNotFoundError if how == "deleted" else h5store.H5StoreError):
        if how == "deleted":
            h5store.open(path)
        else:
            raise h5store.H5StoreError("the moved file is checked below")
    if how == "directory renamed":
        with h5store.open(str(tmp_path / "elsewhere" / "s.h5"), "a") as moved:
            assert np.array_equal(moved[10], image_of(10))
