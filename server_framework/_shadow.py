"""Is one of our top-level packages, ``handlers`` or ``protocols``, shadowed by a user's module?

The framework ships three top-level packages side by side: ``server_framework``, ``handlers``
and ``protocols``. A user's ``handlers.py`` or ``protocols/`` package earlier on ``sys.path``
(``python -m`` and ``python script.py`` put the working or the script's directory first) would
be imported instead of ours, and everything built on it would fail far from the cause. This
module finds that, without importing either package, and words it in one line with the fix.

It imports nothing but the standard library: it runs first in ``server_framework/__init__.py``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Final

__all__ = ["SIBLINGS", "ShadowedPackageError", "check_siblings", "hidden_user_module", "shadowing"]

#: The top-level packages installed next to ``server_framework``.
SIBLINGS: Final = ("handlers", "protocols")

#: The directory that holds ``server_framework`` and its siblings.
_ROOT: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ShadowedPackageError(ImportError):
    """A user's module has the name of one of the framework's top-level packages."""


def _origin(name: str) -> str | None:
    """Where ``import name`` finds (or found) the module: its file, or None if not found."""
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__file__", None) or "<built-in or namespace>"
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    return spec.origin or "<namespace>"


def _display(path: str) -> str:
    """``path`` relative to the working directory when it is under it (shorter, and clearer)."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else os.path.join(".", relative)


def shadowing(name: str) -> str | None:
    """The one-line explanation if ``import name`` does not give the framework's package.

    Args:
        name: One of :data:`SIBLINGS`.

    Returns:
        None when ``name`` resolves to the framework's own package (or cannot be found at all,
        which the import itself will report), else a message naming the file that shadows it
        and the fix.
    """
    origin = _origin(name)
    if origin is None:
        return None
    ours = os.path.join(_ROOT, name, "__init__.py")
    if origin.startswith("<") or not os.path.exists(origin):
        found = origin
    else:
        if os.path.realpath(origin) == os.path.realpath(ours):
            return None
        found = _display(origin)
        if os.path.basename(origin) == "__init__.py":
            found = _display(os.path.dirname(origin)) + os.sep
    return (
        f"{found} shadows server_framework's {name!r} package (Python imports the first "
        f"{name!r} on sys.path): rename your module, e.g. to my_{name}, or run from another "
        "directory"
    )


def hidden_user_module(name: str) -> str | None:
    """The one-line explanation if a user's module named ``name`` is hidden by one of ours.

    The converse of :func:`shadowing`: our ``handlers`` was imported first (the command line
    imports it before TARGET), so a user's ``handlers.py`` on ``sys.path`` is never imported
    and ``handlers:MyHandler`` or ``from handlers import MyHandler`` fails.

    Args:
        name: A module name; only its first part matters (``handlers.extra`` -> ``handlers``).

    Returns:
        None if the name is not one of :data:`SIBLINGS` (or ``server_framework``) or no user's
        module of that name is found on ``sys.path``, else a message naming it and the fix.
    """
    top = name.partition(".")[0]
    if top not in (*SIBLINGS, "server_framework"):
        return None
    for entry in sys.path:
        directory = os.path.abspath(entry or os.curdir)
        if directory == _ROOT:
            continue
        for candidate in (os.path.join(directory, f"{top}.py"), os.path.join(directory, top)):
            if os.path.exists(candidate):
                shown = _display(candidate) + (os.sep if os.path.isdir(candidate) else "")
                return (
                    f"your {shown} has the name of server_framework's {top!r} package, which "
                    f"Python imports instead: rename your module, e.g. to my_{top}"
                )
    return None


def check_siblings() -> None:
    """Raise :class:`ShadowedPackageError` if ``handlers`` or ``protocols`` is not ours.

    When the process is the command line itself (``python -m server_framework`` or the
    ``server-framework`` script) the message is printed as one line on stderr and the process
    exits 3 (a start-up failure), instead of an import traceback.
    """
    for name in SIBLINGS:
        message = shadowing(name)
        if message is None:
            continue
        if _is_command_line():
            sys.stderr.write(f"server-framework: error: {message}\n")
            raise SystemExit(3)
        raise ShadowedPackageError(message, name=name)


def _is_command_line() -> bool:
    argv0 = sys.argv[0] if sys.argv else ""
    # ``python -m server_framework`` imports this package while argv[0] is still "-m".
    return argv0 == "-m" or os.path.basename(argv0) == "server-framework"
