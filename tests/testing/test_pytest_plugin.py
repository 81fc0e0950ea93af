"""The pytest plugin from a user's point of view: test files of a user's project, run by pytest
in a subprocess, which loads the plugin through its entry point (as any installation would).

Runs are strict: warnings are errors, markers must be registered.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HOWTO = Path(__file__).resolve().parents[2] / "docs" / "examples" / "howto"
STRICT = ("-v", "-W", "error", "--strict-markers", "-p", "no:cacheprovider")

TEN_LINES = """
import pytest
import server_framework as sf

def test_echo(sf_serve):
    with sf_serve(sf.EchoHandler(), sf.StreamProtocol(sf.JSONSerializer())) as served:
        assert served.client.request({"a": 1}) == {"a": 1}

@pytest.mark.server_framework
async def test_echo_async(sf_serve):
    async with sf_serve(sf.EchoHandler(), sf.StreamProtocol(sf.JSONSerializer())) as served:
        assert await served.client.request([1]) == [1]
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*STRICT, *args, timeout=120)


def test_a_ten_line_test_file(pytester: pytest.Pytester) -> None:
    assert len([line for line in TEN_LINES.splitlines() if line]) <= 10
    pytester.makepyfile(test_user=TEN_LINES)
    result = run(pytester)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*test_user.py::test_echo PASSED*",
            "*test_user.py::test_echo_async?asyncio? PASSED*",
            "*test_user.py::test_echo_async?uvloop? PASSED*",
            "*test_user.py::test_echo_async?trio? PASSED*",
        ]
    )


def test_the_documented_test_file(pytester: pytest.Pytester) -> None:
    """docs/examples/howto/test_with_plugin.py: a plain test, an async test on every loop and
    a pytest-trio test, beside the module they test."""
    for name in ("test_with_plugin.py", "greeter.py"):
        shutil.copy(HOWTO / name, pytester.path / name)
    result = run(pytester)
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        [
            "*::test_greeter PASSED*",
            "*::test_greeter_on_every_loop?asyncio? PASSED*",
            "*::test_greeter_on_every_loop?uvloop? PASSED*",
            "*::test_greeter_on_every_loop?trio? PASSED*",
            "*::test_greeter_with_pytest_trio PASSED*",
        ]
    )


def test_choosing_loops_and_cleaning_up(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsf_backends = trio asyncio\n")
    pytester.makepyfile(
        test_loops="""
        import threading

        import pytest
        import sniffio

        import server_framework as sf
        from server_framework.testing import serve_in_background

        JSON = sf.StreamProtocol(sf.JSONSerializer())

        @pytest.mark.server_framework
        async def test_ini_loops(sf_backend_name):
            library = "asyncio" if sf_backend_name == "uvloop" else sf_backend_name
            assert sniffio.current_async_library() == library

        @pytest.mark.server_framework(backends=["uvloop"])
        async def test_marker_loops(sf_backend_name):
            assert sf_backend_name == "uvloop"
            assert type(sf.current_backend()).__name__ == "AsyncIOBackend"

        @pytest.mark.parametrize("sf_backend_name", ["trio"])
        async def test_parametrized_by_hand(sf_backend_name):
            assert sniffio.current_async_library() == "trio"

        async def test_requesting_the_fixture_is_enough(sf_backend_name):
            assert sf.current_backend().name == sf_backend_name

        @pytest.mark.server_framework
        class TestAClass:
            async def test_in_a_class(self, sf_backend_name):
                assert sf.current_backend().name == sf_backend_name

        @pytest.mark.server_framework
        def test_plain_test_serves_on_the_loop(sf_serve, sf_backend_name):
            with sf_serve(sf.EchoHandler(), JSON) as served:
                assert served.backend_name == sf_backend_name
                assert served.client.request(1) == 1

        def test_left_open_sync(sf_serve):
            served = sf_serve(sf.EchoHandler(), JSON).__enter__()  # never exited
            assert served.client.request(1) == 1

        def test_the_thread_was_joined():
            assert not [t for t in threading.enumerate() if t.name.startswith("sf-testing")]

        @pytest.mark.server_framework
        async def test_left_open_async(sf_serve):
            served = await sf_serve(sf.EchoHandler(), JSON, transport="unix").__aenter__()
            assert await served.client.request(2) == 2
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=14)
    result.stdout.fnmatch_lines(
        [
            "*::test_ini_loops?trio? PASSED*",
            "*::test_ini_loops?asyncio? PASSED*",
            "*::test_marker_loops?uvloop? PASSED*",
            "*::test_parametrized_by_hand?trio? PASSED*",
            "*::test_requesting_the_fixture_is_enough?trio? PASSED*",
            "*::test_requesting_the_fixture_is_enough?asyncio? PASSED*",
            "*::TestAClass::test_in_a_class?trio? PASSED*",
            "*::TestAClass::test_in_a_class?asyncio? PASSED*",
            "*::test_plain_test_serves_on_the_loop?trio? PASSED*",
            "*::test_plain_test_serves_on_the_loop?asyncio? PASSED*",
            "*::test_left_open_sync PASSED*",
            "*::test_the_thread_was_joined PASSED*",
            "*::test_left_open_async?trio? PASSED*",
            "*::test_left_open_async?asyncio? PASSED*",
        ]
    )


def test_failures_read_as_plain_failures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_failing="""
        import pytest
        import server_framework as sf
        from server_framework.testing import serve_in_background

        JSON = sf.StreamProtocol(sf.JSONSerializer())

        @pytest.mark.server_framework(backends=["asyncio", "trio"])
        async def test_wrong_expectation():
            async with serve_in_background(sf.EchoHandler(), JSON) as served:
                assert await served.client.request("a") == "b"

        @pytest.mark.server_framework(backends=["asyncio", "trio"])
        async def test_skipped_inside_the_block():
            async with serve_in_background(sf.EchoHandler(), JSON):
                pytest.skip("not today")

        async def test_not_opted_in():
            pass

        def test_plain():
            pass
        """
    )
    result = run(pytester)
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 3  # two loops; the async test nobody runs
    assert outcomes["passed"] == 1
    assert outcomes["skipped"] == 2
    result.stdout.fnmatch_lines(["*AssertionError*", "*async def functions are not natively*"])
    result.stdout.no_fnmatch_line("*ExceptionGroup*")  # the block's error, unwrapped


def test_an_unmarked_async_test_asking_for_sf_serve_runs_on_every_loop(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_user="""
import server_framework as sf

async def test_echo(sf_serve):
    async with sf_serve(sf.EchoHandler(), sf.StreamProtocol(sf.JSONSerializer())) as served:
        assert await served.client.request({"a": 1}) == {"a": 1}
"""
    )
    result = run(pytester, "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_echo?asyncio? PASSED*", "*test_echo?trio? PASSED*"])
