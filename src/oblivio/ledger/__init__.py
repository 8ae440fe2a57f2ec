"""The deletion-request ledger: requests, model versions, unlearning runs and audits in a database.

    from oblivio.ledger import add_request, process, certificate
    add_request("ticket-42", checkpoint="runs/model.safetensors", indices=[5, 17], reason="GDPR art. 17")
    process("runs/model.safetensors", method="dm")        # -> runs/model.run-1.safetensors, its audit, the records
    certificate("ticket-42")                              # JSON-able deletion certificate

The database is ``db=`` (SQLAlchemy URL or SQLite file), else ``$OBLIVIO_DB_URL``, else
``./oblivio.db``. Importing this package imports SQLAlchemy and Alembic; ``import oblivio`` does not.
"""
from .db import get_engine, resolve_url, session_scope
from .workflow import (
    CERTIFICATE_FORMAT,
    Conflict,
    NotFound,
    add_request,
    audit_files,
    certificate,
    get_request,
    list_requests,
    process,
    register_model,
    write_certificate,
)

__all__ = [
    "CERTIFICATE_FORMAT", "Conflict", "NotFound", "add_request", "audit_files", "certificate", "get_engine",
    "get_request", "list_requests", "process", "register_model", "resolve_url", "session_scope", "write_certificate",
]
