"""What the asyncio and trio datagram clients share: addressing, equality and sending."""

from __future__ import annotations

from typing import Any

from handlers.base import DatagramClient
from server_framework.backend import AsyncBackend
from server_framework.sockets import Address, SocketProxy, normalize_address

__all__ = ["DatagramPeer"]


class DatagramPeer(DatagramClient[Any]):
    """A datagram server's client for one peer address (the loop-agnostic part).

    Subclasses set ``_endpoint`` (with ``send``, ``sock``, ``closed``, ``backend``),
    ``_address`` and ``_protocol``.
    """

    __slots__ = ()
    _endpoint: Any
    _address: Any
    _protocol: Any

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
