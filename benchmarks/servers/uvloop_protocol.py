"""Baseline: the same hand-written ``asyncio.Protocol`` as ``asyncio_protocol``, on uvloop.

This is the reference of every TCP ratio in the suite.
"""

from benchmarks.servers.asyncio_protocol import main

if __name__ == "__main__":
    main("uvloop")
