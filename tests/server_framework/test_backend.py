"""The backend interface, on every loop: detection, running, time, primitives, deadlines."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import pytest
import trio
import uvloop

import server_framework
from server_framework.backend import (
    AsyncBackend,
    BackendName,
    current,
    default_backend_name,
    get_backend,
    run,
)


class Boom(Exception):
    pass


# ---------------------------------------------------------------------------- detection, run


async def test_current_is_the_running_loop(backend_name: BackendName) -> None:
    backend = current()
    assert backend.name == backend_name
    assert backend is get_backend(backend_name)
    assert server_framework.current_backend() is backend


def test_current_outside_a_loop_raises() -> None:
    with pytest.raises(RuntimeError, match="no supported event loop"):
        current()


def test_current_detects_loops_started_elsewhere() -> None:
    async def name() -> str:
        return current().name

    assert asyncio.run(name()) == "asyncio"
    assert uvloop.run(name()) == "uvloop"
    assert trio.run(name) == "trio"


@pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_current_from_a_plain_asyncio_callback(loop_factory: Callable[[], object]) -> None:
    # Protocol callbacks run outside any task, where sniffio alone cannot tell.
    async def main() -> str:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        loop.call_soon(lambda: future.set_result(current().name))
        return await future

    with asyncio.Runner(loop_factory=loop_factory) as runner:  # type: ignore[arg-type]
        name = runner.run(main())
    assert name == ("uvloop" if loop_factory is uvloop.new_event_loop else "asyncio")


def test_get_backend_returns_one_instance_per_name() -> None:
    backends = {name: get_backend(name) for name in ("asyncio", "uvloop", "trio")}
    assert {name: backend.name for name, backend in backends.items()} == {
        "asyncio": "asyncio",
        "uvloop": "uvloop",
        "trio": "trio",
    }
    assert all(get_backend(name) is backend for name, backend in backends.items())
    assert isinstance(backends["trio"], AsyncBackend)


def test_get_backend_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="'asyncio', 'uvloop', 'trio'"):
        get_backend("curio")  # type: ignore[arg-type]


def test_run_returns_the_result(backend_name: BackendName) -> None:
    async def add(a: int, b: int) -> tuple[int, str]:
        return a + b, current().name

    assert run(add, 1, 2, backend=backend_name) == (3, backend_name)


def test_run_propagates_the_exception(backend_name: BackendName) -> None:
    async def fail() -> None:
        raise Boom("from main")

    with pytest.raises(Boom, match="from main"):
        run(fail, backend=backend_name)


def test_run_default_backend_is_uvloop_when_installed() -> None:
    async def name() -> str:
        return current().name

    assert default_backend_name() == "uvloop"
    assert run(name) == "uvloop"
    assert server_framework.run(name) == "uvloop"


def test_run_inside_a_running_loop_raises() -> None:
    async def nested() -> None:
        async def noop() -> None:
            pass

        with pytest.raises(RuntimeError, match="running event loop"):
            run(noop, backend="asyncio")

    run(nested, backend="asyncio")


# ---------------------------------------------------------------------------- time, sleep


async def test_sleep_and_current_time(backend_name: BackendName) -> None:
    backend = current()
    start = backend.current_time()
    await backend.sleep(0.01)
    # asyncio may wake up one clock resolution early
    assert backend.current_time() - start >= 0.009


async def test_sleep_forever_ends_only_by_cancellation(backend_name: BackendName) -> None:
    backend = current()
    with backend.move_on_after(0.01) as scope:
        await backend.sleep_forever()
    assert scope.cancelled_caught


async def test_checkpoint_lets_other_tasks_run_and_is_a_cancellation_point(
    backend_name: BackendName,
) -> None:
    backend = current()
    ran = backend.create_event()

    async def other() -> None:
        ran.set()

    async with backend.create_task_group() as tg:
        tg.start_soon(other)
        for _ in range(100):
            if ran.is_set():
                break
            await backend.checkpoint()
        assert ran.is_set()

    with backend.move_on_at(-math.inf) as scope:
        await backend.checkpoint()
    assert scope.cancelled_caught


# ---------------------------------------------------------------------------- primitives


async def test_event(backend_name: BackendName) -> None:
    backend = current()
    event = backend.create_event()
    woken: list[str] = []

    async def waiter(name: str) -> None:
        await event.wait()
        woken.append(name)

    async with backend.create_task_group() as tg:
        tg.start_soon(waiter, "a")
        tg.start_soon(waiter, "b")
        await backend.checkpoint()
        assert not event.is_set()
        assert woken == []
        event.set()
    assert event.is_set()
    assert sorted(woken) == ["a", "b"]
    await event.wait()  # already set: returns at once


async def test_lock_excludes(backend_name: BackendName) -> None:
    backend = current()
    lock = backend.create_lock()
    inside = 0
    done: list[int] = []

    async def critical(n: int) -> None:
        nonlocal inside
        async with lock:
            inside += 1
            assert inside == 1
            await backend.sleep(0)
            await backend.sleep(0)
            inside -= 1
            done.append(n)

    await lock.acquire()
    assert lock.locked()
    async with backend.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(critical, n)
        await backend.sleep(0)
        assert done == []  # all blocked on the held lock
        lock.release()
    assert not lock.locked()
    assert sorted(done) == [0, 1, 2, 3, 4]


async def test_task_group_waits_for_its_tasks(backend_name: BackendName) -> None:
    backend = current()
    results: list[int] = []

    async def work(n: int) -> None:
        await backend.sleep(0.001 * n)
        results.append(n)

    async with backend.create_task_group() as tg:
        for n in (3, 1, 2):
            tg.start_soon(work, n, name=f"work-{n}")
    assert sorted(results) == [1, 2, 3]


async def test_task_group_failing_child_cancels_siblings_and_propagates(
    backend_name: BackendName,
) -> None:
    backend = current()
    sibling_cancelled = False
    sibling_started = backend.create_event()

    async def sibling() -> None:
        nonlocal sibling_cancelled
        try:
            sibling_started.set()
            await backend.sleep_forever()
        except backend.get_cancelled_exc_class():
            sibling_cancelled = True
            raise

    async def failing() -> None:
        await sibling_started.wait()
        raise Boom("child failed")

    async def group() -> None:
        async with backend.create_task_group() as tg:
            tg.start_soon(sibling)
            tg.start_soon(failing)

    with pytest.raises(ExceptionGroup) as info:
        await group()
    assert sibling_cancelled
    assert [type(exc) for exc in info.value.exceptions] == [Boom]


async def test_task_group_body_error_cancels_children(backend_name: BackendName) -> None:
    backend = current()
    child_cancelled = backend.create_event()

    async def child() -> None:
        try:
            await backend.sleep_forever()
        finally:
            child_cancelled.set()

    async def group() -> None:
        async with backend.create_task_group() as tg:
            tg.start_soon(child)
            await backend.checkpoint()
            raise Boom("body failed")

    with pytest.raises(ExceptionGroup) as info:
        await group()
    assert child_cancelled.is_set()
    assert info.group_contains(Boom)


# ---------------------------------------------------------------------------- deadlines


async def test_timeout_raises_timeout_error(backend_name: BackendName) -> None:
    backend = current()
    with pytest.raises(TimeoutError), backend.timeout(0.01):
        await backend.sleep_forever()
    scope = backend.timeout_at(backend.current_time() + 0.01)
    with pytest.raises(TimeoutError), scope:
        await backend.sleep_forever()
    assert scope.cancelled_caught


async def test_timeout_not_reached(backend_name: BackendName) -> None:
    backend = current()
    with backend.timeout(10) as scope:
        await backend.sleep(0)
    assert not scope.cancelled_caught
    assert scope.deadline > backend.current_time()
    with backend.timeout(math.inf) as scope:
        await backend.sleep(0)
    assert scope.deadline == math.inf
    # A deadline that expires after its block has finished cancels nothing.
    with backend.timeout(0.005):
        await backend.sleep(0)
    await backend.sleep(0.02)


async def test_timeout_lets_the_blocks_own_timeout_error_through(
    backend_name: BackendName,
) -> None:
    backend = current()
    scope = backend.timeout(10)

    async def block() -> None:
        with scope:
            await backend.sleep(0)
            raise TimeoutError("mine")

    with pytest.raises(TimeoutError, match="mine") as info:
        await block()
    assert not scope.cancelled_caught
    assert str(info.value) == "mine"


async def test_move_on_after(backend_name: BackendName) -> None:
    backend = current()
    start = backend.current_time()
    with backend.move_on_after(0.01) as scope:
        assert scope.deadline == pytest.approx(start + 0.01, abs=0.005)
        await backend.sleep_forever()
    assert scope.cancelled_caught
    with backend.move_on_at(backend.current_time() + 10) as scope:
        await backend.sleep(0)
    assert not scope.cancelled_caught


async def test_nested_scopes_catch_only_their_own_cancellation(backend_name: BackendName) -> None:
    backend = current()
    with backend.move_on_after(10) as outer:
        with backend.move_on_after(0.01) as inner:
            await backend.sleep_forever()
        await backend.sleep(0)
    assert inner.cancelled_caught
    assert not outer.cancelled_caught

    with backend.move_on_after(0.01) as outer, backend.move_on_after(10) as inner:
        await backend.sleep_forever()
    assert outer.cancelled_caught
    assert not inner.cancelled_caught


async def test_cancelled_exception_class(backend_name: BackendName) -> None:
    backend = current()
    expected = asyncio.CancelledError if backend_name != "trio" else trio.Cancelled
    assert backend.get_cancelled_exc_class() is expected
    caught = False
    with backend.move_on_after(0.01) as scope:
        try:
            await backend.sleep_forever()
        except backend.get_cancelled_exc_class():
            caught = True
            raise
    assert caught
    assert scope.cancelled_caught


async def test_cancel_shielded_finishes_then_delivers_the_cancellation(
    backend_name: BackendName,
) -> None:
    backend = current()
    finished = False
    after_shield_reached = False

    async def cleanup(delay: float) -> str:
        nonlocal finished
        await backend.sleep(delay)
        finished = True
        return "done"

    with backend.move_on_after(0.01) as scope:
        await backend.cancel_shielded(cleanup, 0.05)
        after_shield_reached = True
    assert finished
    assert scope.cancelled_caught
    assert not after_shield_reached


async def test_cancel_shielded_result_and_error(backend_name: BackendName) -> None:
    backend = current()

    async def value(x: int) -> int:
        await backend.sleep(0)
        return x * 2

    async def fail() -> None:
        await backend.sleep(0)
        raise Boom("shielded failure")

    assert await backend.cancel_shielded(value, 21) == 42
    with pytest.raises(Boom):
        await backend.cancel_shielded(fail)

    # The shielded work's error wins over a pending cancellation.
    async def slow_fail() -> None:
        await backend.sleep(0.03)
        raise Boom("late")

    with pytest.raises(Boom, match="late"), backend.move_on_after(0.01):
        await backend.cancel_shielded(slow_fail)


# ---------------------------------------------------------------------------- test plugin


@pytest.mark.trio
async def test_trio_marked_tests_are_left_to_pytest_trio() -> None:
    # No backend_name: pytest-trio runs this one, once, and our backend still detects trio.
    assert current().name == "trio"
    await current().checkpoint()
