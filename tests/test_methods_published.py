"""Published unlearning baselines on digits (MLP, seed 0): bad-teacher, scrub, salun, l1-sparse, ssd, unsir, boundary.

Bounds (original MLP: test ~96%, test on classes != 3 ~96%, backdoor ASR ~99%):
- class 3: forget accuracy < 30% and test accuracy on the other classes >= 90% for every method;
- backdoor: ASR < 25% (SSD: at least 10 points below the original; its dampening removes the trigger
  only partly on this MLP) and clean test accuracy >= 90% (boundary >= 75%: with no retain data it
  also suppresses the target class, as documented in the module);
- random 10%: test accuracy >= 88%.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import TensorDataset

from oblivio import OblivioError, accuracy, attack_success_rate, evaluate, get_method
from oblivio.methods import UnlearnData
from oblivio.methods.boundary import nearest_wrong_labels
from oblivio.methods.l1_sparse import l1_norm
from oblivio.methods.salun import saliency_mask
from oblivio.methods.ssd import capped_alpha, fisher_diagonal, importances, largest_ratio
from oblivio.methods.unsir import error_maximising_noise

METHODS = ["bad-teacher", "scrub", "salun", "l1-sparse", "ssd", "unsir", "boundary"]
SCENARIOS = ["random", "class", "backdoor"]
DIGITS_OPTIONS: dict = {}  # every method at its defaults


def request(split, seed: int = 0, retain: bool = True) -> UnlearnData:
    return UnlearnData(
        forget=split.forget, num_classes=split.info.num_classes, retain=split.retain if retain else None,
        third_party=split.third_party, forget_classes=split.forget_classes,
        backdoor_target=split.backdoor_target, arch="mlp", seed=seed,
    )


_RESULTS: dict = {}


@pytest.fixture(scope="module")
def outcome(splits, original):
    """(method, scenario) -> (UnlearnResult, metrics, original weights before the run, original after)."""

    def get(method: str, scenario: str):
        key = (method, scenario)
        if key not in _RESULTS:
            model = original(scenario)
            before = copy.deepcopy(model.state_dict())
            result = get_method(method, **DIGITS_OPTIONS.get(method, {})).unlearn(model, request(splits[scenario]))
            _RESULTS[key] = (result, evaluate(result.model, splits[scenario]), before, model.state_dict())
        return _RESULTS[key]

    return get


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("method", METHODS)
def test_runs_finite_and_leaves_original(method, scenario, outcome):
    result, metrics, before, after = outcome(method, scenario)
    assert result.method == method
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert same_weights(before, after), "the original model was modified"
    assert not same_weights(before, result.model.state_dict()), "unlearning changed nothing"
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


@pytest.mark.parametrize("method", METHODS)
def test_class_forgetting(method, outcome, splits, original):
    split = splits["class"]
    _, metrics, _, _ = outcome(method, "class")
    rest = split.y_test != 3
    others = TensorDataset(split.x_test[rest], split.y_test[rest])
    assert accuracy(original("class"), split.forget) > 0.9
    assert metrics["forget"] < 0.30
    assert accuracy(outcome(method, "class")[0].model, others) >= 0.90


@pytest.mark.parametrize("method", METHODS)
def test_backdoor_removed(method, outcome, splits, original):
    split = splits["backdoor"]
    asr_before = attack_success_rate(original("backdoor"), split.test_triggered, split.backdoor_target)
    _, metrics, _, _ = outcome(method, "backdoor")
    assert asr_before > 0.9
    if method == "ssd":
        assert metrics["asr"] < asr_before - 0.10
    elif method == "scrub":  # ASR after scrub varies by seed: 3-80% (originals of seeds 0-3), 0-49% with merged batches
        assert metrics["asr"] < asr_before - 0.30
    else:
        assert metrics["asr"] < 0.25
    assert metrics["test"] >= (0.75 if method == "boundary" else 0.90)


@pytest.mark.parametrize("method", METHODS)
def test_random_subset_keeps_utility(method, outcome):
    assert outcome(method, "random")[1]["test"] >= 0.88


def test_salun_masked_out_weights_bit_identical(splits, original, outcome):
    model = original("random")
    result = outcome("salun", "random")[0]
    masks = saliency_mask(model, splits["random"].forget, 0.5, get_method("salun").config.batch_size)
    total = sum(m.numel() for m in masks.values())
    assert abs(sum(int(m.sum()) for m in masks.values()) - total / 2) <= 1
    new, old = dict(result.model.named_parameters()), dict(model.named_parameters())
    for name, m in masks.items():
        assert torch.equal(new[name][~m], old[name][~m]), f"{name}: a masked-out weight moved"
    assert any(not torch.equal(new[n][m], old[n][m]) for n, m in masks.items()), "no salient weight was updated"


@pytest.mark.parametrize("method", ["unsir", "bad-teacher"])
def test_same_seed_same_weights(method, splits, original, outcome):
    model, split = original("class"), splits["class"]
    a = outcome(method, "class")[0].model.state_dict()  # seed 0
    b = get_method(method).unlearn(model, request(split, seed=0)).model.state_dict()
    c = get_method(method).unlearn(model, request(split, seed=1)).model.state_dict()
    assert same_weights(a, b)
    assert not same_weights(a, c)


def test_boundary_needs_no_retain_set_but_others_do(splits, original):
    model, split = original("class"), splits["class"]
    result = get_method("boundary").unlearn(model, request(split, retain=False))
    assert accuracy(result.model, split.forget) < 0.30
    with pytest.raises(OblivioError, match="retain"):
        get_method("salun").unlearn(model, request(split, retain=False))


def test_boundary_labels_are_wrong_classes(splits, original):
    x, y = splits["class"].forget.tensors
    labels = nearest_wrong_labels(original("class"), x, y, bound=0.1, step=8 / 255, iters=1)
    assert (labels != y).all()


def test_ssd_per_sample_fisher_equals_batches_of_one(splits, original):
    model, forget = original("class"), splits["class"].forget
    vectorised = fisher_diagonal(model, forget, batch_size=64, per_sample=True)
    looped = fisher_diagonal(model, forget, batch_size=1, per_sample=False)
    for name in vectorised:
        assert torch.allclose(vectorised[name], looped[name], rtol=1e-4, atol=1e-10)


def test_ssd_defaults_are_the_papers():
    """alpha, lambda, exponent as in the paper, its Fisher definition (per sample), and the class script's batch."""
    c = get_method("ssd").config
    assert (c.alpha, c.dampening, c.exponent, c.per_sample, c.batch_size) == (10.0, 1.0, 1.0, True, 64)


