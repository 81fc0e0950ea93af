"""The settings of ``serve``: parsing, sources, precedence, errors, and ``--print-config``.

These run in the test process: loading settings has no side effects (``main()`` has, which is
why everything else runs the CLI as a subprocess).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from server_framework.cli.config import LoadedSettings, build_parser, load_settings, render_toml
from server_framework.cli.options import OPTIONS
from server_framework.cli.settings import DEFAULT_HOST, DEFAULT_PORT, ConfigError, Settings
from server_framework.cli.values import format_inet, parse_inet
from server_framework.servers import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PROXY_ALLOW,
    DEFAULT_SHUTDOWN_TIMEOUT,
)

from cli_helpers import clean_env, run_cli


def load(
    *argv: str, env: dict[str, str] | None = None, toml: str | None = None, tmp: Path | None = None
) -> LoadedSettings:
    args = list(argv)
    if toml is not None:
        assert tmp is not None
        path = tmp / "server.toml"
        path.write_text(toml)
        args += ["--config", str(path)]
    namespace = build_parser().parse_args(["serve", *args])
    return load_settings(namespace, env or {})


def error_of(*argv: str, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(*argv, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9000", ("::1", 9000)),
        ("[fe80::1]:1", ("fe80::1", 1)),
        ("*:80", ("", 80)),
        (":80", ("", 80)),
    ],
)
def test_inet_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_inet(text) == expected
    assert parse_inet(format_inet(expected)) == expected


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("abc", "expected HOST:PORT"),
        ("9000", "did you mean 127.0.0.1:9000, this machine only, or :9000, every interface?"),
        ("host:http", "port in 0..65535"),
        ("host:65536", "port in 0..65535"),
        ("::1:9000", "[::1]:9000"),
        ("[nope]:9000", "valid IPv6"),
        ("[::1]9000", "[IPV6]:PORT"),
        ("bad host:1", "host name"),
    ],
)
def test_bad_inet_addresses(text: str, hint: str) -> None:
    with pytest.raises(ValueError, match=r".") as info:
        parse_inet(text)
    assert hint in str(info.value)


def test_defaults() -> None:
    settings = load("app:Handler").settings
    assert settings.tcp == ((DEFAULT_HOST, DEFAULT_PORT),)
    assert settings.udp == settings.unix == settings.fd == ()
    assert settings.protocol == "json"
    assert settings.workers == 1
    assert settings.shutdown_timeout == 10.0
    assert settings.log_format is None  # console on a terminal, JSON otherwise


def test_defaults_match_the_servers() -> None:
    assert Settings().shutdown_timeout == DEFAULT_SHUTDOWN_TIMEOUT
    assert Settings().max_connections == DEFAULT_MAX_CONNECTIONS


def test_no_default_listener_with_socket_activation() -> None:
    namespace = build_parser().parse_args(["serve", "app:H"])
    assert load_settings(namespace, {}, activated_fds=2).settings.tcp == ()


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    toml = 'target = "file:Handler"\nmax_connections = 1\nidle_timeout = 7\nreuse_port = true\n'
    env = {"SERVER_FRAMEWORK_MAX_CONNECTIONS": "2", "SERVER_FRAMEWORK_TARGET": "env:Handler"}
    loaded = load("cli:Handler", "--max-connections", "3", env=env, toml=toml, tmp=tmp_path)
    settings = loaded.settings
    assert (settings.target, settings.max_connections) == ("cli:Handler", 3)
    assert settings.idle_timeout == 7.0
    assert settings.reuse_port is True
    assert loaded.sources["max_connections"] == "--max-connections"
    assert loaded.sources["idle_timeout"].endswith("server.toml: idle_timeout")

    loaded = load(env=env, toml=toml, tmp=tmp_path)
    assert (loaded.settings.target, loaded.settings.max_connections) == ("env:Handler", 2)
    assert loaded.sources["max_connections"] == "SERVER_FRAMEWORK_MAX_CONNECTIONS"

    loaded = load(toml=toml, tmp=tmp_path)
    assert (loaded.settings.target, loaded.settings.max_connections) == ("file:Handler", 1)
    assert load("--no-reuse-port", toml=toml, tmp=tmp_path).settings.reuse_port is False


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("workers = 4\n")
    assert load(env={"SERVER_FRAMEWORK_CONFIG": str(path)}).settings.workers == 4


def test_listeners_come_from_one_source(tmp_path: Path) -> None:
    toml = 'tcp = ["127.0.0.1:1", "[::1]:1"]\nunix = "/tmp/a.sock"\n'
    from_file = load(toml=toml, tmp=tmp_path).settings
    assert from_file.tcp == (("127.0.0.1", 1), ("::1", 1))
    assert from_file.unix == ("/tmp/a.sock",)
    # The command line names a listener: it gives them all, nothing is added from the file.
    overridden = load("--udp", "*:2", toml=toml, tmp=tmp_path).settings
    assert (overridden.tcp, overridden.udp, overridden.unix) == ((), (("", 2),), ())
    # Other settings still merge.
    env = {"SERVER_FRAMEWORK_FD": "3,4", "SERVER_FRAMEWORK_WORKERS": "2"}
    from_env = load(env=env, toml=toml, tmp=tmp_path).settings
    assert (from_env.fd, from_env.tcp, from_env.workers) == ((3, 4), (), 2)


def test_lists() -> None:
    env = {"SERVER_FRAMEWORK_TCP": "127.0.0.1:1, [::1]:2,", "SERVER_FRAMEWORK_PROXY_PROTOCOL": "v2"}
    settings = load("--proxy-allow", "10.0.0.0/8,192.0.2.7", "--proxy-allow", "::1", env=env)
    assert settings.settings.tcp == (("127.0.0.1", 1), ("::1", 2))
    assert settings.settings.proxy_allow == ("10.0.0.0/8", "192.0.2.7/32", "::1/128")
    assert settings.settings.proxy_protocol == "v2"


def test_proxy_allow_accepts_what_the_servers_do() -> None:
    env = {"SERVER_FRAMEWORK_PROXY_PROTOCOL": "auto"}
    settings = load("--proxy-allow", ",".join(DEFAULT_PROXY_ALLOW), env=env).settings
    assert settings.proxy_allow == DEFAULT_PROXY_ALLOW


def test_values() -> None:
    settings = load(
        "--max-frame-size", "64K", "--protocol", "TEXT", "--log-format", "auto",
        "--log-level", "DEBUG", "--shutdown-timeout", "0", "--backend", "trio",
    ).settings  # fmt: skip
    assert settings.max_frame_size == 65536
    assert settings.protocol == "line"
    assert settings.log_format is None
    assert settings.log_level == "debug"
    assert settings.shutdown_timeout == 0.0
    assert settings.backend == "trio"
    assert load("--max-frame-size", "1M").settings.max_frame_size == 1 << 20
    assert load("--protocol", "pkg.mod:make()").settings.protocol == "pkg.mod:make()"


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--tcp", "abc"], {}, "--tcp: expected HOST:PORT, got 'abc'"),
        ([], {"SERVER_FRAMEWORK_TCP": "abc"}, "SERVER_FRAMEWORK_TCP: expected HOST:PORT"),
        (["--workers", "0"], {}, "--workers: expected an integer >= 1, got '0'"),
        ([], {"SERVER_FRAMEWORK_WORKERS": "two"}, "SERVER_FRAMEWORK_WORKERS: expected an integer"),
        (["--idle-timeout", "0"], {}, "--idle-timeout: expected a number of seconds > 0"),
        (["--shutdown-timeout", "nan"], {}, "--shutdown-timeout: expected a number of seconds"),
        (["--max-frame-size", "0"], {}, "--max-frame-size: expected a size in bytes"),
        ([], {"SERVER_FRAMEWORK_REUSE_PORT": "maybe"}, "SERVER_FRAMEWORK_REUSE_PORT: expected a"),
        (["--protocol", "yaml"], {}, "--protocol: expected one of json, msgpack"),
        (["--framing", "nul"], {}, "--framing: expected one of line, crlf"),
        (["--log-level", "loud"], {}, "--log-level: expected one of debug"),
        (["--fd", "three"], {}, "--fd: expected a file descriptor number"),
        (["--unix", "/" + "x" * 200], {}, "--unix: socket path too long"),
        (["--proxy-protocol", "v1", "--proxy-allow", "10.0.0.1/8"], {}, "did you mean 10.0.0.0/8"),
        (["--proxy-allow", "10.0.0.0/8"], {}, "--proxy-allow: needs --proxy-protocol"),
        (["--tls-key", "k.pem"], {}, "--tls-key: needs a certificate (--tls-cert)"),
        (["--framing", "length-prefix-1", "--max-frame-size", "1K"], {}, "at most 255 bytes"),
        (["not a target"], {}, "TARGET: expected MODULE:ATTR"),
    ],
)
def test_errors_name_the_option_and_its_source(
    argv: list[str], env: dict[str, str], expected: str
) -> None:
    assert expected in error_of(*argv, env=env)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("max_connections = 'many'\n", "server.toml: max_connections: expected an integer"),
        ("max-connections = 5\n", "unknown setting 'max-connections' (did you mean"),
        ("workers = [1, 2]\n", "server.toml: workers: expected a single value, got a list"),
        ("tcp = [{a = 1}]\n", "server.toml: tcp: expected a value"),
        ("workers = \n", "invalid TOML"),
    ],
)
def test_file_errors(tmp_path: Path, toml: str, expected: str) -> None:
    assert expected in error_of(toml=toml, tmp=tmp_path)


def test_missing_file() -> None:
    assert "cannot read the config file '/nonexistent.toml'" in error_of(
        "--config", "/nonexistent.toml"
    )


def test_unknown_environment_variables_are_reported() -> None:
    loaded = load("a:B", env={"SERVER_FRAMEWORK_MAX_CONECTIONS": "5"})
    assert loaded.warnings == [
        "ignoring unknown environment variable SERVER_FRAMEWORK_MAX_CONECTIONS "
        "(did you mean SERVER_FRAMEWORK_MAX_CONNECTIONS?)"
    ]


def test_print_config_is_a_usable_config_file(tmp_path: Path) -> None:
    loaded = load(
        "app:Handler", "--tcp", "[::1]:0", "--tcp", "*:1", "--unix", 'odd "name".sock',
        "--idle-timeout", "2.5", "--reuse-port", "--proxy-protocol", "auto",
        "--proxy-allow", "10.0.0.0/8",
        env={"SERVER_FRAMEWORK_LOG_LEVEL": "warning"},
    )  # fmt: skip
    text = render_toml(loaded)
    assert 'log_level = "warning"  # SERVER_FRAMEWORK_LOG_LEVEL' in text
    assert "# tls_cert: not set (default)" in text
    document = tomllib.loads(text)
    assert document["tcp"] == ["[::1]:0", "*:1"]
    path = tmp_path / "again.toml"
    path.write_text(text)
    assert load("--config", str(path)).settings == loaded.settings


def test_print_config_shows_what_applies_when_unset_and_the_warnings() -> None:
    loaded = load("app:Handler", env={"SERVER_FRAMEWORK_WORKRS": "2"})
    text = render_toml(loaded)
    assert (
        "# proxy_allow: not set, so with proxy_protocol, the servers' default: 127.0.0.0/8" in text
    )
    assert "proxy_allow = []" not in text
    assert "# max_frame_size: not set, so the framer's default (1048576 bytes)" in text
    assert "# log_format: not set, so console on a terminal, json otherwise" in text
    assert (
        "# warning: ignoring unknown environment variable SERVER_FRAMEWORK_WORKRS "
        "(did you mean SERVER_FRAMEWORK_WORKERS?)"
    ) in text
    assert tomllib.loads(text)["target"] == "app:Handler"  # still a usable file


def test_print_config_subprocess_warns_about_unknown_variables() -> None:
    process = run_cli(
        "serve", "app:Handler", "--print-config", env=clean_env(SERVER_FRAMEWORK_WORKRS="2")
    )
    assert process.process.returncode == 0, process.output()
    assert process.stderr == [
        "server-framework: warning: ignoring unknown environment variable "
        "SERVER_FRAMEWORK_WORKRS (did you mean SERVER_FRAMEWORK_WORKERS?)"
    ]


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["serve", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in OPTIONS:
        assert option.flag in text, option.flag
    for words in ("SERVER_FRAMEWORK_<OPTION>", "Precedence", "Exit codes", "TARGET", "SIGTERM"):
        assert words in text


def test_print_config_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('protocol = "msgpack"\nworkers = 3\nmax_connections = 7\n')
    process = run_cli(
        "serve", "app:Handler", "--config", str(path), "--max-connections", "9", "--print-config",
        env=None,
    )  # fmt: skip
    assert process.process.returncode == 0, process.output()
    document = tomllib.loads("\n".join(process.stdout))
    assert document["protocol"] == "msgpack"
    assert document["workers"] == 3
    assert document["max_connections"] == 9
    assert document["tcp"] == ["127.0.0.1:9000"]
