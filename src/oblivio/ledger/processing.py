"""Processing pending requests: schedule a batch, claim it, unlearn, audit, and record the outcome.

States of a request: received -> scheduled -> unlearned -> audited -> closed (or failed, with the
error). ``process`` schedules pending requests into an unlearning run in one transaction, then
unlearns, writes the new checkpoint and audits it with no transaction open, then records the new
model version, the run, the audit and every status change in one final transaction.

A run is *claimed* by one worker (``oblivio worker`` or one ``oblivio requests process``) through
a lease: the worker renews ``lease_until`` while it runs, so no other worker starts the same run;
when a worker is killed its lease runs out and the next one resumes the run, reusing its output
checkpoint when that was completely written. The final transaction records the outcome only if
the worker still holds the claim (a fenced commit). On PostgreSQL claims take row locks with
``SELECT ... FOR UPDATE SKIP LOCKED``; on SQLite every write transaction is ``BEGIN IMMEDIATE``,
which serializes them. A partial unique index allows one scheduled run per input model.

Output files are named after the lineage's first checkpoint and the run id
(``<root stem>.run-<id>.safetensors``), so names do not grow along a chain of runs.
"""
from __future__ import annotations

import os
import socket
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..errors import OblivioError
from . import language
from .db import session_scope
from .language import is_lm
from .outputs import crash_point, owned_output
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
from .requests import _get_or_create_version, _history, _split, sha256_file

LEASE_S = 60.0  # a worker renews its claim every third of this; a killed worker's run is resumed after it


def worker_name() -> str:
    """A name unique to this worker: host, process id and a random suffix (at most 64 characters)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class InProgress(OblivioError):
    """Another live worker holds the run of this model."""


# ---------------------------------------------------------------- lineage


def _lineage(s: Session, version: ModelVersion) -> list[int]:
    """``version`` and its ancestors, newest first."""
    ids, v = [], version
    while v is not None and v.id not in ids:
        ids.append(v.id)
        v = v.parent
    return ids


def _root_stem(s: Session, version: ModelVersion) -> str:
    """The file stem of the lineage's first checkpoint: outputs are named after it, never after their input."""
    root = s.get(ModelVersion, _lineage(s, version)[-1])
    return Path(root.checkpoint_path).stem


def _child(s: Session, version: ModelVersion) -> ModelVersion | None:
    """The model a closed run turned ``version`` into (None: ``version`` is the newest of its lineage)."""
    run = s.scalars(select(UnlearningRun).where(UnlearningRun.input_version_id == version.id, UnlearningRun.status == CLOSED,
                                                UnlearningRun.output_version_id != version.id)
                    .order_by(UnlearningRun.id.desc())).first()
    return run.output_version if run is not None else None


def newest(s: Session, version: ModelVersion) -> ModelVersion:
    """The newest model of ``version``'s lineage: pending requests of any ancestor are processed on it."""
    seen = set()
    while version.id not in seen:
        seen.add(version.id)
        child = _child(s, version)
        if child is None:
            return version
        version = child
    return version


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
    from ..pipeline import forgotten_before as recorded

    return recorded(meta).tolist()


# ---------------------------------------------------------------- the work itself


