"""Deletion certificates: what was forgotten, from which model, how, and the audit, as checkable JSON.

Files are named by paths relative to a declared root folder (``root=``: the models' folder the
operator serves from; default the working directory) and identified by their SHA-256, so a
certificate neither leaks the server's file layout nor depends on it. A file outside the root is
named by its file name alone.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import OblivioError
from .db import session_scope
from .models import CLOSED
from .language import AUTHOR, FACT_HASH_RECIPE
from .requests import SAMPLE_HASH_RECIPE, _get_request, _iso, version_view
from .models import utcnow

CERTIFICATE_FORMAT = "oblivio-deletion-certificate/2"
LM_CHECKS = [
    "sha256sum the 'after' checkpoint (.safetensors): it must equal model_after.weights_sha256",
    "recompute the fact hashes from the corpus (samples.dataset.spec, 'oblivio lm train') with samples.hash_recipe",
    "the 'after' sidecar (.json) records lm.forgotten_authors; it contains request.scenario.authors",
    "re-run: oblivio lm audit <after> --retrain <a model trained without those authors>; compare with audit.metrics",
]


def relative(path: str | os.PathLike | None, root: str | os.PathLike | None = None) -> str | None:
    """``path`` relative to ``root`` (default: the working directory), in POSIX form; its file name alone when outside."""
    if path is None:
        return None
    root = Path(root if root is not None else os.getcwd()).resolve()
    p = Path(path)
    try:
        return p.resolve().relative_to(root).as_posix()
    except ValueError:
        return p.name


def certificate(ref: str | None = None, db: str | None = None, *, request_id: int | None = None,
                root: str | os.PathLike | None = None) -> dict:
    """A JSON deletion certificate for a closed request (by external reference, or ``request_id=``)."""
    with session_scope(db, write=False) as s:
        r = _get_request(s, request_id, ref)
        if r.status != CLOSED:
            detail = f": {r.error}" if r.error else ""
            raise OblivioError(f"request {r.id} is {r.status}{detail}; a certificate is issued only for closed requests")
        run, audit = r.run, r.run.audit
        before, after = run.input_version, run.output_version
        m = audit.metrics
        lm = r.scenario.get("kind") == AUTHOR
        return {
            "format": CERTIFICATE_FORMAT,
            "issued_at": _iso(utcnow()),
            "paths": "relative to the ledger's model folder; every file is identified by its SHA-256",
            "request": {
                "id": r.id, "external_ref": r.external_ref, "reason": r.reason, "scenario": r.scenario,
                "received_at": _iso(r.received_at), "status": r.status,
                "history": [{"status": h.status, "at": _iso(h.at), "note": h.note} for h in r.history],
            },
            "samples": {
                "dataset": r.model_version.dataset, "indices": r.sample_ids, "hash": "sha256",
                "hash_recipe": FACT_HASH_RECIPE if lm else SAMPLE_HASH_RECIPE, "hashes": r.sample_hashes,
                "digest": hashlib.sha256("".join(sorted(r.sample_hashes)).encode()).hexdigest(),
            },
            "model_before": {k: version_view(before)[k] for k in ("id", "weights_sha256", "model_hash", "arch")}
            | {"checkpoint": relative(before.checkpoint_path, root)},
            "model_after": {k: version_view(after)[k] for k in ("id", "weights_sha256", "model_hash", "parent_id")}
            | {"checkpoint": relative(run.output_path, root), "weights_changed": after.id != before.id},
            "split": run.split,
            "unlearning": {"run": run.id, "method": run.method, "options": run.options, "seed": run.seed,
                           "seconds": run.seconds, "config": (run.info or {}).get("config"), "info": (run.info or {}).get("info"),
                           "batch": [x.external_ref for x in run.requests],
                           "scheduled_at": _iso(run.scheduled_at), "finished_at": _iso(run.finished_at)},
            "audit": {"verdict": audit.verdict, "headline": audit.headline,
                      "metrics": {role: m[role] for role in ("original", "unlearned") if role in m},
                      "report": relative(audit.report_path, root), "report_sha256": audit.report_sha256, "at": _iso(audit.created_at)},
            "how_to_check": LM_CHECKS if lm else [
                "sha256sum the 'after' checkpoint (.safetensors): it must equal model_after.weights_sha256",
                "recompute the sample hashes from the dataset with samples.hash_recipe at samples.indices",
                "the 'after' sidecar (.json) records split.hashes; its forget set contains samples.indices",
                "re-run: oblivio audit --checkpoint <after> --original <before>; compare with audit.metrics",
                "weights_changed false: the method found the samples already indistinguishable from unseen data "
                "(see unlearning.info) and left the weights as they were; the audit measured the same",
            ],
        }


def write_certificate(ref: str | None, out: str | os.PathLike, db: str | None = None, *, request_id: int | None = None,
                      root: str | os.PathLike | None = None) -> Path:
    """Write ``certificate(...)`` to ``out`` atomically."""
    from ..io import atomic_write_text

    cert = certificate(ref, db, request_id=request_id, root=root)
    out = Path(out)
    atomic_write_text(out, json.dumps(cert, indent=2))
    return out
