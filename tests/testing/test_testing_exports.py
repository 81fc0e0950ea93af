"""The testing kit's public names: documented in their docstrings and in the API reference,
and kept out of ``import server_framework`` (the kit is imported explicitly)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import server_framework.testing
from server_framework.testing import faults

API_PAGE = Path(__file__).resolve().parents[2] / "docs" / "api_testing.rst"

PUBLIC = [
    (f"{module.__name__}.{name}", getattr(module, name))
    for module in (server_framework.testing, faults)
    for name in module.__all__
    if not inspect.ismodule(getattr(module, name))
]


@pytest.mark.parametrize(("name", "obj"), PUBLIC, ids=[name for name, _ in PUBLIC])
def test_public_names_are_documented(name: str, obj: Any) -> None:
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return  # constants and type aliases: documented on the API page
    assert inspect.getdoc(obj), f"{name} has no docstring"
    if inspect.isclass(obj):
        for member, value in vars(obj).items():
            if not member.startswith("_") and (
                inspect.isfunction(value) or isinstance(value, property)
            ):
                assert inspect.getdoc(value), f"{name}.{member} has no docstring"


def test_the_api_page_lists_every_name() -> None:
    page = API_PAGE.read_text()
    directives = set(re.findall(r"^\.\. auto\w+:: (\S+)$", page, re.M))
    assert "server_framework.testing.faults" in directives  # every name of its __all__
    for name in server_framework.testing.__all__:
        if name != "faults":
            assert name in directives, f"{name} is missing from {API_PAGE.name}"


def test_import_server_framework_leaves_the_kit_alone() -> None:
    code = "import sys, server_framework; print('server_framework.testing' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
