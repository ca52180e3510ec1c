"""notebooks/quickstart.ipynb: a CNN trained in-process, inference into h5store, the benchmark
with that CNN as judge, repack, export with metadata and the index in SQLite. CI executes it
(torch, the notebooks, export and sql extras are installed there: a missing one fails)."""

import os

import pytest

NOTEBOOK = os.path.join(os.path.dirname(__file__), os.pardir, "notebooks", "quickstart.ipynb")


def execute(tmp_path, prelude=None):
    try:
        import ipykernel  # noqa: F401
        import nbclient
        import nbformat
    except ImportError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"install h5store[notebooks] to run the notebook ({exc.name} missing)")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    if prelude:
        nb.cells.insert(0, nbformat.v4.new_code_cell(prelude))
    nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_the_quickstart_notebook_runs_end_to_end(tmp_path):
    if not os.environ.get("CI"):
        pytest.importorskip("torch")
    printed = execute(tmp_path)
    assert "held-out accuracy" in printed and "images the CNN got wrong" in printed
    assert "Recommended (smallest meeting SSIM >= 0.95, agreement >= 0.99, decode >= " in printed
    assert "Apply it: h5store repack quickstart.h5" in printed
    assert "re-encoded" in printed and (tmp_path / "quickstart-small.h5").exists()
    assert "h5store id " in printed and "'store': 'quickstart-small.h5'" in printed
    assert os.path.getsize(tmp_path / "quickstart-small.h5") < os.path.getsize(
        tmp_path / "quickstart.h5"
    )
    assert (tmp_path / "quickstart.db").exists()
    assert (tmp_path / "quickstart-cats" / "h5store-index.json").exists()


def test_without_torch_the_first_cell_says_so_and_nothing_fails(tmp_path):
    printed = execute(tmp_path, prelude="import sys\nsys.modules['torch'] = None")
    assert "needs torch" in printed and "remaining cells are skipped" in printed
    assert not list(tmp_path.iterdir())
