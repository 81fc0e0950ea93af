"""Parsing one value of a setting: the text of an option, variable or TOML key, typed.

Each parser takes the text of one value (one list item, for lists) and returns the typed
value, or raises ``ValueError`` saying what was expected (``expected HOST:PORT, got 'abc'``);
the caller (:mod:`server_framework.cli.config`) adds the option and the source. The names a
choice accepts come from where they are defined when the framework defines them: the
backends from :data:`~server_framework.backend.BackendName`, the log levels from
:data:`server_framework.log.LOG_LEVELS`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Sequence
from typing import Final, get_args

from server_framework.backend import BackendName
from server_framework.cli.settings import InetAddress, ProxyProtocolName
from server_framework.log import LOG_LEVELS

__all__ = [
    "BACKEND_NAMES",
    "FRAMING_NAMES",
    "LOG_FORMATS",
    "LOG_LEVEL_NAMES",
    "OVERLOAD_NAMES",
    "PROTOCOL_NAMES",
    "PROXY_PROTOCOL_NAMES",
    "format_inet",
    "parse_bool",
    "parse_choice",
    "parse_deadline",
    "parse_directory",
    "parse_fd",
    "parse_file",
    "parse_inet",
    "parse_int",
    "parse_log_format",
    "parse_network",
    "parse_protocol",
    "parse_rate",
    "parse_seconds",
    "parse_size",
    "parse_target",
    "parse_unix_path",
]

#: ``--protocol`` names (``text`` is another name for ``line``).
PROTOCOL_NAMES: Final = ("json", "msgpack", "cbor", "line", "text", "bytes")
#: ``--framing`` names.
FRAMING_NAMES: Final = (
    "line",
    "crlf",
    "length-prefix",
    "length-prefix-1",
    "length-prefix-2",
    "length-prefix-4",
    "length-prefix-8",
)
#: ``--backend`` names: the backends of :mod:`server_framework.backend`.
BACKEND_NAMES: Final[tuple[str, ...]] = get_args(BackendName)
#: ``--proxy-protocol`` names.
PROXY_PROTOCOL_NAMES: Final[tuple[str, ...]] = get_args(ProxyProtocolName)
#: The choices of ``--overload``.
OVERLOAD_NAMES: Final[tuple[str, ...]] = ("reject", "pause")
#: ``--log-level`` names: the levels of :func:`server_framework.log.configure_logging`.
LOG_LEVEL_NAMES: Final = tuple(LOG_LEVELS)
#: ``--log-format`` names (``auto``: console on a terminal, else JSON).
LOG_FORMATS: Final = ("console", "json", "auto")


def _expected(what: str, text: str) -> ValueError:
    return ValueError(f"expected {what}, got {text!r}")


def _parse_port(port: str, text: str) -> int:
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise _expected("HOST:PORT with a port in 0..65535", text)
    return int(port)


def parse_inet(text: str) -> InetAddress:
    """Parse ``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` or ``*:PORT`` (every interface).

    Raises:
        ValueError: not one of those forms, or a bad port or IPv6 address.
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise _expected("[IPV6]:PORT", text)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _expected("[IPV6]:PORT with a valid IPv6 address", text) from None
        return host, _parse_port(port, text)
    host, sep, port = text.rpartition(":")
    if not sep:
        if text.isdigit():
            raise ValueError(
                f"expected HOST:PORT, got {text!r} (did you mean 127.0.0.1:{text}, this machine "
                f"only, or :{text}, every interface?)"
            )
        raise _expected("HOST:PORT", text)
    if ":" in host:
        raise ValueError(f"expected HOST:PORT, got {text!r} (write IPv6 addresses as [::1]:9000)")
    if host == "*":
        host = ""
    if host and not re.fullmatch(r"[A-Za-z0-9._-]+", host):
        raise _expected("HOST:PORT with a host name or address", text)
    return host, _parse_port(port, text)


def format_inet(address: InetAddress) -> str:
    """The inverse of :func:`parse_inet`: ``127.0.0.1:9000``, ``[::1]:9000``, ``*:9000``."""
    host, port = address
    if not host:
        return f"*:{port}"
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


#: The longest Unix socket path Linux accepts (``sun_path`` is 108 bytes, NUL included).
_MAX_UNIX_PATH = 107


def parse_unix_path(text: str) -> str:
    """A Unix socket path: not empty, and short enough for ``sun_path``."""
    if not text:
        raise _expected("a socket path", text)
    if len(os.fsencode(text)) > _MAX_UNIX_PATH:
        raise ValueError(f"socket path too long ({len(text)} bytes, at most {_MAX_UNIX_PATH})")
    return text


def parse_fd(text: str) -> int:
    """A file descriptor number."""
    if not text.strip().isdigit():
        raise _expected("a file descriptor number", text)
    return int(text)


def parse_int(minimum: int) -> Callable[[str], int]:
    """A parser of integers ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _expected(f"an integer >= {minimum}", text) from None
        if value < minimum:
            raise _expected(f"an integer >= {minimum}", text)
        return value

    return parse


_SIZE_UNITS: Final = {"": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2}


def parse_size(text: str) -> int:
    """A size in bytes > 0, with an optional unit: ``65536``, ``64K``, ``1M`` (or KiB, MiB)."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS or int(match.group(1)) == 0:
        raise _expected("a size in bytes > 0 (e.g. 65536, 64K, 1M)", text)
    return int(match.group(1)) * _SIZE_UNITS[unit]


def parse_seconds(*, allow_zero: bool) -> Callable[[str], float]:
    """A parser of finite durations in seconds, > 0 (or >= 0 with ``allow_zero``)."""
    what = "a number of seconds " + (">= 0" if allow_zero else "> 0")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _expected(what, text) from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise _expected(what, text)
        return value

    return parse


def parse_rate(text: str) -> float:
    """A rate per second, finite and > 0: ``50``, ``0.5``."""
    try:
        value = float(text)
    except ValueError:
        raise _expected("a number per second > 0", text) from None
    if not math.isfinite(value) or value <= 0:
        raise _expected("a number per second > 0", text)
    return value


def parse_deadline(text: str) -> float:
    """A deadline in seconds > 0, or ``0`` / ``off`` to turn it off (returned as 0)."""
    if text.strip().lower() in ("off", "0"):
        return 0.0
    try:
        return parse_seconds(allow_zero=False)(text)
    except ValueError:
        raise _expected("a number of seconds > 0, or 0 / off", text) from None


def parse_bool(text: str) -> bool:
    """``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off`` (any case).

    A setting parsed by this function is an on/off flag on the command line
    (``--reuse-port`` / ``--no-reuse-port``).
    """
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise _expected("a boolean (true/false, 1/0, yes/no, on/off)", text)


def parse_choice(choices: Sequence[str]) -> Callable[[str], str]:
    """A parser of one of ``choices`` (any case; returned in lower case)."""

    def parse(text: str) -> str:
        lowered = text.strip().lower()
        if lowered not in choices:
            raise _expected("one of " + ", ".join(choices), text)
        return lowered

    return parse


_IMPORT_PATH: Final = re.compile(
    r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(\(\))?"
)


def parse_target(text: str) -> str:
    """``MODULE:ATTR`` or ``MODULE:FACTORY()``, checked for form only (nothing is imported)."""
    text = text.strip()
    if not _IMPORT_PATH.fullmatch(text):
        raise _expected("MODULE:ATTR or MODULE:FACTORY() (e.g. myapp.handlers:Echo)", text)
    return text


def parse_protocol(text: str) -> str:
    """One of :data:`PROTOCOL_NAMES` (``text`` becomes ``line``), or ``MODULE:ATTR``."""
    text = text.strip()
    if text.lower() in PROTOCOL_NAMES:
        return "line" if text.lower() == "text" else text.lower()
    if _IMPORT_PATH.fullmatch(text):
        return text
    raise _expected("one of " + ", ".join(PROTOCOL_NAMES) + " or MODULE:ATTR", text)


def parse_network(text: str) -> str:
    """A network in CIDR form (an address is a /32 or /128), or ``unix`` (Unix stream peers).

    Host bits set (``10.0.0.1/8``) are an error that suggests the network meant.
    """
    text = text.strip()
    if text.lower() == "unix":  # peers on Unix stream listeners
        return "unix"
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ipaddress.ip_network(text, strict=False)
            raise ValueError(f"{text!r} has host bits set; did you mean {fixed}?") from None
        raise _expected(
            "a network in CIDR form (e.g. 10.0.0.0/8, 192.0.2.7) or 'unix'", text
        ) from None


def parse_log_format(text: str) -> str | None:
    """``console`` or ``json``; None for ``auto``."""
    value = parse_choice(LOG_FORMATS)(text)
    return None if value == "auto" else value


def parse_file(text: str) -> str:
    """A file path (not blank; whether it can be read is found out when it is read)."""
    if not text.strip():
        raise _expected("a file path", text)
    return text


def parse_directory(text: str) -> str:
    """An existing directory (``--reload-dir``): checked now, since it is watched from the
    start."""
    if not text.strip() or not os.path.isdir(text):
        raise _expected("an existing directory", text)
    return text
