"""Crafted files and closed pipes end in h5store's own errors: verify, info, export and the
command line raise or print an H5StoreError (exit status 2, one line, no traceback), never a
KeyError, RuntimeError, OSError or BrokenPipeError (issue 22 item 5)."""

import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import h5store_cli

import h5store
from h5store import format as fmt
from h5store.folders import MAX_NAME_BYTES, export_folder, folder_name, import_folder

STACK = fmt.stack_path("a", 8, 8, 1, "uint8")


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base.h5"
    with h5store.open(path, "w", codec="png") as store:
        store.add_batch(np.arange(4 * 64, dtype=np.uint8).reshape(4, 8, 8), labels=list("abab"))
    return path


def _crafted(base, name, edit):
    path = base.with_name(f"{name}.h5")
    shutil.copy(base, path)
    with h5py.File(path, "r+", locking=False) as f:
        edit(f)
    return path


def _looped_stack(f):
    del f[STACK]
    f[STACK] = h5py.SoftLink(STACK)


def _dangling_stack(f):
    del f[STACK]
    f[STACK] = h5py.SoftLink("/nowhere")


def _virtual_stack(f):
    old = f[STACK]
    layout = h5py.VirtualLayout(shape=old.shape, dtype=old.dtype)
    f.move(STACK, "/moved")
    layout[...] = h5py.VirtualSource(f["/moved"])
    f.create_virtual_dataset(STACK, layout)


def _looped_classes(f):
    f.move(fmt.CLASSES, "/moved")
    f[fmt.CLASSES] = h5py.SoftLink(f"/{fmt.CLASSES}")


def _looped_class(f):
    f.move(f"/{fmt.CLASSES}/a", "/moved")
    f[f"/{fmt.CLASSES}/a"] = h5py.SoftLink(f"/{fmt.CLASSES}/a")


CRAFTED = {
    "looped-stack": _looped_stack,
    "dangling-stack": _dangling_stack,
    "virtual-stack": _virtual_stack,
    "looped-classes": _looped_classes,
    "looped-class": _looped_class,
}


@pytest.mark.parametrize("kind", CRAFTED)
def test_verify_of_a_linked_looped_or_virtual_stack_is_an_h5store_error(base, kind):
    # (a store that refuses such a file at open passes too: the error is h5store's own)
    path = _crafted(base, kind, CRAFTED[kind])
    with pytest.raises(h5store.H5StoreError, match="classes"):
        with h5store.open(path) as store:
            store.verify()


@pytest.mark.parametrize("kind", CRAFTED)
@pytest.mark.parametrize("command", ["info", "verify"])
def test_cli_on_a_crafted_file_exits_2_with_one_line(base, kind, command):
    path = _crafted(base, kind, CRAFTED[kind])
    done = h5store_cli(command, str(path), check=False)
    if done.returncode == 0:  # info reads no stack: a looped stack does not concern it
        assert command == "info" and "stack" in kind
        return
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("h5store: error: ") and len(done.stderr.splitlines()) == 1


def test_a_closed_pipe_ends_the_command_quietly(base):
    """``h5store info FILE | head -2``: the reader leaves before the writer is done. The pipe
    is closed before the command writes, so this is deterministic."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "h5store.cli", "info", str(base)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 141  # as for a process SIGPIPE ended


def test_info_piped_into_head_prints_no_traceback(base):
    done = subprocess.run(
        f"{sys.executable} -m h5store.cli info {base} | head -2",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.splitlines()[0].startswith(str(base)) and done.stderr == ""


# --------------------------------------------------------------------------- export names


# Labels are at most 255 bytes; percent-encoding can triple them.
LONG_LABELS = [
    "/" * 100,  # escaped: 300 bytes
    "/" * 100 + "x",  # the same first 237 bytes
    "é" * 100 + ":" * 20,  # 200 bytes of UTF-8 kept, then 60 of escapes
    "a" * 230 + "%" * 10,  # the cut at byte 237 falls inside the third escape %25
    "/" * 85,  # 255 bytes escaped: fits exactly, kept as it is
]


def test_folder_names_fit_a_file_name_and_stay_distinct():
    names = [folder_name(label) for label in LONG_LABELS]
    assert all(len(name.encode("utf-8")) <= MAX_NAME_BYTES for name in names)
    assert len(set(names)) == len(names)
    assert names[-1] == "%2F" * 85
    assert "%~" in names[0] and "%~" not in fmt.safe_name(LONG_LABELS[0])
    # a cut escape is dropped whole: every '%' left starts an escape or the marker
    for name in names[:4]:
        body = name.split("%~")[0]
        assert all(body[k + 1 : k + 3].isalnum() for k, c in enumerate(body) if c == "%")


def test_export_of_labels_too_long_for_a_file_name_round_trips(tmp_path):
    path = tmp_path / "long.h5"
    images = np.arange(len(LONG_LABELS) * 16, dtype=np.uint8).reshape(-1, 4, 4)
    with h5store.open(path, "w", codec="png") as store:
        ids = store.add_batch(images, labels=LONG_LABELS)
        export_folder(store, tmp_path / "out")
    folders = sorted(os.listdir(tmp_path / "out"))
    assert len([f for f in folders if not f.startswith("h5store-index")]) == len(LONG_LABELS)
    back = tmp_path / "back.h5"
    with h5store.open(back, "w", codec="png") as store:
        import_folder(store, tmp_path / "out")
        assert sorted(store.record(i).label for i in store.ids()) == sorted(LONG_LABELS)
        for image_id, image in zip(ids.tolist(), images):
            assert np.array_equal(store[image_id], image)
