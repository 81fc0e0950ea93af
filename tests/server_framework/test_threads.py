"""Worker threads on every loop: `AsyncBackend.run_in_thread` and `AsyncExecutor`.

Threads here really run; when a test needs a call to stay busy it blocks on a
`threading.Event` that the test sets, or does a fixed amount of simulated work (a sleep
*inside* the worker), never a sleep on the test's side to wait for something.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
import structlog
import trio

from server_framework import AsyncExecutor, run
from server_framework.backend import BackendName, current

from cancellation_helpers import cancel_when

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


class Boom(Exception):
    pass


# ---------------------------------------------------------------------------- run_in_thread


async def test_run_in_thread_returns_the_result_from_another_thread(
    backend_name: BackendName,
) -> None:
    backend = current()

    def work(a: int, b: int, *, scale: int = 1) -> tuple[int, int, str]:
        return (a + b) * scale, threading.get_ident(), threading.current_thread().name

    result, ident, name = await backend.run_in_thread(work, 1, 2, scale=10)
    assert result == 30
    assert ident != threading.get_ident()
    assert name != threading.current_thread().name


async def test_run_in_thread_raises_the_exception(backend_name: BackendName) -> None:
    backend = current()

    def fail() -> None:
        raise Boom("in the thread")

    with pytest.raises(Boom, match="in the thread"):
        await backend.run_in_thread(fail)


async def test_run_in_thread_copies_contextvars(backend_name: BackendName) -> None:
    backend = current()
    request_id.set("req-42")

    def read_and_change() -> str:
        value = request_id.get()
        request_id.set("changed in the thread")
        return value

    assert await backend.run_in_thread(read_and_change) == "req-42"
    assert request_id.get() == "req-42"  # a copy: the thread's change does not flow back


async def test_run_in_thread_carries_structlog_contextvars(backend_name: BackendName) -> None:
    backend = current()
    structlog.contextvars.bind_contextvars(conn_id=7, peer="10.0.0.1:5000")
    try:
        seen = await backend.run_in_thread(structlog.contextvars.get_contextvars)
    finally:
        structlog.contextvars.clear_contextvars()
    assert seen == {"conn_id": 7, "peer": "10.0.0.1:5000"}


async def test_cancelled_run_in_thread_waits_for_the_call(backend_name: BackendName) -> None:
    backend = current()
    started = threading.Event()
    finished = threading.Event()
    outcome: dict[str, object] = {}

    def work() -> str:
        started.set()
        time.sleep(0.1)  # simulated work, still running when the cancellation arrives
        finished.set()
        return "result"

    async def body() -> None:
        try:
            outcome["result"] = await backend.run_in_thread(work)
        except backend.get_cancelled_exc_class():
            outcome["finished when cancelled"] = finished.is_set()
            raise

    await cancel_when(backend, lambda: backend.run_in_thread(started.wait), body)
    assert outcome == {"finished when cancelled": True}


async def test_cancelled_run_in_thread_abandons_the_call(backend_name: BackendName) -> None:
    backend = current()
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()
    outcome: dict[str, object] = {}

    def work() -> str:
        started.set()
        release.wait(10)
        finished.set()
        return "result"

    async def body() -> None:
        try:
            outcome["result"] = await backend.run_in_thread(work, abandon_on_cancel=True)
        except backend.get_cancelled_exc_class():
            outcome["finished when cancelled"] = finished.is_set()
            raise

    await cancel_when(backend, lambda: backend.run_in_thread(started.wait), body)
    assert outcome == {"finished when cancelled": False}
    release.set()
    assert await backend.run_in_thread(finished.wait, 10)


def limit_default_pool_to_one_thread(backend_name: BackendName) -> None:
    """Make the running loop's default worker pool one thread wide (for this run only)."""
    if backend_name == "trio":
        trio.to_thread.current_default_thread_limiter().total_tokens = 1
    else:  # a fresh loop: no default executor was created yet, none is orphaned
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))


async def test_cancelled_run_in_thread_withdraws_a_queued_call(backend_name: BackendName) -> None:
    backend = current()
    limit_default_pool_to_one_thread(backend_name)
    started = backend.create_event()
    release = threading.Event()
    ran: list[str] = []

    async with backend.create_threads_portal() as portal:

        def blocker() -> None:
            portal.run_sync(started.set)
            release.wait(10)

        async with backend.create_task_group() as tg:
            tg.start_soon(backend.run_in_thread, blocker)
            await started.wait()  # the only worker is busy from now on
            with backend.move_on_after(0.01) as scope:
                await backend.run_in_thread(ran.append, "queued call")  # waits for the worker
            release.set()
    assert scope.cancelled_caught
    assert ran == []


