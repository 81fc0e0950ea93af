"""`ThreadsPortal` on every loop: from worker threads back into the event loop.

Thread-side code runs in real threads, started with ``backend.run_in_thread`` (so the test can
await it) or as a `threading.Thread` that the test joins.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
import time

import pytest

from server_framework.backend import BackendName, ThreadsPortal, current

from cancellation_helpers import cancel_when

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


class Boom(Exception):
    pass


async def double(x: int) -> int:
    await current().sleep(0)
    return x * 2


async def fail(message: str) -> None:
    await current().sleep(0)
    raise Boom(message)


async def test_run_coroutine_returns_and_raises_in_the_thread(backend_name: BackendName) -> None:
    backend = current()
    async with backend.create_threads_portal() as portal:
        assert isinstance(portal, ThreadsPortal)

        async def backend_name_in_loop() -> str:
            return current().name

        def from_thread() -> tuple[int, str]:
            with pytest.raises(Boom, match="loop side"):
                portal.run_coroutine(fail, "loop side")
            return portal.run_coroutine(double, 21), portal.run_coroutine(backend_name_in_loop)

        assert await backend.run_in_thread(from_thread) == (42, backend_name)


async def test_thread_errors_reach_the_loop(backend_name: BackendName) -> None:
    backend = current()
    async with backend.create_threads_portal() as portal:

        def from_thread() -> None:
            value = portal.run_coroutine(double, 1)
            raise Boom(f"thread side got {value}")

        with pytest.raises(Boom, match="thread side got 2"):
            await backend.run_in_thread(from_thread)


async def test_run_sync_runs_in_the_loop_thread(backend_name: BackendName) -> None:
    backend = current()
    event = backend.create_event()
    loop_thread = threading.get_ident()
    async with backend.create_threads_portal() as portal:

        def from_thread() -> int:
            portal.run_sync(event.set)
            with pytest.raises(ZeroDivisionError):
                portal.run_sync(divmod, 1, 0)
            return portal.run_sync(threading.get_ident)

        async with backend.create_task_group() as tg:
            tg.start_soon(event.wait)
            assert await backend.run_in_thread(from_thread) == loop_thread
    assert event.is_set()


async def test_run_coroutine_soon_with_as_completed(backend_name: BackendName) -> None:
    backend = current()

    async def echo_after(delay: float, value: int) -> int:
        await backend.sleep(delay)
        return value

    async with backend.create_threads_portal() as portal:

        def from_thread() -> list[int]:
            futures = [portal.run_coroutine_soon(echo_after, 0.001 * (5 - n), n) for n in range(5)]
            futures.append(portal.run_sync_soon(pow, 10, 2))
            return [f.result() for f in concurrent.futures.as_completed(futures, timeout=10)]

        results = await backend.run_in_thread(from_thread)
    assert sorted(results) == [0, 1, 2, 3, 4, 100]


async def test_cancelling_the_future_cancels_the_task(backend_name: BackendName) -> None:
    backend = current()
    started = backend.create_event()
    unwound = backend.create_event()
    saw_cancellation = False

    async def forever() -> None:
        nonlocal saw_cancellation
        try:
            started.set()
            await backend.sleep_forever()
        except backend.get_cancelled_exc_class():
            saw_cancellation = True
            raise
        finally:
            unwound.set()

    async with backend.create_threads_portal() as portal:

        def from_thread() -> bool:
            future = portal.run_coroutine_soon(forever)
            portal.run_coroutine(started.wait)
            assert future.cancel()
            with pytest.raises(concurrent.futures.CancelledError):
                future.result()
            return future.cancelled()

        assert await backend.run_in_thread(from_thread)
        with backend.timeout(10):
            await unwound.wait()
    assert saw_cancellation


async def test_cancelling_a_future_before_it_starts(backend_name: BackendName) -> None:
    backend = current()
    ran: list[str] = []

    async def record() -> None:
        ran.append("coroutine")

    cancelled: list[bool] = []

    async with backend.create_threads_portal() as portal:

        def from_thread() -> None:
            coro_future = portal.run_coroutine_soon(record)
            sync_future = portal.run_sync_soon(ran.append, "sync")
            cancelled.extend([coro_future.cancel(), sync_future.cancel()])

        thread = threading.Thread(target=from_thread, name="portal-caller")
        thread.start()
        # Deliberately block the loop until the thread is done, so that neither call can
        # start before it is cancelled.
        thread.join(10)
    assert cancelled == [True, True]
    assert ran == []


async def test_error_in_a_soon_task_goes_to_its_future_only(backend_name: BackendName) -> None:
    backend = current()
    async with backend.create_threads_portal() as portal:

        def from_thread() -> tuple[BaseException | None, int]:
            failing = portal.run_coroutine_soon(fail, "only mine")
            sibling = portal.run_coroutine_soon(double, 5)
            return failing.exception(timeout=10), sibling.result(timeout=10)

        error, value = await backend.run_in_thread(from_thread)
        assert isinstance(error, Boom)
        assert value == 10
        # The portal is still usable after a failing call.
        assert await backend.run_in_thread(portal.run_coroutine, double, 4) == 8


async def test_calls_from_the_loop_thread_raise(backend_name: BackendName) -> None:
    backend = current()
    async with backend.create_threads_portal() as portal:
        with pytest.raises(RuntimeError, match="deadlock"):
            portal.run_sync(int)
        with pytest.raises(RuntimeError, match="deadlock"):
            portal.run_coroutine(double, 1)
        with pytest.raises(RuntimeError, match="deadlock"):
            portal.run_sync_soon(int)
        with pytest.raises(RuntimeError, match="deadlock"):
            portal.run_coroutine_soon(double, 1)


async def test_unentered_and_closed_portals_raise(backend_name: BackendName) -> None:
    backend = current()
    portal = backend.create_threads_portal()
    with pytest.raises(RuntimeError, match="not open yet"):
        await backend.run_in_thread(portal.run_sync, int)
    async with portal:
        assert await backend.run_in_thread(portal.run_sync, int, "7") == 7
    with pytest.raises(RuntimeError, match="closed"):
        await backend.run_in_thread(portal.run_sync, int)
    with pytest.raises(RuntimeError, match="closed"):
        await backend.run_in_thread(portal.run_coroutine_soon, double, 1)
    with pytest.raises(RuntimeError, match="only once"):
        async with portal:
            pass


async def test_context_flows_from_the_thread_into_the_loop(backend_name: BackendName) -> None:
    backend = current()
    request_id.set("loop value")

    async def read_async() -> str:
        return request_id.get()

    async with backend.create_threads_portal() as portal:

        def from_thread() -> tuple[str, str]:
            request_id.set("thread value")
            return portal.run_coroutine(read_async), portal.run_sync(request_id.get)

        assert await backend.run_in_thread(from_thread) == ("thread value", "thread value")
    assert request_id.get() == "loop value"


async def test_exit_waits_for_spawned_tasks(backend_name: BackendName) -> None:
    backend = current()
    finished: list[int] = []

    gate = backend.create_event()

    async def work(n: int) -> int:
        await gate.wait()
        finished.append(n)
        return n

    async def open_gate() -> None:
        gate.set()

    async with backend.create_task_group() as tg:
        async with backend.create_threads_portal() as portal:
            future = await backend.run_in_thread(portal.run_coroutine_soon, work, 1)
            # Runs at the next checkpoint, which is inside the portal's exit: if the exit did
            # not wait for the task, it would return before the task could finish.
            tg.start_soon(open_gate)
        assert finished == [1]
    assert future.result(timeout=0) == 1


async def test_exit_on_cancellation_cancels_spawned_tasks(backend_name: BackendName) -> None:
    backend = current()
    started = backend.create_event()
    saw_cancellation = False
    futures: list[concurrent.futures.Future[None]] = []

    async def forever() -> None:
        nonlocal saw_cancellation
        started.set()
        try:
            await backend.sleep_forever()
        finally:
            saw_cancellation = True

    submitted = backend.create_event()

    async def body() -> None:
        async with backend.create_threads_portal() as portal:
            futures.append(await backend.run_in_thread(portal.run_coroutine_soon, forever))
            submitted.set()
            await backend.sleep_forever()

    async def task_running_and_body_waiting() -> None:
        await started.wait()
        await submitted.wait()

    await cancel_when(backend, task_running_and_body_waiting, body)
    assert saw_cancellation
    assert futures[0].cancelled()


async def test_exit_on_error_cancels_spawned_tasks_and_keeps_the_error(
    backend_name: BackendName,
) -> None:
    backend = current()
    futures: list[concurrent.futures.Future[None]] = []

    async def body() -> None:
        async with backend.create_threads_portal() as portal:
            futures.append(
                await backend.run_in_thread(portal.run_coroutine_soon, backend.sleep_forever)
            )
            raise Boom("body failed")

    with pytest.raises(Boom, match="body failed"):  # unwrapped, on every loop
        await body()
    assert futures[0].cancelled()


async def test_calls_racing_with_the_exit_never_hang(backend_name: BackendName) -> None:
    backend = current()
    futures: list[concurrent.futures.Future[int]] = []
    first_accepted = threading.Event()
    refused: list[RuntimeError] = []

    async def one() -> int:
        return 1

    def hammer(portal: ThreadsPortal) -> None:
        n = 0
        while True:
            try:
                if n % 2:
                    futures.append(portal.run_coroutine_soon(one))
                else:
                    futures.append(portal.run_sync_soon(int, "1"))
            except RuntimeError as exc:
                refused.append(exc)
                return
            n += 1
            first_accepted.set()
            time.sleep(0)  # let the loop thread have the GIL: a race, not a flood

    for _ in range(10):
        async with backend.create_threads_portal() as portal:
            thread = threading.Thread(target=hammer, args=(portal,), name="portal-hammer")
            thread.start()
            await backend.run_in_thread(first_accepted.wait, 10)
        await backend.run_in_thread(thread.join, 10)
        assert not thread.is_alive()
        assert "closed" in str(refused[-1])
        done, not_done = concurrent.futures.wait(futures, timeout=10)
        assert not not_done
        assert all(f.result() == 1 for f in done)  # a normal exit runs every accepted call
        futures.clear()
        first_accepted.clear()


async def test_calls_racing_with_a_cancelled_exit_end_cancelled_or_done(
    backend_name: BackendName,
) -> None:
    backend = current()
    futures: list[concurrent.futures.Future[None]] = []
    first_accepted = threading.Event()

    def hammer(portal: ThreadsPortal) -> None:
        while True:
            try:
                futures.append(portal.run_coroutine_soon(backend.sleep, 0))
            except RuntimeError:
                return
            first_accepted.set()
            time.sleep(0)  # let the loop thread have the GIL: a race, not a flood

    threads: list[threading.Thread] = []

    async def body() -> None:
        async with backend.create_threads_portal() as portal:
            threads.append(threading.Thread(target=hammer, args=(portal,), name="portal-hammer"))
            threads[0].start()
            await backend.sleep_forever()

    await cancel_when(backend, lambda: backend.run_in_thread(first_accepted.wait, 10), body)
    await backend.run_in_thread(threads[0].join, 10)
    assert not threads[0].is_alive()
    # Every accepted call has ended, one way or the other, and none is left hanging.
    for future in futures:
        assert future.done()
        assert future.cancelled() or future.result() is None
