"""The package's module-level imports form no cycle, and model code does not import the data modules."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """musiclm module -> the musiclm modules it imports, at module level or lazily inside a function (a lazy import
    hides a cycle from the interpreter, not from the design)."""
    modules = {module_name(p): p for p in (SRC / "musiclm").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def test_no_import_cycle():
    graph, state, cycles = import_graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_model_code_does_not_import_data_modules():
    """A stage's LightningModule and network files; its jobs (fitting the quantizer, eval, benchmarks) may."""
    for name, deps in import_graph().items():
        package, _, leaf = name.removeprefix("musiclm.").partition(".")
        if package in ("mulan", "codec", "lm", "semantic_tokens") and leaf not in (
            "fit_quantizer",
            "evaluate",
            "bench",
        ):
            assert "musiclm.data.datamodules" not in deps, name
