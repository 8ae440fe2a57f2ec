"""Splits and forgetting scenarios: sizes, disjointness, determinism, the backdoor trigger, bad requests."""
import pytest
import torch

from oblivio import Backdoor, ClassForget, OblivioError, RandomSubset, TrainConfig, attack_success_rate, load_split, make_split, train


def _disjoint_cover(split, n):
    r, f, t = split.retain_idx, split.forget_idx, split.third_party_idx
    assert not set(r) & set(f) and not set(r) & set(t) and not set(f) & set(t)
    assert len(r) + len(f) + len(t) == n


@pytest.mark.parametrize("name", ["random", "class", "backdoor"])
def test_split_sizes_and_disjointness(splits, digits, name):
    split = splits[name]
    _disjoint_cover(split, len(digits.y_train))
    assert len(split.third_party_idx) == round(0.1 * len(digits.y_train))
    assert len(split.train) == len(split.retain) + len(split.forget)


def test_random_fraction_count_and_indices(digits):
    pool = make_split(digits, RandomSubset(fraction=0.1), seed=3).pool_idx
    assert len(make_split(digits, RandomSubset(fraction=0.1), seed=3).forget_idx) == round(0.1 * len(pool))
    assert len(make_split(digits, RandomSubset(count=17), seed=3).forget_idx) == 17
    chosen = pool[[0, 5, 9]]
    split = make_split(digits, RandomSubset(indices=tuple(chosen.tolist())), seed=3)
    assert split.forget_idx.tolist() == sorted(chosen.tolist())


def test_class_split_holds_exactly_that_class(splits):
    split = splits["class"]
    assert set(split.forget.tensors[1].tolist()) == {3}
    assert 3 not in set(split.retain.tensors[1].tolist())


def test_splits_are_deterministic_and_seed_dependent(digits):
    a, b = (make_split(digits, RandomSubset(fraction=0.2), seed=7) for _ in range(2))
    c = make_split(digits, RandomSubset(fraction=0.2), seed=8)
    assert a.hashes() == b.hashes()
    assert a.hashes()["forget"] != c.hashes()["forget"]
    # the pool/third-party cut does not depend on the scenario, so one original model serves all requests
    assert make_split(digits, ClassForget((1,)), seed=7).hashes()["pool"] == a.hashes()["pool"]


def test_split_save_and_load_round_trip(tmp_path, splits, digits):
    splits["backdoor"].save(tmp_path / "split.json")
    again = load_split(tmp_path / "split.json", digits)
    assert again.hashes() == splits["backdoor"].hashes()
    assert torch.equal(again.x_train, splits["backdoor"].x_train)


def test_backdoor_poisons_forget_set_only(splits, digits):
    split = splits["backdoor"]
    f = torch.as_tensor(split.forget_idx)
    assert (split.y_train[f] == 0).all() and (digits.y_train[f] != 0).all()
    assert (split.x_train[f][..., -2:, -2:] == 1.0).all()
    r = torch.as_tensor(split.retain_idx)
    assert torch.equal(split.x_train[r], digits.x_train[r]) and torch.equal(split.y_train[r], digits.y_train[r])
    assert (split.y_test_triggered != 0).all()


def test_backdoor_trigger_really_fires(splits, original):
    """A model trained on poisoned data sends triggered test images to the target far above chance."""
    split = splits["backdoor"]
    asr = attack_success_rate(original("backdoor"), split.test_triggered, split.backdoor_target)
    assert asr > 0.9
    clean = train("mlp", split.retain, 10, TrainConfig(seed=0, epochs=10))[0]
    assert attack_success_rate(clean, split.test_triggered, 0) < 0.2


def test_trigger_position_and_size():
    x = torch.zeros(1, 1, 10, 10)
    stamped = Backdoor(patch_size=3, value=0.5, position="top-left").stamp(x)
    assert stamped[0, 0, :3, :3].eq(0.5).all() and stamped.sum() == pytest.approx(9 * 0.5)


@pytest.mark.parametrize("make,msg", [
    (lambda: RandomSubset(fraction=1.5), r"fraction must lie in \(0, 1\)"),
    (lambda: RandomSubset(fraction=0.0), r"fraction must lie in \(0, 1\)"),
    (lambda: RandomSubset(indices=(1, 2, 2)), "duplicated forget indices"),
    (lambda: RandomSubset(indices=()), "empty forget set"),
    (lambda: RandomSubset(count=0), "empty forget set"),
    (lambda: Backdoor(fraction=2.0), "poison fraction"),
    (lambda: Backdoor(position="middle"), "unknown position"),
])
def test_bad_scenario_arguments(make, msg):
    with pytest.raises(OblivioError, match=msg):
        make()


def test_bad_requests_against_the_data(digits):
    with pytest.raises(OblivioError, match="unknown class 12"):
        make_split(digits, ClassForget((12,)))
    with pytest.raises(OblivioError, match="out of range"):
        make_split(digits, RandomSubset(indices=(0, 99999)))
    third = make_split(digits, RandomSubset(count=1)).third_party_idx
    with pytest.raises(OblivioError, match="third-party pool"):
        make_split(digits, RandomSubset(indices=(int(third[0]),)))
    with pytest.raises(OblivioError, match="larger than the 8x8 image"):
        make_split(digits, Backdoor(patch_size=9))
    with pytest.raises(OblivioError, match="unknown target class"):
        make_split(digits, Backdoor(target=10))
    with pytest.raises(OblivioError, match="third-party fraction"):
        make_split(digits, ClassForget((1,)), third_party_fraction=1.0)


def test_backdoor_on_tabular_features():
    """One-row inputs (tabular data, stored 1 x F) get a run of features as the trigger, and it fires."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    from oblivio import from_arrays

    stamped = Backdoor(value=5.0, position="bottom-left").stamp(torch.zeros(2, 1, 1, 30))
    assert stamped[:, 0, 0, :4].eq(5).all() and stamped.sum() == 2 * 4 * 5  # 30 // 7 features
    assert Backdoor(patch_size=3).stamp(torch.zeros(1, 1, 1, 10))[0, 0, 0].tolist()[-4:] == [0, 1, 1, 1]
    with pytest.raises(OblivioError, match="trigger of 11 features does not fit the input's 10"):
        Backdoor(patch_size=11).stamp(torch.zeros(1, 1, 1, 10))

    bc = load_breast_cancer()
    x = StandardScaler().fit_transform(bc.data).astype("float32")
    data = from_arrays(x[:455], bc.target[:455], x[455:], bc.target[455:], name="breast-cancer")
    split = make_split(data, Backdoor(fraction=0.1, target=1, value=6.0), seed=0)
    model, _ = train("mlp", split.train, 2, TrainConfig(seed=0, epochs=30))
    assert attack_success_rate(model, split.test_triggered, 1) > 0.9
