"""``serve --reload``: the server restarts when its source changes (development only).

Each test writes a small application, ``devapp.py``, into its own temporary directory, serves
it with ``--reload`` from there (the current directory, so the reloader watches it), talks to
it over loopback TCP and edits it. Edits replace the file in one step (``os.replace``), as
editors that save atomically do, so that the server never imports a half-written file. Every
wait polls against a deadline; every process is killed by its pid if a test fails half-way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import handlers
from server_framework.cli.config import build_parser, load_settings, render_toml
from server_framework.cli.reload import MISSING_WATCHFILES, target_directories
from server_framework.cli.settings import ConfigError

from cli_helpers import HERE, ROOT, TIMEOUT, ServerProcess, clean_env, cli, kill_quietly, run_cli
from server_helpers import LineClient, connect, line_exchange

pytestmark = pytest.mark.timeout(90)

LOCAL = "127.0.0.1:0"
DEVELOPMENT_ONLY = "--reload is for development only: the server restarts when its source changes"
KEPT = "these settings apply only when --reload starts; keeping their first values"

APP = """\
import os

from handlers import RequestResponseHandler


class Handler(RequestResponseHandler):
    async def respond(self, request, client):
        return {{"version": {version!r}, "pid": os.getpid()}}


class Other(RequestResponseHandler):
    async def respond(self, request, client):
        return {{"version": "other", "pid": os.getpid()}}
"""


def replace(path: Path, text: str) -> None:
    """Write ``path`` in one step: a sibling file (not *.py, so not watched), then a rename."""
    scratch = path.with_name(path.name + ".new")
    scratch.write_text(text)
    os.replace(scratch, path)


def write_app(folder: Path, version: str) -> None:
    replace(folder / "devapp.py", APP.format(version=version))


def ask(address: Any) -> dict[str, Any]:
    """One request, one reply: ``{"version": ..., "pid": ...}``."""
    reply: dict[str, Any] = line_exchange(address, ["hi"])[0]
    return reply


def answer_becomes(address: Any, version: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Ask until the reply carries ``version`` (a restart in progress may drop a connection)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = ask(address)
        except (OSError, EOFError, ValueError) as exc:
            last = exc
        else:
            if last["version"] == version:
                return last
        time.sleep(0.05)
    raise AssertionError(f"the answer did not become {version!r} in time: last {last!r}")


def gone(pid: int) -> bool:
    """True if no process ``pid`` exists (an exited child was reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@contextlib.contextmanager
def reloading(folder: Path, *args: str, ready: bool = True) -> Iterator[ServerProcess]:
    """``serve ARGS --reload --tcp 127.0.0.1:0`` run from ``folder``, watching (and ready);
    on the way out, kills whatever of it still runs (the reloader, its server processes)."""
    command = cli("serve", *args, "--reload", "--tcp", LOCAL, "--log-format", "json")
    with ServerProcess(command, cwd=folder) as server:
        try:
            server.wait_for("watching for changes")
            if ready:
                server.wait_for("ready")
            yield server
        finally:
            server.close()
            for record in server.find("server process started"):
                kill_quietly(record["server_pid"])


# -- restarting -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [None, "trio"])
def test_an_edit_restarts_the_server(tmp_path: Path, backend: str | None) -> None:
    write_app(tmp_path, "one")
    args = ["--backend", backend] if backend else []
    with reloading(tmp_path, "devapp:Handler", *args) as server:
        assert len(server.find(DEVELOPMENT_ONLY, level="warning")) == 1
        watching = server.find("watching for changes")[0]
        assert watching["dirs"] == [str(tmp_path.resolve())]
        assert watching["files"] == ["*.py"]
        address = server.addresses()[0]
        first = ask(address)
        assert first["version"] == "one"
        assert first["pid"] != server.pid  # a server process serves, not the reloader

        write_app(tmp_path, "two, longer")
        second = answer_becomes(address, "two, longer")
        assert second["pid"] != first["pid"]
        assert server.addresses()[0] == address  # the reloader holds the port
        changes = server.find("changes detected; restarting")
        assert [record["files"] for record in changes] == [["devapp.py"]]
        if backend:
            assert server.find("ready", backend=backend)

        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
        assert server.find("server process stopped", server_pid=second["pid"], how="exit code 0")
        assert gone(first["pid"])
        assert gone(second["pid"])


def test_a_syntax_error_waits_for_the_fix(tmp_path: Path) -> None:
    write_app(tmp_path, "one")
    with reloading(tmp_path, "devapp:Handler") as server:
        address = server.addresses()[0]
        assert ask(address)["version"] == "one"

        replace(tmp_path / "devapp.py", "def broken(:\n")
        failed = server.wait_for("server process failed at start-up; waiting for a change")
        assert failed["how"] == "exit code 3"
        errors = [record["event"] for record in server.logs() if record["level"] == "error"]
        assert any("cannot import 'devapp': SyntaxError" in event for event in errors), errors
        assert server.process.poll() is None  # the reloader still runs

        write_app(tmp_path, "fixed")
        fixed = answer_becomes(address, "fixed")
        assert len(server.find("changes detected; restarting")) == 2

        server.send_signal(signal.SIGINT)  # Ctrl-C
        assert server.wait() == 0
        assert server.find("stopping", signal="SIGINT")
        assert gone(fixed["pid"])


def test_second_sigint_kills_the_server_process(tmp_path: Path) -> None:
    probe = ["cli_helpers:ProbeHandler", "--reload-dir", str(tmp_path)]
    with reloading(tmp_path, *probe) as server:
        assert server.find("watching for changes")[0]["dirs"] == [str(tmp_path)]
        child = server.find("server process started")[0]["server_pid"]
        with contextlib.closing(LineClient(connect(server.addresses()[0]))) as client:
            client.send({"sleep": 60})
            server.wait_for("request started")
            server.send_signal(signal.SIGINT)
            server.wait_for("stopping", signal="SIGINT")  # the child drains, for 10 seconds
            server.send_signal(signal.SIGINT)
            assert server.wait() == 130
        assert server.find("server process stopped", how="killed by SIGKILL", server_pid=child)
        assert gone(child)


def test_the_config_file_is_watched_and_read_again(tmp_path: Path) -> None:
    write_app(tmp_path, "one")
    config = tmp_path / "server.toml"
    config.write_text('target = "devapp:Handler"\n')
    with reloading(tmp_path, "--config", "server.toml", ready=False) as server:
        watching = server.wait_for("watching for changes")
        assert watching["files"] == ["*.py", "server.toml"]
        server.wait_for("ready")
        address = server.addresses()[0]
        assert ask(address)["version"] == "one"

        replace(config, 'target = "devapp:Other"\nworkers = 1\ntcp = ["127.0.0.1:1"]\n')
        other = answer_becomes(address, "other")
        assert server.find("changes detected; restarting", files=["server.toml"])
        # tcp comes from the command line anyway, workers is unchanged: no warning
        assert not server.find(KEPT)

        replace(config, 'target = "devapp:Other"\nreuse_port = true\n')
        assert server.wait_for(KEPT)["settings"] == ["reuse_port"]
        server.wait_for("ready", count=3)

        replace(config, "max_connections = 0\n")  # invalid: logged, nothing started
        server.wait_for(
            "server.toml: max_connections: expected an integer >= 1, got '0'; waiting for a change"
        )
        replace(config, 'target = "devapp:Handler"\n')
        answer_becomes(address, "one")

        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
        assert gone(other["pid"])


# -- refusals -------------------------------------------------------------------------------


def test_reload_with_workers_is_a_usage_error() -> None:
    process = run_cli("serve", "handlers:EchoHandler", "--reload", "--workers", "2")
    assert process.process.returncode == 2, process.output()
    assert process.stderr == [
        "server-framework: error: --reload: development only, one server process: not with "
        "--workers 2"
    ]


def test_reload_without_watchfiles_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "watchfiles.py").write_text('raise ImportError("watchfiles is hidden")\n')
    env = clean_env(PYTHONPATH=os.pathsep.join([str(tmp_path), str(HERE), str(ROOT)]))
    process = run_cli("serve", "handlers:EchoHandler", "--reload", "--tcp", LOCAL, env=env)
    assert process.process.returncode == 2, process.output()
    assert process.stderr == [f"server-framework: error: {MISSING_WATCHFILES}"]
    assert MISSING_WATCHFILES == (
        "--reload needs watchfiles: pip install 'server-framework[reload]'"
    )