async def test_many_concurrent_calls_keep_the_loop_responsive(backend_name: BackendName) -> None:
    backend = current()
    max_lag = 0.0
    done = backend.create_event()

    def work(n: int) -> int:
        time.sleep(0.01)  # simulated blocking work
        return n

    async def probe() -> None:
        nonlocal max_lag
        while not done.is_set():
            start = backend.current_time()
            await backend.sleep(0.01)
            max_lag = max(max_lag, backend.current_time() - start - 0.01)

    results: list[int] = []

    async def call(n: int) -> None:
        results.append(await backend.run_in_thread(work, n))

    async with backend.create_task_group() as probe_group:
        probe_group.start_soon(probe)
        async with backend.create_task_group() as tg:
            for n in range(200):
                tg.start_soon(call, n)
        done.set()
    assert sorted(results) == list(range(200))
    assert max_lag < 0.5


# ---------------------------------------------------------------------------- AsyncExecutor


async def test_executor_run(backend_name: BackendName) -> None:
    async with AsyncExecutor(ThreadPoolExecutor(2, thread_name_prefix="test-pool")) as executor:
        assert isinstance(executor.wrapped, ThreadPoolExecutor)
        assert await executor.run(pow, 2, 10) == 1024
        assert await executor.run(int, "ff", base=16) == 255
        name = await executor.run(lambda: threading.current_thread().name)
        assert name.startswith("test-pool")
        with pytest.raises(ZeroDivisionError):
            await executor.run(divmod, 1, 0)


async def test_executor_copies_contextvars(backend_name: BackendName) -> None:
    request_id.set("req-executor")
    async with AsyncExecutor(ThreadPoolExecutor(1), current()) as executor:
        assert await executor.run(request_id.get) == "req-executor"
        assert [v async for v in executor.map(lambda _: request_id.get(), range(3))] == [
            "req-executor"
        ] * 3


async def test_executor_map_yields_in_input_order(backend_name: BackendName) -> None:
    def work(delay: float, tag: str) -> str:
        time.sleep(delay)  # later inputs finish first
        return tag

    async with AsyncExecutor(ThreadPoolExecutor(4)) as executor:
        results = [r async for r in executor.map(work, [0.03, 0.02, 0.01, 0.0], "abcd")]
    assert results == ["a", "b", "c", "d"]


async def test_executor_map_stops_at_the_first_error(backend_name: BackendName) -> None:
    def check(n: int) -> int:
        if n == 2:
            raise Boom(n)
        return n

    seen: list[int] = []
    async with AsyncExecutor(ThreadPoolExecutor(1)) as executor:

        async def consume() -> None:
            async for n in executor.map(check, range(5)):
                seen.append(n)

        with pytest.raises(Boom):
            await consume()
    assert seen == [0, 1]


async def test_executor_exit_waits_without_blocking_the_loop(backend_name: BackendName) -> None:
    backend = current()
    release = threading.Event()

    async def release_from_the_loop() -> None:
        # Runs only if the loop keeps running while the executor shuts down.
        await backend.checkpoint()
        release.set()

    pool = ThreadPoolExecutor(1)
    async with backend.create_task_group() as tg:
        async with AsyncExecutor(pool) as executor:
            running = executor.wrapped.submit(release.wait, 10)
            tg.start_soon(release_from_the_loop)
        assert running.done()
        assert running.result() is True  # released by the loop, not by the 10 s timeout
    with pytest.raises(RuntimeError):
        pool.submit(int)


async def test_executor_exit_does_not_need_the_backend_pool(backend_name: BackendName) -> None:
    backend = current()
    limit_default_pool_to_one_thread(backend_name)
    started = backend.create_event()
    release = threading.Event()
    async with backend.create_threads_portal() as portal:

        def blocker() -> None:
            portal.run_sync(started.set)
            release.wait(10)

        async with backend.create_task_group() as tg:
            tg.start_soon(backend.run_in_thread, blocker)
            await started.wait()  # the backend's only worker is busy until release
            with backend.timeout(5):
                async with AsyncExecutor(ThreadPoolExecutor(1)) as executor:
                    assert await executor.run(abs, -1) == 1
            release.set()


async def test_executor_exit_on_cancellation_drops_pending_calls(
    backend_name: BackendName,
) -> None:
    backend = current()
    release = threading.Event()
    submitted = backend.create_event()
    futures: list[concurrent.futures.Future[object]] = []

    async def body() -> None:
        async with AsyncExecutor(ThreadPoolExecutor(1)) as executor:
            futures.append(executor.wrapped.submit(release.wait, 10))  # running
            futures.append(executor.wrapped.submit(int, "1"))  # queued behind it
            submitted.set()
            await backend.sleep_forever()

    async def release_once_pending_is_dropped() -> None:
        await submitted.wait()
        # Not concurrent.futures.wait(): it misses futures cancelled by the executor's shutdown.
        dropped = threading.Event()
        futures[1].add_done_callback(lambda _: dropped.set())
        await backend.run_in_thread(dropped.wait, 10)
        release.set()

    async with backend.create_task_group() as tg:
        tg.start_soon(release_once_pending_is_dropped)
        await cancel_when(backend, submitted.wait, body)
    running, pending = futures
    assert pending.cancelled()
    assert running.result() is True  # waited for, and released only after the drop


