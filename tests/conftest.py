"""Test plugin: run async tests on asyncio, uvloop and trio, and check that nothing leaks.

How to use it:

- An ``async def`` test that requests the ``backend_name`` fixture (directly, or through any
  other fixture that requests it) runs three times, once per loop (ids ``asyncio``,
  ``uvloop``, ``trio``), through ``server_framework.run(test, backend=backend_name)``. Inside,
  ``server_framework.backend.current()`` is that loop's backend. Fixtures are ordinary
  synchronous fixtures: do async setup inside the test (or in an async context manager it
  enters).
- Async tests marked ``@pytest.mark.trio`` are left to pytest-trio. An async test with neither
  is an error, reported by pytest itself.
- After every test (sync or async): no thread started during the test may still be running
  (threads that are finishing are joined for a short while first), and, on asyncio/uvloop,
  no task may still be pending when the test coroutine returns (``asyncio.Runner`` would
  otherwise cancel it silently). trio's structured concurrency already guarantees the latter.

Logging: the suite marks structlog as configured, keeping its defaults (every level, printed to
the ``sys.stdout`` of the moment, which pytest captures per test), so that servers started in
this process do not install the framework's default logging (``ensure_logging``, a background
writer thread on stderr); the reliability tests check that default in subprocesses.

Idle worker threads of trio's process-wide thread cache (named ``Trio thread N``, daemon) are
not leaks: trio keeps them a few seconds for reuse, across runs.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import structlog

import server_framework
from server_framework.backend import BackendName

BACKEND_NAMES: tuple[BackendName, ...] = ("asyncio", "uvloop", "trio")

structlog.configure()  # see the module documentation: structlog's defaults, marked configured

#: How long the leak check waits for threads that are finishing before failing the test.
THREAD_JOIN_GRACE = 5.0

_TRIO_IDLE_THREAD = re.compile(r"Trio thread \d+")


@pytest.fixture(params=BACKEND_NAMES, ids=BACKEND_NAMES)
def backend_name(request: pytest.FixtureRequest) -> BackendName:
    """The loop this test runs on: ``"asyncio"``, ``"uvloop"`` or ``"trio"``."""
    name: BackendName = request.param
    return name


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests that request ``backend_name`` on that loop."""
    test_fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(test_fn) or pyfuncitem.get_closest_marker("trio"):
        return None
    funcargs = pyfuncitem.funcargs
    if "backend_name" not in funcargs:
        return None
    # Pass only the test's own arguments, as pytest's default implementation does.
    kwargs = {name: funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    backend: BackendName = funcargs["backend_name"]
    # Ctrl-C stays pytest's KeyboardInterrupt (not run()'s graceful stop and exit 130).
    test = _checked(functools.partial(test_fn, **kwargs), backend)
    server_framework.run(test, backend=backend, handle_signals=False)
    return True


def _checked(
    test_fn: Callable[[], Coroutine[Any, Any, object]], backend: BackendName
) -> Callable[[], Coroutine[Any, Any, None]]:
    async def run_test() -> None:
        await test_fn()
        if backend != "trio":
            pending = asyncio.all_tasks() - {asyncio.current_task()}
            assert not pending, f"tasks left pending by the test: {pending}"

    return run_test


def _is_idle_trio_worker(thread: threading.Thread) -> bool:
    return thread.daemon and _TRIO_IDLE_THREAD.fullmatch(thread.name) is not None


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    """Fail the test if a thread it started is still running after it (see module docs)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_JOIN_GRACE
    while True:
        leftover = [
            thread
            for thread in threading.enumerate()
            if thread not in before and not _is_idle_trio_worker(thread)
        ]
        remaining = deadline - time.monotonic()
        if not leftover or remaining <= 0:
            break
        # A short join per round: a trio cache thread finishing its job never exits, it goes
        # back to idle (and changes its name), so we must look again rather than join it.
        leftover[0].join(timeout=min(remaining, 0.01))
    assert not leftover, f"threads left running by the test: {[t.name for t in leftover]}"
