"""Filing and reading deletion requests: model versions, the samples a request names, and its record.

Filing is on the hot path of the HTTP API, so the per-request work is small: a model version's
row and its checkpoint's sidecar are cached per process (the weights are re-hashed only when the
file's size, inode or modification time changes), random-scenario indices are checked against a
cached pool of the model's training set, and the request and its first status row are written in
one transaction (``INSERT ... ON CONFLICT DO NOTHING`` decides idempotency in the database).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import OblivioError
from .db import session_scope
from .language import AUTHOR, author_spec, is_lm, lm_info, resolve_authors
from .limits import MAX_CLASSES, MAX_INDICES, MAX_INT, check_ints, check_ref, check_text
from .models import RECEIVED, REQUEST_STATES, ModelVersion, Request, StatusChange, utcnow

SAMPLE_HASH_RECIPE = (
    "sha256 of the sample as the model trained on it: its float32 image bytes (C order, shape (C, H, W), "
    "values in [0, 1]) followed by its label as little-endian int64"
)
SCENARIOS = ("random", "class", "backdoor", "author")


class NotFound(OblivioError):
    """No such request or model version."""


class Conflict(OblivioError):
    """The external reference was already filed with a different content."""


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


def scenario_spec(kind: str, indices: Sequence[int] | None = None, classes: Sequence[int] | None = None,
                  authors: Sequence[str] | None = None) -> dict:
    """The request's scenario as stored: {"kind": "random", "indices": [...]}, {"kind": "class", "classes": [...]},
    {"kind": "backdoor"} or, for a language model, {"kind": "author", "authors": [...]}."""
    if kind not in SCENARIOS:
        raise OblivioError(f"unknown scenario {str(kind)[:40]!r}; choose random, class, backdoor or author")
    if kind == "author":
        if indices or classes:
            raise OblivioError("an author request takes author names, not indices or classes")
        return author_spec(authors)
    if authors:
        raise OblivioError(f"a {kind} request takes no authors (authors are for language models: scenario author)")
    if kind == "random":
        if not indices:
            raise OblivioError("a random-scenario request names its samples: give indices into the training set")
        if classes:
            raise OblivioError("a random-scenario request takes indices, not classes")
        return {"kind": "random", "indices": sorted(check_ints(indices, "indices", MAX_INDICES))}
    if kind == "class":
        if not classes:
            raise OblivioError("a class-scenario request needs the classes to forget")
        if indices:
            raise OblivioError("a class-scenario request takes classes, not indices")
        return {"kind": "class", "classes": sorted(check_ints(classes, "classes", MAX_CLASSES))}
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


class _Pool:
    """A clean model's training pool, cut once: random-scenario indices are checked against it per request."""

    def __init__(self, meta: dict):
        import numpy as np

        from ..scenarios import RandomSubset

        self.split = _split(meta, RandomSubset(count=1))
        self.n_train = len(self.split.y_train)
        self.third = np.zeros(self.n_train, dtype=bool)
        self.third[self.split.third_party_idx] = True
        self.pool = np.zeros(self.n_train, dtype=bool)  # an imported model's cut may leave samples in neither
        self.pool[self.split.pool_idx] = True
        self.pool_size = len(self.split.pool_idx)

    def resolve(self, indices: list[int]) -> list[int]:
        """The same checks and messages as ``make_split`` for explicit indices, without rebuilding the split."""
        bad = [i for i in indices if not 0 <= i < self.n_train]
        if bad:
            raise OblivioError(f"random scenario: forget indices out of range {bad[:5]}; the training set has "
                               f"{self.n_train} samples (0..{self.n_train - 1})")
        held = [i for i in indices if self.third[i]]
        if held:
            raise OblivioError(f"random scenario: indices {held[:5]} are in the held-out third-party pool, which the model never trained on")
        unseen = [i for i in indices if not self.pool[i]]
        if unseen:
            raise OblivioError(f"random scenario: indices {unseen[:5]} are not in the training pool, which the model "
                               "never trained on")
        if len(indices) >= self.pool_size:
            raise OblivioError("random scenario: forgetting every training sample leaves nothing to retain")
        return sorted(indices)


_pools: dict[tuple, _Pool] = {}
_pools_lock = threading.Lock()


