"""The typer application every command module registers on, and shared CLI helpers."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

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
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class StepLog:
    """Progress of a long command on stderr: one timestamped line per step (readable in logs), and a
    spinner while a step runs when stderr is a terminal, so the command never looks hung."""

    def __init__(self, out: Console | None = None):
        self.out = out or err_console
        self.start = time.perf_counter()

    def step(self, text: str) -> None:
        self.out.print(f"[dim][{time.perf_counter() - self.start:6.1f}s][/] {text}")

    @contextmanager
    def waiting(self, text: str) -> Iterator[None]:
        began = time.perf_counter()
        if self.out.is_terminal:
            with self.out.status(f"{text}...", spinner="dots"):
                yield
        else:
            yield
        self.step(f"{text}: done in {time.perf_counter() - began:.1f} s")

DEVICE_HELP = "where to compute: auto (CUDA when present), cpu, cuda or cuda:N"
AMP_HELP = "mixed precision: bf16 (autocast on the device); off by default"
DETERMINISTIC_HELP = "deterministic CUDA kernels where PyTorch has them (slower; CPU runs are always deterministic)"


def describe(device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H100 ...)``: the device and, for a GPU, its name."""
    from ..device import device_info

    info = device_info(device)
    return f"{info['device']} ({info['gpu']})" if info.get("gpu") else info["device"]


def percent_table(title: str, rows: dict[str, dict[str, float]], columns: list[str] | None = None) -> Table:
    """A rich table of rows -> {metric: value in [0,1]} shown as percentages."""
    columns = columns or sorted({c for r in rows.values() for c in r})
    table = Table(title=title)
    table.add_column("model", overflow="fold")
    for c in columns:
        table.add_column(c, justify="right", no_wrap=True)
    for name, values in rows.items():
        table.add_row(name, *[f"{100 * values[c]:.2f}" if c in values else "-" for c in columns])
    return table
