"""Per-model audit measures: accuracies, backdoor ASR, MIA-efficacy, threshold-attack AUC, KS distance, gap to retrain.

Conventions (the field's, see ``metrics-and-anchors.md``):

- UA = 100 - forget-set accuracy, RA = retain accuracy, TA = test accuracy, all in percent.
- MIA = MIA-efficacy in the SalUn / Unlearn-Sparse convention: an RBF SVC (C=3, gamma="auto")
  trained on the true-label softmax confidence of a retain subset the size of the test set
  (members, 1) vs the test set (non-members, 0); the share of forget samples it predicts as
  non-members, in percent. Higher = more forgotten.
- AUC = ROC AUC of a threshold attack on the true-label confidence (equivalently the loss) that
  tells forget samples (positives) from held-out *reference* samples the model never trained on
  (negatives). 0.5 = indistinguishable.
- KS = two-sample Kolmogorov-Smirnov statistic between the true-label confidences of the forget
  and reference samples, in [0, 1]. 0 = same distribution.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.svm import SVC
from torch import nn
from torch.utils.data import TensorDataset

from ..errors import OblivioError
from ..models import check_compatible
from ..scenarios import Backdoor, ClassForget, Split
from ..training import predict

METRIC_KEYS = ("UA", "RA", "TA", "MIA", "ASR", "AUC", "KS")
GAP_KEYS = ("UA", "RA", "TA", "MIA")


@dataclass
class Reference:
    """Held-out non-member samples matched to the forget set, and where they come from.

    ``train_idx`` holds their indices in the training set when they are unmodified training-set
    samples (so LiRA shadows may have trained on them), else None.
    """

    data: TensorDataset
    train_idx: np.ndarray | None
    description: str


def reference_set(split: Split) -> Reference:
    """Third-party samples (never trained on) that a perfectly unlearned model should treat like the forget set.

    Random subset: the whole third-party pool. Class forgetting: third-party samples of the forgotten
    classes. Backdoor: third-party samples of other classes with the trigger stamped on and relabelled
    to the target, like the poisoned forget samples.
    """
    idx = split.third_party_idx
    y = split.y_train[torch.as_tensor(idx)].numpy()
    if isinstance(split.scenario, ClassForget):
        idx = idx[np.isin(y, split.scenario.classes)]
        what = f"third-party samples of class {', '.join(map(str, split.scenario.classes))}"
    elif isinstance(split.scenario, Backdoor):
        idx = idx[y != split.scenario.target]
        what = f"third-party samples of other classes with the trigger, labelled {split.scenario.target}"
    else:
        what = "third-party samples"
    if idx.size == 0:
        raise OblivioError(f"no held-out reference samples for this split ({what}): use a larger third-party fraction")
    t = torch.as_tensor(idx)
    if isinstance(split.scenario, Backdoor):
        x = split.scenario.stamp(split.x_train[t])
        labels = torch.full((len(idx),), split.scenario.target, dtype=torch.long)
        return Reference(TensorDataset(x, labels), None, what)
    return Reference(split.subset(idx), idx, what)


def true_label_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Softmax probability of the true label, per sample (float64)."""
    p = torch.softmax(logits.double(), dim=1)
    return p.gather(1, labels[:, None]).squeeze(1).numpy()


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """LiRA's logit-scaled confidence phi = log p_y - log(1 - p_y), computed stably as z_y - logsumexp(z_{-y}).

    Monotone in p_y (and in the loss), but it does not saturate at p_y = 1 the way float confidences do.
    """
    z = logits.double()
    zy = z.gather(1, labels[:, None]).squeeze(1)
    others = z.scatter(1, labels[:, None], float("-inf"))
    return (zy - torch.logsumexp(others, dim=1)).numpy()


@dataclass
class Outputs:
    """One model's logits and labels on every part of a split that the measures need."""

    retain: tuple[torch.Tensor, torch.Tensor]
    forget: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    reference: tuple[torch.Tensor, torch.Tensor]
    triggered: tuple[torch.Tensor, torch.Tensor] | None
    backdoor_target: int | None

    def phi(self, part: str) -> np.ndarray:
        return logit_confidence(*getattr(self, part))

    def confidence(self, part: str) -> np.ndarray:
        return true_label_confidence(*getattr(self, part))


def check_split(split: Split) -> None:
    if len(split.forget_idx) == 0:
        raise OblivioError("empty forget set: there is nothing to audit")
    if len(split.retain_idx) == 0 or len(split.y_test) == 0:
        raise OblivioError("the audit needs a non-empty retain set and test set")


def model_outputs(model: nn.Module, split: Split, reference: Reference | None = None) -> Outputs:
    """Run ``model`` once over retain, forget, test, reference (and triggered test) samples."""
    check_split(split)
    check_compatible(model, split.info.input_shape, split.info.num_classes)
    reference = reference or reference_set(split)
    triggered = split.test_triggered
    out = Outputs(
        retain=predict(model, split.retain),
        forget=predict(model, split.forget),
        test=predict(model, split.test),
        reference=predict(model, reference.data),
        triggered=predict(model, triggered) if triggered is not None and len(triggered) else None,
        backdoor_target=split.backdoor_target,
    )
    for part in ("retain", "forget", "test", "reference", "triggered"):
        value = getattr(out, part)
        if value is not None and not torch.isfinite(value[0]).all():
            raise OblivioError(f"the model outputs NaN/inf on the {part} set; it cannot be audited (did unlearning diverge?)")
    return out


