"""HTTP API for the request ledger (FastAPI): file a request, read its status and history, download its audit.

    from oblivio.api import create_app
    app = create_app(db="sqlite:///oblivio.db", token="...")   # serve with uvicorn; OpenAPI at /openapi.json

Limits come before work: a guard in front of the routes checks the bearer token (401 when missing,
403 when wrong) before any body is read; FastAPI's ``max_body_size`` refuses a body over
``max_body`` bytes while reading it (413); the guard turns anything unforeseen into a JSON 500
without dropping the keep-alive connection.
Bodies are validated by strict schemas whose bounds match the database columns, so bad input is a
documented 4xx with ``{detail, errors}``; error messages never carry a server path or a traceback.
Requests are read by id (``/requests/{id}``) or by external reference (``/requests/by-ref/{ref}``):
two namespaces, so a reference of digits never reads someone else's request.
"""
from __future__ import annotations

import hmac
from contextlib import asynccontextmanager
import json
import logging
import os
import re
from typing import Annotated, Any, Literal, Optional

import anyio
from fastapi import FastAPI, HTTPException, Path, Query, Request as HttpRequest, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import body_limit

from . import __version__
from .errors import OblivioError
from .ledger.language import AUTHOR_PATTERN, MAX_AUTHOR_NAME, MAX_AUTHORS
from .ledger.limits import MAX_CLASSES, MAX_INDICES, MAX_INT, MAX_REASON, MAX_REF, REF_CHARS, REF_PATTERN, TEXT_PATTERN

log = logging.getLogger("oblivio.api")

THREADS = 8  # worker threads per server process
MAX_BODY = 1 << 20  # bytes; a request naming MAX_INDICES indices takes about 110 KB
PUBLIC = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
STATES = Literal["received", "scheduled", "unlearned", "audited", "closed", "failed"]
_PATH = re.compile(r"(?<![\w.~-])/[^\s'\",;)\]]+")


def redact(message: str) -> str:
    """``message`` with anything that looks like an absolute server path replaced by ``<path>``."""
    return _PATH.sub("<path>", message)


# ---------------------------------------------------------------- schemas


def _decimal(v: Any) -> Any:
    """Path and query integers: ASCII decimal digits only ('²' or '٣' or '1_0' or '+1' are not ids)."""
    if isinstance(v, str):
        if not (v.isascii() and v.isdigit() and len(v) <= 12):
            raise ValueError("must be a decimal integer of at most 10 digits")
        return int(v)
    return v