async def test_executor_cancelled_run_withdraws_a_queued_call(backend_name: BackendName) -> None:
    backend = current()
    release = threading.Event()
    started = threading.Event()
    ran: list[str] = []

    def blocker() -> None:
        started.set()
        release.wait(10)

    executor = AsyncExecutor(ThreadPoolExecutor(1))
    async with executor, backend.create_task_group() as tg:
        tg.start_soon(executor.run, blocker)
        await backend.run_in_thread(started.wait, 10)
        with backend.move_on_after(0.01) as scope:
            await executor.run(ran.append, "queued call")  # waits behind the blocker
        release.set()
    assert scope.cancelled_caught
    assert ran == []


async def test_executor_with_a_process_pool(backend_name: BackendName) -> None:
    # No context copy there (a Context cannot be pickled): plain picklable calls.
    async with AsyncExecutor(ProcessPoolExecutor(1)) as executor:
        assert await executor.run(pow, 2, 8) == 256
        assert [r async for r in executor.map(abs, [-1, -2, -3])] == [1, 2, 3]


async def test_executor_backend_is_found_lazily(backend_name: BackendName) -> None:
    executor = AsyncExecutor(ThreadPoolExecutor(1))
    async with executor:
        assert await executor.run(len, "abc") == 3
    executor.shutdown_nowait()  # idempotent after the exit


def test_executor_created_outside_a_loop() -> None:
    executor = AsyncExecutor(ThreadPoolExecutor(1))

    async def use() -> int:
        async with executor:
            return await executor.run(abs, -5)

    assert run(use, backend="trio") == 5


# ------------------------------------------------------- AsyncExecutor: EasyNetwork's signature


async def test_executor_backend_is_callable_from_its_worker_threads(
    backend_name: BackendName,
) -> None:
    async with AsyncExecutor(ThreadPoolExecutor(1)) as executor:
        assert executor.backend() is current()
        # From a worker thread, where no loop runs: the backend found when it was made.
        assert await executor.run(executor.backend) is current()
        assert await executor.run(lambda: executor.backend().name) == backend_name


async def test_executor_takes_a_backend_name(backend_name: BackendName) -> None:
    async with AsyncExecutor(ThreadPoolExecutor(1), backend_name) as executor:
        assert executor.backend() is current()
        assert await executor.run(abs, -3) == 3


def test_executor_rejects_a_wrong_backend_or_executor_at_once() -> None:
    with pytest.raises(ValueError, match="curio"):
        AsyncExecutor(ThreadPoolExecutor(1), "curio")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AsyncBackend, a backend name"):
        AsyncExecutor(ThreadPoolExecutor(1), 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"concurrent\.futures\.Executor, not list"):
        AsyncExecutor([])  # type: ignore[type-var]


def test_executor_backend_outside_a_loop_says_why() -> None:
    executor = AsyncExecutor(ThreadPoolExecutor(1))
    with pytest.raises(RuntimeError, match="no supported event loop"):
        executor.backend()
    executor.shutdown_nowait()


async def test_executor_shutdown_then_run_fails(backend_name: BackendName) -> None:
    executor = AsyncExecutor(ThreadPoolExecutor(1))
    assert await executor.run(abs, -1) == 1
    await executor.shutdown()
    with pytest.raises(RuntimeError, match="shutdown"):
        await executor.run(abs, -1)


async def test_executor_shutdown_can_drop_queued_calls(backend_name: BackendName) -> None:
    executor = AsyncExecutor(ThreadPoolExecutor(1))
    started, release = threading.Event(), threading.Event()

    def busy() -> None:
        started.set()
        release.wait(10)

    running = executor.wrapped.submit(busy)
    queued = executor.wrapped.submit(abs, -1)
    await current().run_in_thread(started.wait, 10)

    def release_once_dropped() -> None:  # the busy call ends only after the drop
        deadline = time.monotonic() + 10
        while not queued.cancelled() and time.monotonic() < deadline:
            time.sleep(0.001)
        release.set()

    releaser = threading.Thread(target=release_once_dropped)
    releaser.start()
    await executor.shutdown(cancel_futures=True)
    releaser.join()
    assert running.done()
    assert queued.cancelled()


async def test_executor_handle_contexts(backend_name: BackendName) -> None:
    def seen() -> tuple[str, str | None]:
        try:
            import sniffio  # noqa: PLC0415

            library: str | None = sniffio.current_async_library()
        except Exception:
            library = None
        return request_id.get(), library

    token = request_id.set("abc")
    try:
        async with AsyncExecutor(ThreadPoolExecutor(1)) as executor:
            assert await executor.run(seen) == ("abc", None)  # no loop seen in the worker
        async with AsyncExecutor(ThreadPoolExecutor(1), handle_contexts=False) as executor:
            assert (await executor.run(seen))[0] == "unset"
    finally:
        request_id.reset(token)