def _execute(job: dict, model, meta: dict, log: Callable[[str], None]) -> dict:
    """Unlearn the batch, write the checkpoint, audit it; everything the final transaction records."""
    from ..audit import audit
    from ..checkpoint import load_checkpoint, recorded_recipe, save_checkpoint
    from ..cli.forget import json_safe
    from ..audit.report import write_report
    from ..unlearning import unlearn

    import numpy as np

    if is_lm(meta):
        return language.execute(job, meta, log)
    ids = sorted({i for r in job["requests"] for i in r["sample_ids"]})
    split = _split(meta, _batch_scenario([r["scenario"] for r in job["requests"]]))
    missing = sorted(set(ids) - set(split.forget_idx.tolist()))
    if missing:
        raise OblivioError(f"samples {missing[:5]} of the batch are not in its forget set; the data changed since the requests were filed")
    # What earlier runs forgot stays out of the retain set, so no method learns it back.
    # The sidecar keeps the standard split of this batch (so 'oblivio audit' can rebuild it).
    previous = np.asarray(forgotten_before(meta), dtype=np.int64)
    recorded_split = split.spec()
    earlier = np.setdiff1d(previous, split.forget_idx)
    split.pool_idx = np.setdiff1d(split.pool_idx, earlier)
    forgotten = sorted(set(previous.tolist()) | set(split.forget_idx.tolist()))
    out = Path(job["output_path"])
    stamp = {"run": job["run_id"], "input_sha256": meta["weights_sha256"], "requests": sorted(r["external_ref"] for r in job["requests"]),
             "forgotten": forgotten}
    owned = owned_output(out, stamp, lambda m: (m.get("extra") or {}).get("ledger"), load_checkpoint)
    if owned is None:
        raise OblivioError(f"{out.name} exists and was not written by ledger run {job['run_id']}; move it or choose another --out-dir")
    if owned:
        log(f"run {job['run_id']}: reusing its complete checkpoint {out}")
        new_model, new_meta = load_checkpoint(out)
        record = new_meta["extra"]["unlearning"]
    else:
        # verify=False: the ledger's own gate is the audit below (a batch closes only when it passes,
        # and a failed audit is recorded as such), stronger than unlearn's no-op check
        # the lineage's earlier deletions must look unseen too (dm tests and matches the union)
        result = unlearn(model, split=split, method=job["method"], arch=meta.get("arch"), seed=job["seed"],
                         verify=False, previously_forgotten=split.subset(earlier) if earlier.size else None,
                         **recorded_recipe(meta), **job["options"])
        crash_point("unlearned")
        record = {"method": result.method, "config": json_safe(result.config), "seconds": result.seconds,
                  "info": json_safe(result.info), "original": {"path": meta["path"], "model_hash": meta["model_hash"]},
                  "recipe": recorded_recipe(meta)}
        out.parent.mkdir(parents=True, exist_ok=True)
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


# ---------------------------------------------------------------- scheduling and claims


def _lease(lease_s: float):
    return utcnow() + timedelta(seconds=lease_s)


def _claim(run: UnlearningRun, worker: str, lease_s: float) -> None:
    run.claimed_by, run.lease_until = worker, _lease(lease_s)


def _gone(claimed_by: str | None) -> bool:
    """True when the claim names a process on this host that no longer exists (killed before its lease ran out)."""
    try:
        host, pid, _ = (claimed_by or "").rsplit(":", 2)
        if host != socket.gethostname()[:32]:
            return False
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError, OverflowError):
        return False
    return False


def _expired(run: UnlearningRun) -> bool:
    """A scheduled run nobody works on: its lease ran out, or its worker on this host is dead."""
    return run.lease_until is None or run.lease_until < utcnow() or _gone(run.claimed_by)


def _lock_version(s: Session, version_id: int, skip_locked: bool = False) -> bool:
    """Lock a model version's row for this transaction (PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes
    writers). Scheduling on a model and recording a run's outcome take this lock, so a model never gets two
    children. False: ``skip_locked`` and another transaction holds it."""
    stmt = select(ModelVersion.id).where(ModelVersion.id == version_id)
    if s.get_bind().dialect.name != "postgresql":
        return True
    return s.execute(stmt.with_for_update(skip_locked=skip_locked)).first() is not None


