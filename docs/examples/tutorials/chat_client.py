"""Tutorial: a terminal client for chat_server.py: one thread prints, the other sends.

Run the server first, then ``python docs/examples/tutorials/chat_client.py NAME`` and type
lines; Ctrl-D (or ``/quit``) quits.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable

import server_framework as sf


def print_incoming(client: sf.TCPClient[str, str], show: Callable[[str], object]) -> None:
    """Runs in a thread of its own: show every line from the server."""
    try:
        for line in client.iter_received_packets():
            show(line)
        show("* the server closed the connection")
    except sf.ClosedResourceError:
        pass  # we closed the client: we are done
    except ConnectionError:
        show("* connection lost")


def chat(
    address: tuple[str, int],
    name: str,
    lines: Iterable[str],
    show: Callable[[str], object] = print,
) -> None:
    protocol = sf.StreamProtocol(sf.StringSerializer())
    # A TCPClient may be shared by threads: one receives while this one sends.
    with sf.TCPClient(address, protocol, connect_timeout=5) as client:
        receiver = threading.Thread(
            target=print_incoming, args=(client, show), name="chat-receiver"
        )
        receiver.start()
        try:
            client.send_packet(name)
            for line in lines:
                client.send_packet(line)
            # Leave politely: the server answers and closes the connection, which ends the
            # receiver's loop once it has read everything. (Closing at once, with answers
            # still unread, would reset the connection, and the server could lose our last
            # lines.)
            client.send_packet("/quit")
            receiver.join(timeout=5)
        finally:
            client.close()  # wakes the receiver thread up, with ClosedResourceError
            receiver.join()


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else input("your name: ")
    chat(("127.0.0.1", 9002), name, (line.rstrip("\n") for line in sys.stdin))
