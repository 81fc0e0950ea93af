"""The public surface of the backend and threads layer: exported, documented, import-light."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from types import ModuleType

import pytest

import server_framework
from server_framework import backend, exceptions, threads

MODULES = [server_framework, backend, threads, exceptions]


def public_members(cls: type) -> list[str]:
    return [
        name
        for name, _ in inspect.getmembers(cls)
        if not name.startswith("_") and name not in ("register",)
    ]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_exported_name_exists_once_and_is_documented(module: ModuleType) -> None:
    assert inspect.getdoc(module), f"{module.__name__} has no module docstring"
    assert len(module.__all__) == len(set(module.__all__))
    for name in module.__all__:
        obj = getattr(module, name)
        if name == "BackendName":  # a typing.Literal alias, documented in the module source
            continue
        assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"
        if inspect.isclass(obj):
            for member in public_members(obj):
                if issubclass(obj, BaseException):
                    continue  # attributes come from BaseException
                doc = inspect.getdoc(getattr(obj, member))
                assert doc, f"{module.__name__}.{name}.{member} has no docstring"


def test_top_level_reexports_the_same_objects() -> None:
    assert server_framework.current_backend is backend.current
    for name in server_framework.__all__:
        if name == "current_backend":
            continue
        source = next(m for m in MODULES[1:] if name in m.__all__)
        assert getattr(server_framework, name) is getattr(source, name)


@pytest.mark.parametrize(
    "implementation",
    [
        "server_framework.backend._asyncio:AsyncIOBackend",
        "server_framework.backend._trio:TrioBackend",
    ],
)
def test_backends_implement_the_whole_interface(implementation: str) -> None:
    module_name, class_name = implementation.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert not inspect.isabstract(cls)
    for member in public_members(backend.AsyncBackend):
        assert inspect.getdoc(getattr(cls, member)), f"{class_name}.{member}"


def test_importing_the_layer_imports_no_event_loop() -> None:
    code = (
        "import sys, server_framework, server_framework.backend, server_framework.threads; "
        "print(sorted(m for m in ('asyncio', 'trio', 'uvloop') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