def _schedule(s: Session, version: ModelVersion, method: str, options: dict, seed: int, out_dir: Path | None,
              retry_failed: bool, log: Callable[[str], None], worker: str, lease_s: float) -> UnlearningRun | None:
    """The run to work on, claimed for ``worker``: one left scheduled for this model whose worker is gone,
    else a new one holding every pending request of the lineage (of one scenario kind).

    Raises ``InProgress`` when a live worker holds this model's run.
    """
    child = _child(s, version)
    if child is not None:
        raise OblivioError(
            f"model version {version.id} was already unlearned into version {child.id} "
            f"({Path(child.checkpoint_path).name}); process that checkpoint so earlier deletions stay forgotten")
    run = s.scalars(select(UnlearningRun).where(UnlearningRun.input_version_id == version.id,
                                                UnlearningRun.status == SCHEDULED)
                    .order_by(UnlearningRun.id).with_for_update()).first()
    if run is not None:
        if not _expired(run) and run.claimed_by != worker:
            raise InProgress(f"run {run.id} of model version {version.id} is in progress (worker {run.claimed_by}); "
                             "wait for it to finish")
        if (run.method, run.options, run.seed) != (method, options, seed):
            log(f"run {run.id} was scheduled with method {run.method} {run.options} seed {run.seed}; finishing it with those")
        else:
            log(f"resuming run {run.id} left scheduled")
        _claim(run, worker, lease_s)
        return run
    lineage = _lineage(s, version)
    if retry_failed:
        for r in s.scalars(select(Request).where(Request.model_version_id.in_(lineage), Request.status == FAILED)):
            r.error, r.run_id = None, None
            _history(s, r, RECEIVED, "retry requested")
        s.flush()
    pending = s.scalars(_locked(s, select(Request).where(Request.model_version_id.in_(lineage), Request.status == RECEIVED)
                                .order_by(Request.id))).all()
    if not pending:
        return None
    kind = pending[0].scenario["kind"]  # one kind per batch, so the audit judges it by the right rule
    later = [r for r in pending if r.scenario["kind"] != kind]
    if later:
        log(f"{len(later)} pending request(s) of another scenario wait for the next run (process the new checkpoint)")
    pending = [r for r in pending if r.scenario["kind"] == kind]
    run = UnlearningRun(input_version_id=version.id, method=method, options=options, seed=seed, output_path="",
                        claimed_by=worker, lease_until=_lease(lease_s))
    s.add(run)
    s.flush()
    folder = out_dir if out_dir is not None else Path(version.checkpoint_path).parent
    run.output_path = str(folder / f"{_root_stem(s, version)}.run-{run.id}.safetensors")
    s.execute(update(Request).where(Request.id.in_([r.id for r in pending]), Request.status == RECEIVED)
              .values(status=SCHEDULED, run_id=run.id).execution_options(synchronize_session=False))
    now = utcnow()
    for r in pending:
        s.add(StatusChange(request_id=r.id, status=SCHEDULED, note=f"run {run.id}", at=now))
    s.flush()
    s.expire(run, ["requests"])
    return run


def _locked(s: Session, stmt):
    """``stmt`` with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (rows another transaction is claiming are left to it)."""
    return stmt.with_for_update(skip_locked=True) if s.get_bind().dialect.name == "postgresql" else stmt


def _job(run: UnlearningRun, version: ModelVersion) -> dict:
    return {"run_id": run.id, "method": run.method, "options": run.options, "seed": run.seed,
            "output_path": run.output_path, "version_id": version.id, "checkpoint": version.checkpoint_path,
            "weights_sha256": version.weights_sha256, "worker": run.claimed_by,
            "requests": [{"id": r.id, "external_ref": r.external_ref, "scenario": r.scenario, "sample_ids": r.sample_ids}
                         for r in run.requests]}


class _Heartbeat:
    """Renews a run's lease every third of its length while the work runs; notes when the claim was lost."""

    def __init__(self, db: str | None, run_id: int, worker: str, lease_s: float):
        self.db, self.run_id, self.worker, self.lease_s = db, run_id, worker, lease_s
        self.stop, self.lost = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"lease-run-{run_id}", daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.lease_s / 3):
            try:
                with session_scope(self.db) as s:
                    n = s.execute(update(UnlearningRun).where(UnlearningRun.id == self.run_id, UnlearningRun.claimed_by == self.worker,
                                                              UnlearningRun.status == SCHEDULED)
                                  .values(lease_until=_lease(self.lease_s))).rowcount
                if n == 0:
                    self.lost.set()
                    return
            except Exception:  # noqa: BLE001 - a missed beat is retried; the fenced commit decides
                continue

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def _held(run: UnlearningRun | None, worker: str) -> bool:
    return run is not None and run.status == SCHEDULED and run.claimed_by == worker


