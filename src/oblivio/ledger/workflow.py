"""The request workflow in one namespace: file a deletion request, process pending requests as one batch,
export a certificate.

The code lives by concern in ``requests`` (filing and reading requests, model versions, samples),
``processing`` (batches, claims and leases, the worker's loop; ``language`` for language models, ``outputs``
for the files a run leaves) and ``certificates``; this module
keeps the names callers import.
"""
from __future__ import annotations

from .certificates import CERTIFICATE_FORMAT, certificate, relative, write_certificate
from .limits import MAX_INDICES, MAX_INT, MAX_REF, REF_CHARS, REF_PATTERN
from .outputs import CRASH_ENV, crash_point
from .processing import (
    LEASE_S,
    InProgress,
    claim_next,
    forgotten_before,
    newest,
    process,
    run_job,
    run_view,
    work_once,
    worker_name,
)
from .requests import (
    SAMPLE_HASH_RECIPE,
    SCENARIOS,
    Conflict,
    NotFound,
    add_request,
    audit_files,
    get_request,
    list_requests,
    register_model,
    request_view,
    resolve_samples,
    sample_hashes,
    scenario_spec,
    sha256_file,
)

__all__ = [
    "CERTIFICATE_FORMAT", "CRASH_ENV", "Conflict", "InProgress", "LEASE_S", "MAX_INDICES", "MAX_INT", "MAX_REF", "NotFound",
    "REF_CHARS", "REF_PATTERN", "SAMPLE_HASH_RECIPE", "SCENARIOS", "add_request", "audit_files", "certificate", "claim_next",
    "crash_point", "forgotten_before", "get_request", "list_requests", "newest", "process", "register_model", "relative",
    "request_view", "resolve_samples", "run_job", "run_view", "sample_hashes", "scenario_spec", "sha256_file", "work_once",
    "worker_name", "write_certificate",
]
