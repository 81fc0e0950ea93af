"""Metrics and health checks for a program that runs its servers itself.

``server-framework serve --metrics HOST:PORT`` does all of this for you. A program of its own
starts a ``MetricsEndpoint`` next to its servers: at every scrape, ``process_metrics()`` reads
the snapshot of every server serving in the process. Run it (``python metrics_endpoint.py``, or
``python metrics_endpoint.py trio``): it serves, sends three requests, and prints what
Prometheus would scrape.
"""

from __future__ import annotations

import functools
import sys
import urllib.request
from typing import Any, cast

import server_framework as sf
from server_framework.backend import BackendName
from server_framework.metrics import process_metrics
from server_framework.prometheus import MetricsEndpoint

JSON_LINES = sf.StreamProtocol(sf.JSONSerializer())


class Echo(sf.RequestResponseHandler[Any, Any]):
    async def respond(self, request: Any, client: Any) -> Any:
        return request


async def main() -> None:
    # Port 0 picks a free port, so that the example runs anywhere; in production, a fixed one
    # (9100 is the usual port of an exporter). /ready and /live are served on it too.
    with MetricsEndpoint("127.0.0.1", 0, process_metrics) as endpoint:
        async with sf.AsyncTCPServer("127.0.0.1", 0, JSON_LINES, Echo()) as server:
            backend = sf.current_backend()
            async with backend.create_task_group() as tasks:
                up = backend.create_event()
                tasks.start_soon(functools.partial(server.serve_forever, is_up_event=up))
                await up.wait()
                address = server.get_addresses()[0]
                scrape = await backend.run_in_thread(talk_and_scrape, address, endpoint.address)
                await server.shutdown()
    print(scrape, end="")
    # server.metrics is the same snapshot, readable from any thread, even after the stop.
    print(f"# after the stop: {server.metrics.requests} requests")


def talk_and_scrape(address: Any, metrics_address: tuple[str, int]) -> str:
    """Three requests, then a scrape, as Prometheus does it: ``GET /metrics``."""
    with sf.TCPClient(address, JSON_LINES) as client:
        for number in range(3):
            client.send_packet({"n": number})
            client.recv_packet(timeout=5)
    host, port = metrics_address
    with urllib.request.urlopen(f"http://{host}:{port}/ready", timeout=5) as reply:
        assert reply.read() == b"ready\n"  # 503 and the reason while starting or draining
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
        return cast(bytes, reply.read()).decode()


if __name__ == "__main__":
    backend = cast(BackendName, sys.argv[1]) if len(sys.argv) > 1 else None
    sf.run(main, backend=backend)
