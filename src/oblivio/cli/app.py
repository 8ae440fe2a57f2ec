"""The typer application every command module registers on, and shared CLI helpers."""
from __future__ import annotations

import os
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
    rich_markup_mode=None,  # plain click help: wraps words at the terminal width, never truncates a flag name
)
def _help_wraps_whole_words() -> None:
    """Click's help wraps at hyphens ("third-" / "party"); make it wrap only at spaces. Click builds its wrapper
    from this module attribute at each call; a click without it keeps its own wrapping."""
    try:
        from typer._click import _textwrap
    except ImportError:  # pragma: no cover - another typer layout
        return
    base = _textwrap.TextWrapper

    class WholeWords(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("break_on_hyphens", False)
            super().__init__(*args, **kwargs)

    if not getattr(base, "_oblivio", False):
        WholeWords._oblivio = True
        _textwrap.TextWrapper = WholeWords


_help_wraps_whole_words()
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

MAX_THREADS = 1024


def default_threads() -> int:
    """Torch threads when ``--threads`` is not given: half the CPUs (at least 1, at most 8). Other work on a
    shared machine and hyper-threads make more threads slower and erratic (the digits demo took 12-16 s with
    torch's default on a busy 2-core machine, 7 s with one thread)."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def threads_option():
    """The ``--threads`` option every computing command takes."""
    return typer.Option(None, "--threads", help=f"torch CPU threads (default: {default_threads()}, half this "
                                                "machine's CPUs, at most 8)")


def use_threads(threads: int | None) -> int:
    """Set torch's CPU thread count (``None``: ``default_threads()``) and return it; bad counts are one-line errors."""
    import torch

    from ..errors import OblivioError

    if threads is None:
        threads = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise OblivioError(f"--threads must be an integer from 1 to {MAX_THREADS}, got {threads!r}")
    torch.set_num_threads(threads)
    return threads


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
