"""Baseline: the same ``asyncio.DatagramProtocol`` echo as ``asyncio_datagram``, on uvloop.

This is the reference of every UDP ratio in the suite.
"""

from benchmarks.servers.asyncio_datagram import main

if __name__ == "__main__":
    main("uvloop")
