"""The error tree: every class in ``errors``, exported, drawn in its docstring, and nowhere else."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import delivery_server
from delivery_server import errors

PACKAGE = Path(delivery_server.__file__).parent


def _error_classes() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    }


def _drawn_tree() -> dict[str, int]:
    """Each class of the docstring's tree with its depth (indentation / 4)."""
    doc = errors.__doc__ or ""
    block = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    tree = {}
    for line in block.splitlines():
        match = re.match(r"( *)(\w+)", line)
        assert match, line
        tree[match.group(2)] = (len(match.group(1)) - 4) // 4
    return tree


def test_every_class_is_exported() -> None:
    assert sorted(_error_classes()) == sorted(
        name for name in errors.__all__ if inspect.isclass(getattr(errors, name))
    )


def test_the_docstring_draws_the_tree_as_the_classes_are() -> None:
    tree = _drawn_tree()
    classes = _error_classes()
    assert sorted(tree) == sorted(classes)
    names = list(tree)
    for index, name in enumerate(names):
        depth = tree[name]
        if depth == 0:
            assert classes[name] is errors.DeliveryError
            continue
        # The drawn parent: the nearest line above at one level less.
        parent = next(n for n in reversed(names[:index]) if tree[n] == depth - 1)
        assert classes[name].__mro__[1] is classes[parent], name


def test_no_error_class_is_defined_outside_the_tree() -> None:
    exported = set(errors.__all__)
    strays = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {base.id for base in node.bases if isinstance(base, ast.Name)}
            bases |= {base.attr for base in node.bases if isinstance(base, ast.Attribute)}
            if bases & exported:
                strays.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert strays == []
