"""oblivio.audit on digits: each measure, the overfit-membership check, determinism and bad input."""
from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from oblivio import OblivioError, RandomSubset, TrainConfig, accuracy, attack_success_rate, build_model, make_split, retrain, train
from oblivio.audit import (
    LiraConfig,
    audit,
    gap_to_retrain,
    ks_distance,
    measure,
    membership_roc,
    mia_efficacy,
    model_outputs,
    reference_set,
    threshold_attack,
    time_ratio,
)


def null_auc_se(n_pos: int, n_neg: int) -> float:
    """Standard error of the ROC AUC of an attack that cannot tell the groups apart (Hanley & McNeil 1982, AUC = 0.5)."""
    return math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))


# --- the overfit setting: a small train pool (287 samples), 200 epochs, no weight decay -----------------
OVERFIT = TrainConfig(seed=0, epochs=200, weight_decay=0.0, lr=0.1)


@pytest.fixture(scope="module")
def overfit(digits):
    """Random 50% of a 287-sample train pool forgotten; 1150 third-party references; original and retrained MLPs."""
    split = make_split(digits, RandomSubset(fraction=0.5), seed=0, third_party_fraction=0.8)
    original, _ = train("mlp", split.train, 10, OVERFIT)
    retrained, _ = retrain("mlp", split.retain, 10, OVERFIT)
    return split, original, retrained


def test_measure_accuracies_match_training_helpers(splits, original):
    split, model = splits["random"], original("random")
    m = measure(model, split)
    assert set(m) == {"UA", "RA", "TA", "MIA", "AUC", "KS"}
    assert m["UA"] == pytest.approx(100 * (1 - accuracy(model, split.forget)), abs=1e-4)
    assert m["RA"] == pytest.approx(100 * accuracy(model, split.retain), abs=1e-4)
    assert m["TA"] == pytest.approx(100 * accuracy(model, split.test), abs=1e-4)
    assert 0 <= m["MIA"] <= 100 and 0 <= m["AUC"] <= 1 and 0 <= m["KS"] <= 1


def test_backdoor_split_reports_asr(splits, original):
    split, model = splits["backdoor"], original("backdoor")
    m = measure(model, split)
    asr = 100 * attack_success_rate(model, split.test_triggered, split.backdoor_target)
    assert m["ASR"] == pytest.approx(asr, abs=1e-4)
    assert m["ASR"] > 50  # the poisoned MLP learned the trigger
    ref = reference_set(split)  # triggered third-party samples of other classes, labelled with the target
    assert ref.train_idx is None and set(ref.data.tensors[1].tolist()) == {split.backdoor_target}


def test_class_split_reference_is_the_forgotten_class(splits):
    ref = reference_set(splits["class"])
    assert set(ref.data.tensors[1].tolist()) == {3}
    assert np.isin(ref.train_idx, splits["class"].third_party_idx).all()


def test_mia_efficacy_follows_salun_convention(splits, original):
    """A model that never saw class 3 calls its samples non-members (efficacy ~100%); the original does not."""
    split = splits["class"]
    gold, _ = retrain("mlp", split.retain, 10, TrainConfig(seed=0))
    before = mia_efficacy(model_outputs(original("class"), split), seed=0)
    after = mia_efficacy(model_outputs(gold, split), seed=0)
    assert after > 95 and before < 30
    assert mia_efficacy(model_outputs(gold, split), seed=0) == after  # deterministic for a seed


def test_membership_roc_on_known_scores():
    perfect = membership_roc(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]))
    assert perfect["AUC"] == 1.0 and perfect["TPR@1%FPR"] == 100.0
    useless = membership_roc(np.array([1.0, 1.0]), np.array([1.0, 1.0]))
    assert useless["AUC"] == 0.5 and useless["TPR@0.1%FPR"] == 0.0


def test_gap_to_retrain_reproduces_salun_avg_gap():
    """SalUn, random 10% on CIFAR-10: SalUn vs Retrain gives Avg. Gap 1.15 (table in metrics-and-anchors.md)."""
    retrain_row = {"UA": 5.24, "RA": 100.00, "TA": 94.26, "MIA": 12.88}
    salun_row = {"UA": 2.85, "RA": 99.62, "TA": 93.93, "MIA": 14.39}
    gap = gap_to_retrain(salun_row, retrain_row)
    assert gap["gap_UA"] == pytest.approx(2.39) and gap["gap_MIA"] == pytest.approx(1.51)
    assert round(gap["avg_gap"], 2) == 1.15
    with pytest.raises(OblivioError, match="MIA"):
        gap_to_retrain({"UA": 1, "RA": 1, "TA": 1}, retrain_row)
    assert time_ratio(2.0, 8.0) == 0.25 and time_ratio(None, 8.0) is None


