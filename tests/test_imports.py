"""No import cycle among notifier's modules, counting every import statement wherever it stands:
module level, inside functions, under `if TYPE_CHECKING:`.

An import names a module as Python resolves it: ``import a.b`` and ``from a.b import X`` name
``a.b``; ``from a import b`` names ``a.b`` when ``b`` is a submodule, else ``a`` (the package's
``__init__``, so a name it re-exports counts as an import of the package and of everything its
``__init__`` imports). The parent packages Python runs first are not counted: a submodule is
found through `sys.modules` while its parent is still initialising, so that cannot fail; a name
taken from a half-initialised package can, and that is an edge here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import notifier

PACKAGE_DIR = Path(notifier.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def imported_names(name: str, source: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """Every module the source of module `name` imports, anywhere in it."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # Relative: from the package this module is in (or is, for an __init__).
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in known else base


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {
        name: {
            target
            for target in imported_names(
                name, path.read_text(encoding="utf-8"), path.name == "__init__.py", known
            )
            if target in known and target != name
        }
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, colouring the path)."""
    on_path: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in on_path:
            return [*on_path[on_path.index(node) :], node]
        if node in done:
            return None
        on_path.append(node)
        for target in sorted(graph.get(node, ())):
            if cycle := visit(target):
                return cycle
        on_path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if cycle := visit(start):
            return cycle
    return None


def test_no_import_cycle_among_notifier_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checker_sees_imports_in_functions_under_type_checking_and_from_packages() -> None:
    source = """
from typing import TYPE_CHECKING
from . import sibling
if TYPE_CHECKING:
    from pkg.typed import T
def late():
    import pkg.lazy
    from pkg import reexported_name
"""
    known = {"pkg", "pkg.sibling", "pkg.typed", "pkg.lazy"}
    found = set(imported_names("pkg.mod", source, False, known)) & known
    assert found == {"pkg", "pkg.sibling", "pkg.typed", "pkg.lazy"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_web_does_not_import_the_app_and_its_oauth2_pages_no_cli_or_dispatcher() -> None:
    graph = import_graph()
    web = {m: targets for m, targets in graph.items() if m.startswith("notifier.web")}
    assert all("notifier.app" not in targets for targets in web.values()), web
    banned = {"notifier.oauth2.cli", "notifier.dispatch.service"}
    assert not graph["notifier.web.oauth2"] & banned
