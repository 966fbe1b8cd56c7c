"""Throughput benchmarks of the stages, one module per stage, before/after variants side by side."""
