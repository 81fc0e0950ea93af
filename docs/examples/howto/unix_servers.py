"""Serve on Unix sockets: a stream socket and a datagram socket, and talk to both."""

from __future__ import annotations

from typing import Any

import server_framework as sf

JSON_LINES = sf.StreamProtocol(sf.JSONSerializer())
JSON_DATAGRAMS = sf.DatagramProtocol(sf.JSONSerializer())


def make_stream_server(path: str) -> sf.AsyncUnixStreamServer[Any, Any]:
    # mode=0o660: only the owner and the group may connect (the default follows the umask).
    return sf.AsyncUnixStreamServer(path, JSON_LINES, sf.EchoHandler(), mode=0o660)


def make_datagram_server(path: str) -> sf.AsyncUnixDatagramServer[Any, Any]:
    return sf.AsyncUnixDatagramServer(path, JSON_DATAGRAMS, sf.DatagramEchoHandler())


def talk(stream_path: str, datagram_path: str) -> list[Any]:
    """Blocking clients for both servers."""
    with sf.UnixStreamClient(stream_path, JSON_LINES) as client:
        client.send_packet({"over": "stream"})
        first = client.recv_packet(timeout=5)
    # A Unix datagram client binds a path of its own (a temporary file, removed on close):
    # without one, the server could not answer.
    with sf.UnixDatagramClient(datagram_path, JSON_DATAGRAMS) as datagram_client:
        datagram_client.send_packet({"over": "datagram"})
        second = datagram_client.recv_packet(timeout=5)
    return [first, second]


async def main() -> None:
    stream_server = make_stream_server("/tmp/echo.sock")
    datagram_server = make_datagram_server("/tmp/echo-dgram.sock")
    backend = sf.current_backend()
    async with stream_server, datagram_server, backend.create_task_group() as tasks:
        tasks.start_soon(stream_server.serve_forever)
        tasks.start_soon(datagram_server.serve_forever)


if __name__ == "__main__":
    sf.run(main)
