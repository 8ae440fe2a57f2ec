"""The rivals: ReGUn (reference-guided distillation) and NegGrad+ (ascent on forget + descent on retain), on digits."""
from __future__ import annotations

import copy

import pytest
import torch

from oblivio import available_methods, evaluate, get_method
from oblivio.errors import OblivioError
from oblivio.methods import UnlearnData
from oblivio.methods.regun import target_distribution
from oblivio.tune import default_params


def request(split, seed: int = 0, third_party: bool = True) -> UnlearnData:
    return UnlearnData(forget=split.forget, num_classes=split.info.num_classes, retain=split.retain,
                       third_party=split.third_party if third_party else None, forget_classes=split.forget_classes,
                       backdoor_target=split.backdoor_target, arch="mlp", seed=seed)


def test_registered_with_paper_defaults_and_search_spaces():
    assert {"regun", "neggrad+"} <= set(available_methods())
    r, n = get_method("regun").config, get_method("neggrad+").config
    assert (r.epochs, r.lr, r.temperature, r.retain_weight, r.selector, r.batch_size) == (10, 0.01, 1.0, 0.5, "uniform", 128)
    assert (n.epochs, n.lr, n.retain_weight, n.batch_size) == (10, 0.01, 0.5, 128)
    assert default_params("regun") == {"epochs": 10, "lr": 0.01, "temperature": 1.0, "retain_weight": 0.5,
                                       "joint_forward": False}
    assert default_params("neggrad+") == {"epochs": 10, "lr": 0.01, "retain_weight": 0.5}


@pytest.mark.parametrize("method,options", [
    ("regun", {"retain_weight": 1.0}), ("regun", {"selector": "nearest"}), ("regun", {"temperature": 0.0}),
    ("regun", {"aggregation": "median"}), ("neggrad+", {"retain_weight": -0.1}), ("neggrad+", {"lr": 0.0}),
    ("neggrad+", {"epochs": 0}),
])
def test_bad_options_are_refused(method, options):
    with pytest.raises(OblivioError, match=method.replace("+", r"\+")):
        get_method(method, **options)


@pytest.mark.parametrize("method,options", [("regun", {}), ("neggrad+", {"retain_weight": 0.85})])
def test_forgets_a_class_and_keeps_retain_accuracy(method, options, splits, original):
    model, split = original("class"), splits["class"]
    before = copy.deepcopy(model.state_dict())
    result = get_method(method, **options).unlearn(model, request(split))
    metrics = evaluate(result.model, split)
    assert evaluate(model, split)["forget"] > 0.9
    assert metrics["forget"] < 0.10
    assert metrics["retain"] >= 0.90
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the original was modified"
    assert result.info["steps"] == 10 * -(-len(split.forget) // 128)


def test_regun_is_deterministic_for_a_seed(splits, original):
    model, split = original("random"), splits["random"]
    a = get_method("regun", epochs=2).unlearn(model, request(split, seed=0)).model.state_dict()
    b = get_method("regun", epochs=2).unlearn(model, request(split, seed=0)).model.state_dict()
    c = get_method("regun", epochs=2).unlearn(model, request(split, seed=1)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_regun_needs_held_out_data(splits, original):
    with pytest.raises(OblivioError, match="third-party"):
        get_method("regun").unlearn(original("class"), request(splits["class"], third_party=False))


def test_regun_class_informed_batches_match_the_forget_histogram():
    method = get_method("regun", selector="class_informed")
    y_held = torch.tensor([0, 0, 1, 1, 1, 2])
    by_class = [torch.nonzero(y_held == k).flatten() for k in range(4)]
    y_forget = torch.tensor([1, 1, 0, 3])  # class 3 has no held-out sample: any held-out sample stands in
    idx = method._held_out_indices(y_forget, by_class, len(y_held), 4, torch.Generator().manual_seed(0))
    assert len(idx) == 4
    assert sorted(y_held[idx[:3]].tolist()) == [0, 1, 1]


def test_target_distribution_is_one_distribution():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    q = target_distribution(logits, 1.0, "mean_probs")
    assert q.shape == (3,) and torch.isclose(q.sum(), torch.tensor(1.0)) and torch.isclose(q[0], q[1])
    assert torch.allclose(target_distribution(logits, 1.0, "mean_logits"), torch.softmax(logits.mean(0), 0))


def test_regun_joint_forward_changes_only_what_batchnorm_sees(splits, original):
    """One forward of forget + retain equals two on a net without BatchNorm; with BatchNorm the forget samples
    are normalised with the retain samples' statistics, so the running statistics come out different."""
    split = splits["random"]
    separate = get_method("regun", epochs=1).unlearn(original("random"), request(split)).model.state_dict()
    joint = get_method("regun", epochs=1, joint_forward=True).unlearn(original("random"), request(split)).model.state_dict()
    assert all(torch.allclose(separate[k], joint[k], atol=1e-5) for k in separate)

    torch.manual_seed(0)
    bn_net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32),
                                 torch.nn.ReLU(), torch.nn.Linear(32, 10))
    # batch 100: no one-sample forget batch (129 samples), which would use the running statistics
    runs = [get_method("regun", epochs=1, batch_size=100, joint_forward=j).unlearn(bn_net, request(split)).model
            for j in (False, True)]
    means = [m[2].running_mean for m in runs]
    assert not torch.allclose(means[0], means[1], atol=1e-4)
