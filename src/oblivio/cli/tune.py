"""``oblivio tune``: tune one method's options for one scenario of a benchmark config (Optuna, resumable)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .app import DEVICE_HELP, app, console, default_threads, use_threads
from .ray_options import executor_from_options, gpus_per_task, ray_address, ray_flag


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command()
def tune(
    config: Path = typer.Option(..., "--config", "-c", help="benchmark YAML (dataset, model, recipe, scenarios)"),
    method: str = typer.Option(..., "--method", "-m", help="method to tune (see `oblivio methods`)"),
    scenario: str = typer.Option(..., "--scenario", "-s", help="a scenario name of the config"),
    trials: int = typer.Option(20, "--trials", "-n", help="trial budget, counting trials already in the study"),
    seed: Optional[int] = typer.Option(None, help="split/validation/sampler seed (default: the config's first seed)"),
    study: str = typer.Option("runs/tune/study.db", help="SQLite study file, or an Optuna storage URL "
                                                         "(postgresql://... for a Ray cluster); reruns resume from it"),
    ray: bool = ray_flag(),
    ray_address_: Optional[str] = ray_address(),
    gpus: Optional[float] = gpus_per_task(),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP + " (default: the config's device, else auto)"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: the config's threads, "
                                          f"else {default_threads()})"),
) -> None:
    """Tune a method on a validation request (another forget set of the same kind), scored by Avg. Gap to its retrain."""
    from ..tune import tune as run_tune

    if threads is not None:
        use_threads(threads)

    def show(row: dict) -> None:
        value = "failed: " + (row.get("error") or "?") if row["state"] != "COMPLETE" else f"Avg. Gap {row['value']:.3f}"
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in row["params"].items())
        console.print(f"trial {row['number']}: {value}  ({params})", highlight=False)

    with executor_from_options(ray, ray_address_, gpus) as executor:  # --ray: trials in parallel, one shared study
        result = run_tune(config, method, scenario, trials, seed=seed, study=study, progress=show, executor=executor,
                          device=device, threads=threads)
    console.print(f"validation request: {result.validation}", highlight=False)
    table = Table(title=f"{method} on {scenario} (seed {result.seed}): {len(result.trials)} trials, "
                        f"{result.ran} run now, {result.seconds:.1f} s")
    for column in ("trial", "state", "Avg. Gap", "options"):
        table.add_column(column, justify="right" if column in ("trial", "Avg. Gap") else "left")
    for row in result.trials:
        table.add_row(str(row["number"]) + (" (defaults)" if row["number"] == result.default_number else ""), row["state"],
                      "-" if row["value"] is None else f"{row['value']:.3f}",
                      ", ".join(f"{k}={_fmt(v)}" for k, v in row["params"].items()))
    console.print(table)
    defaults = "-" if result.default_value is None else f"{result.default_value:.3f}"
    sets = [f"  --set {k}={v}" for k, v in result.best_params.items()]
    console.print(f"best Avg. Gap {result.best_value:.3f} (defaults {defaults}); its options:\n"
                  + " \\\n".join(sets), highlight=False, soft_wrap=True)  # one option a line: copy-paste whole
    console.print(f"study {result.study_name!r}\nin {result.storage}", highlight=False, soft_wrap=True)
