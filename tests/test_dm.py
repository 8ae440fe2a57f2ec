"""dm's stopping rule: nothing to forget is recognised at step 0; a remembered random subset is forgotten."""
import dataclasses

import pytest
import torch
from torch.utils.data import TensorDataset

from oblivio import ClassForget, OblivioError, RandomSubset, TrainConfig, accuracy, make_split, retrain, train, unlearn
from oblivio.methods import UnlearnData
from oblivio.methods import dm as dm_module
from oblivio.methods.dm import (
    calibrated_z,
    familiarity_z,
    logit_confidence,
    quantile_match,
    transfer_targets,
    welch_z,
)
from oblivio.training import predict


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
    split, original, _ = random30
    data = UnlearnData(forget=split.forget, num_classes=10, third_party=split.third_party)  # set-level matching
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
    # without a retain set there are no per-sample targets: the set-level z, calibrated against its null
    calibrated = unlearn(model, one, None, split.third_party, method="dm", seed=0).info
    assert calibrated["nothing_to_forget"] and calibrated["initial_z_loss"] <= 1 < calibrated["initial_z_loss_welch"]
    result = unlearn(model, one, split.retain, split.third_party, method="dm", seed=0)  # default: sample by sample
    info = result.info
    assert info["nothing_to_forget"] and info["steps"] == 0 and info["underpowered"], info
    assert same_weights(result.model, model)


def test_dm_class_reference_drops_what_the_model_confuses_with_the_class(digits):
    """A retrained model never predicts a class it never saw, so for class forgetting the third-party
    samples that the model predicts as the forgotten class are no evidence of 'unseen': they are dropped."""
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


def test_dm_forgets_every_sample_of_a_class(splits, original):
    """Class forgetting ends with no forget sample predicted as the class, as a retrained model."""
    split, model = splits["class"], original("class")
    result = unlearn(model, split=split, method="dm", seed=0)
    info = result.info
    assert info["stopped_by"] == "threshold" and info["forgotten_share"] == 0.0, info
    assert info["reference_confused_dropped"] >= 0 and info["reference_size"] > 0
    assert accuracy(result.model, split.forget) == 0.0
    assert accuracy(result.model, split.retain) >= accuracy(model, split.retain) - 0.02


def test_transfer_targets_carry_each_rank_to_the_unseen_value_at_that_rank():
    retain = torch.linspace(0.0, 10.0, 1001, dtype=torch.float64)  # trained-on: confident
    reference = torch.linspace(-5.0, 5.0, 1001, dtype=torch.float64)  # unseen: 5 lower at every rank
    forget = torch.tensor([10.0, 5.0, 0.0], dtype=torch.float64)
    assert torch.allclose(transfer_targets(forget, retain, reference), torch.tensor([5.0, 0.0, -5.0], dtype=torch.float64),
                          atol=0.02)
    one = transfer_targets(torch.tensor([7.5], dtype=torch.float64), retain, reference)  # one sample, its own target
    assert abs(float(one) - 2.5) < 0.02
    assert torch.all(transfer_targets(forget.flip(0), retain, reference).diff() > 0)  # monotone in phi


@pytest.fixture(scope="module")
def memorising(digits):
    """Digits MLP trained without weight decay to memorise its pool (seed 0), random 10 % split."""
    split = make_split(digits, RandomSubset(fraction=0.1), seed=0)
    return split, train("mlp", split.train, 10, TrainConfig(seed=0, epochs=60, weight_decay=0.0))[0]


def test_a_small_request_is_tested_sample_by_sample(memorising):
    """Three samples are too few for a set-level test: each is held to the unseen confidence of its rank."""
    split, original = memorising
    x, y = split.forget.tensors
    hardest = logit_confidence(*predict(original, split.forget)).argsort()[:3]  # atypical samples: memorised most
    forget = TensorDataset(x[hardest], y[hardest])
    result = unlearn(original, forget=forget, retain=split.retain, third_party=split.third_party, method="dm", seed=0)
    info = result.info
    assert info["underpowered"] is True and info["initial_samples_above_target"] >= 1, info
    assert info["steps"] > 0 and not same_weights(result.model, original)
    assert info["samples_above_target"] == 0 and info["stopped_by"] == "threshold", info
    before, after = (logit_confidence(*predict(m, forget)) for m in (original, result.model))
    assert (after <= before + 1e-6).all() and after.mean() < before.mean() - 0.5
    # the one-by-one test, per sample, for the record: phi against its target, and how typical it is of unseen data
    first, last = info["initial_per_sample"], info["per_sample"]
    assert len(first) == len(last) == 3
    assert [s["phi"] for s in last] == pytest.approx(after.tolist(), abs=1e-3)
    assert all(s["phi"] <= s["target"] + info["target_tolerance"] for s in last)
    assert min(s["unseen_at_least_as_confident"] for s in first) < min(s["unseen_at_least_as_confident"] for s in last)


