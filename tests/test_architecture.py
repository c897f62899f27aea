"""The shape of wdlib (docs/architecture.md): its import graph, read from the source (module- and function-level
imports alike), has no cycle and at most 5 levels; the protocol (`react`) stands on nothing; the four stages stand side
by side; figures do not reach into evaluation; every import is absolute; every module is short enough to read.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "wdlib"
STAGES = ("synthesis", "sft", "dapo", "evaluate", "report")
MAX_LEVELS = 5  # config imports nothing; reading a params file (params) stands on it
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports(name: str) -> set[str]:
    """The wdlib modules `name` imports anywhere in its file; `from wdlib.x import y` counts as wdlib.x.y when that is
    a module. Relative imports are reported as themselves (the test below forbids them)."""
    tree = ast.parse(MODULES[name].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "wdlib"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.add("." * node.level + (node.module or ""))
            elif node.module and node.module.split(".")[0] == "wdlib":
                subs = {f"{node.module}.{alias.name}" for alias in node.names} & set(MODULES)
                found |= subs or {node.module}
    return {m for m in found if m != name}


def only_reexports(name: str) -> bool:
    """A package `__init__` whose body is a docstring, imports and `__all__`: it adds no level of its own."""
    def reexport(n: ast.stmt) -> bool:
        return (isinstance(n, (ast.Import, ast.ImportFrom))
                or (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))  # the docstring
                or (isinstance(n, ast.Assign) and [getattr(t, "id", None) for t in n.targets] == ["__all__"]))

    return all(reexport(n) for n in ast.parse(MODULES[name].read_text()).body)


def entry_point(name: str) -> bool:
    """`python -m wdlib.<stage>` (`__main__`): a way in, like a notebook, not a level of the library."""
    return name.endswith(".__main__")


@cache
def graph() -> dict[str, set[str]]:
    """Module → the modules it uses, with re-export-only packages replaced by what they re-export."""
    raw = {name: imports(name) for name in MODULES if not entry_point(name)}
    transparent = {name for name in raw if is_package(name) and only_reexports(name)}

    def expand(targets: set[str], seen: frozenset = frozenset()) -> set[str]:
        out = set()
        for t in targets:
            if t in transparent and t not in seen:
                out |= expand(raw[t], seen | {t})
            elif t in raw and t != "wdlib":
                out.add(t)
        return out

    return {name: expand(deps) for name, deps in raw.items() if name not in transparent and name != "wdlib"}


def longest_chain(g: dict[str, set[str]]) -> list[str]:
    """The longest import chain (a list of modules, user first); raises on a cycle."""
    best: dict[str, list[str]] = {}

    def visit(name: str, stack: tuple[str, ...]) -> list[str]:
        if name in stack:
            raise AssertionError(f"import cycle: {' → '.join(stack[stack.index(name):] + (name,))}")
        if name not in best:
            chains = [visit(dep, stack + (name,)) for dep in sorted(g[name])]
            best[name] = [name] + max(chains, key=len, default=[])
        return best[name]

    return max((visit(name, ()) for name in sorted(g)), key=len)


def stage_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_no_cycle_and_at_most_five_levels():
    chain = longest_chain(graph())
    assert len(chain) <= MAX_LEVELS, " → ".join(chain)


def test_the_protocol_imports_nothing_from_wdlib():
    assert graph()["wdlib.react"] == set()
    users = {name for name, deps in graph().items() if "wdlib.react" in deps}
    assert {"wdlib.agent", "wdlib.tools", "wdlib.rewards", "wdlib.viewer", "wdlib.synthesis.filters",
            "wdlib.synthesis.graded", "wdlib.sft.data", "wdlib.dapo.rollout"} <= users


@pytest.mark.parametrize("stage", STAGES)
def test_stages_do_not_import_each_other(stage):
    crossing = {(name, dep) for name, deps in graph().items() if stage_of(name) == stage
                for dep in deps if stage_of(dep) not in (None, stage)}
    assert not crossing


def test_plots_do_not_import_evaluation():
    assert not {dep for dep in graph()["wdlib.plots"] if dep.startswith("wdlib.evaluate")}


def test_imports_are_absolute():
    relative = {(name, dep) for name in MODULES for dep in imports(name) if dep.startswith(".")}
    assert not relative


def test_modules_are_short_enough_to_read():
    lengths = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert max(lengths.values()) <= MAX_LINES, max(lengths.items(), key=lambda kv: kv[1])