def _json_int(v: Any) -> Any:
    """Body integers: JSON integers written without a fraction or exponent. ``"5"``, ``true`` and ``5.0`` are
    refused (422): a client that sends 5.0 has a float where it meant an index, and the API says so rather
    than guess. JSON Schema would call 5.0 an integer, so the OpenAPI descriptions state this rule."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError("must be a JSON integer")
    return v


def _no_default(schema: dict) -> None:
    schema.pop("default", None)


def _distinct(schema: dict) -> None:
    schema.pop("default", None)
    schema["uniqueItems"] = True


Index = Annotated[int, Field(ge=0, le=MAX_INT), BeforeValidator(_json_int)]
VersionId = Annotated[int, Field(ge=1, le=MAX_INT), BeforeValidator(_json_int)]
Ref = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_REF, pattern=REF_PATTERN)]
AuthorName = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_AUTHOR_NAME, pattern=AUTHOR_PATTERN)]
Sha256 = Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9a-fA-F]{64}$")]
RequestId = Annotated[int, Path(ge=1, le=MAX_INT, description="the request's id"), BeforeValidator(_decimal)]
RefPath = Annotated[str, Path(min_length=1, max_length=MAX_REF, pattern=REF_PATTERN, description=f"external reference: {REF_CHARS}")]

# The cross-field rules, stated in the schema too (so a schema-valid body is never refused for its shape):
# exactly one of model_sha256 / model_version; random takes indices, class takes classes, author takes authors
# (a language model), backdoor none of them.
_RULES = {"allOf": [
    {"oneOf": [{"required": ["model_sha256"]}, {"required": ["model_version"]}]},
    {"oneOf": [
        {"properties": {"scenario": {"const": "random"}}, "required": ["indices"],
         "not": {"anyOf": [{"required": ["classes"]}, {"required": ["authors"]}]}},
        {"properties": {"scenario": {"const": "class"}}, "required": ["scenario", "classes"],
         "not": {"anyOf": [{"required": ["indices"]}, {"required": ["authors"]}]}},
        {"properties": {"scenario": {"const": "author"}}, "required": ["scenario", "authors"],
         "not": {"anyOf": [{"required": ["indices"]}, {"required": ["classes"]}]}},
        {"properties": {"scenario": {"const": "backdoor"}}, "required": ["scenario"],
         "not": {"anyOf": [{"required": ["indices"]}, {"required": ["classes"]}, {"required": ["authors"]}]}},
    ]},
]}


class RequestIn(BaseModel):
    """A deletion request. Name the model by ``model_sha256`` (its weights file) or ``model_version``; a random
    request names ``indices``, a class request ``classes``, an author request (a language model) ``authors``, a
    backdoor request none of them."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_RULES)

    external_ref: Ref = Field(..., description=f"your reference (ticket id): 1-{MAX_REF} characters, {REF_CHARS}, "
                                               "starting with a letter or digit; filing it again is idempotent")
    model_sha256: Sha256 = Field(None, description="SHA-256 of the model's .safetensors file", json_schema_extra=_no_default)
    model_version: VersionId = Field(None, description="the ledger's model version id (a JSON integer: 5, not 5.0)", json_schema_extra=_no_default)
    scenario: Literal["random", "class", "backdoor", "author"] = "random"
    indices: list[Index] = Field(None, min_length=1, max_length=MAX_INDICES, json_schema_extra=_distinct,
                                 description=f"random: distinct indices into the training set (at most {MAX_INDICES}; JSON integers: 5, not 5.0)")
    classes: list[Index] = Field(None, min_length=1, max_length=MAX_CLASSES, json_schema_extra=_distinct,
                                 description="class: distinct classes to forget (JSON integers)")
    authors: list[AuthorName] = Field(None, min_length=1, max_length=MAX_AUTHORS, json_schema_extra=_distinct,
                                      description="author: distinct authors of a language model's corpus to forget")
    reason: str = Field(None, max_length=MAX_REASON, pattern=TEXT_PATTERN, json_schema_extra=_no_default,
                        description="why (kept in the record and the certificate); no NUL or control characters but tab and newline")

    @model_validator(mode="after")
    def consistent(self) -> "RequestIn":
        if (self.model_sha256 is None) == (self.model_version is None):
            raise ValueError("give exactly one of model_sha256 and model_version")
        want = {"random": "indices", "class": "classes", "backdoor": None, "author": "authors"}[self.scenario]
        for name in ("indices", "classes", "authors"):
            if (getattr(self, name) is not None) != (name == want):
                raise ValueError(f"a {self.scenario} request " + (f"needs {name}" if name == want else f"takes no {name}"))
        for name in ("indices", "classes", "authors"):
            values = getattr(self, name)
            if values is not None and len(set(values)) != len(values):
                raise ValueError(f"{name} must be distinct")
        return self


class HistoryOut(BaseModel):
    status: str
    at: str
    note: Optional[str] = None


class RequestOut(BaseModel):
    id: int
    external_ref: str
    status: str
    error: Optional[str] = None
    scenario: dict
    reason: Optional[str] = None
    received_at: str
    model_version: int
    samples: int
    run_id: Optional[int] = None
    sample_ids: list[int] = []
    sample_hashes: list[str] = []
    history: list[HistoryOut] = []
    created: Optional[bool] = Field(None, description="on POST: false when the reference was already filed")


class ErrorOut(BaseModel):
    detail: str


class FieldError(BaseModel):
    field: str
    message: str


class ValidationErrorOut(BaseModel):
    detail: str
    errors: list[FieldError]


def _err(description: str) -> dict:
    return {"model": ErrorOut, "description": description}


AUTH = {401: _err("missing bearer token"), 403: _err("wrong token"), 413: _err("body larger than the server's limit"),
        422: {"model": ValidationErrorOut, "description": "invalid request: one message, and one entry per field"}}
READ = AUTH | {404: _err("no such request, or nothing to show yet")}


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "path", "query")]
    return ".".join(parts) or "body"


# ---------------------------------------------------------------- the guard in front of the routes

# what Starlette's body limit raises through the app (FastAPI's own middleware lets them pass the same way)
_BODY_LIMIT = tuple(c for c in (getattr(body_limit, "_RequestBodyTooLarge", None),
                                getattr(body_limit, "_RequestBodyLimitResponseSent", None)) if c)