def test_overfit_forget_set_is_detected_and_retrained_model_is_not(overfit):
    """Threshold attack, forget (144) vs third-party (1150): the overfit original leaks membership, retraining removes it.

    Under "indistinguishable" the AUC has standard error sqrt((n1+n2+1)/(12 n1 n2)) = 0.026 for these
    sizes, so we require the original 2.5 SE above chance (p < 0.01) and the retrained model within 3 SE of 0.5.
    """
    split, original, retrained = overfit
    se = null_auc_se(len(split.forget_idx), len(split.third_party_idx))
    before = measure(original, split)
    after = measure(retrained, split)
    assert before["AUC"] > 0.5 + 2.5 * se
    assert abs(after["AUC"] - 0.5) < 3 * se
    assert before["AUC"] - after["AUC"] > 3 * se
    assert before["UA"] == 0.0 and after["UA"] > 2.0  # the original memorised every forget sample


def test_avg_gap_of_retrained_to_itself_is_zero(overfit):
    split, _, retrained = overfit
    result = audit(retrained, split, retrained=retrained)
    assert result.gap["unlearned"]["avg_gap"] == 0.0
    assert all(v == 0.0 for v in result.gap["unlearned"].values())
    assert result.verdict["status"] == "pass"


def test_audit_with_lira_is_deterministic_and_detects_the_original(overfit):
    split, original, retrained = overfit
    shadows = LiraConfig(train=TrainConfig(epochs=30, weight_decay=0.0, lr=0.1))
    kwargs = dict(original=original, retrained=retrained, seconds=1.0, retrain_seconds=4.0, lira_shadows=4, seed=3,
                  lira_config=shadows)
    first = audit(original, split, **kwargs).to_dict()
    second = audit(original, split, **kwargs).to_dict()
    for d in (first, second):
        d.pop("versions"), d["lira"].pop("seconds_per_shadow")  # wall time differs between runs
    assert first == second
    lira = first["lira"]["results"]
    assert lira["original"]["AUC"] > 0.6 and abs(lira["retrained"]["AUC"] - 0.5) < 0.1
    assert set(lira["original"]) == {"AUC", "TPR@1%FPR", "TPR@0.1%FPR"}
    assert first["time"]["ratio"] == 0.25
    json.dumps(first)  # JSON-able


def test_audit_record_and_verdict(splits, original):
    split, model = splits["random"], original("random")
    result = audit(model, split, original=model, seed=1)
    d = json.loads(json.dumps(result.to_dict()))
    assert d["seed"] == 1 and d["split"]["hashes"] == split.hashes()
    assert d["models"]["unlearned"] == d["models"]["original"] and d["models"]["retrained"] is None
    assert {"oblivio", "torch", "scikit-learn"} <= set(d["versions"])
    assert d["gap_to_retrain"] == {} and d["verdict"]["basis"] == "proxy"
    assert "MIA-efficacy" in d["conventions"]["MIA"] and "SalUn" in d["conventions"]["MIA"]


def test_unlearned_model_that_kept_the_class_fails_the_verdict(splits, original):
    split = splits["class"]
    gold, _ = retrain("mlp", split.retain, 10, TrainConfig(seed=0))
    result = audit(original("class"), split, retrained=gold)
    assert result.verdict["status"] == "fail"
    assert result.verdict["headline"].startswith("Not forgotten: forget accuracy")


def test_ks_distance_is_zero_for_identical_confidences(splits, original):
    split = splits["random"]
    out = model_outputs(original("random"), split)
    out.reference = out.forget
    assert ks_distance(out) == 0.0 and threshold_attack(out)["AUC"] == 0.5


def test_bad_input_is_refused(splits, original):
    split = splits["random"]
    with pytest.raises(OblivioError, match="classes"):
        measure(build_model("mlp", (1, 8, 8), 5, seed=0), split)
    with pytest.raises(OblivioError, match="shape"):
        measure(build_model("mlp", (1, 28, 28), 10, seed=0), split)
    empty = dataclasses.replace(split, forget_idx=np.array([], dtype=np.int64))
    with pytest.raises(OblivioError, match="empty forget set"):
        measure(original("random"), empty)
    with pytest.raises(OblivioError, match="empty forget set"):
        audit(original("random"), empty)
    with pytest.raises(OblivioError, match="at least 2 shadow"):
        audit(original("random"), split, lira_shadows=1)


def test_verdict_tolerance_is_honest_for_small_and_extreme_rates():
    from oblivio.audit.verdict import tolerance

    assert tolerance(50.0, 100_000) == 2.0  # floor of 2 points
    assert tolerance(0.0, 20) > 10.0 and tolerance(0.0, 2000) == 2.0  # 0% on 20 samples is still uncertain
    assert tolerance(50.0, 100) == pytest.approx(200 * math.sqrt(2 * 0.5 * 0.5 / 104))


def test_model_with_nan_outputs_is_refused_clearly(splits, original):
    broken = copy.deepcopy(original("random"))
    with torch.no_grad():
        next(broken.parameters()).fill_(float("inf"))
    with pytest.raises(OblivioError, match="NaN/inf on the retain set"):
        measure(broken, splits["random"])
