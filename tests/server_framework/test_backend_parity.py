"""Issue 15, backend rows: conditions, fair locks, ``TaskGroup.start`` and `Task` handles,
``sleep_until``, name resolution, and cancel scopes with ``cancel()``, ``cancel_called``, a
movable ``deadline`` and ``open_cancel_scope``, on every loop.

Deterministic: tasks are ordered with events and task handles, never with sleeps; the only
durations are deadlines that are either already past or an hour away.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import socket
import threading

import pytest
import trio

from server_framework.backend import (
    AsyncBackend,
    BackendName,
    CancelScope,
    Condition,
    Lock,
    Task,
    current,
)

HOUR = 3600.0


class Boom(Exception):
    pass


def assert_not_cancelling(backend_name: BackendName) -> None:
    """On asyncio, every scope withdrew its cancel request (``Task.uncancel``) on exit."""
    if backend_name != "trio":
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0


# ---------------------------------------------------------------------------------- sleep_until


async def test_sleep_until_reaches_the_deadline(backend_name: BackendName) -> None:
    backend = current()
    deadline = backend.current_time() + 0.02
    await backend.sleep_until(deadline)
    assert backend.current_time() >= deadline


async def test_sleep_until_a_past_deadline_is_a_cancellation_point(
    backend_name: BackendName,
) -> None:
    backend = current()
    deadline = backend.current_time() - 1.0
    await backend.sleep_until(deadline)  # returns at once
    with backend.open_cancel_scope() as scope:
        scope.cancel()
        await backend.sleep_until(deadline)
        pytest.fail("not cancelled")
    assert scope.cancelled_caught


async def test_sleep_until_inf_sleeps_until_cancelled(backend_name: BackendName) -> None:
    backend = current()
    with backend.open_cancel_scope() as scope:
        scope.cancel()
        await backend.sleep_until(math.inf)
    assert scope.cancelled_caught
    assert_not_cancelling(backend_name)


# ---------------------------------------------------------------------------------- cancel scopes


async def test_cancel_inside_the_block(backend_name: BackendName) -> None:
    backend = current()
    scope = backend.open_cancel_scope()
    assert isinstance(scope, CancelScope)
    assert scope.deadline == math.inf
    assert not scope.cancel_called
    reached: list[bool] = []
    with scope:
        scope.cancel()
        assert scope.cancel_called
        await backend.checkpoint()
        reached.append(True)
    assert reached == []
    assert scope.cancelled_caught
    await backend.checkpoint()  # nothing left pending
    assert_not_cancelling(backend_name)


async def test_cancel_before_entering(backend_name: BackendName) -> None:
    backend = current()
    scope = backend.open_cancel_scope()
    scope.cancel()
    assert scope.cancel_called
    reached = []
    with scope:
        await backend.checkpoint()
        reached.append(True)
    assert reached == []
    assert scope.cancelled_caught
    assert_not_cancelling(backend_name)


async def test_cancel_after_the_last_checkpoint_does_not_leak(backend_name: BackendName) -> None:
    backend = current()
    with backend.open_cancel_scope() as scope:
        await backend.checkpoint()
        scope.cancel()  # too late: no cancellation point left in the block
    assert scope.cancel_called
    assert not scope.cancelled_caught
    await backend.checkpoint()  # the cancellation did not escape the block
    scope.cancel()  # after exit: nothing happens
    await backend.checkpoint()
    assert_not_cancelling(backend_name)


async def test_cancel_from_another_task(backend_name: BackendName) -> None:
    backend = current()
    scopes: list[CancelScope] = []

    async def child() -> str:
        with backend.open_cancel_scope() as scope:
            scopes.append(scope)
            await backend.sleep_forever()
        assert_not_cancelling(backend_name)
        return "after the block"

    async with backend.create_task_group() as tg:
        task = await tg.start(child)
        scopes[0].cancel()
        assert await task.join() == "after the block"
    assert scopes[0].cancelled_caught
    assert not task.cancelled()


async def test_cancel_on_the_outer_of_nested_scopes(backend_name: BackendName) -> None:
    backend = current()
    reached = []
    with backend.open_cancel_scope() as outer:
        with backend.move_on_after(HOUR) as inner:
            outer.cancel()
            await backend.checkpoint()
            reached.append("inner")
        reached.append("outer")
    assert reached == []
    assert outer.cancelled_caught
    assert not inner.cancelled_caught
    assert not inner.cancel_called
    assert_not_cancelling(backend_name)


@pytest.mark.parametrize("first", ["inner", "outer"])
async def test_outer_cancellation_wins_over_the_inner_one(
    backend_name: BackendName, first: str
) -> None:
    backend = current()
    reached = []
    with backend.open_cancel_scope() as outer:
        with backend.open_cancel_scope() as inner:
            for scope in (inner, outer) if first == "inner" else (outer, inner):
                scope.cancel()
            await backend.checkpoint()
        reached.append("after inner")  # the inner scope did not swallow the outer cancellation
    assert reached == []
    assert outer.cancelled_caught
    assert not inner.cancelled_caught
    assert inner.cancel_called
    assert_not_cancelling(backend_name)


async def test_inner_cancellation_leaves_the_outer_scope_alone(backend_name: BackendName) -> None:
    backend = current()
    with backend.open_cancel_scope() as outer:
        with backend.open_cancel_scope() as inner:
            inner.cancel()
            await backend.checkpoint()
        await backend.checkpoint()  # not cancelled
    assert inner.cancelled_caught
    assert not outer.cancelled_caught
    assert not outer.cancel_called
    assert_not_cancelling(backend_name)


@pytest.mark.parametrize("first", ["scope", "task"])
async def test_outside_cancellation_is_never_swallowed_by_a_cancelled_scope(
    backend_name: BackendName, first: str
) -> None:
    # The scope and the task are both cancelled while the task waits inside the scope: the
    # task's cancellation goes through the scope, whichever came first.
    backend = current()
    scopes: list[CancelScope] = []
    reached = []

    async def child() -> None:
        with backend.open_cancel_scope() as scope:
            scopes.append(scope)
            await backend.sleep_forever()
        reached.append("after the block")

    async with backend.create_task_group() as tg:
        task = await tg.start(child)
        if first == "scope":
            scopes[0].cancel()
            assert task.cancel()
        else:
            assert task.cancel()
            scopes[0].cancel()
        await task.wait()
    assert reached == []
    assert task.cancelled()
    assert scopes[0].cancel_called
    assert not scopes[0].cancelled_caught


async def test_open_cancel_scope_with_a_past_deadline(backend_name: BackendName) -> None:
    backend = current()
    scope = backend.open_cancel_scope(deadline=backend.current_time() - 1.0)
    assert scope.cancel_called  # the deadline has passed, even before entering
    scope.deadline = math.inf  # too late: a scope stays cancelled
    with scope:
        assert scope.cancel_called
        await backend.checkpoint()
        pytest.fail("not cancelled")
    assert scope.cancelled_caught  # and no TimeoutError
    assert_not_cancelling(backend_name)


async def test_deadline_moved_earlier_while_inside(backend_name: BackendName) -> None:
    backend = current()
    with backend.open_cancel_scope() as scope:
        await backend.checkpoint()
        scope.deadline = backend.current_time() + 0.01
        await backend.sleep_forever()
    assert scope.cancelled_caught
    assert scope.cancel_called
    assert_not_cancelling(backend_name)


async def test_deadline_moved_later_while_inside(backend_name: BackendName) -> None:
    backend = current()
    with backend.open_cancel_scope(deadline=backend.current_time() + 0.02) as scope:
        scope.deadline = backend.current_time() + HOUR
        await backend.sleep(0.05)  # past the first deadline
    assert not scope.cancelled_caught
    assert not scope.cancel_called


async def test_deadline_removed_with_inf(backend_name: BackendName) -> None:
    backend = current()
    with backend.move_on_after(0.02) as scope:
        scope.deadline = math.inf
        assert scope.deadline == math.inf
        await backend.sleep(0.05)
    assert not scope.cancelled_caught


async def test_deadline_cannot_be_nan(backend_name: BackendName) -> None:
    scope = current().open_cancel_scope()
    with pytest.raises(ValueError):
        scope.deadline = math.nan
    assert scope.deadline == math.inf


async def test_deadline_set_before_entering(backend_name: BackendName) -> None:
    backend = current()
    scope = backend.open_cancel_scope()
    scope.deadline = backend.current_time() + HOUR
    with scope:
        scope.deadline = backend.current_time() - 1.0
        await backend.checkpoint()
        pytest.fail("not cancelled")
    assert scope.cancelled_caught


async def test_moving_the_deadline_does_not_undo_a_cancel(backend_name: BackendName) -> None:
    backend = current()
    with backend.open_cancel_scope() as scope:
        scope.cancel()
        scope.deadline = math.inf
        await backend.checkpoint()
        pytest.fail("not cancelled")
    assert scope.cancelled_caught


async def test_cancel_on_a_timeout_scope_is_not_a_timeout(backend_name: BackendName) -> None:
    backend = current()
    with backend.timeout(HOUR) as scope:
        scope.cancel()
        await backend.checkpoint()
        pytest.fail("not cancelled")
    assert scope.cancelled_caught
    assert_not_cancelling(backend_name)


async def test_timeout_scope_with_a_deadline_moved_into_the_past(
    backend_name: BackendName,
) -> None:
    backend = current()
    scope = backend.timeout_at(backend.current_time() + HOUR)

    async def block() -> None:
        with scope:
            scope.deadline = backend.current_time() - 1.0
            await backend.checkpoint()

    with pytest.raises(TimeoutError):
        await block()
    assert scope.cancelled_caught
    assert_not_cancelling(backend_name)


async def test_cancel_after_the_deadline_passed_stays_a_timeout(backend_name: BackendName) -> None:
    backend = current()
    scope = backend.timeout(HOUR)

    async def block() -> None:
        with scope:
            scope.deadline = backend.current_time() - 1.0
            scope.cancel()
            await backend.checkpoint()

    with pytest.raises(TimeoutError):
        await block()
    assert scope.cancel_called


async def test_a_scope_is_entered_once(backend_name: BackendName) -> None:
    backend = current()
    scope = backend.open_cancel_scope()
    with scope:
        pass
    with pytest.raises(RuntimeError):
        scope.__enter__()


# ---------------------------------------------------------------------------------- conditions


async def test_condition_notify_and_notify_all(backend_name: BackendName) -> None:
    backend = current()
    cond = backend.create_condition()
    waiting: list[int] = []  # in the order the waiters entered wait()
    woken: list[int] = []
    all_waiting = backend.create_event()

    async def waiter(i: int) -> int:
        async with cond:
            waiting.append(i)
            if len(waiting) == 3:
                all_waiting.set()
            await cond.wait()
            assert cond.locked()
            woken.append(i)
        return i

    async with backend.create_task_group() as tg:
        tasks = [await tg.start(waiter, i) for i in range(3)]
        await all_waiting.wait()  # the third waiter sets it, then waits without yielding first
        async with cond:
            cond.notify()
        first = waiting[0]
        assert await tasks[first].join() == first
        assert woken == [first]  # one woken, the longest waiting
        assert not any(task.done() for task in tasks if task is not tasks[first])
        async with cond:
            cond.notify_all()
        assert [await task.join() for task in tasks] == [0, 1, 2]
    assert woken[0] == first
    assert sorted(woken) == [0, 1, 2]


async def test_condition_notify_n(backend_name: BackendName) -> None:
    backend = current()
    cond = backend.create_condition()
    waiting: list[int] = []
    all_waiting = backend.create_event()

    async def waiter(i: int) -> None:
        async with cond:
            waiting.append(i)
            if len(waiting) == 3:
                all_waiting.set()
            await cond.wait()

    async with backend.create_task_group() as tg:
        tasks = [await tg.start(waiter, i) for i in range(3)]
        await all_waiting.wait()
        async with cond:
            cond.notify(2)
        await tasks[waiting[0]].join()
        await tasks[waiting[1]].join()
        assert not tasks[waiting[2]].done()
        async with cond:
            cond.notify()
        await tasks[waiting[2]].join()


async def test_condition_needs_the_lock(backend_name: BackendName) -> None:
    backend = current()
    cond = backend.create_condition()
    assert not cond.locked()
    with pytest.raises(RuntimeError):
        cond.notify()
    with pytest.raises(RuntimeError):
        cond.notify_all()
    with pytest.raises(RuntimeError):
        await cond.wait()


async def test_cancelled_condition_wait_holds_the_lock_again(backend_name: BackendName) -> None:
    backend = current()
    cond = backend.create_condition()
    async with cond:
        with backend.open_cancel_scope() as scope:
            scope.cancel()
            await cond.wait()
        assert scope.cancelled_caught
        assert cond.locked()
    assert not cond.locked()
    assert_not_cancelling(backend_name)


@pytest.mark.parametrize("factory", ["create_lock", "create_fair_lock"])
async def test_condition_over_a_given_lock(backend_name: BackendName, factory: str) -> None:
    backend = current()
    lock: Lock = getattr(backend, factory)()
    cond: Condition = backend.create_condition(lock)
    async with lock:
        assert cond.locked()
    async with cond:
        assert lock.locked()
        cond.notify_all()  # nobody waits: nothing happens
    assert not lock.locked()


async def bind_to_a_new_loop(lock: asyncio.Lock) -> None:
    """Make ``lock`` wait once, which binds it to the running loop."""
    async with lock:
        contender = asyncio.ensure_future(lock.acquire())
        await asyncio.sleep(0)
    await contender
    lock.release()


async def test_condition_rejects_foreign_locks(backend_name: BackendName) -> None:
    backend = current()
    foreign: list[object] = [threading.Lock()]
    if backend_name == "trio":
        foreign += [asyncio.Lock(), trio.StrictFIFOLock()]
    else:
        foreign.append(trio.Lock())
        elsewhere = asyncio.Lock()
        await backend.run_in_thread(asyncio.run, bind_to_a_new_loop(elsewhere))
        foreign.append(elsewhere)
    for lock in foreign:
        with pytest.raises(TypeError):
            backend.create_condition(lock)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- fair lock


@pytest.mark.parametrize("factory", ["create_fair_lock", "create_lock"])
async def test_lock_is_handed_over_first_come_first_served(
    backend_name: BackendName, factory: str
) -> None:
    # Each task takes the lock twice in a row, releasing and asking again at once: it must go
    # behind the tasks already waiting, every time.
    backend = current()
    lock: Lock = getattr(backend, factory)()
    order: list[str] = []

    async def worker(name: str) -> None:
        for suffix in ("", "2"):
            await lock.acquire()
            order.append(name + suffix)
            lock.release()

    async with backend.create_task_group() as tg:
        await lock.acquire()
        # start() returns once each worker waits for the lock: they queue as a, b, c.
        tasks = [await tg.start(worker, name) for name in "abc"]
        lock.release()
        await lock.acquire()  # behind a, b and c
        order.append("main")
        lock.release()
        for task in tasks:
            await task.join()
    assert order == ["a", "b", "c", "main", "a2", "b2", "c2"]


async def test_cancelled_waiter_gives_its_turn_to_the_next(backend_name: BackendName) -> None:
    backend = current()
    lock = backend.create_fair_lock()
    order: list[str] = []

    async def worker(name: str) -> None:
        async with lock:
            order.append(name)

    async with backend.create_task_group() as tg:
        await lock.acquire()
        a = await tg.start(worker, "a")
        b = await tg.start(worker, "b")
        a.cancel()
        await a.wait()
        lock.release()
        await b.join()
    assert order == ["b"]
    assert a.cancelled()
    assert not lock.locked()


# ---------------------------------------------------------------------------------- TaskGroup.start


async def test_start_returns_once_the_task_runs(backend_name: BackendName) -> None:
    backend = current()
    steps: list[str] = []
    release = backend.create_event()

    async def child(label: str) -> str:
        steps.append(f"{label} started")
        await release.wait()  # its first checkpoint
        steps.append(f"{label} released")
        return label

    async with backend.create_task_group() as tg:
        task = await tg.start(child, "x", name="child-x")
        assert isinstance(task, Task)
        assert steps == ["x started"]
        assert not task.done()
        assert not task.cancelled()
        release.set()
        assert await task.join() == "x"
        assert task.done()
        assert not task.cancelled()
        assert await task.join() == "x"  # again: same result
    assert steps == ["x started", "x released"]


async def test_start_soon_still_returns_none(backend_name: BackendName) -> None:
    backend = current()
    async with backend.create_task_group() as tg:
        assert tg.start_soon(backend.checkpoint) is None


async def test_join_raises_the_tasks_error_which_also_leaves_the_group(
    backend_name: BackendName,
) -> None:
    backend = current()
    go = backend.create_event()

    async def fail() -> None:
        await go.wait()
        raise Boom("from the task")

    tasks: list[Task[None]] = []

    async def group() -> None:
        async with backend.create_task_group() as tg:
            tasks.append(await tg.start(fail))
            go.set()

    with pytest.raises(ExceptionGroup) as caught:
        await group()
    assert [type(exc) for exc in caught.value.exceptions] == [Boom]
    task = tasks[0]
    assert task.done()
    assert not task.cancelled()
    with pytest.raises(Boom, match="from the task"):
        await task.join()
    with pytest.raises(Boom):
        await task.join_or_cancel()


async def test_task_cancel_then_cancelled(backend_name: BackendName) -> None:
    backend = current()
    reached = []

    async def forever() -> None:
        await backend.sleep_forever()
        reached.append(True)

    async with backend.create_task_group() as tg:
        task = await tg.start(forever)
        assert not task.cancelled()
        assert task.cancel()
        await task.wait()
        assert task.done()
        assert task.cancelled()
        assert not task.cancel()  # already finished
        with pytest.raises(concurrent.futures.CancelledError):
            await task.join()
        await backend.checkpoint()  # the group and this task were not cancelled
    assert reached == []  # and the group ended without error


async def test_a_task_that_catches_its_cancellation_is_not_cancelled(
    backend_name: BackendName,
) -> None:
    backend = current()

    async def stubborn() -> str:
        with backend.open_cancel_scope() as scope:
            await backend.sleep_forever()
        assert not scope.cancelled_caught
        return "kept going"

    async def catches() -> str:
        try:
            await backend.sleep_forever()
        except backend.get_cancelled_exc_class():
            return "caught"
        return "unreachable"

    async with backend.create_task_group() as tg:
        task = await tg.start(catches)
        task.cancel()
        assert await task.join() == "caught"
        assert not task.cancelled()
        other = await tg.start(stubborn)
        other.cancel()
        with pytest.raises(concurrent.futures.CancelledError):
            await other.join()  # its own scope did not swallow the task's cancellation


async def test_cancelling_join_does_not_cancel_the_task(backend_name: BackendName) -> None:
    backend = current()
    go = backend.create_event()

    async def child() -> int:
        await go.wait()
        return 42

    async with backend.create_task_group() as tg:
        task = await tg.start(child)
        with backend.open_cancel_scope() as scope:
            scope.cancel()
            await task.join()
        assert scope.cancelled_caught
        with backend.open_cancel_scope() as scope:
            scope.cancel()
            await task.wait()
        assert scope.cancelled_caught
        assert not task.done()
        go.set()
        assert await task.join() == 42
    assert_not_cancelling(backend_name)


async def test_join_or_cancel(backend_name: BackendName) -> None:
    backend = current()
    go = backend.create_event()

    async def child() -> int:
        await go.wait()
        return 42

    async def forever() -> None:
        await backend.sleep_forever()

    async with backend.create_task_group() as tg:
        task = await tg.start(child)
        go.set()
        assert await task.join_or_cancel() == 42

        task2 = await tg.start(forever)
        with backend.open_cancel_scope() as scope:
            scope.cancel()
            await task2.join_or_cancel()
        assert scope.cancelled_caught
        assert task2.done()
        assert task2.cancelled()
    assert_not_cancelling(backend_name)


async def test_join_or_cancel_keeps_the_waiters_cancellation(backend_name: BackendName) -> None:
    # The task swallows its cancellation and returns: the waiter is cancelled all the same.
    backend = current()

    async def catches() -> str:
        try:
            await backend.sleep_forever()
        except backend.get_cancelled_exc_class():
            return "caught"  # (no await: on trio, the task's scope stays cancelled)
        return "unreachable"

    async with backend.create_task_group() as tg:
        task = await tg.start(catches)
        with backend.open_cancel_scope() as scope:
            scope.cancel()
            await task.join_or_cancel()
            pytest.fail("the cancellation was swallowed")
        assert scope.cancelled_caught
        assert await task.join() == "caught"
    assert_not_cancelling(backend_name)


async def test_join_or_cancel_error_wins(backend_name: BackendName) -> None:
    backend = current()

    async def fails_on_cancel() -> None:
        try:
            await backend.sleep_forever()
        finally:
            raise Boom("while cancelled")

    async def group() -> None:
        async with backend.create_task_group() as tg:
            task = await tg.start(fails_on_cancel)
            with backend.open_cancel_scope() as scope:
                scope.cancel()
                with pytest.raises(Boom):  # rather than the cancellation
                    await task.join_or_cancel()
            assert not scope.cancelled_caught

    with pytest.raises(ExceptionGroup) as caught:
        await group()
    assert [type(exc) for exc in caught.value.exceptions] == [Boom]


async def test_start_cancelled_before_it_returns_cancels_the_task(
    backend_name: BackendName,
) -> None:
    backend = current()
    reached = []

    async def child() -> None:
        await backend.sleep_forever()
        reached.append("after")

    async with backend.create_task_group() as tg:
        with backend.open_cancel_scope() as scope:
            scope.cancel()
            await tg.start(child)
            pytest.fail("start() was not cancelled")
        assert scope.cancelled_caught
    assert reached == []  # the group waited for the cancelled task, without error
    assert_not_cancelling(backend_name)


async def test_start_on_a_group_not_open(backend_name: BackendName) -> None:
    backend = current()
    tg = backend.create_task_group()
    with pytest.raises(RuntimeError):
        await tg.start(backend.checkpoint)


async def test_start_a_task_that_fails_at_once(backend_name: BackendName) -> None:
    backend = current()

    async def fail() -> None:
        raise Boom

    async def group() -> None:
        async with backend.create_task_group() as tg:
            await tg.start(fail)
            await backend.sleep_forever()  # the failure cancels the body

    with pytest.raises(ExceptionGroup) as caught:
        await group()
    assert [type(exc) for exc in caught.value.exceptions] == [Boom]


async def test_group_cancellation_ends_started_tasks_cancelled(backend_name: BackendName) -> None:
    backend = current()
    tasks: list[Task[None]] = []
    go = backend.create_event()

    async def fail() -> None:
        await go.wait()
        raise Boom

    async def group() -> None:
        async with backend.create_task_group() as tg:
            tasks.append(await tg.start(backend.sleep_forever))
            await tg.start(fail)
            go.set()

    with pytest.raises(ExceptionGroup):
        await group()
    assert tasks[0].cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        await tasks[0].join()


# ---------------------------------------------------------------------------------- name resolution


async def test_getaddrinfo_localhost(backend_name: BackendName) -> None:
    backend = current()
    infos = await backend.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    assert infos
    for family, kind, _proto, _canonname, sockaddr in infos:
        assert family in (socket.AF_INET, socket.AF_INET6)
        assert kind == socket.SOCK_STREAM
        assert sockaddr[0] in ("127.0.0.1", "::1")
        assert sockaddr[1] == 80


async def test_getaddrinfo_numeric_and_errors(backend_name: BackendName) -> None:
    backend = current()
    infos = await backend.getaddrinfo(
        "127.0.0.1", "8080", socket.AF_INET, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST
    )
    assert [(info[0], info[1], info[4]) for info in infos] == [
        (socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 8080))
    ]
    with pytest.raises(socket.gaierror):
        await backend.getaddrinfo("not an address", 80, flags=socket.AI_NUMERICHOST)


async def test_getnameinfo(backend_name: BackendName) -> None:
    backend = current()
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    assert await backend.getnameinfo(("127.0.0.1", 8080), flags) == ("127.0.0.1", "8080")


async def test_getaddrinfo_is_cancellable(backend_name: BackendName) -> None:
    backend = current()
    with backend.open_cancel_scope() as scope:
        scope.cancel()
        await backend.getaddrinfo("localhost", 80)
    assert scope.cancelled_caught
    assert_not_cancelling(backend_name)


# ---------------------------------------------------------------------------------- the interface


def test_public_types_are_exported() -> None:
    import server_framework.backend as backend_module  # noqa: PLC0415

    assert {"Condition", "Task"} <= set(backend_module.__all__)
    for name in ("create_condition", "create_fair_lock", "sleep_until", "open_cancel_scope"):
        assert name in AsyncBackend.__abstractmethods__
    for name in ("getaddrinfo", "getnameinfo"):
        assert name in AsyncBackend.__abstractmethods__
    assert {"cancel", "cancel_called", "deadline"} <= CancelScope.__abstractmethods__
