"""``oblivio requests``: file deletion requests, process them as one batch, export deletion certificates.

The ledger lives in a database: ``--db`` (a SQLite file, or a SQLAlchemy URL without a
password), else ``$OBLIVIO_DB_URL``, else the file ``$OBLIVIO_DB_URL_FILE`` names, else
``oblivio.db`` in the working directory. SQLAlchemy and Alembic are imported only when one of
these commands runs. Text that filers wrote (references, reasons) is printed as plain text:
never read as Rich markup, control characters shown escaped.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..errors import OblivioError
from .app import app, console
from .forget import parse_ints, parse_options

requests_app = typer.Typer(help="Deletion requests as records: add, list, show, process, export.", no_args_is_help=True)
app.add_typer(requests_app, name="requests")

DB_HELP = ("ledger database: SQLite file or SQLAlchemy URL without a password (default $OBLIVIO_DB_URL, "
           "else the URL in the file $OBLIVIO_DB_URL_FILE, else ./oblivio.db)")


def db_url(db: Optional[str]) -> Optional[str]:
    """``--db``, refused when it carries a password (the process list shows command lines to every user)."""
    from ..ledger.db import check_cli_url

    return check_cli_url(db)


def plain(value: object) -> str:
    """User text made safe for a terminal: control and other non-printable characters shown escaped."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def say(*parts: object) -> None:
    """Print ``parts`` as plain text (no Rich markup is interpreted in them)."""
    console.print(Text("".join(plain(p) for p in parts)), highlight=False)


@requests_app.command("register")
def register(
    checkpoint: Path = typer.Option(..., help="checkpoint written by 'oblivio train' (.safetensors)"),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
) -> None:
    """Record a checkpoint as a model version, so the API can take requests for it by its weights' SHA-256."""
    from ..ledger.workflow import register_model

    v = register_model(checkpoint, db=db_url(db))
    say(f"model version {v['id']}: weights sha256 {v['weights_sha256']} ({v['checkpoint']})")


@requests_app.command("add")
def add(
    ref: str = typer.Option(..., "--ref", help="your external reference (ticket id); filing it again changes nothing"),
    checkpoint: Path = typer.Option(..., help="the model the samples were trained into (.safetensors)"),
    scenario: Optional[str] = typer.Option(None, help="random (samples by --indices), class (--classes), backdoor, or "
                                           "author (a language model: --author); default: inferred from the flags"),
    indices: Optional[str] = typer.Option(None, help="random: indices into the dataset's training set, e.g. 5,17,40"),
    classes: Optional[str] = typer.Option(None, help="class: classes to forget, e.g. 3 or 3,5"),
    author: Optional[List[str]] = typer.Option(None, "--author", help="author: an author of a language model's corpus (repeatable)"),
    reason: Optional[str] = typer.Option(None, help="why (kept in the record and the certificate)"),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
) -> None:
    """File a deletion request: the samples are checked against the model's training data and stored with content hashes."""
    from ..ledger.workflow import add_request

    if scenario is None:
        scenario = "author" if author else "class" if classes else "random"
    request, created = add_request(
        ref, checkpoint=checkpoint, scenario=scenario, indices=parse_ints(indices, "--indices") if indices else None,
        classes=parse_ints(classes, "--classes") if classes else None, authors=author or None, reason=reason,
        db=db_url(db),
    )
    word = "filed" if created else "already filed"
    say(f"request {request['id']} ({request['external_ref']}) {word}: {request['samples']} sample(s), status {request['status']}")


@requests_app.command("list")
def list_(
    status: Optional[str] = typer.Option(None, help="only requests in this status"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
) -> None:
    """List requests, oldest first."""
    from ..ledger.workflow import list_requests

    rows = list_requests(status, db=db_url(db))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} request(s)")
    for col in ("id", "reference", "status", "scenario", "samples", "model", "run", "received"):
        table.add_column(col)
    for r in rows:
        sc = r["scenario"]
        what = sc["kind"] + (f" {sc['classes']}" if sc["kind"] == "class" else f" {', '.join(sc['authors'])}"
                             if sc["kind"] == "author" else "")
        cells = (r["id"], r["external_ref"], r["status"], what, r["samples"], r["model_version"], r["run_id"] or "-",
                 r["received_at"][:19])
        table.add_row(*(Text(plain(c)) for c in cells))  # Text: never parsed as markup
    console.print(table)


def _one(ref: Optional[str], request_id: Optional[int]) -> None:
    if (ref is None) == (request_id is None):
        raise OblivioError("name the request by its external reference or by --id, not both")


@requests_app.command("show")
def show(
    ref: Optional[str] = typer.Argument(None, help="the request's external reference"),
    request_id: Optional[int] = typer.Option(None, "--id", help="the request's id instead (ids and references never mix)"),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
) -> None:
    """A request with its samples and status history, as JSON."""
    from ..ledger.workflow import get_request

    _one(ref, request_id)
    print(json.dumps(get_request(ref, db=db_url(db), request_id=request_id), indent=2))


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
                      retry_failed=retry_failed, db=db_url(db), log=lambda m: console.print(Text(plain(m), style="dim")))
    if run is None:
        console.print("no pending requests for this model")
        return
    style = {"closed": "bold green", "failed": "bold red"}.get(run["status"], "bold")
    console.print(Text.assemble(f"run {run['id']} ", (run["status"], style),
                                plain(f": {len(run['requests'])} request(s), {run['method']} {run['seconds']:.2f} s, "
                                      f"verdict {run['verdict']}: {run['headline']}")), highlight=False)
    say(f"wrote {run['checkpoint']} and {run['report']}/")
    if run["output_version"] == run["input_version"]:
        console.print("note: the weights did not change (the method found the samples already indistinguishable "
                      "from unseen data); the audit above measured the same", highlight=False)
    if run["status"] == "failed":
        raise OblivioError(f"run {run['id']} failed: {run['error']}")


@requests_app.command("export")
def export(
    ref: Optional[str] = typer.Argument(None, help="the request's external reference"),
    request_id: Optional[int] = typer.Option(None, "--id", help="the request's id instead"),
    out: Optional[Path] = typer.Option(None, help="certificate file (default: certificate-<id>.json)"),
    root: Optional[Path] = typer.Option(None, help="folder the certificate's file paths are relative to (default: here)"),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
) -> None:
    """Write a JSON deletion certificate for a closed request (hashes a third party can check)."""
    from ..ledger.workflow import certificate, write_certificate

    _one(ref, request_id)
    db = db_url(db)
    if out is None:
        out = Path(f"certificate-{certificate(ref, db=db, request_id=request_id)['request']['id']}.json")
    path = write_certificate(ref, out, db=db, request_id=request_id, root=root)
    say(f"wrote {path}")
