"""Every public name of ``server_framework`` and ``handlers`` is exported once and documented."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

PACKAGES = ["server_framework", "server_framework.servers", "server_framework.backend", "handlers"]


def exports(package: str) -> list[tuple[str, Any]]:
    module = importlib.import_module(package)
    return [(name, getattr(module, name)) for name in module.__all__]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_consistent(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__doc__
    assert len(module.__all__) == len(set(module.__all__))
    assert all(hasattr(module, name) for name in module.__all__)


def own_public_members(cls: type) -> list[tuple[str, Any]]:
    members = []
    for klass in cls.__mro__:
        if not klass.__module__.startswith(("server_framework", "handlers")):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            if inspect.isfunction(value) or isinstance(value, property):
                members.append((f"{klass.__name__}.{name}", getattr(cls, name)))
    return members


@pytest.mark.parametrize(
    ("name", "obj"),
    [item for package in PACKAGES for item in exports(package)],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_export_is_documented(name: str, obj: Any) -> None:
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return  # type aliases and constants are documented where they are defined
    assert inspect.getdoc(obj), f"{name} has no docstring"
    if inspect.isclass(obj):
        undocumented = [
            member for member, value in own_public_members(obj) if not inspect.getdoc(value)
        ]
        assert undocumented == [], f"undocumented public members of {name}"


# -- one home per public name ------------------------------------------------------------------

#: The documented face: re-exports the names a program needs most, from their homes.
FACE = "server_framework"
ROOTS = ("server_framework", "handlers", "protocols")


def public_modules() -> list[Any]:
    """Every public module of the three packages (no part of its name starts with ``_``)."""
    import pkgutil  # noqa: PLC0415

    found = []
    for root in ROOTS:
        package = importlib.import_module(root)
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, f"{root}."):
            if any(part.startswith("_") for part in info.name.split(".")):
                continue
            found.append(importlib.import_module(info.name))
    return found


def public_home(module_name: str) -> str:
    """The public module that stands for ``module_name`` (its private parts stripped)."""
    parts = module_name.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_"):
            return ".".join(parts[:i])
    return module_name


def second_homes(exports: dict[str, list[tuple[str, Any]]]) -> list[str]:
    """``name: module`` for each export beyond the name's canonical home and its faces.

    ``exports`` maps each module to its ``(name, object)`` exports. A name's canonical home is
    the public module its object was defined in (private modules standing for their public
    package), or, for values that do not know their module, the deepest module exporting it.
    Allowed besides: the package of a public submodule home (``protocols`` for
    ``protocols.framing``) and the face, ``server_framework``.
    """
    homes: dict[tuple[str, int], list[str]] = {}
    objects: dict[tuple[str, int], Any] = {}
    for module, names in exports.items():
        for name, obj in names:
            key = (name, id(obj))
            homes.setdefault(key, []).append(module)
            objects[key] = obj
    extra = []
    for (name, _), modules in homes.items():
        obj = objects[(name, _)]
        defined_in = getattr(obj, "__module__", None) if callable(obj) else None
        if defined_in is not None and public_home(defined_in) in modules:
            canonical = public_home(defined_in)
        else:
            canonical = max(modules, key=lambda m: m.count("."))
        allowed = {canonical, canonical.rpartition(".")[0], FACE}
        extra += [f"{name}: {module}" for module in modules if module not in allowed]
    return sorted(extra)


def test_every_public_name_has_one_home() -> None:
    exports = {
        module.__name__: [(name, getattr(module, name)) for name in getattr(module, "__all__", [])]
        for module in public_modules()
    }
    assert second_homes(exports) == []


def test_a_second_home_is_found() -> None:
    class Thing:
        pass

    Thing.__module__ = "pkg.sub._impl"
    exports = {
        "pkg.sub": [("Thing", Thing)],
        "server_framework": [("Thing", Thing)],
        "pkg.other": [("Thing", Thing)],
    }
    assert second_homes(exports) == ["Thing: pkg.other"]


def test_the_faces_lazy_names_are_listed_alike() -> None:
    """The face lists its lazily imported names three times: ``_LAZY`` (for the runtime), the
    ``TYPE_CHECKING`` imports (for type checkers) and ``__all__``; they must agree."""
    import ast  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    import server_framework  # noqa: PLC0415

    source = Path(server_framework.__file__).read_text()
    typed: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                assert statement.module is not None
                for alias in statement.names:
                    typed[alias.asname or alias.name] = statement.module
    lazy = server_framework._LAZY
    assert typed == lazy
    assert set(lazy) <= set(server_framework.__all__)
    for name, home in lazy.items():
        assert getattr(server_framework, name) is getattr(importlib.import_module(home), name)
