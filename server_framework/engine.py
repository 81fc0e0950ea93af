"""Which connection engine runs: the compiled one (Cython) or the pure-Python one.

The per-message work of every server (splitting frames, stepping the handler, batching the
replies) exists twice, with the same behaviour: in pure Python (``server_framework.servers``,
``protocols.framing``: the readable reference) and compiled from Cython
(``server_framework/_cengine.pyx``), which ``pip install`` builds with the machine's C compiler.
The choice is made once, when ``server_framework`` is first imported:

- the compiled engine if it was built, unless the environment variable
  ``SERVER_FRAMEWORK_PURE_PYTHON`` is set to anything but ``""`` or ``"0"``;
- otherwise the pure-Python engine. When that is because the build had no compiler, the first
  server started says so in one log line (:func:`note_fallback`).

``python -m server_framework --version`` prints the engine in use.

Example::

    from server_framework.engine import ENGINE
    print(ENGINE)        # "compiled" or "pure Python"
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Final, Literal

import structlog

__all__ = ["ENGINE", "PURE_PYTHON_VARIABLE", "REASON", "compiled", "note_fallback"]

#: The environment variable that forces the pure-Python engine.
PURE_PYTHON_VARIABLE: Final = "SERVER_FRAMEWORK_PURE_PYTHON"


_SETTING: Final = os.environ.get(PURE_PYTHON_VARIABLE, "")  # read once, at import
_FORCED: Final = _SETTING not in ("", "0")


def _load() -> tuple[ModuleType | None, str]:
    if _FORCED:
        return None, f"{PURE_PYTHON_VARIABLE}={_SETTING} forces it"
    try:
        module = importlib.import_module("server_framework._cengine")
    except ImportError as exc:
        return None, f"the compiled engine is not built ({exc})"
    return module, "built with the package"


_LOADED: Final = _load()
#: The compiled engine's module, or None when the pure-Python engine runs.
compiled: Final = _LOADED[0]
#: Why this engine runs, in a few words (for ``--version`` and the fallback's log line).
REASON: Final = _LOADED[1]
#: The engine in use: ``"compiled"`` or ``"pure Python"``.
ENGINE: Final[Literal["compiled", "pure Python"]] = (
    "compiled" if compiled is not None else "pure Python"
)

_noted = False


def note_fallback() -> None:
    """Log once per process that the compiled engine is missing (servers call it as they start).

    Silent when the compiled engine runs, or when the pure one was asked for.
    """
    global _noted
    if _noted or compiled is not None or _FORCED:
        return
    _noted = True
    structlog.get_logger("server_framework").warning(
        "running the pure-Python engine: " + REASON,
        hint="reinstall with a C compiler (e.g. gcc) to build the compiled engine",
    )
