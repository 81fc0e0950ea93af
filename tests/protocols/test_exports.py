"""Tests of the ``protocols`` namespace: what it exports, and that all of it is documented."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import protocols
from protocols import diagnostics, exceptions, framing, protocol, proxy, serializers, wrappers

SUBMODULES = [diagnostics, exceptions, framing, protocol, proxy, serializers, wrappers]


def test_every_name_in_all_exists() -> None:
    missing = [name for name in protocols.__all__ if not hasattr(protocols, name)]
    assert missing == []


def test_all_has_no_duplicates() -> None:
    assert len(protocols.__all__) == len(set(protocols.__all__))


def test_package_exports_exactly_the_submodules_public_names() -> None:
    """Nothing public in a submodule is forgotten, and every export is the submodule's object."""
    public = {name: getattr(module, name) for module in SUBMODULES for name in module.__all__}
    assert sorted(public) == sorted(protocols.__all__)
    for name, obj in public.items():
        assert getattr(protocols, name) is obj, name


@pytest.mark.parametrize("module", [protocols, *SUBMODULES], ids=lambda m: m.__name__)
def test_modules_are_documented(module: Any) -> None:
    assert module.__doc__
    assert module.__doc__.strip()


def own_public_callables(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties defined in this package, on ``cls`` or its bases."""
    found = []
    for klass in cls.__mro__:
        if not klass.__module__.startswith("protocols"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            if inspect.isfunction(value) or isinstance(value, property):
                found.append((f"{klass.__name__}.{name}", getattr(cls, name)))
    return found


@pytest.mark.parametrize("name", protocols.__all__)
def test_export_is_documented(name: str) -> None:
    """Classes need a docstring of their own; their public methods need one, possibly inherited
    from the method they override (as ``inspect.getdoc`` and Sphinx see it)."""
    obj = getattr(protocols, name)
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        # The constants, each documented by a #: comment where it is defined.
        comments = {
            "DEFAULT_MAX_FRAME_SIZE": (framing, "#: Default ``max_frame_size``"),
            "SNIFF_SIZE": (diagnostics, "#: How many leading bytes"),
        }
        module, comment = comments[name]
        assert comment in inspect.getsource(module)
        return
    assert obj.__doc__
    assert obj.__doc__.strip()
    if inspect.isfunction(obj):
        return
    undocumented = [
        qualname for qualname, member in own_public_callables(obj) if not inspect.getdoc(member)
    ]
    assert undocumented == []
