"""Every third-party module monitor_jax imports is declared in install_requires, not only in the test extras.

A module that only the test extras pull in (jinja2 arrives with torch) passes every test and fails the README's
plain `pip install -e .`; `.ci/run` also runs the demo on such an install.
"""
import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "monitor_jax"
# Imported by a dependency only when monitor_jax calls it, so invisible to the import scan below.
CALLED_THROUGH = {"jinja2": "transformers' apply_chat_template renders every chat template with it"}
# Modules of an optional extra, imported only inside the modules that need them (after a check that names the
# extra to install), never on the plain install's paths: module -> (extra, the only importers).
GGUF_READER = ("monitor_jax/model/gguf.py",)
INSPECT_USERS = ("monitor_jax/data/sources/agents.py", "monitor_jax/integrations/control_arena.py",
                 "monitor_jax/integrations/inspect_logs.py")
OPTIONAL = {"torch": ("gguf", GGUF_READER), "gguf": ("gguf", GGUF_READER), "accelerate": ("gguf", GGUF_READER),
            "inspect_ai": ("inspect", INSPECT_USERS), "control_arena": ("inspect", INSPECT_USERS),
            "pydantic": ("inspect", ("monitor_jax/integrations/control_arena.py",))}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    """install_requires of the installed monitor_jax (requirements without an `extra ==` marker)."""
    reqs = md.requires("monitor_jax") or []
    return {_norm(re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0]) for r in reqs if "extra ==" not in r}


def _imported_modules() -> dict[str, str]:
    """Top-level module -> first file importing it, over every module of the package."""
    return {m: files[0] for m, files in _importers().items()}


def _importers() -> dict[str, list[str]]:
    """Top-level module -> every file importing it."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "monitor_jax" and top not in sys.stdlib_module_names and top != "__future__":
                    where = str(path.relative_to(PACKAGE.parent))
                    if where not in found.setdefault(top, []):
                        found[top].append(where)
    return found


def test_every_imported_module_is_declared_in_install_requires():
    declared = _declared()
    providers = md.packages_distributions()
    modules = {**{m: w for m, w in _imported_modules().items() if m not in OPTIONAL},
               **{m: f"({why})" for m, why in CALLED_THROUGH.items()}}
    assert {"jax", "flax", "orbax", "grain", "transformers"} <= set(modules)   # the scan sees the package
    undeclared = {}
    for module, where in modules.items():
        dists = {_norm(d) for d in providers.get(module, [])}
        assert dists, f"{module} (imported in {where}) is not installed at all"
        if not dists & declared:
            undeclared[module] = (sorted(dists), where)
    assert not undeclared, f"imported but not in install_requires: {undeclared}"


def test_test_only_packages_are_not_imported_by_the_package():
    test_only = {_norm(re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0])
                 for r in md.requires("monitor_jax") or [] if 'extra == "test"' in r}
    assert "torch" in test_only
    providers = md.packages_distributions()
    for module in _imported_modules():
        if module not in OPTIONAL:
            assert not {_norm(d) for d in providers.get(module, [])} & (test_only - _declared()), module


def test_optional_modules_are_declared_in_their_extra_and_imported_in_one_place():
    importers = _importers()
    for module, (extra, only) in OPTIONAL.items():
        declared = {_norm(re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0])
                    for r in md.requires("monitor_jax") or [] if f'extra == "{extra}"' in r}
        dists = {_norm(d) for d in md.packages_distributions().get(module, [])}
        assert dists & declared, f"{module} is not in the {extra!r} extra"
        assert set(importers.get(module, [])) <= set(only), f"{module} is imported outside {only}: {importers[module]}"
