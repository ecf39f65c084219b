"""No import cycles anywhere in delivery_server, down to single modules.

The ``acyclic_siblings`` contract in pyproject.toml (make lint) compares the children of each
package with one another, so it cannot see a package's ``__init__`` and one of its own
submodules importing each other (as ``cli`` and ``cli_jobs`` once did). This test looks at
the whole graph of modules, the imports inside functions and under ``TYPE_CHECKING``
included: a lazy import that hides a cycle from start-up is a cycle all the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import grimp
import pytest

PACKAGE = "delivery_server"


def _strongly_connected(graph: Mapping[str, set[str]]) -> Iterator[list[str]]:
    """Tarjan's components, iteratively (a recursive walk could exceed the stack)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            successor = next(successors, None)
            if successor is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    yield sorted(component)
            elif successor not in index:
                index[successor] = low[successor] = len(index)
                stack.append(successor)
                on_stack.add(successor)
                work.append((successor, iter(sorted(graph[successor]))))
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import one another, directly or through each other."""
    return [c for c in _strongly_connected(graph) if len(c) > 1 or c[0] in graph[c[0]]]


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert import_cycles(graph) == [["a", "b", "c"], ["e"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_package_is_in_an_import_cycle() -> None:
    built = grimp.build_graph(PACKAGE, cache_dir=None)
    graph = {m: set(built.find_modules_directly_imported_by(m)) for m in built.modules}
    assert len(graph) > 20, "the package was not found: is it installed (make test does)?"
    cycles = import_cycles(graph)
    if cycles:
        described = []
        for cycle in cycles:
            first, *rest = cycle
            # One concrete loop through the first module, for the reader to break.
            back = built.find_shortest_chain(importer=rest[0], imported=first) if rest else ()
            out = built.find_shortest_chain(importer=first, imported=rest[0]) if rest else ()
            loop = " -> ".join([*(out or (first,)), *(back or ())[1:]])
            described.append(f"{', '.join(cycle)} (e.g. {loop})")
        pytest.fail("import cycles in " + PACKAGE + ":\n  " + "\n  ".join(described))
