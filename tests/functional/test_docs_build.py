"""The documentation site builds without a warning, and documents every public name.

``make docs`` runs the same build; running it here too means ``make test`` (and so CI) fails
when a docstring change breaks the site (a reST error, a broken include, a new public name
left out of the API reference).
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"

#: Packages whose ``__all__`` the API reference must cover.
PUBLIC_PACKAGES = [
    "handlers",
    "protocols",
    "server_framework",
    "server_framework.servers",
    "server_framework.clients",
    "server_framework.backend",
    "server_framework.threads",
    "server_framework.exceptions",
    "server_framework.log",
]

_ROOT_PACKAGES = ("handlers", "protocols", "server_framework")
_DIRECTIVE = re.compile(
    r"^\s*\.\. (?:py:)?(currentmodule|automodule|autoclass|autoexception|autofunction|autodata)"
    r"::\s*(\S+)\s*$"
)


def documented_objects() -> set[int]:
    """The ``id()`` of every object an ``auto*`` directive of the API pages documents."""
    found: set[int] = set()
    for page in sorted(DOCS.glob("api*.rst")):
        module = ""
        lines = page.read_text().splitlines()
        for index, line in enumerate(lines):
            match = _DIRECTIVE.match(line)
            if match is None:
                continue
            directive, target = match.groups()
            if directive == "currentmodule":
                module = target
                continue
            if directive == "automodule":
                module = target
                options = []
                for option in lines[index + 1 :]:
                    if not option.strip().startswith(":"):
                        break
                    options.append(option.strip())
                if ":no-members:" not in options:  # documents the module's __all__
                    imported = importlib.import_module(target)
                    found.update(id(getattr(imported, name)) for name in imported.__all__)
                continue
            qualified = target.partition(".")[0] in _ROOT_PACKAGES
            path = target if qualified else f"{module}.{target}"
            owner, _, name = path.rpartition(".")
            found.add(id(getattr(importlib.import_module(owner), name)))
    return found


def public_names() -> list[tuple[str, Any]]:
    names = []
    for package in PUBLIC_PACKAGES:
        module = importlib.import_module(package)
        names += [(f"{package}.{name}", getattr(module, name)) for name in module.__all__]
    return names


def test_every_public_name_is_in_the_api_reference() -> None:
    documented = documented_objects()
    missing = []
    for path, obj in public_names():
        if isinstance(obj, int | float | str | dict) or obj is None:
            # Constants are documented by value where their package lists them; check the name.
            pages = "".join(page.read_text() for page in DOCS.glob("api*.rst"))
            if path.rpartition(".")[2] not in pages:
                missing.append(path)
        elif id(obj) not in documented:
            missing.append(path)
    assert missing == [], f"public names missing from docs/api*.rst: {missing}"


@pytest.mark.slow
def test_sphinx_build_has_no_warning(tmp_path: Path) -> None:
    """The ``make docs`` build (``-W --keep-going``), into a scratch directory, from scratch."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-E",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "html" / "howto_threads.html").exists()
