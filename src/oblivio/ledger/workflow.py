"""The request workflow: file a deletion request, process pending requests as one batch, export a certificate.

States of a request: received -> scheduled -> unlearned -> audited -> closed (or failed, with the
error). ``process`` schedules pending requests into an unlearning run in one transaction, then
unlearns, writes the new checkpoint and audits it with no transaction open, then records the new
model version, the run, the audit and every status change in one final transaction. A process
killed before that commit leaves the run ``scheduled`` and the input checkpoint untouched; the
next ``process`` of the same checkpoint picks the run up again, reusing its output checkpoint when
it was completely written (the file name carries the run id).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import OblivioError
from .db import session_scope
from .models import (
    AUDITED,
    CLOSED,
    FAILED,
    RECEIVED,
    SCHEDULED,
    UNLEARNED,
    Audit,
    ModelVersion,
    Request,
    StatusChange,
    UnlearningRun,
    utcnow,
)

CERTIFICATE_FORMAT = "oblivio-deletion-certificate/1"
SAMPLE_HASH_RECIPE = (
    "sha256 of the sample as the model trained on it: its float32 image bytes (C order, shape (C, H, W), "
    "values in [0, 1]) followed by its label as little-endian int64"
)
CRASH_ENV = "OBLIVIO_LEDGER_CRASH_AT"  # fault injection for tests: scheduled, unlearned, checkpoint, audited, commit
MAX_REF = 200
SCENARIOS = ("random", "class", "backdoor")


class NotFound(OblivioError):
    """No such request or model version."""


class Conflict(OblivioError):
    """The external reference was already filed with a different content."""


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if ``$OBLIVIO_LEDGER_CRASH_AT`` names this point (crash tests)."""
    if name in os.environ.get(CRASH_ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _iso(t: datetime | None) -> str | None:
    return t.isoformat(timespec="microseconds") if t is not None else None


# ---------------------------------------------------------------- samples


_data_cache: dict[str, Any] = {}
_data_lock = threading.Lock()


def _dataset(spec: dict):
    """The dataset behind a training spec, loaded once per process."""
    from ..data import load_from_spec

    key = json.dumps(spec, sort_keys=True)
    with _data_lock:
        if key not in _data_cache:
            _data_cache.clear()  # keep one dataset in memory
            _data_cache[key] = load_from_spec(spec)
        return _data_cache[key]


def scenario_spec(kind: str, indices: Sequence[int] | None = None, classes: Sequence[int] | None = None) -> dict:
    """The request's scenario as stored: {"kind": "random", "indices": [...]}, {"kind": "class", "classes": [...]} or {"kind": "backdoor"}."""
    if kind not in SCENARIOS:
        raise OblivioError(f"unknown scenario {kind!r}; choose random, class or backdoor")
    if kind == "random":
        if not indices:
            raise OblivioError("a random-scenario request names its samples: give indices into the training set")
        if classes:
            raise OblivioError("a random-scenario request takes indices, not classes")
        return {"kind": "random", "indices": sorted(int(i) for i in indices)}
    if kind == "class":
        if not classes:
            raise OblivioError("a class-scenario request needs the classes to forget")
        if indices:
            raise OblivioError("a class-scenario request takes classes, not indices")
        return {"kind": "class", "classes": sorted(int(c) for c in classes)}
    if indices or classes:
        raise OblivioError("a backdoor request takes neither indices nor classes: it forgets the model's poisoned samples")
    return {"kind": "backdoor"}


def _scenario(spec: dict):
    from ..scenarios import ClassForget, RandomSubset

    if spec["kind"] == "random":
        return RandomSubset(indices=tuple(spec["indices"]))
    if spec["kind"] == "class":
        return ClassForget(tuple(spec["classes"]))
    return None  # the backdoor the model was trained with


def _split(meta: dict, scenario):
    from ..pipeline import split_for_request

    if not meta.get("training"):
        raise OblivioError("checkpoint sidecar has no training record; was it written by 'oblivio train'?")
    return split_for_request(meta, scenario, data=_dataset(meta["training"]["data"]))[1]


def sample_hashes(split, ids: Iterable[int]) -> list[str]:
    """Content hashes of training samples ``ids`` as the model trained on them (see ``SAMPLE_HASH_RECIPE``)."""
    import numpy as np

    out = []
    for i in ids:
        x = split.x_train[int(i)].detach().cpu().contiguous().float().numpy().tobytes()
        y = np.asarray(int(split.y_train[int(i)]), dtype="<i8").tobytes()
        out.append(hashlib.sha256(x + y).hexdigest())
    return out


def resolve_samples(meta: dict, spec: dict) -> tuple[list[int], list[str]]:
    """The training-set indices a request's scenario names for this checkpoint, and their content hashes."""
    split = _split(meta, _scenario(spec))
    ids = [int(i) for i in split.forget_idx]
    return ids, sample_hashes(split, ids)


# ---------------------------------------------------------------- model versions


def _read_meta(checkpoint: str | os.PathLike) -> tuple[dict, str]:
    """A checkpoint's sidecar and the SHA-256 of its weights file (refused when they disagree)."""
    from ..checkpoint import read_sidecar

    meta = read_sidecar(checkpoint)
    digest = sha256_file(checkpoint)
    if digest != meta.get("weights_sha256"):
        raise OblivioError(f"checkpoint {checkpoint} does not match its sidecar: the weights' SHA-256 differs")
    return meta, digest


def _get_or_create_version(session: Session, checkpoint: str | os.PathLike, meta: dict, parent_id: int | None = None) -> ModelVersion:
    digest = meta["weights_sha256"]
    found = session.scalars(select(ModelVersion).where(ModelVersion.weights_sha256 == digest)).first()
    if found is not None:
        return found
    training = meta.get("training") or {}
    split_hashes = {"pool": training.get("pool_hash"), "third_party": training.get("third_party_hash")}
    if meta.get("split"):
        split_hashes |= {"forget_split": meta["split"].get("hashes")}
    version = ModelVersion(
        weights_sha256=digest, model_hash=meta["model_hash"], parent_id=parent_id,
        checkpoint_path=str(Path(checkpoint).resolve()), arch=meta.get("arch"),
        dataset={"spec": training.get("data"), "name": meta.get("dataset")}, split_hashes=split_hashes,
    )
    try:
        with session.begin_nested():
            session.add(version)
    except IntegrityError:  # registered meanwhile by a concurrent call
        return session.scalars(select(ModelVersion).where(ModelVersion.weights_sha256 == digest)).one()
    return version


def version_view(v: ModelVersion) -> dict:
    return {"id": v.id, "weights_sha256": v.weights_sha256, "model_hash": v.model_hash, "parent_id": v.parent_id,
            "checkpoint": v.checkpoint_path, "arch": v.arch, "dataset": v.dataset, "split_hashes": v.split_hashes,
            "created_at": _iso(v.created_at)}


def register_model(checkpoint: str | os.PathLike, db: str | None = None) -> dict:
    """Record a checkpoint as a model version (idempotent: keyed by the SHA-256 of its weights)."""
    meta, _ = _read_meta(checkpoint)
    if not meta.get("training"):
        raise OblivioError(f"checkpoint {checkpoint} has no training record; requests need to know its training data")
    with session_scope(db) as s:
        return version_view(_get_or_create_version(s, checkpoint, meta))


def _version_meta(version_id: int, path: str, weights_sha256: str) -> dict:
    meta, digest = _read_meta(path) if Path(path).is_file() else (None, None)
    if meta is None or digest != weights_sha256:
        raise OblivioError(f"model version {version_id}: checkpoint {path} is missing or changed since it was registered")
    return meta


def _find_version(session: Session, model_version: int | None, model_sha256: str | None) -> ModelVersion:
    if model_version is not None:
        v = session.get(ModelVersion, model_version)
        if v is None:
            raise NotFound(f"no model version {model_version}")
        return v
    v = session.scalars(select(ModelVersion).where(ModelVersion.weights_sha256 == (model_sha256 or "").lower())).first()
    if v is None:
        raise NotFound(f"no model version with weights SHA-256 {model_sha256}; register its checkpoint first "
                       "('oblivio requests register --checkpoint ...')")
    return v


# ---------------------------------------------------------------- requests


def _history(session: Session, request: Request, status: str, note: str | None = None, at: datetime | None = None) -> None:
    request.status = status
    session.add(StatusChange(request_id=request.id, status=status, note=note, at=at or utcnow()))


def request_view(r: Request, full: bool = True) -> dict:
    """A request as plain JSON types; ``full`` adds samples and the status history."""
    view = {
        "id": r.id, "external_ref": r.external_ref, "status": r.status, "error": r.error, "scenario": r.scenario,
        "reason": r.reason, "received_at": _iso(r.received_at), "model_version": r.model_version_id,
        "samples": len(r.sample_ids), "run_id": r.run_id,
    }
    if full:
        view |= {
            "model": version_view(r.model_version),
            "sample_ids": r.sample_ids,
            "sample_hashes": r.sample_hashes,
            "history": [{"status": h.status, "at": _iso(h.at), "note": h.note} for h in r.history],
        }
    return view


def _same_request(r: Request, version_id: int, spec: dict) -> None:
    if r.model_version_id != version_id or r.scenario != spec:
        raise Conflict(f"external reference {r.external_ref!r} was already filed as request {r.id} with a different "
                       f"model or samples; file a new reference")


def _check_ref(external_ref: str) -> str:
    ref = (external_ref or "").strip()
    if not ref:
        raise OblivioError("a request needs an external reference (e.g. your ticket id)")
    if len(ref) > MAX_REF:
        raise OblivioError(f"external reference is longer than {MAX_REF} characters")
    return ref


def add_request(
    external_ref: str,
    *,
    checkpoint: str | os.PathLike | None = None,
    model_version: int | None = None,
    model_sha256: str | None = None,
    scenario: str = "random",
    indices: Sequence[int] | None = None,
    classes: Sequence[int] | None = None,
    reason: str | None = None,
    db: str | None = None,
) -> tuple[dict, bool]:
    """File a deletion request against a model (its checkpoint, registered version id or weights SHA-256).

    Returns (request, created). Filing an external reference again with the same model and samples
    returns the existing request (created False); with different ones it raises ``Conflict``.
    Samples are checked against the model's training data and stored with their content hashes.
    """
    ref = _check_ref(external_ref)
    spec = scenario_spec(scenario, indices, classes)
    if sum(x is not None for x in (checkpoint, model_version, model_sha256)) != 1:
        raise OblivioError("name the model by exactly one of: checkpoint, model version id, weights SHA-256")
    meta = None
    if checkpoint is not None:
        meta, _ = _read_meta(checkpoint)
        model_sha256 = meta["weights_sha256"]
    with session_scope(db, write=False) as s:  # the common repeat: already filed
        existing = s.scalars(select(Request).where(Request.external_ref == ref)).first()
        if existing is not None:
            v = _find_version(s, model_version, model_sha256) if meta is None else None
            vid = v.id if v is not None else s.scalars(
                select(ModelVersion.id).where(ModelVersion.weights_sha256 == model_sha256)).first()
            _same_request(existing, vid, spec)
            return request_view(existing), False
        if meta is None:
            v = _find_version(s, model_version, model_sha256)
            version_file = (v.id, v.checkpoint_path, v.weights_sha256)
    if meta is None:
        meta = _version_meta(*version_file)
    ids, hashes = resolve_samples(meta, spec)
    with session_scope(db) as s:
        version = _get_or_create_version(s, checkpoint, meta) if checkpoint is not None else _find_version(s, model_version, model_sha256)
        request = Request(external_ref=ref, model_version_id=version.id, scenario=spec, sample_ids=ids,
                          sample_hashes=hashes, reason=reason, status=RECEIVED)
        try:
            with s.begin_nested():
                s.add(request)
                s.flush()
                _history(s, request, RECEIVED)
        except IntegrityError:  # the same reference filed concurrently
            existing = s.scalars(select(Request).where(Request.external_ref == ref)).one()
            _same_request(existing, version.id, spec)
            return request_view(existing), False
        s.flush()
        s.refresh(request)
        return request_view(request), True


def _get_request(s: Session, key: int | str) -> Request:
    r = None
    if isinstance(key, int) or str(key).isdigit():
        r = s.get(Request, int(key))
    if r is None:
        r = s.scalars(select(Request).where(Request.external_ref == str(key))).first()
    if r is None:
        raise NotFound(f"no request with id or external reference {key!r}")
    return r


def get_request(key: int | str, db: str | None = None) -> dict:
    """One request (by id or external reference) with samples and status history."""
    with session_scope(db, write=False) as s:
        return request_view(_get_request(s, key))


def list_requests(status: str | None = None, db: str | None = None, limit: int | None = None) -> list[dict]:
    """Requests, oldest first, optionally only those in ``status``."""
    with session_scope(db, write=False) as s:
        q = select(Request).order_by(Request.id)
        if status:
            q = q.where(Request.status == status)
        if limit:
            q = q.limit(limit)
        return [request_view(r, full=False) for r in s.scalars(q)]


def audit_files(key: int | str, db: str | None = None) -> dict[str, Path]:
    """Paths of the audit report (``json``, ``html``) of a request's run."""
    with session_scope(db, write=False) as s:
        r = _get_request(s, key)
        audit = r.run.audit if r.run is not None else None
        if audit is None:
            raise NotFound(f"request {r.id} has no audit yet (status {r.status})")
        folder = Path(audit.report_path)
    return {"json": folder / "audit.json", "html": folder / "report.html"}


# ---------------------------------------------------------------- processing


def _lineage(s: Session, version: ModelVersion) -> list[int]:
    ids, v = [], version
    while v is not None and v.id not in ids:
        ids.append(v.id)
        v = v.parent
    return ids


def _batch_scenario(specs: list[dict]):
    """One scenario covering every request of a batch (all of one kind)."""
    from ..scenarios import ClassForget, RandomSubset

    kind = specs[0]["kind"]
    if kind == "backdoor":
        return None
    if kind == "class":
        return ClassForget(tuple(sorted({c for sp in specs for c in sp["classes"]})))
    return RandomSubset(indices=tuple(sorted({i for sp in specs for i in sp["indices"]})))


def forgotten_before(meta: dict) -> list[int]:
    """Training-set indices the model behind ``meta`` already forgot (by the ledger, or by 'oblivio forget')."""
    from ..pipeline import split_for_checkpoint

    ledger = (meta.get("extra") or {}).get("ledger") or {}
    if "forgotten" in ledger:
        return list(ledger["forgotten"])
    if meta.get("split"):
        return split_for_checkpoint(meta)[1].forget_idx.tolist()
    return []


def _owned_output(path: Path, stamp: dict) -> bool | None:
    """True: ``path`` holds this run's complete output; False: none or a torn one (overwrite); None: someone else's file."""
    from ..checkpoint import load_checkpoint, read_sidecar

    if not path.exists():
        return False
    try:
        meta = read_sidecar(path)
    except OblivioError:
        return False
    if (meta.get("extra") or {}).get("ledger") != stamp:
        return None
    try:
        load_checkpoint(path)
    except OblivioError:
        return False
    return True


def _execute(job: dict, model, meta: dict, log: Callable[[str], None]) -> dict:
    """Unlearn the batch, write the checkpoint, audit it; everything the final transaction records."""
    from ..audit import audit
    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..cli.forget import json_safe
    from ..report import write_report
    from ..unlearning import unlearn

    import numpy as np

    ids = sorted({i for r in job["requests"] for i in r["sample_ids"]})
    split = _split(meta, _batch_scenario([r["scenario"] for r in job["requests"]]))
    missing = sorted(set(ids) - set(split.forget_idx.tolist()))
    if missing:
        raise OblivioError(f"samples {missing[:5]} of the batch are not in its forget set; the data changed since the requests were filed")
    # What earlier runs forgot stays out of the retain set, so no method learns it back.
    # The sidecar keeps the standard split of this batch (so 'oblivio audit' can rebuild it).
    previous = np.asarray(forgotten_before(meta), dtype=np.int64)
    recorded_split = split.spec()
    split.pool_idx = np.setdiff1d(split.pool_idx, np.setdiff1d(previous, split.forget_idx))
    forgotten = sorted(set(previous.tolist()) | set(split.forget_idx.tolist()))
    out = Path(job["output_path"])
    stamp = {"run": job["run_id"], "input_sha256": meta["weights_sha256"], "requests": sorted(r["external_ref"] for r in job["requests"]),
             "forgotten": forgotten}
    owned = _owned_output(out, stamp)
    if owned is None:
        raise OblivioError(f"{out} exists and was not written by ledger run {job['run_id']}; move it or choose another --out-dir")
    if owned:
        log(f"run {job['run_id']}: reusing its complete checkpoint {out}")
        new_model, new_meta = load_checkpoint(out)
        record = new_meta["extra"]["unlearning"]
    else:
        # verify=False: the ledger's own gate is the audit below (a batch closes only when it passes,
        # and a failed audit is recorded as such), stronger than unlearn's no-op check
        result = unlearn(model, split=split, method=job["method"], arch=meta.get("arch"), seed=job["seed"],
                         verify=False, **job["options"])
        crash_point("unlearned")
        record = {"method": result.method, "config": json_safe(result.config), "seconds": result.seconds,
                  "info": json_safe(result.info), "original": {"path": meta["path"], "model_hash": meta["model_hash"]}}
        save_checkpoint(
            out, result.model, arch=meta.get("arch"), input_shape=tuple(meta["input_shape"]), num_classes=meta["num_classes"],
            dataset=meta.get("dataset"), seed=job["seed"], split=recorded_split, training=meta["training"],
            extra={"unlearning": record, "ledger": stamp},
        )
        new_model, new_meta = load_checkpoint(out)
    unlearned_at = utcnow()
    crash_point("checkpoint")
    method = {k: record.get(k) for k in ("method", "config", "info")}
    result = audit(new_model, split, original=model, seconds=record["seconds"], seed=job["seed"], method=method)
    result.models["checkpoint"] = str(out)
    json_path, html_path = write_report(result, out.parent / f"{out.stem}.audit")
    audited_at = utcnow()
    crash_point("audited")
    return {
        "out": out, "meta": new_meta, "record": record, "split": recorded_split | {"sizes": split.sizes(), "earlier_forgotten": len(previous), "audited_hashes": split.hashes()},
        "metrics": result.metrics, "verdict": result.verdict, "report": json_path.parent,
        "report_sha256": {"audit.json": sha256_file(json_path), "report.html": sha256_file(html_path)},
        "unlearned_at": unlearned_at, "audited_at": audited_at,
    }


def _schedule(s: Session, version: ModelVersion, method: str, options: dict, seed: int, out_dir: Path,
              stem: str, retry_failed: bool, log: Callable[[str], None]) -> UnlearningRun | None:
    """The run to work on: one left scheduled for this model, else a new one holding every pending request."""
    run = s.scalars(select(UnlearningRun).where(UnlearningRun.input_version_id == version.id,
                                                UnlearningRun.status == SCHEDULED).order_by(UnlearningRun.id)).first()
    if run is not None:
        if (run.method, run.options, run.seed) != (method, options, seed):
            log(f"run {run.id} was scheduled with method {run.method} {run.options} seed {run.seed}; finishing it with those")
        else:
            log(f"resuming run {run.id} left scheduled")
        return run
    lineage = _lineage(s, version)
    if retry_failed:
        for r in s.scalars(select(Request).where(Request.model_version_id.in_(lineage), Request.status == FAILED)):
            r.error, r.run_id = None, None
            _history(s, r, RECEIVED, "retry requested")
    pending = s.scalars(select(Request).where(Request.model_version_id.in_(lineage), Request.status == RECEIVED)
                        .order_by(Request.id)).all()
    if not pending:
        return None
    kind = pending[0].scenario["kind"]  # one kind per batch, so the audit judges it by the right rule
    later = [r for r in pending if r.scenario["kind"] != kind]
    if later:
        log(f"{len(later)} pending request(s) of another scenario wait for the next run (process the new checkpoint)")
    pending = [r for r in pending if r.scenario["kind"] == kind]
    run = UnlearningRun(input_version_id=version.id, method=method, options=options, seed=seed, output_path="")
    s.add(run)
    s.flush()
    run.output_path = str(out_dir / f"{stem}.run-{run.id}.safetensors")
    taken = s.execute(update(Request).where(Request.id.in_([r.id for r in pending]), Request.status == RECEIVED)
                      .values(status=SCHEDULED, run_id=run.id).execution_options(synchronize_session=False)).rowcount
    if taken == 0:
        raise _NothingPending()
    for r in s.scalars(select(Request).where(Request.run_id == run.id)):
        s.add(StatusChange(request_id=r.id, status=SCHEDULED, note=f"run {run.id}"))
    return run


class _NothingPending(Exception):
    pass


def process(
    checkpoint: str | os.PathLike,
    *,
    method: str = "dm",
    options: dict[str, Any] | None = None,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    retry_failed: bool = False,
    db: str | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> dict | None:
    """Unlearn every pending request for ``checkpoint`` (and the versions it descends from) as one batch.

    Writes ``<out_dir>/<stem>.run-<id>.safetensors`` (default: beside the input, which is never
    modified) and its audit in ``<stem>.run-<id>.audit/``; returns the run (None when nothing is pending).
    A run left ``scheduled`` by a crash is finished first, with the method it was scheduled with.
    """
    from ..checkpoint import load_checkpoint
    from ..methods import get_method

    options = dict(options or {})
    get_method(method, **options)  # unknown method or option: refuse before touching anything
    model, meta = load_checkpoint(checkpoint)
    if not meta.get("training"):
        raise OblivioError(f"checkpoint {checkpoint} has no training record; was it written by 'oblivio train'?")
    meta["path"] = str(Path(checkpoint).resolve())
    out_dir = Path(out_dir) if out_dir is not None else Path(checkpoint).resolve().parent
    stem = Path(checkpoint).stem
    try:
        with session_scope(db) as s:
            version = _get_or_create_version(s, checkpoint, meta)
            done = s.scalars(select(UnlearningRun).where(UnlearningRun.input_version_id == version.id,
                                                         UnlearningRun.status == CLOSED,
                                                         UnlearningRun.output_version_id != version.id)).first()
            if done is not None and done.output_version is not None:
                raise OblivioError(
                    f"model version {version.id} was already unlearned into version {done.output_version_id} "
                    f"({done.output_version.checkpoint_path}); process that checkpoint so earlier deletions stay forgotten")
            run = _schedule(s, version, method, options, seed, out_dir, stem, retry_failed, log)
            if run is None:
                return None
            job = {"run_id": run.id, "method": run.method, "options": run.options, "seed": run.seed,
                   "output_path": run.output_path, "version_id": version.id,
                   "requests": [{"id": r.id, "external_ref": r.external_ref, "scenario": r.scenario, "sample_ids": r.sample_ids}
                                for r in run.requests]}
    except _NothingPending:
        return None
    log(f"run {job['run_id']}: {len(job['requests'])} request(s), method {job['method']}")
    crash_point("scheduled")
    try:
        done = _execute(job, model, meta, log)
    except OblivioError as e:
        with session_scope(db) as s:
            run = s.get(UnlearningRun, job["run_id"], with_for_update=True)
            if run.status == SCHEDULED:
                run.status, run.error, run.finished_at = FAILED, str(e), utcnow()
                for r in run.requests:
                    r.error = str(e)
                    _history(s, r, FAILED, str(e))
        raise
    with session_scope(db) as s:
        run = s.get(UnlearningRun, job["run_id"], with_for_update=True)
        if run.status != SCHEDULED:  # finished by a concurrent process meanwhile
            return run_view(run)
        child = _get_or_create_version(s, done["out"], done["meta"], parent_id=job["version_id"])
        run.output_version_id = child.id
        run.split, run.seconds = done["split"], done["record"]["seconds"]
        run.info = {"config": done["record"]["config"], "info": done["record"]["info"]}
        verdict = done["verdict"]
        s.add(Audit(run_id=run.id, metrics=done["metrics"], verdict=verdict["status"], headline=verdict["headline"],
                    report_path=str(done["report"]), report_sha256=done["report_sha256"]))
        failed = verdict["status"] == "fail"
        run.status = FAILED if failed else CLOSED
        run.error = f"audit failed: {verdict['headline']}" if failed else None
        run.finished_at = utcnow()
        for r in run.requests:
            _history(s, r, UNLEARNED, f"model version {child.id}", at=done["unlearned_at"])
            _history(s, r, AUDITED, f"verdict {verdict['status']}", at=done["audited_at"])
            if failed:
                r.error = run.error
                _history(s, r, FAILED, run.error)
            else:
                _history(s, r, CLOSED)
        s.flush()
        crash_point("commit")
        return run_view(run)


def run_view(run: UnlearningRun) -> dict:
    audit = run.audit
    return {
        "id": run.id, "status": run.status, "error": run.error, "method": run.method, "options": run.options, "seed": run.seed,
        "input_version": run.input_version_id, "output_version": run.output_version_id, "checkpoint": run.output_path,
        "seconds": run.seconds, "requests": [r.external_ref for r in run.requests],
        "verdict": audit.verdict if audit else None, "headline": audit.headline if audit else None,
        "report": audit.report_path if audit else None,
    }


# ---------------------------------------------------------------- certificate


def certificate(key: int | str, db: str | None = None) -> dict:
    """A JSON deletion certificate for a closed request: what was forgotten, from which model, how, and the audit."""
    with session_scope(db, write=False) as s:
        r = _get_request(s, key)
        if r.status != CLOSED:
            detail = f": {r.error}" if r.error else ""
            raise OblivioError(f"request {r.id} is {r.status}{detail}; a certificate is issued only for closed requests")
        run, audit = r.run, r.run.audit
        before, after = run.input_version, run.output_version
        m = audit.metrics
        return {
            "format": CERTIFICATE_FORMAT,
            "issued_at": _iso(utcnow()),
            "request": {
                "id": r.id, "external_ref": r.external_ref, "reason": r.reason, "scenario": r.scenario,
                "received_at": _iso(r.received_at), "status": r.status,
                "history": [{"status": h.status, "at": _iso(h.at), "note": h.note} for h in r.history],
            },
            "samples": {
                "dataset": r.model_version.dataset, "indices": r.sample_ids, "hash": "sha256",
                "hash_recipe": SAMPLE_HASH_RECIPE, "hashes": r.sample_hashes,
                "digest": hashlib.sha256("".join(sorted(r.sample_hashes)).encode()).hexdigest(),
            },
            "model_before": {k: version_view(before)[k] for k in ("id", "weights_sha256", "model_hash", "checkpoint", "arch")},
            "model_after": {k: version_view(after)[k] for k in ("id", "weights_sha256", "model_hash", "parent_id")}
            | {"checkpoint": run.output_path, "weights_changed": after.id != before.id},
            "split": run.split,
            "unlearning": {"run": run.id, "method": run.method, "options": run.options, "seed": run.seed,
                           "seconds": run.seconds, "config": (run.info or {}).get("config"), "info": (run.info or {}).get("info"),
                           "batch": [x.external_ref for x in run.requests],
                           "scheduled_at": _iso(run.scheduled_at), "finished_at": _iso(run.finished_at)},
            "audit": {"verdict": audit.verdict, "headline": audit.headline,
                      "metrics": {role: m[role] for role in ("original", "unlearned") if role in m},
                      "report": audit.report_path, "report_sha256": audit.report_sha256, "at": _iso(audit.created_at)},
            "how_to_check": [
                "sha256sum the 'after' checkpoint (.safetensors): it must equal model_after.weights_sha256",
                "recompute the sample hashes from the dataset with samples.hash_recipe at samples.indices",
                "the 'after' sidecar (.json) records split.hashes; its forget set contains samples.indices",
                "re-run: oblivio audit --checkpoint <after> --original <before>; compare with audit.metrics",
                "weights_changed false: the method found the samples already indistinguishable from unseen data "
                "(see unlearning.info) and left the weights as they were; the audit measured the same",
            ],
        }


def write_certificate(key: int | str, out: str | os.PathLike, db: str | None = None) -> Path:
    """Write ``certificate(key)`` to ``out`` atomically."""
    from ..io import atomic_write_text

    cert = certificate(key, db)
    out = Path(out)
    atomic_write_text(out, json.dumps(cert, indent=2))
    return out


__all__ = [
    "CERTIFICATE_FORMAT", "Conflict", "NotFound", "add_request", "audit_files", "certificate", "get_request",
    "list_requests", "process", "register_model", "request_view", "resolve_samples", "write_certificate",
]
