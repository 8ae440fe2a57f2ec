"""``oblivio methods``: the registered unlearning methods, their papers and default options."""
from __future__ import annotations

import dataclasses

from rich.table import Table

from ..methods import available_methods, get_method
from .app import app, console


@app.command()
def methods() -> None:
    """List the unlearning methods with their source and default options (set them with --set key=value)."""
    table = Table(title="unlearning methods")
    for column in ("name", "needs", "paper", "defaults"):
        table.add_column(column, overflow="fold")
    for name in available_methods():
        method = get_method(name)
        defaults = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(method.config).items())
        table.add_row(name, ", ".join(sorted(method.requires)) or "-", method.paper, defaults)
    console.print(table)
