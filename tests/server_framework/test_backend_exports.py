"""The public surface of the backend and threads layer: exported, documented, import-light."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from types import ModuleType

import pytest

import server_framework
from server_framework import backend, exceptions, threads

ROOT = Path(__file__).parents[2]
LAYER = [backend, threads, exceptions]
TOP_LEVEL_NAMES = {
    "AsyncBackend",
    "AsyncExecutor",
    "BrokenResourceError",
    "BusyResourceError",
    "ClosedResourceError",
    "ThreadsPortal",
    "current_backend",
    "get_backend",
    "run",
}


def public_members(cls: type) -> list[str]:
    return [
        name
        for name, _ in inspect.getmembers(cls)
        if not name.startswith("_") and name not in ("register",)
    ]


@pytest.mark.parametrize("module", LAYER, ids=lambda m: m.__name__)
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


def test_top_level_reexports_the_layer() -> None:
    assert inspect.getdoc(server_framework)
    assert set(server_framework.__all__) >= TOP_LEVEL_NAMES
    assert server_framework.current_backend is backend.current
    for name in TOP_LEVEL_NAMES - {"current_backend"}:
        source = next(m for m in LAYER if name in m.__all__)
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


LOOP_LIBRARIES = {"asyncio", "trio", "uvloop"}
LOOP_NEUTRAL_MODULES = [
    "server_framework/exceptions.py",
    "server_framework/threads.py",
    "server_framework/backend/__init__.py",
    "server_framework/backend/_abc.py",
    "server_framework/backend/_portal.py",
    "server_framework/backend/_registry.py",
]


@pytest.mark.parametrize("path", LOOP_NEUTRAL_MODULES)
def test_only_the_loop_modules_import_a_loop(path: str) -> None:
    # Statically: third-party packages may import asyncio (structlog does), we must not. The
    # registry imports a loop module lazily, inside a function, when that loop is chosen.
    tree = ast.parse((ROOT / path).read_text(), path)
    imported = set()
    for node in tree.body:  # module level only
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module, node.module.split(".")[0]}
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    assert not imported & LOOP_LIBRARIES
    assert not {name for name in imported if name.endswith(("._asyncio", "._trio"))}