def test_ssd_alpha_is_capped_below_the_largest_possible_importance_ratio():
    assert capped_alpha(10.0, ceiling=10.0, ceiling_fraction=0.5) == 5.0  # a 10% forget set
    assert capped_alpha(10.0, ceiling=100.0, ceiling_fraction=0.5) == 10.0  # 1%: the paper's setting
    assert capped_alpha(10.0, ceiling=10.0, ceiling_fraction=1.0) == 10.0  # cap off


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("per_sample", [True, False])
def test_ssd_importance_ratio_never_exceeds_the_ceiling_its_cap_assumes(splits, original, scenario, per_sample):
    """The cap is derived from the estimate in use: no forget/global ratio above it (the mini-batch estimate over
    a separate, shifted loader reached 801 on class 3 against a ceiling of ~10), and some weight reaches it."""
    split = splits[scenario]
    glob, forg, ceiling = importances(original(scenario), split.retain, split.forget, 64, per_sample)
    n_terms = (len(split.retain) + len(split.forget)) / len(split.forget) if per_sample else None
    if per_sample:
        assert ceiling == pytest.approx(n_terms)
    assert ceiling / 2 < largest_ratio(glob, forg) <= ceiling * (1 + 1e-5)


def test_ssd_defaults_forget_a_class_and_keep_the_rest(splits, original):
    """At its defaults SSD forgets class 3 of digits (it forgot nothing, retain ~85%, with the cap on N / N_forget
    applied to the mini-batch estimate)."""
    model, split = original("class"), splits["class"]
    result = get_method("ssd").unlearn(model, request(split))
    assert accuracy(result.model, split.forget) < 0.05
    assert accuracy(result.model, split.retain) > 0.95
    assert "safeguard" not in result.info and result.info["largest_ratio"] <= result.info["ceiling"] * (1 + 1e-5)


