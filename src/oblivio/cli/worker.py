"""``oblivio worker``: process pending deletion requests as a service, beside ``oblivio serve``.

Each round the worker first resumes a run whose worker is gone (its lease ran out, or its process
on this host is dead), else schedules a batch for a model whose pending requests reach
``--batch-size`` or whose oldest request waited ``--max-wait`` seconds; it unlearns, audits and
closes the batch, so a filer sees the request reach ``closed`` and fetches its certificate through
the API. Any number of workers may run against one database: a run is claimed by one at a time.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from ..errors import OblivioError
from .app import app, console
from .forget import parse_options
from .requests import DB_HELP, db_url, plain


@app.command()
def worker(
    method: str = typer.Option("dm", help="unlearning method of new batches (a resumed run keeps its own)"),
    set_: list[str] = typer.Option([], "--set", help="method option key=value (repeatable)"),
    seed: int = typer.Option(0, help="seed of the unlearning runs and audits"),
    out_dir: Optional[Path] = typer.Option(None, help="folder for new checkpoints and audits (default: beside each input)"),
    batch_size: int = typer.Option(1, min=1, help="start a batch once a model has this many pending requests ..."),
    max_wait: float = typer.Option(0.0, min=0.0, help="... or once its oldest pending request waited this many seconds"),
    poll: float = typer.Option(2.0, min=0.05, help="seconds between looks for work when idle"),
    lease: float = typer.Option(60.0, min=1.0, help="seconds a claim lasts without renewal (renewed every third)"),
    once: bool = typer.Option(False, "--once", help="process what is ready, then exit"),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
) -> None:
    """Claim pending requests from the ledger, unlearn and audit them as batches, and close them."""
    from ..ledger.db import get_engine
    from ..ledger.workflow import work_once, worker_name
    from ..methods import get_method

    options = parse_options(set_)
    get_method(method, **options)  # unknown method or option: refuse before claiming anything
    db = db_url(db)
    get_engine(db)
    name = worker_name()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())  # finish the batch in hand, then exit

    def log(message: str) -> None:
        console.print(Text(f"[{name}] {plain(message)}"), highlight=False)

    log(f"worker started: method {method}, batch size {batch_size}, max wait {max_wait:g} s, lease {lease:g} s")
    while not stop.is_set():
        run = work_once(db, method=method, options=options, seed=seed, out_dir=out_dir, batch_size=batch_size,
                        max_wait_s=max_wait, worker=name, lease_s=lease, log=log)
        if run is not None:
            log(f"run {run['id']} {run['status']}" + (f": {run['error']}" if run.get("error") else "")
                + (f", verdict {run['verdict']}" if run.get("verdict") else ""))
            continue
        if once:
            break
        stop.wait(poll)
    log("worker stopped")


__all__ = ["worker", "OblivioError"]
