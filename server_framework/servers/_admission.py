"""Who gets a connection, on every loop: ``max_connections`` and its overload policy, the limit
per client address, and the refused connections the handler answers (``on_refused``).

Each stream listener has one :class:`Admission`. The listener asks it about each accepted
connection (:meth:`Admission.check`: ``max_connections``, and the client's address when it is
known), about the original client once a trusted PROXY header named it
(:meth:`Admission.acquire_address`), and tells it when a connection ends
(:meth:`Admission.released`). Nothing here runs per request.

Log lines follow state transitions, never single refusals: one warning when the server
reaches ``max_connections`` and one line when it is back below nine tenths of it (the gap
keeps a server that hovers at its limit from logging a pair per connection); per client
address, one warning when it starts being refused and one line when its count has fallen to
half the limit. Every refusal is counted in the server's metrics.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from handlers.base import StreamRequestHandler

from ._driver import bump, outside, overrides
from ._limits import REFUSED, ConnectionsPerPeer, PeerAddress

__all__ = [
    "MAX_ANSWERING",
    "MAX_CONNECTIONS",
    "PER_IP",
    "REFUSAL_ANSWER_TIMEOUT",
    "REFUSED",
    "Admission",
    "Token",
]

#: Refusal reasons (metrics keys, and what ``on_refused`` is told).
MAX_CONNECTIONS: Final = "max_connections"
PER_IP: Final = "max_connections_per_ip"
#: Refused connections whose ``on_refused`` may run at once; beyond, they are closed at once
#: (a flood of refused clients cannot make us hold more than this many extra connections).
MAX_ANSWERING: Final = 64
#: Seconds ``on_refused`` may take (its send included); then the connection is closed.
REFUSAL_ANSWER_TIMEOUT: Final = 1.0

BASE_ON_REFUSED: Final = StreamRequestHandler.on_refused

#: The token of a connection whose address is not limited (or not known yet).
Token = str | Literal[False] | None


class Admission:
    """One stream listener's admission state (see the module's documentation)."""

    __slots__ = (
        "_counters",
        "_log",
        "_per_ip",
        "answering",
        "answers",
        "full",
        "limit",
        "pause",
        "refused_while_full",
        "resume_at",
    )

    def __init__(self, options: Any, log: Any) -> None:
        #: ``max_connections``, and the count at or below which a full server is not full.
        self.limit: Final[int] = options.max_connections
        self.resume_at: Final[int] = self.limit - max(1, self.limit // 10)
        #: ``overload="pause"``: stop accepting while full (else accept and refuse).
        self.pause: Final[bool] = options.overload == "pause"
        self.full = False
        self.refused_while_full = 0
        self._log = log
        self._counters = options.counters
        per_ip = options.max_connections_per_ip
        self._per_ip = (
            None
            if per_ip is None
            else ConnectionsPerPeer(per_ip, options.ip_prefixes, on_transition=self._transition)
        )
        #: The handler answers refused connections (it overrides ``on_refused``).
        self.answers: Final[bool] = overrides(options.handler.on_refused, BASE_ON_REFUSED)
        #: Refused connections whose ``on_refused`` runs now.
        self.answering = 0

    def over_limit(self, active: int) -> bool:
        """Before a new connection is counted, with ``active`` open: True if it would exceed
        ``max_connections`` (the first time since the server was last below it: logged)."""
        if active < self.limit:
            return False
        if not self.full:
            self.full = True
            self.refused_while_full = 0
            if self.pause:
                outside(
                    self._log.warning,
                    "max_connections reached: not accepting until connections end "
                    "(the kernel's backlog queues new ones)",
                    max_connections=self.limit,
                )
            else:
                outside(
                    self._log.warning,
                    "max_connections reached: refusing new connections",
                    max_connections=self.limit,
                )
        return True

    def check(self, active: int, peer: PeerAddress | Literal[False]) -> tuple[str | None, Token]:
        """A connection was accepted, ``active`` are open: count it, and say if it is refused.

        Args:
            active: Connections open (counted) before this one.
            peer: The client's address, or ``False`` when it is not known yet (a trusted PROXY
                header will name it: :meth:`acquire_address` then).

        Returns:
            ``(reason, token)``: why it is refused (``MAX_CONNECTIONS``, ``PER_IP``; the caller
            then calls :meth:`refuse`) or None, and the token of an admitted connection for
            :meth:`release_address`.
        """
        self._counters.accepted += 1
        if self.over_limit(active):
            return MAX_CONNECTIONS, None
        if peer is False or self._per_ip is None:
            return None, None
        token = self._per_ip.acquire(peer)
        return (PER_IP, None) if token is REFUSED else (None, token)

    def released(self, active: int) -> bool:
        """A connection ended and ``active`` remain: True if the server was full and is now
        below nine tenths of ``max_connections`` (logged; a paused listener accepts again)."""
        if self.full and active <= self.resume_at:
            self.full = False
            outside(
                self._log.info,
                "below max_connections again: accepting",
                connections=active,
                refused=self.refused_while_full,
            )
            return True
        return False

    def refuse(self, reason: str) -> bool:
        """Count a refused connection; True if the handler answers it (``on_refused``), which
        the caller must end with :meth:`answered`."""
        bump(self._counters.refused, reason)
        if reason == MAX_CONNECTIONS:
            self.refused_while_full += 1
        if self.answers and self.answering < MAX_ANSWERING:
            self.answering += 1
            return True
        return False

    def answered(self) -> None:
        """An answered refusal is over (its connection closed)."""
        self.answering -= 1

    def acquire_address(self, peer: PeerAddress) -> Token:
        """Count a connection from ``peer`` against ``max_connections_per_ip``: its token (for
        :meth:`release_address`), or ``REFUSED`` (counted by the caller, through
        :meth:`refuse`)."""
        if self._per_ip is None:
            return None
        return self._per_ip.acquire(peer)

    def release_address(self, token: Token) -> None:
        """Uncount a connection that :meth:`acquire_address` accepted."""
        if token and self._per_ip is not None:
            self._per_ip.release(token)

    def _transition(self, key: str, limited: bool, refused: int) -> None:
        assert self._per_ip is not None
        if limited:
            outside(
                self._log.warning,
                "max_connections_per_ip reached: refusing this client's new connections",
                client=key,
                max_connections_per_ip=self._per_ip.limit,
            )
        else:
            outside(
                self._log.info,
                "client below max_connections_per_ip again",
                client=key,
                refused=refused,
            )
