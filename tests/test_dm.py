"""dm's stopping rule: nothing to forget is recognised at step 0; a remembered random subset is forgotten."""
import pytest
import torch
from torch.utils.data import TensorDataset

from oblivio import ClassForget, RandomSubset, TrainConfig, accuracy, make_split, retrain, train, unlearn
from oblivio.methods.dm import calibrated_z, familiarity_z, logit_confidence, quantile_match, welch_z


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small MLPs train ~50x slower with 2 threads than with 1 on a busy 2-core machine (spin-waiting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.fixture(scope="module")
def random30(digits):
    """Digits, random 30 %: an original fitted to ~100 % train accuracy and its retrain (seed 0)."""
    split = make_split(digits, RandomSubset(fraction=0.3), seed=0)
    cfg = TrainConfig(seed=0, epochs=40, weight_decay=0.0)
    original = train("mlp", split.train, 10, cfg)[0]
    gold = retrain("mlp", split.retain, 10, cfg)[0]
    return split, original, gold


@pytest.mark.parametrize("scenario", [RandomSubset(fraction=0.1), ClassForget((3,))], ids=["random", "class"])
def test_dm_stops_at_step_0_on_a_model_that_never_saw_the_forget_set(digits, scenario):
    split = make_split(digits, scenario, seed=0)
    never_saw = retrain("mlp", split.retain, 10, TrainConfig(seed=0))[0]
    result = unlearn(never_saw, split=split, method="dm", seed=0)
    info = result.info
    assert info["steps"] == 0 and info["stopped_by"] == "already_matched", info
    assert info["nothing_to_forget"] is True and "no more familiar than unseen data" in info["reason"]
    assert info["initial_distance"] <= info["threshold"]
    assert same_weights(result.model, never_saw)


def test_dm_forgets_a_remembered_random_subset_towards_retraining(random30):
    split, original, gold = random30
    result = unlearn(original, split=split, method="dm", seed=0)
    info = result.info
    assert info["initial_distance"] > info["threshold"], info  # the original remembers the forget set
    assert info["steps"] > 0 and "nothing_to_forget" not in info and info["stopped_by"] == "threshold", info
    assert info["distance"] <= info["threshold"] < info["initial_distance"]
    acc = {name: accuracy(m, split.forget) for name, m in (("orig", original), ("dm", result.model), ("gold", gold))}
    assert acc["gold"] < acc["orig"] - 0.015, acc  # retraining does forget something here
    assert abs(acc["dm"] - acc["gold"]) < abs(acc["orig"] - acc["gold"]), acc
    assert accuracy(result.model, split.test) >= accuracy(original, split.test) - 0.02  # utility kept
    assert accuracy(result.model, split.retain) >= accuracy(gold, split.retain) - 0.02
    assert {"forget_accuracy", "reference_accuracy", "z_loss", "z_accuracy", "initial_z_loss"} <= set(info)


def test_dm_is_deterministic_on_a_random_subset(random30):
    split, original, _ = random30
    a = unlearn(original, split=split, method="dm", seed=0)
    b = unlearn(original, split=split, method="dm", seed=0)
    assert same_weights(a.model, b.model) and a.info == b.info


def test_familiarity_z_is_positive_only_for_remembered_samples():
    torch.manual_seed(0)
    y = torch.zeros(400, dtype=torch.long)
    unseen = torch.randn(400, 3) + torch.tensor([1.0, 0.0, 0.0])  # ~ 70 % correct, moderate confidence
    remembered = torch.randn(400, 3) + torch.tensor([8.0, 0.0, 0.0])  # all correct, confident
    z_loss, z_acc, stats = familiarity_z(remembered, y, unseen, y, loss_clip=10.0)
    assert z_loss > 5 and z_acc > 5 and stats["forget_accuracy"] > stats["reference_accuracy"]
    z_loss, z_acc, _ = familiarity_z(unseen[:200], y[:200], unseen[200:], y[200:], loss_clip=10.0)
    assert abs(z_loss) < 2.5 and abs(z_acc) < 2.5


def test_logit_confidence_and_quantile_match():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 30.0, 0.0]])
    phi = logit_confidence(logits, torch.tensor([0, 1]))
    p = logits.softmax(1)
    assert phi[0].item() == pytest.approx((p[0, 0].log() - (1 - p[0, 0]).log()).item(), rel=1e-5)
    assert phi[1].item() == pytest.approx(30.0 - torch.logsumexp(torch.zeros(2), 0).item(), rel=1e-5)  # no saturation
    ref = torch.linspace(-3, 3, 101)
    assert quantile_match(ref[torch.randperm(101)], ref).item() == pytest.approx(0.0, abs=1e-3)  # order-free
    assert quantile_match(ref + 2.0, ref).item() > 1.0


def test_dm_search_space_names_real_options_and_contains_the_defaults():
    import dataclasses

    import optuna

    from oblivio import get_method

    dm = type(get_method("dm"))
    defaults = dataclasses.asdict(dm.Config())
    tuned = ("lr", "match_weight", "phi_weight", "anchor_weight", "z_stop")
    space = dm.search_space(optuna.trial.FixedTrial({k: defaults[k] for k in tuned}))
    assert set(tuned) <= set(space) <= set(defaults)
    assert all(space[k] == defaults[k] for k in tuned)


