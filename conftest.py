"""Runs the python code blocks of README.md and docs/*.md as tests (Sybil), so that the
examples cannot go stale: `python -m pytest` collects them beside tests/ (pyproject's
testpaths).

Each document runs top to bottom in one namespace, in a temporary working directory of its
own, so a block may use what an earlier block of the same page made (``run.h5``). A block that
cannot run here (it needs your model, a GPU cluster, a server) is preceded by
``<!-- skip: next -->``; setup a page needs but should not show goes in an
``<!-- invisible-code-block: python -->`` comment. Blocks in other languages (``bash``,
``text``, ``toml``) are shown, never run.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser


def _enter_scratch_dir(namespace: dict) -> None:
    namespace["__cwd"] = os.getcwd()
    namespace["__scratch"] = tempfile.mkdtemp(prefix="h5store-docs-")
    os.chdir(namespace["__scratch"])


def _leave_scratch_dir(namespace: dict) -> None:
    # Stores a page left open would keep their files (and writer locks) past the test.
    for value in list(namespace.values()):
        close = getattr(value, "close", None)
        if type(value).__module__.startswith("h5store") and callable(close):
            close()
    os.chdir(namespace["__cwd"])
    shutil.rmtree(namespace["__scratch"], ignore_errors=True)


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["README.md", "docs/*.md"],
    setup=_enter_scratch_dir,
    teardown=_leave_scratch_dir,
).pytest()
