"""What the asyncio and trio datagram servers share: the peer's client (addressing, equality,
sending) and the endpoint's routing of each datagram to its peer's client."""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from typing import Any, Final, Generic, TypeVar

from handlers.base import DatagramClient
from server_framework.backend import AsyncBackend
from server_framework.sockets import MAX_DATAGRAM_SIZE, Address, SocketProxy, normalize_address

from ._base import Listener
from ._driver import bump, now, outside
from ._limits import DatagramRatePerPeer
from ._options import DatagramOptions

__all__ = ["RECEIVE_LIMIT", "DatagramEndpoint", "DatagramPeer"]

#: What a datagram read asks for: one byte more than the largest datagram we take, so that a
#: longer one (a Unix datagram can be) is seen as too long instead of silently truncated.
RECEIVE_LIMIT: Final = MAX_DATAGRAM_SIZE + 1
#: Seconds between two sweeps of the datagram rate table (``max_datagram_rate_per_ip``).
RATE_SWEEP_INTERVAL: Final = 5.0


class DatagramPeer(DatagramClient[Any]):
    """A datagram server's client for one peer address (the loop-agnostic part).

    Subclasses set ``_endpoint`` (with ``send``, ``sock``, ``closed``, ``backend``),
    ``_address`` and ``_protocol``.
    """

    __slots__ = ()
    _endpoint: Any
    _address: Any
    _protocol: Any
    _decoder: Any  # the driver's DatagramInbox
    _fed: Any  # the driver's: a datagram arrived (the idle deadline counts from it)

    async def send_packet(self, packet: Any) -> None:
        await self._endpoint.send(self._protocol.encode(packet), self._address)

    def is_closing(self) -> bool:
        return bool(self._endpoint.closed)

    def backend(self) -> AsyncBackend:
        backend: AsyncBackend = self._endpoint.backend
        return backend

    @property
    def peer_address(self) -> Address:
        return normalize_address(self._address)

    @property
    def local_address(self) -> Address:
        return normalize_address(self._endpoint.sock.getsockname())

    @property
    def socket(self) -> SocketProxy:
        return SocketProxy(self._endpoint.sock)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DatagramPeer):
            return NotImplemented
        return self._endpoint is other._endpoint and self._address == other._address

    def __hash__(self) -> int:
        return hash(self._address)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} peer={self._address!r}>"


PeerT = TypeVar("PeerT", bound=DatagramPeer)


class DatagramEndpoint(ABC, Generic[PeerT]):
    """One bound datagram socket: its peers' clients, and the routing of datagrams to them.

    Each loop's endpoint adds reading, sending, and how a client's task starts and wakes.
    """

    def __init__(self, listener: Listener[DatagramOptions], sock: socket.socket) -> None:
        self.listener = listener
        self.options = listener.options
        self.backend = listener.backend
        self.sock = sock
        self.clients: dict[Any, PeerT] = {}
        self.closed = False
        rate = self.options.max_datagram_rate_per_ip
        #: The datagram rate per client address (None: not limited).
        self.rate: DatagramRatePerPeer | None = (
            None
            if rate is None
            else DatagramRatePerPeer(
                rate,
                self.options.datagram_burst,
                self.options.ip_prefixes,
                on_transition=self._rate_transition,
            )
        )
        self._expire_at = 0.0  # when the rate table is next swept for quiet clients

    def _rate_transition(self, key: str, limited: bool, refused: int) -> None:
        log = self.options.log
        if limited:
            outside(
                log.warning,
                "max_datagram_rate_per_ip reached: dropping this client's excess datagrams",
                client=key,
                max_datagram_rate_per_ip=self.options.max_datagram_rate_per_ip,
            )
        else:
            outside(
                log.info, "client below max_datagram_rate_per_ip again", client=key, dropped=refused
            )

    @abstractmethod
    def _new_client(self, address: Any) -> PeerT:
        """A client for a peer address that has none (not started yet)."""

    @abstractmethod
    def _start(self, client: PeerT) -> None:
        """Start the task of a new client, whose inbox holds its first datagrams."""

    @abstractmethod
    def _notify(self, client: PeerT) -> None:
        """Tell a running client that a datagram is waiting in its inbox."""

    def _dispatch(self, data: bytes, address: Any) -> None:
        """Hand a received datagram to its peer's client (created within ``max_clients``)."""
        options = self.options
        counters = options.counters
        counters.datagrams += 1
        counters.bytes_in += len(data)
        rate = self.rate
        if rate is not None:
            moment = now()
            if moment >= self._expire_at:  # quiet clients' episodes end, their buckets go
                self._expire_at = moment + RATE_SWEEP_INTERVAL
                rate.expire(moment)
            if not rate.allow(address, moment):
                bump(counters.dropped, "datagram_rate_per_ip")
                return
        if len(data) > MAX_DATAGRAM_SIZE:
            bump(counters.dropped, "too_large")
            options.drops(reason="datagram too large", limit=MAX_DATAGRAM_SIZE)
            return
        client = self.clients.get(address)
        if client is None:
            if self.listener.stopping():
                return
            if len(self.clients) >= options.max_clients:
                bump(counters.dropped, "max_clients")
                options.drops(reason="max_clients reached")
                return
            client = self.clients[address] = self._new_client(address)
            client._decoder.feed(data)
            self._start(client)
            return
        if not client._decoder.feed(data):
            bump(counters.dropped, "client_queue_size")
            options.drops(reason="client queue full")
            return
        client._fed(len(data))
        self._notify(client)

    def forget(self, client: PeerT) -> None:
        """A client ended: drop it, and hand what it left unhandled to a fresh client."""
        if self.clients.get(client._address) is not client:
            return
        del self.clients[client._address]
        # Datagrams that arrived while the client was closing (after a handler error) go to
        # a fresh client for the same peer: nothing received is lost.
        pending = client._decoder.take_all()
        if pending and not self.listener.stopping():
            successor = self.clients[client._address] = self._new_client(client._address)
            for datagram in pending:
                successor._decoder.feed(datagram)
            self._start(successor)
