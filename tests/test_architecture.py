"""The house rules of the code base: one registry mechanism, every family listed, no import
cycles, no method named in the generic engine or CLI, docs generated from the registries."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import hashlab
from hashlab.cli import app
from hashlab.docgen import update_docs
from hashlab.errors import ConfigError
from hashlab.registry import Registry, all_families, canonical_key

SRC = Path(hashlab.__file__).parent
REPO = SRC.parent.parent
runner = CliRunner()


# ------------------------------------------------------------------------------ import graph
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every hashlab module imported anywhere in ``tree`` (at any depth, lazily or not),
    except under ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module if is_package else module.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rsplit(".", 1)[0]
                base = f"{pkg}.{base}" if base else pkg
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m == "hashlab" or m.startswith("hashlab.")}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        edges: set[str] = set()
        for target in _imports(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            if target not in files:
                continue  # a name imported from a module, not a module
            # importing a.b.c first runs the package a.b (unless we are inside it already)
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                if dep in files and not (module == dep or module.startswith(dep + ".")):
                    edges.add(dep)
        graph[module] = edges
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's SCCs with more than one module (the import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_package():
    graph = import_graph()
    assert "hashlab.cli" in graph and "hashlab.losses.registry" in graph["hashlab.losses.margin"]
    assert strongly_connected(graph) == []


# ------------------------------------------------------------------------------ registries
def test_every_family_is_a_registry_with_well_formed_keys():
    families = all_families()
    expected = {"datasets", "backbones", "heads", "losses", "miners", "distances", "reductions",
                "hashers", "binary-index-kinds", "float-index-kinds", "protocols", "recipes"}
    assert expected <= set(families)
    for name, registry in families.items():
        assert isinstance(registry, Registry)
        if name != "recipes":
            assert len(registry) > 0, name
        for entry in registry.entries():
            assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", entry.name), entry.name
            assert entry.description, f"{name} {entry.name} has no description"


def test_registry_lookups_aliases_and_errors():
    reg: Registry[object] = Registry("widget", plural="widgets-under-test")
    try:
        @reg.register("big-widget", "bw", description="a big one", defaults={"size": 3})
        def big_widget(size: int = 3) -> int:
            return size

        assert reg.get("Big_Widget") is big_widget and reg.get("BW") is big_widget
        assert reg.canonical("big_widget") == "big-widget" and "big_widget" in reg
        assert reg.build("big-widget", size=5) == 5
        assert reg.entry("bw").defaults == {"size": 3}
        with pytest.raises(ConfigError, match=r"model.widget: unknown widget 'small'; "
                                              r"known: big-widget \(alias bw\)"):
            reg.get("small", key="model.widget")
        with pytest.raises(ValueError, match="registered twice"):
            reg.register("bw")(big_widget)
        with pytest.raises(ValueError, match="lower-case words joined by '-'"):
            reg.register("Bad_Name")(big_widget)
    finally:
        from hashlab.registry import FAMILIES

        FAMILIES.pop("widgets-under-test")
    assert canonical_key(" HM_Softmax ") == "hm-softmax"


def test_old_underscore_names_still_resolve():
    families = all_families()
    assert families["losses"].canonical("sv_arc_softmax") == "sv-arc-softmax"
    assert families["losses"].canonical("hash_ce") == "hash-ce"
    assert families["backbones"].canonical("small_cnn") == "small-cnn"
    assert families["datasets"].canonical("fmnist") == "fashion-mnist"


def test_list_shows_every_family_and_name():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for name, registry in all_families().items():
        assert f"{name} ({len(registry)})" in result.output
        for key in registry.names():
            assert f"  {key}" in result.output
    result = runner.invoke(app, ["list", "losses"])
    assert result.exit_code == 0 and "arcface" in result.output and "hashers" not in result.output
    result = runner.invoke(app, ["list", "nonsense"])
    assert result.exit_code == 2 and "unknown family" in result.output


def test_cli_help_choices_come_from_the_registries():
    families = all_families()
    result = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "400"})
    for key in families["protocols"].names():
        assert key in result.output
    result = runner.invoke(app, ["index", "--help"], env={"COLUMNS": "400"})
    for key in families["binary-index-kinds"].names() + families["float-index-kinds"].names():
        assert key in result.output


# ------------------------------------------------------------------------------ house rules
def test_generic_engine_and_cli_name_no_method():
    for path in [*(SRC / "train").rglob("*.py"), SRC / "cli.py"]:
        assert "dph" not in path.read_text().lower(), path


def test_the_product_does_not_cite_internal_notes():
    pages = [*SRC.rglob("*.py"), *(REPO / "docs").rglob("*.md"), REPO / "README.md"]
    for path in pages:
        if path.exists():
            text = path.read_text()
            assert "shared/reference" not in text and "../shared" not in text, path


def test_docs_tables_are_generated_from_the_registries():
    docs = REPO / "docs"
    if not docs.is_dir():
        pytest.skip("docs/ is not beside the package (installed without the repository)")
    stale = update_docs(docs, check=True)
    assert stale == [], f"run `python -m hashlab.docgen docs` to refresh {stale}"


def test_every_family_has_a_generated_table_in_the_docs():
    docs = REPO / "docs"
    if not docs.is_dir():
        pytest.skip("docs/ is not beside the package (installed without the repository)")
    text = "".join(p.read_text() for p in docs.rglob("*.md"))
    tables = set(re.findall(r"<!-- registry-table: ([a-z0-9-]+) -->", text))
    assert set(all_families()) - {"widgets-under-test"} <= tables