class Guard:
    """ASGI middleware: the token checked before the body is read, a 405 that lists every method, no dropped connections."""

    def __init__(self, app, token: str | None, allowed=None):
        self.app, self.token = app, token.encode() if token is not None else None
        self.allowed = allowed  # path -> every method its routes take (for a 405's Allow header)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] == 405 and self.allowed is not None:  # one path, several routes: list them all
                    allow = ", ".join(self.allowed(scope["path"])).encode()
                    message = message | {"headers": [(k, v) for k, v in message["headers"] if k.lower() != b"allow"]
                                         + [(b"allow", allow)]}
            await send(message)

        async def reply(status: int, detail: str, headers: dict | None = None) -> None:
            body = json.dumps({"detail": detail}).encode()
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            hdrs += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
            await send({"type": "http.response.start", "status": status, "headers": hdrs})
            await send({"type": "http.response.body", "body": body})

        headers = dict(scope.get("headers") or [])
        if self.token is not None and scope.get("path") not in PUBLIC:
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not given.strip():
                return await reply(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
            if not hmac.compare_digest(given.strip(), self.token):
                return await reply(403, "invalid token")
        try:
            await self.app(scope, receive, tracked_send)
        except _BODY_LIMIT:
            raise  # answered 413 by the body limit outside
        except Exception:  # noqa: BLE001 - logged; the client gets a JSON 500 and keeps its connection
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await reply(500, "internal server error")


# ---------------------------------------------------------------- the app


def create_app(db: str | None = None, token: str | None = None, max_body: int = MAX_BODY, root: str | None = None) -> FastAPI:
    """The API over the ledger at ``db``; ``token`` None turns authentication off (local use only).

    ``max_body``: largest request body in bytes. ``root``: the folder certificate paths are relative to
    (default: the working directory).
    """
    from .ledger import workflow

    @asynccontextmanager
    async def lifespan(_app):
        # few threads: each request's work is short, and forty threads only queue on the GIL and the database
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        yield

    app = FastAPI(title="oblivio ledger API", version=__version__, max_body_size=max_body, lifespan=lifespan,
                  description="Deletion requests for unlearned models: file, track, and download audit reports and certificates. "
                              f"Request bodies are limited to {max_body} bytes.")
    bearer = HTTPBearer(auto_error=False, description="the server's API token")  # documents the scheme; Guard checks it
    secured = [Security(bearer)]

    @app.exception_handler(RequestValidationError)
    async def invalid(_: HttpRequest, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(e.get("loc", ())), "message": redact(str(e.get("msg", "invalid")).removeprefix("Value error, "))} for e in exc.errors()]
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse({"detail": f"invalid request: {message}", "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: HttpRequest, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body FastAPI could not parse: invalid input like any other
            message = redact(str(exc.detail))
            return JSONResponse({"detail": f"invalid request: {message}", "errors": [{"field": "body", "message": message}]},
                                status_code=422)
        return JSONResponse({"detail": redact(str(exc.detail))}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(workflow.NotFound)
    async def not_found(_: HttpRequest, exc: workflow.NotFound) -> JSONResponse:
        return JSONResponse({"detail": redact(str(exc))}, status_code=404)

    @app.exception_handler(workflow.Conflict)
    async def conflict(_: HttpRequest, exc: workflow.Conflict) -> JSONResponse:
        return JSONResponse({"detail": redact(str(exc))}, status_code=409)

    @app.exception_handler(OblivioError)
    async def bad_input(_: HttpRequest, exc: OblivioError) -> JSONResponse:
        message = redact(str(exc))
        return JSONResponse({"detail": f"invalid request: {message}", "errors": [{"field": "body", "message": message}]},
                            status_code=422)

    @app.get("/health", tags=["meta"])
    def health() -> dict:
        """Liveness: no authentication."""
        return {"status": "ok", "version": __version__}

    @app.post("/requests", response_model=RequestOut, status_code=201, dependencies=secured, tags=["requests"],
              responses={200: {"model": RequestOut, "description": "already filed (same reference, same content)"},
                         404: _err("no such model version"), 409: _err("reference filed with other content")} | AUTH)
    def file_request(body: RequestIn) -> JSONResponse:
        """File a deletion request; the samples are checked against the model's training data (422 when they are not in it)."""
        view, created = workflow.add_request(
            body.external_ref, model_version=body.model_version, model_sha256=body.model_sha256, scenario=body.scenario,
            indices=body.indices, classes=body.classes, authors=body.authors, reason=body.reason, db=db,
        )
        return JSONResponse(RequestOut(**view, created=created).model_dump(), status_code=201 if created else 200)

    @app.get("/requests", response_model=list[RequestOut], dependencies=secured, tags=["requests"], responses=AUTH)
    def list_requests(status: Optional[STATES] = None,
                      limit: Annotated[int, Query(ge=1, le=1000), BeforeValidator(_decimal)] = 100) -> list[dict]:
        """Requests, oldest first (without samples and history)."""
        return workflow.list_requests(status, db=db, limit=limit)

    def _audit(found: dict, label: str, format: str) -> FileResponse:
        path = found[format]
        if not path.is_file():
            raise workflow.NotFound(f"the audit report of request {label} is no longer on disk")
        media = "text/html" if format == "html" else "application/json"
        return FileResponse(path, media_type=media, filename=f"audit-{label}.{format}")

    def _certificate(**key) -> dict:
        try:
            return workflow.certificate(db=db, root=root, **key)
        except workflow.NotFound:
            raise
        except OblivioError as e:
            raise HTTPException(409, str(e)) from None

    audit_doc = {200: {"content": {"text/html": {}, "application/json": {}}, "description": "the report"}} | READ
    cert_doc = READ | {409: _err("the request is not closed (yet)")}

    # by-ref routes first: '/requests/by-ref/audit' is a reference, not request 'by-ref''s audit
    @app.get("/requests/by-ref/{ref}", response_model=RequestOut, dependencies=secured, tags=["requests"], responses=READ)
    def get_request_by_ref(ref: RefPath) -> dict:
        """One request by its external reference: status, samples with content hashes, and status history."""
        return workflow.get_request(ref, db=db)

    @app.get("/requests/by-ref/{ref}/audit", dependencies=secured, tags=["requests"], responses=audit_doc,
             response_class=FileResponse)
    def audit_by_ref(ref: RefPath, format: Literal["html", "json"] = "html") -> FileResponse:
        """The audit report of the run that processed this request (``format=json`` for audit.json)."""
        return _audit(workflow.audit_files(ref, db=db), ref, format)

    @app.get("/requests/by-ref/{ref}/certificate", dependencies=secured, tags=["requests"], responses=cert_doc)
    def certificate_by_ref(ref: RefPath) -> dict:
        """The deletion certificate of a closed request."""
        return _certificate(ref=ref)

    @app.get("/requests/{request_id}", response_model=RequestOut, dependencies=secured, tags=["requests"], responses=READ)
    def get_request(request_id: RequestId) -> dict:
        """One request by id: status, samples with content hashes, and status history."""
        return workflow.get_request(db=db, request_id=request_id)

    @app.get("/requests/{request_id}/audit", dependencies=secured, tags=["requests"], responses=audit_doc,
             response_class=FileResponse)
    def audit_report(request_id: RequestId, format: Literal["html", "json"] = "html") -> FileResponse:
        """The audit report of the run that processed this request (``format=json`` for audit.json)."""
        return _audit(workflow.audit_files(db=db, request_id=request_id), str(request_id), format)

    @app.get("/requests/{request_id}/certificate", dependencies=secured, tags=["requests"], responses=cert_doc)
    def certificate(request_id: RequestId) -> dict:
        """The deletion certificate of a closed request."""
        return _certificate(request_id=request_id)

    def allowed(path: str) -> list[str]:
        methods = set()
        for route in app.router.routes:
            if getattr(route, "path_regex", None) is not None and route.path_regex.match(path):
                methods |= set(getattr(route, "methods", None) or ())
        return sorted(methods)

    app.add_middleware(Guard, token=token, allowed=allowed)
    return app


def app_from_env() -> FastAPI:
    """The app as ``oblivio serve --workers N`` starts it in each worker process (settings from the environment)."""
    return create_app(db=os.environ.get("OBLIVIO_DB_URL"), token=os.environ.get("OBLIVIO_API_TOKEN") or None,
                      max_body=int(os.environ.get("OBLIVIO_API_MAX_BODY", MAX_BODY)), root=os.environ.get("OBLIVIO_ROOT"))