# -- the options ----------------------------------------------------------------------------


def load(*argv: str, env: dict[str, str] | None = None) -> Any:
    return load_settings(build_parser().parse_args(["serve", "app:Handler", *argv]), env or {})


def test_reload_options_three_ways(tmp_path: Path) -> None:
    assert load().settings.reload is False
    assert load("--reload").settings.reload is True
    assert load(env={"SERVER_FRAMEWORK_RELOAD": "1"}).settings.reload is True
    assert load("--no-reload", env={"SERVER_FRAMEWORK_RELOAD": "1"}).settings.reload is False
    (tmp_path / "lib").mkdir()
    path = tmp_path / "server.toml"
    path.write_text(f"reload = true\nreload_dir = [{str(tmp_path / 'lib')!r}]\n")
    loaded = load("--config", str(path), "--reload-dir", str(tmp_path))
    assert loaded.settings.reload is True
    assert loaded.settings.reload_dir == (str(tmp_path),)
    assert loaded.config_file == str(path)
    both = load("--reload", env={"SERVER_FRAMEWORK_RELOAD_DIR": f"{tmp_path},{tmp_path / 'lib'}"})
    assert both.settings.reload_dir == (str(tmp_path), str(tmp_path / "lib"))


def test_print_config_shows_the_reload_options(tmp_path: Path) -> None:
    text = render_toml(load())
    assert "reload = false  # default" in text
    assert "# reload_dir: not set, so with reload, the directory of TARGET's package" in text
    text = render_toml(load("--reload", "--reload-dir", str(tmp_path)))
    document = tomllib.loads(text)
    assert document["reload"] is True
    assert document["reload_dir"] == [str(tmp_path)]


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--reload-dir", "/nonexistent/dir"], {}, "--reload-dir: expected an existing directory"),
        (["--reload-dir", "."], {}, "--reload-dir: needs --reload"),
        (["--reload", "--workers", "3"], {}, "--reload: development only, one server process"),
        ([], {"SERVER_FRAMEWORK_RELOAD": "1", "SERVER_FRAMEWORK_WORKERS": "2"},
         "SERVER_FRAMEWORK_RELOAD: development only, one server process: not with "
         "SERVER_FRAMEWORK_WORKERS 2"),
        (["--reload-dirs", "."], {}, "(--reload-dirs: did you mean --reload-dir?)"),
    ],
)  # fmt: skip
def test_reload_option_errors(argv: list[str], env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(*argv, env=env)
    assert expected in str(info.value)


def test_the_default_directories_come_from_target(tmp_path: Path) -> None:
    package = os.path.dirname(os.path.abspath(handlers.__file__))
    assert target_directories("handlers.base:Handler") == [package]  # the top-level package
    assert target_directories("cli_helpers:ProbeHandler") == [str(HERE)]
    assert target_directories("no_such_module_here:Handler") == [os.getcwd()]
    assert sys.modules.get("no_such_module_here") is None
