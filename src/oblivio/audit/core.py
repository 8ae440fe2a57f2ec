"""``audit``: every measure for an unlearned model, against the original and a retrained model."""
from __future__ import annotations

import copy
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_checkpoint, model_hash, read_sidecar
from ..device import resolve_device
from ..errors import OblivioError
from ..parallel import Executor
from ..scenarios import Split
from ..training import place
from .lira import LiraConfig, lira_attack, shadow_config_for, train_shadows
from .metrics import (
    METRIC_KEYS,
    check_split,
    gap_to_retrain,
    metrics_from_outputs,
    model_outputs,
    reference_set,
    threshold_attack,
    time_ratio,
)
from .reference_models import check_members, per_example_test, train_population
from .verdict import remaining_test_accuracy, verdict

ROLES = ("original", "unlearned", "retrained")


def versions() -> dict[str, str]:
    import scipy
    import sklearn
    import torch

    from .. import __version__

    return {"oblivio": __version__, "torch": torch.__version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "scipy": scipy.__version__, "python": platform.python_version()}


@dataclass
class AuditResult:
    """All audit numbers (``to_dict``) plus per-sample data for plots (``curves``, not serialised)."""

    seed: int
    split: dict
    models: dict[str, str | None]
    metrics: dict[str, dict[str, float]]
    gap: dict[str, dict[str, float]]
    time: dict[str, float | None]
    lira: dict | None
    verdict: dict
    method: dict | None = None
    population: dict | None = None
    notes: list[str] = field(default_factory=list)
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record: numbers, seed, split spec and hashes, model hashes, versions."""
        return {
            "format": "oblivio-audit/1",
            "seed": self.seed,
            "method": self.method,
            "split": self.split,
            "models": self.models,
            "metrics": self.metrics,
            "gap_to_retrain": self.gap,
            "time": self.time,
            "lira": self.lira,
            "population": self.population,
            "verdict": self.verdict,
            "notes": self.notes,
            "conventions": CONVENTIONS,
            "versions": versions(),
        }


CONVENTIONS = {
    "UA": "100 - forget-set accuracy, percent",
    "RA": "retain-set accuracy, percent",
    "TA": "test-set accuracy, percent",
    "MIA": ("MIA-efficacy, SalUn/Unlearn-Sparse convention, percent: RBF SVC (C=3, gamma='auto') on the true-label "
            "softmax confidence, trained on a seeded retain subset the size of the test set (member) vs the test set "
            "(non-member); share of forget samples predicted non-member. Higher = more forgotten"),
    "ASR": "backdoor attack success rate, percent: triggered test images of non-target classes classified as the target",
    "AUC": ("threshold attack on the true-label confidence (= loss) separating forget samples (members) from held-out "
            "reference samples; ROC AUC, 0.5 = indistinguishable"),
    "KS": "Kolmogorov-Smirnov statistic between true-label confidences of forget vs reference samples, 0..1",
    "avg_gap": "mean |metric - retrained metric| over UA, RA, TA, MIA (SalUn's Avg. Gap), percentage points",
    "LiRA": ("offline LiRA (Carlini et al. 2022): per-sample Gaussian of the logit-scaled confidence under shadow models "
             "that did not train on the sample; AUC and TPR at 1% / 0.1% FPR (percent), forget vs reference samples"),
    "population": ("per-example test against N models retrained from scratch on the retain set with the original's "
                   "training recipe (Hayes et al. 2025): for each forget sample a Gaussian of the logit-scaled "
                   "confidence under the N retrained models (per-sample mean, variance pooled over the forget set, "
                   "predictive sigma = pooled sigma x sqrt(1 + 1/N)); a model's z = (phi - mu) / sigma and one-sided "
                   "p-value P(Z >= z). A sample is flagged (still looks trained-on) when Benjamini-Hochberg rejects it "
                   "at FDR 5% over the forget set; over_forgotten: the same test on the lower tail P(Z <= z) "
                   "(far less confident than under every retrained model). noise_floor_share: each retrained model in turn left out and tested "
                   "against the other N - 1; the mean share of forget samples flagged for such an honest retrain. held_out: the "
                   "same test on the held-out reference samples (no model trained on them): a model flagged there "
                   "too is more confident than the retrained models on unseen data, not necessarily memorising"),
}


def audit(
    model: nn.Module,
    split: Split,
    *,
    original: nn.Module | None = None,
    retrained: nn.Module | None = None,
    seconds: float | None = None,
    retrain_seconds: float | None = None,
    lira_shadows: int = 0,
    seed: int = 0,
    lira_config: LiraConfig | None = None,
    method: dict | None = None,
    device: torch.device | str | None = None,
    executor: Executor | None = None,
    population: int = 0,
    population_config: LiraConfig | None = None,
) -> AuditResult:
    """Audit an unlearned ``model`` on ``split`` against the ``original`` and a ``retrained`` model (both optional).

    ``lira_shadows`` > 0 also trains that many shadow models (``lira_config``: architecture and
    training, default the MLP with ``TrainConfig()``) and runs offline LiRA on every model given;
    ``executor`` trains the shadows (default serial; ``oblivio.parallel.RayExecutor()`` in parallel).
    ``population`` > 0 (2..256) trains that many models from scratch on the retain set
    (``population_config``, default ``lira_config``; seeds derived from ``seed``, see
    ``reference_models``) through the same ``executor`` and tests every forget sample of each model
    against them (Hayes et al. 2025): ``AuditResult.population``. Deterministic for a seed on CPU.
    ``device`` (``auto``, ``cpu``, ``cuda``...) runs the models there (on copies; the given models
    are not moved); None keeps each model where it is. Shadows and population members train on
    ``auto`` (CUDA when present).
    """
    check_split(split)
    if population:
        check_members(population)
    reference = reference_set(split)
    roles = {"original": original, "unlearned": model, "retrained": retrained}
    roles = {k: _on(v, device) for k, v in roles.items() if v is not None}
    outputs = {role: model_outputs(m, split, reference) for role, m in roles.items()}
    metrics = {role: metrics_from_outputs(out, seed) for role, out in outputs.items()}
    curves: dict[str, dict[str, np.ndarray]] = {}
    for role, out in outputs.items():
        roc = threshold_attack(out)
        curves[role] = {"phi_forget": out.phi("forget"), "phi_reference": out.phi("reference"),
                        "threshold_fpr": roc["fpr"], "threshold_tpr": roc["tpr"]}
    gap = {}
    if retrained is not None:
        gap = {role: gap_to_retrain(metrics[role], metrics["retrained"]) for role in metrics if role != "retrained"}

    lira = None
    if lira_shadows:
        shadows = train_shadows(split, lira_shadows, lira_config, seed, reference, executor)
        results = {}
        for role, m in roles.items():
            res = lira_attack(m, split, shadows, reference)
            curves[role] |= {"lira_fpr": res.pop("fpr"), "lira_tpr": res.pop("tpr")}
            results[role] = res
        lira = {"shadows": lira_shadows, "config": shadows.config.to_dict(),
                "seconds_per_shadow": shadows.seconds_per_shadow, "results": results}

    per_example = None
    if population:
        members = train_population(split, population, population_config or lira_config, seed, executor,
                                   reference=reference)
        per_example, curves["population"] = per_example_test(
            members, {role: curves[role]["phi_forget"] for role in roles}, split.forget_idx,
            {role: curves[role]["phi_reference"] for role in roles})

    return AuditResult(
        seed=seed,
        split=split.spec() | {"sizes": split.sizes() | {"reference": len(reference.data)}, "reference": reference.description},
        models={role: model_hash(roles[role]) if role in roles else None for role in ROLES},
        metrics=metrics,
        gap=gap,
        time={"seconds": seconds, "retrain_seconds": retrain_seconds, "ratio": time_ratio(seconds, retrain_seconds)},
        lira=lira,
        population=per_example,
        verdict=verdict(metrics["unlearned"], split, metrics.get("retrained"), metrics.get("original"),
                        remaining={role: remaining_test_accuracy(*out.test, split.forget_classes) for role, out in outputs.items()}
                        if split.forget_classes else None),
        method=method,
        curves=curves,
    )


def _on(model: nn.Module, device: torch.device | str | None) -> nn.Module:
    """``model``, or a copy of it on ``device`` when it lives elsewhere."""
    if device is None:
        return model
    dev = resolve_device(device)
    if next(model.parameters()).device == dev:
        return model
    return place(copy.deepcopy(model), dev)


def _same_training(meta: dict, other: dict, what: str, path: str | os.PathLike) -> None:
    mine, theirs = (meta.get("training") or {}), (other.get("training") or {})
    if not theirs:
        raise OblivioError(f"{what} checkpoint {path} has no training record; cannot tell which data it saw")
    if theirs.get("pool_hash") != mine.get("pool_hash") or theirs.get("data") != mine.get("data"):
        raise OblivioError(f"{what} checkpoint {path} was trained on different data than the unlearned model")


def _recorded_original(checkpoint: str | os.PathLike, recorded: dict) -> Path | None:
    """The original checkpoint recorded by ``oblivio forget``, as written or beside ``checkpoint``, if its hash matches."""
    if not recorded.get("path"):
        return None
    for candidate in (Path(recorded["path"]), Path(checkpoint).parent / Path(recorded["path"]).name):
        if candidate.is_file():
            try:
                if read_sidecar(candidate).get("model_hash") == recorded.get("model_hash"):
                    return candidate
            except OblivioError:
                continue
    return None


def audit_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    original: str | os.PathLike | None = None,
    retrained: str | os.PathLike | None = None,
    lira_shadows: int = 0,
    seed: int = 0,
    device: torch.device | str | None = "auto",
    executor: Executor | None = None,
    population: int = 0,
) -> AuditResult:
    """Audit an unlearned checkpoint written by ``oblivio forget``, rebuilding its data and split from the sidecar.

    ``original`` defaults to the path recorded in the sidecar (or that file name beside the checkpoint)
    when it exists and its model hash matches the record. Refuses a
    retrained checkpoint made for a different forget split, and an original the model was not made from.
    ``population`` > 0 also runs the per-example test against that many models retrained on the
    checkpoint's retain set with the original's recipe (see ``audit``). ``executor`` trains the LiRA
    shadows and the retrained population (default serial, see ``audit``).
    """
    from ..pipeline import split_for_checkpoint

    if population:
        check_members(population)
    model, meta = load_checkpoint(checkpoint, device=device)
    _, split = split_for_checkpoint(meta)
    unlearning = (meta.get("extra") or {}).get("unlearning") or {}
    notes = []
    recorded = unlearning.get("original") or {}
    if original is None:
        original = _recorded_original(checkpoint, recorded)
        if original is not None:
            notes.append(f"original model taken from the path recorded in the checkpoint: {original}")
        elif recorded.get("path"):
            notes.append(f"the original recorded in the checkpoint ({recorded['path']}) is missing or no longer the "
                         "same model, so its column is left out; give it with --original")

    orig_model = orig_meta = None
    if original is not None:
        orig_model, orig_meta = load_checkpoint(original, device=device)
        _same_training(meta, orig_meta, "original", original)
        if recorded.get("model_hash") and model_hash(orig_model) != recorded["model_hash"]:
            raise OblivioError(f"original checkpoint {original} is not the model this one was unlearned from (model hash differs)")

    retr_model, retrain_seconds = None, None
    if retrained is not None:
        retr_model, retr_meta = load_checkpoint(retrained, device=device)
        recorded_split = retr_meta.get("split")
        if not recorded_split:
            raise OblivioError(f"retrained checkpoint {retrained} records no forget split; cannot check it matches")
        if recorded_split.get("hashes") != meta["split"]["hashes"]:
            raise OblivioError(f"retrained checkpoint {retrained} was made for a different forget split (split hashes differ)")
        _same_training(meta, retr_meta, "retrained", retrained)
        extra = retr_meta.get("extra") or {}
        retrain_seconds = (extra.get("unlearning") or {}).get("seconds", extra.get("train_seconds"))

    train_config = ((orig_meta or {}).get("extra") or {}).get("train_config")
    if train_config is None and (lira_shadows or population):
        users = " and ".join(w for w, on in (("LiRA shadows", lira_shadows), ("retrained population", population)) if on)
        notes.append(f"{users} use the default TrainConfig (no original sidecar with a train_config)")
    method = {k: unlearning.get(k) for k in ("method", "config", "info")} if unlearning else None
    result = audit(
        model, split, original=orig_model, retrained=retr_model, seconds=unlearning.get("seconds"),
        retrain_seconds=retrain_seconds, lira_shadows=lira_shadows, seed=seed,
        lira_config=shadow_config_for(meta.get("arch"), train_config), method=method, executor=executor,
        device=device, population=population,
    )
    result.notes = notes
    result.split["dataset_spec"] = (meta.get("training") or {}).get("data")
    result.models["checkpoint"] = str(checkpoint)
    return result


__all__ = ["AuditResult", "METRIC_KEYS", "audit", "audit_checkpoint"]