def test_a_small_request_on_a_model_that_never_saw_it_is_nothing_to_forget(digits):
    split = make_split(digits, RandomSubset(fraction=0.1), seed=0)
    never_saw = retrain("mlp", split.retain, 10, TrainConfig(seed=0))[0]
    forget = TensorDataset(*(t[:3] for t in split.forget.tensors))
    info = unlearn(never_saw, forget=forget, retain=split.retain, third_party=split.third_party, method="dm").info
    assert info["underpowered"] is True and info["nothing_to_forget"] is True and "one by one" in info["reason"], info


def test_earlier_requests_of_the_lineage_count_towards_what_must_look_unseen(memorising):
    """A ten-sample request alone is tested sample by sample; with the 60 samples its lineage forgot before, the
    union (70) is what must look unseen: tested as a set, and the earlier samples are part of the objective."""
    split, original = memorising
    x, y = split.forget.tensors
    new, earlier = TensorDataset(x[:10], y[:10]), TensorDataset(x[10:70], y[10:70])
    alone = unlearn(original, forget=new, retain=split.retain, third_party=split.third_party, method="dm").info
    union = unlearn(original, forget=new, retain=split.retain, third_party=split.third_party, method="dm",
                    previously_forgotten=earlier)
    assert alone["underpowered"] is True and "lineage_samples" not in alone
    assert union.info["lineage_samples"] == 60 and "underpowered" not in union.info, union.info
    assert union.info["statistic"] == "familiarity_z" and union.info["initial_distance"] != alone["initial_distance"]
    if union.info["steps"]:  # what changed: the earlier samples too, not only the new request
        moved = (logit_confidence(*predict(union.model, earlier)) - logit_confidence(*predict(original, earlier))).abs()
        assert moved.mean() > 0.05


def test_the_small_request_rule_reads_every_sample_whatever_the_probe_size(memorising, monkeypatch):
    """The per-sample stop compares every forget sample with its own target, not the (smaller) familiarity probe."""
    split, original = memorising
    x, y = split.forget.tensors
    hardest = logit_confidence(*predict(original, split.forget)).argsort()[:5]
    monkeypatch.setattr(dm_module, "FAMILIARITY_SAMPLES", 3)
    info = unlearn(original, forget=TensorDataset(x[hardest], y[hardest]), retain=split.retain,
                   third_party=split.third_party, method="dm", seed=0).info
    assert info["underpowered"] and 0 <= info["initial_samples_above_target"] <= 5, info


def test_dm_keeps_its_cost_under_its_share_of_a_retrain(splits, original):
    """With the original's epochs known, dm's steps are capped so its sample passes stay under ``budget`` x a
    retrain's (epochs x retain samples), never under ``MIN_BUDGET_STEPS``; the class is still forgotten."""
    from oblivio.methods.dm import FORWARD_COST, MIN_BUDGET_STEPS, DistributionMatching

    split, model = splits["class"], original("class")
    c = DistributionMatching.Config()
    n_f, n_t, n_r = min(c.batch_size, len(split.forget)), c.batch_size, c.batch_size
    per_step = n_f + n_t + n_r + FORWARD_COST * (n_t + n_r)  # forward + backward, plus the anchor's forward
    capped = unlearn(model, split=split, method="dm", seed=0, train_epochs=80)
    uncapped = unlearn(model, split=split, method="dm", seed=0)
    assert uncapped.info["step_budget"] == c.max_steps
    assert MIN_BUDGET_STEPS < capped.info["step_budget"] < c.budget * 80 * len(split.retain) / per_step
    assert capped.info["steps"] <= capped.info["step_budget"]
    assert capped.info["stopped_by"] == "threshold" and accuracy(capped.model, split.forget) == 0.0
    floor = unlearn(model, split=split, method="dm", seed=0, train_epochs=1, budget=0.01, verify="record")
    assert floor.info["step_budget"] == MIN_BUDGET_STEPS and floor.info["steps"] <= MIN_BUDGET_STEPS
    assert accuracy(floor.model, split.forget) == 0.0  # a cheap retrain does not stop dm from forgetting
    tight = unlearn(model, split=split, method="dm", seed=0, train_epochs=1, budget=0.01, max_steps=5,
                    verify="record")
    assert tight.info["steps"] == tight.info["step_budget"] == 5 and tight.info["stopped_by"] == "budget"
    assert "stopped at max_steps (5)" in tight.info["warnings"][0]  # not matched yet: the user is told
    assert "warnings" not in capped.info
    short = unlearn(original("random"), split=splits["random"], method="dm", seed=0, train_epochs=1, budget=0.01,
                    z_stop=-100.0, verify="record")  # never matched: ends at the budget's floor
    assert short.info["stopped_by"] == "budget" and short.info["steps"] == MIN_BUDGET_STEPS
    assert f"stopped at its step budget ({MIN_BUDGET_STEPS} steps)" in short.info["warnings"][0]
    with pytest.raises(OblivioError, match="budget must be positive"):
        unlearn(model, split=split, method="dm", seed=0, train_epochs=20, budget=0)


