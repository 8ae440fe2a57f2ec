"""``oblivio serve``: the ledger's HTTP API (FastAPI + uvicorn), behind a bearer token."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional

import typer

from ..errors import OblivioError
from .app import app, console

TOKEN_ENV = "OBLIVIO_API_TOKEN"
LOCALHOST = "127.0.0.1"


def read_token(token_file: Optional[Path]) -> str | None:
    """The API token from ``token_file`` or ``$OBLIVIO_API_TOKEN`` (None if neither is set)."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as e:
            raise OblivioError(f"cannot read --token-file {token_file}: {e.strerror}") from None
        if not token:
            raise OblivioError(f"--token-file {token_file} is empty")
        if os.name == "posix" and token_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            console.print(f"[yellow]warning:[/] {token_file} is readable by other users; chmod 600 it", highlight=False)
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None


def check_token(token: str | None, host: str, insecure_local: bool) -> None:
    """Refuse to serve without a token, except on 127.0.0.1 with ``--insecure-local``; refuse weak tokens."""
    if insecure_local and host != LOCALHOST:
        raise OblivioError(f"--insecure-local only works with --host {LOCALHOST}, not {host}")
    if token is None and not insecure_local:
        raise OblivioError(f"no API token: set ${TOKEN_ENV} or pass --token-file (or, on {LOCALHOST} only, --insecure-local)")
    if token is not None and len(token) < 16:
        raise OblivioError("the API token is shorter than 16 characters; use a random one, e.g. 'openssl rand -hex 32'")


@app.command()
def serve(
    host: str = typer.Option(LOCALHOST, help="address to bind"),
    port: int = typer.Option(8000, help="port to bind"),
    db: Optional[str] = typer.Option(None, help="ledger database: SQLAlchemy URL or SQLite file (default $OBLIVIO_DB_URL, else ./oblivio.db)"),
    token_file: Optional[Path] = typer.Option(None, help=f"file holding the bearer token (default ${TOKEN_ENV})"),
    insecure_local: bool = typer.Option(False, help=f"serve without a token (only with --host {LOCALHOST})"),
    log_level: str = typer.Option("info", help="uvicorn log level"),
) -> None:
    """Serve the request ledger over HTTP: file requests, read status and history, download audit reports."""
    token = read_token(token_file)
    check_token(token, host, insecure_local)
    import uvicorn

    from ..api import create_app
    from ..ledger.db import get_engine

    get_engine(db)  # a bad URL or unreachable database fails here, before binding
    if token is None:
        console.print(f"[yellow]warning:[/] serving without authentication on {host}:{port}", highlight=False)
    uvicorn.run(create_app(db=db, token=token), host=host, port=port, log_level=log_level)
