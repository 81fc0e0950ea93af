"""The pytest plugin of server_framework: serve handlers in tests, run async tests on every loop.

pytest loads it by itself once server_framework is installed (entry point ``server_framework``
in the ``pytest11`` group; ``-p no:server_framework`` turns it off). It only acts on tests that
ask for it:

- ``sf_serve``: a fixture that works like `~server_framework.testing.serve_in_background`
  and closes whatever the test left open.
- ``@pytest.mark.server_framework`` on an ``async def`` test (or a class, or a module's
  ``pytestmark``) runs it once per loop: asyncio, uvloop and trio (ids ``[asyncio]``,
  ``[uvloop]``, ``[trio]``). So does requesting the ``sf_backend_name`` fixture, and so does
  an unmarked ``async def`` test that requests ``sf_serve``. No other async plugin is needed.
  Tests marked ``@pytest.mark.trio`` are left to pytest-trio.
- ``sf_backend_name``: the loop of this run of the test. A marked *plain* test is run once per
  loop too: its ``sf_serve`` servers run on that loop, in their thread.
- Which loops: the ``sf_backends`` ini option (default ``asyncio uvloop trio``), or
  ``@pytest.mark.server_framework(backends=["trio"])`` on a test. A loop whose library is not
  installed (uvloop on Windows) is skipped.

Fixtures are plain (synchronous) fixtures: open servers and clients inside the test, with
``async with``.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Final, get_args

import pytest

from server_framework.backend import BackendName, run

from ._serve import ServeFactory

__all__ = ["sf_backend_name", "sf_serve"]

MARKER: Final = "server_framework"
_BACKENDS: tuple[BackendName, ...] = get_args(BackendName)
_FACTORY_KEY: Final = pytest.StashKey[ServeFactory]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``sf_backends`` ini option."""
    parser.addini(
        "sf_backends",
        "server_framework: the loops async tests run on (asyncio uvloop trio)",
        type="args",
        default=list(_BACKENDS),
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker (for ``--strict-markers``)."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(backends=None): run this test once per event loop (asyncio, uvloop, trio), "
        "an async def test in that loop (server_framework's plugin)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Make marked tests request ``sf_backend_name``, so that they are run once per loop."""
    if not (collector.istestfunction(obj, name) and callable(obj)):  # type: ignore[attr-defined]
        return
    own_marks = getattr(obj, "pytestmark", ())
    marked = collector.get_closest_marker(MARKER) is not None or any(
        mark.name == MARKER for mark in own_marks
    )
    if not marked and inspect.iscoroutinefunction(obj):
        # An async def test that asks for sf_serve needs a loop: give it ours, unless
        # another plugin runs it (pytest-trio's mark, anyio's, pytest-asyncio's).
        foreign = {"trio", "anyio", "asyncio"}
        if collector.get_closest_marker("trio") is None and not any(
            mark.name in foreign for mark in own_marks
        ):
            try:
                marked = "sf_serve" in inspect.signature(obj).parameters
            except (TypeError, ValueError):
                marked = False
    if marked:
        pytest.mark.usefixtures("sf_backend_name")(obj)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``sf_backend_name`` over the loops (unless the test does it itself)."""
    if "sf_backend_name" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if "sf_backend_name" in names:
            return
    marker = metafunc.definition.get_closest_marker(MARKER)
    chosen = marker.kwargs.get("backends") if marker is not None else None
    backends = list(metafunc.config.getini("sf_backends") if chosen is None else chosen)
    unknown = [name for name in backends if name not in _BACKENDS]
    if unknown or not backends:
        raise pytest.UsageError(
            f"server_framework backends must be among {', '.join(_BACKENDS)}; got {backends}"
        )
    metafunc.parametrize("sf_backend_name", backends, indirect=True, ids=backends)


@pytest.fixture
def sf_backend_name(request: pytest.FixtureRequest) -> BackendName:
    """The loop this run of the test is on: ``"asyncio"``, ``"uvloop"`` or ``"trio"``.

    Requested (or marked ``@pytest.mark.server_framework``), the test runs once per loop.
    """
    param: Any = getattr(request, "param", "asyncio")  # "asyncio" if parametrized by hand
    name: BackendName = param
    if name == "uvloop" and importlib.util.find_spec("uvloop") is None:
        pytest.skip("uvloop is not installed")
    return name


@pytest.fixture
def sf_serve(request: pytest.FixtureRequest) -> Iterator[ServeFactory]:
    """`~server_framework.testing.serve_in_background`, cleaned up after the test.

    ::

        def test_echo(sf_serve: ServeFactory) -> None:
            with sf_serve(EchoHandler(), StreamProtocol(JSONSerializer())) as served:
                assert served.client.request({"a": 1}) == {"a": 1}

    ``with`` servings default to the test's loop (``sf_backend_name``) if it has one.
    """
    backend = (
        request.getfixturevalue("sf_backend_name")
        if "sf_backend_name" in request.fixturenames
        else None
    )
    factory = ServeFactory(backend)
    request.node.stash[_FACTORY_KEY] = factory
    yield factory
    factory.close()


def _opted_in(item: pytest.Function) -> bool:
    if item.get_closest_marker("trio") is not None:  # pytest-trio's
        return False
    return item.get_closest_marker(MARKER) is not None or "sf_backend_name" in item.fixturenames


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an opted-in ``async def`` test to completion in a new loop of its backend."""
    test_fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(test_fn) or not _opted_in(pyfuncitem):
        return None
    funcargs = pyfuncitem.funcargs
    # Pass only the test's own arguments, as pytest's default implementation does.
    kwargs = {name: funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    # Present unless the marker was added after collection: then the default loop.
    backend: Any = funcargs.get("sf_backend_name")
    factory = pyfuncitem.stash.get(_FACTORY_KEY, None)
    run(_with_cleanup(functools.partial(test_fn, **kwargs), factory), backend=backend)
    return True


def _with_cleanup(
    test_fn: Callable[[], Coroutine[Any, Any, object]], factory: ServeFactory | None
) -> Callable[[], Coroutine[Any, Any, None]]:
    async def run_test() -> None:
        try:
            await test_fn()
        finally:
            if factory is not None:
                await factory.aclose()

    return run_test
