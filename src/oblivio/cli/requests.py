"""``oblivio requests``: file deletion requests, process them as one batch, export deletion certificates.

The ledger lives in a database: ``--db`` (a SQLAlchemy URL or a SQLite file), else
``$OBLIVIO_DB_URL``, else ``oblivio.db`` in the working directory. SQLAlchemy and Alembic are
imported only when one of these commands runs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import OblivioError
from .app import app, console
from .forget import parse_ints, parse_options

requests_app = typer.Typer(help="Deletion requests as records: add, list, show, process, export.", no_args_is_help=True)
app.add_typer(requests_app, name="requests")

DB_HELP = "ledger database: SQLAlchemy URL or SQLite file (default $OBLIVIO_DB_URL, else ./oblivio.db)"


@requests_app.command("register")
def register(
    checkpoint: Path = typer.Option(..., help="checkpoint written by 'oblivio train' (.safetensors)"),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
) -> None:
    """Record a checkpoint as a model version, so the API can take requests for it by its weights' SHA-256."""
    from ..ledger.workflow import register_model

    v = register_model(checkpoint, db=db)
    console.print(f"model version {v['id']}: weights sha256 {v['weights_sha256']} ({v['checkpoint']})", highlight=False)


@requests_app.command("add")
def add(
    ref: str = typer.Option(..., "--ref", help="your external reference (ticket id); filing it again changes nothing"),
    checkpoint: Path = typer.Option(..., help="the model the samples were trained into (.safetensors)"),
    scenario: str = typer.Option("random", help="random (samples by --indices), class (--classes) or backdoor"),
    indices: Optional[str] = typer.Option(None, help="random: indices into the dataset's training set, e.g. 5,17,40"),
    classes: Optional[str] = typer.Option(None, help="class: classes to forget, e.g. 3 or 3,5"),
    reason: Optional[str] = typer.Option(None, help="why (kept in the record and the certificate)"),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
) -> None:
    """File a deletion request: the samples are checked against the model's training data and stored with content hashes."""
    from ..ledger.workflow import add_request

    request, created = add_request(
        ref, checkpoint=checkpoint, scenario=scenario, indices=parse_ints(indices, "--indices") if indices else None,
        classes=parse_ints(classes, "--classes") if classes else None, reason=reason, db=db,
    )
    word = "filed" if created else "already filed"
    console.print(f"request {request['id']} ({request['external_ref']}) {word}: {request['samples']} sample(s), "
                  f"status {request['status']}", highlight=False)


@requests_app.command("list")
def list_(
    status: Optional[str] = typer.Option(None, help="only requests in this status"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
) -> None:
    """List requests, oldest first."""
    from ..ledger.models import REQUEST_STATES
    from ..ledger.workflow import list_requests

    if status is not None and status not in REQUEST_STATES:
        raise OblivioError(f"unknown status {status!r}; choose one of {', '.join(REQUEST_STATES)}")
    rows = list_requests(status, db=db)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} request(s)")
    for col in ("id", "reference", "status", "scenario", "samples", "model", "run", "received"):
        table.add_column(col)
    for r in rows:
        sc = r["scenario"]
        what = sc["kind"] + (f" {sc['classes']}" if sc["kind"] == "class" else "")
        table.add_row(str(r["id"]), r["external_ref"], r["status"], what, str(r["samples"]), str(r["model_version"]),
                      str(r["run_id"] or "-"), r["received_at"][:19])
    console.print(table)


@requests_app.command("show")
def show(
    key: str = typer.Argument(..., help="request id or external reference"),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
) -> None:
    """A request with its samples and status history, as JSON."""
    from ..ledger.workflow import get_request

    print(json.dumps(get_request(key, db=db), indent=2))


@requests_app.command("process")
def process(
    checkpoint: Path = typer.Option(..., help="model whose pending requests to unlearn (never modified)"),
    method: str = typer.Option("dm", help="unlearning method (see 'oblivio methods')"),
    set_: list[str] = typer.Option([], "--set", help="method option key=value (repeatable)"),
    seed: int = typer.Option(0, help="seed of the unlearning run and the audit"),
    out_dir: Optional[Path] = typer.Option(None, help="folder for the new checkpoint and audit (default: beside the input)"),
    retry_failed: bool = typer.Option(False, help="put failed requests for this model back in the queue first"),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
) -> None:
    """Unlearn every pending request for a model as one batch, audit the result and record everything."""
    from ..ledger.workflow import process as run_process

    run = run_process(checkpoint, method=method, options=parse_options(set_), seed=seed, out_dir=out_dir,
                      retry_failed=retry_failed, db=db, log=lambda m: console.print(f"[dim]{m}[/]", highlight=False))
    if run is None:
        console.print("no pending requests for this model")
        return
    style = {"closed": "bold green", "failed": "bold red"}.get(run["status"], "bold")
    console.print(f"run {run['id']} [{style}]{run['status']}[/]: {len(run['requests'])} request(s), {run['method']} "
                  f"{run['seconds']:.2f} s, verdict {run['verdict']}: {run['headline']}", highlight=False)
    console.print(f"wrote {run['checkpoint']} and {run['report']}/", highlight=False)
    if run["output_version"] == run["input_version"]:
        console.print("note: the weights did not change (the method found the samples already indistinguishable "
                      "from unseen data); the audit above measured the same", highlight=False)
    if run["status"] == "failed":
        raise OblivioError(f"run {run['id']} failed: {run['error']}")


@requests_app.command("export")
def export(
    key: str = typer.Argument(..., help="request id or external reference"),
    out: Optional[Path] = typer.Option(None, help="certificate file (default: certificate-<id>.json)"),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
) -> None:
    """Write a JSON deletion certificate for a closed request (hashes a third party can check)."""
    from ..ledger.workflow import certificate, write_certificate

    if out is None:
        out = Path(f"certificate-{certificate(key, db=db)['request']['id']}.json")
    path = write_certificate(key, out, db=db)
    console.print(f"wrote {path}", highlight=False)
