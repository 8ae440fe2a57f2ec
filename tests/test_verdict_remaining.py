"""Class-forgetting verdict without a retrained model compares test accuracy on the remaining classes (issue 10, case 2)."""
from oblivio import TrainConfig, retrain
from oblivio.audit import audit


def test_a_retrained_model_passes_the_proxy_verdict_for_class_forgetting(splits, original):
    split = splits["class"]
    gold, _ = retrain("mlp", split.retain, 10, TrainConfig(seed=0))
    result = audit(gold, split, original=original("class"))
    utility = next(c for c in result.verdict["checks"] if c["name"] == "test accuracy")
    assert utility["reference_is"] == "original (remaining classes)"
    assert utility["ok"], utility
    assert result.verdict["status"] == "warn" and "proxy checks only" in result.verdict["headline"]
    assert "dropped" not in result.verdict["headline"]
    # the whole-test-set accuracy of the gold model is lower than the original's by about one class
    assert result.metrics["unlearned"]["TA"] < result.metrics["original"]["TA"] - 5
