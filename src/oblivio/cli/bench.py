"""``oblivio bench``: run a benchmark grid from a YAML config (resumable) and print its tables."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import OblivioError
from .app import app, console


@app.command()
def bench(
    config: Path = typer.Option(..., "--config", "-c", help="benchmark YAML (see benchmarks/digits.yaml)"),
    out: Optional[Path] = typer.Option(None, help="output dir (default: the config's 'output' or runs/bench/<name>)"),
    resume: bool = typer.Option(True, help="reuse finished cells cached in the output dir"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Run methods x scenarios x seeds (plus original and retrain) and write CSVs and a Markdown report."""
    from ..bench import print_report, run_benchmark

    result = run_benchmark(config, out, resume=resume, progress=progress)
    print_report(result, console)
    console.print(f"wrote {', '.join(str(p) for p in result.files.values())}", highlight=False)
    if result.errors:
        raise OblivioError(f"{len(result.errors)} benchmark cell(s) failed (listed above as 'failed ...'); "
                           f"the report marks them; fix and rerun (finished cells are reused)")
