"""Benchmarks: every runtime x precision of one model, one subprocess per row, one table.

Importing this package loads no runtime; each row imports its own in a worker process.
"""

from drifa_edge.bench.runner import BenchConfig, BenchResult, run_bench, run_benchmark
from drifa_edge.bench.table import bench_table, print_bench, sweep_table

__all__ = [
    "BenchConfig",
    "BenchResult",
    "bench_table",
    "print_bench",
    "run_bench",
    "run_benchmark",
    "sweep_table",
]
