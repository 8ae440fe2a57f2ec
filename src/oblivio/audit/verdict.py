"""The verdict a person reads first: did forgetting work, judged against a retrained model (or proxies).

Each check compares one rate of the unlearned model with the same rate of a reference model on
the same n samples. Both are estimates, so their difference has a standard error of about
sqrt(2) x SE, with SE the binomial standard error of the reference rate (Agresti-Coull adjusted:
two successes and two failures added, so 0% or 100% on a small set keeps a non-zero
uncertainty). Tolerance = max(2 points, 2 x sqrt(2) x SE).
"""
from __future__ import annotations

import math

import torch

from ..scenarios import Backdoor, ClassForget, Split
from .metrics import accuracy_of


def tolerance(reference_percent: float, n: int, floor: float = 2.0) -> float:
    """max(``floor``, 2 standard errors of a difference of two rates on ``n`` samples) in percentage points."""
    p = min(max(reference_percent / 100.0, 0.0), 1.0)
    adjusted = (p * n + 2) / (n + 4)
    return max(floor, 200.0 * math.sqrt(2 * adjusted * (1 - adjusted) / (n + 4)))


def _check(name: str, value: float, reference: float, tol: float, rule: str, what: str) -> dict:
    ok = {"close": abs(value - reference) <= tol, "at_most": value <= reference + tol, "at_least": value >= reference - tol}[rule]
    return {"name": name, "value": value, "reference": reference, "tolerance": tol, "rule": rule, "ok": bool(ok),
            "reference_is": what}


def _failure_kind(check: dict) -> str:
    """Which way a failed forgetting check went: the model still knows the forget set, or lost more than retraining would."""
    if check["name"] == "backdoor ASR":
        return "Backdoor still active"
    still_knows = check["value"] > check["reference"] if check["name"] == "forget accuracy" else check["value"] < check["reference"]
    return "Not forgotten" if still_knows else "Over-forgotten"


def remaining_test_accuracy(logits, labels, forget_classes) -> float:
    """Test accuracy (percent) on the samples whose class is not forgotten."""
    keep = ~torch.isin(labels, torch.tensor(tuple(forget_classes), dtype=labels.dtype))
    return accuracy_of((logits[keep], labels[keep])) if keep.any() else float("nan")


def never_learned(original: dict, split: Split) -> str | None:
    """The headline "the original never learned this" when the original's forget-set accuracy (backdoor: its
    attack success rate) is within tolerance of chance, 100 / classes; None when it learned it.

    Such an original "forgets" by doing nothing, so no verdict on forgetting can be drawn (an original at 11%
    on digits was once "verified" for forgetting a class it never knew)."""
    n_classes = max(split.info.num_classes, 1)
    chance = 100.0 / n_classes
    if isinstance(split.scenario, Backdoor) and "ASR" in original:
        n_trig = len(split.y_test_triggered) if split.y_test_triggered is not None else 0
        if original["ASR"] <= chance + tolerance(chance, n_trig):
            return (f"The original never learned this: its backdoor attack success rate is {original['ASR']:.1f}%, "
                    f"chance is {chance:.1f}%. There is nothing to forget; no verdict on forgetting.")
        return None
    acc = 100.0 - original["UA"]
    if acc <= chance + tolerance(chance, len(split.forget_idx)):
        return (f"The original never learned this: its forget-set accuracy is {acc:.1f}%, chance is {chance:.1f}% "
                f"({n_classes} classes). There is nothing to forget; no verdict on forgetting.")
    return None


