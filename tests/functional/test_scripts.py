"""Scripts behave like the command line: Ctrl-C and SIGTERM under ``server_framework.run()``.

Each test writes a small program as a user would (``import server_framework as sf``), runs it
as a real process with ``python script.py``, and signals it: requests in progress finish, the
program ends without a traceback, with the exit code a shell expects (130 after Ctrl-C).
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import ServerProcess, clean_env

LOOPS = ("asyncio", "uvloop", "trio")

#: A server whose handler logs "request started" and takes 0.5 s to answer.
SLOW_SERVER = """
    import sys
    import structlog
    import server_framework as sf

    log = structlog.get_logger("script")

    class Slow(sf.StreamRequestHandler):
        async def handle(self, client):
            request = yield
            log.info("request started")
            await client.backend().sleep(0.5)
            await client.send_packet(request)

    async def main():
        protocol = sf.StreamProtocol(sf.JSONSerializer())
        async with sf.AsyncTCPServer("127.0.0.1", 0, protocol, Slow()) as server:
            await server.serve_forever()
        log.info("main goes on after serve_forever")
        return "done"

    print(sf.run(main, backend=sys.argv[1]), flush=True)
"""


def script(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(source))
    return path


#: Runs the script as ``python script.py`` from a terminal would: with Python's own SIGINT
#: handler. A test run started in the background (``make test &``, some CI runners) inherits
#: SIGINT ignored, and Python then keeps it ignored, as ``run()`` does too.
AS_FROM_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def start(path: Path, *args: str) -> ServerProcess:
    command = [sys.executable, "-c", AS_FROM_A_TERMINAL, str(path), *args]
    return ServerProcess(command, env=clean_env(), cwd=path.parent)


def address(process: ServerProcess) -> tuple[str, int]:
    host, _, port = process.wait_for("server started")["addresses"][0].rpartition(":")
    return host, int(port)


def send_request(where: tuple[str, int], message: Any) -> socket.socket:
    sock = socket.create_connection(where, timeout=10)
    sock.sendall(json.dumps(message).encode() + b"\n")
    return sock


def read_reply(sock: socket.socket) -> Any:
    with sock, sock.makefile("rb") as stream:
        return json.loads(stream.readline())


@pytest.mark.parametrize("loop", LOOPS)
def test_ctrl_c_drains_then_exits_130_without_traceback(tmp_path: Path, loop: str) -> None:
    with start(script(tmp_path, SLOW_SERVER), loop) as process:
        sock = send_request(address(process), {"n": 1})
        process.wait_for("request started")
        process.send_signal(signal.SIGINT)
        assert read_reply(sock) == {"n": 1}  # the request in progress finished
        assert process.wait() == 130
        process.wait_for("stopping: finishing requests in progress", signal="SIGINT")
        process.wait_for("main goes on after serve_forever")
        assert "Traceback" not in process.output()
        assert process.stdout == []  # run() did not return: SystemExit(130)


@pytest.mark.parametrize("loop", LOOPS)
def test_sigterm_drains_and_run_returns(tmp_path: Path, loop: str) -> None:
    with start(script(tmp_path, SLOW_SERVER), loop) as process:
        sock = send_request(address(process), {"n": 2})
        process.wait_for("request started")
        process.send_signal(signal.SIGTERM)
        assert read_reply(sock) == {"n": 2}
        assert process.wait() == 0
        assert process.stdout == ["done"]
        assert "Traceback" not in process.output()


def test_a_second_ctrl_c_exits_at_once(tmp_path: Path) -> None:
    with start(script(tmp_path, SLOW_SERVER.replace("sleep(0.5)", "sleep(60)")), "asyncio") as p:
        sock = send_request(address(p), {"n": 3})
        with sock:
            p.wait_for("request started")
            p.send_signal(signal.SIGINT)
            p.wait_for("stopping: finishing requests in progress")
            p.send_signal(signal.SIGINT)
            assert p.wait() == 130
        assert "second SIGINT" in p.output()
        assert "Traceback" not in p.output()


@pytest.mark.parametrize("loop", LOOPS)
def test_ctrl_c_stops_a_standalone_server(tmp_path: Path, loop: str) -> None:
    source = """
        import sys
        import server_framework as sf

        protocol = sf.StreamProtocol(sf.JSONSerializer())
        with sf.StandaloneTCPServer("127.0.0.1", 0, protocol, sf.EchoHandler()) as server:
            server.serve_forever()
    """
    source = source.replace("sf.EchoHandler())", "sf.EchoHandler(), backend=sys.argv[1])")
    with start(script(tmp_path, source), loop) as process:
        address(process)
        process.send_signal(signal.SIGINT)
        assert process.wait() == 130
        process.wait_for("server stopped")
        assert "Traceback" not in process.output()


@pytest.mark.parametrize("loop", LOOPS)
def test_ctrl_c_without_a_server_cancels_main(tmp_path: Path, loop: str) -> None:
    source = """
        import sys
        import structlog
        import server_framework as sf

        sf.configure_logging()  # JSON on stderr, which is not a terminal here

        async def main():
            structlog.get_logger("script").info("waiting")
            try:
                await sf.current_backend().sleep(60)
            finally:
                structlog.get_logger("script").info("cleaned up")

        sf.run(main, backend=sys.argv[1])
    """
    with start(script(tmp_path, source), loop) as process:
        process.wait_for("waiting")
        process.send_signal(signal.SIGINT)
        assert process.wait() == 130
        process.wait_for("cleaned up")
        assert "Traceback" not in process.output()


def test_handle_signals_false_keeps_keyboard_interrupt(tmp_path: Path) -> None:
    source = """
        import structlog
        import server_framework as sf

        sf.configure_logging()

        async def main():
            structlog.get_logger("script").info("waiting")
            await sf.current_backend().sleep(60)

        sf.run(main, backend="asyncio", handle_signals=False)
    """
    with start(script(tmp_path, source)) as process:
        process.wait_for("waiting")
        process.send_signal(signal.SIGINT)
        assert process.wait() != 0
        assert "KeyboardInterrupt" in process.output()


def test_a_program_with_its_own_sigint_handler_keeps_it(tmp_path: Path) -> None:
    source = """
        import signal
        import structlog
        import server_framework as sf

        sf.configure_logging()

        def mine(signum, frame):
            structlog.get_logger("script").info("my handler")
            raise SystemExit(7)

        signal.signal(signal.SIGINT, mine)

        async def main():
            structlog.get_logger("script").info("waiting")
            await sf.current_backend().sleep(60)

        sf.run(main, backend="asyncio")
    """
    with start(script(tmp_path, source)) as process:
        process.wait_for("waiting")
        process.send_signal(signal.SIGINT)
        assert process.wait() == 7
        process.wait_for("my handler")


def test_a_port_in_use_names_transport_and_address(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        source = f"""
            import server_framework as sf

            async def main():
                protocol = sf.StreamProtocol(sf.JSONSerializer())
                async with sf.AsyncTCPServer("127.0.0.1", {port}, protocol, sf.EchoHandler()):
                    pass

            sf.run(main)
        """
        with start(script(tmp_path, source)) as process:
            assert process.wait() == 1
    last = process.stderr[-1]
    assert last == (
        f"server_framework.exceptions.BindError: tcp 127.0.0.1:{port}: cannot bind: "
        "Address already in use"
    )


def test_a_handler_mistake_is_one_type_error_naming_the_fix(tmp_path: Path) -> None:
    source = """
        import server_framework as sf

        class Hello(sf.StreamRequestHandler):
            async def handle(self, client):
                await client.send_packet("hello")  # no yield: not an async generator

        async def main():
            protocol = sf.StreamProtocol(sf.StringSerializer())
            async with sf.AsyncTCPServer("127.0.0.1", 0, protocol, Hello()) as server:
                await server.serve_forever()

        sf.run(main)
    """
    with start(script(tmp_path, source)) as process:
        assert process.wait() == 1
    assert process.stderr[-1] == (
        "TypeError: Hello.handle must be an async generator: write async def handle(self, "
        "client) and receive each request with request = yield (it is async def without yield)"
    )
