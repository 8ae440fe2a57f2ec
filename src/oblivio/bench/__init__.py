"""``oblivio bench``: run methods x scenarios x seeds from a YAML config, with resume, CSV and Markdown reports.

    from oblivio.bench import run_benchmark
    result = run_benchmark("benchmarks/digits.yaml", "runs/bench/digits")
    print(result.files["markdown"].read_text())
"""
from .config import BenchConfig, SequentialConfig, load_config, parse_config
from .report import BenchResult, print_report, read_csv
from .runner import count_cells, run_benchmark

__all__ = ["BenchConfig", "BenchResult", "SequentialConfig", "count_cells", "load_config", "parse_config",
           "print_report", "read_csv", "run_benchmark"]