def _fail(db: str | None, job: dict, error: str) -> None:
    """Record a claimed run and its requests as failed with ``error`` (if the claim is still ours)."""
    with session_scope(db) as s:
        _lock_version(s, job["version_id"])
        run = s.get(UnlearningRun, job["run_id"], with_for_update=True)
        if _held(run, job["worker"]):
            run.status, run.error, run.finished_at, run.lease_until = FAILED, error, utcnow(), None
            for r in run.requests:
                r.error = error
                _history(s, r, FAILED, error)


def run_job(job: dict, model, meta: dict, db: str | None, log: Callable[[str], None], lease_s: float = LEASE_S) -> dict:
    """Do a claimed run's work and record its outcome (only while the claim is still ours)."""
    worker = job["worker"]
    log(f"run {job['run_id']}: {len(job['requests'])} request(s), method {job['method']}")
    crash_point("scheduled")
    with _Heartbeat(db, job["run_id"], worker, lease_s) as beat:
        try:
            done = _execute(job, model, meta, log)
        except Exception as e:  # recorded as the run's failure (a signal that stops the process leaves it resumable)
            _fail(db, job, str(e) if isinstance(e, OblivioError) else f"{type(e).__name__}: {e}")
            raise
    with session_scope(db) as s:
        _lock_version(s, job["version_id"])
        run = s.get(UnlearningRun, job["run_id"], with_for_update=True)
        if not _held(run, worker):  # finished or taken over by another worker meanwhile
            log(f"run {job['run_id']}: {'lost its claim' if beat.lost.is_set() else 'no longer ours'}; "
                f"recording nothing (it is {run.status}, worker {run.claimed_by})")
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
        run.finished_at, run.lease_until = utcnow(), None
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


def _load(checkpoint: str | os.PathLike, weights_sha256: str | None = None):
    """(model, sidecar) of a classifier checkpoint; (None, sidecar) of a language model (loaded by its run)."""
    from ..checkpoint import load_checkpoint, read_sidecar

    side = read_sidecar(checkpoint)
    if is_lm(side):
        if weights_sha256 is not None and side["weights_sha256"] != weights_sha256:
            raise OblivioError(f"checkpoint {Path(checkpoint).name} changed since it was registered (weights SHA-256 differs)")
        return None, language.checked_meta(checkpoint, side)
    model, meta = load_checkpoint(checkpoint)
    if not meta.get("training"):
        raise OblivioError(f"checkpoint {Path(checkpoint).name} has no training record; was it written by 'oblivio train'?")
    if weights_sha256 is not None and meta["weights_sha256"] != weights_sha256:
        raise OblivioError(f"checkpoint {Path(checkpoint).name} changed since it was registered (weights SHA-256 differs)")
    meta["path"] = str(Path(checkpoint).resolve())
    return model, meta


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
    lease_s: float = LEASE_S,
) -> dict | None:
    """Unlearn every pending request for ``checkpoint`` (and the versions it descends from) as one batch.

    Writes ``<out_dir>/<root stem>.run-<id>.safetensors`` (default: beside the input, which is never
    modified) and its audit in ``<root stem>.run-<id>.audit/``; returns the run (None when nothing is
    pending). A run left ``scheduled`` by a killed worker is finished first, with the method it was
    scheduled with; one a live worker holds is refused (``InProgress``).
    """
    from ..methods import get_method

    options = dict(options or {})
    model, meta = _load(checkpoint)
    if model is None:
        language.check_method(method, options)
    else:
        get_method(method, **options)  # unknown method or option: refuse before touching anything
    worker = worker_name()
    with session_scope(db) as s:
        version = _get_or_create_version(s, checkpoint, meta)
        s.flush()
        _lock_version(s, version.id)
        run = _schedule(s, version, method, options, seed, Path(out_dir) if out_dir is not None else None,
                        retry_failed, log, worker, lease_s)
        if run is None:
            return None
        job = _job(run, version)
    return run_job(job, model, meta, db, log, lease_s)


