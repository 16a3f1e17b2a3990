"""The package's layers (docs/development.md): no import circle and no import up a layer.

Every import of ``src/cvm_cervix/`` counts, those inside functions too (a lazy import still ties two
modules); the table in docs/development.md is the one statement of the layers, read here.
"""

from __future__ import annotations

import ast
import re

from conftest import REPO

PACKAGE = REPO / "src" / "cvm_cervix"


def module_name(path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (a name imported from a package that is one of its
    modules counts as that module)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                for alias in node.names:
                    found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def declared_layers() -> dict[str, int]:
    text = (REPO / "docs" / "development.md").read_text()
    table = text[text.index("## Layers") :]
    layers = {}
    for number, modules in re.findall(r"^\| (\d+) \| [^|]+ \| ([^|]+) \|$", table, re.M):
        for module in re.findall(r"`([\w.]+)`", modules):
            layers[module if module == "cvm_cervix" else f"cvm_cervix.{module}"] = int(number)
    return layers


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_reads_lazy_imports_and_finds_a_circle():
    graph = import_graph()
    assert "cvm_cervix.models._backbones" in graph["cvm_cervix.models._registry"]  # `from . import _backbones`
    assert "cvm_cervix.labels" in graph["cvm_cervix.config"]  # imported inside a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_another_that_imports_it_back():
    assert find_cycle(import_graph()) is None


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_layers():
    graph, layers = import_graph(), declared_layers()
    assert not set(graph) - set(layers), (
        f"place these modules in docs/development.md: {sorted(set(graph) - set(layers))}"
    )
    assert not set(layers) - set(graph), f"no such modules: {sorted(set(layers) - set(graph))}"
    upward = [f"{a} ({layers[a]}) -> {b} ({layers[b]})" for a in graph for b in graph[a] if layers[b] > layers[a]]
    assert upward == []


def test_the_path_table_imports_nothing_of_the_package():
    assert import_graph()["cvm_cervix.paths"] == set()


def test_no_module_of_the_report_names_a_results_file():
    """The report reads what its rule hands it (report_inputs.ReportInputs): no module of report/ imports
    the path table, so none can build a results path of its own."""
    graph = import_graph()
    naming = sorted(m for m in graph if m.startswith("cvm_cervix.report.") and "cvm_cervix.paths" in graph[m])
    assert naming == []
