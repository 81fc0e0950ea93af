"""Loading the settings of ``serve``: command line, environment and TOML file, merged in one.

:func:`build_parser` makes the ``argparse`` parser, :func:`load_settings` merges what it parsed
with the environment and the TOML file into one frozen
:class:`~server_framework.cli.settings.Settings`, and :func:`render_toml` prints the result
back as TOML for ``--print-config``. Every option has one name, used three ways (see
:data:`~server_framework.cli.options.OPTIONS`, the single table they all come from):

- on the command line as ``--max-connections 500``;
- in the environment as ``SERVER_FRAMEWORK_MAX_CONNECTIONS=500``;
- in a TOML file (``--config server.toml``, or ``SERVER_FRAMEWORK_CONFIG=server.toml``) as
  ``max_connections = 500``.

Precedence, option by option: command line > environment > file > default. The listeners
(``tcp``, ``udp``, ``unix``, ``unix_datagram``, ``fd``) count as *one* setting: the
highest-precedence source that names any listener defines all of them, so ``--udp :9000`` on
the command line never silently adds to a ``tcp`` list from the file. With no listener at all
(and no systemd socket activation), the server listens on ``tcp 127.0.0.1:9000``: local only,
never exposed by accident.

Lists (the listeners, ``proxy_allow``) are repeated options on the command line
(``--tcp A --tcp B``), comma-separated in the environment (``SERVER_FRAMEWORK_TCP=A,B``) and
TOML arrays (``tcp = ["A", "B"]``, a single string is accepted too). An empty environment
variable counts as unset.

Every value is validated where it is read, and an error names the option and where it came
from, on one line: ``--tcp: expected HOST:PORT, got 'abc'``,
``SERVER_FRAMEWORK_WORKERS: expected an integer >= 1, got 'two'``,
``server.toml: idle_timeout: expected a number of seconds > 0, got '-1'``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from protocols import DEFAULT_MAX_FRAME_SIZE
from server_framework.cli.options import CONFIG_ENV, ENV_PREFIX, OPTIONS, TARGET_OPTION, Option
from server_framework.cli.settings import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    LISTENER_FIELDS,
    ConfigError,
    Settings,
)
from server_framework.cli.values import format_inet, parse_bool
from server_framework.servers import DEFAULT_PROXY_ALLOW

__all__ = ["LoadedSettings", "build_parser", "load_settings", "render_toml"]

_ALL_OPTIONS: Final = (TARGET_OPTION, *OPTIONS)
_BY_NAME: Final = {option.name: option for option in _ALL_OPTIONS}

# -- the command line ---------------------------------------------------------------------------

_EPILOG = """\
configuration:
  Every option can also be set in the environment as SERVER_FRAMEWORK_<OPTION>
  (SERVER_FRAMEWORK_MAX_CONNECTIONS=500; lists comma-separated: SERVER_FRAMEWORK_TCP=a:1,b:2)
  or in a TOML file (--config FILE, or SERVER_FRAMEWORK_CONFIG=FILE) as option = value with
  underscores (max_connections = 500, tcp = ["a:1", "b:2"], target = "app:Handler").
  Precedence: command line > environment > file > default. The listener options count as one:
  the strongest source naming any listener gives them all. --print-config shows the result.

target:
  MODULE:ATTR names a request handler class (created with no arguments), a handler instance,
  or a function returning one; MODULE:FUNC() calls it too. The current directory is
  importable. Stream listeners need a StreamRequestHandler, datagram listeners a
  DatagramRequestHandler; to serve both, use one subclassing both (any
  handlers.RequestResponseHandler does), e.g. server_framework.demo:EchoHandler.

signals and exit codes:
  SIGTERM or SIGINT: stop accepting, give requests in progress --shutdown-timeout seconds,
  cancel the rest, exit 0. A second SIGINT exits at once (130). With --workers, the parent
  forwards the stop to every worker and waits for them.
  Exit codes: 0 stopped cleanly; 1 failed while serving; 2 bad usage or configuration;
  3 start-up failure (TARGET does not import, a bind fails, a worker fails to start); 130
  forced exit.

examples:
  server-framework serve server_framework.demo:EchoHandler --tcp 127.0.0.1:9000 --udp 127.0.0.1:9000
  server-framework serve myapp:Handler --tcp *:8000 --protocol msgpack --workers 4
  SERVER_FRAMEWORK_WORKERS=8 server-framework serve 'myapp:create()' --config prod.toml
  server-framework serve myapp:Handler --reload    # development: restart on source changes