def resolve_samples(meta: dict, spec: dict) -> tuple[list[int], list[str]]:
    """The training-set indices a request's scenario names for this checkpoint, and their content hashes."""
    if is_lm(meta) != (spec["kind"] == AUTHOR):
        raise OblivioError("a language model takes author requests (scenario author)" if is_lm(meta)
                           else "an author request needs a language-model checkpoint ('oblivio lm train')")
    if spec["kind"] == AUTHOR:
        return resolve_authors(meta, spec)
    if spec["kind"] == "random" and not (meta.get("training") or {}).get("backdoor"):
        key = (meta.get("weights_sha256"), json.dumps(meta.get("training"), sort_keys=True))
        with _pools_lock:
            pool = _pools.get(key)
        if pool is None:
            pool = _Pool(meta)
            with _pools_lock:
                if len(_pools) > 16:
                    _pools.clear()
                _pools[key] = pool
        ids = pool.resolve(list(spec["indices"]))
        return ids, sample_hashes(pool.split, ids)
    split = _split(meta, _scenario(spec))
    ids = [int(i) for i in split.forget_idx]
    return ids, sample_hashes(split, ids)


# ---------------------------------------------------------------- model versions


_meta_cache: dict[str, tuple[tuple, dict]] = {}
_meta_lock = threading.Lock()


def _read_meta(checkpoint: str | os.PathLike) -> tuple[dict, str]:
    """A checkpoint's sidecar and the SHA-256 of its weights file (refused when they disagree).

    Cached per file while its size, inode and modification times stay the same.
    """
    from ..checkpoint import read_sidecar, sidecar_path

    path = str(Path(checkpoint).resolve())
    try:
        st, side = os.stat(path), os.stat(sidecar_path(path))
        key = (st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, side.st_size, side.st_ino, side.st_mtime_ns)
    except OSError:
        key = None
    with _meta_lock:
        hit = _meta_cache.get(path)
    if key is not None and hit is not None and hit[0] == key:
        return dict(hit[1]), hit[1]["weights_sha256"]
    meta = read_sidecar(checkpoint)
    digest = sha256_file(checkpoint)
    if digest != meta.get("weights_sha256"):
        raise OblivioError(f"checkpoint {checkpoint} does not match its sidecar: the weights' SHA-256 differs")
    if key is not None:
        with _meta_lock:
            _meta_cache[path] = (key, meta)
    return dict(meta), digest


