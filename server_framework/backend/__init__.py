"""The event-loop layer: one `AsyncBackend` interface, implemented for asyncio, uvloop and trio.

Code above this package (servers, clients, handlers) asks `current()` for the backend of the
running loop (or is handed one) and uses its primitives: sleeping and time, events, locks,
conditions, task groups and task handles, cancel scopes and deadlines, shielding, name
resolution, worker threads and `ThreadsPortal`. `run` starts a loop by name. The loop-specific
modules are imported only when their loop is used; above this package, only the per-loop
hot-path transports (``servers/_asyncio*.py``, ``servers/_trio.py``, ``clients/_asyncio.py``,
``clients/_trio.py``, ``_asyncio_flow.py``) import asyncio or trio.
"""

from server_framework.backend._abc import AsyncBackend, BackendName
from server_framework.backend._portal import ThreadsPortal
from server_framework.backend._primitives import (
    CancelScope,
    Condition,
    Event,
    Lock,
    Task,
    TaskGroup,
)
from server_framework.backend._registry import current, default_backend_name, get_backend, run

__all__ = [
    "AsyncBackend",
    "BackendName",
    "CancelScope",
    "Condition",
    "Event",
    "Lock",
    "Task",
    "TaskGroup",
    "ThreadsPortal",
    "current",
    "default_backend_name",
    "get_backend",
    "run",
]
