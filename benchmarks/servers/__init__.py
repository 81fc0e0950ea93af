"""The servers under test, one module each, every one runnable on its own::

    python -m benchmarks.servers.uvloop_protocol --port 0 --workload line

prints ``READY <port>`` once it accepts, then serves until killed (or until ``--max-seconds``).
``SERVERS`` lists them for the runner: the baselines, written in the plainest fast style for
their loop, server_framework with its echo handler, with a minimal request/response handler and
with the handler a new user writes from the docs, and EasyNetwork (a peer framework, written by
us against its public API, doing the same job). The wire formats are described in
:mod:`benchmarks.messages`.

server_framework chooses its engine (compiled or pure Python) when it is imported;
``SERVER_FRAMEWORK_PURE_PYTHON=1`` in its environment forces the pure-Python one.
:func:`server_table` gives the servers for ``--engine compiled``, ``pure`` or ``both`` (where
each ``sf-*`` server appears twice, the pure one named ``sf-...[pure]``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "BASELINES",
    "ENGINES",
    "PURE_ENV",
    "PURE_SUFFIX",
    "SERVERS",
    "TRIO_BASELINES",
    "ServerSpec",
    "missing_requirement",
    "select_engines",
    "server_table",
]

#: The environment variable that forces server_framework's pure-Python engine.
PURE_ENV: Final = "SERVER_FRAMEWORK_PURE_PYTHON"
#: ``--engine`` values.
ENGINES: Final = ("compiled", "pure", "both")
#: What ``--engine both`` appends to the name of an ``sf-*`` server on the pure-Python engine.
PURE_SUFFIX: Final = "[pure]"


@dataclass(frozen=True)
class ServerSpec:
    """One server under test.

    Attributes:
        name: Its name in tables and on the command line.
        module: The module to run with ``python -m``.
        args: Extra command-line arguments for that module.
        modes: The ``--workload`` values it serves (``line``, ``prefix``, ``udp``).
        family: ``raw`` (a baseline), ``server_framework`` or ``easynetwork``.
        loop: ``asyncio``, ``uvloop`` or ``trio``.
        requires: Importable packages it needs (the runner skips it, with a note, without them).
        engine: For server_framework: ``compiled`` (``PURE_ENV`` removed from its environment)
            or ``pure`` (``PURE_ENV=1``); None for the others, whose environment is left alone.
        base: The name without the engine's suffix (the name in :data:`SERVERS`).
    """

    name: str
    module: str
    modes: tuple[str, ...]
    family: str
    loop: str
    args: tuple[str, ...] = ()
    requires: tuple[str, ...] = field(default=())
    engine: str | None = None
    base: str = ""

    def __post_init__(self) -> None:
        if not self.base:
            object.__setattr__(self, "base", self.name)

    def command(self) -> list[str]:
        """``python -m`` arguments, without the port and the workload."""
        return ["-m", f"benchmarks.servers.{self.module}", *self.args]

    def env(self) -> dict[str, str | None]:
        """Changes to the runner's environment for this server's process (None: unset)."""
        if self.engine == "pure":
            return {PURE_ENV: "1"}
        if self.engine == "compiled":
            return {PURE_ENV: None}
        return {}


_TCP: Final = ("line", "prefix")
_ALL: Final = ("line", "prefix", "udp")
#: server_framework's servers also speak ``json`` (typed JSON lines, see ``messages``).
_SF: Final = (*_ALL, "json")


def _framework(handler: str, loop: str) -> ServerSpec:
    return ServerSpec(
        f"sf-{handler}-{loop}", "framework", _SF, "server_framework", loop,
        ("--loop", loop, "--handler", handler), engine="compiled",
    )  # fmt: skip


def _easynetwork(loop: str) -> ServerSpec:
    return ServerSpec(
        f"easynetwork-{loop}", "easynetwork_server", _ALL, "easynetwork", loop,
        ("--loop", loop), ("easynetwork",),
    )  # fmt: skip


#: Every server, in table order: baselines, then ours, then the peer framework.
SERVERS: Final[dict[str, ServerSpec]] = {
    spec.name: spec
    for spec in (
        ServerSpec("uvloop-protocol", "uvloop_protocol", _TCP, "raw", "uvloop"),
        ServerSpec("uvloop-streams", "uvloop_streams", _TCP, "raw", "uvloop"),
        ServerSpec("asyncio-protocol", "asyncio_protocol", _TCP, "raw", "asyncio"),
        ServerSpec("asyncio-streams", "asyncio_streams", _TCP, "raw", "asyncio"),
        ServerSpec("trio-sockets", "trio_sockets", _TCP, "raw", "trio"),
        ServerSpec("uvloop-datagram", "uvloop_datagram", ("udp",), "raw", "uvloop"),
        ServerSpec("asyncio-datagram", "asyncio_datagram", ("udp",), "raw", "asyncio"),
        ServerSpec("trio-udp", "trio_udp", ("udp",), "raw", "trio"),
        _framework("echo", "uvloop"),
        _framework("rr", "uvloop"),
        _framework("echo", "asyncio"),
        _framework("rr", "asyncio"),
        _framework("echo", "trio"),
        _framework("rr", "trio"),
        _framework("user", "uvloop"),
        _framework("user", "asyncio"),
        _framework("user", "trio"),
        _easynetwork("uvloop"),
        _easynetwork("asyncio"),
        _easynetwork("trio"),
    )
}

#: The baseline every figure is divided by, per transport (measured in the same round).
BASELINES: Final = {"tcp": "uvloop-protocol", "udp": "uvloop-datagram"}
#: The raw trio servers, a second reference for servers on trio (``--instructions``).
TRIO_BASELINES: Final = {"tcp": "trio-sockets", "udp": "trio-udp"}


def _named(spec: ServerSpec, engine: str | None, suffix: str = "") -> ServerSpec:
    return dataclasses.replace(spec, name=spec.name + suffix, engine=engine, base=spec.name)


def server_table(engine: str = "compiled") -> dict[str, ServerSpec]:
    """Every server, in table order, for ``--engine ENGINE``.

    ``compiled`` and ``pure``: the ``sf-*`` servers keep their names and run that engine;
    ``both``: each ``sf-*`` server is followed by its pure-Python twin, ``NAME[pure]``.
    Raw baselines and EasyNetwork are the same in all three.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    table: dict[str, ServerSpec] = {}
    for spec in SERVERS.values():
        if spec.engine is None:
            table[spec.name] = _named(spec, None)
        elif engine == "both":
            table[spec.name] = _named(spec, "compiled")
            twin = _named(spec, "pure", PURE_SUFFIX)
            table[twin.name] = twin
        else:
            table[spec.name] = _named(spec, engine)
    return table


def select_engines(names: Iterable[str], engine: str) -> list[ServerSpec]:
    """The servers named (names of :data:`SERVERS`) for ``--engine ENGINE``, in table order."""
    wanted = set(names)
    return [spec for spec in server_table(engine).values() if spec.base in wanted]


def missing_requirement(spec: ServerSpec) -> str | None:
    """The first package ``spec`` needs that is not installed, or None."""
    for package in spec.requires:
        if importlib.util.find_spec(package) is None:
            return package
    return None
