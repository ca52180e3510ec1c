"""What the docs promise about the repository itself: the README's two commands are the ones CI
runs and installs, every guide page is in the site's navigation, and the CLI reference covers
every command. (The docs' code blocks run as tests through conftest.py; `mkdocs build --strict`
runs in .ci/run.)"""

import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block, "the README opens with a bash block of its two commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_test_command_is_what_ci_runs():
    demo, tests = _readme_commands()
    assert tests in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests.endswith(".venv/bin/python -m pytest")


def test_readme_demo_command_installs_what_it_runs():
    demo, _ = _readme_commands()
    tomllib = pytest.importorskip("tomllib")  # Python 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = re.search(r"-e '\.\[([a-z,]+)\]'", demo).group(1).split(",")
    assert set(extras) <= set(project["optional-dependencies"])
    assert demo.endswith(".venv/bin/h5store demo")
    assert "h5store" in project["scripts"]


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert pages
    missing = [page for page in pages if f" {page}" not in nav]
    assert not missing, f"pages not in mkdocs.yml's nav (unreachable on the site): {missing}"


def test_cli_reference_covers_every_command():
    pytest.importorskip("mkdocs", reason="the docs hook needs mkdocs (pip install '.[docs]')")
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        hooks = importlib.import_module("hooks")
    finally:
        sys.path.remove(str(ROOT / "docs"))
    reference = hooks.cli_reference()
    from h5store.cli import build_parser

    for name, _summary, sub in hooks._subcommands(build_parser()):
        assert f"## `h5store {name}`" in reference
        assert sub.format_usage().split()[1:3] == ["h5store", name]
    assert len(hooks._subcommands(build_parser())) >= 13
