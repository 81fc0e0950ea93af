"""Baseline: the same asyncio streams server as ``asyncio_streams``, on uvloop."""

from benchmarks.servers.asyncio_streams import main

if __name__ == "__main__":
    main("uvloop")
