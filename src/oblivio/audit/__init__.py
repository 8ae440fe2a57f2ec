"""Verification of unlearning: accuracies, MIA-efficacy, threshold and LiRA attacks, gap to retrain.

    from oblivio.audit import measure, gap_to_retrain, audit
    m = measure(model, split)                  # {"UA", "RA", "TA", "MIA", "AUC", "KS"[, "ASR"]}
    gap_to_retrain(m, measure(gold, split))    # {"gap_UA", ..., "avg_gap"}
    audit(model, split, original=orig, retrained=gold, lira_shadows=8).to_dict()
    audit(model, split, original=orig, population=16).population   # per-example test vs 16 retrained models
"""
from .core import AuditResult, audit, audit_checkpoint
from .lira import LiraConfig, lira_attack, train_shadows
from .metrics import (
    GAP_KEYS,
    METRIC_KEYS,
    gap_to_retrain,
    ks_distance,
    logit_confidence,
    measure,
    membership_roc,
    mia_efficacy,
    model_outputs,
    reference_set,
    threshold_attack,
    time_ratio,
    true_label_confidence,
)
from .reference_models import per_example_test, train_population
from .verdict import verdict

__all__ = [
    "AuditResult", "GAP_KEYS", "LiraConfig", "METRIC_KEYS", "audit", "audit_checkpoint", "gap_to_retrain", "ks_distance",
    "lira_attack", "logit_confidence", "measure", "membership_roc", "mia_efficacy", "model_outputs", "reference_set",
    "per_example_test", "threshold_attack", "time_ratio", "train_population", "train_shadows", "true_label_confidence",
    "verdict",
]
