"""``oblivio serve``: the ledger's HTTP API (FastAPI + uvicorn), behind a bearer token.

The token comes from ``--token-file`` (readable by its owner only) or ``$OBLIVIO_API_TOKEN`` and
must carry at least 128 bits of entropy (``oblivio serve --new-token FILE`` writes one). The
database URL comes from ``$OBLIVIO_DB_URL`` / ``$OBLIVIO_DB_URL_FILE`` (or ``--db`` without a
password), never from a command line that would show a password in the process list.
"""
from __future__ import annotations

import math
import os
import secrets
import stat
from collections import Counter
from pathlib import Path
from typing import Optional

import typer

from ..errors import OblivioError
from .app import app, console
from .requests import DB_HELP, db_url, plain

TOKEN_ENV = "OBLIVIO_API_TOKEN"
LOCALHOST = "127.0.0.1"
MIN_TOKEN_BITS = 128
MIN_TOKEN_CHARS = 32


def read_token(token_file: Optional[Path]) -> str | None:
    """The API token from ``token_file`` or ``$OBLIVIO_API_TOKEN`` (None if neither is set)."""
    if token_file is not None:
        try:
            fd = os.open(token_file, os.O_RDONLY)
        except OSError as e:
            raise OblivioError(f"cannot read --token-file {token_file}: {e.strerror}") from None
        with os.fdopen(fd) as f:
            if os.name == "posix" and os.fstat(f.fileno()).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise OblivioError(f"--token-file {token_file} is readable by other users; chmod 600 it (and make a new token)")
            token = f.read().strip()
        if not token:
            raise OblivioError(f"--token-file {token_file} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None


def token_bits(token: str) -> float:
    """An upper estimate of a token's entropy: its length times the Shannon entropy of its characters."""
    counts = Counter(token)
    per_char = -sum(n / len(token) * math.log2(n / len(token)) for n in counts.values())
    return per_char * len(token)


def check_token(token: str | None, host: str, insecure_local: bool) -> None:
    """Refuse to serve without a token, except on 127.0.0.1 with ``--insecure-local``; refuse weak tokens."""
    if insecure_local and host != LOCALHOST:
        raise OblivioError(f"--insecure-local only works with --host {LOCALHOST}, not {host}")
    if token is None and not insecure_local:
        raise OblivioError(f"no API token: set ${TOKEN_ENV} or pass --token-file (or, on {LOCALHOST} only, --insecure-local)")
    if token is not None and (len(token) < MIN_TOKEN_CHARS or token_bits(token) < MIN_TOKEN_BITS or not token.isprintable()):
        raise OblivioError(f"the API token is too weak (shorter than {MIN_TOKEN_CHARS} characters or under {MIN_TOKEN_BITS} "
                           "bits of entropy); make one with 'oblivio serve --new-token FILE' or 'openssl rand -hex 32'")


def new_token(path: Path) -> None:
    """Write a fresh random token (256 bits, URL-safe) to ``path``, created readable by its owner only."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise OblivioError(f"--new-token {path} exists; remove it first or choose another file") from None
    except OSError as e:
        raise OblivioError(f"cannot create --new-token {path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")


@app.command()
def serve(
    host: str = typer.Option(LOCALHOST, help="address to bind"),
    port: int = typer.Option(8000, help="port to bind (0..65535; 0 = any free port)"),
    db: Optional[str] = typer.Option(None, help=DB_HELP),
    token_file: Optional[Path] = typer.Option(None, help=f"file holding the bearer token, mode 600 (default ${TOKEN_ENV})"),
    new_token_file: Optional[Path] = typer.Option(None, "--new-token", help="write a new random token to this file (mode 600) and exit"),
    insecure_local: bool = typer.Option(False, help=f"serve without a token (only with --host {LOCALHOST})"),
    workers: int = typer.Option(1, min=1, max=64, help="server processes (more use more cores)"),
    max_body: int = typer.Option(1 << 20, min=1024, help="largest request body in bytes (413 above it)"),
    root: Optional[Path] = typer.Option(None, help="folder the certificates' file paths are relative to (default: here)"),
    log_level: str = typer.Option("info", help="uvicorn log level"),
) -> None:
    """Serve the request ledger over HTTP: file requests, read status and history, download audit reports."""
    if not 0 <= port <= 65535:  # checked here, so a bad port is one 'error:' line like every other bad input
        raise OblivioError(f"--port must be between 0 and 65535, got {port}")
    if new_token_file is not None:
        new_token(new_token_file)
        console.print(f"wrote a new API token to {plain(new_token_file)}; serve with --token-file {plain(new_token_file)}",
                      highlight=False, markup=False)
        return
    token = read_token(token_file)
    check_token(token, host, insecure_local)
    import uvicorn

    from ..api import create_app
    from ..ledger.db import DB_ENV, get_engine, resolve_url

    db = db_url(db)
    get_engine(db)  # a bad URL or unreachable database fails here, before binding
    if token is None:
        console.print(f"warning: serving without authentication on {host}:{port}", highlight=False, markup=False)
    if workers > 1 and resolve_url(db).startswith("sqlite"):
        console.print("note: SQLite takes one writer at a time; serving from one process (--workers helps PostgreSQL)",
                      highlight=False, markup=False)
        workers = 1
    if workers == 1:
        uvicorn.run(create_app(db=db, token=token, max_body=max_body, root=str(root) if root else None),
                    host=host, port=port, log_level=log_level)
        return
    # several processes: each builds the app from the environment (never from a command line)
    os.environ[DB_ENV] = resolve_url(db)
    os.environ.pop(TOKEN_ENV, None)
    if token is not None:
        os.environ[TOKEN_ENV] = token
    os.environ["OBLIVIO_API_MAX_BODY"] = str(max_body)
    if root is not None:
        os.environ["OBLIVIO_ROOT"] = str(root)
    uvicorn.run("oblivio.api:app_from_env", factory=True, host=host, port=port, workers=workers, log_level=log_level)
