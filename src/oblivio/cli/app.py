"""The typer application every command module registers on, and shared CLI helpers."""
from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="oblivio: make trained classifiers forget samples, classes and backdoors, and prove it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()


def percent_table(title: str, rows: dict[str, dict[str, float]], columns: list[str] | None = None) -> Table:
    """A rich table of rows -> {metric: value in [0,1]} shown as percentages."""
    columns = columns or sorted({c for r in rows.values() for c in r})
    table = Table(title=title)
    table.add_column("model")
    for c in columns:
        table.add_column(c, justify="right")
    for name, values in rows.items():
        table.add_row(name, *[f"{100 * values[c]:.2f}" if c in values else "-" for c in columns])
    return table
