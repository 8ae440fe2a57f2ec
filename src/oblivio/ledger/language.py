"""Deletion requests on language models: "forget author X" filed against an oblivio LM checkpoint.

A request of kind ``author`` names authors of the checkpoint's fictitious-author corpus (``oblivio lm
train``); its samples are every fact of those authors, stored with a content hash of each question and
answer. Processing forgets the batch's authors together with every author the lineage forgot before (so a
chain of requests converges to one model that never saw any of them) with an LM method (``oblivio lm
methods``; ``dm`` by default), and audits the result without a retrained model: a loss-based membership
attack must not tell the forgotten authors' answers from those of authors the model never saw (AUC within
two standard errors of chance), and utility on retain and world facts is recorded beside the original's.
"""
from __future__ import annotations

import hashlib
import html
import json
import math
from pathlib import Path
from typing import Callable, Sequence

from ..errors import OblivioError
from ..lm import is_lm_sidecar as is_lm
from .limits import check_text
from .outputs import crash_point, owned_output

AUTHOR = "author"
MAX_AUTHORS = 100
MAX_AUTHOR_NAME = 200
AUTHOR_PATTERN = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]{0,198}[^\s\x00-\x1f\x7f])?$"  # no control characters, trimmed
FACT_HASH_RECIPE = "sha256 over the UTF-8 bytes of question + '\\n' + answer of each fact of the named authors, in corpus order"


def lm_info(meta: dict) -> dict:
    return (meta.get("extra") or {}).get("lm") or {}


def author_spec(authors: Sequence[str] | None) -> dict:
    """The stored scenario of an author request: ``{"kind": "author", "authors": [...]}`` (sorted, distinct)."""
    if not authors:
        raise OblivioError("an author request names the authors to forget")
    if len(authors) > MAX_AUTHORS:
        raise OblivioError(f"at most {MAX_AUTHORS} authors per request, got {len(authors)}")
    names = []
    for a in authors:
        if not isinstance(a, str) or not a.strip():
            raise OblivioError("author names must be non-empty text")
        names.append(check_text(a.strip(), "an author name", MAX_AUTHOR_NAME))
    if len(set(names)) != len(names):
        raise OblivioError("author names must be distinct")
    return {"kind": AUTHOR, "authors": sorted(names)}


def _corpus(info: dict):
    from ..lm.data import recorded_corpus

    return recorded_corpus(info)


def fact_hash(qa) -> str:
    return hashlib.sha256(f"{qa.question}\n{qa.answer}".encode()).hexdigest()


def resolve_authors(meta: dict, spec: dict) -> tuple[list[int], list[str]]:
    """The corpus indices of the named authors' facts and their content hashes; unknown or never-trained
    authors are one-line errors."""
    info = lm_info(meta)
    corpus = _corpus(info)
    trained = set(info.get("trained_authors") or [])
    for name in spec["authors"]:
        if name not in corpus.authors:
            raise OblivioError(f"unknown author {name[:60]!r}: not in this model's corpus")
        if trained and name not in trained:
            raise OblivioError(f"author {name[:60]!r} is held out: the model never trained on them")
    wanted = set(spec["authors"])
    ids = [i for i, qa in enumerate(corpus.facts) if qa.author in wanted]
    return ids, [fact_hash(corpus.facts[i]) for i in ids]


def checked_meta(checkpoint: str | Path, meta: dict) -> dict:
    """``meta`` of an LM checkpoint with its path, for processing (the weights are loaded by ``execute``)."""
    return dict(meta) | {"path": str(Path(checkpoint).resolve())}


def check_method(method: str, options: dict) -> None:
    """Refuse an unknown LM method or option before anything is scheduled (one line)."""
    from ..lm.methods import get_lm_method

    get_lm_method(method)(**options)


def _chance_band(n_members: int, n_nonmembers: int) -> float:
    """Two standard errors of a ROC AUC under the null of no signal (Mann-Whitney: var = (n1+n2+1)/(12 n1 n2))."""
    return 2 * math.sqrt((n_members + n_nonmembers + 1) / (12 * n_members * n_nonmembers))


def lm_verdict(unlearned: dict, original: dict, n_forget: int, n_holdout: int) -> dict:
    """Pass when a loss MIA cannot tell forgotten authors from never-seen ones (AUC within two standard errors
    of 0.5, or below); fail otherwise. The original's AUC is quoted for scale."""
    band = _chance_band(n_forget, n_holdout)
    auc, before = unlearned["mia_loss"], original["mia_loss"]
    ok = auc <= 0.5 + band
    headline = (f"a loss membership attack tells the forgotten authors' answers from never-seen authors' with AUC "
                f"{auc:.2f} (original {before:.2f}; chance 0.5 +- {band:.2f}): "
                + ("forgotten" if ok else "still recognised as trained on"))
    return {"status": "pass" if ok else "fail", "basis": "membership inference against held-out authors",
            "headline": headline, "checks": {"mia_loss_auc": auc, "chance_band": band, "original_mia_loss_auc": before}}


