"""``oblivio bench``: run a benchmark grid from a YAML config (resumable) and print its tables."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import OblivioError
from .app import AMP_HELP, DETERMINISTIC_HELP, DEVICE_HELP, app, console, default_threads, use_threads
from .ray_options import executor_from_options, gpus_per_task, ray_address, ray_flag


@app.command()
def bench(
    config: Path = typer.Option(..., "--config", "-c", help="benchmark YAML (see benchmarks/digits.yaml)"),
    out: Optional[Path] = typer.Option(None, help="output dir (default: the config's 'output' or runs/bench/<name>)"),
    resume: bool = typer.Option(True, help="reuse finished cells cached in the output dir"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    ray: bool = ray_flag(),
    ray_address_: Optional[str] = ray_address(),
    gpus: Optional[float] = gpus_per_task(),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP + " (default: the config's device, else auto)"),
    amp: Optional[str] = typer.Option(None, help=AMP_HELP + " (default: the config's amp)"),
    deterministic: Optional[bool] = typer.Option(None, help=DETERMINISTIC_HELP + " (default: the config's)"),
    population: Optional[int] = typer.Option(None, help="members per row: N originals, N retrains, each method on "
                                             "every original, scored per example (default: the config's)"),
    strict: bool = typer.Option(False, help="exit 2 also when a method forgot nothing (it is a result, not a failure)"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: the config's threads, "
                                          f"else {default_threads()}); recorded in the report's header"),
) -> None:
    """Run methods x scenarios x seeds (plus original and retrain) and write CSVs and a Markdown report.

    With --ray the cells run as Ray tasks; every worker reads and writes the cache in --out, so on a
    cluster --out must be on a filesystem all nodes share. The numbers are the same as a serial run.
    """
    from ..bench import print_report, run_benchmark

    if threads is not None:
        use_threads(threads)
    if _is_lm_config(config):  # 'task: lm': the language-model benchmark (oblivio lm bench)
        from .lm import bench as lm_bench

        lm_bench(config, out if out is not None else Path("runs/bench") / config.stem, threads)
        return

    with executor_from_options(ray, ray_address_, gpus) as executor:
        result = run_benchmark(config, out, resume=resume, progress=progress, executor=executor, device=device,
                               amp=amp, deterministic=deterministic, population=population,
                               threads=threads)
    print_report(result, console)
    console.print(f"wrote {', '.join(str(p) for p in result.files.values())}", highlight=False)
    if result.errors:
        refused = sum(bool(r.get("refused")) for r in result.errors)
        what = f"{len(result.errors)} benchmark cell(s) failed" + (f" ({refused} forgot nothing)" if refused else "")
        raise OblivioError(f"{what}, listed above as 'failed ...'; the report marks them; fix and rerun "
                           "(finished cells are reused)")
    if strict and result.forgot_nothing:
        raise OblivioError(f"--strict: {len(result.forgot_nothing)} cell(s) forgot nothing, listed above as "
                           "'forgot nothing ...'")


def _is_lm_config(config: Path) -> bool:
    """True when a bench YAML declares ``task: lm`` (a malformed file is left to the classifier loader's errors)."""
    import yaml

    from ..yaml_text import load_yaml

    try:
        raw = load_yaml(config.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and raw.get("task") == "lm"
