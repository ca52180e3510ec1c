"""The package's shape: what ships with it and which module may import which."""

import ast
import shutil
import subprocess
import sys
import typing
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "h5store" / "bench"


def _runtime_imports(path: Path) -> set[str]:
    """Sibling modules of h5store.bench that ``path`` imports when run (annotation-only imports
    under ``if TYPE_CHECKING:`` excluded; imports inside functions included)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_bench_modules_import_each_other_without_a_circle():
    graph = {p.stem: _runtime_imports(p) for p in BENCH.glob("*.py") if p.stem != "__init__"}
    assert graph["results"] >= {"recommend", "report"}, graph["results"]
    state: dict[str, str] = {}

    def walk(module: str, trail: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import circle: {' -> '.join([*trail, module])}"
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            walk(imported, [*trail, module])
        state[module] = "done"

    for module in sorted(graph):
        walk(module, [])


def test_bench_modules_import_in_any_order():
    for module in ("results", "recommend", "report", "plot", "runner", "cli"):
        code = f"import h5store.bench.{module}; import h5store.bench"
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
        )
        assert result.returncode == 0, (module, result.stderr)


def test_the_recommendation_field_is_typed():
    from h5store.bench.recommend import Recommendation
    from h5store.bench.results import BenchResult

    hints = typing.get_type_hints(BenchResult)
    assert hints["recommendation"] == Recommendation | None
    assert typing.get_type_hints(BenchResult.recommend)["return"] is Recommendation


def test_the_wheel_ships_py_typed_and_no_tests(tmp_path):
    # built from a copy: setuptools writes build/ and *.egg-info next to the sources
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "h5store", source / "h5store", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("h5store-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "h5store/py.typed" in names
    assert "h5store/codecs/registry.py" in names
    assert "h5store/cli/cmd_import.py" in names  # the CLI's subpackage ships too
    assert not [n for n in names if n.startswith("tests/")]


def _package_graph() -> dict[str, set[str]]:
    """Module -> the h5store modules it imports when run (function-level imports included,
    ``if TYPE_CHECKING:`` excluded), over the whole package."""
    package = ROOT / "h5store"

    def name_of(path: Path) -> str:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def imported(node: ast.AST, base: str, found: set[str]) -> set[str]:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                imported(child, base, found)
            return found
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = base.split(".")
            target = ".".join(parts[: len(parts) - node.level + 1] + [node.module or ""])
            target = target.rstrip(".")
            if node.module:  # `from . import x` names submodules, not the package being run
                found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            imported(child, base, found)
        return found

    modules = {name_of(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        base = name if path.stem == "__init__" else name.rpartition(".")[0]
        found = imported(ast.parse(path.read_text()), base, set())
        graph[name] = {m for m in found if m in modules and m not in (name, "h5store")}
    return graph


def test_no_module_of_the_package_imports_itself_through_others():
    graph = _package_graph()
    assert len(graph) > 40 and graph["h5store.api"] >= {"h5store.store", "h5store.sharded"}
    state: dict[str, str] = {}

    def walk(module: str, trail: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import circle: {' -> '.join([*trail, module])}"
        state[module] = "open"
        for imported in sorted(graph[module]):
            walk(imported, [*trail, module])
        state[module] = "done"

    for module in sorted(graph):
        walk(module, [])


def test_open_sits_above_both_store_types():
    graph = _package_graph()
    assert "h5store.sharded" not in graph["h5store.store"]
    for below in ("h5store.store", "h5store.sharded", "h5store._read", "h5store._contract"):
        assert "h5store.api" not in graph[below], below


def test_each_command_is_one_module_that_the_cli_docstring_lists():
    import argparse

    import h5store.cli

    modules = {p.stem for p in (ROOT / "h5store" / "cli").glob("cmd_*.py")}
    registered = {m.__name__.rsplit(".", 1)[-1] for m in h5store.cli.COMMANDS}
    assert modules <= registered, modules - registered  # a command module nobody registers
    for module in h5store.cli.COMMANDS:
        assert callable(module.add_parser) and callable(module.run), module.__name__
    (commands,) = [
        a for a in h5store.cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    assert len(commands.choices) == len(h5store.cli.COMMANDS)
    for name, parser in commands.choices.items():
        assert f"``{name}``" in h5store.cli.__doc__, name
        assert parser.get_default("func").__module__ in {m.__name__ for m in h5store.cli.COMMANDS}