def _write_audit(folder: Path, doc: dict) -> tuple[Path, Path]:
    """audit.json and a plain report.html (every value escaped) into ``folder``, both or neither."""
    from ..audit.report import write_audit_files

    before = doc["metrics"]["original"]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{before.get(k, float('nan')):.4f}</td><td>{v:.4f}</td></tr>"
                   for k, v in doc["metrics"]["unlearned"].items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>oblivio LM audit</title></head><body>"
            f"<h1>Language-model audit: {html.escape(doc['verdict']['status'])}</h1><p>{html.escape(doc['verdict']['headline'])}</p>"
            f"<p>Forgotten authors: {html.escape(', '.join(doc['forgotten_authors']))}</p>"
            f"<table><tr><th>metric</th><th>original</th><th>unlearned</th></tr>{rows}</table></body></html>")
    return write_audit_files(folder, json.dumps(doc, indent=2), page)


def execute(job: dict, meta: dict, log: Callable[[str], None]) -> dict:
    """Unlearn a batch of author requests on an LM checkpoint, write the new checkpoint, audit it."""
    import numpy as np

    from ..checkpoint import read_sidecar
    from ..cli.forget import json_safe
    from ..lm import data as D, metrics as X
    from ..lm.methods import LMUnlearnData, unlearn_lm
    from ..lm.models import load_lm, save_lm
    from ..lm.training import TrainConfig
    from .models import utcnow
    from .requests import sha256_file

    model, tok, info = load_lm(meta["path"])
    corpus = _corpus(info)
    batch = sorted({a for r in job["requests"] for a in r["scenario"]["authors"]})
    earlier = sorted(set(info.get("forgotten_authors") or []) - set(batch))
    authors = sorted(set(batch) | set(earlier))
    splits = D.make_splits(corpus, seed=job["seed"], forget_authors=authors)
    out = Path(job["output_path"])
    stamp = {"run": job["run_id"], "input_sha256": meta["weights_sha256"],
             "requests": sorted(r["external_ref"] for r in job["requests"]), "forgotten_authors": authors}
    owned = owned_output(out, stamp, lambda m: lm_info(m).get("ledger"), load_lm)
    if owned is None:
        raise OblivioError(f"{out.name} exists and was not written by ledger run {job['run_id']}; move it or choose another --out-dir")
    if owned:
        log(f"run {job['run_id']}: reusing its complete checkpoint {out}")
        new_model, _, new_info = load_lm(out)
        record = new_info["unlearning"]
    else:
        train = TrainConfig(**info["train"]) if isinstance(info.get("train"), dict) else None
        data = LMUnlearnData.from_splits(tok, splits, job["seed"], train, {"arch": info["arch"], "config": info["config"]})
        result = unlearn_lm(model, data, job["method"], **job["options"])
        crash_point("unlearned")
        record = {"method": result.method, "config": json_safe(result.config), "seconds": result.seconds,
                  "info": json_safe(result.info), "original": {"path": meta["path"], "model_hash": meta["model_hash"]}}
        keep = {k: info[k] for k in ("corpus", "train", "trained_authors", "heldout_authors") if k in info}
        save_lm(out, result.model, tok, seed=job["seed"], extra=keep | {
            "forgotten_authors": authors, "method": job["method"], "unlearn_info": record["info"],
            "original": Path(meta["path"]).name, "unlearning": record, "ledger": stamp})
        new_model = result.model
    new_meta = read_sidecar(out) | {"path": str(out.resolve())}
    unlearned_at = utcnow()
    crash_point("checkpoint")
    metrics = {}
    for role, m in (("original", model), ("unlearned", new_model)):
        ev = X.evaluate(m, tok, splits, None, seed=job["seed"])
        metrics[role] = {k: float(v) for k, v in ev.items() if not isinstance(v, np.ndarray)}
    verdict = lm_verdict(metrics["unlearned"], metrics["original"], len(splits.qa("forget")), len(splits.qa("holdout")))
    doc = {"kind": "language-model", "forgotten_authors": authors, "batch_authors": batch, "metrics": metrics,
           "verdict": verdict, "checkpoint": out.name}
    json_path, html_path = _write_audit(out.parent / f"{out.stem}.audit", doc)
    audited_at = utcnow()
    crash_point("audited")
    return {
        "out": out, "meta": new_meta, "record": record,
        "split": {"kind": AUTHOR, "forget_authors": authors, "earlier_forgotten": len(earlier), "digest": splits.digest(),
                  "sizes": {"forget": len(splits.qa("forget")), "retain": len(splits.qa("retain")),
                            "reference": len(splits.qa("reference")), "holdout": len(splits.qa("holdout"))}},
        "metrics": metrics, "verdict": verdict, "report": json_path.parent,
        "report_sha256": {"audit.json": sha256_file(json_path), "report.html": sha256_file(html_path)},
        "unlearned_at": unlearned_at, "audited_at": audited_at,
    }