def test_a_forgotten_class_goes_where_the_original_ranks_the_other_classes(splits, original, monkeypatch):
    """A retrained model sends a forgotten class's samples to the classes the original ranks next (its top
    other class agrees with the retrains' on 77-90 % of Fashion-MNIST samples, docs/design/confusable-classes.md);
    without the other-class anchor dm sent 59 % of digits' 3s elsewhere."""
    split, model = splits["class"], original("class")

    def top_other(m):
        logits = predict(m, split.forget)[0]
        logits[:, 3] = -float("inf")
        return logits.argmax(1)

    before = top_other(model)
    result = unlearn(model, split=split, method="dm", seed=0)
    kept = float((top_other(result.model) == before).float().mean())
    monkeypatch.setattr(dm_module, "OTHERS_SHARE", 0.0)
    loose = float((top_other(unlearn(model, split=split, method="dm", seed=0).model) == before).float().mean())
    assert accuracy(result.model, split.forget) == 0.0 and kept > 0.85 and kept > loose + 0.3, (kept, loose)


def test_the_budget_never_ends_a_class_run_that_still_predicts_the_class(digits):
    """A 5-epoch original: the 50-step floor left 18 % of class 8 predicted as 8; dm goes on past its budget
    (never past max_steps) until none is, and says by how many steps."""
    split = make_split(digits, ClassForget((8,)), seed=0)
    model = train("mlp", split.train, 10, TrainConfig(epochs=5, seed=0))[0]
    result = unlearn(model, split=split, method="dm", seed=0, train_epochs=5)
    info = result.info
    assert accuracy(result.model, split.forget) == 0.0 and info["stopped_by"] != "utility_guard", info
    assert info["budget_extended_by"] > 0 and info["steps"] == info["step_budget"] + info["budget_extended_by"]
    held = unlearn(model, split=split, method="dm", seed=0, train_epochs=5, max_steps=50, verify="record").info
    assert held["steps"] == 50 and "budget_extended_by" not in held  # max_steps stays the hard cap


def test_the_class_ramp_is_a_number_of_steps_whatever_the_budget(splits, original):
    """The matching weight ramps over at most ``RAMP_STEPS`` steps: a bigger training set (more retrain passes, a
    larger budget) no longer slows the ramp down, so a class costs the same steps on 300 or 3,000 epochs."""
    split, model = splits["class"], original("class")
    runs = [unlearn(model, split=split, method="dm", seed=0, train_epochs=epochs, max_steps=2000)
            for epochs in (300, 3000)]
    assert runs[0].info["step_budget"] < runs[1].info["step_budget"] == 2000  # budgets far apart ...
    assert runs[0].info["steps"] == runs[1].info["steps"] < dm_module.RAMP_STEPS  # ... the same run
    assert same_weights(runs[0].model, runs[1].model) and accuracy(runs[0].model, split.forget) == 0.0


