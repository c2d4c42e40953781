"""Method tables in ``docs/`` generated from the registries.

A Markdown page marks where a family's table goes::

    <!-- registry-table: losses -->
    (generated; do not edit)
    <!-- /registry-table -->

``python -m hashlab.docgen docs`` rewrites every such block; ``--check`` only reports the
pages whose tables are stale (exit code 1), which the test suite runs.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hashlab.registry import Registry, all_families

__all__ = ["family_table", "format_defaults", "render", "update_docs"]

_BLOCK = re.compile(r"(<!-- registry-table: ([a-z0-9-]+) -->\n)(.*?)(<!-- /registry-table -->)",
                    re.S)


def format_defaults(defaults: Mapping[str, Any]) -> str:
    """``a=1, b='x'`` (``-`` when there is none)."""
    return ", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "-"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def family_table(registry: Registry[Any]) -> str:
    """A Markdown table of a family: key, aliases, description, defaults."""
    lines = ["| name | aliases | description | defaults |", "|---|---|---|---|"]
    for e in registry.entries():
        aliases = ", ".join(f"`{a}`" for a in e.aliases) or "-"
        lines.append(f"| `{e.name}` | {aliases} | {_cell(e.description)} | "
                     f"{_cell(format_defaults(e.defaults))} |")
    return "\n".join(lines) + "\n"


def render(text: str, families: Mapping[str, Registry[Any]] | None = None) -> str:
    """``text`` with every registry-table block regenerated."""
    families = all_families() if families is None else families

    def replace(m: re.Match[str]) -> str:
        name = m.group(2)
        if name not in families:
            raise KeyError(f"registry-table {name!r}: no such family; known: "
                           f"{', '.join(sorted(families))}")
        return m.group(1) + family_table(families[name]) + m.group(4)

    return _BLOCK.sub(replace, text)


def update_docs(folder: str | Path, check: bool = False) -> list[Path]:
    """Regenerate the tables of every ``*.md`` under ``folder``; returns the pages that were
    (with ``check``: that would be) changed."""
    changed = []
    for page in sorted(Path(folder).rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            changed.append(page)
            if not check:
                page.write_text(new, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hashlab.docgen", description=__doc__)
    parser.add_argument("folder", nargs="?", default="docs")
    parser.add_argument("--check", action="store_true", help="report stale pages, change none")
    args = parser.parse_args(argv)
    changed = update_docs(args.folder, check=args.check)
    for page in changed:
        print(f"{'stale' if args.check else 'updated'}: {page}")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
