"""Benchmarks (`make bench`: bench.run) and the fault campaign (`make chaos`: bench.chaos)."""
