"""Load generators: wrappers of the C tools (redis-benchmark, dnsperf) that parse their output,
and the suite's own uvloop generator (:mod:`benchmarks.generators.loadgen`, run as processes)
with the merging of its per-process results (:mod:`benchmarks.generators.suite`)."""
