"""A service over a blocking library: a product search in SQLite, with ThreadedHandler.

Clients send ``{"search": "tea"}``; the server streams one ``{"item": {...}}`` message per
matching product, then ``{"found": 2}``. The standard ``sqlite3`` module blocks, so
``respond`` is a plain function that runs in the handler's thread pool; each match is sent as
soon as it is read, through the portal back into the event loop. Messages of one client keep
their order; clients are served in parallel, by at most ``max_workers`` threads.

Run it with ``python threaded.py`` and try ``nc localhost 9000``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from typing import Any

import server_framework as sf

PRODUCTS = [("Green tea", 4.5), ("Coffee beans", 12.0), ("Black tea", 3.9), ("Carrot cake", 5.0)]


def create_demo_catalog(path: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
        db.executemany("INSERT INTO products (name, price) VALUES (?, ?)", PRODUCTS)


class CatalogHandler(sf.ThreadedHandler[dict[str, Any], dict[str, Any]]):
    def __init__(self, database: str) -> None:
        # Four threads: at most four queries at once; more clients wait for a free thread.
        super().__init__(max_workers=4, thread_name_prefix="catalog")
        self.database = database

    def respond(self, request: dict[str, Any], client: Any) -> dict[str, Any]:
        # This runs in a worker thread: blocking calls are fine here.
        pattern = f"%{request['search']}%"  # a missing key raises: that client is disconnected
        found = 0
        # A connection per request: sqlite3 connections must not move between threads, and
        # opening one is cheap. A pooled driver would take one from its pool here instead.
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            rows = db.execute(
                "SELECT name, price FROM products WHERE name LIKE ? ORDER BY id", (pattern,)
            )
            for name, price in rows:
                # Send each match now, from this thread: the portal runs send_packet in the
                # event loop and waits until it is done (so messages keep their order).
                item = {"item": {"name": name, "price": price}}
                self.portal.run_coroutine(client.send_packet, item)
                found += 1
        return {"found": found}  # sent after the items, as the reply to this request


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        database = os.path.join(directory, "catalog.db")
        create_demo_catalog(database)
        protocol = sf.StreamProtocol(sf.JSONSerializer())
        async with sf.AsyncTCPServer(
            "localhost", 9000, protocol, CatalogHandler(database)
        ) as server:
            await server.serve_forever()


if __name__ == "__main__":
    sf.run(main)