def test_dm_under_bf16_autocast_sees_its_own_updates(random30):
    """A regression test: autocast's weight-cast cache once froze every forward pass at the first step's weights."""
    from oblivio import get_method
    from oblivio.methods import UnlearnData

    split, original, _ = random30
    data = UnlearnData(forget=split.forget, num_classes=10, retain=split.retain, third_party=split.third_party)
    info = get_method("dm", max_steps=20).unlearn(original, data, amp="bf16").info
    assert info["steps"] > 0 and info["distance"] < info["initial_distance"] - 0.3, info


def test_dm_utility_guard_backs_off_a_step_size_that_wrecks_the_model(digits, original, splits):
    """lr 0.3 (300x the default) wrecks an MLP in a few Adam steps: the guard restores the last good
    weights and halves lr until retain accuracy holds, and says so in info."""
    split, model = splits["class"], original("class")
    result = unlearn(model, split=split, method="dm", seed=0, lr=0.3)
    info = result.info
    assert info["backoffs"] >= 1 and info["final_lr"] < 0.3 and "lr halved" in info["safeguard"], info
    assert info["stopped_by"] == "threshold", info
    assert accuracy(result.model, split.retain) >= accuracy(model, split.retain) - 0.05
    assert accuracy(result.model, split.forget) < 0.1
    default = unlearn(model, split=split, method="dm", seed=0).info
    assert "backoffs" not in default and "safeguard" not in default  # quiet when the step size is fine


def test_calibrated_z_removes_the_small_sample_bias_of_skewed_losses():
    """Skewed losses (most ~0, a tail): a few unseen samples' mean is usually under the reference's, so
    the raw Welch z is positive on unseen data; against its bootstrap null it is centred again."""
    gen = torch.Generator().manual_seed(0)
    reference = (-torch.rand(300, generator=gen).log()) ** 4  # Exponential(1) ** 4: a heavy right tail
    typical = reference.median().reshape(1)
    raw = float(welch_z(typical.double(), reference.double()))
    z, (q16, median, q84) = calibrated_z(raw, 1, reference, seed=0)
    assert raw > 1.0 and median > 1.0 and abs(z) < 0.5, (raw, z, median)
    normal = torch.randn(300, generator=gen)  # symmetric losses, many samples: the null is ~N(0, 1)
    forget = torch.randn(200, generator=gen) - 0.3
    raw = float(welch_z(forget.double(), normal.double()))
    z, (q16, median, q84) = calibrated_z(raw, 200, normal, seed=0)
    assert abs(median) < 0.15 and abs(q84 - median - 1) < 0.2 and abs(z - raw) < 0.35, (raw, z, q16, median, q84)


def test_dm_ends_at_once_on_a_one_sample_request_like_unseen_data(splits, original):
    """One forget sample of the digits MLP, as familiar as unseen data (phi near the reference median): the raw
    z says 'remembered' (2.6) and dm ran its 500-step budget; the calibrated z says nothing to forget."""
    split, model = splits["random"], original("random")
    one = TensorDataset(*(t[:1] for t in split.forget.tensors))
    raw = unlearn(model, one, split.retain, split.third_party, method="dm", seed=0, null_draws=0, max_steps=20)
    assert raw.info["initial_z_loss"] > 1 and raw.info["steps"] == 20
    result = unlearn(model, one, split.retain, split.third_party, method="dm", seed=0)
    info = result.info
    assert info["nothing_to_forget"] and info["steps"] == 0 and info["initial_z_loss"] <= 1 < info["initial_z_loss_welch"]
    assert same_weights(result.model, model)


def test_dm_class_reference_drops_what_the_model_confuses_with_the_class(digits):
    """A retrained model never predicts a class it never saw, so for class forgetting the third-party
    samples that the model predicts as the forgotten class are no evidence of 'unseen': they are dropped."""
    from oblivio.methods import UnlearnData
    from oblivio.methods.dm import DistributionMatching

    split = make_split(digits, ClassForget((3,)), seed=0)
    x, y = split.third_party.tensors
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), 10))
    with torch.no_grad():  # predicts class 3 exactly where the first pixel is lit, class 0 elsewhere
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].bias[0] = 0.5
        model[1].weight[3, 0] = 1e3
    flat = x.flatten(1).clone()
    flat[: len(flat) // 2, 0] = 1.0  # light the first pixel of half the pool
    third = TensorDataset(flat.reshape(x.shape), y)
    confused = (flat[:, 0] > 1e-3) & (y != 3)
    data = UnlearnData(forget=split.forget, num_classes=10, third_party=third, forget_classes=(3,))
    unlearner = DistributionMatching()
    assert len(unlearner.reference_pool(data, model)) == int(((y != 3) & ~confused).sum()) > 0
    assert len(unlearner.reference_pool(data)) == int((y != 3).sum())
    kept = DistributionMatching(drop_confused=False).reference_pool(data, model)
    assert len(kept) == int((y != 3).sum())


def test_dm_forgets_every_sample_of_a_class(splits, original):
    """Class forgetting ends with no forget sample predicted as the class, as a retrained model."""
    split, model = splits["class"], original("class")
    result = unlearn(model, split=split, method="dm", seed=0)
    info = result.info
    assert info["stopped_by"] == "threshold" and info["forgotten_share"] == 0.0, info
    assert info["reference_confused_dropped"] >= 0 and info["reference_size"] > 0
    assert accuracy(result.model, split.forget) == 0.0
    assert accuracy(result.model, split.retain) >= accuracy(model, split.retain) - 0.02
