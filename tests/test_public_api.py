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