def accuracy_of(out: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Percent of samples whose argmax logit is the label."""
    logits, y = out
    return 100.0 * (logits.argmax(1) == y).double().mean().item()


def attack_success(out: Outputs) -> float | None:
    """Backdoor ASR in percent: share of triggered test images (true class != target) classified as the target."""
    if out.triggered is None:
        return None
    return 100.0 * (out.triggered[0].argmax(1) == out.backdoor_target).double().mean().item()


def mia_efficacy(out: Outputs, seed: int = 0) -> float:
    """MIA-efficacy (SalUn / Unlearn-Sparse convention, percent, higher = more forgotten).

    An RBF SVC (C=3, gamma="auto") learns member (a seeded retain subset the size of the test
    set) vs non-member (the test set) from the true-label softmax confidence; MIA-efficacy is
    the share of forget samples it predicts as non-members, x100.
    """
    conf_retain = out.confidence("retain")
    conf_test = out.confidence("test")
    n = min(len(conf_test), len(conf_retain))
    members = conf_retain[np.random.default_rng([seed, 7]).choice(len(conf_retain), size=n, replace=False)]
    x = np.concatenate([members, conf_test])[:, None]
    y = np.concatenate([np.ones(n), np.zeros(len(conf_test))])
    attacker = SVC(kernel="rbf", C=3, gamma="auto").fit(x, y)
    return 100.0 * float((attacker.predict(out.confidence("forget")[:, None]) == 0).mean())


def membership_roc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> dict:
    """ROC of an attack scoring members higher: AUC, TPR at 1% and 0.1% FPR, and the curve.

    With n non-members an FPR below 1/n cannot be resolved; the TPR reported at a target FPR is the
    highest TPR among thresholds whose FPR does not exceed it (conservative).
    """
    labels = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    scores = np.concatenate([member_scores, nonmember_scores])
    fpr, tpr, _ = roc_curve(labels, scores)

    def tpr_at(target: float) -> float:
        return float(tpr[fpr <= target].max())

    return {
        "AUC": float(roc_auc_score(labels, scores)),
        "TPR@1%FPR": 100.0 * tpr_at(0.01),
        "TPR@0.1%FPR": 100.0 * tpr_at(0.001),
        "fpr": fpr,
        "tpr": tpr,
    }


def threshold_attack(out: Outputs) -> dict:
    """Threshold attack on the true-label confidence (= loss attack): forget (members) vs reference samples.

    Scores are the logit-scaled confidence, a monotone transform of the confidence that keeps
    near-1 confidences apart, so the AUC is that of a confidence or loss threshold.
    """
    return membership_roc(out.phi("forget"), out.phi("reference"))


def ks_distance(out: Outputs) -> float:
    """Kolmogorov-Smirnov statistic between true-label confidences on forget vs reference samples, in [0, 1]."""
    return float(ks_2samp(out.confidence("forget"), out.confidence("reference")).statistic)


def metrics_from_outputs(out: Outputs, seed: int = 0) -> dict[str, float]:
    """UA, RA, TA, MIA, AUC, KS (and ASR for a backdoor split) from one model's outputs."""
    metrics = {
        "UA": 100.0 - accuracy_of(out.forget),
        "RA": accuracy_of(out.retain),
        "TA": accuracy_of(out.test),
        "MIA": mia_efficacy(out, seed),
    }
    asr = attack_success(out)
    if asr is not None:
        metrics["ASR"] = asr
    metrics["AUC"] = threshold_attack(out)["AUC"]
    metrics["KS"] = ks_distance(out)
    return metrics


def measure(model: nn.Module, split: Split, *, seed: int = 0) -> dict[str, float]:
    """The cheap per-model audit numbers on ``split``.

    Returns "UA", "RA", "TA" (percent; UA = 100 - forget accuracy), "MIA" (MIA-efficacy, SalUn
    convention, percent), "ASR" (percent, backdoor splits only), "AUC" (threshold attack, forget vs
    held-out reference samples, 0.5 = indistinguishable) and "KS" (confidence distribution
    distance, forget vs reference, in [0, 1]). ``seed`` picks MIA-efficacy's retain subset.
    """
    return metrics_from_outputs(model_outputs(model, split), seed)


def gap_to_retrain(
    metrics: dict[str, float], retrain_metrics: dict[str, float], keys: tuple[str, ...] = GAP_KEYS
) -> dict[str, float]:
    """Absolute differences ``gap_<key>`` to the retrained model and their mean ``avg_gap`` (SalUn's Avg. Gap)."""
    missing = [k for k in keys if k not in metrics or k not in retrain_metrics]
    if missing or not keys:
        raise OblivioError(f"cannot compute the gap to retrain: metric(s) {missing or 'none given'} missing")
    gaps = {f"gap_{k}": abs(float(metrics[k]) - float(retrain_metrics[k])) for k in keys}
    gaps["avg_gap"] = float(np.mean(list(gaps.values())))
    return gaps


def time_ratio(seconds: float | None, retrain_seconds: float | None) -> float | None:
    """Wall time of the method over that of retraining (None when either is unknown)."""
    if seconds is None or not retrain_seconds:
        return None
    return float(seconds) / float(retrain_seconds)
