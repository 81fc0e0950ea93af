"""A TCP server with its usual options: limits, a per-request deadline, socket options, a stop.

The protocol is text lines ending with CRLF; each line is answered in upper case, numbered.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncGenerator

import server_framework as sf


class ShoutHandler(sf.StreamRequestHandler[str, str]):
    #: Seconds a client may stay silent before we hang up.
    request_timeout = 30.0

    async def on_connection(self, client: sf.StreamClient[str]) -> None:
        # Socket options go through client.socket, whatever the event loop.
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        client.state["count"] = 0  # per-connection data lives in client.state

    async def handle(self, client: sf.StreamClient[str]) -> AsyncGenerator[sf.RecvParams, str]:
        try:
            line = yield sf.RecvParams(timeout=self.request_timeout)
        except TimeoutError:
            await client.send_packet("bye: idle for too long")
            await client.aclose()
            return
        client.state["count"] += 1
        await client.send_packet(f"{line.upper()} #{client.state['count']}")


def make_server(host: str | None, port: int) -> sf.AsyncTCPServer[str, str]:
    protocol = sf.StreamProtocol(
        sf.StringSerializer(),
        sf.LineFramer(b"\r\n", max_frame_size=4096),  # refuse lines over 4 KiB
    )
    return sf.AsyncTCPServer(
        host,  # None: every interface, IPv4 and IPv6, on the same port
        port,  # 0: any free port; server.get_addresses() says which
        protocol,
        ShoutHandler(),
        max_connections=1_000,  # beyond it, new connections are closed at once
        idle_timeout=300,  # close connections that never send anything
        shutdown_timeout=5,  # on shutdown(), requests in progress get 5 s to finish
    )


async def serve_for(server: sf.AsyncTCPServer[str, str], seconds: float) -> None:
    """Serve, then stop gracefully after ``seconds`` (a stand-in for "until told to stop")."""
    backend = sf.current_backend()
    async with server, backend.create_task_group() as tasks:
        tasks.start_soon(server.serve_forever)
        await backend.sleep(seconds)
        await server.shutdown()  # returns once every connection has ended


async def main() -> None:
    async with make_server(None, 9000) as server:
        print("serving on", server.get_addresses())  # [('::', 9000), ('0.0.0.0', 9000)]
        await server.serve_forever()


if __name__ == "__main__":
    sf.run(main)