"""


class _ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one-line :class:`ConfigError` exceptions."""

    def error(self, message: str) -> Any:  # argparse's signature says NoReturn
        raise ConfigError(f"{message}{self._did_you_mean(message)} (see '{self.prog} --help')")

    def _did_you_mean(self, message: str) -> str:
        """For unrecognized options, the closest known ones (of this parser and its
        subcommands): `` (--worker: did you mean --workers?)``, or ``""``."""
        prefix = "unrecognized arguments: "
        if not message.startswith(prefix):
            return ""
        known = set(self._option_string_actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for parser in action.choices.values():
                    known.update(parser._option_string_actions)
        hints = []
        for word in message[len(prefix) :].split():
            name = word.split("=", 1)[0]
            if name.startswith("--") and name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                if close:
                    hints.append(f"{name}: did you mean {close[0]}?")
        return f" ({'; '.join(hints)})" if hints else ""


def build_parser(version: str = "") -> argparse.ArgumentParser:
    """The ``server-framework`` argument parser (with its ``serve`` subcommand).

    Options not given on the command line are absent from the parsed namespace (not set to
    their default), so that the environment and the file can supply them.

    Errors raise :class:`ConfigError` (one line) instead of printing usage and exiting;
    ``--help`` and ``--version`` print and raise ``SystemExit(0)`` as usual.
    """
    parser = _ArgumentParser(
        prog="server-framework",
        description="Run a server_framework request handler from the command line.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"server-framework {version}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a request handler on TCP, UDP and Unix sockets",
        description="Serve TARGET, a request handler, on the given listeners until SIGTERM or "
        "SIGINT.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    serve.add_argument("target", nargs="?", metavar="TARGET", help=TARGET_OPTION.help)
    serve.add_argument(
        "--config", metavar="FILE", help="read settings from this TOML file (see below)"
    )
    serve.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved settings as TOML, with where each came from, and exit",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in OPTIONS:
        if option.group not in groups:
            groups[option.group] = serve.add_argument_group(option.group)
        group = groups[option.group]
        if option.parse is parse_bool:
            group.add_argument(option.flag, action=argparse.BooleanOptionalAction, help=option.help)
        else:
            group.add_argument(
                option.flag,
                metavar=option.metavar,
                action="append" if option.repeatable else "store",
                help=option.help,
            )
    return parser


# -- loading ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadedSettings:
    """The result of :func:`load_settings`.

    Attributes:
        settings: The merged, validated settings.
        sources: For each field set by something other than its default, where it came from:
            a flag (``--tcp``), a variable (``SERVER_FRAMEWORK_TCP``) or ``FILE: key``.
        warnings: Things worth logging once logging is set up (unknown variables...).
        config_file: The TOML file read (``--config`` or ``SERVER_FRAMEWORK_CONFIG``), or None.
    """

    settings: Settings
    sources: dict[str, str]
    warnings: list[str]
    config_file: str | None = None


_Layer = dict[str, tuple[Any, str]]  # field -> (typed value, source label)


def _parse_value(option: Option, texts: Sequence[str], source: str) -> Any:
    try:
        if option.repeatable:
            return tuple(option.parse(text) for text in texts)
        return option.parse(texts[0])
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _split_commas(texts: Sequence[str]) -> list[str]:
    """The items of comma-separated lists, blank items dropped: ``["a,b,", "c"]`` -> a, b, c."""
    return [item for text in texts for item in text.split(",") if item.strip()]


def _cli_layer(namespace: argparse.Namespace) -> _Layer:
    layer: _Layer = {}
    given = vars(namespace)
    for option in _ALL_OPTIONS:
        if option.name not in given:
            continue
        raw = given[option.name]
        source = "TARGET" if option is TARGET_OPTION else option.flag
        if isinstance(raw, bool):  # --reuse-port / --no-reuse-port
            layer[option.name] = (raw, source)
            continue
        texts = raw if isinstance(raw, list) else [raw]
        if option.name == "proxy_allow":
            texts = _split_commas(texts)
        layer[option.name] = (_parse_value(option, texts, source), source)
    return layer


def _env_layer(environ: Mapping[str, str]) -> tuple[_Layer, list[str]]:
    layer: _Layer = {}
    for option in _ALL_OPTIONS:
        raw = environ.get(option.env, "")
        if not raw.strip():
            continue
        texts = _split_commas([raw]) if option.repeatable else [raw]
        layer[option.name] = (_parse_value(option, texts, option.env), option.env)
    known = {option.env for option in _ALL_OPTIONS} | {CONFIG_ENV}
    warnings = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"ignoring unknown environment variable {name}{hint}")
    return layer, warnings


def _file_layer(path: str) -> _Layer:
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    layer: _Layer = {}
    for key, value in document.items():
        option = _BY_NAME.get(key)
        if option is None:
            close = difflib.get_close_matches(key.replace("-", "_"), sorted(_BY_NAME), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: unknown setting {key!r}{hint}")
        source = f"{path}: {key}"
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not option.repeatable:
            raise ConfigError(f"{source}: expected a single value, got a list")
        texts = []
        for item in items:
            if isinstance(item, dict | list):
                raise ConfigError(f"{source}: expected a value, got {type(item).__name__}")
            texts.append(str(item).lower() if isinstance(item, bool) else str(item))
        layer[key] = (_parse_value(option, texts, source), source)
    return layer


def _check(values: dict[str, Any], sources: dict[str, str]) -> None:
    """Checks that involve several settings, or the machine."""

    def source(name: str) -> str:
        return sources.get(name, _BY_NAME[name].flag)

    for name in ("tls_key", "tls_ca"):
        if name in values and "tls_cert" not in values:
            raise ConfigError(f"{source(name)}: needs a certificate (--tls-cert) to turn TLS on")
    if values.get("proxy_allow") and "proxy_protocol" not in values:
        raise ConfigError(f"{source('proxy_allow')}: needs --proxy-protocol")
    framing = values.get("framing")
    size = values.get("max_frame_size")
    if size is not None and framing in ("length-prefix-1", "length-prefix-2"):
        limit = 255 if framing == "length-prefix-1" else 65535
        if size > limit:
            raise ConfigError(
                f"{source('max_frame_size')}: {framing} framing allows at most {limit} bytes"
            )
    if values.get("reload") and values.get("workers", 1) > 1:
        raise ConfigError(
            f"{source('reload')}: development only, one server process: not with "
            f"{source('workers')} {values['workers']}"
        )
    if values.get("reload_dir") and not values.get("reload"):
        raise ConfigError(f"{source('reload_dir')}: needs --reload")
    if values.get("backend") == "uvloop" and not _uvloop_installed():
        raise ConfigError(f"{source('backend')}: uvloop is not installed; use asyncio or trio")


def _uvloop_installed() -> bool:
    import importlib.util  # noqa: PLC0415  (only needed for this one check)

    return importlib.util.find_spec("uvloop") is not None


def load_settings(
    namespace: argparse.Namespace, environ: Mapping[str, str], *, activated_fds: int = 0
) -> LoadedSettings:
    """Merge the command line, the environment and the TOML file into :class:`Settings`.

    Args:
        namespace: What :func:`build_parser` parsed for ``serve`` (only the options given).
        environ: The environment (``os.environ``).
        activated_fds: Sockets passed by systemd socket activation; when there are some, no
            default listener is added.

    Raises:
        ConfigError: an invalid value, an unknown TOML key, an unreadable file... (one line).
    """
    given = vars(namespace)
    config_path = given.get("config") or environ.get(CONFIG_ENV, "").strip() or None
    file_layer = _file_layer(config_path) if config_path else {}
    env_layer, warnings = _env_layer(environ)
    cli_layer = _cli_layer(namespace)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in (file_layer, env_layer, cli_layer):  # weakest first
        if any(name in layer for name in LISTENER_FIELDS):
            for name in LISTENER_FIELDS:
                values.pop(name, None)
                sources.pop(name, None)
        for name, (value, source) in layer.items():
            values[name] = value
            sources[name] = source
    if not any(values.get(name) for name in LISTENER_FIELDS) and activated_fds == 0:
        values["tcp"] = ((DEFAULT_HOST, DEFAULT_PORT),)
    _check(values, sources)
    return LoadedSettings(Settings(**values), sources, warnings, config_path)


# -- printing -----------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON strings are TOML basic strings, once DEL (allowed in JSON) is escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return _toml_value(format_inet(value))
    return "[" + ", ".join(_toml_value(item) for item in value) + "]"


def render_toml(loaded: LoadedSettings) -> str:
    """The settings as a TOML document usable with ``--config``, each line saying its source."""
    settings = loaded.settings
    lines = [
        "# server-framework serve: resolved settings",
        "# (command line > environment > file > default)",
    ]
    for warning in loaded.warnings:
        lines.append(f"# warning: {warning}")
    for option in _ALL_OPTIONS:
        value = getattr(settings, option.name)
        source = loaded.sources.get(option.name, "default")
        unset = value is None or (option.name in _UNSET_WHEN_EMPTY and not value)
        if unset and option.name in _IMPLIED_DEFAULTS:
            lines.append(f"# {option.name}: not set, so {_IMPLIED_DEFAULTS[option.name]}")
        elif unset:
            lines.append(f"# {option.name}: not set ({source})")
        else:
            lines.append(f"{option.name} = {_toml_value(value)}  # {source}")
    return "\n".join(lines) + "\n"


#: Options whose empty value means "not set" (the listeners, proxy_allow and reload_dir).
_UNSET_WHEN_EMPTY: Final = frozenset(LISTENER_FIELDS) | {"proxy_allow", "reload_dir"}

#: What applies when an option is not set, where that is not simply "nothing".
_IMPLIED_DEFAULTS: Final = {
    "framing": "the protocol's own (line for json, line and bytes; length-prefix otherwise)",
    "max_frame_size": f"the framer's default ({DEFAULT_MAX_FRAME_SIZE} bytes)",
    "proxy_allow": (
        "with proxy_protocol, the servers' default: "
        + ", ".join(DEFAULT_PROXY_ALLOW)
        + " (loopback and Unix socket peers)"
    ),
    "log_format": "console on a terminal, json otherwise",
    "idle_timeout": "no idle deadline",
    "reload_dir": "with reload, the directory of TARGET's package or module",
    "metrics": "no metrics endpoint",
}