# ---------------------------------------------------------------- the worker


def claim_next(db: str | None, *, method: str = "dm", options: dict | None = None, seed: int = 0,
               out_dir: str | os.PathLike | None = None, batch_size: int = 1, max_wait_s: float = 0.0,
               worker: str | None = None, lease_s: float = LEASE_S, log: Callable[[str], None] = lambda m: None) -> dict | None:
    """Claim one run for ``worker``: a scheduled run whose worker is gone, else a new batch for a model whose
    pending requests number ``batch_size`` or more or whose oldest waited ``max_wait_s``. None: nothing to do."""
    worker = worker or worker_name()
    with session_scope(db) as s:
        scheduled = s.scalars(_locked(s, select(UnlearningRun).where(UnlearningRun.status == SCHEDULED)
                                      .order_by(UnlearningRun.id))).all()
        stale = next((run for run in scheduled if _expired(run)), None)
        if stale is not None:
            log(f"resuming run {stale.id} left scheduled by {stale.claimed_by or 'a stopped process'}")
            _claim(stale, worker, lease_s)
            return _job(stale, stale.input_version)
    with session_scope(db) as s:
        pending = s.execute(select(Request.model_version_id, Request.received_at).where(Request.status == RECEIVED)
                            .order_by(Request.id)).all()
        groups: dict[int, list] = {}
        for vid, at in pending:
            groups.setdefault(vid, []).append(at)
        by_newest: dict[int, list] = {}
        for vid, times in groups.items():
            by_newest.setdefault(newest(s, s.get(ModelVersion, vid)).id, []).extend(times)
        now = utcnow()
        for vid, times in sorted(by_newest.items(), key=lambda kv: min(kv[1])):
            if len(times) < batch_size and (now - min(times)).total_seconds() < max_wait_s:
                continue
            if not _lock_version(s, vid, skip_locked=True):
                continue  # another worker is scheduling this model, or recording its run, right now
            version = s.get(ModelVersion, vid)
            try:
                with s.begin_nested():
                    run = _schedule(s, version, method, dict(options or {}), seed,
                                    Path(out_dir) if out_dir is not None else None, False, log, worker, lease_s)
            except OblivioError:  # in progress elsewhere, or unlearned meanwhile: the next round sees it
                continue
            if run is not None:
                return _job(run, version)
    return None


def work_once(db: str | None, *, lease_s: float = LEASE_S, log: Callable[[str], None] = lambda m: None, **claim) -> dict | None:
    """Claim and process one run (see ``claim_next``); its outcome, or None when nothing was ready."""
    job = claim_next(db, lease_s=lease_s, log=log, **claim)
    if job is None:
        return None
    try:
        model, meta = _load(job["checkpoint"], job["weights_sha256"])
    except OblivioError as e:
        _fail(db, job, str(e))
        log(f"run {job['run_id']} failed: {e}")
        return {"id": job["run_id"], "status": FAILED, "error": str(e)}
    try:
        return run_job(job, model, meta, db, log, lease_s)
    except Exception as e:  # noqa: BLE001 - recorded by run_job; the worker goes on with the next batch
        log(f"run {job['run_id']} failed: {e}")
        return {"id": job["run_id"], "status": FAILED, "error": str(e)}


def run_view(run: UnlearningRun) -> dict:
    audit = run.audit
    return {
        "id": run.id, "status": run.status, "error": run.error, "method": run.method, "options": run.options, "seed": run.seed,
        "input_version": run.input_version_id, "output_version": run.output_version_id, "checkpoint": run.output_path,
        "seconds": run.seconds, "requests": [r.external_ref for r in run.requests],
        "verdict": audit.verdict if audit else None, "headline": audit.headline if audit else None,
        "report": audit.report_path if audit else None,
    }
