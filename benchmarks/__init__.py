"""The benchmark suite: server_framework against raw event-loop servers and EasyNetwork.

``python -m benchmarks`` (or ``make bench``) starts every server under test in its own process on
loopback, drives it with a load generator in other processes (redis-benchmark, dnsperf, or the
suite's own uvloop generator), and prints a table of throughput, latency and server CPU time per
request, each also as a ratio to a raw uvloop baseline measured in the same round.
``python -m benchmarks --instructions`` counts instead the instructions each server executes per
request under valgrind's callgrind (:mod:`benchmarks.instructions`). See
``benchmarks/README.md``.
"""
