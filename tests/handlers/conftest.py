"""Make the functional-test helpers (``server_helpers``) importable from the handler tests.

pytest puts each test file's own folder on ``sys.path``; the shared helpers for serving a
server and talking to it over real sockets live in ``tests/functional``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_FUNCTIONAL = str(Path(__file__).resolve().parents[1] / "functional")
if _FUNCTIONAL not in sys.path:
    sys.path.insert(0, _FUNCTIONAL)