def _get_or_create_version(session: Session, checkpoint: str | os.PathLike, meta: dict, parent_id: int | None = None) -> ModelVersion:
    digest = meta["weights_sha256"]
    found = session.scalars(select(ModelVersion).where(ModelVersion.weights_sha256 == digest)).first()
    if found is not None:
        return found
    training = meta.get("training") or {"data": lm_info(meta).get("corpus")}
    split_hashes = {"pool": training.get("pool_hash"), "third_party": training.get("third_party_hash")}
    if meta.get("split"):
        split_hashes |= {"forget_split": meta["split"].get("hashes")}
    version = ModelVersion(
        weights_sha256=digest, model_hash=meta["model_hash"], parent_id=parent_id,
        checkpoint_path=str(Path(checkpoint).resolve()), arch=meta.get("arch") or lm_info(meta).get("arch"),
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
    if not meta.get("training") and not is_lm(meta):
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
        v = session.get(ModelVersion, model_version) if 1 <= model_version <= MAX_INT else None
        if v is None:
            raise NotFound(f"no model version {model_version}")
        return v
    v = session.scalars(select(ModelVersion).where(ModelVersion.weights_sha256 == (model_sha256 or "").lower())).first()
    if v is None:
        raise NotFound(f"no model version with weights SHA-256 {model_sha256}; register its checkpoint first "
                       "('oblivio requests register --checkpoint ...')")
    return v


_versions: dict[Any, dict] = {}  # id and weights SHA-256 -> version_view; version rows never change
_versions_lock = threading.Lock()


def _cached_version(db: str | None, model_version: int | None, model_sha256: str | None) -> dict:
    from .db import resolve_url

    key = (resolve_url(db), model_version if model_version is not None else (model_sha256 or "").lower())
    with _versions_lock:
        view = _versions.get(key)
    if view is None:
        with session_scope(db, write=False) as s:
            view = version_view(_find_version(s, model_version, model_sha256))
        with _versions_lock:
            if len(_versions) > 1024:
                _versions.clear()
            _versions[key] = view
    return view


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


def _insert_ignoring_duplicate(s: Session, values: dict) -> int | None:
    """INSERT the request unless its external reference exists; its new id, or None for a duplicate."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    stmt = dialect_insert(Request).values(**values).on_conflict_do_nothing(index_elements=["external_ref"]).returning(Request.id)
    return s.execute(stmt).scalar()


def add_request(
    external_ref: str,
    *,
    checkpoint: str | os.PathLike | None = None,
    model_version: int | None = None,
    model_sha256: str | None = None,
    scenario: str = "random",
    indices: Sequence[int] | None = None,
    classes: Sequence[int] | None = None,
    authors: Sequence[str] | None = None,
    reason: str | None = None,
    db: str | None = None,
) -> tuple[dict, bool]:
    """File a deletion request against a model (its checkpoint, registered version id or weights SHA-256).

    Returns (request, created). Filing an external reference again with the same model and samples
    returns the existing request (created False); with different ones it raises ``Conflict``.
    Samples are checked against the model's training data and stored with their content hashes.
    """
    ref = check_ref(external_ref)
    reason = check_text(reason, "reason")
    spec = scenario_spec(scenario, indices, classes, authors)
    if sum(x is not None for x in (checkpoint, model_version, model_sha256)) != 1:
        raise OblivioError("name the model by exactly one of: checkpoint, model version id, weights SHA-256")
    if checkpoint is not None:
        meta, _ = _read_meta(checkpoint)
        with session_scope(db) as s:
            version = version_view(_get_or_create_version(s, checkpoint, meta))
    else:
        version = _cached_version(db, model_version, model_sha256)
        meta = _version_meta(version["id"], version["checkpoint"], version["weights_sha256"])
    ids, hashes = resolve_samples(meta, spec)
    now = utcnow()
    values = dict(external_ref=ref, model_version_id=version["id"], scenario=spec, sample_ids=ids, sample_hashes=hashes,
                  reason=reason, status=RECEIVED, received_at=now)
    with session_scope(db) as s:
        new_id = _insert_ignoring_duplicate(s, values)
        if new_id is not None:
            s.execute(insert(StatusChange).values(request_id=new_id, status=RECEIVED, at=now, note=None))
    if new_id is None:  # the reference exists: the same request again, or a conflict
        with session_scope(db, write=False) as s:
            existing = s.scalars(select(Request).where(Request.external_ref == ref)).one()
            _same_request(existing, version["id"], spec)
            return request_view(existing), False
    view = {k: values[k] for k in ("external_ref", "status", "scenario", "reason")} | {
        "id": new_id, "error": None, "received_at": _iso(now), "model_version": version["id"], "samples": len(ids),
        "run_id": None, "model": version, "sample_ids": ids, "sample_hashes": hashes,
        "history": [{"status": RECEIVED, "at": _iso(now), "note": None}],
    }
    return view, True


def _get_request(s: Session, request_id: int | None = None, ref: str | None = None) -> Request:
    """A request by its id or by its external reference (two separate namespaces: a digit ref never reads an id)."""
    if (request_id is None) == (ref is None):
        raise OblivioError("name a request by exactly one of: id, external reference")
    if request_id is not None:
        r = s.get(Request, request_id) if isinstance(request_id, int) and 1 <= request_id <= MAX_INT else None
        if r is None:
            raise NotFound(f"no request with id {request_id}")
        return r
    r = s.scalars(select(Request).where(Request.external_ref == ref)).first() if isinstance(ref, str) and "\x00" not in ref else None
    if r is None:
        raise NotFound(f"no request with external reference {ascii(ref)[:80]}")
    return r


def get_request(ref: str | None = None, db: str | None = None, *, request_id: int | None = None) -> dict:
    """One request (by external reference, or ``request_id=``) with samples and status history."""
    with session_scope(db, write=False) as s:
        return request_view(_get_request(s, request_id, ref))


def list_requests(status: str | None = None, db: str | None = None, limit: int | None = None) -> list[dict]:
    """Requests, oldest first, optionally only those in ``status``."""
    if status is not None and status not in REQUEST_STATES:
        raise OblivioError(f"unknown status {str(status)[:40]!r}; choose one of {', '.join(REQUEST_STATES)}")
    with session_scope(db, write=False) as s:
        q = select(Request).order_by(Request.id)
        if status:
            q = q.where(Request.status == status)
        if limit:
            q = q.limit(limit)
        return [request_view(r, full=False) for r in s.scalars(q)]


def audit_files(ref: str | None = None, db: str | None = None, *, request_id: int | None = None) -> dict[str, Path]:
    """Paths of the audit report (``json``, ``html``) of a request's run."""
    with session_scope(db, write=False) as s:
        r = _get_request(s, request_id, ref)
        audit = r.run.audit if r.run is not None else None
        if audit is None:
            raise NotFound(f"request {r.id} has no audit yet (status {r.status})")
        folder = Path(audit.report_path)
    return {"json": folder / "audit.json", "html": folder / "report.html"}
