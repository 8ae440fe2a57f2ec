"""HTTP API for the request ledger (FastAPI): file a request, read its status and history, download its audit.

    from oblivio.api import create_app
    app = create_app(db="sqlite:///oblivio.db", token="...")   # serve with uvicorn; OpenAPI at /openapi.json

Every route but ``/health`` and the OpenAPI pages needs ``Authorization: Bearer <token>``:
401 when it is missing, 403 when it is wrong. Bad bodies get 422 with one readable message;
errors never carry a stack trace.
"""
from __future__ import annotations

import hmac
import logging
from typing import Literal, Optional

from fastapi import Depends, FastAPI, HTTPException, Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import __version__
from .errors import OblivioError

log = logging.getLogger("oblivio.api")


class RequestIn(BaseModel):
    """A deletion request. Name the model by ``model_sha256`` (its weights file) or ``model_version``."""

    model_config = ConfigDict(extra="forbid")

    external_ref: str = Field(..., min_length=1, max_length=200, description="your reference (ticket id); filing it again is idempotent")
    model_sha256: Optional[str] = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 of the model's .safetensors file")
    model_version: Optional[int] = Field(None, ge=1, description="the ledger's model version id")
    scenario: Literal["random", "class", "backdoor"] = "random"
    indices: Optional[list[int]] = Field(None, min_length=1, max_length=100_000, description="random: indices into the training set")
    classes: Optional[list[int]] = Field(None, min_length=1, max_length=10_000, description="class: classes to forget")
    reason: Optional[str] = Field(None, max_length=2000)

    @model_validator(mode="after")
    def one_model(self) -> "RequestIn":
        if (self.model_sha256 is None) == (self.model_version is None):
            raise ValueError("give exactly one of model_sha256 and model_version")
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


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def create_app(db: str | None = None, token: str | None = None) -> FastAPI:
    """The API over the ledger at ``db``; ``token`` None turns authentication off (local use only)."""
    from .ledger import workflow

    app = FastAPI(title="oblivio ledger API", version=__version__,
                  description="Deletion requests for unlearned models: file, track, and download audit reports.")
    bearer = HTTPBearer(auto_error=False)

    def auth(credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if token is None:
            return
        if credentials is None:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(403, "invalid token")

    @app.exception_handler(RequestValidationError)
    async def invalid(_: HttpRequest, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in exc.errors()]
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse({"detail": f"invalid request: {message}", "errors": errors}, status_code=422)

    @app.exception_handler(workflow.NotFound)
    async def not_found(_: HttpRequest, exc: workflow.NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(workflow.Conflict)
    async def conflict(_: HttpRequest, exc: workflow.Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(OblivioError)
    async def bad_input(_: HttpRequest, exc: OblivioError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: HttpRequest, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    @app.get("/health", tags=["meta"])
    def health() -> dict:
        """Liveness: no authentication."""
        return {"status": "ok", "version": __version__}

    @app.post("/requests", response_model=RequestOut, status_code=201, dependencies=[Depends(auth)], tags=["requests"],
              responses={200: {"description": "already filed (same reference, same content)"}, 409: {"description": "reference filed with other content"}})
    def file_request(body: RequestIn) -> JSONResponse:
        """File a deletion request; the samples are checked against the model's training data."""
        view, created = workflow.add_request(
            body.external_ref, model_version=body.model_version, model_sha256=body.model_sha256, scenario=body.scenario,
            indices=body.indices, classes=body.classes, reason=body.reason, db=db,
        )
        return JSONResponse(RequestOut(**view, created=created).model_dump(), status_code=201 if created else 200)

    @app.get("/requests", response_model=list[RequestOut], dependencies=[Depends(auth)], tags=["requests"])
    def list_requests(status: Optional[str] = None, limit: int = 100) -> list[dict]:
        """Requests, oldest first (without samples and history)."""
        return workflow.list_requests(status, db=db, limit=max(1, min(limit, 1000)))

    @app.get("/requests/{key}", response_model=RequestOut, dependencies=[Depends(auth)], tags=["requests"])
    def get_request(key: str) -> dict:
        """One request by id or external reference: status, samples with content hashes, and status history."""
        return workflow.get_request(key, db=db)

    @app.get("/requests/{key}/audit", dependencies=[Depends(auth)], tags=["requests"],
             responses={200: {"content": {"text/html": {}, "application/json": {}}}})
    def audit_report(key: str, format: Literal["html", "json"] = "html") -> FileResponse:
        """The audit report of the run that processed this request (``format=json`` for audit.json)."""
        path = workflow.audit_files(key, db=db)[format]
        if not path.is_file():
            raise workflow.NotFound(f"the audit report of request {key} is no longer on disk")
        media = "text/html" if format == "html" else "application/json"
        return FileResponse(path, media_type=media, filename=f"audit-{key}.{format}")

    @app.get("/requests/{key}/certificate", dependencies=[Depends(auth)], tags=["requests"])
    def certificate(key: str) -> dict:
        """The deletion certificate of a closed request."""
        try:
            return workflow.certificate(key, db=db)
        except workflow.NotFound:
            raise
        except OblivioError as e:
            raise HTTPException(409, str(e)) from None

    return app
