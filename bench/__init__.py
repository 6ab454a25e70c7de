"""Benchmarks: `make bench` runs every `bench/bench_*.py` and prints their tables.

Each module exposes `run() -> Table` (or a list of tables). Figures are printed side by side
with their comparison (a ceiling, a floor or the naive design) measured in the same run on the
same machine; tests never assert timings.
"""
