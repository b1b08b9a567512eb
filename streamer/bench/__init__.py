"""Benchmarks: commands that measure and record figures in ``docs/benchmarks.md``."""
