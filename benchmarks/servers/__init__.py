"""The servers under test, one module each, every one runnable on its own::

    python -m benchmarks.servers.uvloop_protocol --port 0 --workload line

prints ``READY <port>`` once it accepts, then serves until killed (or until ``--max-seconds``).
``SERVERS`` lists them for the runner: the baselines, written in the plainest fast style for
their loop, server_framework with its echo handler and with a minimal request/response handler,
and EasyNetwork (a peer framework, written by us against its public API, doing the same job).
The wire formats are described in :mod:`benchmarks.messages`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Final

__all__ = ["BASELINES", "SERVERS", "ServerSpec", "missing_requirement"]


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
    """

    name: str
    module: str
    modes: tuple[str, ...]
    family: str
    loop: str
    args: tuple[str, ...] = ()
    requires: tuple[str, ...] = field(default=())

    def command(self) -> list[str]:
        """``python -m`` arguments, without the port and the workload."""
        return ["-m", f"benchmarks.servers.{self.module}", *self.args]


_TCP: Final = ("line", "prefix")
_ALL: Final = ("line", "prefix", "udp")


def _framework(handler: str, loop: str) -> ServerSpec:
    return ServerSpec(
        f"sf-{handler}-{loop}", "framework", _ALL, "server_framework", loop,
        ("--loop", loop, "--handler", handler),
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
        _easynetwork("uvloop"),
        _easynetwork("asyncio"),
        _easynetwork("trio"),
    )
}

#: The baseline every figure is divided by, per transport (measured in the same round).
BASELINES: Final = {"tcp": "uvloop-protocol", "udp": "uvloop-datagram"}


def missing_requirement(spec: ServerSpec) -> str | None:
    """The first package ``spec`` needs that is not installed, or None."""
    for package in spec.requires:
        if importlib.util.find_spec(package) is None:
            return package
    return None