def test_ssd_tuning_searches_the_cap_too_and_starts_from_the_defaults():
    """Above its cap every alpha is the same SSD, so the cap's share of the ceiling is searched as well."""
    from oblivio.tune import default_params

    assert default_params("ssd") == {"alpha": 10.0, "ceiling_fraction": 0.5, "dampening": 1.0, "per_sample": True}


def test_ssd_paper_alpha_selects_nothing_on_a_tenth_of_the_data_and_the_cap_forgets(splits, original):
    """Class 3 is ~10% of digits: no weight's forget/global Fisher ratio can exceed ~10, the paper's alpha."""
    model, req = original("class"), request(splits["class"])
    uncapped = get_method("ssd", ceiling_fraction=1.0).unlearn(model, req)
    assert uncapped.info["dampened"] == 0
    capped = get_method("ssd").unlearn(model, req)
    assert 4.5 < capped.info["alpha_capped"] < 5.5 and capped.info["dampened"] > 0
    assert accuracy(capped.model, splits["class"].forget) < 0.1
    assert accuracy(capped.model, splits["class"].retain) > 0.95


def test_ssd_upstream_estimate_option_runs(splits, original):
    """The reference code's mini-batch estimate: its ceiling is batches / forget batches (22 / 3 here)."""
    split = splits["class"]
    result = get_method("ssd", per_sample=False).unlearn(original("class"), request(split))
    batches = lambda n: -(-n // 64)  # noqa: E731
    assert result.info["ceiling"] == pytest.approx(
        (batches(len(split.retain)) + batches(len(split.forget))) / batches(len(split.forget)), abs=1e-4)
    assert result.info["dampened"] > 0


def test_unsir_noise_maximises_loss_on_its_labels(splits, original):
    model = original("class")
    labels = torch.full((32,), 3)
    start = error_maximising_noise(model, labels, (1, 8, 8), steps=0, lr=0.1, reg=0.1, seed=0)
    noise = error_maximising_noise(model, labels, (1, 8, 8), steps=40, lr=0.1, reg=0.1, seed=0)
    loss = lambda x: torch.nn.functional.cross_entropy(model(x), labels).item()  # noqa: E731
    with torch.no_grad():
        assert loss(noise) > loss(start) + 1.0


def test_l1_sparse_shrinks_weights(outcome, original):
    result = outcome("l1-sparse", "random")[0]
    assert l1_norm(result.model).item() < 0.5 * l1_norm(original("random")).item()


def test_unknown_option_is_refused():
    with pytest.raises(OblivioError, match="no option"):
        get_method("scrub", learning_rate=0.1)


@pytest.mark.parametrize(
    "method, option, value",
    [("bad-teacher", "lr", -1.0), ("scrub", "kd_T", 0.0), ("scrub", "max_backoffs", -1), ("salun", "mask_ratio", 1.5),
     ("l1-sparse", "epochs", 0), ("ssd", "alpha", 0.0), ("unsir", "batch_size", 0), ("boundary", "bound", -0.1)],
)
def test_bad_options_are_refused(method, option, value):
    with pytest.raises(OblivioError, match=option):
        get_method(method, **{option: value})
