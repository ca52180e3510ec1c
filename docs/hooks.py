"""mkdocs hooks (mkdocs.yml `hooks:`): what the site shows that is not a file under docs/.

* The command-line reference is generated from h5store's argparse parser at every build, so it
  cannot drift from what `h5store --help` prints: `<!-- cli-reference -->` in cli.md is
  replaced by each command's help.
* The docstrings' Sphinx roles (``:meth:`commit` ``), which mkdocstrings' Markdown shows as
  they are, are shown as the code they name (``~a.b.c`` as ``c``, as Sphinx does).
* The benchmark method and results (benchmarks/README.md, benchmarks/results/) live beside the
  scripts that write them; they are published under the same paths, so the links the guide
  pages carry over from the README resolve on the site.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
CLI_MARKER = "<!-- cli-reference -->"
#: Published from outside docs/: (folder under the repository root, file name suffixes).
EXTRA = [("benchmarks", (".md",)), ("benchmarks/results", (".md", ".png"))]
#: A Sphinx role around a code span, as Markdown renders it: :meth:<code>~h5store.x.y</code>.
SPHINX_ROLE = re.compile(r":(?:meth|func|class|attr|data|exc|mod|obj):<code>(~?)([^<]*)</code>")
#: argparse wraps help to the terminal width; fixed, so the page is the same on every machine.
HELP_WIDTH = "100"


def on_files(files: Files, config) -> Files:
    for folder, suffixes in EXTRA:
        for path in sorted((ROOT / folder).iterdir()):
            if path.is_file() and path.suffix in suffixes:
                files.append(
                    File(
                        f"{folder}/{path.name}",
                        src_dir=str(ROOT),
                        dest_dir=config["site_dir"],
                        use_directory_urls=config["use_directory_urls"],
                    )
                )
    return files


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    # argparse keeps subcommands in its _SubParsersAction; its one-line helps sit in
    # _choices_actions, in the order the commands were added.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def cli_reference() -> str:
    # The parser of the checkout being documented, as mkdocstrings reads its sources (paths:
    # [.]), not of whatever h5store the environment has installed elsewhere.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from h5store.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        parser = build_parser()
        parts = ["```text", parser.format_help().rstrip(), "```", ""]
        for name, summary, sub in _subcommands(parser):
            sentence = summary.rstrip(".")
            parts += [f"## `h5store {name}`", "", sentence[:1].upper() + sentence[1:] + ".", ""]
            parts += ["```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown


def _role_code(match: re.Match) -> str:
    tilde, name = match.groups()
    return f"<code>{name.rsplit('.', 1)[-1] if tilde else name}</code>"


def on_page_content(html: str, page, config, files) -> str:
    return SPHINX_ROLE.sub(_role_code, html)