def test_a_large_forget_probe_uses_the_plain_welch_z(memorising, monkeypatch):
    """The bootstrap null corrects small, skewed samples; from ``NULL_BELOW`` forget samples on, the z is Welch's."""
    split, original = memorising
    x, y = split.forget.tensors
    forget = TensorDataset(x[:13], y[:13])

    def initial():
        return unlearn(original, forget=forget, retain=split.retain, third_party=split.third_party, method="dm",
                       seed=0, max_steps=1, verify="record").info

    calibrated = initial()
    monkeypatch.setattr(dm_module, "NULL_BELOW", 10)  # 13 samples count as large
    plain = initial()
    assert plain["initial_z_loss"] == plain["initial_z_loss_welch"] == calibrated["initial_z_loss_welch"]
    assert calibrated["initial_z_loss"] < calibrated["initial_z_loss_welch"]  # the small-sample bias, removed


def test_checks_thin_out_when_their_probes_are_large(splits):
    """A check's probes (forward only) may cost at most half the steps between checks: every ``CHECK_EVERY``
    steps on digits, less often for a 4,096 + 4,096-sample familiarity probe; the budget counts both."""
    from oblivio.methods.dm import CHECK_EVERY, FORWARD_COST, UTILITY_SAMPLES, DistributionMatching

    split = splits["random"]
    dm, data = DistributionMatching(), UnlearnData(split.forget, 10, split.retain, split.third_party)
    small_cost, small_every = dm.step_costs(data, 129, 144, True, 129 + 144)
    large_cost, large_every = dm.step_costs(data, 5400, 6000, True, 4096 + 4096)
    step = 3 * 128 + FORWARD_COST * 2 * 128
    assert small_every == CHECK_EVERY and large_every > CHECK_EVERY
    check = FORWARD_COST * (UTILITY_SAMPLES + 8192)
    assert check / large_every <= step / 2 < check / (large_every - 1)  # the most frequent checks that keep the bound
    assert large_cost == pytest.approx(step + check / large_every)
    whole, _ = dm.step_costs(data, 129, 144, True, 129 + 144, anchor_whole_batch=True)
    assert whole == pytest.approx(small_cost + FORWARD_COST * 128)  # the anchor's forward over the forget batch too
    assert dm.step_budget(dataclasses.replace(data, train_epochs=100), large_cost) == int(
        0.5 * 100 * len(split.retain) / large_cost)


@pytest.mark.parametrize("model, scenario, whole", [
    ("mlp", RandomSubset(fraction=0.1), False),  # reference + retain rows: the forget rows are never compared
    ("mlp", ClassForget((3,)), False),  # the other-class anchor's targets on the forget set are computed once
    ("cnn", RandomSubset(fraction=0.1), True),  # BatchNorm: the same batch as the model's pass
], ids=["mlp-random", "mlp-class", "cnn-random"])
def test_the_anchor_reads_the_forget_batch_only_where_it_needs_it(digits, model, scenario, whole):
    split = make_split(digits, scenario, seed=0)
    original = train(model, split.train, 10, TrainConfig(seed=0, epochs=1))[0]
    steps: list[int] = []  # batch sizes of the model's training passes
    anchored: list[int] = []  # ... of the anchor's (training mode without autograd; the checks run in eval mode)

    def record(module, args, output):
        if module.training:
            (steps if torch.is_grad_enabled() else anchored).append(len(args[0]))

    original.register_forward_hook(record)  # copied with the module into the working model and the anchor
    unlearn(original, split=split, method="dm", seed=0, max_steps=5, z_stop=-100.0, verify="record")  # never matched
    assert len(steps) == len(anchored) == 5
    if whole:
        assert anchored == steps
    else:
        assert all(a < s for a, s in zip(anchored, steps))


def test_a_backdoor_may_keep_on_its_target_the_share_unseen_samples_go_there(splits, original):
    """The backdoor stop allows the share of forget samples on the target that the reference (unseen samples of
    other classes) has under the model as given, not a fixed share: a retrained model confuses triggered samples
    with the target as often as clean ones, and no more."""
    split, model = splits["backdoor"], original("backdoor")
    data = UnlearnData(forget=split.forget, num_classes=10, third_party=split.third_party, backdoor_target=0)
    method = dm_module.DistributionMatching()
    probe = dm_module._sample(method.reference_pool(data), dm_module.STAT_SAMPLES, 1)
    rate = float((predict(model, probe)[0].argmax(1) == 0).float().mean())
    natural = min(rate, dm_module.MAX_BACKDOOR_SHARE)
    info = unlearn(model, split=split, method="dm", seed=0).info
    assert info["allowed_share"] == pytest.approx(natural) and info["forgotten_share"] <= natural
    assert info["stopped_by"] == "threshold", info
