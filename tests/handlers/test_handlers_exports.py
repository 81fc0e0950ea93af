"""The ``handlers`` namespace: every public name exported once, and documented."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import handlers
from handlers import base, checks, dispatch, echo, request_response, threaded

SUBMODULES = [base, checks, dispatch, echo, request_response, threaded]


def test_package_exports_exactly_the_submodules_public_names() -> None:
    public = {name: getattr(module, name) for module in SUBMODULES for name in module.__all__}
    assert sorted(public) == sorted(handlers.__all__)
    assert len(handlers.__all__) == len(set(handlers.__all__))
    for name, obj in public.items():
        assert getattr(handlers, name) is obj, name


@pytest.mark.parametrize("module", [handlers, *SUBMODULES], ids=lambda m: m.__name__)
def test_modules_are_documented(module: Any) -> None:
    assert (module.__doc__ or "").strip()


@pytest.mark.parametrize("name", ["DispatchHandler", "ThreadedHandler", "on"])
def test_ready_made_handlers_are_documented(name: str) -> None:
    """The classes, and every public method and property they define, have a docstring."""
    obj = getattr(handlers, name)
    assert (inspect.getdoc(obj) or "").strip(), name
    if not inspect.isclass(obj):
        return
    for member_name, member in vars(obj).items():
        if member_name.startswith("_"):
            continue
        if inspect.isfunction(member) or isinstance(member, property):
            assert (inspect.getdoc(getattr(obj, member_name)) or "").strip(), member_name


@pytest.mark.parametrize("module", ["handlers.threaded", "handlers.dispatch", "handlers"])
def test_imports_first_without_a_cycle(module: str) -> None:
    """Each handlers module can be the first thing a program imports (no import cycle)."""
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        check=True,
        capture_output=True,
        timeout=60,
        cwd=root,
    )
