"""A TLS echo server, a client that checks its certificate, and optional client certificates."""

from __future__ import annotations

import ssl
from typing import Any

import server_framework as sf

JSON_LINES = sf.StreamProtocol(sf.JSONSerializer())


def server_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """The server's side: its certificate chain (PEM) and private key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


def require_client_certificates(context: ssl.SSLContext, cafile: str) -> None:
    """Mutual TLS: only clients with a certificate signed by ``cafile``'s CAs get in."""
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile)


def make_server(host: str, port: int, context: ssl.SSLContext) -> sf.AsyncTCPServer[Any, Any]:
    # The same server as without TLS, plus ssl=: every connection does a TLS handshake
    # (at most ssl_handshake_timeout seconds) before the handler sees it.
    return sf.AsyncTCPServer(host, port, JSON_LINES, sf.EchoHandler(), ssl=context)


def ask(address: tuple[str, int], cafile: str, request: Any, *, certfile: str | None = None) -> Any:
    """A client trusting the CAs in ``cafile`` (for a public CA: no cafile at all), showing
    its own certificate ``certfile`` (PEM, key included) if the server asks for one."""
    context = ssl.create_default_context(cafile=cafile)
    if certfile is not None:
        context.load_cert_chain(certfile)
    with sf.TCPClient(address, JSON_LINES, ssl=context, server_hostname="localhost") as client:
        client.send_packet(request)
        return client.recv_packet(timeout=5)


async def main() -> None:
    context = server_context("server.pem", "server.key")
    async with make_server("0.0.0.0", 8443, context) as server:
        await server.serve_forever()


if __name__ == "__main__":
    sf.run(main)
