"""The package's import graph: no cycles, and no layer imports one above it.

Every import counts, including those inside functions (a lazy import is still a dependency). Layers, bottom
up: errors, settings, parallel, checkpoints, lease < model < data < generate < train, eval < studies, config < assemble, runs
< commands < main.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "monitor_jax"

LAYER = {"errors": 0, "settings": 0, "parallel": 0, "checkpoints": 0, "lease": 0, "model": 1, "data": 2, "generate": 3, "train": 4, "eval": 4,
         "studies": 5, "config": 5, "assemble": 6, "runs": 6, "integrations": 7,
         "commands": 7, "main": 8}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """monitor_jax module -> the monitor_jax modules it imports (anywhere in the file)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base
                                                                                                    else []))
                # `from pkg import mod` imports pkg.mod when that is a module.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:      # `import a.b.c` of a function/class: its module
                    t = t.rpartition(".")[0]
                if t.startswith("monitor_jax") and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER.get(parts[1]) if len(parts) > 1 else None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_scan_sees_the_real_edges():
    graph = import_graph()
    assert "monitor_jax.model.transformer" in graph["monitor_jax.model.hf"]
    assert "monitor_jax.assemble" in graph["monitor_jax.runs"] and "monitor_jax.runs" in graph["monitor_jax.commands.train"]
    assert "monitor_jax.errors" in graph["monitor_jax.config"]
    assert all(m in graph for m in ("monitor_jax.main", "monitor_jax.commands", "monitor_jax.checkpoints"))


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for module, deps in import_graph().items():
        mine = _layer(module)
        for dep in deps:
            theirs = _layer(dep)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} -> {dep}")
    assert upward == [], upward


def test_the_task_registry_does_not_import_the_demo():
    assert "monitor_jax.data.demo" not in import_graph()["monitor_jax.data.tasks"]


def test_the_cycle_check_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_command_imports_another_command():
    """Commands share code through the layers below (assemble, runs, studies), never through each other."""
    from monitor_jax.commands import COMMANDS

    commands = {f"monitor_jax.commands.{name}" for name in COMMANDS}
    graph = import_graph()
    assert {c: sorted(graph[c] & (commands - {c})) for c in commands if graph[c] & (commands - {c})} == {}
