"""Import stays inside its folder (issue 22, item 6): symbolic links leading out of the folder
are refused (``follow_links=True`` / ``--follow-links`` follows them), links to files and
folders inside it are followed, a link loop ends, and no error message quotes a file's
content."""

import os

import imagecodecs
import numpy as np
import pytest
from conftest import file_digest

import h5store
from h5store.cli import main as cli
from h5store.errors import InvalidInputError
from h5store.folders import export_folder, import_folder, list_folder

SECRET = b"TOPSECRET root:x:0:0:root:/root:/bin/bash\n"


def _png(value: int) -> bytes:
    return imagecodecs.png_encode(np.full((8, 8, 3), value, np.uint8))


@pytest.fixture
def tree(tmp_path):
    """root/cat/{0,1}.png, root/dog/2.png, and outside it: an image, a folder of images and a
    text file with a secret."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    for rel, value in (("cat/0.png", 0), ("cat/1.png", 10), ("dog/2.png", 20)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_png(value))
    (outside / "more").mkdir(parents=True)
    (outside / "image.png").write_bytes(_png(100))
    (outside / "more" / "3.png").write_bytes(_png(110))
    (outside / "secret.txt").write_bytes(SECRET)
    store = tmp_path / "store.h5"
    h5store.open(store, "w", codec="png").close()
    return root, outside, store


def _imported(root, store, **kwargs):
    with h5store.open(store, "a") as s:
        import_folder(s, root, progress=False, **kwargs)
        return sorted(s.sources), [s[i][0, 0, 0] for i in s.ids()]


def _refused(root, store, link, **kwargs):
    before = file_digest(store)
    with h5store.open(store, "a") as s, pytest.raises(InvalidInputError) as info:
        import_folder(s, root, progress=False, **kwargs)
    assert str(link) in str(info.value)
    assert "follow_links" in str(info.value)
    assert file_digest(store) == before  # refused before anything was written
    return str(info.value)


@pytest.mark.parametrize(
    "where, target",
    [
        ("cat/evil.png", "image.png"),  # a file link
        ("cat/sub", "more"),  # a folder link inside a class folder
        ("bird", "more"),  # a class folder that is a link
    ],
)
def test_a_link_out_of_the_folder_is_refused_unless_asked_for(tree, where, target):
    root, outside, store = tree
    link = root / where
    link.symlink_to(outside / target)
    _refused(root, store, link)
    with pytest.raises(InvalidInputError, match="follow_links"):
        list_folder(root)  # what the Dask import reads
    sources, _ = _imported(root, store, follow_links=True)
    assert len(sources) == 4
    assert any(str(link) in source for source in sources)


def test_a_link_below_a_linked_parent_is_caught_too(tree):
    """A file whose own name is no link, but a folder above it (below the root) is."""
    root, outside, store = tree
    (root / "cat" / "deep").symlink_to(outside)
    _refused(root, store, root / "cat" / "deep")


def test_links_inside_the_folder_are_followed_and_a_loop_ends(tree):
    root, _, store = tree
    (root / "cat" / "alias.png").symlink_to(root / "dog" / "2.png")
    (root / "cat" / "again").symlink_to(root / "cat")  # a loop
    (root / "fish").symlink_to(root / "dog")  # a class folder linked inside the root
    sources, pixels = _imported(root, store)
    names = [os.path.relpath(s, root) for s in sources]
    assert names == ["cat/0.png", "cat/1.png", "cat/alias.png", "dog/2.png", "fish/2.png"]
    assert sorted(pixels) == [0, 10, 20, 20, 20]


def test_no_error_quotes_a_files_content(tree):
    root, outside, store = tree
    (root / "cat" / "notes.png").write_bytes(SECRET)  # not an image, inside the folder
    message = _error(root, store)
    assert str(root / "cat" / "notes.png") in message and "TOPSECRET" not in message
    (root / "cat" / "notes.png").unlink()
    (root / "cat" / "linked.png").symlink_to(outside / "secret.txt")
    assert "TOPSECRET" not in _refused(root, store, root / "cat" / "linked.png")
    message = _error(root, store, follow_links=True)  # followed: read, but not quoted
    assert "linked.png" in message and "TOPSECRET" not in message and "root:" not in message


@pytest.mark.parametrize("name", ["h5store-index.json", "h5store-index.csv"])
def test_an_index_file_is_neither_followed_out_nor_quoted(tree, name):
    root, outside, store = tree
    (root / name).symlink_to(outside / "secret.txt")
    _refused(root, store, root / name)
    message = _error(root, store, follow_links=True)
    assert name in message and "TOPSECRET" not in message and "root:" not in message
    (root / name).unlink()
    header = "file,id,label,true_label,score,source,codec,crc32\n"
    (root / name).write_text(header + "cat/0.png,TOPSECRET,cat,,,,png,\n")
    assert "TOPSECRET" not in _error(root, store)


def test_an_index_entry_through_a_link_out_is_refused(tree):
    root, outside, store = tree
    export = root.with_name("export")
    with h5store.open(store.with_name("src.h5"), "w", codec="png") as s:
        s.add_batch(np.zeros((1, 8, 8, 3), np.uint8), labels=["cat"])
        export_folder(s, export, progress=False)
    (export / "cat" / "0.png").unlink()
    (export / "cat" / "0.png").symlink_to(outside / "image.png")
    _refused(export, store, export / "cat" / "0.png")
    with pytest.raises(InvalidInputError, match="outside"):  # a name climbing out, as before
        (export / "cat" / "0.png").unlink()
        index = (export / "h5store-index.json").read_text()
        (export / "h5store-index.json").write_text(index.replace("cat/0.png", "../x.png"))
        _imported(export, store, follow_links=True)


def test_the_cli_refuses_and_follows_on_request(tree, capsys):
    root, outside, store = tree
    (root / "cat" / "evil.png").symlink_to(outside / "image.png")
    assert cli(["import", "--quiet", str(root), str(store)]) == 2
    err = capsys.readouterr().err
    assert "evil.png" in err and "--follow-links" in err and "Traceback" not in err
    assert cli(["import", "--quiet", "--follow-links", str(root), str(store)]) == 0
    with h5store.open(store) as s:
        assert len(s) == 4


def _error(root, store, **kwargs) -> str:
    with h5store.open(store, "a") as s, pytest.raises(InvalidInputError) as info:
        import_folder(s, root, progress=False, **kwargs)
    return str(info.value)