def verdict(metrics: dict, split: Split, retrained: dict | None, original: dict | None = None,
            remaining: dict[str, float] | None = None) -> dict:
    """Checks and a one-line headline: status "pass" (forgotten), "warn" (forgotten but utility lost, or proxy only) or "fail".

    When the original model already passes the same forgetting checks, the headline says so: the
    forget set left no measurable trace to remove. For class forgetting without a retrained model,
    utility is test accuracy on the remaining classes only (``remaining``: role -> percent, see
    ``remaining_test_accuracy``): the original's accuracy on the forgotten class is not utility
    a faithful unlearned model should keep.
    """
    n_forget, n_test = len(split.forget_idx), len(split.y_test)
    n_trig = len(split.y_test_triggered) if split.y_test_triggered is not None else 0
    forget_acc = 100.0 - metrics["UA"]
    checks = []
    if retrained is not None:
        basis = "retrained"
        ref_acc = 100.0 - retrained["UA"]
        checks.append(_check("forget accuracy", forget_acc, ref_acc, tolerance(ref_acc, n_forget), "close", "retrained"))
        checks.append(_check("MIA-efficacy", metrics["MIA"], retrained["MIA"], tolerance(retrained["MIA"], n_forget), "close", "retrained"))
        if "ASR" in metrics:
            checks.append(_check("backdoor ASR", metrics["ASR"], retrained["ASR"], tolerance(retrained["ASR"], n_trig), "at_most", "retrained"))
        utility = _check("test accuracy", metrics["TA"], retrained["TA"], tolerance(retrained["TA"], n_test), "at_least", "retrained")
    else:
        basis = "proxy"
        if isinstance(split.scenario, ClassForget):
            checks.append(_check("forget accuracy", forget_acc, 0.0, tolerance(0.0, n_forget), "at_most", "0% (class never seen)"))
        elif isinstance(split.scenario, Backdoor):
            clean = (100.0 - metrics["TA"]) / max(split.info.num_classes - 1, 1)
            checks.append(_check("backdoor ASR", metrics["ASR"], clean, tolerance(clean, n_trig), "at_most", "clean error rate into one class"))
        else:
            checks.append(_check("forget accuracy", forget_acc, metrics["TA"], tolerance(metrics["TA"], n_forget), "close", "own test accuracy"))
        utility = None
        if isinstance(split.scenario, ClassForget):
            if remaining and "unlearned" in remaining and "original" in remaining:
                n_remain = int(sum(1 for c in split.y_test.tolist() if c not in set(split.forget_classes or ())))
                utility = _check("test accuracy", remaining["unlearned"], remaining["original"],
                                 tolerance(remaining["original"], n_remain), "at_least", "original (remaining classes)")
        elif original is not None:
            utility = _check("test accuracy", metrics["TA"], original["TA"], tolerance(original["TA"], n_test), "at_least", "original")
    if utility is not None:
        checks.append(utility)
    never = never_learned(original, split) if original is not None else None
    if never is not None:
        return {"status": "warn", "basis": basis, "headline": never, "checks": checks, "never_learned": True}
    forgetting = [c for c in checks if c["name"] != "test accuracy"]
    failed = [c for c in forgetting if not c["ok"]]
    lost_utility = utility is not None and not utility["ok"]
    ref_word = "a model retrained without the forget set" if basis == "retrained" else None
    if failed:
        status = "fail"
        c = failed[0]
        target = ref_word or c["reference_is"]
        headline = f"{_failure_kind(c)}: {c['name']} is {c['value']:.1f}% vs {c['reference']:.1f}% for {target} (tolerance ±{c['tolerance']:.1f} pts)."
        if _failure_kind(c) == "Over-forgotten":
            headline += " Retraining would not lose this much, and the drop itself is detectable."
        if lost_utility:
            headline += f" Test accuracy also fell to {utility['value']:.1f}%."
    elif lost_utility:
        status = "warn"
        headline = (f"Forgotten, but test accuracy dropped to {utility['value']:.1f}% "
                    f"(vs {utility['reference']:.1f}% for the {utility['reference_is']} model).")
    elif basis == "retrained":
        status = "pass"
        headline = "Forgetting worked: the unlearned model matches a model retrained without the forget set."
        if original is not None and verdict(original, split, retrained)["status"] != "fail":
            headline += " (So did the original: the forget set left no measurable trace.)"
    else:
        status = "warn"
        headline = ("Looks forgotten on proxy checks only: give a retrained model (--retrained) for a real comparison.")
    return {"status": status, "basis": basis, "headline": headline, "checks": checks}
